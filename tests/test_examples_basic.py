"""The lecture examples, first half (issue 13): each runs in --fast mode in-process, writes its
pictures and returns the numbers the lecture asks about."""
import importlib
import os
import re
import sys

import numpy as np
import pytest

import graphnn as gn

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


def run(name, tmp_path, capsys):
    """main(["--fast", "--out", tmp_path]) of examples/NAME.py: (returned dict, printed text)."""
    if EXAMPLES not in sys.path:
        sys.path.insert(0, EXAMPLES)
    result = importlib.import_module(name).main(["--fast", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    for path in result["files"]:
        assert os.path.dirname(path) == str(tmp_path) and os.path.getsize(path) > 1000, path
    return result, printed


def test_activations_every_one_with_its_derived_derivative(tmp_path, capsys):
    result, printed = run("activations", tmp_path, capsys)
    assert result["activations"] == ["tanh", "sigmoid", "relu", "leaky_relu", "elu", "hardswish", "gelu",
                                     "mish", "celu", "relu6", "identity", "sigmoid", "softmax"]
    assert result["max_derivative_error"] < 1e-6
    assert "f' = 1 - tanh(x)**2" in printed
    assert "f' = Piecewise((1, x > 0), (0.1, True))" in printed      # LeakyReLU(0.1) as the lecture
    assert sorted(os.path.basename(p) for p in result["files"]) == [
        "activations_hidden.png", "activations_output.png", "activations_traditional.png"]


def test_linear_collapse_prints_one_affine_map_and_tanh_does_not(tmp_path, capsys):
    result, printed = run("linear_collapse", tmp_path, capsys)
    maps = re.findall(r"simplifies to ONE affine map: y = (-?[\d.]+)\*x ([+-]) ([\d.]+)", printed)
    assert len(maps) == 1
    a, c = result["identity"]["affine"]
    assert float(maps[0][0]) == pytest.approx(a, rel=1e-3)
    assert result["identity"]["symbolic"] == "oW00*(hW00*x + hb0) + oW10*(hW01*x + hb1) + ob0"
    assert result["tanh"]["affine"] is None and "tanh" in result["tanh"]["expression"]
    assert "does not simplify to an affine map" in printed
    assert result["tanh"]["mse"] < 0.5 * result["identity"]["mse"]      # the non-linearity fits the sine
    for activation in ("identity", "tanh"):                           # SymPy form == compiled forward
        assert result[activation]["sympy_vs_compiled"] < 1e-5


def test_regression_net_trains_and_draws_its_delta_flow(tmp_path, capsys):
    result, printed = run("regression_net", tmp_path, capsys)
    assert result["weights"] == 7 and result["gradient_check"]
    assert result["final_loss"] < 0.05 < result["first_loss"]
    assert result["test_mse"] < 0.05
    names = sorted(os.path.basename(p) for p in result["files"])
    assert names == ["regression_net_deltas.svg", "regression_net_fit.png", "regression_net_graph.svg"]
    with open(os.path.join(tmp_path, "regression_net_deltas.svg"), encoding="utf-8") as f:
        svg = f.read()
    assert "1 &#45; tanh(z)**2" in svg and "‖δ‖" in svg     # the local derivative, the δ norms


def test_classification_net_separates_the_blobs(tmp_path, capsys):
    result, printed = run("classification_net", tmp_path, capsys)
    assert result["weights"] == 9 and result["gradient_check"]
    assert result["test_accuracy"] > 0.9 and result["train_accuracy"] > 0.9
    assert result["final_loss"] < 0.5 * result["first_loss"]
    assert "test accuracy" in printed


def test_autodiff_sigmoid_analytic_derived_and_compiled_agree(tmp_path, capsys):
    result, printed = run("autodiff_sigmoid", tmp_path, capsys)
    assert result["ran_as"] == {"float64": "kernels", "float32": "kernels"}
    assert result["derived_vs_analytic"] < 1e-15
    assert result["compiled64_vs_analytic"] < 1e-15 and result["compiled64_vs_derived"] < 1e-15
    assert result["compiled32_vs_analytic"] < 1e-6
    assert "(1 - Sigmoid(x))*Sigmoid(x)" in printed


def test_custom_layer_swish_with_trainable_beta(tmp_path, capsys):
    result, printed = run("custom_layer", tmp_path, capsys)
    assert result["derivative_beta"] == "x**2*(1 - Sigmoid(beta*x))*Sigmoid(beta*x)"
    assert result["latex_beta"] in printed and r"\sigma" in result["latex_beta"]
    assert result["gradient_check"]
    assert result["final_loss"] < 0.2 * result["first_loss"]
    assert np.abs(np.array(result["beta"]) - 1.0).max() > 0.05          # beta did train


def test_render_values_of_one_element_arrays():
    """Regression: a value or constant of shape (1,) (the output bias, a one-entry constant) is
    printed as a number; NumPy 2 refuses float() of a 1-d array."""
    net = gn.lecture.regression_net()
    net.graph.values["output/b"] = np.array([0.25])
    source = gn.render(net, feed={"x": np.full((3, 1), 0.5), "y": np.zeros((3, 1))}).source
    assert re.search(r'label="b\\n\(1,\) · 1 weight\\n= 0.25"', source)
    g = gn.Graph("one_entry_constant")
    x = g.input("x", (None, 1))
    assert "= 2" in gn.render(gn.sum(x * np.array([2.0]))).source
    w = g.parameter("w", (3,))                          # the delta edge's label reads the constant
    assert 'label=2 ' in gn.render(gn.sum(w * np.array([2.0])), deltas=True).source
