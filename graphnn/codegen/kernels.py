"""Printing kernel-IR loops as Python loop nests (shared by the CPU and CUDA printers).

The loop printer knows the IR, not the ops: a fused body is hoisted loads,
scalar assignments and stores; a reduction is an accumulator per output
element. Targets pass ``loop(axis_index, extent, parallel)`` to choose
``prange`` or a thread index.
"""
import sympy as sp

from .scalar import ScalarPrinter, index_code


def extent_code(e):
    return "N" if e is None else str(int(e))


def comment_text(text):
    """``text`` made safe for one comment line: control characters (a newline would end
    the comment and start code) are written as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] if len(repr(c)) > 3 else "?"
                   for c in str(text))


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


def fused_body(kernel, printer: ScalarPrinter, flat_index=None):
    """Statements of one iteration of a fused kernel."""
    loads, assigns = hoist_loads(kernel.assigns, kernel.stores)
    lines = []
    for acc, sym in loads.items():
        lines.append(f"{sym} = {_access(acc, flat_index, kernel)}")
    for sym, e in assigns:
        lines.append(f"{sym} = {printer.doprint(e)}")
    for buf, sym in kernel.stores:
        target = _store_target(buf, kernel, flat_index)
        lines.append(f"{target} = {printer.doprint(sym)}")
    return lines


def _access(acc, flat_index, kernel):
    if flat_index is not None and tuple(acc.indices) == tuple(kernel.indices):
        return f"{acc.base.label}_flat[{flat_index}]"
    return f"{acc.base.label}[{', '.join(index_code(i) for i in acc.indices)}]"


def _store_target(buf, kernel, flat_index):
    if not kernel.indices:
        return f"{buf}[0]"
    if flat_index is not None:
        return f"{buf}_flat[{flat_index}]"
    return f"{buf}[{', '.join(str(i) for i in kernel.indices)}]"


def flat_buffers(kernel, shapes):
    """Buffers a fused kernel may walk as flat arrays, or None when it cannot.

    A kernel is flattened when every load and store of a full-rank buffer uses
    exactly the loop indices (no broadcast): one long vectorisable loop.
    """
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
    return sorted(names)


def reduce_lines(kernel, printer, loop, indent):
    """A reduction: one accumulator per output element, inner loops over the reduced indices."""
    lines = []
    depth = indent
    for axis, (i, e) in enumerate(zip(kernel.out_indices, kernel.out_shape)):
        lines.append("    " * depth + loop(i, e, axis == 0))
        depth += 1
    inner = "    " * depth
    total = []
    for t_no, term in enumerate(kernel.terms):
        acc = f"_acc{t_no}"
        init = "_F(-np.inf)" if term.combiner == "max" else "_F(0.0)"
        lines.append(f"{inner}{acc} = {init}")
        d = depth
        for r, e in term.reduce:
            lines.append("    " * d + f"for {r} in range({extent_code(e)}):")
            d += 1
        if term.guard is not sp.true:
            lines.append("    " * d + f"if {index_guard(term.guard)}:")
            d += 1
        value = printer.doprint(term.expr)
        if term.combiner == "max":
            lines.append("    " * d + f"{acc} = max({acc}, {value})")
        else:
            lines.append("    " * d + f"{acc} += {value}")
        total.append(acc)
    target = (f"{kernel.out}[{', '.join(str(i) for i in kernel.out_indices)}]"
              if kernel.out_indices else f"{kernel.out}[0]")
    lines.append(f"{inner}{target} = {' + '.join(total)}")
    return lines


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
