"""The generic VJP rule on strided, reversed, dilated and non-affine accesses.

Each op is declared in index notation only; its gradient is derived (a gather) and checked
against central differences. Ops declared here are removed again by conftest's fixture.
"""
import numpy as np
import sympy as sp

import graphnn as gn
from graphnn.derive.vjp import index_vjp_body


def gradient_ok(op, in_shape, **attrs):
    g = gn.Graph()
    x = g.input("x", (None, *in_shape))
    y = op(x, **attrs)
    rng = np.random.default_rng(0)
    loss = gn.sum(gn.square(y) * g.constant(rng.normal(size=y.shape[1:])))
    report = gn.check_grad(loss, {"x": rng.normal(size=(3, *in_shape))}, wrt=["x"], directions=3)
    return y, report


def vjp_of(y):
    return index_vjp_body(y.op.node_body(y), 0, [p.shape for p in y.inputs])


def test_stride_without_a_unit_index_gets_a_divisibility_guard():
    @gn.index_op
    def every_second(x):
        n, i = gn.indices("n i")
        return (n, (i, x.shape[1] // 2)), x[n, 2 * i]

    y, report = gradient_ok(every_second, (7,))
    assert report.ok, report
    (term,) = vjp_of(y).terms
    assert term.reduce == ()                       # solved: no loop left
    assert sp.Mod in {type(a) for a in term.guard.atoms(sp.Mod)}
    back = gn.derive(gn.sum(y))
    grad = gn.evaluate([back.delta(y.inputs[0])], {"x": np.ones((1, 7))})
    np.testing.assert_array_equal(next(iter(grad.values())), [[1, 0, 1, 0, 1, 0, 0]])


def test_reversed_access_has_coefficient_minus_one():
    @gn.index_op
    def reverse(x):
        n, i = gn.indices("n i")
        return (n, (i, x.shape[1])), x[n, x.shape[1] - 1 - i]

    y, report = gradient_ok(reverse, (5,))
    assert report.ok, report
    assert str(vjp_of(y)) == "out[a0, a1] = delta[a0, 4 - a1]"


def test_dilated_window_solves_for_the_longest_index():
    @gn.index_op
    def dilated(x, w):
        n, i, k = gn.indices("n i k")
        return (n, (i, 4)), gn.IndexSum(x[n, 2 * i + 2 * k] * w[k], k)

    g = gn.Graph()
    x, w = g.input("x", (None, 10)), g.parameter("w", (3,))
    y = dilated(x, w)
    rng = np.random.default_rng(1)
    loss = gn.sum(gn.square(y))
    assert gn.check_grad(loss, {"x": rng.normal(size=(2, 10))}, wrt=["x", "w"]).ok
    (term,) = index_vjp_body(y.op.node_body(y), 0, [(None, 10), (3,)]).terms
    assert [str(i) for i in term.reduce_indices] == ["k"]  # i (4 values) solved, k (3) left


def test_non_invertible_access_keeps_its_loop_with_an_equality_guard():
    @gn.index_op
    def upsample(x):
        n, i = gn.indices("n i")
        return (n, (i, 2 * x.shape[1])), x[n, sp.floor(i / 2)]

    y, report = gradient_ok(upsample, (4,))
    assert report.ok, report
    (term,) = vjp_of(y).terms
    assert [str(i) for i in term.reduce_indices] == ["i"]
    assert term.guard.atoms(sp.Eq)
    back = gn.derive(gn.sum(y))
    grad = gn.evaluate([back.delta(y.inputs[0])], {"x": np.ones((1, 4))})
    np.testing.assert_array_equal(next(iter(grad.values())), [[2, 2, 2, 2]])


def test_guarded_body_parses_into_a_term_guard():
    @gn.index_op
    def shift_right(x):
        n, i = gn.indices("n i")
        return (n, (i, x.shape[1])), gn.ops.guarded(x[n, i - 1], i >= 1)

    body = shift_right.body([(None, 4)])
    (term,) = body.terms
    assert term.guard == (sp.Symbol("i", integer=True) >= 1)
    y, report = gradient_ok(shift_right, (4,))
    assert report.ok, report
    np.testing.assert_array_equal(gn.evaluate([y], {"x": np.array([[1.0, 2, 3, 4]])})[y.name],
                                  [[0, 1, 2, 3]])
