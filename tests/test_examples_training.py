"""The lecture examples on training real networks run (--fast) and show what they claim.

Each example's ``main(["--fast", "--out", folder])`` runs in-process (compiled CPU target;
``gpu.py`` in numba's CUDA simulator, which tests/conftest.py switches on) and returns its
key numbers; the floors are far enough below the measured fast-mode values (in comments) to
hold on any machine, and far enough above chance to fail when training breaks.
"""
import os
import subprocess
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
sys.path.insert(0, EXAMPLES)

pytest.importorskip("matplotlib")
from train_support import requires_cpu  # noqa: E402

pytestmark = [requires_cpu, pytest.mark.slow]    # each trains an example: 5-50 s


def run(name, tmp_path, capsys):
    module = __import__(name)
    result = module.main(["--fast", "--out", str(tmp_path)])
    return result, capsys.readouterr().out


def written(tmp_path, *names):
    for name in names:
        path = tmp_path / name
        assert path.is_file() and path.stat().st_size > 1000, name
    return True


def test_deep_network_shows_vanishing_and_healthy_deltas(tmp_path, capsys):
    result, out = run("deep_network", tmp_path, capsys)
    ratios = {a: result[f"{a}_first_over_last"] for a in ("sigmoid", "tanh", "relu")}
    assert ratios["sigmoid"] < 1e-3                 # 1.2e-5: sigmoid' <= 1/4 per layer
    assert 0.1 < ratios["tanh"] < 1.0               # 0.42: shrinks a little
    assert 0.3 < ratios["relu"] < 3.0               # 1.3: healthy with He init
    assert len(result["delta_sizes"]["relu"]) == result["depth"] + 1
    assert result["sigmoid_test_accuracy"] < 0.2    # stuck at chance (9.8 %)
    assert result["tanh_test_accuracy"] > 0.6       # 89.6 %
    assert result["mlp_test_accuracy"] > 0.85       # 4 epochs of Adam
    assert "first/last" in out and "deeper MLP 64-128-64-32-10" in out
    assert written(tmp_path, "deep_network_deltas.png")


def test_network_as_layer_reuses_the_pretrained_network_three_ways(tmp_path, capsys):
    result, out = run("network_as_layer", tmp_path, capsys)
    assert result["pretrained_accuracy"] > 0.8      # 93.6 % after 3 epochs
    # shared: one set for both branches, trained; copied: one set per branch; frozen: only the head
    assert result["shared_updated"] == ["features", "head", "mix"]
    assert result["copied_updated"] == ["features", "features_1", "head", "mix"]
    assert result["frozen_updated"] == ["head", "mix"]
    features = 64 * 32 + 32
    assert result["copied_trainable"] == result["shared_trainable"] + features
    assert result["frozen_trainable"] == result["shared_trainable"] - features
    for mode in ("shared", "copied", "frozen", "scratch"):
        assert result[f"{mode}_test_accuracy"] > 0.55, mode      # a balanced task: 0.5 is chance
    assert written(tmp_path, "network_as_layer_curves.png", "network_as_layer_collapsed.svg",
                   "network_as_layer_shared.svg", "network_as_layer_copied.svg")
    collapsed = (tmp_path / "network_as_layer_collapsed.svg").read_text()
    expanded = (tmp_path / "network_as_layer_shared.svg").read_text()
    assert "features" in collapsed and "features/hidden/W" not in collapsed
    assert "hidden" in expanded and expanded.count("(64, 32)") == 1   # one W read by both branches
    assert (tmp_path / "network_as_layer_copied.svg").read_text().count("(64, 32)") == 2


def test_regularization_trains_every_technique_and_prints_the_table(tmp_path, capsys):
    result, out = run("regularization", tmp_path, capsys)
    techniques = ["none", "L2", "L1", "input noise", "hidden noise", "weight noise", "dropout",
                  "augmentation"]
    assert list(result["accuracy"]) == techniques
    assert result["n_train"] == 200
    for technique, acc in result["accuracy"].items():
        assert acc["test"] > 0.75, (technique, acc)           # 30 epochs: 89-92 %
        assert acc["train"] >= acc["test"] - 0.05, (technique, acc)
        assert f"| {technique} | {100 * acc['train']:.1f} % | {100 * acc['test']:.1f} % |" in out
    assert written(tmp_path, "regularization_accuracy.png")


def test_conv_net_reaches_a_floor_and_renders_at_depth_1(tmp_path, capsys):
    result, out = run("conv_net", tmp_path, capsys)
    assert result["num_parameters"] == 13706
    assert result["test_accuracy"] > 0.85            # 92.9 % after 3 epochs
    assert f"test accuracy {100 * result['test_accuracy']:.1f} %" in out
    assert written(tmp_path, "conv_net_training.png", "conv_net_graph.svg")
    svg = (tmp_path / "conv_net_graph.svg").read_text()
    assert "conv_1" in svg and "max_pool" in svg
    # the loss is a composite op: one box by default, its log_softmax inside it not drawn
    assert "softmax_ce" in svg and "log_softmax" not in svg


def test_gpu_example_matches_the_cpu_in_the_simulator(tmp_path, capsys):
    result, out = run("gpu", tmp_path, capsys)
    assert result["simulated"] and "CUDA simulator" in out
    assert result["loss_diff"] < 1e-5 and result["param_diff"] < 1e-5 and result["fit_diff"] < 1e-5
    assert result["final_loss"]["cuda"] < 0.3 and result["kernels"] > 0
    assert written(tmp_path, "gpu_cpu_vs_cuda.png")


def test_gpu_example_switches_the_simulator_on_before_numba_is_imported(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["PYTHONPATH"] = os.pathsep.join([EXAMPLES, os.path.dirname(EXAMPLES)])
    code = ("import gpu, numba; print(gpu._has_nvidia_gpu(), numba.config.ENABLE_CUDASIM, "
            "gpu.device_description()[0])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    has_gpu, simulator, simulated = done.stdout.split()
    assert simulator == ("0" if has_gpu == "True" else "1")
    assert simulated == str(has_gpu == "False")
