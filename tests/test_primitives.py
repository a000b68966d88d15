"""Stable primitives: fdiff against sp.diff of the defining expression, NumPy and scalar
implementations against the definition, and StopGradient's zero derivative."""
import math

import numpy as np
import pytest
import sympy as sp

import graphnn as gn
from graphnn.ops.primitives import PRIMITIVES

x = sp.Symbol("x", real=True)

# sample points inside each primitive's domain (ClampedLog/ClampedReciprocal: above their clamp)
SAMPLES = {
    "Sigmoid": [-30.0, -3.0, -0.5, 0.0, 0.7, 4.0, 30.0],
    "Softplus": [-30.0, -3.0, -0.5, 0.0, 0.7, 4.0, 30.0],
    "ClampedLog": [1e-6, 0.01, 0.5, 1.0, 3.0, 50.0],
    "ClampedReciprocal": [1e-6, 0.01, 0.5, 1.0, 3.0, 50.0],
    "StopGradient": [-3.0, 0.0, 2.5],
    "Expm1": [-30.0, -3.0, -1e-3, -1e-8, 0.0, 1e-8, 0.7, 4.0],
}


def _exact(expr, point):
    """``expr`` at ``x = point`` evaluated with 30 significant digits (no float rounding)."""
    return float(sp.N(expr.subs(x, sp.Float(point, 30)), 30))


def _expand_definitions(expr):
    """Replace every primitive in ``expr`` by its plain SymPy definition."""
    for primitive in PRIMITIVES:
        expr = expr.replace(primitive, lambda arg, p=primitive: p.definition(arg))
    return expr


def test_every_primitive_has_samples():
    assert {p.__name__ for p in PRIMITIVES} == set(SAMPLES)


@pytest.mark.parametrize("primitive", PRIMITIVES, ids=lambda p: p.__name__)
def test_fdiff_matches_diff_of_definition(primitive):
    derived = sp.diff(primitive(x), x)
    from_definition = sp.diff(primitive.definition(x), x)
    if not primitive.derivative_matches_definition:
        assert primitive is gn.StopGradient
        return
    expanded = _expand_definitions(derived)
    assert not any(isinstance(f, tuple(PRIMITIVES)) for f in expanded.atoms(sp.Function))
    if sp.simplify(expanded - from_definition) == 0:
        return
    for point in SAMPLES[primitive.__name__]:  # simplify gave up: compare at 30 digits
        assert _exact(expanded, point) == pytest.approx(_exact(from_definition, point), rel=1e-15)


@pytest.mark.parametrize("primitive", [p for p in PRIMITIVES if p.derivative_matches_definition],
                         ids=lambda p: p.__name__)
def test_fdiff_is_written_in_stable_primitives(primitive):
    # no bare exp/log in the derivative: that is what keeps it finite for large |x|
    derived = sp.diff(primitive(x), x)
    assert not derived.atoms(sp.exp, sp.log), derived


@pytest.mark.parametrize("primitive", PRIMITIVES, ids=lambda p: p.__name__)
def test_numpy_impl_matches_definition(primitive):
    points = np.array(SAMPLES[primitive.__name__])
    exact = [_exact(primitive.definition(x), p) for p in points]
    np.testing.assert_allclose(primitive.numpy_impl(points), exact, rtol=1e-13, atol=1e-300)


@pytest.mark.parametrize("primitive", PRIMITIVES, ids=lambda p: p.__name__)
def test_scalar_source_matches_numpy_impl(primitive):
    namespace = {"math": math, "F": float}
    exec(primitive.scalar_source, namespace)
    helper = namespace[primitive.helper_name]
    points = SAMPLES[primitive.__name__] + [-1e4, -100.0, 100.0, 1e4]
    if primitive.__name__.startswith("Clamped"):
        points = SAMPLES[primitive.__name__] + [0.0, -1.0, 1e-300]
    for point in points:
        assert helper(point) == pytest.approx(float(primitive.numpy_impl(np.array(point))),
                                              rel=1e-12, abs=1e-300), (primitive, point)


def test_numpy_impls_are_finite_for_large_inputs():
    big = np.array([-1e4, -100.0, 100.0, 1e4])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        assert np.all(np.isfinite(gn.Sigmoid.numpy_impl(big)))
        assert np.all(np.isfinite(gn.Softplus.numpy_impl(big)))
    np.testing.assert_allclose(gn.Softplus.numpy_impl(big), [0.0, 3.720075976020836e-44, 100.0, 1e4],
                               rtol=1e-12)


def test_clamps_follow_pytorch_binary_cross_entropy():
    assert gn.ClampedLog.numpy_impl(np.array(0.0)) == -100.0
    assert gn.ClampedLog.numpy_impl(np.array(1e-50)) == -100.0
    assert gn.ClampedLog.numpy_impl(np.array(0.5)) == pytest.approx(math.log(0.5))
    from graphnn.ops.primitives import ClampedReciprocal
    assert ClampedReciprocal.numpy_impl(np.array(0.0)) == 1e12


def test_stop_gradient_derivative_is_zero():
    assert sp.diff(gn.StopGradient(x), x) == 0
    assert sp.diff(gn.StopGradient(x) * x, x) == gn.StopGradient(x)
    assert gn.stop_gradient.derivative(0) == 0
    g = gn.Graph()
    v = g.input("v", (None, 3))
    loss = gn.sum(gn.stop_gradient(v) * 3.0 + v)
    back = gn.derive(loss)
    V = np.array([[1.0, -2.0, 0.5]])
    dv = gn.evaluate([back.delta(v)], {"v": V})[back.delta(v).name]
    np.testing.assert_array_equal(dv, np.ones((1, 3)))  # only the v path counts, not 3 * stop_gradient(v)
    assert gn.evaluate([loss], {"v": V})[loss.name] == pytest.approx(4 * V.sum())
