"""The DAG: building, naming, parameter counts, text and networkx views, topological order,
deep chains, structural keys and merging graphs with substitute."""
import sys

import networkx as nx
import numpy as np
import pytest

import graphnn as gn
from graphnn import lecture


def _tiny():
    g = gn.Graph("tiny")
    x = g.input("x", (None, 3))
    W = g.parameter("W", (3, 2), value=np.ones((3, 2)))
    b = g.parameter("b", (2,), init="zeros")
    z = gn.linear(x, W, b, name="z")
    a = gn.leaky_relu(z * 2.0, alpha=0.2, name="a")
    return g, gn.mean(a, name="loss")


def test_text_printer_exact():
    g, loss = _tiny()
    assert g.text(loss) == (
        "x = input() : (N, 3)\n"
        "W = parameter() : (3, 2)\n"
        "b = parameter() : (2,)\n"
        "z = linear(x, W, b) : (N, 2)\n"
        "const = constant() : ()\n"
        "mul = mul(z, const) : (N, 2)\n"
        "a = leaky_relu(mul) alpha=0.2 : (N, 2)\n"
        "loss = mean(a) axis=None keepdims=False : ()"
    )


def test_text_printer_shows_explicit_dtypes_and_scopes():
    g = gn.Graph()
    x = g.input("x", (None, 2), dtype="float32")
    with g.scope("block"):
        h = gn.tanh(x)
    assert g.text(h) == "x = input() : (N, 2) float32\nblock/tanh = tanh(x) : (N, 2) float32"
    assert h.scope == "block" and h.dtype == "float32"


def test_graph_nodes_and_text_default_to_named_outputs():
    net = lecture.regression_net()
    assert net.graph.outputs == {"y_hat": net.output}
    assert net.graph.nodes() == net.graph.nodes(net.output)
    assert net.graph.text().splitlines()[-1].startswith("output/z = linear(hidden/tanh, output/W, output/b)")


def test_to_networkx_counts_and_attributes():
    g, loss = _tiny()
    nodes = g.nodes(loss)
    G = g.to_networkx(loss)
    assert isinstance(G, nx.DiGraph)
    assert G.number_of_nodes() == len(nodes) == 8
    assert G.number_of_edges() == sum(len(n.inputs) for n in nodes) == 7
    assert nx.is_directed_acyclic_graph(G)
    assert G.nodes["z"]["op"] == "linear" and G.nodes["z"]["kind"] == "op"
    assert G.nodes["z"]["shape"] == (None, 2) and G.nodes["z"]["role"] == "forward"
    assert G.nodes["W"]["kind"] == "parameter" and G.nodes["x"]["kind"] == "input"
    assert G.nodes["loss"]["node"] is loss
    assert [G.edges[p, "z"]["position"] for p in ("x", "W", "b")] == [0, 1, 2]
    assert list(G.predecessors("loss")) == ["a"]


def test_to_networkx_of_a_backward_graph_marks_delta_nodes():
    net = lecture.regression_net()
    back = gn.derive(net.loss)
    from graphnn.graph.text import to_networkx
    G = to_networkx(back.nodes)
    roles = nx.get_node_attributes(G, "role")
    delta_names = {d.name for _, d in back.delta_items}   # a pass-through delta is shared
    assert delta_names <= {name for name, role in roles.items() if role == "delta"}
    read = [n for n in back.forward if n.name in roles]   # forward nodes the deltas read
    assert read and all(roles[n.name] == "forward" for n in read)
    assert nx.is_directed_acyclic_graph(G)


def _assert_topological(order, outputs):
    position = {id(n): k for k, n in enumerate(order)}
    assert len(position) == len(order), "a node appears twice"
    for node in order:
        for parent in node.inputs:
            assert position[id(parent)] < position[id(node)], (parent, node)
    for out in outputs:
        assert id(out) in position


@pytest.mark.parametrize("build", [lecture.regression_net, lecture.classifier_net,
                                   lecture.softmax_classifier])
def test_topological_order_is_valid(build):
    net = build()
    order = gn.topological([net.loss])
    _assert_topological(order, [net.loss])
    back = gn.derive(net.loss)
    _assert_topological(back.nodes, [back.seed, *back.gradients.values()])


def test_topological_order_of_a_diamond_dag_with_several_outputs():
    g = gn.Graph()
    x = g.input("x", (None, 1))
    a, b = gn.tanh(x), gn.exp(x)
    c = a * b
    d = c + a
    order = gn.topological([d, c, b])
    _assert_topological(order, [d, c, b])
    assert len(order) == 5


def test_a_5000_node_chain_needs_no_recursion():
    assert sys.getrecursionlimit() < 5000
    g = gn.Graph()
    x = g.input("x", (None, 1))
    h = x
    for _ in range(5000):
        h = gn.neg(h)
    order = gn.topological([h])
    assert len(order) == 5001
    _assert_topological(order, [h])
    assert len(h.key) == 32
    assert len(g.text(h).splitlines()) == 5001
    assert g.to_networkx(h).number_of_nodes() == 5001
    out = gn.evaluate([h], {"x": np.array([[1.5]])})[h.name]
    assert out[0, 0] == 1.5  # an even number of negations
    y = g.input("y", (None, 1))
    (merged,) = gn.substitute([h], {x: y})
    assert merged is not h and gn.topological([merged])[0] is y


def test_identical_subgraphs_have_equal_keys_and_attrs_change_them():
    g = gn.Graph()
    x = g.input("x", (None, 3))
    first, second = gn.tanh(x * 2.0), gn.tanh(x * 2.0)
    assert first.name != second.name and first is not second
    assert first.key == second.key
    assert gn.leaky_relu(x, alpha=0.1).key != gn.leaky_relu(x, alpha=0.2).key
    assert gn.leaky_relu(x, alpha=0.1).key == gn.leaky_relu(x, alpha=0.1).key
    assert gn.sum(x, axis=0).key != gn.sum(x, axis=1).key
    assert gn.tanh(x * 2.0).key != gn.tanh(x * 3.0).key          # constants by value
    assert gn.tanh(x).key != gn.sigmoid(x).key
    assert gn.tanh(x).key != gn.tanh(g.input("other", (None, 3))).key   # inputs by name
    assert gn.tanh(x).key != gn.tanh(g.input("x64", (None, 3), dtype="float64")).key


def test_keys_ignore_parameter_values_and_graph_seeds():
    # the key is the compile-cache key: parameters are kernel arguments, not baked in
    a, b = lecture.regression_net(seed=0), lecture.regression_net(seed=1)
    assert not np.allclose(a.graph.values["hidden/W"], b.graph.values["hidden/W"])
    assert a.loss.key == b.loss.key
    assert a.loss.key != lecture.regression_net(hidden_activation="relu").loss.key


def test_lecture_parameter_counts():
    assert lecture.regression_net().graph.num_parameters == 7
    assert lecture.classifier_net().graph.num_parameters == 9
    assert lecture.softmax_classifier().graph.num_parameters == 6
    assert "(7 weights)" in repr(lecture.regression_net().graph)


def test_dense_layer_creates_seeded_weight_and_bias():
    def build(seed):
        g = gn.Graph(seed=seed)
        x = g.input("x", (None, 3))
        h = gn.dense(x, 4, activation="relu", name="hidden")
        return g, h
    g, h = build(0)
    assert h.shape == (None, 4) and h.op.name == "relu"
    assert set(g.parameters) == {"hidden/W", "hidden/b"}
    assert g.parameters["hidden/W"].shape == (3, 4) and g.parameters["hidden/b"].shape == (4,)
    assert np.all(g.values["hidden/b"] == 0)
    W = g.values["hidden/W"]
    assert 0 < np.abs(W).max() <= np.sqrt(6 / 7)  # glorot uniform bound
    np.testing.assert_array_equal(W, build(0)[0].values["hidden/W"])
    assert not np.allclose(W, build(1)[0].values["hidden/W"])
    g2 = gn.Graph()
    h2 = gn.dense(g2.input("x", (None, 3)), 2, bias_init="constant", use_bias=True)
    assert np.all(g2.values["dense/b"] == 0.01) and h2.op.name == "linear"
    h3 = gn.dense(g2.input("u", (None, 3)), 2, use_bias=False)
    assert h3.op.name == "matmul" and "dense_1/b" not in g2.parameters


def test_python_operators_build_op_nodes():
    g = gn.Graph()
    x = g.input("x", (None, 2))
    W = g.parameter("W", (2, 2))
    cases = {"add": x + 1.0, "sub": 1.0 - x, "mul": 2.0 * x, "div": 1.0 / x, "neg": -x,
             "matmul": x @ W, "power": x ** 2, "pow": 2.0 ** x}
    for op_name, node in cases.items():
        assert node.op.name == op_name
    assert cases["power"].attr("p") == 2.0
    assert [p.kind for p in cases["sub"].inputs] == ["constant", "input"]   # reflected: order kept
    X = np.array([[1.0, 3.0]])
    v = gn.evaluate(list(cases.values()), {"x": X})
    np.testing.assert_allclose(v[cases["sub"].name], 1.0 - X)
    np.testing.assert_allclose(v[cases["div"].name], 1.0 / X)
    np.testing.assert_allclose(v[cases["pow"].name], 2.0 ** X)
    np.testing.assert_allclose(v[cases["power"].name], X ** 2)


def test_names_are_unique_and_scoped():
    g = gn.Graph()
    x = g.input("x", (None, 1))
    assert gn.tanh(x).name == "tanh" and gn.tanh(x).name == "tanh_1"
    with g.scope("block"):
        assert gn.tanh(x).name == "block/tanh"
        p = g.parameter("W", (1, 1))
    assert p.name == "block/W" and "block/W" in g.values
    with pytest.raises(gn.GraphnnError, match="input name 'x' is already used"):
        g.input("x", (None, 1))


def test_substitute_merges_two_graphs():
    encoder = gn.Graph("encoder")
    x = encoder.input("x", (None, 2))
    code = gn.tanh(x, name="code")
    decoder = gn.Graph("decoder")
    u = decoder.input("u", (None, 2))
    out = gn.mul(u, 2.0, name="out")
    (merged,) = gn.substitute([out], {u: code})
    assert merged.inputs[0] is code and out.inputs[0] is u   # the original is untouched
    X = np.array([[0.5, -1.0]])
    np.testing.assert_allclose(gn.evaluate([merged], {"x": X})[merged.name], 2 * np.tanh(X))
    assert gn.check_grad(gn.sum(merged), {"x": X}, wrt=[x]).ok
