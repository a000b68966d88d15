"""What a declaration says besides its body: activation, domain, kinks, a declared derivative."""
import math

import numpy as np
import pytest
import sympy as sp

import graphnn as gn
from support import central_difference, forward_and_derivatives


def test_a_user_activation_joins_activations_and_dense():
    @gn.elementwise(activation=True)
    def meta_cube_act(x):
        return x ** 3 / 3
    assert "meta_cube_act" in gn.ACTIVATIONS
    assert gn.ACTIVATIONS[-1] == "meta_cube_act" or "meta_cube_act" in list(gn.ACTIVATIONS)
    g = gn.Graph("meta_dense")
    x = g.input("x", (None, 2))
    y = gn.dense(x, 3, activation="meta_cube_act", name="h")
    feeds = {"x": np.array([[1.0, -2.0]])}
    W, b = np.array([[0.5, -1.0, 2.0], [0.25, 1.5, -0.5]]), np.array([0.1, 0.2, -0.3])
    got = gn.evaluate([y], feeds, params={"h/W": W, "h/b": b})[y.name]
    np.testing.assert_allclose(got, (feeds["x"] @ W + b) ** 3 / 3)


def test_an_op_not_declared_an_activation_is_refused_by_dense():
    @gn.elementwise
    def meta_plain(x):
        return 2 * x
    assert "meta_plain" not in gn.ACTIVATIONS
    g = gn.Graph("meta_refused")
    with pytest.raises(gn.ArgumentError, match="meta_plain"):
        gn.dense(g.input("x", (None, 2)), 3, activation="meta_plain")


def test_domain_and_kinks_are_stored_per_input():
    @gn.elementwise(domain={"y": (0, math.inf)}, kinks={"x": (0, 1)})
    def meta_two(x, y):
        return x * y
    assert meta_two.domain == ((-math.inf, math.inf), (0.0, math.inf))
    assert meta_two.kinks == ((0.0, 1.0), ())
    assert gn.relu6.kinks == ((0.0, 6.0),)
    assert gn.log.domain == ((0.0, math.inf),)


@pytest.mark.parametrize("keywords, match", [
    ({"domain": (1, 0)}, "domain"),
    ({"domain": (0, "a")}, "domain"),
    ({"domain": {"z": (0, 1)}}, "not inputs"),
    ({"kinks": (0, math.nan)}, "kinks"),
    ({"kinks": (math.inf,)}, "kinks"),
    ({"activation": "yes"}, "activation"),
    ({"derivative": 3}, "derivative"),
    ({"derivative": lambda x: (1, 2)}, "1 expression"),
    ({"derivative": lambda x: sp.besselj(0, x)}, "besselj"),
    ({"derivative": lambda x: "1"}, "not a SymPy"),
])
def test_bad_metadata_is_refused_at_declaration(keywords, match):
    with pytest.raises(gn.OpDeclarationError, match=match):
        @gn.elementwise(**keywords)
        def meta_bad(x):
            return x * x
    assert "meta_bad" not in gn.REGISTRY


def test_a_wrong_declared_derivative_is_refused_and_not_registered():
    with pytest.raises(gn.OpDeclarationError, match="sp.diff of the body gives"):
        @gn.elementwise(derivative=lambda x: 2 * x + 1e-9)
        def meta_wrong(x):
            return x * x
    assert "meta_wrong" not in gn.REGISTRY


def test_a_derivative_by_input_name_for_two_inputs():
    @gn.elementwise(derivative=lambda x, y: {"x": y * sp.cos(x * y), "y": x * sp.cos(x * y)})
    def meta_sinxy(x, y):
        return sp.sin(x * y)
    args = [np.array([0.3, -1.2, 2.0]), np.array([0.5, 0.7, -0.4])]
    _, (dx, dy) = forward_and_derivatives(meta_sinxy, args)
    f = lambda x, y: np.sin(x * y)   # noqa: E731
    np.testing.assert_allclose(dx, central_difference(f, args, 0), rtol=1e-8)
    np.testing.assert_allclose(dy, central_difference(f, args, 1), rtol=1e-8)


def test_the_override_is_what_the_backward_pass_and_local_derivative_use():
    g = gn.Graph("meta_softsign")
    x = g.input("x", (None,))
    y = gn.softsign(x)
    assert str(gn.local_derivative(y, x).expr) == f"(Abs({x.name}) + 1)**(-2)"
    # float32 at 1e4: the declared form keeps every digit, the derived one cancels
    xs = np.array([1e4, -1e4, 3e3], dtype=np.float32)
    exact = 1 / (1 + np.abs(xs.astype(np.float64))) ** 2
    for target in ("reference", "cpu"):
        g2 = gn.Graph("meta_softsign_slope")
        p = g2.parameter("p", (3,), init=lambda rng, shape: xs.astype(np.float64))
        model = gn.compile(g2, gn.sum(gn.softsign(p)), target=target, dtype="float32",
                           optimizer=gn.SGD(lr=0.0))
        slope = model.loss_and_gradients({})[1]["p"]
        np.testing.assert_allclose(slope, exact, rtol=2e-7)
    derived = sp.lambdify(gn.softsign.symbols, gn.softsign.derived_derivative(0), "numpy")(xs)
    assert np.max(np.abs(derived - exact) / exact) > 1e-5     # what the override avoids


def test_the_override_is_part_of_the_op_identity():
    def body(x):
        return x / (1 + sp.Abs(x))
    plain = gn.ElementwiseOp("meta_id", body, ("x",))
    declared = gn.ElementwiseOp("meta_id", body, ("x",), derivative=lambda x: 1 / (1 + sp.Abs(x)) ** 2)
    assert plain.digest != declared.digest


def test_fast_math_is_derived_from_the_body():
    assert gn.tanh.fast_math and gn.sigmoid.fast_math and gn.gelu.fast_math
    assert not gn.relu.fast_math and not gn.softsign.fast_math and not gn.add.fast_math


def test_index_op_examples_are_checked_at_declaration():
    with pytest.raises(gn.OpDeclarationError, match="lacks the shape"):
        @gn.index_op(examples=[{}])
        def meta_rows(x):
            n, i = gn.indices("n i")
            return (n,), gn.IndexSum(x[n, i], i)
    with pytest.raises(gn.OpDeclarationError, match="does not build"):
        @gn.index_op(examples=[{"x": (None, 2, 2)}])
        def meta_rows2(x):
            n, i = gn.indices("n i")
            return (n,), gn.IndexSum(x[n, i], i)
