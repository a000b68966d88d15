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
