"""Op declarations: identity by content, bodies refused when declared, attributes checked when built."""
import json
import subprocess

import numpy as np
import pytest
import sympy as sp

import graphnn as gn
from compile_support import PYTHON, subprocess_env
from graphnn.io import _op_hash


def row_op(square):
    """An index op named ``rowop``: row sums, or row sums of squares."""
    @gn.index_op
    def rowop(x):
        n, i = gn.indices("n i")
        return (n,), gn.IndexSum(x[n, i] * x[n, i] if square else x[n, i], i)
    return rowop


def diff_op(swapped):
    """An elementwise op named ``diff``: first input minus second, or (arguments swapped) the reverse."""
    if swapped:
        @gn.elementwise
        def diff(y, x):
            return x - y
    else:
        @gn.elementwise
        def diff(x, y):
            return x - y
    return diff


# -- identity: an op is its declaration's content ---------------------------------------------

def test_an_index_op_declared_again_with_another_body_is_another_node_key_and_op_hash():
    made = []
    for square in (False, True, False):
        rowop = row_op(square)
        g = gn.Graph("g")
        made.append(rowop(g.input("x", (None, 3))))
    plain, squared, plain_again = made
    assert plain.key != squared.key
    assert _op_hash(plain) != _op_hash(squared)
    # content, not the Python object: the same declaration again is the same node
    assert plain.key == plain_again.key and _op_hash(plain) == _op_hash(plain_again)


def test_an_elementwise_op_declared_again_with_swapped_arguments_is_another_op():
    g = gn.Graph("g")
    a, b = g.input("a", (None, 1)), g.input("b", (None, 1))
    before = diff_op(False)(a, b)
    after = diff_op(True)(a, b)
    # the two bodies print the same (x - y); only the order of the inputs differs
    assert str(before.op.symbolic_expr) == str(after.op.symbolic_expr)
    assert before.key != after.key and _op_hash(before) != _op_hash(after)
    assert diff_op(False)(a, b).key == before.key


def test_a_composite_built_from_a_redeclared_op_changes_with_it():
    def log_row_sum_exp(x):          # a user's composite: Python building nodes from ops
        return gn.log(gn.REGISTRY["rowop"](gn.exp(x)))

    keys = []
    for square in (False, True):
        row_op(square)
        g = gn.Graph("g")
        keys.append(log_row_sum_exp(g.input("x", (None, 3))).key)
    assert keys[0] != keys[1]


def test_a_redeclared_elementwise_op_is_compiled_again(tmp_path):
    feeds = {"a": np.array([[5.0]]), "b": np.array([[2.0]])}
    got = []
    for swapped in (False, True):
        diff = diff_op(swapped)
        g = gn.Graph("swap")
        out = diff(g.input("a", (None, 1)), g.input("b", (None, 1)))
        compiled = gn.compile(g, outputs=out, target="cpu", dtype="float64", cache_dir=tmp_path, wait=True)
        reference = gn.compile(g, outputs=out, target="reference", dtype="float64")
        got.append(compiled.predict(feeds).ravel().tolist())
        assert got[-1] == reference.predict(feeds).ravel().tolist()
    assert got == [[3.0], [-3.0]]


# A child process declares rowop and diff as argv says, compiles through GRAPHNN_CACHE_DIR and
# prints the compiled and the reference prediction of rowop(diff(a, b)).
CHILD = r"""
import json, sys
import numpy as np
import graphnn as gn
square, swapped = sys.argv[1] == "square", sys.argv[2] == "swapped"
@gn.index_op
def rowop(x):
    n, i = gn.indices("n i")
    return (n,), gn.IndexSum(x[n, i] * x[n, i] if square else x[n, i], i)
if swapped:
    @gn.elementwise
    def diff(y, x):
        return x - y
else:
    @gn.elementwise
    def diff(x, y):
        return x - y
g = gn.Graph("redeclared")
out = rowop(diff(g.input("a", (None, 3)), g.input("b", (None, 3))))
feeds = {"a": np.array([[1.0, 2.0, 3.0]]), "b": np.array([[0.0, 0.0, 1.0]])}
compiled = gn.compile(g, outputs=out, target="cpu", dtype="float64", wait=True)
reference = gn.compile(g, outputs=out, target="reference", dtype="float64")
print(json.dumps([compiled.predict(feeds).tolist(), reference.predict(feeds).tolist()]))
"""


def test_redeclared_ops_agree_with_the_reference_across_processes(tmp_path):
    env = subprocess_env(GRAPHNN_CACHE_DIR=tmp_path)
    # each run changes one op from the run before it; the cache keeps every run's programs
    runs = [("plain", "straight", 5.0), ("square", "straight", 9.0), ("plain", "swapped", -5.0)]
    for body, order, expected in runs:
        child = subprocess.run([PYTHON, "-c", CHILD, body, order], capture_output=True, text=True,
                               env=env, timeout=240)
        assert child.returncode == 0, child.stderr[-3000:]
        compiled, reference = json.loads(child.stdout.strip().splitlines()[-1])
        assert compiled == reference == [expected], (body, order)


# -- bodies: refused when declared, naming the op and the offending part ------------------------

x_ = sp.Symbol("x", real=True)

BAD_ELEMENTWISE = {
    "complex": (lambda x: x * sp.I, "not a real number"),
    "complex_infinity": (lambda x: x + sp.zoo, "zoo"),
    "nan_literal": (lambda x: x + sp.nan, "not a finite number"),
    "python_nan": (lambda x: x * float("nan"), "not a finite number"),
    "infinity": (lambda x: x - sp.oo, "not a finite number"),
    "overflowing_constant": (lambda x: x * sp.exp(1000), "exp(1000) in its body does not fit a float64"),
    "huge_rational": (lambda x: x * sp.Rational(10 ** 400, 3), "does not fit a float64"),
    "vanishing_rational": (lambda x: x * sp.Rational(1, 10 ** 400), "rounds to 0"),
    "string": (lambda x: "x + 1", "not a SymPy expression"),
    "none": (lambda x: None, "not a SymPy expression"),
    "tuple": (lambda x: (x, x), "not one scalar expression"),
    "contains": (lambda x: sp.Contains(x, sp.Interval(0, 1)), "Contains"),
    "sum": (lambda x: sp.Sum(x, (sp.Symbol("k"), 1, 3)), "Sum"),
    "integral": (lambda x: sp.Integral(x, (x, 0, 1)) + x, "Integral"),
    "derivative": (lambda x: sp.Derivative(sp.exp(x), x), "Derivative"),
    "undefined_function": (lambda x: sp.Function("f")(x), "uses f,"),
    "unsupported_function": (lambda x: sp.besselj(0, x), "besselj"),
    "relational": (lambda x: x > 0, "is a condition, not a value"),
    "no_default_branch": (lambda x: sp.Piecewise((x, x > 0)), "no default branch"),
    "stray_symbol": (lambda x: x + sp.Symbol("z"), "symbol 'z'"),
    "non_real_input": (lambda x: x + sp.Symbol("x"), "symbol 'x'"),
    "reduction": (lambda x: gn.IndexSum(x, sp.Symbol("i", integer=True)), "reduction"),
    "python_if": (lambda x: x if x > 0 else 0, "Piecewise"),
}


@pytest.mark.parametrize("name", sorted(BAD_ELEMENTWISE))
def test_an_elementwise_body_no_executor_computes_is_refused_when_declared(name):
    body, detail = BAD_ELEMENTWISE[name]
    before = dict(gn.REGISTRY)
    with pytest.raises(gn.OpDeclarationError) as info:
        gn.elementwise(name=f"bad_{name}")(lambda x: body(x))
    message = str(info.value)
    assert f"op 'bad_{name}'" in message and detail in message, message
    assert gn.REGISTRY == before


def test_unknown_functions_stay_unknown_function_errors():
    assert issubclass(gn.UnknownFunctionError, gn.OpDeclarationError)
    assert issubclass(gn.OpDeclarationError, (gn.GraphnnError, ValueError))
    with pytest.raises(gn.UnknownFunctionError, match="besselj"):
        gn.ElementwiseOp("bessel", arg_names=["x"], expr=sp.besselj(0, x_))


def test_a_constant_body_is_a_constant_op():
    @gn.elementwise
    def three(x):
        return 3

    g = gn.Graph()
    x = g.input("x", (None, 2))
    out = three(x)
    np.testing.assert_array_equal(gn.evaluate([out], {"x": np.zeros((2, 2))})[out.name], np.full((2, 2), 3.0))
    assert three.derivative(0) == 0


def test_an_attribute_value_that_breaks_the_body_is_refused_when_built():
    @gn.elementwise
    def log_scaled(x, a=1.0):
        return x * sp.log(a)

    g = gn.Graph()
    x = g.input("x", (None, 1))
    assert log_scaled(x, a=2.0).shape == (None, 1)
    with pytest.raises(gn.ArgumentError, match=r"op 'log_scaled': with a=-1.0 .*not a real number"):
        log_scaled(x, a=-1.0)


def index_op_from(name, body):
    def builder(x):
        n, i = gn.indices("n i")
        return body(x, n, i)
    return gn.IndexOp(name, builder, ["x"], {})


BAD_INDEX = {
    # a function around a reduction: the reference and the printers cannot compute it
    "log_of_sum": (lambda x, n, i: ((n,), sp.log(gn.IndexSum(sp.exp(x[n, i]), i))),
                   "sits inside log(Sum[i](exp(x[n, i])))"),
    "square_of_sum": (lambda x, n, i: ((n,), gn.IndexSum(x[n, i], i) ** 2), "sits inside"),
    "nested": (lambda x, n, i: ((n,), gn.IndexSum(gn.IndexSum(x[n, i], i), i)), "sits inside"),
    "two_reductions": (lambda x, n, i: ((n,), gn.IndexSum(x[n, i], i) * gn.IndexMax(x[n, i], i)),
                       "multiplies two reductions"),
    "scaled_max": (lambda x, n, i: ((n,), -2 * gn.IndexMax(x[n, i], i)), "carries the factor -2"),
    "stray_symbol": (lambda x, n, i: ((n,), gn.IndexSum(x[n, i] * sp.Symbol("a"), i)), "symbol a"),
    "free_index": (lambda x, n, i: ((n,), x[n, i]), "index i is neither an output index"),
    "summed_output": (lambda x, n, i: ((n, i), gn.IndexSum(x[n, i], i)), "both an output index"),
    "foreign_tensor": (lambda x, n, i: ((n,), gn.IndexSum(sp.IndexedBase("y")[n, i], (i, 3))),
                       "'y' is not one of its inputs"),
    "fractional_extent": (lambda x, n, i: ((n,), gn.IndexSum(x[n, 0], (i, 2.5))), "(i, 2.5)"),
    "complex": (lambda x, n, i: ((n,), gn.IndexSum(sp.I * x[n, i], i)), "not a real number"),
    "no_default_branch": (lambda x, n, i: ((n,), gn.IndexSum(sp.Piecewise((x[n, i], x[n, i] > 0)), i)),
                          "no default branch"),
    "relational": (lambda x, n, i: ((n,), gn.IndexSum(x[n, i], i) > 0), "is a condition"),
    "no_out_indices": (lambda x, n, i: gn.IndexSum(x[n, i], i), "returns (output indices, body)"),
    "bad_out_entry": (lambda x, n, i: ((n, "j"), gn.IndexSum(x[n, i], i)), "output entry 'j'"),
}


@pytest.mark.parametrize("name", sorted(BAD_INDEX))
def test_an_index_body_no_executor_computes_is_refused_when_its_node_is_built(name):
    body, detail = BAD_INDEX[name]
    op = index_op_from(f"bad_{name}", body)
    g = gn.Graph()
    x = g.input("x", (None, 3))
    with pytest.raises(gn.OpDeclarationError) as info:
        op(x)
    message = str(info.value)
    assert f"op 'bad_{name}'" in message and detail in message, message
    assert not g.nodes(x)[1:]


def test_a_function_of_a_reduction_is_refused_with_how_to_split_it():
    op = index_op_from("logsumexp", BAD_INDEX["log_of_sum"][0])
    g = gn.Graph()
    with pytest.raises(gn.OpDeclarationError, match="Split the op in two") as info:
        op(g.input("x", (None, 3)))
    assert "Sum[i](exp(x[n, i]))" in str(info.value)
    # the split it asks for works: an index op for the sum, the log applied to its output
    row_sums = index_op_from("row_sums", lambda x, n, i: ((n,), gn.IndexSum(x[n, i], i)))
    x = g.input("x2", (None, 3))
    out = gn.log(row_sums(gn.exp(x)))
    X = np.array([[0.0, 1.0, 2.0]])
    np.testing.assert_allclose(gn.evaluate([out], {"x2": X})[out.name], np.log(np.exp(X).sum(1)))


def test_python_control_flow_on_a_condition_in_an_index_builder_is_refused():
    @gn.index_op
    def clipped(x):
        n, i = gn.indices("n i")
        return (n,), gn.IndexSum(x[n, i] if x[n, i] > 0 else 0, i)

    g = gn.Graph()
    with pytest.raises(gn.OpDeclarationError, match="op 'clipped'.*Piecewise"):
        clipped(g.input("x", (None, 3)))


# -- attributes: checked when the node is built ------------------------------------------------

def bad_attribute_calls(x, image):
    return [
        (lambda: gn.leaky_relu(x, alpha="abc"), "leaky_relu", "alpha='abc'"),
        (lambda: gn.leaky_relu(x, alpha=None), "leaky_relu", "alpha=None"),
        (lambda: gn.leaky_relu(x, alpha=np.array([0.1, 0.2])), "leaky_relu", "alpha=array("),
        (lambda: gn.leaky_relu(x, alpha=[0.1]), "leaky_relu", "alpha=[0.1]"),
        (lambda: gn.leaky_relu(x, alpha=float("inf")), "leaky_relu", "alpha=inf"),
        (lambda: gn.elu(x, alpha=True), "elu", "alpha=True"),
        (lambda: gn.power(x, p=10 ** 400), "power", "p=1000"),
        (lambda: gn.sum(x, axis="rows"), "sum", "axis='rows'"),
        (lambda: gn.sum(x, axis=1.0), "sum", "axis=1.0"),
        (lambda: gn.mean(x, keepdims="yes"), "mean", "keepdims='yes'"),
        (lambda: gn.max(x, axis=(0, None)), "max", "axis=(0, None)"),
        (lambda: gn.conv2d(image, image.graph.parameter("K", (2, 1, 3, 3)), image.graph.parameter(
            "k", (2,)), stride=0), "conv2d", "stride=0"),
        (lambda: gn.conv2d(image, image.graph.parameter("K2", (2, 1, 3, 3)), image.graph.parameter(
            "k2", (2,)), padding=(1, 1, 1)), "conv2d", "padding=(1, 1, 1)"),
        (lambda: gn.max_pool2d(image, size=2.0), "max_pool2d", "size=2.0"),
        (lambda: gn.avg_pool2d(image, stride=2 ** 40), "avg_pool2d", "stride=1099511627776"),
        (lambda: gn.sum_to(x, shape=(0, 3)), "sum_to", "shape=(0, 3)"),
    ]


def test_attribute_values_of_the_wrong_kind_are_refused_when_the_node_is_built():
    g = gn.Graph()
    x = g.input("x", (None, 3))
    image = g.input("image", (None, 1, 6, 6))
    for call, op, shown in bad_attribute_calls(x, image):
        with pytest.raises(gn.ArgumentError) as info:
            call()
        message = str(info.value)
        assert message.startswith(f"op {op!r} (node {op!r}): attribute {shown}") and "must be" in message, message


def test_attribute_values_are_kept_in_plain_form():
    g = gn.Graph()
    x = g.input("x", (None, 3))
    assert gn.leaky_relu(x, alpha=np.float32(0.5)).attr("alpha") == 0.5
    assert type(gn.leaky_relu(x, alpha=np.float64(0.5)).attr("alpha")) is float
    assert gn.sum(x, axis=[0, np.int64(1)]).attr("axis") == (0, 1)
    assert gn.sum(x, axis=[0, 1]).key == gn.sum(x, axis=(0, 1)).key
    assert gn.leaky_relu(x, alpha=1).attr("alpha") == 1
    image = g.input("image", (None, 1, 6, 6))
    assert gn.max_pool2d(image, size=[3, 2], stride=np.int64(1)).shape == (None, 1, 4, 5)


def test_a_declared_default_of_the_wrong_kind_is_refused_at_declaration():
    with pytest.raises(gn.OpDeclarationError, match=r"op 'bad_default'.*attribute a=None.*the default"):
        @gn.elementwise
        def bad_default(x, a=None):
            return x * a


def test_an_index_op_declares_its_attribute_kinds_by_annotation_or_default():
    @gn.index_op
    def row_power(x, k: int = 2, scale=1.0, tag=None, axes: gn.ops.Ints(low=0, length=2) = (0, 1)):
        n, i = gn.indices("n i")
        return (n,), gn.IndexSum(scale * x[n, i] ** k, i)

    g = gn.Graph()
    x = g.input("x", (None, 3))
    assert row_power(x, k=3, scale=2, tag=("a", 1)).attr("tag") == ("a", 1)
    with pytest.raises(gn.ArgumentError, match=r"op 'row_power' \(node 'row_power'\): attribute k=2.5"):
        row_power(x, k=2.5)
    with pytest.raises(gn.ArgumentError, match="attribute scale='2'"):
        row_power(x, scale="2")
    with pytest.raises(gn.ArgumentError, match="attribute tag=array"):
        row_power(x, tag=np.zeros(2))
    with pytest.raises(gn.ArgumentError, match=r"attribute axes=\(0, -1\) \(tuple\) must be an int >= 0 "
                                               r"or a pair of them"):
        row_power(x, axes=(0, -1))


def test_inputs_that_are_not_numbers_are_refused_naming_the_op():
    g = gn.Graph()
    x = g.input("x", (None, 3))
    with pytest.raises(gn.ArgumentError, match="op 'add': input 'abc' is neither a graph node"):
        gn.add(x, "abc")
    with pytest.raises(gn.ArgumentError, match="op 'tanh' needs at least one graph node"):
        gn.tanh(1.0)
    with pytest.raises(gn.ArgumentError, match="op 'tanh': name 3 is not a string"):
        gn.tanh(x, name=3)


def test_composite_ops_check_their_arguments():
    g = gn.Graph()
    x = g.input("x", (None, 3))
    W = g.parameter("W", (3, 2))
    with pytest.raises(gn.ArgumentError, match="softmax: input None is not a graph node"):
        gn.softmax(None)
    with pytest.raises(gn.ArgumentError, match="attribute axis='rows'"):
        gn.log_softmax(x, axis="rows")
    with pytest.raises(gn.ArgumentError, match="mse: reduction must be 'mean' or 'sum', got array"):
        gn.mse(x, x, reduction=np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):   # as before
        gn.mse(x, x, reduction="max")
    with pytest.raises(gn.ArgumentError, match="l2_penalty: lam='a' must be a real finite number"):
        gn.l2_penalty(W, lam="a")
    with pytest.raises(gn.ArgumentError, match="nll: prediction 3 is not a graph node"):
        gn.nll(3, x)


def test_a_saved_file_with_a_bad_attribute_is_refused_naming_it(tmp_path):
    g = gn.Graph("saved")
    x = g.input("x", (None, 3))
    g.output("s", gn.sum(x, axis=1))
    gn.save(g, tmp_path / "g")
    path = tmp_path / "g.json"
    spec = json.loads(path.read_text())
    for node in spec["nodes"]:
        if node.get("op") == "sum":
            node["attrs"]["axis"] = "rows"
    path.write_text(json.dumps(spec))
    with pytest.raises(gn.FileFormatError, match="attribute axis='rows'"):
        gn.load_graph(path)


# -- names: any text stays allowed ---------------------------------------------------------

def test_op_and_node_names_may_be_any_text():
    name = "it's \"odd\"\n\0 é ∑"

    @gn.elementwise(name=name)
    def odd(x):
        return 2 * x

    g = gn.Graph()
    x = g.input("x", (None, 1))
    out = odd(x, name=name)
    assert gn.REGISTRY[name] is odd and out.name == name
    np.testing.assert_array_equal(gn.evaluate([out], {"x": np.array([[1.5]])})[out.name], [[3.0]])
