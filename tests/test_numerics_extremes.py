"""Values at the extremes, on every target (issue: numerics you can trust).

Oracles: closed forms in float64 (math.expm1) and IEEE rules (NaN in, NaN out, as PyTorch)."""
import math

import numpy as np
import pytest

import graphnn as gn

TARGETS = ["reference", "cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def _forward(op, x, target, dtype, **attrs):
    g = gn.Graph(f"extreme_{op}")
    inp = g.input("x", (None, 1))
    g.output("y", getattr(gn, op)(inp, **attrs))
    model = gn.compile(g, target=target, dtype=dtype)
    return model.forward({"x": np.asarray(x, dtype=dtype).reshape(-1, 1)})["y"].ravel()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("op, alpha", [("elu", 1.0), ("celu", 1.0), ("elu", 0.5), ("celu", 2.0)])
def test_elu_and_celu_near_zero_do_not_cancel(target, op, alpha):
    """exp(x) - 1 at x = -1e-3 lost five digits in float32 (rel. err. 1e-5); expm1 keeps them."""
    xs = [-1e-3, -1e-5, -1e-8, -0.3]
    got = _forward(op, xs, target, "float32", alpha=alpha)
    scale = 1.0 if op == "elu" else alpha
    exact = [alpha * math.expm1(x / scale) for x in xs]
    np.testing.assert_allclose(got, exact, rtol=2e-7)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", ["relu", "relu6", "elu", "celu", "leaky_relu"])
def test_nan_in_is_nan_out(target, dtype, op):
    """Clamping by comparisons swallowed NaN: relu(nan) was 0 and relu6(nan) 6; PyTorch gives nan."""
    got = _forward(op, [np.nan, -2.0, 0.0, 3.0, 7.0], target, dtype)
    assert np.isnan(got[0])
    assert np.all(np.isfinite(got[1:]))


def test_the_conventions_at_kinks_hold():
    """Rewriting the branches for NaN keeps PyTorch's derivatives at the kinks."""
    for op, at, expect in [("relu", 0.0, 0.0), ("relu6", 0.0, 0.0), ("relu6", 6.0, 0.0),
                           ("elu", 0.0, 1.0), ("celu", 0.0, 1.0)]:
        declared = gn.REGISTRY[op]
        d = declared.derivative(0, declared.attr_defaults)
        assert float(d.subs(declared.symbols[0], at)) == expect, (op, at, d)


def _derivative(op, xs, target, dtype):
    """d op / dx at each of ``xs`` (float32 CPU uses the fast-math helpers by default)."""
    g = gn.Graph(f"slope_{op}")
    p = g.parameter("p", (len(xs),), init=lambda rng, shape: np.asarray(xs, dtype=np.float64))
    loss = gn.sum(getattr(gn, op)(p))
    model = gn.compile(g, loss, target=target, dtype=dtype, optimizer=gn.SGD(lr=0.0))
    return model.loss_and_gradients({})[1]["p"]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op, xs, slopes", [
    ("tanh", [30.0, -30.0, 100.0, 1e4, -1e4], [0.0, 0.0, 0.0, 0.0, 0.0]),
    ("gelu_tanh", [1e4, 100.0, -100.0, -1e4], [1.0, 1.0, 0.0, 0.0]),
    ("mish", [30.0, 1e4], [1.0, 1.0]),
])
def test_saturated_activations_have_exact_slopes(target, dtype, op, xs, slopes):
    """fast_tanh stopped at 0.99999976, so 1 - tanh^2 was 4.8e-7 and gelu_tanh' at 1e4 was
    25519.5 (the residue times x); it now returns exactly +-1 where float32's tanh does."""
    np.testing.assert_allclose(_derivative(op, xs, target, dtype), slopes, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("target", TARGETS)
def test_gelu_tanh_of_a_large_negative_input_is_zero(target):
    np.testing.assert_allclose(_forward("gelu_tanh", [-1e4, -100.0], target, "float32"), [0.0, 0.0],
                               atol=1e-30)


def _loss(build, feeds, target, dtype):
    g = gn.Graph("loss_extremes")
    nodes = {k: g.input(k, (None, v.shape[1])) for k, v in feeds.items()}
    out = build(**nodes)
    return float(gn.compile(g, outputs={"l": out}, target=target, dtype=dtype).forward(feeds)["l"])


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype, rtol", [("float32", 1e-6), ("float64", 1e-14)])
@pytest.mark.parametrize("z, y, exact", [
    (30.0, 1.0, math.log1p(math.exp(-30.0))),   # softplus(z) - z*y cancelled: 9.237e-14
    (-30.0, 0.0, math.log1p(math.exp(-30.0))),
    (0.0, 0.5, math.log(2.0)),
    (math.inf, 0.0, math.inf),                  # was nan
    (-math.inf, 1.0, math.inf),
    (math.inf, 1.0, 0.0),                       # PyTorch: nan
    (-math.inf, 0.0, 0.0),                      # PyTorch: nan
])
def test_bce_with_logits_at_the_extremes(target, dtype, rtol, z, y, exact):
    got = _loss(lambda z, y: gn.bce_with_logits(z, y, reduction="sum"),
                {"z": np.array([[z]]), "y": np.array([[y]])}, target, dtype)
    if math.isinf(exact):
        assert got == exact
    else:
        assert got == pytest.approx(exact, rel=rtol, abs=1e-300)


@pytest.mark.parametrize("target", TARGETS)
def test_softmax_cross_entropy_with_a_masked_logit(target):
    """A -inf logit (a masked class) whose target is 0: 0 * log_softmax(-inf) was NaN."""
    logits = np.array([[-np.inf, 0.0, 1.0], [1.0, 2.0, -np.inf]])
    onehot = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    got = _loss(lambda a, b: gn.softmax_cross_entropy(a, b), {"a": logits, "b": onehot}, target, "float64")
    exact = (math.log1p(math.e) + math.log1p(math.e)) / 2         # log(1+e) each row
    assert got == pytest.approx(exact, rel=1e-14)


def test_the_masked_logit_gets_no_gradient_and_the_others_a_finite_one():
    g = gn.Graph("masked")
    logits = g.parameter("logits", (3,), init=lambda rng, shape: np.array([-np.inf, 0.0, 1.0]))
    target = g.constant(np.array([0.0, 1.0, 0.0]))
    loss = gn.sum(gn.ops.composite.nll_elementwise(target, gn.log_softmax(logits)))
    _, grads = gn.loss_and_gradients(loss, {})
    s = np.exp([0.0, 1.0]) / np.exp([0.0, 1.0]).sum()
    np.testing.assert_allclose(grads["logits"], [0.0, s[0] - 1.0, s[1]], rtol=1e-14)


# -- bce on a sigmoid output at float32's subnormal edge (issue 11) --------------------------------

BCE_TARGETS = [("reference", {}), ("cpu", {}), ("cpu", {"fast_math": False}),
               pytest.param("cuda", {}, marks=pytest.mark.cuda)]
ZS = [-1e4, -100.0, -30.0, -20.0, 20.0, 30.0, 100.0, 1e4]


def _softplus(v):
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


def _bce_of_sigmoid(target, options, dtype):
    """bce(sigmoid(z), y) per row, for every z of ZS with y = 1 and then y = 0."""
    g = gn.Graph("bce_sigmoid")
    z, y = g.input("z", (None, 1)), g.input("y", (None, 1))
    g.output("l", gn.ops.composite.bce_elementwise(gn.sigmoid(z), y))
    model = gn.compile(g, target=target, dtype=dtype, **options)
    zs = np.array(ZS + ZS, dtype=dtype).reshape(-1, 1)
    ys = np.array([1.0] * len(ZS) + [0.0] * len(ZS), dtype=dtype).reshape(-1, 1)
    got = model.forward({"z": zs, "y": ys})["l"].ravel().astype(np.float64)
    return got[:len(ZS)], got[len(ZS):]


@pytest.mark.parametrize("target, options", BCE_TARGETS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bce_of_a_sigmoid_output_at_the_subnormal_edge(target, options, dtype):
    """sigmoid(-100) in float32 was the subnormal 27 * 2**-149 (1.6% off, 5 bits), so
    bce(sigmoid(-100), 1) = -log of it was 99.983 for 100. Sigmoid's results below the normal
    range are now 0, as float32 fast math and PyTorch give, and the clamp answers 100.

    Oracle, y = 1: -log(sigmoid(z)) = softplus(-z), clamped at 100 (PyTorch's clamp); off by at
    most the rounding of p (eps). y = 0: -log(1 - p) of p = sigmoid(z) rounded to the dtype: where
    p rounds to 1 (z >= 17 in float32) the clamp's 100 is the answer, as in PyTorch -- for the
    exact softplus(z) use bce_with_logits."""
    eps = float(np.finfo(dtype).eps)
    ones, zeros = _bce_of_sigmoid(target, options, dtype)
    expect_ones = [min(_softplus(-z), 100.0) for z in ZS]
    np.testing.assert_allclose(ones, expect_ones, rtol=4 * eps, atol=eps)
    p = [float(np.asarray(1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0, dtype=dtype)) for z in ZS]
    expect_zeros = [min(-math.log(1.0 - q), 100.0) if q < 1.0 else 100.0 for q in p]
    np.testing.assert_allclose(zeros, expect_zeros, rtol=4 * eps, atol=eps)


@pytest.mark.parametrize("target", TARGETS)
def test_sigmoid_results_below_the_normal_range_are_zero(target):
    """Below float32's normal range (x < -87.3365) sigmoid is 0; above, the correctly rounded value.
    float64 keeps exp(-100) (normal there) and is 0 below -708.4."""
    xs32 = [-1e4, -100.0, -87.34, -87.33, -80.0]
    got = _forward("sigmoid", xs32, target, "float32")
    assert list(got[:3]) == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(got[3:], [math.exp(float(np.float32(x))) for x in xs32[3:]], rtol=1e-6)
    got = _forward("sigmoid", [-1e4, -709.0, -100.0], target, "float64")
    assert list(got[:2]) == [0.0, 0.0]
    assert got[2] == pytest.approx(math.exp(-100.0), rel=1e-15)


# -- reductions over a batch of 0 rows (issue 11) ----------------------------------------------------

@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reductions_over_zero_rows_are_alike_on_every_target(target, dtype):
    """sum -> 0, mean -> 0/0 = NaN, max -> NaN (no element is the largest; PyTorch raises). The
    CPU kernels gave -inf for the max (their accumulator's start) and 0 for the mean, the
    reference a NumPy ValueError for the max; forward refused any output without a batch axis."""
    g = gn.Graph("empty_rows")
    x = g.input("x", (None, 3))
    shift = g.parameter("shift", (), init=lambda rng, shape: np.zeros(shape))
    g.output("rows", gn.tanh(x))
    for name, reduce in [("sum", gn.sum), ("mean", gn.mean), ("max", gn.max)]:
        g.output(name, reduce(x))
        g.output(f"{name}_cols", reduce(x, axis=0))
    g.output("shifted_sum", gn.sum(x) + shift)            # parameters read where the target keeps them
    model = gn.compile(g, target=target, dtype=dtype)
    model.params["shift"] = 2.0
    out = model.forward({"x": np.zeros((0, 3), dtype=dtype)})
    assert out["rows"].shape == (0, 3) and out["rows"].dtype == dtype
    assert out["sum"] == 0.0 and list(out["sum_cols"]) == [0.0, 0.0, 0.0] and out["shifted_sum"] == 2.0
    for name in ("mean", "max"):
        assert np.isnan(out[name]) and out[f"{name}_cols"].shape == (3,) and np.all(np.isnan(out[f"{name}_cols"]))
    assert all(v.dtype == dtype for v in out.values())
    assert model.forward({"x": np.ones((2, 3), dtype=dtype)})["max"] == 1.0


def test_the_reference_executor_reduces_zero_rows_alike():
    """gn.evaluate: a max over 0 rows was NumPy's ValueError ("zero-size array to reduction")."""
    g = gn.Graph()
    x = g.input("x", (None, 3))
    nodes = [gn.sum(x), gn.mean(x, axis=0), gn.max(x), gn.max(x, axis=0, keepdims=True)]
    values = gn.evaluate(nodes, {"x": np.zeros((0, 3))})
    assert values[nodes[0].name] == 0.0
    assert np.all(np.isnan(values[nodes[1].name])) and np.isnan(values[nodes[2].name])
    assert values[nodes[3].name].shape == (1, 3) and np.all(np.isnan(values[nodes[3].name]))


@pytest.mark.parametrize("target", TARGETS)
def test_bce_slope_at_a_certain_right_probability_is_exact(target):
    """At p = 0 with y = 0 the loss is -log(1 - p), whose slope there is 1 (PyTorch's clamp
    gives 0); at p = 1 with y = 1 it is -1."""
    g = gn.Graph("bce_edge")
    p = g.parameter("p", (2,), init=lambda rng, shape: np.array([0.0, 1.0]))
    y = g.constant(np.array([0.0, 1.0]))
    model = gn.compile(g, gn.bce(p, y, reduction="sum"), target=target, dtype="float64",
                       optimizer=gn.SGD(lr=0.0))
    loss, grads = model.loss_and_gradients({})
    assert loss == 0.0
    np.testing.assert_array_equal(grads["p"], [1.0, -1.0])
