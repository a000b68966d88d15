"""The NumPy reference executor: outputs, dtypes, parameter overrides and batch sizes."""
import numpy as np
import pytest
import sympy as sp

import graphnn as gn
from graphnn import lecture


def test_evaluate_returns_arrays_by_node_name():
    g = gn.Graph()
    x = g.input("x", (None, 2))
    y = gn.relu(x, name="y")
    z = gn.add(y, 1.0, name="z")
    out = gn.evaluate([y, z], {"x": np.array([[-1.0, 2.0]])})
    assert set(out) == {"y", "z"}
    np.testing.assert_array_equal(out["y"], [[0.0, 2.0]])
    np.testing.assert_array_equal(out["z"], [[1.0, 3.0]])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_evaluate_in_the_requested_dtype(dtype):
    net = lecture.regression_net()
    x, y = lecture.noisy_sine(8)
    back = gn.derive(net.loss)
    nodes = [net.loss, net.output, *back.gradients.values()]
    values = gn.evaluate(nodes, {"x": x, "y": y}, dtype=dtype)
    assert all(values[n.name].dtype == np.dtype(dtype) for n in nodes)
    reference = gn.evaluate(nodes, {"x": x, "y": y})
    for n in nodes:
        np.testing.assert_allclose(values[n.name], reference[n.name], rtol=1e-5 if dtype == "float32" else 0,
                                   atol=1e-6 if dtype == "float32" else 0)


def test_params_override_the_graph_values():
    net = lecture.regression_net()
    x, y = lecture.noisy_sine(8)
    zero = {name: np.zeros_like(v) for name, v in net.graph.values.items()}
    out = gn.evaluate([net.output], {"x": x}, params=zero)[net.output.name]
    np.testing.assert_array_equal(out, np.zeros((8, 1)))
    W = np.array([[2.0], [-1.0]])   # only output/W is overridden; the rest keep the graph's values
    partial = gn.evaluate([net.output], {"x": x}, params={"output/W": W})[net.output.name]
    v = net.graph.values
    h = np.tanh(x @ v["hidden/W"] + v["hidden/b"])
    np.testing.assert_allclose(partial, h @ W + v["output/b"], rtol=1e-12)


def test_the_regression_net_by_hand():
    net = lecture.regression_net()
    x, y = lecture.noisy_sine(8)
    v = net.graph.values
    h = np.tanh(x @ v["hidden/W"] + v["hidden/b"])
    y_hat = h @ v["output/W"] + v["output/b"]
    loss, grads = gn.loss_and_gradients(net.loss, {"x": x, "y": y})
    assert loss == pytest.approx(np.mean((y_hat - y) ** 2), rel=1e-12)
    d_out = 2 * (y_hat - y) / len(x)
    d_hidden = (d_out @ v["output/W"].T) * (1 - h ** 2)
    np.testing.assert_allclose(grads["output/W"], h.T @ d_out, rtol=1e-12)
    np.testing.assert_allclose(grads["output/b"], d_out.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(grads["hidden/W"], x.T @ d_hidden, rtol=1e-12)
    np.testing.assert_allclose(grads["hidden/b"], d_hidden.sum(axis=0), rtol=1e-12)


def test_a_delta_that_reads_no_batched_input_takes_the_batch_size_from_the_feeds():
    # the delta of mean(x) is 1/(N*2) everywhere: it reads only the scalar seed, not x
    g = gn.Graph()
    x = g.input("x", (None, 2))
    back = gn.derive(gn.mean(x))
    dx = back.delta(x)
    assert x not in gn.topological([dx])
    for n in (1, 5):
        got = gn.evaluate([dx], {"x": np.ones((n, 2))})[dx.name]
        np.testing.assert_allclose(got, np.full((n, 2), 1 / (2 * n)))
    with pytest.raises(gn.FeedError, match="the batch size is unknown.*feed one of \\['x'\\]"):
        gn.evaluate([dx], {})


def test_outputs_are_broadcast_to_their_full_shape():
    g = gn.Graph()
    x = g.input("x", (None, 3))
    c = gn.add(gn.mul(x, 0.0), g.constant([1.0, 2.0, 3.0]))
    out = gn.evaluate([c], {"x": np.zeros((4, 3))})[c.name]
    assert out.shape == (4, 3) and out.flags.writeable
    np.testing.assert_array_equal(out, np.tile([1.0, 2.0, 3.0], (4, 1)))


def test_the_einsum_path_and_the_grid_path_agree():
    # linear's sum term goes through np.einsum; a body with a non-product term does not
    @gn.index_op
    def tanh_linear(x, W):
        n, j, i = gn.indices("n j i")
        return (n, j), gn.IndexSum(sp.tanh(x[n, i] * W[i, j]), i)

    @gn.index_op
    def plain_linear(x, W):
        n, j, i = gn.indices("n j i")
        return (n, j), gn.IndexSum(x[n, i] * W[i, j], i)

    g = gn.Graph()
    x = g.input("x", (None, 3))
    W = g.parameter("W", (3, 2))
    a, b = tanh_linear(x, W), plain_linear(x, W)
    X = np.random.default_rng(0).normal(size=(4, 3))
    v = gn.evaluate([a, b], {"x": X})
    Wv = g.values["W"]
    np.testing.assert_allclose(v[a.name], np.tanh(X[:, :, None] * Wv[None]).sum(axis=1), rtol=1e-12)
    np.testing.assert_allclose(v[b.name], X @ Wv, rtol=1e-12)
    term = tanh_linear.body([(None, 3), (3, 2)]).terms[0]
    assert sp.tanh in {type(f) for f in term.expr.atoms(sp.Function)}   # not a plain product
    assert gn.check_grad(gn.sum(a), {"x": X}, wrt=[x, W]).ok
