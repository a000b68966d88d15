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

``CPU_PASSES`` and ``CUDA_PASSES`` list them per target; :func:`run_passes`
applies a list to a :class:`~.ir.KernelProgram` in place.
"""
import sympy as sp

from .ir import Fused, Reduce, ReduceOrder


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
    """Split batch reductions (sum or max) into a batch-free output over threads, atomically."""
    for k in kprog.kernels:
        if (isinstance(k, Reduce) and len(k.terms) == 1 and None not in k.out_shape
                and any(e is None for _, e in k.terms[0].reduce)):
            k.order = ReduceOrder.SPLIT_ATOMIC


CPU_PASSES = [flatten_loops, order_batch_sums]
CUDA_PASSES = [split_batch_reductions]


def run_passes(kprog, passes):
    for run in passes:
        run(kprog)
    return kprog
