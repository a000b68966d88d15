"""A layer of your own from one SymPy expression: Swish with a trainable beta.

    python examples/custom_layer.py [--fast] [--out FOLDER]

Lecture section: "Implication" of autodiff ("it is easy to construct your own layers ...
derivatives come for free"). The layer is swish_beta(x, beta) = x * sigmoid(beta * x), one
elementwise op with two inputs; beta is a parameter with one value per unit, so the network
learns how sharp each unit's activation is. graphnn derives both derivatives from the body
(printed in LaTeX), ``gn.check_grad`` compares them with central differences, and the layer
is trained inside a 1-8-1 net on the noisy sine, compiled for the CPU.
"""
import numpy as np
import sympy as sp

import graphnn as gn
from _common import figure, parse, save


def declare():
    """The op, declared once: forward, both derivatives, code and pictures follow from it."""
    @gn.elementwise
    def swish_beta(x, beta):
        return x * gn.Sigmoid(beta * x)
    return swish_beta


def latex(expr):
    """LaTeX with the sigmoid written as sigma."""
    sigma = sp.Function("sigma")
    return sp.latex(expr.replace(gn.Sigmoid, sigma))


def build(op, units=8, seed=0):
    net = gn.Graph("swish_beta_net", seed=seed)
    x, y = net.input("x", (None, 1)), net.input("y", (None, 1))
    z = gn.dense(x, units, name="hidden")
    beta = net.parameter("hidden/beta", (units,), value=np.ones(units))   # starts as plain swish
    h = op(z, beta, name="hidden/swish_beta")
    y_hat = net.output("y_hat", gn.dense(h, 1, name="output"))
    return net, gn.mse(y_hat, y)


def main(argv=None):
    args, out = parse(__doc__.splitlines()[0], argv)
    epochs = 60 if args.fast else 400
    op = declare()
    d_x, d_beta = op.derivative(0), op.derivative(1)
    print(f"swish_beta(x, beta) = {op.expr()}")
    print(f"  d/dx    = {d_x}\n  d/dbeta = {d_beta}")
    print("in LaTeX:")
    print(f"  \\frac{{\\partial f}}{{\\partial x}} = {latex(d_x)}")
    print(f"  \\frac{{\\partial f}}{{\\partial \\beta}} = {latex(d_beta)}")

    net, loss = build(op)
    x_train, y_train = gn.lecture.noisy_sine(200, seed=1)
    report = gn.check_grad(loss, {"x": x_train[:16], "y": y_train[:16]})
    print(f"gn.check_grad (central differences, float64): {'ok' if report.ok else 'FAILED'}, "
          f"max relative error {report.max_error:.1e}")

    model = gn.compile(net, loss, optimizer=gn.Adam(lr=0.02), target="cpu")
    history = model.fit({"x": x_train, "y": y_train}, epochs=epochs, batch_size=32, verbose=False, seed=0)
    losses = history.history["loss"]
    beta = model.get_params()["hidden/beta"]
    print(f"{net.num_parameters} weights ({len(beta)} of them beta), {epochs} epochs: MSE {losses[0]:.3f} -> "
          f"{losses[-1]:.4f}")
    print(f"learned beta per unit: {np.array2string(beta, precision=2)} (all started at 1)")

    fig, axes = figure(2, 1, size=(4.6, 3.6))
    ax = axes[0, 0]
    grid = np.linspace(-5, 5, 201)
    g = gn.Graph("curves")
    u, b = g.input("u", (None,)), g.input("b", (None,))
    value = op(u, b)
    for k, (bv, colour) in enumerate(((0.3, "tab:green"), (1.0, "k"), (5.0, "tab:purple"))):
        ys = gn.evaluate([value], {"u": grid, "b": np.full_like(grid, bv)})[value.name]
        ax.plot(grid, ys, color=colour, lw=2, label=f"$\\beta$ = {bv:g}")
    ax.set(xlabel="x", ylabel=r"$x\,\sigma(\beta x)$", title=r"swish_beta for three values of $\beta$")
    ax.grid(alpha=0.4)
    ax.legend(loc="upper left")
    ax = axes[0, 1]
    xs = np.linspace(-1, 1, 200)[:, None]
    ax.plot(x_train[:, 0], y_train[:, 0], ".", color="0.6", label="training data")
    ax.plot(xs[:, 0], model.predict({"x": xs})[:, 0], "r", lw=2, label="1-8-1 swish_beta net")
    ax.set(xlabel="x", ylabel="y", title=f"Trained: MSE {losses[-1]:.4f}", xticks=[-1, -0.5, 0, 0.5, 1])
    ax.grid(alpha=0.4)
    ax.legend(loc="upper left")
    files = [save(fig, out, "custom_layer_swish.png")]
    return {"derivative_x": str(d_x), "derivative_beta": str(d_beta), "latex_beta": latex(d_beta),
            "gradient_check": report.ok, "first_loss": losses[0], "final_loss": losses[-1],
            "beta": beta.tolist(), "files": files}


if __name__ == "__main__":
    main()
