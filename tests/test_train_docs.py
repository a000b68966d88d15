"""docs/training.md and the docstring examples of the layer, training and file modules run."""
import doctest
import importlib
from pathlib import Path

import pytest

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
ROOT = Path(__file__).resolve().parent.parent

MODULES = ["graphnn.nn.layers", "graphnn.nn.modules", "graphnn.nn.regularize", "graphnn.nn.reuse",
           "graphnn.graph.random", "graphnn.ops.conv", "graphnn.train.fit", "graphnn.train.metrics",
           "graphnn.train.schedules",
           "graphnn.io", "graphnn.data", "graphnn.data.augment", "graphnn.data.digits"]


def test_training_md_examples_run():
    result = doctest.testfile(str(ROOT / "docs" / "training.md"), module_relative=False, optionflags=FLAGS)
    assert result.attempted > 50
    assert result.failed == 0


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=FLAGS)
    assert result.attempted > 0
    assert result.failed == 0
