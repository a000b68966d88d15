"""Shared fixtures: keep the global op registry as graphnn declares it.

CUDA tests run in numba's CUDA simulator unless GRAPHNN_TEST_REAL_GPU=1: the
simulator must be switched on before numba is first imported, so it is done here.
"""
import os

if os.environ.get("GRAPHNN_TEST_REAL_GPU") != "1":
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
# compiled-vs-reference checks need the compiled kernels to run from the first call;
# tests of the non-blocking path pass wait=False themselves
os.environ.setdefault("GRAPHNN_WAIT", "1")

import pytest  # noqa: E402
from hypothesis import Phase, settings  # noqa: E402

import graphnn as gn  # noqa: E402

# hypothesis profiles (tests/test_property_graphs.py): "graphnn", loaded here, draws the same
# examples on every run and keeps CI short; `python3 -m pytest --hypothesis-profile=long
# tests/test_property_graphs.py` draws fresh, many more examples. No example database; no
# "explain" phase (it reruns a failing example hundreds of times, each a Numba compile).
_PHASES = (Phase.explicit, Phase.generate, Phase.shrink)
settings.register_profile("graphnn", max_examples=40, deadline=None, derandomize=True, database=None,
                          phases=_PHASES)
settings.register_profile("long", max_examples=500, deadline=None, derandomize=False, database=None,
                          phases=_PHASES, print_blob=True)
settings.load_profile("graphnn")


@pytest.fixture(autouse=True)
def restore_registry():
    """Tests that declare ops must not leak them into other tests' registry table."""
    before = dict(gn.REGISTRY)
    yield
    gn.REGISTRY.clear()
    gn.REGISTRY.update(before)
