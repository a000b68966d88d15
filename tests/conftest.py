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

import graphnn as gn  # noqa: E402


@pytest.fixture(autouse=True)
def restore_registry():
    """Tests that declare ops must not leak them into other tests' registry table."""
    before = dict(gn.REGISTRY)
    yield
    gn.REGISTRY.clear()
    gn.REGISTRY.update(before)
