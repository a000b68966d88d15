"""Shared fixtures: keep the global op registry as graphnn declares it."""
import pytest

import graphnn as gn


@pytest.fixture(autouse=True)
def restore_registry():
    """Tests that declare ops must not leak them into other tests' registry table."""
    before = dict(gn.REGISTRY)
    yield
    gn.REGISTRY.clear()
    gn.REGISTRY.update(before)
