"""examples/softmax_classifier.py runs in --fast mode, explains the chain rule and trains."""
import os
import sys

import numpy as np
import pytest

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")


@pytest.fixture(scope="module")
def softmax_example():
    sys.path.insert(0, EXAMPLES)
    try:
        import softmax_classifier
    finally:
        sys.path.remove(EXAMPLES)
    return softmax_classifier


def test_softmax_classifier_example(softmax_example, tmp_path, capsys):
    result = softmax_example.main(["--fast", "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert result["accuracy"] > 0.9
    # explain's sum over the paths is the gradient of gn.loss_and_gradients
    np.testing.assert_allclose(result["explain_sum"], result["gradient"], rtol=1e-12, atol=1e-12)
    assert result["explain_sum"].shape == (2, 2) and np.abs(result["gradient"]).max() > 0.1
    assert "sum over the paths == gn.loss_and_gradients: True" in printed
    assert "dz^4/d(linear/W) = dz^4/dz^3_1 * (" in printed and "delta^3_1 = delta^4 * dz^4/dz^3_1" in printed
    assert len(result["explanation"].paths) == 4
    for name in ("softmax_boundary.png", "softmax_layers.svg"):
        path = tmp_path / name
        assert path.stat().st_size > 5000, name
        assert f"wrote {path}" in printed
    svg = (tmp_path / "softmax_layers.svg").read_text()
    assert "log_softmax" in svg and "δ" in svg
