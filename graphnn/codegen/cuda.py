"""The CUDA printer: the same KernelProgram printed as ``numba.cuda`` kernels.

* Fused loops: one thread per output element (the flat thread index is
  decoded into loop indices); loads hoisted as on the CPU.
* Matrix products: a register-tiled shared-memory SGEMM (by default a 128x128
  tile per block of 16x16 threads, 8x8 outputs per thread -- 64x64 and 4x4 in
  float64 --, slabs of 16 staged in shared memory, the next slab read while the
  current one is multiplied, unsigned indices; a thread's outputs come in runs
  of 4 adjacent rows and columns, read from shared memory as vectors, and 4 steps
  of k are unrolled per iteration),
  transposes folded into indexing. A product's epilogue (``Contract.epilogue``: the
  bias and activation, a weight's update) runs on each output element in registers;
  where the product splits K over blocks or comes from cuBLAS, the epilogue's own
  kernel runs after it.
* Reductions: one thread per output element (a gather, no atomics), except a
  reduction over the batch into an output without a batch axis (bias
  gradients, the loss): each thread sums a chunk of rows and adds it with an
  atomic -- the only place atomics are needed.
* Row passes (a small net's step, :class:`~graphnn.lower.ir.Rows`): one thread
  per batch row computes the row's values in registers; the sums over the rows
  (weight gradients, the loss) are added within each block in shared memory,
  each block writes its partial sums, and a second kernel adds the blocks'
  partials in block order -- two launches for the whole pass, and the same
  result on every run (no atomics).

A host function per program launches the kernels in order; it is printed
into the same module, so the whole GPU program can be read in one file.
"""
import re
from collections import namedtuple
from dataclasses import replace

import numpy as np
import sympy as sp

from ..lower.canonical import canonical_kernel, kernel_buffers
from ..lower.ir import Contract, Fused, ReduceOrder, Rows
from ..lower.pointwise import Contractions
from ..lower.target import CUDA_PASSES, run_passes
from ..version import __version__
from .kernels import KernelPrinter, extent_code
from .layout import make_layout
from .scalar import helpers_source

THREADS = 256
# every kernel is compiled once per GPU architecture: numba-cuda keeps the machine code beside
# the cached module (runtime/cache.py), so a new process loads it instead of compiling again
KERNEL_DECORATOR = "@cuda.jit(cache=True)"
SPLIT_ROWS = 64          # rows each thread sums in a split (atomic) reduction
# SGEMM: output tile per block of 16x16 threads (tile/16 x tile/16 sums per thread), the
# slab of K staged in shared memory per round, whether the next slab is read into
# registers while the current one is multiplied, the runs of adjacent rows (and columns)
# a thread owns (read from shared memory as one vector), and the steps of k per iteration
Sgemm = namedtuple("Sgemm", "tile bk prefetch vec unroll", defaults=(1, 1))
# 128/16/prefetch: the fastest of benchmarks/sgemm_sweep.py on H200. Runs of 4 and 4 steps
# per iteration: 72% of a slab's instructions are FMAs instead of 58% (benchmarks/sgemm_sass.py)
SGEMM = Sgemm(tile=128, bk=16, prefetch=True, vec=4, unroll=4)
# float64: 8x8 doubles per thread need more than the 255 registers a thread can have (ptxas
# spilled 100 bytes); 4x4 use 128 and spill nothing (benchmarks/sgemm_sass.py)
DGEMM = Sgemm(tile=64, bk=16, prefetch=True, vec=4, unroll=4)
ROW_GROUP = 8            # a row pass adds this many of its sums per round in shared memory


def _decode(indices, shape, flat="_t"):
    """Lines turning a flat thread index into loop indices (row-major)."""
    lines, rest = [], flat
    for axis in range(len(indices) - 1, -1, -1):
        ext = extent_code(shape[axis])
        if axis == 0:
            lines.append(f"{indices[axis]} = {rest}")
        else:
            lines.append(f"{indices[axis]} = {rest} % {ext}")
            lines.append(f"_r{axis} = {rest} // {ext}")
            rest = f"_r{axis}"
    return lines


# a kernel is printed from its canonical form (CudaModulePrinter.shared_kernel): its buffers
# as _buf0, _buf1, ... -- a name no buffer can take (lower/passes.py GENERATED) and none of the
# printer's own -- and its name as a placeholder, both replaced when the text is final
CANONICAL, PLACEHOLDER, EPILOGUE = "_buf", "_KERNEL", "_EPILOGUE_LAUNCH"
_CANONICAL_RE = re.compile(rf"\b{CANONICAL}(\d+)\b")
_PLACEHOLDER_RE = re.compile(rf"\b{PLACEHOLDER}(?=_|\b)")
_EPILOGUE_RE = re.compile(rf"\b{EPILOGUE}\b")


def _with_comments(canonical, k):
    """The canonical kernel with ``k``'s comments back (they name the graph's nodes)."""
    if isinstance(k, Contract):
        epilogue = canonical.epilogue and replace(canonical.epilogue, comments=k.epilogue.comments)
        return replace(canonical, comment=k.comment, epilogue=epilogue)
    if isinstance(k, (Fused, Rows)):
        return replace(canonical, comments=k.comments)
    return replace(canonical, comment=k.comment)


def _total(shape):
    return " * ".join(extent_code(d) for d in shape) if shape else "1"


# identifiers the CUDA module uses itself: module globals, launch helpers, SGEMM locals
MODULE_NAMES = {"math", "numba", "np", "cuda", "_F", "_NT", "THREADS", "SGEMM_TILE", "SGEMM_BK", "_GEMM", "_STREAM", "_blocks",
                "_bind", "_bind_contract", "_bind_rows", "_fill", "_tile_load", "SPLIT_K", "_configure", "N", "b", "min", "max", "abs", "range", "int", "float"}
SGEMM_LOCALS = {"sa", "sb", "tx", "ty", "tid", "row0", "col0", "M", "P", "K", "e", "r", "c", "k0", "kk", "kn",
                "k_lo", "k_hi", "chunk", "split", "_v", "extra", "epilogue"}


class CudaModulePrinter(KernelPrinter):
    target = "cuda"
    passes = CUDA_PASSES
    # as on the CPU: a product with at most 4 terms joins its loop and a weight gradient of at
    # most 64 elements is a sum over the rows, so a small net's step can be one row pass (a
    # 64x64-tile SGEMM launch for a (N, 1) x (1, 2) product leaves the GPU idle)
    contractions = Contractions(unroll_sum=4, small_product_out=64)

    @staticmethod
    def reserved():
        """Names a buffer must not take: the module's own, and those of the helpers it emits."""
        helpers = {h.split("(")[0][len("def "):] for h in helpers_source()}
        return MODULE_NAMES | SGEMM_LOCALS | helpers

    def __init__(self, dtype, sgemm=None):
        self.dtype = np.dtype(dtype).name
        self.sgemm = sgemm or (DGEMM if self.dtype == "float64" else SGEMM)
        tile, bk = self.sgemm.tile, self.sgemm.bk
        if tile % 16 or (tile * bk) % 256 or tile * bk < 256:
            raise ValueError(f"SGEMM configuration {self.sgemm}: the tile must be a multiple of 16 and "
                             f"tile * bk a multiple of 256 (each of the 256 threads stages whole elements)")
        if self.sgemm.vec < 1 or self.sgemm.unroll < 1:
            raise ValueError(f"SGEMM configuration {self.sgemm}: vec and unroll must be at least 1")
        # libm names: numba.cuda maps math.* to the device library (floor/ceil there are ints)
        super().__init__(math_names={"floor": "math.floor", "ceiling": "math.ceil"})
        self._printed = {}      # canonical text of a kernel -> the name it was printed under

    def header(self, title):
        lines = [f"# Generated by graphnn {__version__}: {title}",
                 f"# target cuda (numba.cuda), dtype {self.dtype}.",
                 "import math", "", "import numba", "import numpy as np", "from numba import cuda", "",
                 f"_F = np.{self.dtype}", f"_NT = numba.{self.dtype}", f"THREADS = {THREADS}",
                 f"SGEMM_TILE, SGEMM_BK = {self.sgemm.tile}, {self.sgemm.bk}    # the tiled products' block tile and slab",
                 "_STREAM = 0     # the stream every launch goes on: the backend sets its own", "",
                 "", "def _blocks(n):", "    return max((n + THREADS - 1) // THREADS, 1)"]
        for h in helpers_source():
            lines += ["", "", "@cuda.jit(device=True)", h.rstrip()]
        # a tiled product's staged read: a device function, so the kernel itself has no branch
        # per read (numba's SSA and liveness passes take time in blocks x variables: with the
        # reads' and stores' branches written out, a 128x128 product had 260 blocks and took
        # 7.6 s to compile; NVVM inlines the function, the machine code is the same)
        lines += ["", "", "# one element of a product's operand, 0 outside it (at a tile's edge)",
                  "@cuda.jit(device=True)", "def _tile_load(x, i, j, ilim, jlim):",
                  "    if i < ilim and j < jlim:", "        return x[numba.uint64(i), numba.uint64(j)]",
                  "    return _F(0.0)"]
        return lines

    # -- kernels -----------------------------------------------------------------
    def kernel(self, k, name, shapes, epilogue_launch=None):
        """(kernel source lines, launch line) for one IR kernel (``epilogue_launch``: a
        product's, see :meth:`contract`)."""
        args = kernel_buffers(k)
        if isinstance(k, Contract):
            return self.contract(k, name, args, epilogue_launch)
        if isinstance(k, Fused):
            return self.fused(k, name, args)
        if isinstance(k, Rows):
            return self.rows(k, name, args)
        if k.order is ReduceOrder.SPLIT_ATOMIC:
            return self.split_reduce(k, name, args)
        return self.reduce(k, name, args)

    def _signature(self, name, args, comments, extra=()):
        lines = ["", ""] + [f"# {c}" for c in comments]
        return lines + [KERNEL_DECORATOR, f"def {name}({', '.join([*args, 'N', *extra])}):"]

    def fused(self, k, name, args):
        lines = self._signature(name, args, k.comments)
        total = _total(k.shape)
        lines += ["    _t = cuda.grid(1)", f"    if _t < {total}:"]
        lines += ["        " + s for s in _decode(k.indices, k.shape)]
        lines += ["        " + s for s in self.fused_body(k)]
        launch = f"_bind({name}, _blocks({total}), THREADS, {', '.join(args + ['N'])})"
        return lines, [launch]

    def rows(self, k, name, args):
        """A row pass: thread ``row`` computes its row; sums go through per-block partials.

        The kernel's block reduction leaves block ``blk``'s sums in ``_part[blk, a]``; the
        ``_finish`` kernel then adds them in block order, one thread per sum, and writes each
        target. Batch buffers the pass reads flat (``k.flat``) are passed flat."""
        flat = set(k.flat or ())
        call_args = [f"{a}.reshape({a}.size)" if a in flat else a for a in args]
        loads, body, targets = self.row_pass(k)
        n_acc = len(targets)
        extra = ("_part",) if n_acc else ()
        lines = self._signature(name, args, [*k.comments, "(one thread per row; sums by block, then in order)"],
                                extra=extra)
        lines += [f"    {k.row} = cuda.grid(1)"]
        lines += [f"    _acc{n} = _F(0.0)" for n in range(n_acc)]
        lines += [f"    if {k.row} < N:"]
        lines += ["        " + line for line in loads + body] or ["        pass"]
        launches = []
        if n_acc:
            # the block's sums: a tree in shared memory, the same order on every run, for
            # ROW_GROUP sums at a time (the shared array stays within 16 KiB in float64)
            group = min(n_acc, ROW_GROUP)
            lines += [f"    _sh = cuda.shared.array(({group}, THREADS), dtype=_NT)",
                      "    _i = cuda.threadIdx.x"]
            for first in range(0, n_acc, group):
                members = range(first, min(n_acc, first + group))
                lines += [f"    _sh[{n - first}, _i] = _acc{n}" for n in members]
                lines += ["    cuda.syncthreads()", "    _w = THREADS // 2", "    while _w > 0:",
                          "        if _i < _w:"]
                lines += [f"            _sh[{n - first}, _i] += _sh[{n - first}, _i + _w]" for n in members]
                lines += ["        cuda.syncthreads()", "        _w //= 2", "    if _i == 0:"]
                lines += [f"        _part[cuda.blockIdx.x, {n}] = _sh[{n - first}, 0]" for n in members]
                lines += ["    cuda.syncthreads()"]       # before the next group reuses _sh
            # the blocks' partials added in block order, one thread per sum
            outs = list(dict.fromkeys(str(t.base.label) for t in targets))
            lines += self._signature(f"{name}_finish", outs, [f"the sums of {name}, block by block"],
                                     extra=("_part",))
            lines += ["    _a = cuda.grid(1)", f"    if _a < {n_acc}:", "        _s = _F(0.0)",
                      "        for _blk in range(_part.shape[0]):", "            _s += _part[_blk, _a]"]
            for n, t in enumerate(targets):
                lines += [f"        {'if' if n == 0 else 'elif'} _a == {n}:",
                          f"            {self.printer.doprint(t)} = _s"]
            part = f"cuda.device_array((_blocks(N), {n_acc}), dtype=_F)"
            launches.append(f"_bind_rows({name}, {name}_finish, {part}, {', '.join(call_args + ['N'])}, "
                            f"outs=({', '.join(outs)},))")
        else:
            launches.append(f"_bind({name}, _blocks(N), THREADS, {', '.join(call_args + ['N'])})")
        return lines, launches

    def reduce(self, k, name, args):
        lines = self._signature(name, args, [k.comment])
        total = _total(k.out_shape)
        lines += ["    _t = cuda.grid(1)", f"    if _t < {total}:"]
        body = _decode(k.out_indices, k.out_shape) + self.accumulate(k) + [self.reduce_store(k)]
        lines += ["        " + s for s in body]
        return lines, [f"_bind({name}, _blocks({total}), THREADS, {', '.join(args + ['N'])})"]

    def split_reduce(self, k, name, args):
        term = k.terms[0]
        batch_index = next(r for r, e in term.reduce if e is None)
        outputs = _total(k.out_shape)
        lines = self._signature(name, args, [k.comment + "  (split over rows, atomic adds)"])
        lines += ["    _t = cuda.grid(1)",
                  f"    _chunks = (N + {SPLIT_ROWS - 1}) // {SPLIT_ROWS}",
                  f"    if _t < {outputs} * _chunks:",
                  f"        _o = _t % ({outputs})",     # outputs may be a product: 1 * 2 * 2
                  f"        _c = _t // ({outputs})"]
        body = _decode(k.out_indices, k.out_shape, "_o")
        chunk = {batch_index: f"range(_c * {SPLIT_ROWS}, min(N, (_c + 1) * {SPLIT_ROWS}))"}
        body += self.accumulate(k, chunk)
        # only sums are split (lower/target.py): CUDA's atomic max would drop NaN
        idx = ", ".join(str(i) for i in k.out_indices) if k.out_indices else "0"
        body.append(f"cuda.atomic.add({k.out}, ({idx},), _acc0)" if len(k.out_indices) > 1
                    else f"cuda.atomic.add({k.out}, {idx}, _acc0)")
        lines += ["        " + s for s in body]
        launches = [f"_bind(_fill, _blocks({k.out}.size), THREADS, {k.out}.reshape({k.out}.size), _F(0.0))",
                    f"_bind({name}, _blocks({outputs} * ((N + {SPLIT_ROWS - 1}) // {SPLIT_ROWS})), THREADS, "
                    f"{', '.join(args + ['N'])})"]
        return lines, launches

    def contract(self, k, name, args, epilogue_launch=None):
        """A tiled SGEMM (``self.sgemm``): each block of 16x16 threads computes a tile x tile
        piece of ``out`` from slabs of ``bk`` columns of A and rows of B staged in shared memory;
        each thread keeps sub x sub sums in registers. With ``prefetch`` the next slabs are read
        from global memory into registers while the current ones are multiplied. Transposes are
        folded into the indexing, and the global reads run along each operand's contiguous axis.

        An epilogue runs on each element in registers (a device function); where the product
        is not made by this kernel (split K, cuBLAS) its own kernel runs after: printed here,
        or, given ``epilogue_launch``, printed by the caller and launched by that line."""
        cfg = self.sgemm
        tile, bk, sub = cfg.tile, cfg.bk, cfg.tile // 16
        per = tile * bk // 256          # elements of each slab every thread stages
        # a thread's rows (and columns) come in runs of ``vec`` adjacent ones, 16 * vec apart,
        # so the compiler reads each run from shared memory in one vector load
        vec = cfg.vec if sub % cfg.vec == 0 else 1
        unroll = cfg.unroll if bk % cfg.unroll == 0 else 1

        def offset(i):
            return (i // vec) * 16 * vec + i % vec
        # every index is cast to unsigned: numba adds a wrap-around for a negative signed index
        # (a compare and a select per access, which the compilers keep in the inner loop; with
        # unsigned indices the 64 FMAs of a step of k take 93 instructions instead of 175)
        u = "numba.uint64"

        def load(x, trans, r, c, r_lim, c_lim):
            """Element (r, c) of operand x, or of its transpose, 0 outside (r_lim, c_lim)."""
            return f"_tile_load({x}, {c}, {r}, {c_lim}, {r_lim})" if trans else f"_tile_load({x}, {r}, {c}, {r_lim}, {c_lim})"
        inner = f"{k.a}.shape[0]" if k.trans_a else f"{k.a}.shape[1]"
        scale = self.printer.doprint(k.scale)
        lines = self._signature(name, args, [k.comment + f"  (tiled SGEMM {tile}x{tile}, {sub}x{sub} per thread, "
                                             f"slabs of {bk}{', prefetched' if cfg.prefetch else ''})"],
                                extra=("chunk", "split"))
        # shared slabs, both indexed [k, row-or-column]; 4 columns of padding keep the
        # transposing stores of A (and of a transposed B) free of bank conflicts (staged by
        # runs of one 32-byte sector, below), and each row 16-byte aligned for the vector reads
        lines += [
            f"    sa = cuda.shared.array(({bk}, {tile + 4}), dtype=_NT)",
            f"    sb = cuda.shared.array(({bk}, {tile + 4}), dtype=_NT)",
            "    tx = cuda.threadIdx.x",
            "    ty = cuda.threadIdx.y",
            f"    row0 = cuda.blockIdx.y * {tile}",
            f"    col0 = cuda.blockIdx.x * {tile}",
            f"    M = {k.out}.shape[0]",
            f"    P = {k.out}.shape[1]",
            f"    K = {inner}",
            "    tid = ty * 16 + tx",
            # split-K: block z sums K range [z*chunk, (z+1)*chunk) and adds it atomically
            "    k_lo = cuda.blockIdx.z * chunk",
            "    k_hi = min(K, k_lo + chunk)",
        ]
        lines += [f"    acc{i}{j} = _F(0.0)" for i in range(sub) for j in range(sub)]

        # an operand contiguous along k (A, or B transposed) is staged by runs of ``run`` k's,
        # one 32-byte sector of each row: a warp reads 8 floats of 4 rows (or 4 doubles of 8)
        # and stores them across the slab's rows, where a row is 4 elements of padding apart:
        # float32 lands on 32 different banks, float64 on 16 different bank pairs per
        # half-warp (16 k's of 2 rows put k and k + 8 on one bank: a 2-way conflict, and 4-way
        # in float64)
        run = 32 // np.dtype(self.dtype).itemsize
        run = run if bk % run == 0 else bk

        def along_k(e):
            """(k, row-or-column) of the slab element ``e`` of an operand contiguous along k."""
            if run == bk:
                return f"{e} % {bk}", f"{e} // {bk}"
            return f"{e} // {run * tile} * {run} + {e} % {run}", f"{e} // {run} % {tile}"

        def slab_reads(k0):
            """(row, column) of each staged element in the slab at k0, and its global read."""
            out = []
            for q in range(per):
                e = f"(tid + {q * 256})"
                # A's slab is tile x bk (rows x k), B's bk x tile (k x columns): walk the axis
                # that is contiguous in memory fastest
                ra, ca = (f"{e} % {tile}", f"{e} // {tile}") if k.trans_a else along_k(e)[::-1]
                rb, cb = along_k(e) if k.trans_b else (f"{e} // {tile}", f"{e} % {tile}")
                out.append((ra, ca, load(k.a, k.trans_a, f"row0 + _ra{q}", f"{k0} + _ca{q}", "M", "k_hi"),
                            rb, cb, load(k.b, k.trans_b, f"{k0} + _rb{q}", f"col0 + _cb{q}", "k_hi", "P")))
            return out

        reads = slab_reads("k0")
        index = []
        for q, (ra, ca, _, rb, cb, _) in enumerate(reads):
            index += [f"    _ra{q} = {u}({ra})", f"    _ca{q} = {u}({ca})", f"    _rb{q} = {u}({rb})",
                      f"    _cb{q} = {u}({cb})"]
        lines += index
        lines += [f"    _ua{i} = {u}(ty * {vec} + {offset(i)})" for i in range(sub)]
        lines += [f"    _ub{j} = {u}(tx * {vec} + {offset(j)})" for j in range(sub)]

        mul = ["cuda.syncthreads()", f"for kk in range(0, {bk}, {unroll}):"]
        for step in range(unroll):
            # each step's names are its own: a name assigned once needs no SSA repair in numba
            mul += [f"    _k{step} = {u}(kk + {step})"]
            mul += [f"    _a{step}_{i} = sa[_k{step}, _ua{i}]" for i in range(sub)]
            mul += [f"    _b{step}_{j} = sb[_k{step}, _ub{j}]" for j in range(sub)]
            mul += [f"    acc{i}{j} = cuda.fma(_a{step}_{i}, _b{step}_{j}, acc{i}{j})"
                    for i in range(sub) for j in range(sub)]
        mul += ["cuda.syncthreads()"]
        if cfg.prefetch:
            # the first slabs staged before the loop; in the loop, the next slabs go to
            # registers before the current ones are multiplied, and to shared memory after
            first = slab_reads("k_lo")
            lines += [f"    _pa{q} = {va}" for q, (_, _, va, _, _, _) in enumerate(first)]
            lines += [f"    _pb{q} = {vb}" for q, (_, _, _, _, _, vb) in enumerate(first)]
            lines += ["    for k0 in range(k_lo, k_hi, %d):" % bk]
            lines += [f"        sa[_ca{q}, _ra{q}] = _pa{q}" for q in range(per)]
            lines += [f"        sb[_rb{q}, _cb{q}] = _pb{q}" for q in range(per)]
            lines += ["        cuda.syncthreads()", f"        kn = k0 + {bk}"]
            nxt = slab_reads("kn")
            lines += [f"        _pa{q} = {va}" for q, (_, _, va, _, _, _) in enumerate(nxt)]
            lines += [f"        _pb{q} = {vb}" for q, (_, _, _, _, _, vb) in enumerate(nxt)]
            lines += ["        " + m for m in mul[1:]]
        else:
            lines += [f"    for k0 in range(k_lo, k_hi, {bk}):"]
            lines += [f"        sa[_ca{q}, _ra{q}] = {va}" for q, (_, _, va, _, _, _) in enumerate(reads)]
            lines += [f"        sb[_rb{q}, _cb{q}] = {vb}" for q, (_, _, _, _, _, vb) in enumerate(reads)]
            lines += ["        " + m for m in mul]
        # each element goes out through a device function of (row, column, value): the bounds,
        # the atomic add of a product summed over blocks (split K), and the epilogue (bias,
        # activation, ...) or the plain store
        extra, launch_extra, params, pre = [], "", [], []
        if k.epilogue is not None:
            # the kernel's arguments beyond the product's; the device function takes every
            # buffer the loop reads or writes (the product's operands too: a residual adds
            # the input) and the batch size (a mean's 1/N)
            extra = [a for a in kernel_buffers(k.epilogue) if a not in (k.a, k.b, k.out)]
            params = [a for a in kernel_buffers(k.epilogue) if a != k.out] + ["N"]
            if epilogue_launch is None:
                pre, (epilogue_launch,) = self.fused(k.epilogue, f"{name}_epilogue", kernel_buffers(k.epilogue))
            launch_extra = f", extra=({''.join(a + ', ' for a in extra)}), epilogue={epilogue_launch}"
        tail = f"M, P, split, {k.out}{''.join(', ' + p for p in params)}"
        values = [f"_v{j}" for j in range(sub)]
        # a row of the thread's sums per call (8 call sites, not 64: each is typed and
        # lowered on its own), each element through the epilogue's device function
        pre += self.epilogue_at(k, f"{name}_at", params)
        pre += ["", "", f"# a row of {name}'s sums: its elements {', '.join(str(offset(j)) for j in range(sub))} from column c",
                "@cuda.jit(device=True)", f"def {name}_row(r, c, {', '.join(values)}, {tail}):", "    if r < M:"]
        pre += [f"        {name}_at(r, c + {offset(j)}, _v{j}, {tail})" for j in range(sub)]
        for i in range(sub):
            lines.append(f"    {name}_row(row0 + ty * {vec} + {offset(i)}, col0 + tx * {vec}, "
                         f"{', '.join(f'acc{i}{j} * {scale}' for j in range(sub))}, {tail})")
        return pre + lines, [f"_bind_contract({name}, {k.a}, {k.b}, {k.out}, {k.trans_a}, {k.trans_b}, {scale}, N"
                             f"{launch_extra})"]

    def shared_kernel(self, k, name, shapes):
        """(source lines, launch lines) of kernel ``k`` as ``name``, printed once per module.

        The kernel is printed from its canonical form (:func:`canonical_kernel`: buffers
        ``_buf0, _buf1, ...`` in a fixed order, temporaries ``v0, v1, ...``), then its buffers
        are named back. Two kernels with the same canonical text -- two layers of one shape,
        the forward product that the ``forward``, ``gradients`` and ``step`` programs all
        make -- are one kernel: the second prints no source, only launches of the first on
        its own buffers (same order, same roles), so the module compiles it once. A product's
        epilogue kernel (which bakes in its extents) is shared on its own, so two products
        that differ only in their output's shape share the product kernel."""
        pre, epilogue = [], None
        if isinstance(k, Contract) and k.epilogue is not None:
            pre, (epilogue,) = self.shared_kernel(k.epilogue, f"{name}_epilogue", shapes)
        ck, names = canonical_kernel(k, prefix=CANONICAL)
        ck = _with_comments(ck, k)
        src, launch = self.kernel(ck, PLACEHOLDER, shapes, epilogue and EPILOGUE)
        key = "\n".join(line for line in src + launch if not line.lstrip().startswith("#"))
        first = self._printed.setdefault(key, name)

        def named(line):
            # each token is matched whole and starts with "_", which no buffer name does
            # (lower/passes.py): a graph name that contains one is never rewritten
            if line.lstrip().startswith("#"):       # comments name graph nodes: kept as printed
                return _PLACEHOLDER_RE.sub(name, line)
            line = _PLACEHOLDER_RE.sub(first, line)
            line = _CANONICAL_RE.sub(lambda m: names[int(m.group(1))], line)
            return line
        if epilogue:        # (the epilogue's launch, already named, goes in last)
            launch = [_EPILOGUE_RE.sub(lambda m: epilogue, named(line)) for line in launch]
        else:
            launch = [named(line) for line in launch]
        if first != name:
            return pre + ["", "", f"# {name}: the kernel {first} again, on {', '.join(names)}"], launch
        return pre + [named(line) for line in src], launch

    def epilogue_at(self, k, name, params):
        """The device function that puts one element of product ``k`` in place:
        ``name(r, c, value, M, P, split, out, *params)`` does nothing outside the M x P
        output, adds the value to ``out[r, c]`` atomically where blocks share the sum (split
        K: the epilogue's own kernel runs after), and otherwise runs the loop body of
        ``k.epilogue`` at row r, column c with the value in place of the product's load
        (without an epilogue: stores it)."""
        e = k.epilogue
        if e is None:
            r, c, body, what = "r", "c", [f"{k.out}[r, c] = _v"], "the store"
        else:
            value = sp.Symbol("_v", real=True)
            here = {acc: value for _, x in e.assigns for acc in x.atoms(sp.Indexed) if str(acc.base.label) == k.out}
            body = self.fused_body(replace(e, assigns=[(s, x.xreplace(here)) for s, x in e.assigns]))
            r, c, what = *map(str, e.indices), "the epilogue"
        lines = ["", "", f"# {what} of {name[:-len('_at')]} on one element in registers",
                 "@cuda.jit(device=True)",
                 f"def {name}({', '.join([r, c, '_v', 'M', 'P', 'split', k.out, *params])}):",
                 f"    if {r} < M and {c} < P:", "        if split > 1:",
                 f"            cuda.atomic.add({k.out}, ({r}, {c}), _v)", "        else:"]
        return lines + ["            " + line for line in body]

    def program(self, kprog, slots):
        shapes = {b.name: b.shape for b in kprog.buffers.values()}
        lines, launches = [], []
        for n, k in enumerate(kprog.kernels):
            src, launch = self.shared_kernel(k, f"{kprog.name}_k{n}", shapes)
            lines += src
            launches += launch
        host = ["", "", f"def {kprog.name}(b, N):",
                f'    """The launches of program {kprog.name!r} in order, bound to the buffers in b.',
                "",
                "    Bound once per batch size N; running the program is calling each in turn.",
                '    """']
        used = sorted({name for k in kprog.kernels for name in kernel_buffers(k)})
        host += [f"    {name} = b[{name!r}]" for name in used]
        host += ["    return ["] + ["        " + launch + "," for launch in launches] + ["    ]"]
        return lines + host


FILL = '''

# Matrix products run the tiled kernel above, or cuBLAS when the backend binds its
# launches with a cuBLAS handle (_GEMM: graphnn/runtime/cublas.py; matmul="cublas").
_GEMM = None
# a product with few output tiles splits its sum over blocks, SPLIT_K terms or more each
SPLIT_K = 1024


def _configure(kernel, *config):
    """``kernel[config]``, a launch that keeps its configuration. (numba's CUDA simulator
    configures the kernel object itself and returns it: a launch bound earlier would run
    with the configuration bound last, so there it is configured again at each launch.)"""
    launch = kernel[config]
    if launch is kernel:
        return lambda *args: kernel[config](*args)
    return launch


def _bind(kernel, blocks, threads, *args):
    """A launch with its configuration, stream and arguments fixed."""
    launch = _configure(kernel, blocks, threads, _STREAM)
    return lambda: launch(*args)


def _bind_contract(kernel, a, b, out, trans_a, trans_b, scale, N, extra=(), epilogue=None):
    """A matrix product's launch. With an epilogue, the tiled kernel applies it to each
    element it makes (``extra``: the epilogue's buffers); a product summed over blocks
    (split K) or made by cuBLAS stores ``out``, and the epilogue's own kernel runs after."""
    if _GEMM is not None:
        gemm = _GEMM(a, b, out, trans_a, trans_b, scale)
        if epilogue is None:
            return gemm

        def then():
            gemm()
            epilogue()
        return then
    tiles = ((out.shape[1] + SGEMM_TILE - 1) // SGEMM_TILE, (out.shape[0] + SGEMM_TILE - 1) // SGEMM_TILE)
    K = a.shape[0] if trans_a else a.shape[1]
    # few output tiles and a long K (weight gradients summed over the batch): split K
    # over blocks so the GPU fills up; each block adds its partial sums atomically
    split = max(1, min(K // SPLIT_K, 256 // (tiles[0] * tiles[1]))) if tiles[0] * tiles[1] < 64 else 1
    chunk = (K + split - 1) // split
    chunk = (chunk + SGEMM_BK - 1) // SGEMM_BK * SGEMM_BK
    split = (K + chunk - 1) // chunk if K else 1
    launch = _configure(kernel, (tiles[0], tiles[1], split), (16, 16), _STREAM)
    operands = (a, out) if a is b else (a, b, out)     # a @ a.T: the kernel takes a once
    if split == 1:
        return lambda: launch(*operands, *extra, N, chunk, split)
    fill = _configure(_fill, _blocks(out.size), THREADS, _STREAM)
    flat = out.reshape(out.size)

    def run():
        fill(flat, _F(0.0))
        launch(*operands, *extra, N, chunk, split)
        if epilogue is not None:
            epilogue()
    return run

def _bind_rows(kernel, finish, part, *args, outs):
    """The launches of a row pass: the rows (with the partial sums), then the sums in order."""
    rows = _configure(kernel, part.shape[0], THREADS, _STREAM)
    sums = _configure(finish, 1, max(32, part.shape[1]), _STREAM)
    n = args[-1]

    def run():
        rows(*args, part)
        sums(*outs, n, part)
    return run

@cuda.jit(cache=True)
def _fill(a, value):
    t = cuda.grid(1)
    if t < a.size:
        a[t] = value
'''


def kernel_signatures(kprog, source):
    """``[(name, argument types, kind)]``: each kernel that program ``kprog`` launches, once,
    under the name the printed module ``source`` defines it by (a repeated loop nest is the
    kernel printed first: :meth:`CudaModulePrinter.shared_kernel`), with its numba argument
    types, as the host function passes them. ``kind``: ``"product"``, ``"epilogue"``,
    ``"rows"``, ``"finish"`` (a row pass's sums) or ``"loop"``. For compiling the kernels
    without a GPU (``cuda.compile_ptx``)."""
    from numba import types
    again = dict(re.findall(r"^# (\w+): the kernel (\w+) again", source, flags=re.MULTILINE))
    scalar = getattr(types, kprog.dtype)

    def array(name, flat=()):
        return types.Array(scalar, 1 if name in flat else max(len(kprog.buffers[name].shape), 1), "C")
    out, seen = [], set()

    def add(name, args, kind):
        base = name.removesuffix("_finish")
        name = again.get(base, base) + name[len(base):]
        if name not in seen:
            seen.add(name)
            out.append((name, args, kind))
    for n, k in enumerate(kprog.kernels):
        name = f"{kprog.name}_k{n}"
        flat = set(k.flat or ()) if isinstance(k, Rows) else set()
        args = [array(b, flat) for b in kernel_buffers(k)] + [types.int64]
        if isinstance(k, Contract):
            add(name, args + [types.int64, types.int64], "product")
            if k.epilogue is not None:
                add(f"{name}_epilogue", [array(b) for b in kernel_buffers(k.epilogue)] + [types.int64], "epilogue")
        elif isinstance(k, Rows) and k.sums:
            part = types.Array(scalar, 2, "C")
            outs = list(dict.fromkeys(str(t.base.label) for t, _ in k.sums))
            add(name, args + [part], "rows")
            add(f"{name}_finish", [array(b) for b in outs] + [types.int64, part], "finish")
        else:
            add(name, args, "rows" if isinstance(k, Rows) else "loop")
    return out


def print_model(kprogs, dtype, title, param_order, state_order, hyper_order, sgemm=None):
    mp = CudaModulePrinter(dtype, sgemm)
    lines = mp.header(title) + FILL.split("\n")
    meta = {}
    for kprog in kprogs:
        run_passes(kprog, mp.passes)
        slots, work = make_layout(kprog, param_order, state_order, hyper_order)
        feed_nodes = [b.node.name for b in kprog.buffers.values() if b.role == "feed"]
        for b in kprog.buffers.values():
            if b.role == "const":
                values = np.asarray(b.value, dtype=np.float64).reshape(-1).tolist() or [0.0]
                shape = b.value.shape if np.ndim(b.value) else (1,)     # as the kernels index it
                lines.append(f"_CONST_{b.name} = np.array({values!r}, dtype=_F).reshape({shape!r})")
        lines += mp.program(kprog, slots)
        meta[kprog.name] = (feed_nodes, slots, work)
    return "\n".join(lines) + "\n", meta
