"""Activation functions (lecture: "Activation functions"), each beside its derived derivative.

    python examples/activations.py [--fast] [--out FOLDER]

Every curve comes from graphnn's op registry: the value is the op's SymPy body evaluated by
the reference executor (``gn.evaluate``), the derivative is the backward pass graphnn derives
from that body (``gn.derive``, which uses ``gn.REGISTRY[name].derivative(0)``). Nothing here
writes a derivative by hand; each one is checked against central differences.

Pictures: the lecture's traditional pair (tanh, sigmoid), its 2x4 grid of hidden activations
(ReLU, LeakyReLU(0.1), ELU, Hardswish, GELU, Mish, CELU, ReLU6) and the output activations
(identity for regression, sigmoid for two classes, softmax for several).
"""
import numpy as np

import graphnn as gn
from _common import figure, parse, save

TRADITIONAL = [("tanh", {}), ("sigmoid", {})]
HIDDEN = [("relu", {}), ("leaky_relu", {"alpha": 0.1}), ("elu", {}), ("hardswish", {}),
          ("gelu", {}), ("mish", {}), ("celu", {}), ("relu6", {})]      # the lecture's 2x4 grid
OUTPUT = [("identity", {}), ("sigmoid", {}), ("softmax", {})]
TITLES = {"tanh": "tanh", "sigmoid": "sigmoid", "relu": "ReLU", "leaky_relu": "Leaky ReLU (0.1)",
          "elu": "ELU", "hardswish": "Hardswish", "gelu": "GELU", "mish": "Mish", "celu": "CELU",
          "relu6": "ReLU6", "identity": "identity", "softmax": "softmax, logits (x, 0)"}


def curve(name, attrs, xs):
    """(f(xs), f'(xs)) as graphnn computes them: the registry op and its derived backward."""
    g = gn.Graph(name)
    if name == "softmax":      # a vector function: p_0 of the logits (x, 0), and dp_0/dx
        z = g.input("z", (None, 2))
        p = gn.softmax(z)
        first = gn.sum(p * np.array([1.0, 0.0]))
        back = gn.derive(first, recompute=True)
        out = gn.evaluate([p, back.delta(z)], {"z": np.stack([xs, np.zeros_like(xs)], axis=1)})
        return out[p.name][:, 0], out[back.delta(z).name][:, 0]
    x = g.input("x", (None,))
    f = gn.REGISTRY[name](x, **attrs)
    back = gn.derive(gn.sum(f), recompute=True)   # d sum(f(x)) / dx_i = f'(x_i)
    out = gn.evaluate([f, back.delta(x)], {"x": xs})
    return out[f.name], out[back.delta(x).name]


def formula(name, attrs):
    """The op's body and its derivative as graphnn declares/derives them (SymPy)."""
    if name == "softmax":
        return "exp(z_i - max z) / sum_j exp(z_j - max z)", "p_i (1[i=j] - p_j)  (from its parts)"
    op = gn.REGISTRY[name]
    attrs = {**op.attr_defaults, **attrs}        # ELU's alpha = 1 shown as a number
    return op.expr(attrs), op.derivative(0, attrs)


def grid(panels, cols, rows, xs, title):
    fig, axes = figure(cols, rows, size=(2.7, 2.3 if rows > 1 else 2.9))
    worst = 0.0
    for ax, (name, attrs) in zip(axes.flat, panels):
        f, d = curve(name, attrs, xs)
        # central differences of graphnn's own forward values, away from the kinks
        h = 1e-5
        numeric = (curve(name, attrs, xs + h)[0] - curve(name, attrs, xs - h)[0]) / (2 * h)
        kinks = np.array(gn.REGISTRY[name].kinks[0] if name in gn.REGISTRY else (), dtype=float)
        smooth = np.all(np.abs(xs[:, None] - kinks[None, :]) > 1e-3, axis=1)   # declared kinks
        worst = max(worst, float(np.abs(numeric - d)[smooth].max()))
        ax.plot(xs, f, "k", lw=2, label="f(x)")
        ax.plot(xs, d, "r--", lw=1.8, label="f'(x), derived by graphnn")
        ax.set_title(TITLES[name], fontsize=13)
        ax.set_xlabel("x", fontsize=12)
        ax.tick_params(labelsize=10)
        ax.grid(alpha=0.4)
        ax.axhline(0, color="0.5", lw=0.6)
    axes.flat[0].legend(["f(x)", "f'(x), derived"], loc="upper left" if rows > 1 else "lower right",
                        fontsize=10, framealpha=0.9)
    fig.suptitle(title, fontsize=14)
    return fig, worst


def main(argv=None):
    args, out = parse(__doc__.splitlines()[0], argv)
    points = 101 if args.fast else 401
    worst = {}
    print("each activation and the derivative graphnn derives from its body (gn.REGISTRY):")
    for name, attrs in TRADITIONAL + HIDDEN + OUTPUT[:1] + OUTPUT[2:]:
        f, d = formula(name, attrs)
        print(f"  {name:<10} f = {f}\n  {'':<10} f' = {d}")

    files = []
    fig, worst["traditional"] = grid(TRADITIONAL, 2, 1, np.linspace(-5, 5, points),
                                     "Traditional hidden activations and their derivatives")
    files.append(save(fig, out, "activations_traditional.png"))
    fig, worst["hidden"] = grid(HIDDEN, 4, 2, np.linspace(-6, 8, points),
                                "Hidden activations and their derivatives")
    files.append(save(fig, out, "activations_hidden.png"))
    fig, worst["output"] = grid(OUTPUT, 3, 1, np.linspace(-6, 6, points),
                                "Output activations: regression, two classes, many classes")
    files.append(save(fig, out, "activations_output.png"))
    error = max(worst.values())
    print(f"derived derivatives vs central differences of the forward values: max |difference| "
          f"{error:.1e} over {len(TRADITIONAL + HIDDEN + OUTPUT)} panels")
    return {"activations": [n for n, _ in TRADITIONAL + HIDDEN + OUTPUT], "max_derivative_error": error,
            "files": files}


if __name__ == "__main__":
    main()
