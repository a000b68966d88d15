"""The lecture's autodiff figure: the derivative of a sigmoid, analytic and automatic.

    python examples/autodiff_sigmoid.py [--fast] [--out FOLDER]

Lecture section: "Autodiff". The lecture makes x a tensor with ``requires_grad``, sums the
sigmoid ("backward can only be called on scalars") and compares ``x.grad`` with the analytic
S(x)(1 - S(x)). Here x is a graphnn parameter (100 points in [-10, 10]) and the loss is
sum(sigmoid(x)); its gradient is S'(x) at each point. Three derivatives are compared:

* analytic: S(x)(1 - S(x)) written by hand with NumPy (the dots);
* derived: the delta graphnn derives from sigmoid's SymPy body, evaluated by the NumPy
  reference executor (the line);
* compiled: the same backward pass as generated Numba code (``target="cpu"``, float64 and
  float32), run as kernels.
"""
import numpy as np

import graphnn as gn
from _common import figure, parse, save


def main(argv=None):
    args, out = parse(__doc__.splitlines()[0], argv)
    xs = np.linspace(-10, 10, 100)
    g = gn.Graph("sigmoid")
    x = g.parameter("x", xs.shape, value=xs)        # like torch.linspace(..., requires_grad=True)
    z = gn.sigmoid(x)
    loss = gn.sum(z)                                 # backward needs a scalar
    print(f"sigmoid's body: {gn.sigmoid.expr()}; its derivative as graphnn derives it: "
          f"{gn.sigmoid.derivative(0)}")
    print("local derivative on the graph:", gn.local_derivative(z, x))

    s = 1 / (1 + np.exp(-xs))
    analytic = s * (1 - s)
    derived = gn.loss_and_gradients(loss, {})[1]["x"]                       # NumPy reference
    compiled, ran_as = {}, {}
    for dtype in ("float64", "float32"):
        model = gn.compile(g, loss, target="cpu", dtype=dtype, wait=True)  # kernels from the first call
        compiled[dtype] = model.loss_and_gradients({})[1]["x"]
        ran_as[dtype] = model.compile_status()["gradients"]
    print(f"the compiled backward pass ran as: {ran_as}")
    diffs = {"derived_vs_analytic": float(np.abs(derived - analytic).max()),
             "compiled64_vs_analytic": float(np.abs(compiled["float64"] - analytic).max()),
             "compiled64_vs_derived": float(np.abs(compiled["float64"] - derived).max()),
             "compiled32_vs_analytic": float(np.abs(compiled["float32"] - analytic).max())}
    print(f"on {len(xs)} points in [-10, 10], max |difference|:")
    print(f"   derived (reference) vs analytic S(1-S): {diffs['derived_vs_analytic']:.1e}")
    print(f"   compiled CPU float64 vs analytic:       {diffs['compiled64_vs_analytic']:.1e}")
    print(f"   compiled CPU float64 vs derived:        {diffs['compiled64_vs_derived']:.1e}")
    print(f"   compiled CPU float32 vs analytic:       {diffs['compiled32_vs_analytic']:.1e}")

    fig, axes = figure(1, 1, size=(6.0, 4.4))
    ax = axes[0, 0]
    ax.plot(xs, s, "k", lw=2, label="sigmoid")
    ax.plot(xs, derived, "r", lw=3.5, alpha=0.7, label="derivative derived by graphnn")
    ax.plot(xs, analytic, "b.", ms=5, label="derivative computed analytically")
    ax.plot(xs[2::6], compiled["float32"][2::6], "x", color="darkorange", ms=8, mew=2,
            label="compiled backward pass (CPU, float32)")
    ax.set(xlabel="x", title="Using graphnn to compute the derivative of a sigmoid")
    ax.grid(alpha=0.4)
    ax.legend(loc="upper left")
    return {**diffs, "ran_as": ran_as, "files": [save(fig, out, "autodiff_sigmoid.png")]}


if __name__ == "__main__":
    main()
