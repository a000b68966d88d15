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
