"""Index-notation ops (matmul, linear, reductions, sum_to) and broadcasting elementwise ops.

Forward against NumPy; gradients against full central differences of the NumPy definition and
against ``gn.check_grad`` with ``wrt`` naming inputs as well as parameters.
"""
import numpy as np
import pytest

import graphnn as gn
from support import numeric_gradient

BATCH = 5


def _weighted_sum(node, name="c"):
    """loss = sum(node * c) with c a fed array of node's shape: the delta of node is then c."""
    c = node.graph.input(name, node.shape)
    return c, gn.sum(node * c)


def _delta_values(loss, nodes, feeds, params=None):
    back = gn.derive(loss)
    values = gn.evaluate([back.delta(n) for n in nodes], feeds, params=params)
    return [values[back.delta(n).name] for n in nodes]


def test_matmul_forward_and_gradients():
    rng = np.random.default_rng(0)
    g = gn.Graph()
    a = g.input("a", (None, 3))
    B = g.parameter("B", (3, 4))
    out = gn.matmul(a, B)
    assert out.shape == (None, 4)
    assert (a @ B).op.name == "matmul"
    c, loss = _weighted_sum(out)
    A, C = rng.normal(size=(BATCH, 3)), rng.normal(size=(BATCH, 4))
    feeds = {"a": A, "c": C}
    Bv = g.values["B"]
    np.testing.assert_allclose(gn.evaluate([out], feeds)[out.name], A @ Bv, rtol=1e-12)
    dA, dB = _delta_values(loss, [a, B], feeds)
    np.testing.assert_allclose(dA, C @ Bv.T, rtol=1e-12)
    np.testing.assert_allclose(dB, A.T @ C, rtol=1e-12)
    np.testing.assert_allclose(dA, numeric_gradient(lambda v: np.sum((v @ Bv) * C), A), rtol=1e-7, atol=1e-9)
    assert gn.check_grad(loss, feeds, wrt=[a, B]).ok


def test_linear_forward_and_gradients():
    rng = np.random.default_rng(1)
    g = gn.Graph()
    x = g.input("x", (None, 3))
    W = g.parameter("W", (3, 2))
    b = g.parameter("b", (2,), value=[0.5, -0.25])
    z = gn.linear(x, W, b)
    c, loss = _weighted_sum(z)
    X, C = rng.normal(size=(BATCH, 3)), rng.normal(size=(BATCH, 2))
    feeds = {"x": X, "c": C}
    Wv, bv = g.values["W"], g.values["b"]
    np.testing.assert_allclose(gn.evaluate([z], feeds)[z.name], X @ Wv + bv, rtol=1e-12)
    dx, dW, db = _delta_values(loss, [x, W, b], feeds)
    np.testing.assert_allclose(dx, C @ Wv.T, rtol=1e-12)
    np.testing.assert_allclose(dW, X.T @ C, rtol=1e-12)
    np.testing.assert_allclose(db, C.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(dW, numeric_gradient(lambda w: np.sum((X @ w + bv) * C), Wv),
                               rtol=1e-7, atol=1e-9)
    report = gn.check_grad(loss, feeds, wrt=["x", "W", "b"])
    assert report.ok and len(report.rows) == 3 * 2


REDUCTIONS = {"sum": (gn.sum, np.sum), "mean": (gn.mean, np.mean), "max": (gn.max, np.max)}
AXES = [None, 0, 1, 2, -1, (1, 2), (0, 2)]


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("op_name", sorted(REDUCTIONS))
def test_reduction_forward_and_gradient(op_name, axis, keepdims):
    op, reference = REDUCTIONS[op_name]
    rng = np.random.default_rng(2)
    g = gn.Graph()
    x = g.input("x", (None, 3, 4))
    out = op(x, axis=axis, keepdims=keepdims)
    X = rng.normal(size=(BATCH, 3, 4))  # distinct values: max has no ties
    expected = reference(X, axis=axis, keepdims=keepdims)
    got = gn.evaluate([out], {"x": X})[out.name]
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    reduces_batch = axis is None or 0 in [a % 3 for a in np.atleast_1d(axis)]
    assert out.batched == (not reduces_batch)
    c, loss = _weighted_sum(out)
    C = rng.normal(size=expected.shape)
    feeds = {"x": X, "c": C}
    (dx,) = _delta_values(loss, [x], feeds)
    expected_dx = numeric_gradient(lambda v: np.sum(reference(v, axis=axis, keepdims=keepdims) * C), X)
    np.testing.assert_allclose(dx, expected_dx, rtol=1e-7, atol=1e-9)
    assert gn.check_grad(loss, feeds, wrt=[x]).ok


def test_max_gradient_at_ties_is_split_evenly():
    # PyTorch's amax: each of c maximal elements gets 1/c (tests/test_max_ties.py has more)
    g = gn.Graph()
    x = g.input("x", (None, 3))
    (dx,) = _delta_values(gn.sum(gn.max(x, axis=1)), [x], {"x": np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]])})
    np.testing.assert_array_equal(dx, [[0, 0.5, 0.5], [1, 0, 0]])


def test_mean_over_the_batch_axis_divides_by_the_fed_batch_size():
    g = gn.Graph()
    x = g.input("x", (None, 2))
    m = gn.mean(x)
    for n in (1, 4, 7):
        X = np.arange(2.0 * n).reshape(n, 2)
        assert gn.evaluate([m], {"x": X})[m.name] == pytest.approx(X.mean())
        (dx,) = _delta_values(m, [x], {"x": X})
        np.testing.assert_allclose(dx, np.full((n, 2), 1 / (2 * n)))


SUM_TO = [((3, 4), lambda v: v.sum(axis=0)),
          ((3, 1), lambda v: v.sum(axis=0).sum(axis=1, keepdims=True)),
          ((1, 4), lambda v: v.sum(axis=(0, 1))[None, :]),
          ((4,), lambda v: v.sum(axis=(0, 1))),
          ((), lambda v: v.sum())]


@pytest.mark.parametrize("shape,reference", SUM_TO, ids=[str(s) for s, _ in SUM_TO])
def test_sum_to_forward_and_gradient(shape, reference):
    rng = np.random.default_rng(3)
    g = gn.Graph()
    x = g.input("x", (None, 3, 4))
    out = gn.sum_to(x, shape=shape)
    assert out.shape == shape
    X = rng.normal(size=(BATCH, 3, 4))
    np.testing.assert_allclose(gn.evaluate([out], {"x": X})[out.name], reference(X), rtol=1e-12)
    c, loss = _weighted_sum(out)
    C = rng.normal(size=shape)
    (dx,) = _delta_values(loss, [x], {"x": X, "c": C})
    np.testing.assert_allclose(dx, np.broadcast_to(C, X.shape), rtol=1e-12)


def test_sum_to_refuses_shapes_it_cannot_reach():
    g = gn.Graph()
    x = g.input("x", (None, 3, 4))
    with pytest.raises(gn.ShapeError, match="cannot sum to 2"):
        gn.sum_to(x, shape=(3, 2))
    with pytest.raises(gn.ShapeError, match="larger rank"):
        gn.sum_to(x, shape=(1, 1, 3, 4))


BROADCASTS = [  # (op, shape of a, shape of b)
    (gn.add, (None, 3), (3,)),
    (gn.mul, (None, 1), (1, 3)),
    (gn.sub, (None, 3), (None, 1)),
    (gn.div, (None, 3), (1, 3)),
    (gn.mul, (None, 2, 3), (2, 1)),
    (gn.add, (None, 3), ()),
]


@pytest.mark.parametrize("op,a_shape,b_shape", BROADCASTS,
                         ids=[f"{o.name}{a}{b}" for o, a, b in BROADCASTS])
def test_broadcasting_gradients_reduce_to_the_input_shape(op, a_shape, b_shape):
    rng = np.random.default_rng(4)
    g = gn.Graph()
    a = g.input("a", a_shape)
    if None in b_shape:
        b = g.input("b", b_shape)
    else:
        b = g.parameter("b", b_shape, value=rng.uniform(0.5, 2.0, size=b_shape))
    out = op(a, b)
    c, loss = _weighted_sum(out)
    A = rng.normal(size=(BATCH,) + a_shape[1:])
    feeds = {"a": A}
    if None in b_shape:
        feeds["b"] = rng.uniform(0.5, 2.0, size=(BATCH,) + b_shape[1:])
    Bv = feeds.get("b", g.values.get("b"))
    reference = {"add": np.add, "mul": np.multiply, "sub": np.subtract, "div": np.divide}[op.name]
    expected = reference(A, Bv)
    feeds["c"] = C = rng.normal(size=expected.shape)
    np.testing.assert_allclose(gn.evaluate([out], feeds)[out.name], expected, rtol=1e-12)
    back = gn.derive(loss)
    assert back.delta(a).shape == a.shape and back.delta(b).shape == b.shape
    da, db = _delta_values(loss, [a, b], feeds)
    assert da.shape == A.shape and db.shape == np.shape(Bv)
    np.testing.assert_allclose(da, numeric_gradient(lambda v: np.sum(reference(v, Bv) * C), A),
                               rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(db, numeric_gradient(lambda v: np.sum(reference(A, v) * C), Bv),
                               rtol=1e-7, atol=1e-9)
    assert gn.check_grad(loss, feeds, wrt=[a, b]).ok
