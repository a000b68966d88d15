"""Graph-building calls with bad arguments raise a GraphnnError that names the call, the argument
and its value -- never a raw NumPy, SymPy or Python error -- and good arguments keep working."""
import numpy as np
import pytest
import sympy as sp

import graphnn as gn
from graphnn.io import graph_from_spec, graph_spec


@pytest.fixture
def g():
    graph = gn.Graph("g")
    graph.input("x", (None, 3))
    graph.input("img", (None, 1, 4, 4))
    graph.parameter("v", (3,))
    graph.parameter("m", (3, 3))
    return graph


def raises(error, call, *fragments):
    """``call()`` raises ``error`` and its message holds every fragment."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# -- Graph(name, seed) ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", ["", 1.5, -1, True, 2 ** 31, 2 ** 70, [1, 2], np.float64(3.0)])
def test_a_bad_seed_is_an_argument_error_naming_it(seed):
    raises(gn.ArgumentError, lambda: gn.Graph("net", seed=seed), "Graph 'net'", f"seed {seed!r}")


def test_a_graph_name_must_be_a_string():
    raises(gn.ArgumentError, lambda: gn.Graph(3), "Graph: name 3 (int) is not a string")


def test_numpy_int_and_none_seeds_give_a_plain_int_that_saves_and_loads():
    assert gn.Graph(seed=np.int64(3)).seed == 3 and type(gn.Graph(seed=np.int64(3)).seed) is int
    g = gn.Graph("fresh", seed=None)
    assert type(g.seed) is int and 0 <= g.seed < 2 ** 31 - 1
    x = g.input("x", (None, 2))
    out = gn.dense(x, 1, name="d")
    rebuilt, _, _ = graph_from_spec(graph_spec(g, outputs={"out": out}), g.values)
    assert rebuilt.seed == g.seed


# -- shapes, dtypes, names -----------------------------------------------------------------------

@pytest.mark.parametrize("shape, fragment", [
    (3, "shape 3 (int) is not a tuple of dimensions; write (3,)"), (None, "shape None (NoneType)"),
    ("ab", "shape 'ab' (str)"), ((True, 2), "axis 0 is True (bool)"), ((2, 1.5), "axis 1 is 1.5"),
    ((10 ** 30,), "axis 0 is 1000000000000000000000000000000"), ((np.ones(2),), "axis 0 is array")])
def test_a_bad_shape_is_a_shape_error_naming_the_input(g, shape, fragment):
    raises(gn.ShapeError, lambda: g.input("a", shape), "input 'a'", fragment)


@pytest.mark.parametrize("dtype", ["abc", "", 0, object(), [1]])
def test_a_bad_dtype_is_a_dtype_error_naming_the_input(g, dtype):
    raises(gn.DtypeError, lambda: g.input("b", (None, 3), dtype=dtype), "input 'b'", "use 'float32' or 'float64'")


@pytest.mark.parametrize("call", [
    lambda g: g.parameter(np.array([1.0, 2.0]), (2,)), lambda g: g.input([1], (2,)),
    lambda g: g.output([1, 2], g.inputs["x"]), lambda g: g.random(3, (2,), "normal"),
    lambda g: g.constant(1.0, name=3), lambda g: g.scope(b"s").__enter__(),
    lambda g: gn.dense(g.inputs["x"], 2, name=3), lambda g: gn.Dense(2, name=("a",)),
    lambda g: gn.dropout(g.inputs["x"], 0.5, name=1)])
def test_a_name_that_is_not_a_string_is_an_argument_error(g, call):
    raises(gn.ArgumentError, lambda: call(g), "name", "is not a string")


@pytest.mark.parametrize("call", [lambda g: g.input("", (2,)), lambda g: g.parameter("", (2,)),
                                  lambda g: g.output("", g.inputs["x"]), lambda g: g.random("", (2,), "normal")])
def test_inputs_parameters_and_outputs_need_a_non_empty_name(g, call):
    raises(gn.ArgumentError, lambda: call(g), "the name is empty")


def test_any_text_is_a_name_and_an_empty_layer_or_constant_name_is_the_default(g):
    text = "q'\"\n\x00\u00e9\u202e/"
    assert g.input(text, (None, 2)).name == text
    assert g.parameter(text + "p", (2,)).name == text + "p"
    assert g.output(text, g.inputs["x"]) is g.inputs["x"]
    assert g.constant(1.0, name="").name.startswith("const")
    x = g.inputs["x"]
    assert gn.dense(x, 2, name=None).name == "dense/z" and gn.dense(x, 2, name="").name == "dense_1/z"
    assert gn.Dense(2, name="")(x).name.startswith("dense")


# -- constants, parameter values and initializers --------------------------------------------------

@pytest.mark.parametrize("value", ["", "1.5", b"1", 1j, np.array([1j]), sp.Symbol("z"),
                                   np.array([object()]), [[1.0], [1.0, 2.0]], 10 ** 400, {}])
def test_a_constant_that_is_not_real_numbers_is_an_argument_error(g, value):
    raises(gn.ArgumentError, lambda: g.constant(value, name="c"), "constant 'c'", "is not a real number")


def test_a_node_is_not_a_constant(g):
    raises(gn.ArgumentError, lambda: g.constant(g.inputs["x"]), "is a graph node", "use the node itself")


def test_constants_take_nan_inf_bools_and_numpy_numbers(g):
    values = [float("nan"), float("inf"), True, np.int64(2), np.float32(0.5), [[1, 2], [3, 4]]]
    nodes = [g.constant(v) for v in values]
    assert [n.shape for n in nodes] == [(), (), (), (), (), (2, 2)]
    assert np.isnan(nodes[0].attr("value"))


@pytest.mark.parametrize("init, error, fragment", [
    (lambda rng, shape: "x", gn.ArgumentError, "the result of init <lambda> 'x' (str) is not a real number"),
    (lambda rng, shape: np.ones(3), gn.ShapeError, "the result of init <lambda> has shape (3,), declared (2,)"),
    (None, gn.ArgumentError, "unknown initializer None (NoneType); use one of ['constant'"),
    ([1], gn.ArgumentError, "unknown initializer [1] (list)"),
    ("nope", gn.ArgumentError, "'glorot_uniform'")])
def test_a_bad_initializer_names_the_parameter_and_the_choices(g, init, error, fragment):
    raises(error, lambda: g.parameter("p", (2,), init=init), "parameter 'p'", fragment)
    assert g.parameter("p", (2,)).shape == (2,)      # the failed call left the name free


@pytest.mark.parametrize("kwargs, fragment", [
    ({"value": "x"}, "value 'x' (str) is not a real number"), ({"value": [1j, 2]}, "is not a real number"),
    ({"trainable": np.array([1.0, 2.0])}, "trainable=array([1., 2.]) (ndarray) must be True or False"),
    ({"trainable": None}, "trainable=None")])
def test_a_bad_parameter_value_or_flag_is_an_argument_error(g, kwargs, fragment):
    raises(gn.ArgumentError, lambda: g.parameter("p", (2,), **kwargs), "parameter 'p'", fragment)


@pytest.mark.parametrize("args, kwargs, fragment", [
    (([1],), {}, "distribution [1] (list) is not a string"), (("normal",), {"eval": "a"}, "eval='a' (str)"),
    (("normal",), {"eval": [1, 2]}, "eval=[1, 2]"), (("normal",), {"std": "a"}, "std='a'"),
    (("normal",), {"eval": float("nan")}, "eval=nan"), (("normal",), {"std": 2 ** 2000}, "std=1148"),
    (("normal",), {"std": -1.0}, "std=-1.0 must be >= 0")])
def test_a_bad_random_input_is_an_argument_error(g, args, kwargs, fragment):
    raises(gn.ArgumentError, lambda: g.random("r", (None, 3), *args, **kwargs), "random input 'r'", fragment)


def test_an_output_must_be_a_node(g):
    raises(gn.ArgumentError, lambda: g.output("o", 5), "graph 'g': output 'o'", "5 (int) is not a graph node")


# -- layers --------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, fragment", [
    (lambda g: gn.dense(0, 2), "dense 'dense': input x 0 (int) is not a graph node"),
    (lambda g: gn.dense(np.ones((2, 2)), 2), "input x array([[1., 1.], [1., 1.]]) (ndarray)"),
    (lambda g: gn.dense(g.inputs["x"], 0), "units=0 (int) must be a positive int"),
    (lambda g: gn.dense(g.inputs["x"], 2.5), "units=2.5 (float)"),
    (lambda g: gn.dense(g.inputs["x"], True), "units=True (bool)"),
    (lambda g: gn.dense(g.inputs["x"], 2, use_bias=np.ones(2)), "use_bias=array"),
    (lambda g: gn.dense(g.inputs["x"], 2, weight_noise="a"), "weight_noise='a'"),
    (lambda g: gn.dense(g.inputs["x"], 2, activation=[1]), "unknown activation [1] (list)"),
    (lambda g: gn.dense(g.inputs["x"], 2, activation=lambda *a: 1), "returned 1 (int), not a graph node"),
    (lambda g: gn.Dense(0), "Dense 'dense': units=0"), (lambda g: gn.Dense(2, activation="nope"), "'nope'"),
    (lambda g: gn.Conv2D(0, 3), "Conv2D 'conv': filters=0"), (lambda g: gn.Conv2D(2, 0), "kernel_size=0"),
    (lambda g: gn.Conv2D(2, 1.5), "kernel_size=1.5"), (lambda g: gn.Conv2D(2, (3, 3, 3)), "kernel_size=(3, 3, 3)"),
    (lambda g: gn.Conv2D(2, 3, padding="bogus"), "padding='bogus' must be 'valid', 'same'"),
    (lambda g: gn.Conv2D(2, 3, padding=np.ones(2))(g.inputs["img"]), "padding=array"),
    (lambda g: gn.Conv2D(2, 3, use_bias="no"), "use_bias='no'"),
    (lambda g: gn.Sequential(3), "Sequential 'sequential': layers=3 (int) must be a list of layers"),
    (lambda g: gn.Sequential([gn.Dense(2), 3]), "layer 1 is 3 (int)"),
    (lambda g: gn.Sequential([lambda x: 1, gn.Dense(2)])(g.inputs["x"]), "layer 0 (<function"),
    (lambda g: gn.dropout(0, 0.5), "dropout 'dropout': input x 0 (int)"),
    (lambda g: gn.dropout(g.inputs["x"], "a"), "rate must be in [0, 1), got 'a' (str)"),
    (lambda g: gn.dropout(g.inputs["x"], np.ones(2)), "got array"),
    (lambda g: gn.gaussian_noise(0), "gaussian_noise 'noise': input x 0"),
    (lambda g: gn.gaussian_noise(g.inputs["x"], "a"), "stddev='a' (str) must be a finite number >= 0"),
    (lambda g: gn.weight_noise(g.parameters["m"], float("inf")), "stddev=inf")])
def test_bad_layer_arguments_are_argument_errors_naming_the_layer(g, call, fragment):
    raises(gn.ArgumentError, lambda: call(g), fragment)


@pytest.mark.parametrize("layer", [gn.Dense(2), gn.Conv2D(2, 3), gn.MaxPool2D(2), gn.AvgPool2D(2), gn.Flatten(),
                                   gn.Dropout(0.5), gn.GaussianNoise(0.1), gn.Activation("relu"),
                                   gn.Sequential([gn.Dense(2)], name="seq")])
@pytest.mark.parametrize("value", [0, np.ones((2, 3)), "x"])
def test_a_layer_called_on_something_that_is_not_a_node_names_itself(layer, value):
    raises(gn.ArgumentError, lambda: layer(value), f"{type(layer).__name__} {layer.name!r}: input x",
           "is not a graph node")


def test_activations_may_be_plain_functions_of_a_node(g):
    out = gn.dense(g.inputs["x"], 2, activation=lambda z: gn.tanh(z) * 2.0, name="h")
    values = gn.evaluate([out], {"x": np.ones((1, 3))})[out.name]
    assert values.shape == (1, 2) and np.all(np.abs(values) <= 2.0)


# -- traversal, substitution, autodiff ------------------------------------------------------------

@pytest.mark.parametrize("call, error, fragment", [
    (lambda g: gn.substitute([5], {5: 5}), gn.ArgumentError, "substitute: outputs[0] is 5 (int), not a graph node"),
    (lambda g: gn.substitute([g.inputs["x"]], {g.inputs["x"]: 5}), gn.ArgumentError, "mapping value 5 (int)"),
    (lambda g: gn.substitute([g.inputs["x"]], {"x": g.inputs["x"]}), gn.ArgumentError, "mapping key 'x' (str)"),
    (lambda g: gn.substitute([g.inputs["x"]], 5), gn.ArgumentError, "mapping 5 (int) must be a dict"),
    (lambda g: gn.substitute(g.inputs["x"], {}), gn.ArgumentError, "wrap one node in a list: [node]"),
    (lambda g: gn.substitute([gn.tanh(g.inputs["x"])], {g.inputs["x"]: g.parameters["v"]}), gn.ShapeError,
     "'x' has shape (N, 3) and its replacement 'v' has (3,)"),
    (lambda g: gn.topological([5]), gn.ArgumentError, "topological: outputs[0] is 5 (int)"),
    (lambda g: gn.topological(g.inputs["x"]), gn.ArgumentError, "wrap one node in a list"),
    (lambda g: gn.evaluate([1], {}), gn.ArgumentError, "outputs[0] is 1 (int)")])
def test_traversal_and_substitution_take_nodes(g, call, error, fragment):
    raises(error, lambda: call(g), fragment)


@pytest.mark.parametrize("call, fragment", [
    (lambda g: gn.derive(1), "derive: loss 1 (int) is not a graph node"),
    (lambda g: gn.derive(np.array([1.0, 2.0])), "derive: loss array([1., 2.]) (ndarray)"),
    (lambda g: gn.derive(gn.sum(g.inputs["x"]), wrt=[5]), "derive: wrt[0] 5 (int)"),
    (lambda g: gn.derive(gn.sum(g.inputs["x"]), wrt=g.inputs["x"]), "derive: wrt=<Node x"),
    (lambda g: gn.loss_and_gradients(1, {}), "loss_and_gradients: loss 1 (int)"),
    (lambda g: gn.check_grad("loss", {}), "check_grad: loss 'loss' (str)")])
def test_a_loss_that_is_not_a_node_names_the_function(g, call, fragment):
    raises(gn.ArgumentError, lambda: call(g), fragment)


# -- feeds with keys that are not names ------------------------------------------------------------

def test_feed_keys_that_are_not_strings_are_a_feed_error_naming_them():
    g = gn.Graph("feeds")
    x, y = g.input("x", (None, 3)), g.input("y", (None, 2))
    loss = gn.mse(gn.dense(x, 2, name="h"), y)
    X, Y = np.ones((2, 3)), np.ones((2, 2))
    raises(gn.FeedError, lambda: gn.evaluate([loss], {"x": X, "y": Y, b"a": 1.0, "b": 2.0}),
           "feed key(s) [b'a'] are not strings", "takes ['x', 'y']")
    raises(gn.FeedError, lambda: gn.evaluate([loss], {x: X, "y": Y, 3: 1.0}), "[3, <Node x", "feed a node by its name: 'x'")
    raises(gn.FeedError, lambda: gn.evaluate([loss], {"x": X, "y": Y, "b": 2.0, "a": 1.0}),
           "unknown feed(s) ['a', 'b']")


# -- NumPy arrays on the left of an operator ---------------------------------------------------------

def test_an_array_times_a_node_is_one_node(g):
    v, m, x = g.parameters["v"], g.parameters["m"], g.inputs["x"]
    for out, shape in [(np.arange(3.0) * v, (3,)), (np.float64(2.0) * x, (None, 3)),
                       (np.ones((2, 3)) @ m, (2, 3)), (np.ones(3) - x, (None, 3))]:
        assert isinstance(out, gn.Node) and out.shape == shape
    out = np.arange(3.0) * v
    np.testing.assert_allclose(gn.evaluate([out], {})[out.name], np.arange(3.0) * g.values["v"])
    rows = np.ones((2, 3)) @ m
    np.testing.assert_allclose(gn.evaluate([rows], {})[rows.name], np.ones((2, 3)) @ g.values["m"])


def test_an_activation_op_names_its_node_as_before(g):
    x = g.inputs["x"]
    assert gn.dense(x, 2, activation="tanh", name="h").name == "h/tanh"
    assert gn.Activation(gn.leaky_relu, name="act")(x).name == "act"
    assert gn.Dense(2, activation=gn.softmax, name="s")(x).name.startswith("s/act/")
