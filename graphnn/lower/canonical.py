"""Canonical kernels: the same loop nest gets the same text, whatever the graph calls it.

A kernel of the IR names buffers after graph nodes (``hidden0_tanh``) and
its scalar temporaries after nodes too (``v_hidden0_tanh``). Two layers of
one graph, two graphs, or two processes that need the same loop nest would
then print different text and compile it twice. :func:`canonical_kernel`
renames buffers to ``a0, a1, ...`` in order of first use and temporaries to
``v0, v1, ...`` in order of assignment, and drops the comments; what is left
depends only on the computation (its expressions, extents and dtype), so
its printed text is a content key for the compiled function.

Node names never reach a canonical kernel, so nothing a user names a node
can collide with a helper or a generated identifier inside it.
"""
from dataclasses import replace

import sympy as sp

from .ir import Contract, Fused, Rows


def _indexed_names(expr):
    """Buffer names in ``expr`` in order of a preorder traversal (stable for one structure)."""
    out = []
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Indexed):
            name = str(node.base.label)
            if name not in out:
                out.append(name)
    return out


def kernel_buffers(k):
    """Buffer names a kernel reads or writes, in order of first use."""
    if isinstance(k, Contract):
        return list(dict.fromkeys([k.a, k.b, k.out] + (kernel_buffers(k.epilogue) if k.epilogue else [])))
    names = []
    if isinstance(k, Rows):
        for _, e in k.assigns:
            names += _indexed_names(e)
        for t, e in k.stores + k.sums:
            names += _indexed_names(e) + [str(t.base.label)]
    elif isinstance(k, Fused):
        for _, e in k.assigns:
            names += _indexed_names(e)
        names += [b for b, _ in k.stores]
    else:
        for t in k.terms:
            names += _indexed_names(t.expr)
        names.append(k.out)
    return list(dict.fromkeys(names))


def _rename(k, mapping):
    bases = {sp.IndexedBase(old): sp.IndexedBase(new) for old, new in mapping.items()}
    if isinstance(k, Contract):
        epilogue = None if k.epilogue is None else _rename(k.epilogue, mapping)
        return replace(k, a=mapping[k.a], b=mapping[k.b], out=mapping[k.out], comment="", epilogue=epilogue)
    if isinstance(k, Rows):
        return replace(k, assigns=[(s, e.xreplace(bases)) for s, e in k.assigns],
                       stores=[(t.xreplace(bases), v) for t, v in k.stores],
                       sums=[(t.xreplace(bases), e.xreplace(bases)) for t, e in k.sums], comments=[],
                       flat=tuple(sorted(mapping[name] for name in k.flat)))
    if isinstance(k, Fused):
        flat = None if k.flat is None else tuple(sorted(mapping[name] for name in k.flat))
        return replace(k, assigns=[(s, e.xreplace(bases)) for s, e in k.assigns],
                       stores=[(mapping[b], v) for b, v in k.stores], comments=[], flat=flat)
    terms = [replace(t, expr=t.expr.xreplace(bases)) for t in k.terms]
    return replace(k, out=mapping[k.out], terms=terms, comment="")


def _rename_locals(k):
    if isinstance(k, Contract) and k.epilogue is not None:     # (CUDA) the product's epilogue loop
        return replace(k, epilogue=_rename_locals(k.epilogue))
    if not isinstance(k, (Fused, Rows)):
        return k
    local = {s: sp.Symbol(f"v{n}", real=True) for n, (s, _) in enumerate(k.assigns)}
    if isinstance(k, Rows):
        return replace(k, assigns=[(local[s], e.xreplace(local)) for s, e in k.assigns],
                       stores=[(t, v.xreplace(local)) for t, v in k.stores],
                       sums=[(t, e.xreplace(local)) for t, e in k.sums])
    return replace(k, assigns=[(local[s], e.xreplace(local)) for s, e in k.assigns],
                   stores=[(b, v.xreplace(local)) for b, v in k.stores])


def canonical_kernel(k, prefix="a"):
    """(kernel with canonical names, the original buffer names in argument order).

    Buffers are named ``<prefix>0, <prefix>1, ...`` (a prefix no buffer can take: the
    CPU's ``a``; the CUDA printer's own locals include ``a0``, so it passes another).
    Renaming changes SymPy's argument order (``Add`` sorts its terms by name),
    so the renaming is repeated until the order of first use stops changing;
    two kernels that differ only in names end with the same text.
    """
    original = kernel_buffers(k)
    k = _rename_locals(k)
    # start from an order that does not depend on the names -- where each buffer is first
    # used and how it is indexed -- or two graphs could settle on different fixed points
    names = original if isinstance(k, Contract) else sorted(original, key=_structure_key(k))
    for _ in range(4):
        mapping = {name: f"{prefix}{n}" for n, name in enumerate(names)}
        renamed = _rename(k, {old: mapping[old] for old in original})
        order = kernel_buffers(renamed)
        if order == [f"{prefix}{n}" for n in range(len(order))]:
            return renamed, names
        # put the buffers in the order the renamed kernel uses them and try again
        back = {f"{prefix}{n}": name for n, name in enumerate(names)}
        names = [back[a] for a in order]
    mapping = {name: f"{prefix}{n}" for n, name in enumerate(names)}
    return _rename(k, mapping), names


def _structure_key(k):
    """buffer name -> (first statement that uses it, how it is indexed): no names involved."""
    if isinstance(k, (Fused, Rows)):
        statements = [e for _, e in k.assigns] + ([e for _, e in k.sums] if isinstance(k, Rows) else [])
        stores = k.stores
    else:
        statements, stores = [t.expr for t in k.terms], []
    uses = {}
    for n, e in enumerate(statements):
        for acc in e.atoms(sp.Indexed):
            first, patterns = uses.setdefault(str(acc.base.label), (n, set()))
            patterns.add(str(acc.indices))
    for n, (target, _) in enumerate(stores, start=len(statements)):
        name = target if isinstance(target, str) else str(target.base.label)
        first, patterns = uses.setdefault(name, (n, set()))
        patterns.add("store" if isinstance(target, str) else "store" + str(target.indices))
    if isinstance(k, Rows):
        for n, (target, _) in enumerate(k.sums, start=len(statements) + len(stores)):
            uses.setdefault(str(target.base.label), (n, set()))[1].add("sum" + str(target.indices))
    return lambda name: (uses.get(name, (len(statements) + len(stores), set()))[0],
                         sorted(uses.get(name, (0, set()))[1]))


def structural_key(k):
    """A hashable key of a canonical kernel: equal keys print the same text."""
    if isinstance(k, Contract):
        return ("contract", k.a, k.b, k.out, k.trans_a, k.trans_b, k.scale)
    if isinstance(k, Rows):
        return ("rows", tuple(k.assigns), tuple(k.stores), tuple(k.sums), k.row, k.flat)
    if isinstance(k, Fused):
        return ("fused", k.shape, tuple(k.assigns), tuple(k.stores), k.indices, k.flat)
    terms = tuple((t.expr, t.reduce, t.combiner, t.guard) for t in k.terms)
    return ("reduce", k.out, k.out_indices, k.out_shape, terms, k.order)

