"""The backward graph: delta nodes checked by hand on the lecture's softmax classifier,
fan-out accumulation, ``wrt``, and symbolic local derivatives."""
import numpy as np
import pytest
import sympy as sp

import graphnn as gn
from graphnn import lecture

# one fixed point: three examples, two features, two classes
X = np.array([[1.0, 2.0], [-0.5, 0.3], [2.0, -1.0]])
Y = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
W = np.array([[0.1, -0.2], [0.3, 0.4]])
B = np.array([0.05, -0.1])


def _by_hand():
    """Every quantity of the lecture's classifier computed with plain NumPy."""
    z2 = X @ W + B
    p = np.exp(z2) / np.exp(z2).sum(axis=1, keepdims=True)
    z3 = np.log(p)
    z4 = -(Y * z3).sum()
    delta3 = -Y                   # dz4/dz3
    delta2 = p - Y                # softmax(z2) - y
    return dict(z2=z2, z3=z3, z4=z4, delta3=delta3, delta2=delta2,
                dW=X.T @ delta2, db=delta2.sum(axis=0), dx=delta2 @ W.T)


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 1e-5)])
def test_softmax_classifier_deltas_by_hand(dtype, rtol):
    net = lecture.softmax_classifier()
    z1, z2, z3, z4 = (net.layers[k] for k in ("z1", "z2", "z3", "z4"))
    assert z4 is net.loss and z2.op.name == "linear" and z4.shape == ()
    back = gn.derive(net.loss)
    params = {"linear/W": W, "linear/b": B}
    assert set(back.gradients) == set(params)
    wanted = [z2, z3, z4, back.delta(z4), back.delta(z3), back.delta(z2), back.delta(z1),
              back.gradients["linear/W"], back.gradients["linear/b"]]
    v = gn.evaluate(wanted, {"x": X, "y": Y}, params=params, dtype=dtype)
    hand = _by_hand()
    value = lambda node: v[node.name]  # noqa: E731
    np.testing.assert_allclose(value(z2), hand["z2"], rtol=rtol)
    np.testing.assert_allclose(value(z3), hand["z3"], rtol=rtol)
    assert float(value(z4)) == pytest.approx(hand["z4"], rel=rtol)
    assert back.delta(z4) is back.seed and float(value(back.delta(z4))) == 1.0   # delta4 = 1
    np.testing.assert_allclose(value(back.delta(z3)), hand["delta3"], rtol=rtol)  # -y
    np.testing.assert_allclose(value(back.delta(z2)), hand["delta2"], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(value(back.delta(z1)), hand["dx"], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(value(back.gradients["linear/W"]), hand["dW"], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(value(back.gradients["linear/b"]), hand["db"], rtol=rtol, atol=rtol)


def test_loss_and_gradients_agrees_with_the_hand_computation():
    net = lecture.softmax_classifier()
    loss, grads = gn.loss_and_gradients(net.loss, {"x": X, "y": Y},
                                        params={"linear/W": W, "linear/b": B})
    hand = _by_hand()
    assert loss == pytest.approx(hand["z4"], rel=1e-12)
    np.testing.assert_allclose(grads["linear/W"], hand["dW"], rtol=1e-12)
    np.testing.assert_allclose(grads["linear/b"], hand["db"], rtol=1e-12)


def test_delta_nodes_are_ordinary_nodes_with_role_delta():
    net = lecture.regression_net()
    back = gn.derive(net.loss)
    forward_ops = [n for n in back.forward if n.kind != "constant"]
    # one delta per node the loss depends on through a parameter or an input
    assert [n for n, _ in back.delta_items] == list(reversed(forward_ops))
    assert back.delta_items[0] == (net.loss, back.seed)
    for node, delta in back.delta_items:
        assert delta.shape == node.shape
        assert delta.role == "delta"
    assert all(n.role in ("forward", "delta") for n in back.nodes)
    assert {n.name for n in back.nodes} >= {d.name for _, d in back.delta_items}
    assert set(back.gradients) == set(net.graph.parameters)
    unrelated = net.graph.input("unrelated", (None, 1))
    with pytest.raises(KeyError, match="'unrelated' has no delta"):
        back.delta(unrelated)


def test_fan_out_is_accumulated_over_consumers():
    g = gn.Graph()
    x = g.input("x", (None, 2))
    loss = gn.sum(gn.tanh(x) * x + gn.exp(x))   # x feeds tanh, mul and exp
    back = gn.derive(loss)
    dx = back.delta(x)
    assert dx.op.name == "accumulate3" and len(dx.inputs) == 3
    Xv = np.array([[0.3, -1.2], [2.0, 0.1]])
    got = gn.evaluate([dx], {"x": Xv})[dx.name]
    np.testing.assert_allclose(got, (1 - np.tanh(Xv) ** 2) * Xv + np.tanh(Xv) + np.exp(Xv), rtol=1e-12)


def test_wrt_limits_which_leaves_get_deltas():
    net = lecture.regression_net()
    W = net.graph.parameters["output/W"]
    back = gn.derive(net.loss, wrt=[W])
    assert set(back.gradients) == {"output/W"}
    assert not back.has_delta(net.layers["x"]) and not back.has_delta(net.layers["hidden"])
    full = gn.derive(net.loss)
    feeds = dict(zip("xy", lecture.noisy_sine(8)))
    a = gn.evaluate([back.gradients["output/W"]], feeds)
    b = gn.evaluate([full.gradients["output/W"]], feeds)
    np.testing.assert_allclose(next(iter(a.values())), next(iter(b.values())), rtol=1e-14)


def test_derive_is_the_same_for_a_5000_node_chain():
    g = gn.Graph()
    x = g.input("x", (None, 1))
    h = x
    for _ in range(2500):
        h = gn.tanh(h * 0.999 + 0.01)  # bounded: the chain neither explodes nor vanishes to 0
    back = gn.derive(gn.sum(h))
    Xv = np.array([[0.5], [-0.5]])
    dx = gn.evaluate([back.delta(x)], {"x": Xv})[back.delta(x).name]
    v, d = Xv.copy(), np.ones_like(Xv)
    for _ in range(2500):
        v = np.tanh(v * 0.999 + 0.01)
        d = d * (1 - v ** 2) * 0.999
    np.testing.assert_allclose(dx, d, rtol=1e-9)


# -- local derivatives -------------------------------------------------------


def test_local_derivative_of_a_tanh_layer():
    net = lecture.regression_net()
    hidden = net.layers["hidden"]
    z = hidden.inputs[0]
    local = net.graph.local_derivative(hidden, 0)
    assert isinstance(local, gn.LocalDerivative)
    zs = sp.Symbol(z.name, real=True)
    assert sp.simplify(local.expr - (1 - sp.tanh(zs) ** 2)) == 0
    assert local.expr.equals(sp.diff(sp.tanh(zs), zs))
    assert gn.local_derivative(hidden, z).expr == local.expr  # by node or by position
    assert r"\partial" in local.latex and r"\tanh" in local.latex
    assert local._repr_latex_().startswith("$")


def test_local_derivative_of_linear_with_respect_to_its_weight():
    g = gn.Graph()
    x = g.input("x", (None, 3))
    W = g.parameter("W", (3, 2))
    b = g.parameter("b", (2,))
    z = gn.linear(x, W, b, name="z")
    n, i, j = gn.indices("n i j")
    by_w = gn.local_derivative(z, W)
    assert by_w.expr == sp.IndexedBase("x")[n, i]
    assert by_w.wrt_access == sp.IndexedBase("W")[i, j]
    assert by_w.of_access == sp.IndexedBase("z")[n, j]
    assert gn.local_derivative(z, x).expr == sp.IndexedBase("W")[i, j]
    assert gn.local_derivative(z, b).expr == 1
    assert isinstance(by_w.latex, str) and r"\partial" in by_w.latex and by_w.latex.endswith("= {x}_{n,i}")


def test_local_derivative_keeps_attributes_and_errors_name_the_nodes():
    g = gn.Graph()
    x = g.input("x", (None, 1))
    a = gn.leaky_relu(x, alpha=0.2, name="a")
    xs = sp.Symbol("x", real=True)
    assert gn.local_derivative(a, x).expr == sp.Piecewise((1, xs > 0), (0.2, True))
    other = g.input("other", (None, 1))
    with pytest.raises(ValueError, match="'other' is not an input of 'a'"):
        gn.local_derivative(a, other)
    with pytest.raises(ValueError, match="'x' is a input"):
        gn.local_derivative(x, 0)
