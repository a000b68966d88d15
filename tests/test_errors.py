"""Bad input raises a specific error that names the node, shape or argument at fault."""
import numpy as np
import pytest
import sympy as sp

import graphnn as gn
from graphnn import lecture


@pytest.fixture
def g():
    return gn.Graph("errors")


# -- shapes -------------------------------------------------------------------


def test_broadcast_failure_names_both_nodes_and_shapes(g):
    a, b = g.input("a", (None, 3)), g.input("b", (None, 4))
    with pytest.raises(gn.ShapeError) as info:
        gn.add(a, b)
    message = str(info.value)
    assert "'a' has shape (N, 3)" in message and "'b' has shape (N, 4)" in message
    assert "'add'" in message


def test_broadcast_must_keep_the_batch_axis_in_front(g):
    a, b = g.input("a", (None, 1)), g.input("b", (3, 1))
    with pytest.raises(gn.ShapeError, match=r"'a' has shape \(N, 1\) and 'b' has shape \(3, 1\)"):
        a * b  # the batch size is not known to be 3
    c, d = g.input("c", (None,)), g.input("d", (2, 1))
    with pytest.raises(gn.ShapeError, match=r"would move the batch axis \(c \(N,\), d \(2, 1\)\)"):
        c * d


def test_linear_with_a_wrong_weight_names_the_nodes_and_shapes(g):
    x = g.input("x", (None, 3))
    W, b = g.parameter("W", (4, 2)), g.parameter("b", (2,))
    with pytest.raises(gn.ShapeError) as info:
        gn.linear(x, W, b)
    message = str(info.value)
    assert "x='x' (N, 3)" in message and "W='W' (4, 2)" in message and "b='b' (2,)" in message
    with pytest.raises(gn.ShapeError, match=r"inner dimensions differ.*a='x' \(N, 3\), b='W' \(4, 2\)"):
        gn.matmul(x, W)


def test_loss_with_mismatched_target_names_prediction_and_target(g):
    y_hat, y = g.input("y_hat", (None, 1)), g.input("y", (None, 2))
    with pytest.raises(gn.ShapeError,
                       match=r"prediction 'y_hat' has shape \(N, 1\) but target 'y' has shape \(N, 2\)"):
        gn.mse(y_hat, y)


def test_other_shape_errors(g):
    x = g.input("x", (None, 2, 2))
    with pytest.raises(gn.ShapeError, match="dense 'dense': input 'x' has shape \\(N, 2, 2\\)"):
        gn.dense(x, 3)
    with pytest.raises(gn.ShapeError, match="axis 3 is out of range for a 3-d tensor"):
        gn.sum(x, axis=3)
    with pytest.raises(gn.ShapeError, match="input 'bad'.*None only for the batch axis"):
        g.input("bad", (3, None))
    with pytest.raises(gn.ShapeError, match="parameter 'P'.*batch axis"):
        g.parameter("P", (None, 3))
    with pytest.raises(gn.ShapeError, match=r"parameter 'Q': value has shape \(3,\), declared \(2, 3\)"):
        g.parameter("Q", (2, 3), value=np.ones(3))


def test_derive_of_a_non_scalar_loss(g):
    x = g.input("x", (None, 2))
    h = gn.tanh(x, name="h")
    with pytest.raises(gn.ShapeError, match=r"loss 'h' has shape \(N, 2\); reduce it to a scalar"):
        gn.derive(h)


# -- dtypes -------------------------------------------------------------------


def test_dtype_mismatch_names_both_inputs(g):
    a = g.input("a", (None, 3), dtype="float32")
    b = g.input("b", (None, 3), dtype="float64")
    with pytest.raises(gn.DtypeError, match=r"op 'mul'.*a: float32, b: float64"):
        a * b
    c = g.input("c", (None, 3))  # no explicit dtype: takes the compile dtype, mixes with either
    assert (a * c).dtype == "float32" and (b + c).dtype == "float64"


def test_unsupported_dtype(g):
    with pytest.raises(gn.DtypeError, match="input 'i': dtype int32 is not supported"):
        g.input("i", (None, 1), dtype="int32")


# -- feeds --------------------------------------------------------------------


@pytest.fixture
def net():
    return lecture.regression_net()


def test_missing_feed(net):
    with pytest.raises(gn.FeedError, match=r"missing feed\(s\) \['y'\]"):
        gn.evaluate([net.loss], {"x": np.ones((2, 1))})


def test_unknown_feed(net):
    with pytest.raises(gn.FeedError, match=r"unknown feed\(s\) \['z'\]: no input has that name"):
        gn.evaluate([net.loss], {"x": np.ones((2, 1)), "y": np.ones((2, 1)), "z": 1.0})


def test_a_feed_for_an_input_the_outputs_do_not_read_is_ignored(net):
    X = np.ones((2, 1))
    predicted = gn.evaluate([net.output], {"x": X, "y": X})   # y: an input, just not needed
    assert predicted[net.output.name].shape == (2, 1)


@pytest.mark.parametrize("value,shape", [(np.ones((2, 3)), r"\(2, 3\)"), (np.ones(2), r"\(2,\)"),
                                         (np.ones((2, 1, 1)), r"\(2, 1, 1\)")])
def test_wrong_feed_shape(net, value, shape):
    with pytest.raises(gn.FeedError, match=rf"feed 'x' has shape {shape}; input 'x' expects \(N, 1\)"):
        gn.evaluate([net.loss], {"x": value, "y": np.ones((2, 1))})


def test_feeds_that_disagree_on_the_batch_size(net):
    with pytest.raises(gn.FeedError, match="disagree on the batch size.*3.*'y' has 2|disagree.*'x' has 2"):
        gn.evaluate([net.loss], {"x": np.ones((3, 1)), "y": np.ones((2, 1))})


def test_non_numeric_feed(net):
    with pytest.raises(gn.FeedError, match="feed 'x' has dtype <U1"):
        gn.evaluate([net.loss], {"x": np.array([["a"]]), "y": np.ones((1, 1))})


def test_feed_errors_are_key_errors_with_readable_messages(net):
    with pytest.raises(KeyError) as info:
        gn.evaluate([net.loss], {"x": np.ones((2, 1))})
    assert str(info.value).startswith("missing feed")   # not KeyError's quoted repr


# -- cycles -------------------------------------------------------------------


def test_substitute_that_would_make_a_cycle(g):
    x = g.input("x", (None, 1))
    h = gn.tanh(x, name="h")
    out = gn.mul(h, 2.0, name="out")
    with pytest.raises(gn.GraphCycleError) as info:
        gn.substitute([out], {x: out})
    message = str(info.value)
    assert "binding 'x' to 'out' makes a cycle" in message and "x -> h -> out" in message


def test_merging_two_graphs_both_ways_is_a_cycle():
    first, second = gn.Graph("first"), gn.Graph("second")
    a = first.input("a", (None, 1))
    b = second.input("b", (None, 1))
    (a_out,) = gn.substitute([gn.tanh(a, name="fa")], {a: b})    # first reads second
    with pytest.raises(gn.GraphCycleError, match="'b' to 'fa'"):
        gn.substitute([a_out], {b: a_out})                        # and second reads first


# -- op declarations ----------------------------------------------------------


def test_unknown_function_is_refused_when_the_op_is_declared():
    with pytest.raises(gn.UnknownFunctionError, match="op 'foo_op'.*uses foo"):
        @gn.elementwise
        def foo_op(x):
            return sp.Function("foo")(x)
    assert "foo_op" not in gn.REGISTRY


def test_special_functions_without_a_translation_are_refused():
    with pytest.raises(gn.UnknownFunctionError, match="op 'bessel'.*besselj"):
        @gn.elementwise
        def bessel(x):
            return x * sp.besselj(0, x)
    assert "bessel" not in gn.REGISTRY


def test_unknown_function_in_an_index_op_body(g):
    @gn.index_op
    def weird_sum(x):
        n, i = gn.indices("n i")
        return (n,), gn.IndexSum(sp.Function("foo")(x[n, i]), i)
    with pytest.raises(gn.UnknownFunctionError, match="op 'weird_sum'.*foo"):
        weird_sum(g.input("x", (None, 3)))


def test_wrong_arguments_to_an_op(g):
    x = g.input("x", (None, 2))
    with pytest.raises(TypeError, match=r"op 'relu' has no attribute\(s\) \['beta'\]"):
        gn.relu(x, beta=1.0)
    with pytest.raises(TypeError, match=r"op 'add' takes 2 inputs \(x, y\), got 1"):
        gn.add(x)
    with pytest.raises(ValueError, match="unknown activation 'swishy'"):
        gn.dense(x, 2, activation="swishy")


def test_check_grad_refuses_a_wrt_the_loss_does_not_depend_on(net):
    feeds = {"x": np.ones((2, 1)), "y": np.ones((2, 1))}
    with pytest.raises(ValueError, match=r"wrt names \['hidden/w'\]"):
        gn.check_grad(net.loss, feeds, wrt=["hidden/w"])   # a typo must not pass silently


def test_check_grad_refuses_a_loss_with_nothing_to_check(g):
    x = g.input("x", (None, 2))
    with pytest.raises(ValueError, match="has no parameters to check; name inputs with wrt"):
        gn.check_grad(gn.sum(gn.tanh(x)), {"x": np.ones((1, 2))})   # an empty report would pass


def test_all_errors_share_a_base_class():
    for error in (gn.ShapeError, gn.DtypeError, gn.FeedError, gn.GraphCycleError,
                  gn.UnknownFunctionError):
        assert issubclass(error, gn.GraphnnError)
