"""Composite ops (softmax, log-softmax, losses, penalties): forward against PyTorch's definitions
written in NumPy, gradients by check_grad, and extreme inputs."""
import numpy as np
import pytest

import graphnn as gn

RNG = np.random.default_rng(7)
LOGITS = RNG.normal(size=(6, 4)) * 3
ONE_HOT = np.eye(4)[RNG.integers(0, 4, size=6)]
PROBS = RNG.uniform(0.02, 0.98, size=(6, 1))
TARGETS = RNG.integers(0, 2, size=(6, 1)).astype(float)


def _log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


CASES = {  # name: (build(a, b), reference(a, b), a, b)
    "softmax": (lambda a, b: gn.softmax(a), lambda a, b: np.exp(_log_softmax(a)), LOGITS, None),
    "log_softmax": (lambda a, b: gn.log_softmax(a), lambda a, b: _log_softmax(a), LOGITS, None),
    "softmax_axis0": (lambda a, b: gn.softmax(a, axis=0), lambda a, b: np.exp(_log_softmax(a.T)).T,
                      LOGITS, None),
    "mse": (gn.mse, lambda a, b: np.mean((a - b) ** 2), LOGITS, ONE_HOT),
    "mse_sum": (lambda a, b: gn.mse(a, b, reduction="sum"), lambda a, b: np.sum((a - b) ** 2),
                LOGITS, ONE_HOT),
    "bce": (gn.bce, lambda p, y: np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))), PROBS, TARGETS),
    "bce_with_logits": (gn.bce_with_logits,
                        lambda z, y: np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))),
                        LOGITS[:, :1], TARGETS),
    "nll": (gn.nll, lambda lp, y: np.mean(-(y * lp).sum(axis=-1)), _log_softmax(LOGITS), ONE_HOT),
    "nll_sum": (lambda a, b: gn.nll(a, b, reduction="sum"), lambda lp, y: -(y * lp).sum(),
                _log_softmax(LOGITS), ONE_HOT),
    "softmax_cross_entropy": (gn.softmax_cross_entropy,
                              lambda z, y: np.mean(-(y * _log_softmax(z)).sum(axis=-1)), LOGITS, ONE_HOT),
    "l2_penalty": (lambda a, b: gn.l2_penalty(a, lam=0.3), lambda a, b: 0.15 * np.sum(a ** 2), LOGITS, None),
    "l1_penalty": (lambda a, b: gn.l1_penalty(a, lam=0.3), lambda a, b: 0.3 * np.sum(np.abs(a)),
                   LOGITS, None),
}


def _build(name):
    build, reference, a, b = CASES[name]
    g = gn.Graph(name)
    node_a = g.input("a", (None,) + a.shape[1:])
    node_b = g.input("b", (None,) + b.shape[1:]) if b is not None else None
    feeds = {"a": a} if b is None else {"a": a, "b": b}
    return build(node_a, node_b), node_a, feeds, reference(a, b)


@pytest.mark.parametrize("name", sorted(CASES))
def test_composite_forward_matches_definition(name):
    out, _, feeds, expected = _build(name)
    np.testing.assert_allclose(gn.evaluate([out], feeds)[out.name], expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(CASES))
def test_composite_gradient_matches_finite_differences(name):
    out, a, feeds, _ = _build(name)
    loss = out if out.shape == () else gn.sum(out * out.graph.constant(np.linspace(-1, 1, out.shape[-1])))
    assert gn.check_grad(loss, feeds, wrt=[a], directions=3).ok


def test_softmax_rows_sum_to_one_and_survive_huge_logits():
    g = gn.Graph()
    z = g.input("z", (None, 3))
    s, ls = gn.softmax(z), gn.log_softmax(z)
    Z = np.array([[1e4, 0.0, -1e4], [-1e4, -1e4, -1e4], [1000.0, 1000.0, 0.0]])
    for dtype in ("float32", "float64"):
        v = gn.evaluate([s, ls], {"z": Z}, dtype=dtype)
        assert np.all(np.isfinite(v[s.name])) and np.all(np.isfinite(v[ls.name]))
        np.testing.assert_allclose(v[s.name].sum(axis=1), 1.0, rtol=1e-6)
        np.testing.assert_allclose(v[s.name][2], [0.5, 0.5, 0.0], atol=1e-7)
        assert v[ls.name][0, 2] == pytest.approx(-2e4, rel=1e-6)


def test_softmax_cross_entropy_gradient_is_softmax_minus_target_at_huge_logits():
    g = gn.Graph()
    z, y = g.input("z", (None, 3)), g.input("y", (None, 3))
    loss = gn.softmax_cross_entropy(z, y, reduction="sum")
    back = gn.derive(loss)
    Z, Y = np.array([[1e4, 0.0, -1e4]]), np.array([[0.0, 1.0, 0.0]])
    for dtype in ("float32", "float64"):
        v = gn.evaluate([loss, back.delta(z)], {"z": Z, "y": Y}, dtype=dtype)
        assert float(v[loss.name]) == pytest.approx(1e4, rel=1e-6)
        np.testing.assert_allclose(v[back.delta(z).name], [[1.0, -1.0, 0.0]], atol=1e-7)


def test_binary_cross_entropy_clamps_like_pytorch():
    g = gn.Graph()
    p, y = g.input("p", (None, 1)), g.input("y", (None, 1))
    loss = gn.bce(p, y, reduction="sum")
    back = gn.derive(loss)
    P, Y = np.array([[0.0], [1.0], [1.0]]), np.array([[1.0], [0.0], [1.0]])
    v = gn.evaluate([loss, back.delta(p)], {"p": P, "y": Y})
    assert float(v[loss.name]) == pytest.approx(200.0)   # log clamped at -100, twice
    assert np.all(np.isfinite(v[back.delta(p).name]))
    np.testing.assert_allclose(v[back.delta(p).name], [[-1e12], [1e12], [-1.0]])


def test_bce_with_logits_is_finite_for_huge_logits():
    g = gn.Graph()
    z, y = g.input("z", (None, 1)), g.input("y", (None, 1))
    loss = gn.bce_with_logits(z, y, reduction="sum")
    back = gn.derive(loss)
    Z, Y = np.array([[1e4], [-1e4], [1e4]]), np.array([[0.0], [1.0], [1.0]])
    for dtype in ("float32", "float64"):
        v = gn.evaluate([loss, back.delta(z)], {"z": Z, "y": Y}, dtype=dtype)
        assert float(v[loss.name]) == pytest.approx(2e4, rel=1e-6)
        np.testing.assert_allclose(v[back.delta(z).name], [[1.0], [-1.0], [0.0]], atol=1e-7)


def test_penalty_gradients():
    g = gn.Graph()
    W = g.parameter("W", (2, 3), value=[[1.0, -2.0, 0.5], [0.0, 3.0, -0.25]])
    _, l2 = gn.loss_and_gradients(gn.l2_penalty(W, lam=0.1), {})
    np.testing.assert_allclose(l2["W"], 0.1 * g.values["W"], rtol=1e-14)
    _, l1 = gn.loss_and_gradients(gn.l1_penalty(W, lam=0.1), {})
    np.testing.assert_allclose(l1["W"], 0.1 * np.sign(g.values["W"]), rtol=1e-14)   # abs'(0) = 0


def test_composites_are_scoped_for_renderers():
    g = gn.Graph()
    z = g.input("z", (None, 3))
    s = gn.softmax(z)
    assert s.name == "softmax/softmax" and s.scope == "softmax"
    assert gn.softmax(z).scope == "softmax_1"
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        gn.mse(z, z, reduction="max")
