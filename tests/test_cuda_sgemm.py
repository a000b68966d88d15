"""The tiled matrix product on its own, under numba's CUDA simulator, against NumPy.

Each configuration of the printer (tile, slab, prefetch, runs of adjacent rows read as
vectors, steps of k per iteration) prints a different inner loop; each is run on ragged
shapes (no dimension a multiple of the tile or the slab), with every transpose, on one
kernel printed alone -- no graph around it, so a wrong index cannot hide behind another
kernel.
"""
import ast
import importlib.util

import numpy as np
import pytest
import sympy as sp

from graphnn.codegen.cuda import DGEMM, FILL, SGEMM, CudaModulePrinter, Sgemm
from graphnn.lower.ir import Contract

pytestmark = pytest.mark.cuda


def _product_module(dtype, config, trans_a, trans_b, scale, where):
    """The printed module of one product ``o = scale * op(a) @ op(bb)``, imported from a file
    in the folder ``where`` (its kernels are cached on disk, on a GPU, beside their file)."""
    printer = CudaModulePrinter(dtype, config)
    k = Contract(out="o", a="a", b="bb", trans_a=trans_a, trans_b=trans_b, scale=sp.nsimplify(scale))
    lines, launches = printer.contract(k, "prod", ["a", "bb", "o"])
    source = "\n".join(printer.header("one product") + FILL.split("\n") + lines) + "\n"
    path = where / "sgemm_product.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("sgemm_product", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    namespace = vars(module)
    assert launches == [f"_bind_contract(prod, a, bb, o, {trans_a}, {trans_b}, {printer.printer.doprint(k.scale)}, N)"]
    return namespace, source


def _run(where, dtype, config, trans_a, trans_b, M=70, K=37, P=45, scale=0.5, split_k=None):
    from numba import cuda

    from graphnn.runtime.cuda import _simulator_shared_arrays_once
    _simulator_shared_arrays_once()     # as target="cuda" does: the simulator's shared arrays, race-free
    rng = np.random.default_rng(M * K + P)
    a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(dtype)
    b = rng.standard_normal((P, K) if trans_b else (K, P)).astype(dtype)
    ns, source = _product_module(dtype, config, trans_a, trans_b, scale, where)
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
    # slabs of 16: operands contiguous along k are staged in runs of 8 k's
    ("float32", Sgemm(64, 16, True, 4, 4), False, True),
    ("float64", Sgemm(64, 16, True, 4, 4), False, True),     # runs of 4 k's in float64
    # no vectors and no unrolling: the mapping of earlier versions
    ("float32", Sgemm(64, 4, False, 1, 1), True, True),
    # a 32 tile has 2 rows per thread: runs of 4 do not fit and fall back to 1
    ("float64", Sgemm(32, 8, True, 4, 4), True, False),
    # 3 steps do not divide a slab of 4: one step per iteration
    ("float32", Sgemm(64, 4, True, 4, 3), False, False),
])
def test_tiled_product_matches_numpy(tmp_path, dtype, config, trans_a, trans_b):
    source = _run(tmp_path, dtype, config, trans_a, trans_b)
    sub = config.tile // 16
    vec = config.vec if sub % config.vec == 0 else 1
    unroll = config.unroll if config.bk % config.unroll == 0 else 1
    # the thread's first run of rows is adjacent when vec > 1, 16 apart otherwise
    assert f"_ua1 = numba.uint64(ty * {vec} + {1 if vec > 1 else 16})" in source
    assert f"for kk in range(0, {config.bk}, {unroll})" in source


def test_the_default_tile_with_two_runs_per_thread_matches_numpy(tmp_path):
    """A 128 tile gives each thread two runs of 4 rows (and of 4 columns), 64 apart: the
    second run is only reached by shapes past row and column 64."""
    source = _run(tmp_path, "float32", Sgemm(128, 2, True, 4, 2), False, True, M=100, K=5, P=90)
    assert "_ua4 = numba.uint64(ty * 4 + 64)" in source and "_ub7 = numba.uint64(tx * 4 + 67)" in source


def test_a_configuration_without_runs_or_steps_is_refused():
    for bad in (Sgemm(64, 16, True, 0, 4), Sgemm(64, 16, True, 4, 0)):
        with pytest.raises(ValueError, match="vec and unroll must be at least 1"):
            CudaModulePrinter("float32", bad)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_product_kernel_body_has_no_branch(dtype):
    """numba's SSA, liveness, typing and lowering passes take time in blocks x variables, and
    each branch is blocks: a 128x128 product whose bounds-checked reads and stores were
    written out in the kernel had 260 blocks and took 7.6 s to compile to PTX. The reads
    (``_tile_load``) and the stores, one row of a thread's sums per call (bounds, split K's
    atomic add, the epilogue), are device functions that NVVM inlines: the kernel keeps only
    its loops (2.7 s; the machine code is the same: benchmarks/sgemm_sass.py)."""
    config = SGEMM if dtype == "float32" else DGEMM
    printer = CudaModulePrinter(dtype, config)
    k = Contract(out="o", a="a", b="bb", trans_a=False, trans_b=True, scale=sp.Integer(1))
    lines, _ = printer.contract(k, "prod", ["a", "bb", "o"])
    tree = ast.parse("\n".join(lines))
    kernel = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "prod")
    assert not [n for n in ast.walk(kernel) if isinstance(n, (ast.If, ast.IfExp, ast.BoolOp))]
    calls = [n.func.id for n in ast.walk(kernel) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    sub, per = config.tile // 16, config.tile * config.bk // 256
    assert calls.count("prod_row") == sub and "prod_at" not in calls
    assert calls.count("_tile_load") == 2 * 2 * per        # A and B, the first slabs and the next
    functions = {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}
    assert {"prod_at", "prod_row"} <= functions


def test_tiled_product_split_over_k_matches_numpy(tmp_path):
    """A long K into a small output splits K over blocks that add their sums atomically."""
    _run(tmp_path, "float64", Sgemm(64, 4, True, 4, 4), True, False, M=20, K=75, P=9, split_k=16)


def _store_conflicts(config, trans_a, trans_b, dtype="float32"):
    """The worst shared-memory bank conflict of the slab-staging stores of the printed kernel:
    over every warp and every store ``sa[_ca, _ra]``, ``sb[_rb, _cb]``, the most distinct
    addresses one of the 32 four-byte banks gets (1: no conflict). A float64 store is served
    a half-warp at a time, each 8-byte element on a pair of banks: 16 pairs per half-warp."""
    import re
    printer = CudaModulePrinter(dtype, config)
    k = Contract(out="o", a="a", b="bb", trans_a=trans_a, trans_b=trans_b, scale=sp.Integer(1))
    lines, _ = printer.contract(k, "prod", ["a", "bb", "o"])
    source = "\n".join(lines)
    index = dict(re.findall(r"^    (_[rc][ab]\d+) = numba\.uint64\((.*)\)$", source, flags=re.MULTILINE))
    stores = re.findall(r"^        (s[ab])\[(_\w+), (_\w+)\] = _p[ab]\d+$", source, flags=re.MULTILINE)
    assert stores and index
    row = int(re.search(r"sa = cuda\.shared\.array\(\(\d+, (\d+)\)", source).group(1))
    lanes, banks_of = (32, 32) if dtype == "float32" else (16, 16)
    worst = 0
    for _, first, second in stores:
        for group in range(256 // lanes):
            banks = {}
            for tid in range(lanes * group, lanes * group + lanes):
                address = eval(index[first], {"tid": tid}) * row + eval(index[second], {"tid": tid})
                banks.setdefault(address % banks_of, set()).add(address)
            worst = max(worst, max(len(a) for a in banks.values()))
    return worst


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (False, True), (True, False), (True, True)])
def test_the_default_kernel_stages_its_slabs_without_bank_conflicts(trans_a, trans_b, dtype):
    assert _store_conflicts(SGEMM if dtype == "float32" else DGEMM, trans_a, trans_b, dtype) == 1


def test_the_bank_conflict_count_can_fail():
    """Slabs of 4 k's cannot be staged in runs of 8: 4 k's of 8 rows put k and row r + 4, k + 1
    and row r on one bank -- the count sees it."""
    assert _store_conflicts(Sgemm(128, 4, True, 4, 4), False, False) == 2
    # and in float64: slabs of 2 k's, 2 k's of 8 rows per half-warp, k and row r + 4 and
    # k + 1 and row r on one bank pair
    assert _store_conflicts(Sgemm(64, 4, True, 4, 4), False, False, "float64") == 1
    assert _store_conflicts(Sgemm(128, 2, True, 4, 4), False, False, "float64") == 2
