"""The vectorisable float32 math forms meet the accuracy their sources document."""
import math
import re

import numpy as np
import pytest
from numba import njit
from scipy.special import erf

from graphnn.codegen import fastmath


def _helpers(dtype="float32"):
    namespace = {"np": np, "math": math, "_F": np.dtype(dtype).type}
    exec(fastmath.from_bits(dtype), namespace)
    for source in fastmath.fast_helpers(dtype):
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


def _apply(name, x, helpers=HELPERS):
    fn = helpers[name]

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


# -- range ends: infinities, NaN, signed zeros, the extreme floats, the switch points ---------------

F32 = np.float32
BIG, TINY, SUB = np.finfo(F32).max, np.finfo(F32).tiny, np.finfo(F32).smallest_subnormal
EDGES = [np.inf, -np.inf, 0.0, -0.0, BIG, -BIG, TINY, -TINY, SUB, -SUB]
SWITCHES = {   # where each helper changes form (clamp, saturation, flush, overflow)
    "fast_tanh": [7.90531110763549805, -7.90531110763549805],
    "fast_erf": [4.0, -4.0],
    "fast_exp": [-87.33, -87.33654022216797, float(np.log(np.float64(TINY))), 88.72,
                 float(np.log(np.float64(BIG))), 100.0, -103.97],
}
EXACT = {"fast_tanh": np.tanh, "fast_erf": erf, "fast_exp": np.exp}


def _ulps_around(v):
    v = F32(v)
    return [np.nextafter(v, F32(-np.inf)), v, np.nextafter(v, F32(np.inf))]


def _range_end_points(name):
    return np.array(EDGES + [u for s in SWITCHES[name] for u in _ulps_around(s)], dtype=F32)


def _within_bound(name, x, got):
    """Each value within the documented bound of float64 math; for fast_exp relative where the
    exact result is a normal float32, 0 below that range and inf above it."""
    with np.errstate(over="ignore"):
        exact = EXACT[name](x.astype(np.float64))
    bound = _documented(name)
    got64 = got.astype(np.float64)
    if name != "fast_exp":
        err = np.abs(got64 - exact)
        assert err.max() <= bound, f"{name}: error {err.max():.3g} at x = {x[err.argmax()]!r}"
        return
    normal = (exact >= TINY) & (exact <= BIG)
    rel = np.abs(got64[normal] - exact[normal]) / exact[normal]
    assert rel.max() <= bound, f"fast_exp: relative error {rel.max():.3g} at x = {x[normal][rel.argmax()]!r}"
    assert np.all(got[exact < TINY] == 0.0), x[(exact < TINY) & (got != 0.0)]
    assert np.all(got[exact > BIG] == np.inf), x[(exact > BIG) & (got != np.inf)]


@pytest.mark.parametrize("name", ["fast_tanh", "fast_erf", "fast_exp"])
def test_range_ends_stay_within_the_documented_bound(name):
    """fast_exp flushed to 0 below x = -87.33, where exp is still normal down to -87.3365:
    at -87.3365402 it gave 0 for 1.1755e-38 (relative error 1)."""
    x = _range_end_points(name)
    _within_bound(name, x, _apply(name, x))


@pytest.mark.parametrize("name", ["fast_tanh", "fast_erf", "fast_exp"])
def test_monotone_across_the_switch_points(name):
    """One float32 ulp either side of each switch point: no step down, and no step up larger
    than the exact step plus twice the bound (a jump at the seam)."""
    bound = _documented(name)
    for s in SWITCHES[name]:
        x = np.array(_ulps_around(s), dtype=F32)
        got = _apply(name, x).astype(np.float64)
        with np.errstate(over="ignore"):
            exact = EXACT[name](x.astype(np.float64))
        assert np.all(got[1:] >= got[:-1]), (name, s, got)
        if name == "fast_exp":
            finite = np.isfinite(got) & (got > 0)
            steps = np.diff(got[finite]) / got[finite][:-1]
            exact_steps = np.diff(exact[finite]) / exact[finite][:-1]
        else:
            steps, exact_steps = np.diff(got), np.diff(exact)
        assert np.all(np.abs(steps - exact_steps) <= 2 * bound), (name, s, steps, exact_steps)


def test_exact_values_at_the_ends():
    """+-1, +-0, inf and 0 where they are exact (the sign of zero kept); NaN gives NaN."""
    x = np.array([np.inf, -np.inf, BIG, -BIG, 0.0, -0.0, np.nan], dtype=F32)
    for name in ("fast_tanh", "fast_erf"):
        got = _apply(name, x)
        assert list(got[:4]) == [1.0, -1.0, 1.0, -1.0], (name, got)
        assert got[4] == 0.0 and not np.signbit(got[4]) and got[5] == 0.0 and np.signbit(got[5]), name
        assert np.isnan(got[6]), name
    got = _apply("fast_exp", x)
    assert list(got[:6]) == [np.inf, 0.0, np.inf, 0.0, 1.0, 1.0] and np.isnan(got[6]), got
    assert _apply("fast_exp", np.array([-87.33654022216797], dtype=F32))[0] >= TINY   # the last normal


def test_exp_builds_its_powers_of_two_in_float64_too():
    """fast_exp writes 2**k into the exponent field of its dtype's float (fast_math=True on a
    float64 model): the same bound over the float32 range."""
    helpers = _helpers("float64")
    x = np.linspace(-87.3, 88.7, 100001)
    rel = np.abs(_apply("fast_exp", x, helpers) - np.exp(x)) / np.exp(x)
    assert rel.max() <= _documented("fast_exp")
    assert list(_apply("fast_exp", np.array([-200.0, 0.0]), helpers)) == [0.0, 1.0]
