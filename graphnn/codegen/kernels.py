"""Printing kernel-IR loops as Python loop nests (shared by the CPU and CUDA printers).

The printer base knows the IR, not the ops: a fused body is hoisted loads,
scalar assignments and stores; a reduction is an accumulator per output
element. Targets subclass :class:`KernelPrinter` and add loop headers
(``prange`` or a thread index), matrix products and decorators.
"""
import sympy as sp

from .scalar import ScalarPrinter, index_code


def extent_code(e):
    return "N" if e is None else str(int(e))


def comment_text(text):
    """``text`` made safe for one comment line (see :func:`graphnn.graph.text.one_line`)."""
    from ..graph.text import one_line
    return one_line(text)


def hoist_loads(assigns, stores):
    """Replace every load by a temporary read once at the top of the body.

    Reading all inputs first makes in-place updates safe (p <- p - lr*g reads p
    before writing it) and lets the compiler keep values in registers.
    """
    loads = {}
    for _, e in assigns:
        for acc in sorted(e.atoms(sp.Indexed), key=sp.default_sort_key):
            if acc not in loads:
                loads[acc] = sp.Symbol(f"_l{len(loads)}", real=True)
    new_assigns = [(s, e.xreplace(loads)) for s, e in assigns]
    return loads, new_assigns


class KernelPrinter:
    """What every target prints the same way: fused bodies and reduction accumulators.

    A target subclass sets ``math_names`` (its fast or device math functions) and
    prints loop headers, thread decoding, matrix products and decorators around
    what this base prints; no op is named in either."""

    def __init__(self, math_names=None):
        self.printer = ScalarPrinter(math_names=math_names or {})

    def fused_body(self, kernel, flat_index=None):
        """Statements of one iteration of a fused kernel: loads, assignments, stores."""
        loads, assigns = hoist_loads(kernel.assigns, kernel.stores)
        lines = [f"{sym} = {_access(acc, flat_index, kernel)}" for acc, sym in loads.items()]
        lines += [f"{sym} = {self.printer.doprint(e)}" for sym, e in assigns]
        for buf, sym in kernel.stores:
            lines.append(f"{_store_target(buf, kernel, flat_index)} = {self.printer.doprint(sym)}")
        return lines

    def accumulate(self, kernel, ranges=None):
        """One accumulator per term of a reduction (``_acc0`` ...), each with its loops.

        ``ranges``: {reduce index: range text} to restrict an index (a thread's chunk)."""
        out = []
        for n, term in enumerate(kernel.terms):
            init = "_F(-np.inf)" if term.combiner == "max" else "_F(0.0)"
            out.append(f"_acc{n} = {init}")
            depth = 0
            for r, e in term.reduce:
                rng = (ranges or {}).get(r, f"range({extent_code(e)})")
                out.append("    " * depth + f"for {r} in {rng}:")
                depth += 1
            if term.guard is not sp.true:
                out.append("    " * depth + f"if {index_guard(term.guard)}:")
                depth += 1
            value = self.printer.doprint(term.expr)
            if term.combiner == "max":     # NaN, which fails every comparison, is kept (as np.max)
                out.append("    " * depth + f"_v{n} = {value}")
                out.append("    " * depth + f"if _v{n} > _acc{n} or _v{n} != _v{n}:")
                out.append("    " * (depth + 1) + f"_acc{n} = _v{n}")
            else:
                out.append("    " * depth + f"_acc{n} += {value}")
        return out

    def row_pass(self, kernel):
        """What every target prints of a row pass (:class:`~graphnn.lower.ir.Rows`):
        ``(loads, body, targets)``. ``loads`` read the values that do not change with the row
        (parameters) into ``_l<n>``; ``body`` is one row's statements, each sum added into
        its accumulator ``_acc<n>``; ``targets`` are the sums' outputs, accumulator n for
        ``targets[n]``. A target prints the loop over the rows and where the sums go."""
        fixed = {}
        for e in [e for _, e in kernel.assigns] + [e for _, e in kernel.sums]:
            for acc in sorted(e.atoms(sp.Indexed), key=sp.default_sort_key):
                if kernel.row not in acc.free_symbols and acc not in fixed:
                    fixed[acc] = sp.Symbol(f"_l{len(fixed)}", real=True)
        targets = list(dict.fromkeys(t for t, _ in kernel.sums))
        acc_of = {t: f"_acc{n}" for n, t in enumerate(targets)}
        loads = [f"{sym} = {self.printer.doprint(acc)}" for acc, sym in fixed.items()]
        body = [f"{sym} = {self.printer.doprint(e.xreplace(fixed))}" for sym, e in kernel.assigns]
        body += [f"{self.printer.doprint(t)} = {self.printer.doprint(v)}" for t, v in kernel.stores]
        body += [f"{acc_of[t]} += {self.printer.doprint(e.xreplace(fixed))}" for t, e in kernel.sums]
        return loads, body, targets

    @staticmethod
    def reduce_store(kernel):
        """The statement writing a reduction's output element: the sum of its accumulators."""
        target = (f"{kernel.out}[{', '.join(str(i) for i in kernel.out_indices)}]"
                  if kernel.out_indices else f"{kernel.out}[0]")
        return f"{target} = {' + '.join(f'_acc{n}' for n in range(len(kernel.terms)))}"


def _access(acc, flat_index, kernel):
    if flat_index is not None and tuple(acc.indices) == tuple(kernel.indices):
        return f"{acc.base.label}[{flat_index}]"   # the buffer is passed flat
    return f"{acc.base.label}[{', '.join(index_code(i) for i in acc.indices)}]"


def _store_target(buf, kernel, flat_index):
    if not kernel.indices:
        return f"{buf}[0]"
    if flat_index is not None:
        return f"{buf}[{flat_index}]"
    return f"{buf}[{', '.join(str(i) for i in kernel.indices)}]"


def index_guard(guard):
    """A guard over integer loop indices, printed with integer arithmetic."""
    if isinstance(guard, sp.And):
        return " and ".join(f"({index_guard(a)})" for a in guard.args)
    if isinstance(guard, sp.Or):
        return " or ".join(f"({index_guard(a)})" for a in guard.args)
    if isinstance(guard, sp.Not):
        return f"not ({index_guard(guard.args[0])})"
    if isinstance(guard, sp.core.relational.Relational):
        return f"{index_code(guard.lhs)} {guard.rel_op} {index_code(guard.rhs)}"
    return index_code(guard)
