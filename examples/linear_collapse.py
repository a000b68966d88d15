"""The lecture's question: "What if we use linear activation functions throughout?"

    python examples/linear_collapse.py [--fast] [--out FOLDER]

Lecture section: "Extending linear models". The 1-2-1 regression net is trained on the noisy
sine twice, with identity and with tanh hidden activations. Then the network's output is
built as ONE SymPy expression of x, straight from the graph: every node's SymPy body (the
registry's ``op.expr``) with the trained weights put in. With identity activations it
simplifies to one affine map, ``y = a*x + c``: a stack of linear layers is a linear model.
With tanh it does not, and the fit to the sine shows what the non-linearity buys.
"""
import numpy as np
import sympy as sp

import graphnn as gn
from _common import figure, parse, save


def weight_symbols(graph):
    """{parameter name: SymPy matrix of symbols}: hidden/W -> hW00, hW01; output/b -> ob0."""
    out = {}
    for name, value in graph.values.items():
        stem = name.split("/")[0][0] + name.split("/")[-1]
        value = np.atleast_2d(value)
        out[name] = sp.Matrix(*value.shape, lambda i, j: sp.Symbol(
            f"{stem}{j}" if value.shape[0] == 1 and graph.values[name].ndim == 1 else f"{stem}{i}{j}"))
    return out


def symbolic(output, x, weights):
    """The output of a dense net for ONE input row (x, a SymPy symbol) as a SymPy expression.

    Walks the graph inputs first: an input is the row [x], a parameter its matrix of
    ``weights`` (symbols or numbers), a linear/matmul node the matrix product, an elementwise
    node its SymPy body (``op.expr``, from the registry) applied to each entry."""
    values = {}
    for node in gn.topological([output]):
        if node.kind == "input":
            value = sp.Matrix([[x]])
        elif node.kind == "parameter":
            value = weights[node.name]                     # a bias (k,) is a row (1, k)
        elif node.op_name in ("linear", "matmul"):
            args = [values[i] for i in node.inputs]
            value = args[0] * args[1] + (args[2] if len(args) == 3 else sp.zeros(1, args[1].cols))
        elif node.kind == "op" and node.op.kind == "elementwise":
            body = node.op.expr({**node.op.attr_defaults, **node.attr_dict})
            args = [values[i] for i in node.inputs]
            value = sp.Matrix(1, args[0].cols, lambda _, j: body.xreplace(
                {s: a[0, j if a.cols > 1 else 0] for s, a in zip(node.op.symbols, args)}))
        else:
            raise gn.ArgumentError(f"symbolic(): node {node.name!r} is a {node.op_name or node.kind}; this "
                                   f"example knows inputs, parameters, dense layers and elementwise ops")
        values[node] = value
    return values[output][0, 0]


def affine(expr, x):
    """(a, c) when expr is a*x + c after simplification, else None."""
    expr = sp.expand(sp.simplify(expr))
    if not expr.is_polynomial(x) or sp.degree(expr, x) > 1:
        return None
    return float(expr.coeff(x, 1)), float(expr.coeff(x, 0))


def short(expr, digits=3):
    """The expression with its numbers rounded, for printing."""
    return expr.xreplace({n: sp.Float(round(float(n), digits)) for n in expr.atoms(sp.Float)})


def main(argv=None):
    args, out = parse(__doc__.splitlines()[0], argv)
    epochs = 60 if args.fast else 400
    x_train, y_train = gn.lecture.noisy_sine(200, seed=1)
    feeds = {"x": x_train, "y": y_train}
    grid = np.linspace(-1, 1, 200)[:, None]
    x = sp.Symbol("x", real=True)
    result, fits = {}, {}
    for activation in ("identity", "tanh"):
        net = gn.lecture.regression_net(seed=0, hidden_activation=activation)
        model = gn.compile(net.graph, net.loss, optimizer=gn.Adam(lr=0.05), target="cpu")
        history = model.fit(feeds, epochs=epochs, batch_size=32, verbose=False, seed=0)
        layered = symbolic(net.output, x, weight_symbols(net.graph))
        trained = {k: sp.Matrix(np.atleast_2d(v).tolist()) for k, v in model.get_params().items()}
        expr = symbolic(net.output, x, trained)
        # the SymPy form and the compiled forward pass compute the same function
        as_numbers = sp.lambdify(x, expr, "numpy")(grid[:, 0]) * np.ones(len(grid))
        predicted = model.predict({"x": grid})[:, 0]
        agree = float(np.abs(as_numbers - predicted).max())
        map_ = affine(expr, x)
        print(f"== {activation} hidden activations, {net.graph.num_parameters} weights, {epochs} epochs: "
              f"training MSE {history.history['loss'][-1]:.4f}")
        print(f"   the network as one SymPy expression of x and its weights:\n      y = {layered}")
        if activation == "identity":
            print(f"   collected in x:\n      y = {sp.collect(sp.expand(layered), x)}")
        print(f"   with the trained weights: y = {short(expr)}")
        if map_ is not None:
            a, c = map_
            print(f"   simplifies to ONE affine map: y = {a:.4g}*x {'-' if c < 0 else '+'} {abs(c):.4g}")
        else:
            print("   does not simplify to an affine map (it keeps its tanh terms)")
        print(f"   SymPy form vs compiled forward pass: max |difference| {agree:.1e}")
        fits[activation] = predicted
        result[activation] = {"affine": map_, "expression": str(expr), "symbolic": str(layered),
                              "mse": history.history["loss"][-1], "sympy_vs_compiled": agree}

    fig, axes = figure(1, 1, size=(6.0, 4.2))
    ax = axes[0, 0]
    ax.plot(x_train[:, 0], y_train[:, 0], ".", color="0.6", label="data: sin(3x) + noise")
    ax.plot(grid[:, 0], np.sin(3 * grid[:, 0]), "k:", lw=1.5, label="sin(3x)")
    a, c = result["identity"]["affine"]
    ax.plot(grid[:, 0], fits["identity"], "b", lw=2,
            label=f"identity: y = {a:.2f}x {'-' if c < 0 else '+'} {abs(c):.2f}  "
                  f"(MSE {result['identity']['mse']:.3f})")
    ax.plot(grid[:, 0], fits["tanh"], "r", lw=2, label=f"tanh hidden layer  (MSE {result['tanh']['mse']:.3f})")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("1-2-1 net: linear activations collapse to a line")
    ax.grid(alpha=0.4)
    ax.legend(loc="upper left")
    result["files"] = [save(fig, out, "linear_collapse_fit.png")]
    return result


if __name__ == "__main__":
    main()
