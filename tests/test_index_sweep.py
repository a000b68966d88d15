"""Every built-in index op on each of its declared examples (``@index_op(examples=...)``):
the reference gradient against central differences, and the compiled CPU and CUDA (simulator)
values and gradients against the reference, in float32 and float64.

Generated from the declarations (``gn.BUILTINS``): an index op added to graphnn joins the sweep
with no edit here, and one declared without an example fails the first test. All examples share
one graph per target and dtype, so each compiles once.
"""
import functools

import numpy as np
import pytest

import graphnn as gn
from support import numeric_gradient

INDEX = tuple(op for op in gn.BUILTINS.values() if op.kind == "index")
BATCH = 3
CASES = [(op, k) for op in INDEX for k in range(len(op.examples))]
TARGETS = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
TOLERANCE = {"float32": 2e-5, "float64": 1e-10}


def _id(case):
    op, k = case
    return f"{op.name}-{k}"


def test_every_builtin_index_op_declares_an_example():
    assert INDEX, "no index ops registered"
    assert not [op.name for op in INDEX if not op.examples]


def _values(op, k):
    """Parameter values for example ``k`` of ``op`` (the batch axis as BATCH rows)."""
    example = op.examples[k]
    rng = np.random.default_rng(1000 + 17 * k + len(op.name))
    return [rng.uniform(-1.0, 1.0, tuple(BATCH if d is None else d for d in example[a]))
            for a in op.arg_names]


def _build(g, op, k, tag):
    """Parameters p<tag>_<j>, output y<tag> = op(...), and its loss sum(y**2) (non-uniform deltas)."""
    example = op.examples[k]
    params = [g.parameter(f"p{tag}_{j}", v.shape, init=lambda rng, shape, v=v: v)
              for j, v in enumerate(_values(op, k))]
    attrs = {a: v for a, v in example.items() if a not in op.arg_names}
    out = op(*params, name=f"op{tag}", **attrs)
    g.output(f"y{tag}", out)
    return gn.sum(gn.square(out))


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_reference_gradient_matches_finite_differences(case):
    op, k = case
    g = gn.Graph(f"fd_{op.name}")
    loss = _build(g, op, k, "0")
    model = gn.compile(g, loss, target="reference", dtype="float64", optimizer=gn.SGD(lr=0.0))
    _, grads = model.loss_and_gradients({})
    for j, value in enumerate(_values(op, k)):
        name = f"p0_{j}"

        def f(x, name=name):
            params = {n: np.asarray(v) for n, v in model.params.items()}
            params[name] = x
            return float(gn.evaluate([loss], {}, params=params)[loss.name])
        expected = numeric_gradient(f, value)
        np.testing.assert_allclose(grads.get(name, np.zeros_like(value)), expected, rtol=1e-6, atol=1e-7,
                                   err_msg=f"{_id(case)}: d loss / d {op.arg_names[j]}")


@functools.lru_cache(maxsize=None)
def _models(target, dtype):
    g = gn.Graph(f"index_sweep_{dtype}")
    total = None
    for n, (op, k) in enumerate(CASES):
        loss = _build(g, op, k, str(n))
        total = loss if total is None else total + loss
    compiled = gn.compile(g, total, target=target, dtype=dtype, optimizer=gn.SGD(lr=0.0))
    reference = gn.compile(g, total, target="reference", dtype=dtype, optimizer=gn.SGD(lr=0.0))
    return (compiled.forward({}), compiled.loss_and_gradients({})[1],
            reference.forward({}), reference.loss_and_gradients({})[1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", CASES, ids=_id)
def test_compiled_matches_reference(case, target, dtype):
    n = CASES.index(case)
    values, grads, ref_values, ref_grads = _models(target, dtype)
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(values[f"y{n}"], ref_values[f"y{n}"], rtol=tol, atol=tol,
                               err_msg=f"{_id(case)} value ({target}, {dtype})")
    for j in range(len(case[0].arg_names)):
        name = f"p{n}_{j}"
        assert name in grads and name in ref_grads, f"{_id(case)}: no gradient for {name}"
        np.testing.assert_allclose(grads[name], ref_grads[name], rtol=tol, atol=tol,
                                   err_msg=f"{_id(case)} d loss / d {name} ({target}, {dtype})")
