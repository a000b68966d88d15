"""Convolution, pooling and flatten: index-notation ops whose gradients come from the generic rule.

Forward against loops written with NumPy; gradients against central differences (gn.check_grad,
float64); the derived backward bodies are gathers with divisibility/range guards; the compiled CPU
target agrees with the reference executor.
"""
import numpy as np
import pytest
import sympy as sp

import graphnn as gn
from graphnn.derive.vjp import index_vjp_body
from train_support import CPU, TARGETS


def numpy_conv(x, K, b, stride, padding):
    (sh, sw), (ph, pw) = stride, padding
    N, C, H, W = x.shape
    O, _, kh, kw = K.shape
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    Ho, Wo = (H + 2 * ph - kh) // sh + 1, (W + 2 * pw - kw) // sw + 1
    out = np.zeros((N, O, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            patch = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            out[:, :, i, j] = np.einsum("nckl,ockl->no", patch, K) + b
    return out


def numpy_pool(x, size, stride, padding, reduce):
    N, C, H, W = x.shape
    fill = -np.inf if reduce is np.max else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=fill)
    Ho, Wo = (H + 2 * padding - size) // stride + 1, (W + 2 * padding - size) // stride + 1
    out = np.zeros((N, C, Ho, Wo))
    for i in range(Ho):
        for j in range(Wo):
            out[:, :, i, j] = reduce(xp[:, :, i * stride:i * stride + size, j * stride:j * stride + size],
                                     axis=(2, 3))
    return out


CONV_CASES = [((1, 1), (0, 0)), ((1, 1), (1, 1)), ((2, 2), (0, 0)), ((2, 2), (1, 1)), ((3, 3), (1, 1)),
              ((1, 2), (0, 1))]


def conv_graph(stride, padding, shape=(2, 7, 6), filters=3, kernel=(3, 3)):
    g = gn.Graph("conv", seed=1)
    x = g.input("x", (None, *shape))
    K = g.parameter("K", (filters, shape[0], *kernel))
    b = g.parameter("b", (filters,))
    return g, x, K, b, gn.conv2d(x, K, b, stride=stride, padding=padding)


@pytest.mark.parametrize("stride,padding", CONV_CASES)
def test_conv2d_forward_matches_numpy(stride, padding):
    g, x, K, b, y = conv_graph(stride, padding)
    X = np.random.default_rng(0).normal(size=(2, 2, 7, 6))
    got = gn.evaluate([y], {"x": X})[y.name]
    want = numpy_conv(X, g.values["K"], g.values["b"], stride, padding)
    assert y.shape == (None, *want.shape[1:])
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride,padding", CONV_CASES)
def test_conv2d_gradients_match_finite_differences(stride, padding):
    g, x, K, b, y = conv_graph(stride, padding)
    rng = np.random.default_rng(1)
    weights = g.constant(rng.normal(size=y.shape[1:]))
    loss = gn.sum(gn.square(y) * weights)
    report = gn.check_grad(loss, {"x": rng.normal(size=(2, 2, 7, 6))}, wrt=["x", "K", "b"], directions=3)
    assert report.ok, report


@pytest.mark.parametrize("op,reduce", [(gn.max_pool2d, np.max), (gn.avg_pool2d, np.mean)])
@pytest.mark.parametrize("size,stride,padding", [(2, 2, 0), (2, 1, 0), (3, 2, 1), (2, 3, 0)])
def test_pooling_forward_and_gradients(op, reduce, size, stride, padding):
    g = gn.Graph()
    x = g.input("x", (None, 2, 7, 7))
    y = op(x, size=size, stride=stride, padding=padding)
    rng = np.random.default_rng(2)
    X = rng.normal(size=(2, 2, 7, 7))
    want = numpy_pool(X, size, stride, padding, reduce)
    if reduce is np.mean:  # PyTorch's count_include_pad: padded zeros count in the mean
        want = numpy_pool(X, size, stride, padding, np.sum) / size ** 2
    np.testing.assert_allclose(gn.evaluate([y], {"x": X})[y.name], want, rtol=1e-12)
    loss = gn.sum(gn.square(y) * g.constant(rng.normal(size=y.shape[1:])))
    report = gn.check_grad(loss, {"x": X}, wrt=["x"], directions=3)
    assert report.ok, report


def test_max_pool_gradient_goes_to_the_maximum():
    g = gn.Graph()
    x = g.input("x", (None, 1, 2, 2))
    loss = gn.sum(gn.max_pool2d(x, size=2))
    back = gn.derive(loss)
    X = np.array([[[[1.0, 5.0], [2.0, 3.0]]]])
    grad = gn.evaluate([back.delta(x)], {"x": X})[back.delta(x).name]
    np.testing.assert_array_equal(grad, [[[[0.0, 1.0], [0.0, 0.0]]]])


def test_flatten_is_a_row_major_reshape_with_a_gather_gradient():
    g = gn.Graph()
    x = g.input("x", (None, 3, 4, 5))
    y = gn.flatten(x)
    assert y.shape == (None, 60)
    X = np.random.default_rng(3).normal(size=(2, 3, 4, 5))
    np.testing.assert_array_equal(gn.evaluate([y], {"x": X})[y.name], X.reshape(2, 60))
    vjp = index_vjp_body(y.op.node_body(y), 0, [(None, 3, 4, 5)])
    assert str(vjp) == "out[a0, a1, a2, a3] = delta[a0, 20*a1 + 5*a2 + a3]"
    assert all(t.reduce == () for t in vjp.terms)  # inverted jointly: no loop left, no guard
    loss = gn.sum(gn.square(y) * g.constant(np.arange(60.0)))
    assert gn.check_grad(loss, {"x": X}, wrt=["x"]).ok


def test_padding_is_a_guard_of_the_forward_body():
    body = gn.conv2d.body([(None, 1, 8, 8), (4, 1, 3, 3), (4,)], {"stride": 1, "padding": 1})
    conv_term = next(t for t in body.terms if t.reduce)
    assert conv_term.guard != sp.true
    assert "Piecewise" in str(body)
    unpadded = gn.conv2d.body([(None, 1, 8, 8), (4, 1, 3, 3), (4,)], {"stride": 1, "padding": 0})
    assert all(t.guard == sp.true for t in unpadded.terms)


def test_strided_conv_input_gradient_is_a_guarded_gather_over_the_kernel_window():
    g, x, K, b, y = conv_graph((2, 2), (1, 1), shape=(2, 9, 9))
    vjp = index_vjp_body(y.op.node_body(y), 0, [(None, 2, 9, 9), K.shape, b.shape])
    (term,) = vjp.terms
    # solved for the output row/column (the long axes): the loops left are the short ones
    assert {str(i) for i in term.reduce_indices} == {"o", "kh", "kw"}
    assert term.guard.atoms(sp.Mod), "a stride needs a divisibility guard"
    assert term.expr.atoms(sp.floor), "the solved output index is an exact floor division"


def test_conv_shape_errors_name_the_problem():
    g = gn.Graph()
    x = g.input("x", (None, 2, 5, 5))
    K = g.parameter("K", (3, 4, 3, 3))
    b = g.parameter("b", (3,))
    with pytest.raises(gn.ShapeError, match="channels"):
        gn.conv2d(x, K, b)
    K2 = g.parameter("K2", (3, 2, 7, 7))
    with pytest.raises(gn.ShapeError, match="does not fit"):
        gn.conv2d(x, K2, b)


@pytest.mark.skipif(not CPU, reason="the compiled CPU target is not available")
@pytest.mark.parametrize("stride,padding", [((1, 1), (1, 1)), ((2, 2), (1, 1))])
def test_compiled_cpu_conv_net_matches_reference(stride, padding):
    g = gn.Graph("tiny_cnn", seed=0)
    x, t = g.input("x", (None, 1, 6, 6)), g.input("t", (None, 4))
    h = gn.Conv2D(2, 3, stride=stride, padding=padding, activation="tanh")(x)
    h = gn.MaxPool2D(2)(h) if h.shape[2] >= 2 else h
    out = gn.Dense(4)(gn.Flatten()(gn.AvgPool2D(1)(h)))
    loss = gn.mse(out, t)
    rng = np.random.default_rng(4)
    feeds = {"x": rng.normal(size=(3, 1, 6, 6)), "t": rng.normal(size=(3, 4))}
    results = {}
    for target in TARGETS:
        model = gn.compile(g, loss, target=target, dtype="float64")
        results[target] = model.loss_and_gradients(feeds)
    (ref_loss, ref_grads), (cpu_loss, cpu_grads) = results["reference"], results["cpu"]
    assert abs(cpu_loss - ref_loss) <= 1e-10 * max(1.0, abs(ref_loss))
    for name, grad in ref_grads.items():
        np.testing.assert_allclose(cpu_grads[name], grad, rtol=1e-9, atol=1e-12)


@pytest.mark.skipif(not CPU, reason="the compiled CPU target is not available")
def test_max_pool_padding_is_at_most_half_the_window():
    """A window of padding alone would have no maximum (-inf): refused, as in PyTorch."""
    g = gn.Graph("pool-pad")
    x = g.input("x", (None, 1, 6, 6))
    for size, padding in [(2, 2), (3, 2), (2, (0, 2)), ((4, 2), (1, 2))]:
        with pytest.raises(gn.ShapeError, match="more than half the window"):
            gn.max_pool2d(x, size=size, padding=padding)
    assert gn.max_pool2d(x, size=3, padding=1).shape == (None, 1, 2, 2)
    assert gn.max_pool2d(x, size=(4, 2), padding=(2, 1)).shape[0] is None
    assert gn.avg_pool2d(x, size=2, padding=1).shape == (None, 1, 4, 4)     # zeros: no -inf


def test_compiled_cpu_padded_max_pool_skips_the_padding():
    g = gn.Graph()
    x = g.input("x", (None, 1, 4, 4))
    y = g.output("y", gn.max_pool2d(x, size=3, stride=2, padding=1))
    X = -1 - np.abs(np.random.default_rng(5).normal(size=(2, 1, 4, 4)))   # all below the 0 padding
    want = numpy_pool(X, 3, 2, 1, np.max)
    for target in TARGETS:
        got = gn.compile(g, outputs=[y], target=target, dtype="float64").predict({"x": X})
        np.testing.assert_array_equal(got, want)
