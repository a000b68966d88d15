"""docs/core.md and the core modules' docstring examples run as doctests, so they stay true."""
import doctest
import importlib
from pathlib import Path

import pytest

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
ROOT = Path(__file__).resolve().parent.parent

CORE_MODULES = ["graphnn.graph.node", "graphnn.graph.init", "graphnn.ops.registry",
                "graphnn.derive.autodiff", "graphnn.reference.executor", "graphnn.check"]


def test_core_md_examples_run():
    result = doctest.testfile(str(ROOT / "docs" / "core.md"), module_relative=False, optionflags=FLAGS)
    assert result.attempted > 40
    assert result.failed == 0


@pytest.mark.parametrize("name", CORE_MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=FLAGS)
    assert result.attempted > 0
    assert result.failed == 0


def test_compiler_md_examples_run():
    result = doctest.testfile(str(ROOT / "docs" / "compiler.md"), module_relative=False, optionflags=FLAGS)
    assert result.attempted >= 5
    assert result.failed == 0


@pytest.mark.parametrize("name", ["graphnn.runtime", "graphnn.train.optimizers"])
def test_compiler_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=FLAGS)
    assert result.attempted > 0
    assert result.failed == 0
