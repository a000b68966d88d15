"""Every built-in elementwise op x {float32, float64} x {reference, cpu, cuda simulator} at the
extreme inputs: value and derivative against the exact math, finite where it is finite.

Generated from the declarations (tests/op_tables.py): each input of each op is swept over
{+-1e4, +-100, +-30, +-20, +-1, +-1e-3, +-1e-8, 0} inside its domain, the other inputs held at a
representative value; NaN in gives NaN out. One graph holds every sweep, so each target and
dtype compiles once. The oracle is the op's derivative expression and body evaluated with mpmath
at 50 digits and rounded to the dtype.
"""
import functools

import numpy as np
import pytest

import graphnn as gn
from op_tables import CASES, exact_derivative, exact_value

TARGETS = ["reference", "cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
DTYPES = ["float32", "float64"]
POINTS = (-1e4, -100.0, -30.0, -20.0, -1.0, -1e-3, -1e-8, 0.0, 1e-8, 1e-3, 1.0, 20.0, 30.0, 100.0, 1e4)
# the CUDA simulator runs kernels as Python, whose math.exp(1e4) raises OverflowError where a
# GPU returns inf: under it the sweep stops at |x| <= 30 (docs/cuda.md: the full sweep on a GPU)
SIMULATED_LIMIT = 30.0
HELD = (0.7, 1.3, -0.6, 0.3, -2.5)
# relative error allowed, and an absolute floor of two machine epsilons: where a value is far
# below 1 (tanh'(20) = 1.7e-17), float32 and PyTorch give 0 from 1 - tanh^2; graphnn matches
RTOL = {"float32": 1e-5, "float64": 1e-10}
ATOL = {"float32": 2 * float(np.finfo(np.float32).eps), "float64": 2 * float(np.finfo(np.float64).eps)}


def _held(low, high, kinks):
    return next(v for v in HELD if low < v < high and all(abs(v - k) > 0.1 for k in kinks))


def _sweeps(limit=np.inf):
    """(case, position, args): input ``position`` over the points, the others held."""
    out = []
    for case in CASES:
        doms, kinks = case.domains, case.op.kinks
        held = [_held(lo, hi, k) for (lo, hi), k in zip(doms, kinks)]
        for position, (low, high) in enumerate(doms):
            xs = np.array([x for x in POINTS if low < x < high and x not in kinks[position] and abs(x) <= limit])
            args = [np.full(len(xs), h) for h in held]
            args[position] = xs
            out.append((case, position, args))
    return out


SWEEPS = _sweeps()


def _simulated():
    from numba import config
    return bool(config.ENABLE_CUDASIM)


def _sweeps_for(target):
    return _sweeps(SIMULATED_LIMIT) if target == "cuda" and _simulated() else SWEEPS


def _label(sweep):
    case, position, _ = sweep
    return f"{case.id}/{case.op.arg_names[position]}"


@functools.lru_cache(maxsize=None)
def _run(target, dtype):
    """{sweep label: (values, gradients per input)} from one compiled graph of every sweep."""
    g = gn.Graph(f"sweep_{dtype}")
    outs, params, total = {}, {}, None
    sweeps = _sweeps_for(target)
    for k, (case, position, args) in enumerate(sweeps):
        ps = [g.parameter(f"s{k}_{j}", (len(a),), init=lambda rng, shape, a=a: np.asarray(a))
              for j, a in enumerate(args)]
        out = case.op(*ps, name=f"op{k}", **case.attr_dict)
        g.output(f"y{k}", out)
        outs[k], params[k] = out, ps
        total = gn.sum(out) if total is None else total + gn.sum(out)
    model = gn.compile(g, total, target=target, dtype=dtype, optimizer=gn.SGD(lr=0.0))
    values = model.forward({})
    with np.errstate(all="ignore"):
        _, grads = model.loss_and_gradients({})
    return {_label(s): (values[f"y{k}"], [grads.get(f"s{k}_{j}") for j in range(len(s[2]))])
            for k, s in enumerate(sweeps)}


def _check(got, exact, dtype, what):
    with np.errstate(over="ignore"):     # beyond the dtype's range: inf, as the dtype holds it
        exact = exact.astype(dtype).astype(np.float64)
    got = np.asarray(got, dtype=np.float64)
    finite = np.isfinite(exact)
    assert np.array_equal(np.isfinite(got), finite), f"{what}: got {got}, exact {exact}"
    np.testing.assert_allclose(got[finite], exact[finite], rtol=RTOL[dtype], atol=ATOL[dtype],
                               err_msg=what)
    assert np.array_equal(got[~finite], exact[~finite], equal_nan=True), f"{what}: {got} vs {exact}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("sweep", SWEEPS, ids=_label)
def test_value_and_derivative_at_extreme_inputs(sweep, target, dtype):
    sweep = next(s for s in _sweeps_for(target) if _label(s) == _label(sweep))
    case, position, args = sweep
    values, grads = _run(target, dtype)[_label(sweep)]
    xs = args[position]
    _check(values, exact_value(case, args), dtype, f"{_label(sweep)} at {xs} ({target}, {dtype}): value")
    if not case.gradient_flows:
        assert grads[position] is None or np.all(grads[position] == 0)
        return
    _check(grads[position], exact_derivative(case, args, position), dtype,
           f"{_label(sweep)} at {xs} ({target}, {dtype}): derivative")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("target", TARGETS)
def test_nan_in_is_nan_out(target, dtype):
    """Every op's value is NaN where its swept input is NaN, as in PyTorch."""
    g = gn.Graph("nan_sweep")
    names = []
    sweeps = _sweeps_for(target)
    for k, (case, position, args) in enumerate(sweeps):
        held = [a[:1].copy() for a in args]
        held[position] = np.array([np.nan])
        inputs = [g.input(f"n{k}_{j}", (None,)) for j in range(len(held))]
        g.output(f"y{k}", case.op(*inputs, name=f"op{k}", **case.attr_dict))
        names.append((k, held))
    model = gn.compile(g, target=target, dtype=dtype)
    feeds = {f"n{k}_{j}": a.astype(dtype) for k, held in names for j, a in enumerate(held)}
    with np.errstate(all="ignore"):
        values = model.forward(feeds)
    not_nan = [_label(sweeps[k]) for k, _ in names if not np.isnan(values[f"y{k}"][0])]
    assert not not_nan, f"NaN in, a number out: {not_nan}"
