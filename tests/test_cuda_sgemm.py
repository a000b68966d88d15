"""The tiled matrix product on its own, under numba's CUDA simulator, against NumPy.

Each configuration of the printer (tile, slab, prefetch, runs of adjacent rows read as
vectors, steps of k per iteration) prints a different inner loop; each is run on ragged
shapes (no dimension a multiple of the tile or the slab), with every transpose, on one
kernel printed alone -- no graph around it, so a wrong index cannot hide behind another
kernel.
"""
import numpy as np
import pytest
import sympy as sp

from graphnn.codegen.cuda import FILL, CudaModulePrinter, Sgemm
from graphnn.lower.ir import Contract

pytestmark = pytest.mark.cuda


def _product_module(dtype, config, trans_a, trans_b, scale):
    """The printed module of one product ``o = scale * op(a) @ op(bb)``, executed."""
    printer = CudaModulePrinter(dtype, config)
    k = Contract(out="o", a="a", b="bb", trans_a=trans_a, trans_b=trans_b, scale=sp.nsimplify(scale))
    lines, launches = printer.contract(k, "prod", ["a", "bb", "o"])
    source = "\n".join(printer.header("one product") + FILL.split("\n") + lines) + "\n"
    namespace = {}
    exec(compile(source, f"<sgemm {config}>", "exec"), namespace)
    assert launches == [f"_bind_contract(prod, a, bb, o, {trans_a}, {trans_b}, {printer.printer.doprint(k.scale)}, N)"]
    return namespace, source


def _run(dtype, config, trans_a, trans_b, M=70, K=37, P=45, scale=0.5, split_k=None):
    from numba import cuda
    rng = np.random.default_rng(M * K + P)
    a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
    b = rng.standard_normal((P, K) if trans_b else (K, P)).astype(dtype)
    ns, source = _product_module(dtype, config, trans_a, trans_b, scale)
    if split_k is not None:
        ns["SPLIT_K"] = split_k
    out = cuda.to_device(np.full((M, P), np.nan, dtype=dtype))
    ns["_bind_contract"](ns["prod"], cuda.to_device(a), cuda.to_device(b), out, trans_a, trans_b, scale, M)()
    want = scale * (a.T if trans_a else a).astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(out.copy_to_host(), want, rtol=tol, atol=tol)
    return source


@pytest.mark.parametrize("dtype,config,trans_a,trans_b", [
    # runs of 4 read as vectors, 4 steps of k per iteration (the defaults' shape)
    ("float32", Sgemm(64, 4, True, 4, 4), False, False),
    ("float32", Sgemm(64, 4, True, 4, 2), True, False),
    ("float64", Sgemm(64, 4, True, 4, 4), False, True),
    # no vectors and no unrolling: the mapping of earlier versions
    ("float32", Sgemm(64, 4, False, 1, 1), True, True),
    # a 32 tile has 2 rows per thread: runs of 4 do not fit and fall back to 1
    ("float64", Sgemm(32, 8, True, 4, 4), True, False),
])
def test_tiled_product_matches_numpy(dtype, config, trans_a, trans_b):
    source = _run(dtype, config, trans_a, trans_b)
    sub = config.tile // 16
    vec = config.vec if sub % config.vec == 0 else 1
    # the thread's first run of rows is adjacent when vec > 1, 16 apart otherwise
    assert f"_ua1 = numba.uint64(ty * {vec} + {1 if vec > 1 else 16})" in source
    assert f"for kk in range(0, {config.bk}, {config.unroll})" in source


def test_tiled_product_split_over_k_matches_numpy():
    """A long K into a small output splits K over blocks that add their sums atomically."""
    _run("float64", Sgemm(64, 4, True, 4, 4), True, False, M=20, K=75, P=9, split_k=16)
