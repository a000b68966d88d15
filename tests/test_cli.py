"""The ``graphnn`` command."""
import os

from graphnn import cli


def test_demo_builds_derives_and_checks(capsys, tmp_path):
    assert cli.main(["demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "7 weights" in out and "9 weights" in out
    assert "FAILED" not in out and out.count("gradient check (central differences, float64): ok") == 3
    assert out.count("compiled CPU kernels vs NumPy reference") == 3
    assert "1 - tanh(hidden/z)**2" in out and "all checks passed" in out
    # each training line says how its loss reduces the batch; the softmax classifier's NLL is a sum
    trained = [line for line in out.splitlines() if "trained 60 epochs" in line]
    assert len(trained) == 3
    assert all("loss" in line and "(mean over the batch)" in line for line in trained[:2])
    assert "(summed over each batch of 32, not a mean)" in trained[2]
    # the demo writes each net's generated source and its pictures
    written = sorted(p.name for p in (tmp_path / "demo").iterdir())
    assert "regression_kernels.py" in written and "regression-deltas.svg" in written
    # it ends by listing every lecture example with the command that runs it
    examples = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
    for name, _ in cli.EXAMPLES:
        assert f"python3 examples/{name}.py" in out
        assert os.path.exists(os.path.join(examples, f"{name}.py")), f"examples/{name}.py is listed but missing"

