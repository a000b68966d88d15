"""Target passes: loop-arrangement choices made on the IR, before any printer sees it.

A printer prints what the IR says; where a target prefers another loop order
for the same kernel, a pass here rewrites the kernel's fields and says why:

* :func:`flatten_loops` (CPU) -- a fused loop whose every load and store uses
  exactly the loop indices walks its buffers as one flat vectorisable loop;
* :func:`order_batch_sums` (CPU) -- a sum over the batch rows into an output
  without a batch axis (bias gradients) runs rows-outer: each row is read
  contiguously and the small output stays in cache (serial, so race-free);
* :func:`split_batch_reductions` (CUDA) -- the same sums split their rows over
  threads, each adding its partial sum atomically: one thread per output
  element would leave the GPU idle.
* :func:`fuse_epilogues` (CUDA) -- the pointwise loop after a matrix product
  (bias and activation, an optimizer's update of a weight from its gradient)
  becomes the product's epilogue: the tiled kernel applies it to each output
  element in registers, and the product is never stored.
* :func:`fuse_rows` (CPU and CUDA) -- in a small net, consecutive fused loops over
  batch rows and sums over the rows become one pass over the batch
  (:class:`~.ir.Rows`): each row's values stay in registers, the weight
  gradients and the loss are summed as they go, and a row value is stored only
  where a kernel outside the pass reads it.

``CPU_PASSES`` and ``CUDA_PASSES`` list them per target; :func:`run_passes`
applies a list to a :class:`~.ir.KernelProgram` in place.
"""
import itertools
import math

import sympy as sp

from .ir import Contract, Fused, NanMax, Reduce, ReduceOrder, Rows

# A fused loop joins a row pass when one row has at most this many elements, a batch sum
# when its output has at most this many; a pass holds at most ROW_STATEMENTS statements.
# They are written out, and Numba's compile time grows faster than a function's size:
# with 16-wide rows and 800 statements a chain of 20 dense+tanh layers 8 wide made
# passes of ~780 statements and took 224 s to compile (2.7 s with these bounds).
ROW_WIDTH = 4
ROW_SUM_OUT = 64
ROW_STATEMENTS = 96
ROW = sp.Symbol("i0", integer=True)


class RowBounds:
    """How much a target's row pass may hold: rows of ``width`` elements, sums over the rows
    into ``sum_out`` elements, ``statements`` in all; with ``row_sums``, also sums and maxima within a row
    over at most ``width`` elements (a softmax's normaliser, a per-row loss)."""

    def __init__(self, width=ROW_WIDTH, sum_out=ROW_SUM_OUT, statements=ROW_STATEMENTS, row_sums=False):
        self.width, self.sum_out, self.statements, self.row_sums = width, sum_out, statements, row_sums


CPU_ROWS = RowBounds()
# CUDA: one thread per row holds a 10-class softmax-CE's forward and backward (Numba's compile
# time grows with a pass's statements on both targets; the GPU pass compiles once per shape)
CUDA_ROWS = RowBounds(width=16, statements=320, row_sums=True)


def flatten_loops(kprog):
    """Mark fused loops that can walk their buffers as flat arrays (``Fused.flat``)."""
    shapes = {b.name: b.shape for b in kprog.buffers.values()}
    for k in kprog.kernels:
        if isinstance(k, Fused):
            k.flat = flat_buffers(k, shapes)


def flat_buffers(kernel, shapes):
    """Buffers a fused kernel may walk as flat arrays, or None when it cannot.

    A kernel is flattened when it has two or more axes and every load and store
    of a full-rank buffer uses exactly the loop indices (no broadcast)."""
    if len(kernel.indices) < 2:
        return None
    names = set()
    for _, e in kernel.assigns:
        for acc in e.atoms(sp.Indexed):
            name = str(acc.base.label)
            if tuple(acc.indices) == tuple(kernel.indices) and shapes[name] == kernel.shape:
                names.add(name)
            elif len(acc.indices) == 1 and acc.indices[0] == 0 and shapes[name] == ():
                continue
            else:
                return None
    for buf, _ in kernel.stores:
        if shapes[buf] != kernel.shape:
            return None
        names.add(buf)
    return tuple(sorted(names))


def _batch_sum(k):
    """True for a single sum over the batch rows into an output without a batch axis."""
    if not isinstance(k, Reduce) or len(k.terms) != 1 or None in k.out_shape:
        return False
    term = k.terms[0]
    return term.combiner == "sum" and term.guard is sp.true and any(e is None for _, e in term.reduce)


def order_batch_sums(kprog):
    """Rows outer for ``sum_r f(x[r, ...])`` into a batch-free output, ``r`` leading every access."""
    for k in kprog.kernels:
        if not _batch_sum(k) or not k.out_indices or len(k.terms[0].reduce) != 1:
            continue
        (r, _), = k.terms[0].reduce
        if all(acc.indices[0] == r for acc in k.terms[0].expr.atoms(sp.Indexed) if r in acc.indices):
            k.order = ReduceOrder.ROWS_OUTER


def split_batch_reductions(kprog):
    """Split batch sums into a batch-free output over threads, atomically. (Not maxima: CUDA's
    atomic max drops NaN, which a maximum keeps on every target; a maximum over the batch axis
    runs one thread per output over all rows.)"""
    for k in kprog.kernels:
        if (isinstance(k, Reduce) and len(k.terms) == 1 and k.terms[0].combiner == "sum"
                and None not in k.out_shape
                and any(e is None for _, e in k.terms[0].reduce)):
            k.order = ReduceOrder.SPLIT_ATOMIC


# An epilogue is written out once per output element a thread of the tiled product holds
# (64 with 8x8), so it is kept short.
EPILOGUE_STATEMENTS = 16


def fuse_epilogues(kprog):
    """Give each matrix product the pointwise loop that is the only reader of its output
    (``Contract.epilogue``), when that loop reads the product at its own element only and may
    move up to the product (no kernel between them touches what it reads or writes).

    The loop stays a kernel of its own in what a target prints: a product that cannot apply it
    in registers (a split-K sum, a BLAS call) stores ``out`` and launches it after."""
    kept = set(kprog.outputs.values()) | set(kprog.updates.values()) | set(kprog.updates)
    kernels = list(kprog.kernels)
    io = [_kernel_io(k) for k in kernels]
    moved = set()
    for n, k in enumerate(kernels):
        if not isinstance(k, Contract) or k.accumulate or k.epilogue is not None or k.out in kept:
            continue
        readers = [j for j in range(len(kernels)) if j != n and k.out in io[j][0] | io[j][1]]
        if len(readers) != 1 or readers[0] < n or readers[0] in moved:
            continue
        j = readers[0]
        e, (e_reads, e_writes) = kernels[j], io[j]
        if not _epilogue_of(k, e, e_writes) or tuple(kprog.buffers[k.out].shape) != tuple(e.shape):
            continue
        if any(io[m][1] & (e_reads | e_writes) or io[m][0] & e_writes for m in range(n + 1, j)):
            continue
        k.epilogue = e
        moved.add(j)
    kprog.kernels = [k for j, k in enumerate(kernels) if j not in moved]


def _epilogue_of(k, e, e_writes):
    """True when the fused loop ``e`` can run on each element of product ``k`` as it is made."""
    if not isinstance(e, Fused) or e.flat is not None or len(e.indices) != 2:
        return False
    if len(e.assigns) > EPILOGUE_STATEMENTS or e_writes & {k.a, k.b, k.out}:
        return False
    # the loop runs over the product's elements, each reading its own (a bias broadcast
    # along a row and a parameter of the product's shape may be read at any index)
    accesses = [acc for _, e_ in e.assigns for acc in e_.atoms(sp.Indexed) if str(acc.base.label) == k.out]
    return bool(accesses) and all(tuple(acc.indices) == tuple(e.indices) for acc in accesses)


class _Part:
    """One kernel written out for a single row ``ROW``: what a row pass is made of."""

    def __init__(self, kernel, assigns, stores, sums, reads, comments):
        self.kernel, self.assigns, self.stores, self.sums = kernel, assigns, stores, sums
        self.reads = reads
        self.row_writes = {str(t.base.label) for t, _ in stores}
        self.sum_writes = {str(t.base.label) for t, _ in sums}
        self.writes = self.row_writes | self.sum_writes
        self.comments = comments

    @property
    def size(self):
        return len(self.assigns) + len(self.stores) + len(self.sums)


def _loads(expr):
    return {str(a.base.label) for a in expr.atoms(sp.Indexed)}


def _row_only(exprs, row):
    """True when ``row`` appears only as the leading index of accesses, alone."""
    for e in exprs:
        for acc in e.atoms(sp.Indexed):
            if any(row in sp.sympify(i).free_symbols for i in acc.indices[1:]):
                return False
            if acc.indices and row in sp.sympify(acc.indices[0]).free_symbols and acc.indices[0] != row:
                return False
        stripped = e.xreplace({a: sp.Integer(0) for a in e.atoms(sp.Indexed)})
        if row in stripped.free_symbols:
            return False
    return True


def _fused_part(k, n, shapes, width=ROW_WIDTH):
    if not k.indices or k.shape[0] is not None or None in k.shape[1:]:
        return None
    if math.prod(k.shape[1:]) > width or any(shapes[b] != k.shape for b, _ in k.stores):
        return None
    if not _row_only([e for _, e in k.assigns], k.indices[0]):
        return None
    assigns, stores, reads = [], [], set()
    for combo in itertools.product(*(range(d) for d in k.shape[1:])):
        subs = {k.indices[0]: ROW, **{i: sp.Integer(c) for i, c in zip(k.indices[1:], combo)}}
        tag = "_".join(map(str, (n, *combo)))
        local = {sym: sp.Symbol(f"{sym.name}_p{tag}", real=True) for sym, _ in k.assigns}
        for sym, e in k.assigns:
            e = e.xreplace(subs).xreplace(local)
            reads |= _loads(e)
            assigns.append((local[sym], e))
        for buf, value in k.stores:
            value = value.xreplace(subs).xreplace(local)
            if not isinstance(value, sp.Symbol):
                sym = sp.Symbol(f"_s{len(stores)}_p{tag}", real=True)
                assigns.append((sym, value))
                value = sym
            stores.append((sp.IndexedBase(buf)[(ROW, *map(sp.Integer, combo))], value))
    return _Part(k, assigns, stores, [], reads, list(k.comments))


def _reduce_part(k, sum_out=ROW_SUM_OUT):
    if None in k.out_shape or math.prod(k.out_shape) > sum_out:
        return None
    sums, reads = [], set()
    for term in k.terms:
        batch = [r for r, e in term.reduce if e is None]
        rest = [(r, e) for r, e in term.reduce if e is not None]
        if term.combiner != "sum" or term.guard is not sp.true or len(batch) != 1:
            return None
        if not _row_only([term.expr], batch[0]):
            return None
        for out in itertools.product(*(range(d) for d in k.out_shape)):
            target = sp.IndexedBase(k.out)[tuple(map(sp.Integer, out)) if out else (sp.Integer(0),)]
            subs = {batch[0]: ROW, **{i: sp.Integer(c) for i, c in zip(k.out_indices, out)}}
            for values in itertools.product(*(range(e) for _, e in rest)):
                inner = {r: sp.Integer(v) for (r, _), v in zip(rest, values)}
                e = term.expr.xreplace({**subs, **inner})
                reads |= _loads(e)
                sums.append((target, e))
    return _Part(k, [], [], sums, reads, [k.comment])


def _row_sum_part(k, n, shapes, width):
    """A sum or a maximum within each row (``out[n, ...] = sum_i f(x[n, i])``, batch axis kept) written out
    for row ``ROW``: one assignment per output element, stored like a fused loop's value."""
    if not k.out_shape or k.out_shape[0] is not None or None in k.out_shape[1:]:
        return None
    if math.prod(k.out_shape[1:]) > width or tuple(shapes[k.out]) != tuple(k.out_shape):
        return None
    row = k.out_indices[0]
    if any(t.combiner == "max" for t in k.terms) and (len(k.terms) != 1 or not k.terms[0].reduce):
        return None
    for term in k.terms:
        if (term.combiner not in ("sum", "max") or term.guard is not sp.true
                or any(e is None for _, e in term.reduce)
                or math.prod(e for _, e in term.reduce) > width or not _row_only([term.expr], row)):
            return None
    assigns, stores, reads = [], [], set()
    for combo in itertools.product(*(range(d) for d in k.out_shape[1:])):
        subs = {row: ROW, **{i: sp.Integer(c) for i, c in zip(k.out_indices[1:], combo)}}
        value = sp.Integer(0)
        for term in k.terms:
            values = [term.expr.xreplace({**subs, **{r: sp.Integer(v) for (r, _), v in zip(term.reduce, inner)}})
                      for inner in itertools.product(*(range(e) for _, e in term.reduce))]
            if term.combiner == "max":
                if not values:          # an empty axis: the reduction kernel's -inf
                    return None
                # in index order, NaN kept: the reduction kernel's own loop, written out
                value = values[0]
                for v in values[1:]:
                    value = NanMax(value, v)
            else:
                value += sp.Add(*values)
        reads |= _loads(value)
        sym = sp.Symbol("_".join(map(str, ("_rs", n, *combo))), real=True)
        assigns.append((sym, value))
        stores.append((sp.IndexedBase(k.out)[(ROW, *map(sp.Integer, combo))], sym))
    return _Part(k, assigns, stores, [], reads, [k.comment])


def _kernel_io(k):
    """(buffers read, buffers written) of any kernel."""
    if isinstance(k, Contract):
        if k.epilogue is not None:
            reads, writes = _kernel_io(k.epilogue)
            return {k.a, k.b} | (reads - {k.out}), {k.out} | writes
        return {k.a, k.b}, {k.out}
    if isinstance(k, Fused):
        return set().union(*(_loads(e) for _, e in k.assigns)), {b for b, _ in k.stores}
    if isinstance(k, Rows):
        reads = set().union(set(), *(_loads(e) for _, e in k.assigns), *(_loads(e) for _, e in k.sums))
        return reads, {str(t.base.label) for t, _ in k.stores} | {str(t.base.label) for t, _ in k.sums}
    return set().union(*(_loads(t.expr) for t in k.terms)), {k.out}


def _group(parts_of, kernels, statements=ROW_STATEMENTS, batch=frozenset()):
    """Kernels with one row pass made of the first runs of parts that may move together.

    ``batch``: the buffers with a batch axis."""
    # a pass starts at a row loop and takes the kernels that read its row values: a chain
    # of small layers and the sums over its rows, the same pass in every graph that has it.
    # A row loop that reads no batch buffer at all (the backward pass's first delta, the
    # loss's seed spread over the rows) joins too: the loss's forward and backward are then
    # one pass, its row values never stored
    start = next((j for j, k in enumerate(kernels) if isinstance(k, Fused) and parts_of(k) is not None),
                 None)
    if start is None:
        return list(kernels), None
    first = parts_of(kernels[start])
    members, deferred = [first], []
    size = first.size
    d_reads, d_writes = set(), set()
    g_reads, g_writes, g_sums, g_rows = set(first.reads), set(first.writes), set(first.sum_writes), \
        set(first.row_writes)
    for k in kernels[start + 1:]:
        reads, writes = _kernel_io(k)
        # only a kernel that reads this pass's rows is written out for it (that costs time)
        part = parts_of(k) if reads & g_rows or not reads & batch else None
        joins = (part is not None and size + part.size <= statements and _at_row(part, g_rows)
                 and not reads & (d_writes | g_sums) and not writes & (d_reads | d_writes | g_reads | g_writes))
        if joins:
            members.append(part)
            size += part.size
            g_reads |= part.reads
            g_writes |= part.writes
            g_sums |= part.sum_writes
            g_rows |= part.row_writes
        else:
            deferred.append(k)
            d_reads |= reads
            d_writes |= writes
    return kernels[:start], (members, deferred)


def _at_row(part, buffers):
    """True when ``part`` reads the row buffers ``buffers`` at the current row only."""
    exprs = [e for _, e in part.assigns] + [e for _, e in part.sums]
    return all(acc.indices[0] == ROW for e in exprs for acc in e.atoms(sp.Indexed)
               if str(acc.base.label) in buffers)


def fuse_rows(kprog, bounds=CPU_ROWS):
    """One pass over the batch rows for runs of small row loops and batch sums (:class:`~.ir.Rows`)."""
    shapes = {b.name: b.shape for b in kprog.buffers.values()}
    batch = {name for name, shape in shapes.items() if shape and shape[0] is None}
    made = {}

    def parts_of(k):
        if id(k) not in made:
            if isinstance(k, Fused) and k.flat is None:
                made[id(k)] = _fused_part(k, len(made), shapes, bounds.width)
            elif isinstance(k, Reduce):
                made[id(k)] = _reduce_part(k, bounds.sum_out)
                if made[id(k)] is None and bounds.row_sums:
                    made[id(k)] = _row_sum_part(k, len(made), shapes, bounds.width)
            else:
                made[id(k)] = None
        return made[id(k)]

    out, rest, passes = [], list(kprog.kernels), []
    while rest:
        before, found = _group(parts_of, rest, bounds.statements, batch)
        out += before
        if found is None:
            break
        members, rest = found
        if len(members) == 1:
            out.append(members[0].kernel)
        else:
            passes.append((len(out), members))
            out.append(None)
    needed = set(kprog.outputs.values()) | set(kprog.updates.values()) | set(kprog.updates)
    for k in out:
        if k is not None:
            needed |= _kernel_io(k)[0]
    for position, members in passes:
        # what the other row passes read is needed too; this pass forwards its own row values
        others = set().union(set(), *(m.reads for q, group in passes if q != position for m in group))
        out[position] = _flatten_rows(_merge(members, needed | others), shapes)
    kprog.kernels = out


def _flatten_rows(k, shapes):
    """Batch buffers as flat arrays, ``a[i0, c]`` -> ``a[W*i0 + c]``.

    With a 2-D array the row stride is a run-time value and LLVM keeps the loop scalar
    (measured: the 1-2-1 step at batch 4096 took 11.9 us; the hand-written kernel on 1-D
    arrays 2.0 us); a constant stride lets it vectorise."""
    def linear(acc):
        shape = shapes[str(acc.base.label)]
        index = sp.Integer(0)
        for i, d in zip(acc.indices, shape):
            index = index * (1 if d is None else d) + i
        return sp.IndexedBase(acc.base.label)[index]

    flat = set()

    def rewrite(e):
        subs = {}
        for acc in e.atoms(sp.Indexed):
            shape = shapes[str(acc.base.label)]
            if shape and shape[0] is None and len(shape) == len(acc.indices):
                subs[acc] = linear(acc)
                flat.add(str(acc.base.label))
        return e.xreplace(subs)

    k.assigns = [(s, rewrite(e)) for s, e in k.assigns]
    k.stores = [(rewrite(t), v) for t, v in k.stores]
    k.sums = [(t, rewrite(e)) for t, e in k.sums]
    k.flat = tuple(sorted(flat))
    return k


def _merge(members, needed):
    """The :class:`Rows` kernel of ``members``: row values forwarded as scalars, stored only if needed."""
    values = {}                  # Indexed row element -> the symbol holding it
    assigns, stores, sums, comments = [], [], [], []
    for part in members:
        forward = values
        for sym, e in part.assigns:
            assigns.append((sym, e.xreplace(forward)))
        for target, e in part.sums:
            sums.append((target, e.xreplace(forward)))
        for target, sym in part.stores:
            values[target] = sym
            if str(target.base.label) in needed:
                stores.append((target, sym))
        comments += part.comments
    return Rows(assigns, stores, sums, ROW, comments)


CPU_PASSES = [order_batch_sums, fuse_rows, flatten_loops]
def fuse_rows_cuda(kprog):
    """:func:`fuse_rows` with the GPU's bounds (:data:`CUDA_ROWS`): wider rows, sums within a row."""
    fuse_rows(kprog, CUDA_ROWS)


CUDA_PASSES = [fuse_rows_cuda, fuse_epilogues, split_batch_reductions]


def run_passes(kprog, passes):
    for run in passes:
        run(kprog)
    return kprog
