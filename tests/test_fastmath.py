"""The vectorisable float32 math forms meet the accuracy their sources document."""
import math
import re

import numpy as np
import pytest
from numba import njit
from scipy.special import erf

from graphnn.codegen import fastmath


def _helpers():
    namespace = {"np": np, "math": math, "_F": np.float32}
    exec(fastmath.EXP2_TABLE, namespace)
    for source in fastmath.FAST_HELPERS:
        exec(source, namespace)
    for name in ("fast_tanh", "fast_erf", "fast_exp"):
        namespace[name] = njit(namespace[name])
    return namespace


HELPERS = _helpers()


def _documented(name):
    source = next(s for s in fastmath.FAST_HELPERS if s.startswith(f"def {name}("))
    found = re.search(r"error <= ([0-9.e-]+)", source)
    assert found, f"{name} no longer documents its accuracy"
    return float(found.group(1))


def _apply(name, x):
    fn = HELPERS[name]

    @njit
    def run(a):
        out = np.empty_like(a)
        for i in range(a.size):
            out[i] = fn(a[i])
        return out
    return run(x)


@pytest.mark.parametrize("name,exact,lo,hi", [
    ("fast_tanh", np.tanh, -12.0, 12.0),
    ("fast_erf", erf, -6.0, 6.0),
])
def test_absolute_error_bound(name, exact, lo, hi):
    x = np.linspace(lo, hi, 400001).astype(np.float32)
    err = np.abs(_apply(name, x).astype(np.float64) - exact(x.astype(np.float64)))
    assert err.max() <= _documented(name), f"{name}: {err.max():.3g} at {x[err.argmax()]}"


def test_exp_relative_error_bound_and_edges():
    x = np.linspace(-87.3, 88.7, 400001).astype(np.float32)
    exact = np.exp(x.astype(np.float64))
    rel = np.abs(_apply("fast_exp", x) - exact) / exact
    assert rel.max() <= _documented("fast_exp"), f"{rel.max():.3g} at {x[rel.argmax()]}"
    edges = _apply("fast_exp", np.array([-200.0, 0.0, 200.0, np.inf, -np.inf, np.nan], dtype=np.float32))
    assert edges[0] == 0.0 and edges[1] == 1.0 and np.isinf(edges[2]) and edges[2] > 0
    assert np.isinf(edges[3]) and edges[4] == 0.0 and np.isnan(edges[5])


def test_nan_passes_through_every_helper():
    nan = np.array([np.nan], dtype=np.float32)
    for name in ("fast_tanh", "fast_erf", "fast_exp"):
        assert np.isnan(_apply(name, nan)[0]), name
