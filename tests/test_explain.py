"""gn.explain: the chain rule as the lecture writes it -- paths, local derivatives, deltas."""
import doctest
import importlib

import numpy as np
import pytest

import graphnn as gn

explain_module = importlib.import_module("graphnn.explain")    # gn.explain is the function


def _softmax_case(n=6):
    net = gn.lecture.softmax_classifier()
    x, labels = gn.lecture.two_blobs(n=n)
    return net, {"x": x, "y": np.eye(2)[labels[:, 0].astype(int)]}


def test_softmax_classifier_reproduces_the_lectures_equation():
    net, _ = _softmax_case()
    e = gn.explain(net.loss, wrt=net.graph.parameters["linear/W"])
    # dz4/dtheta = sum over the two paths through z^3_1 and z^3_2, each through z^2_1 and z^2_2
    assert [[(n.name, i) for n, i in p.steps] for p in e.paths] == [
        [("nll/nll", None), ("log_softmax/log_softmax", k), ("linear/z", i), ("linear/W", None)]
        for k in (0, 1) for i in (0, 1)]
    text = str(e)
    assert ("dz^4/d(linear/W) = dz^4/dz^3_1 * (dz^3_1/dz^2_1 * dz^2_1/d(linear/W) + dz^3_1/dz^2_2 * "
            "dz^2_2/d(linear/W)) + dz^4/dz^3_2 * (dz^3_2/dz^2_1 * dz^2_1/d(linear/W) + dz^3_2/dz^2_2 * "
            "dz^2_2/d(linear/W))") in text
    for line in ("delta^4 = 1", "delta^3_1 = delta^4 * dz^4/dz^3_1", "delta^3_2 = delta^4 * dz^4/dz^3_2",
                 "delta^2_1 = delta^3_1 * dz^3_1/dz^2_1 + delta^3_2 * dz^3_2/dz^2_1",
                 "delta^2_2 = delta^3_1 * dz^3_1/dz^2_2 + delta^3_2 * dz^3_2/dz^2_2"):
        assert f"  {line}\n" in text
    # each layer's local derivative is built from gn.local_derivative of the graph's edges
    assert "[dlinear/z[n, j]/dlinear/W[i, j] = x[n, i]]" in text
    assert "[dlog_softmax/exp/dlog_softmax/sub = exp(log_softmax/sub)]" in text
    assert "numbers" not in text and e.gradient is None     # no feed: symbols only
    latex = e.latex
    assert latex.startswith("\\begin{aligned}") and e._repr_latex_() == f"$${latex}$$"
    assert (r"\frac{\partial z^{4}}{\partial z^{3}_{1}} \left(\frac{\partial z^{3}_{1}}{\partial z^{2}_{1}} "
            r"\frac{\partial z^{2}_{1}}{\partial \mathrm{linear/W}} + ") in latex
    assert r"\delta^{3}_{2} &= \delta^{4} \frac{\partial z^{4}}{\partial z^{3}_{2}}" in latex


@pytest.mark.parametrize("wrt", ["linear/W", "linear/b", "x"])
def test_sum_over_paths_is_the_gradient_and_deltas_are_graphnns(wrt):
    net, feed = _softmax_case()
    node = net.graph.parameters.get(wrt) or net.graph.inputs[wrt]
    e = gn.explain(net.loss, wrt=node, feed=feed)
    _, grads = gn.loss_and_gradients(net.loss, feed)
    back = gn.derive(net.loss)
    expected = grads[wrt] if wrt in grads else gn.evaluate([back.delta(node)], feed)[back.delta(node).name]
    np.testing.assert_allclose(e.path_sum, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(e.gradient, expected, rtol=1e-12, atol=1e-12)
    assert len(e.paths) == 4 and all(np.any(p.value != 0) for p in e.paths)
    for layer in e.layers:    # explain's own recursion equals graphnn's delta nodes
        d = back.delta(layer)
        np.testing.assert_allclose(e.deltas[layer.name], gn.evaluate([d], feed)[d.name], rtol=1e-12, atol=1e-12)


def test_factors_are_per_example_and_multiply_to_the_path():
    net, feed = _softmax_case(n=5)
    e = gn.explain(net.loss, wrt=net.graph.parameters["linear/W"], feed=feed)
    z = gn.evaluate([net.layers["z3"]], feed)[net.layers["z3"].name]
    p = np.exp(z)
    for path in e.paths:
        (_, k), (_, i) = path.steps[1], path.steps[2]
        d_loss, d_softmax, d_linear = path.factors
        np.testing.assert_allclose(d_loss, -feed["y"][:, k])                       # d(-sum y log p)/d log p_k
        np.testing.assert_allclose(d_softmax, (k == i) - p[:, i], atol=1e-12)      # d log p_k / d z_i
        assert d_linear.shape == (5, 2, 2)                                          # dz_i/dW per example
        np.testing.assert_allclose(d_linear[:, :, i], feed["x"])
        np.testing.assert_allclose(np.delete(d_linear, i, axis=2), 0)
        manual = np.einsum("n,n,nab->ab", d_loss, d_softmax, d_linear)
        np.testing.assert_allclose(path.value, manual, atol=1e-12)


def test_table_rows_and_text():
    net, feed = _softmax_case()
    e = gn.explain(net.loss, wrt=net.graph.parameters["linear/W"], feed=feed)
    rows = e.table()
    assert isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
    assert [r["what"] for r in rows] == ["path"] * 4 + ["delta"] * 6 + ["sum", "gradient"]
    by_term = {r["term"]: r for r in rows}
    np.testing.assert_allclose(by_term["sum over paths"]["value"], by_term["gn.derive"]["value"])
    np.testing.assert_allclose(by_term["delta^3_2"]["value"], -feed["y"][:, 1])
    assert by_term["delta^2_1"]["formula"] == "delta^3_1 * dz^3_1/dz^2_1 + delta^3_2 * dz^3_2/dz^2_1"
    text = str(rows)
    assert text.splitlines()[0].split() == ["what", "term", "formula", "value"]
    assert "delta^3_1" in text and len(text.splitlines()) == len(rows) + 2


def test_scopeless_graph_each_op_is_a_layer_and_big_layers_stay_tensors(monkeypatch):
    g = gn.Graph()
    x = g.input("x", (None, 3))
    w = g.parameter("w", (3, 3))
    loss = gn.sum(gn.tanh(gn.matmul(x, w)))
    feed = {"x": np.random.default_rng(1).normal(size=(4, 3))}
    e = gn.explain(loss, wrt=w, feed=feed)
    assert [e.labels[n.name] for n in e.layers] == ["z^4", "z^3", "z^2", "w"]
    assert len(e.paths) == 9     # 3 elements of tanh x 3 of matmul, tanh is diagonal: 6 are 0
    assert sum(np.any(p.value != 0) for p in e.paths) == 3
    np.testing.assert_allclose(e.path_sum, gn.loss_and_gradients(loss, feed)[1]["w"], atol=1e-12)
    monkeypatch.setattr(explain_module, "MAX_PATHS", 4)      # too many element paths: one per tensor
    e = gn.explain(loss, wrt=w, feed=feed)
    assert len(e.paths) == 1 and e.paths[0].steps[1] == (e.layers[1], None)
    assert "dz^4/dw = dz^4/dz^3 * dz^3/dz^2 * dz^2/dw" in str(e)
    np.testing.assert_allclose(e.path_sum, gn.loss_and_gradients(loss, feed)[1]["w"], atol=1e-12)


def test_fan_out_sums_the_paths():
    g = gn.Graph()
    x = g.input("x", (None, 1))
    w = g.parameter("w", (1, 1), value=[[0.7]])
    h = gn.matmul(x, w)
    loss = gn.sum(gn.tanh(h) * gn.exp(h))    # two paths from h to the loss
    feed = {"x": np.array([[0.3], [-1.2]])}
    e = gn.explain(loss, wrt=w, feed=feed)
    assert len(e.paths) == 2
    np.testing.assert_allclose(e.path_sum, gn.loss_and_gradients(loss, feed)[1]["w"], rtol=1e-12)
    back = gn.derive(loss)
    np.testing.assert_allclose(e.deltas[h.name], gn.evaluate([back.delta(h)], feed)[back.delta(h).name])


def test_module_doctest():
    assert doctest.testmod(explain_module).failed == 0


def test_bad_input_names_the_node():
    net, feed = _softmax_case()
    W = net.graph.parameters["linear/W"]
    with pytest.raises(gn.ShapeError, match="explain: loss 'log_softmax/log_softmax'"):
        gn.explain(net.output, wrt=W)
    other = gn.lecture.softmax_classifier()
    with pytest.raises(gn.GraphMixError, match="wrt 'linear/W' belongs to graph"):
        gn.explain(net.loss, wrt=other.graph.parameters["linear/W"])
    unused = net.graph.parameter("unused", (2,))
    with pytest.raises(gn.ArgumentError, match="does not depend on wrt 'unused'"):
        gn.explain(net.loss, wrt=unused)
    with pytest.raises(gn.ArgumentError, match="it is the loss itself"):
        gn.explain(net.loss, wrt=net.loss)
    with pytest.raises(gn.ArgumentError, match="wrt 'linear/W'"):
        gn.explain(net.loss, wrt="linear/W")
    with pytest.raises(gn.FeedError, match=r"explain: missing feed\(s\) \['y'\]"):
        gn.explain(net.loss, wrt=W, feed={"x": feed["x"]})
    g = gn.Graph()
    x = g.input("x", (None, 1))
    stopped = gn.sum(gn.stop_gradient(x) * 2.0)
    with pytest.raises(gn.ArgumentError, match="no gradient with respect to wrt 'x'"):
        gn.explain(stopped, wrt=x)


def test_paths_through_stop_gradient_are_left_out_of_a_layers_derivative():
    """log-softmax's max shift sits behind stop_gradient: its paths multiply by 0 and add nothing."""
    net = gn.lecture.softmax_classifier()
    x, labels = gn.lecture.two_blobs(4, seed=0)
    text = str(gn.explain(net.loss, wrt=net.graph.parameters["linear/W"],
                          feed={"x": x, "y": np.eye(2)[labels[:, 0].astype(int)]}))
    assert "2 path(s) through a zero factor (stop_gradient) left out" in text
    assert "max_shift" not in text
