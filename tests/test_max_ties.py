"""Maxima at ties follow PyTorch, and local derivatives show the true derivative.

``gn.max`` (``IndexMax``) splits the gradient evenly among tied maxima, as ``torch.amax``;
``max_pool2d`` (``IndexMaxFirst``) sends all of it to the first maximum of each window in
row-major order, as torch's ``max_pool2d``. Oracles: closed forms written out with NumPy,
central differences where nothing ties, and the targets (reference, compiled CPU, CUDA
simulator) against each other. ``gn.local_derivative`` keeps a term's guard and shows the
tie indicator the gradient uses.
"""
import numpy as np
import pytest
import sympy as sp

import graphnn as gn
from graphnn.derive.vjp import index_vjp_body

TARGETS = ("reference", "cpu", "cuda")
DTYPES = ("float32", "float64")


def _gradients(g, loss, target, dtype, feeds=None):
    model = gn.compile(g, loss, target=target, dtype=dtype, optimizer=gn.SGD(lr=0.1))
    return model.loss_and_gradients(feeds or {})[1]


def _tol(dtype):
    return dict(rtol=1e-6, atol=1e-6) if dtype == "float32" else dict(rtol=1e-12, atol=1e-12)


def split_share(X, axis):
    """d max(X, axis) / dX by PyTorch's amax rule: [x == max] / (number of maxima)."""
    hit = X == X.max(axis=axis, keepdims=True)
    return hit / hit.sum(axis=axis, keepdims=True)


TIED = np.array([[1.0, 3.0, 3.0, 0.0],
                 [2.0, 0.0, 1.0, -1.0],
                 [5.0, 5.0, 5.0, 5.0]])


# -- gn.max: ties share the gradient evenly ------------------------------------------------------
@pytest.mark.parametrize("axis", [1, None], ids=["axis1", "all"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", TARGETS)
def test_max_splits_the_gradient_evenly_among_ties(target, dtype, axis):
    g = gn.Graph()
    P = g.parameter("P", TIED.shape, value=TIED)
    C = np.array([1.0, 2.0, 4.0]) if axis == 1 else np.array(3.0)
    loss = gn.sum(gn.max(P, axis=axis) * g.constant(C))
    want = split_share(TIED, axis) * (C[:, None] if axis == 1 else C)
    if axis == 1:   # written out by hand: 1/2 to each 3 of row 0, 1/4 to each 5 of row 2
        np.testing.assert_array_equal(want, [[0, 0.5, 0.5, 0], [2, 0, 0, 0], [1, 1, 1, 1]])
    else:           # the four 5s share the weight 3
        np.testing.assert_array_equal(want[2], [0.75] * 4)
    got = _gradients(g, loss, target, dtype)["P"]
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_allclose(got, want, **_tol(dtype))


@pytest.mark.parametrize("target", TARGETS)
def test_max_over_the_batch_axis_splits_ties_among_rows(target):
    g = gn.Graph()
    x = g.input("x", (None, 3))
    W = g.parameter("W", (3,), value=np.ones(3))
    C = np.array([1.0, 2.0, 3.0])
    loss = gn.sum(gn.max(x * W, axis=0) * g.constant(C))
    X = np.array([[4.0, 1.0, 2.0], [4.0, 1.0, 0.0], [1.0, 1.0, 2.0]])
    # d/dW[j] = C[j] * sum_n x[n, j] * share[n, j] = C[j] * max_j (the shares of a column sum to 1)
    got = _gradients(g, loss, target, "float64", {"x": X})["W"]
    np.testing.assert_allclose(got, C * X.max(axis=0), rtol=1e-12)


# -- max_pool2d: the first maximum of each window takes all --------------------------------------
def first_max_share(X, C, size, stride, padding):
    """d sum(max_pool2d(X) * C) / dX with torch's rule: each window's weight goes to its first
    maximal element in row-major order (padding is -inf: never a maximum)."""
    N, Ch, H, W = X.shape
    Xp = np.pad(X, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=-np.inf)
    grad = np.zeros_like(Xp)
    for n in range(N):
        for c in range(Ch):
            for i in range(C.shape[2]):
                for j in range(C.shape[3]):
                    window = Xp[n, c, i * stride:i * stride + size, j * stride:j * stride + size]
                    r, s = np.unravel_index(np.argmax(window), window.shape)   # argmax: the first
                    grad[n, c, i * stride + r, j * stride + s] += C[n, c, i, j]
    return grad[:, :, padding:padding + H, padding:padding + W]


# channel 0 constant (every window ties everywhere); channel 1 ties off the first position
POOL_X = np.full((1, 2, 4, 4), 7.0)
POOL_X[0, 1] = [[1.0, 5.0, 2.0, 2.0],
                [5.0, 0.0, 2.0, 1.0],
                [0.0, 3.0, 6.0, 6.0],
                [3.0, 3.0, 6.0, 6.0]]


POOLS = [(2, 2, 0), (3, 1, 0), (3, 2, 1)]


@pytest.mark.parametrize("size,stride,padding", POOLS, ids=["2x2", "3x3-overlapping", "3x3-padded"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", TARGETS)
def test_max_pool_sends_the_gradient_to_the_first_maximum(target, dtype, size, stride, padding):
    X = POOL_X
    g = gn.Graph()
    x = g.input("x", (None, 2, 4, 4))
    W = g.parameter("W", (2, 4, 4), value=np.ones((2, 4, 4)))
    pooled = gn.max_pool2d(x * W, size=size, stride=stride, padding=padding)
    c = g.input("c", pooled.shape)   # the delta each window passes back, fed (weights 1, 2, 3...)
    C = np.arange(1.0, 1.0 + np.prod(pooled.shape[1:])).reshape(1, *pooled.shape[1:])
    loss = gn.sum(pooled * c)
    share = first_max_share(X, C, size, stride, padding)
    if (size, stride, padding) == (2, 2, 0):   # by hand: top-left of each window in channel 0
        np.testing.assert_array_equal(share[0, 0], [[1, 0, 2, 0], [0, 0, 0, 0], [3, 0, 4, 0], [0, 0, 0, 0]])
        np.testing.assert_array_equal(share[0, 1], [[0, 5, 6, 0], [0, 0, 0, 0], [0, 7, 8, 0], [0, 0, 0, 0]])
    assert share.sum() == C.sum()   # each window's weight goes to one element, whole
    got = _gradients(g, loss, target, dtype, {"x": X, "c": C})["W"]
    np.testing.assert_allclose(got, (X * share)[0], **_tol(dtype))   # d(x * W)/dW = x


# -- no ties: nothing changes ---------------------------------------------------------------------
def test_without_ties_gradients_match_finite_differences_on_every_target():
    rng = np.random.default_rng(11)
    g = gn.Graph()
    x = g.input("x", (None, 2, 4, 4))
    W = g.parameter("W", (2, 4, 4), value=rng.normal(size=(2, 4, 4)))
    y = x * W
    c = g.input("c", (None, 2, 2, 2))
    loss = gn.sum(gn.max_pool2d(y, size=2) * c) + gn.sum(gn.max(y, axis=(2, 3)))
    feeds = {"x": rng.normal(size=(3, 2, 4, 4)), "c": rng.normal(size=(3, 2, 2, 2))}   # no ties
    report = gn.check_grad(loss, feeds, wrt=["x", "W"])
    assert report.ok, report
    grads = [_gradients(g, loss, t, "float64", feeds)["W"] for t in TARGETS]
    assert np.abs(grads[0]).max() > 0.1
    for other in grads[1:]:
        np.testing.assert_allclose(other, grads[0], rtol=1e-10, atol=1e-12)


# -- user index ops --------------------------------------------------------------------------------
def test_a_maximum_beside_another_term_compares_with_its_own_maximum():
    @gn.index_op
    def max_plus(x, b):
        n, i = gn.indices("n i")
        return (n,), gn.IndexMax(x[n, i], i) + b[n]

    g = gn.Graph()
    x, b = g.input("x", (None, 3)), g.input("b", (None,))
    back = gn.derive(gn.sum(max_plus(x, b)))
    feeds = {"x": np.array([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]]), "b": np.array([10.0, -1.0])}
    dx = gn.evaluate([back.delta(x)], feeds)[back.delta(x).name]
    np.testing.assert_array_equal(dx, [[0, 0.5, 0.5], [1, 0, 0]])   # not 0: the output is max + b


def test_index_max_first_over_the_batch_axis_picks_the_first_row():
    @gn.index_op
    def column_max_first(x):
        n, j = gn.indices("n j")
        return (j,), gn.IndexMaxFirst(x[n, j], n)

    g = gn.Graph()
    x = g.input("x", (None, 3))
    W = g.parameter("W", (3,), value=np.ones(3))
    loss = gn.sum(column_max_first(x * W) * g.constant(np.array([1.0, 2.0, 3.0])))
    X = np.array([[1.0, 4.0, 2.0], [3.0, 4.0, 2.0], [3.0, 0.0, 2.0]])
    back = gn.derive(loss)
    y = loss.inputs[0].inputs[0].inputs[0]                        # x * W, the op's input
    dy = gn.evaluate([back.delta(y)], {"x": X})[back.delta(y).name]
    np.testing.assert_array_equal(dy, [[0, 2, 3], [1, 0, 0], [0, 0, 0]])
    for target in ("reference", "cpu"):
        np.testing.assert_allclose(_gradients(g, loss, target, "float64", {"x": X})["W"], [3, 8, 6])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", TARGETS)
def test_a_loop_index_used_as_a_value(target, dtype):
    # what the first-maximum position needs: the reference executor raised TypeError, the CPU
    # kernel NameError (the index kept its body name), and float32 kernels computed it in double
    @gn.index_op
    def weighted_by_position(x):
        n, i = gn.indices("n i")
        return (n,), gn.IndexSum(x[n, i] * i, i)

    g = gn.Graph()
    x = g.input("x", (None, 12))
    W = g.parameter("W", (12,), value=np.ones(12))
    X = np.arange(24.0).reshape(2, 12) / 8
    loss = gn.sum(weighted_by_position(x * W))          # 12 positions: a loop, not written out
    got = _gradients(g, loss, target, dtype, {"x": X})["W"]
    np.testing.assert_allclose(got, X.sum(axis=0) * np.arange(12), **_tol(dtype))


def test_the_tie_convention_is_part_of_the_body_and_its_key():
    body = gn.max_pool2d.body([(None, 1, 4, 4)], {"size": 2})
    assert str(body) == "out[n, c, h, w] = MaxFirst[kh, kw](x[n, c, 2*h + kh, kw + 2*w])"
    assert body.terms[0].ties == "first"
    assert gn.max.body([(None, 3)], {"axis": 1}).terms[0].ties == "split"

    @gn.index_op
    def pool_split(x):
        n, c, h, w, kh, kw = gn.indices("n c h w kh kw")
        return (n, c, (h, 2), (w, 2)), gn.IndexMax(x[n, c, 2 * h + kh, 2 * w + kw], (kh, 2), (kw, 2))

    @gn.index_op
    def pool_first(x):
        n, c, h, w, kh, kw = gn.indices("n c h w kh kw")
        return (n, c, (h, 2), (w, 2)), gn.IndexMaxFirst(x[n, c, 2 * h + kh, 2 * w + kw], (kh, 2), (kw, 2))

    split, first = pool_split.body([(None, 1, 4, 4)]), pool_first.body([(None, 1, 4, 4)])
    assert split.key != first.key                 # same forward, different gradients: different ops
    assert "ties0" in str(index_vjp_body(first, 0, [(None, 1, 4, 4)]))


# -- local derivatives: guards and tie indicators --------------------------------------------------
def test_local_derivative_keeps_the_guard_of_a_cumsum():
    @gn.index_op
    def cumsum(x):
        n, j, i = gn.indices("n j i")
        return (n, (j, x.shape[1])), gn.IndexSum(gn.ops.guarded(x[n, i], i <= j), i)

    g = gn.Graph()
    x = g.input("x", (None, 4))
    c = cumsum(x, name="cum")
    d = gn.local_derivative(c, x)
    i, j = sp.symbols("i j", integer=True)
    assert d.expr == sp.Piecewise((1, i <= j), (0, True))
    assert str(d) == "dcum[n, j]/dx[n, i] = Piecewise((1, i <= j), (0, True))"
    assert r"\text{for}\: i \leq j" in d.latex


def test_local_derivative_of_max_shows_the_split_indicator():
    g = gn.Graph()
    x = g.input("x", (None, 3))
    m = gn.max(x, axis=1, name="m")
    d = gn.local_derivative(m, x)
    i0, i1, i1p = sp.symbols("i0 i1 i1'", integer=True)
    X, M = sp.IndexedBase("x"), sp.IndexedBase("m")
    count = gn.IndexSum(sp.Piecewise((1, sp.Eq(X[i0, i1p], M[i0])), (0, True)), i1p)
    assert d.expr == sp.Piecewise((1 / count, sp.Eq(X[i0, i1], M[i0])), (0, True))


def test_local_derivative_of_max_pool_shows_the_first_maximum_and_the_padding_guard():
    g = gn.Graph()
    x = g.input("x", (None, 1, 4, 4))
    text = str(gn.local_derivative(gn.max_pool2d(x, size=2, name="pool"), x))
    assert text == ("dpool[n, c, h, w]/dx[n, c, 2*h + kh, kw + 2*w] = Piecewise((1 - Max[kh', kw']("
                    "Piecewise((1, (2*kh + kw > 2*kh' + kw') & Eq(pool[n, c, h, w], x[n, c, 2*h + kh', "
                    "kw' + 2*w])), (0, True))), Eq(pool[n, c, h, w], x[n, c, 2*h + kh, kw + 2*w])), "
                    "(0, True))")
    padded = gn.local_derivative(gn.max_pool2d(x, size=3, stride=2, padding=1, name="padded"), x).expr
    h, kh = sp.symbols("h kh", integer=True)
    assert isinstance(padded, sp.Piecewise) and padded.args[1] == (0, True)   # 0 off the input
    assert (2 * h + kh >= 1) in padded.args[0].cond.args and (2 * h + kh <= 4) in padded.args[0].cond.args


def test_the_delta_flow_renders_and_evaluates_with_tie_nodes():
    g = gn.Graph("pool")
    x = g.input("x", (None, 1, 4, 4))
    y = g.output("y", gn.max(gn.max_pool2d(x, size=2), axis=(2, 3)))
    loss = gn.sum(y)
    picture = gn.render(loss, deltas=True, input_deltas=True, feed={"x": np.ones((2, 1, 4, 4))})
    assert "Max[kh', kw']" in picture.source and "Sum[" in picture.source   # edge labels
    back = gn.derive(loss)
    dx = gn.evaluate([back.delta(x)], {"x": np.ones((2, 1, 4, 4))})[back.delta(x).name]
    # the four pooled values tie: 1/4 each, to the top-left element of each window
    np.testing.assert_array_equal(dx[0, 0], [[0.25, 0, 0.25, 0], [0, 0, 0, 0], [0.25, 0, 0.25, 0], [0, 0, 0, 0]])


def test_cuda_row_split_gradient_of_a_parameter_with_several_axes():
    # found with these tests: the split-over-rows sum printed `_t % 1 * 2 * 2` (= 0), so on CUDA
    # every element of a (1, 2, 2) parameter broadcast over the batch got the first one's gradient
    g = gn.Graph()
    x = g.input("x", (None, 1, 2, 2))
    W = g.parameter("W", (1, 2, 2), value=np.ones((1, 2, 2)))
    X = np.arange(1.0, 1.0 + 3 * 4).reshape(3, 1, 2, 2)
    got = _gradients(g, gn.sum(x * W), "cuda", "float64", {"x": X})["W"]
    np.testing.assert_array_equal(got, X.sum(axis=0))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_in_a_maximum_is_nan_on_every_target(target, dtype):
    """As np.max and torch.amax: a NaN element makes the maximum NaN. Compiled kernels kept the
    larger of the others (max(acc, nan) is acc), and CUDA's atomic max over rows drops NaN too."""
    g = gn.Graph("nan_max")
    x = g.input("x", (None, 3))
    im = g.input("im", (None, 1, 2, 2))
    g.output("rows", gn.max(x, axis=1))
    g.output("batch", gn.max(x, axis=0))
    g.output("pool", gn.max_pool2d(im, size=2))
    rng = np.random.default_rng(0)
    X = rng.standard_normal((130, 3))
    X[5, 1] = np.nan
    IM = rng.standard_normal((130, 1, 2, 2))
    IM[7, 0, 1, 0] = np.nan
    out = gn.compile(g, target=target, dtype=dtype).forward({"x": X.astype(dtype), "im": IM.astype(dtype)})
    expect_rows = np.max(X, axis=1)
    np.testing.assert_array_equal(np.isnan(out["rows"]), np.isnan(expect_rows))
    np.testing.assert_allclose(out["rows"][~np.isnan(expect_rows)], expect_rows[~np.isnan(expect_rows)], rtol=1e-6)
    assert np.isnan(out["batch"][1]) and np.all(np.isfinite(out["batch"][[0, 2]]))
    pooled = out["pool"].ravel()
    assert np.isnan(pooled[7]) and np.sum(np.isnan(pooled)) == 1
