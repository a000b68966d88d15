"""An op declared by the user works at once: forward, derivative, check_grad."""
import numpy as np
import sympy as sp

import graphnn as gn


def test_a_user_declared_swish_works_at_once():
    @gn.elementwise
    def my_swish(x):
        return x * gn.Sigmoid(x)

    assert gn.REGISTRY["my_swish"] is my_swish
    xs = my_swish.symbols[0]
    s = gn.Sigmoid(xs)
    assert sp.simplify(my_swish.derivative(0) - (s + xs * s * (1 - s))) == 0
    g = gn.Graph()
    x = g.input("x", (None, 3))
    out = my_swish(x)
    X = np.linspace(-5, 5, 12).reshape(4, 3)
    np.testing.assert_allclose(gn.evaluate([out], {"x": X})[out.name], X / (1 + np.exp(-X)), rtol=1e-12)
    h = gn.dense(x, 4, activation=my_swish, name="hidden")
    assert h.op is my_swish
    loss = gn.mse(gn.dense(h, 1), g.input("y", (None, 1)))
    assert gn.check_grad(loss, {"x": X, "y": np.ones((4, 1))}).ok


def test_a_new_op_x_tanh_x():
    @gn.elementwise
    def x_tanh(x):
        """x * tanh(x)"""
        return x * sp.tanh(x)

    assert x_tanh.__doc__ == "x * tanh(x)"
    g = gn.Graph()
    x = g.input("x", (None, 2))
    out = x_tanh(x)
    back = gn.derive(gn.sum(out))
    X = np.array([[-2.0, -0.3], [0.0, 1.7]])
    values = gn.evaluate([out, back.delta(x)], {"x": X})
    np.testing.assert_allclose(values[out.name], X * np.tanh(X), rtol=1e-12)
    np.testing.assert_allclose(values[back.delta(x).name], np.tanh(X) + X * (1 - np.tanh(X) ** 2), rtol=1e-12)
    assert gn.check_grad(gn.mean(out), {"x": X}, wrt=[x]).ok


def test_a_user_op_with_an_attribute():
    @gn.elementwise
    def scaled_tanh(x, beta=1.0):
        return sp.tanh(beta * x)

    assert scaled_tanh.attr_defaults == {"beta": 1.0}
    g = gn.Graph()
    x = g.input("x", (None, 1))
    out = scaled_tanh(x, beta=2.0)
    assert out.attr("beta") == 2.0
    X = np.array([[0.4], [-1.0]])
    back = gn.derive(gn.sum(out))
    values = gn.evaluate([out, back.delta(x)], {"x": X})
    np.testing.assert_allclose(values[out.name], np.tanh(2 * X), rtol=1e-12)
    np.testing.assert_allclose(values[back.delta(x).name], 2 * (1 - np.tanh(2 * X) ** 2), rtol=1e-12)


def test_a_user_declared_index_op_gets_its_gradient_from_the_generic_rule():
    @gn.index_op
    def weighted_row_sums(x, w):
        n, i = gn.indices("n i")
        return (n,), gn.IndexSum(x[n, i] * w[i] ** 2, i)

    g = gn.Graph()
    x = g.input("x", (None, 3))
    w = g.parameter("w", (3,), value=[1.0, -2.0, 0.5])
    out = weighted_row_sums(x, w)
    assert out.shape == (None,)
    X = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(gn.evaluate([out], {"x": X})[out.name], X @ np.array([1.0, 4.0, 0.25]))
    loss = gn.sum(out * out)
    _, grads = gn.loss_and_gradients(loss, {"x": X})
    rows = X @ np.array([1.0, 4.0, 0.25])
    np.testing.assert_allclose(grads["w"], 2 * (2 * rows) @ X * np.array([1.0, -2.0, 0.5]), rtol=1e-12)
    assert gn.check_grad(loss, {"x": X}, wrt=[x, w]).ok
