"""Vector-Jacobian products derived from op bodies -- the only backward rules.

Elementwise ops: ``delta_x = sum_to(delta * d body / d x, shape(x))``.

Index ops (the generic "einsum" rule): for each occurrence ``A[f(idx)]`` of
input A in a term, take the partial of the term w.r.t. that occurrence,
multiply by ``delta[out_idx]``, and accumulate into ``dA[a]``. When f maps
loop indices to A's axes plainly or with a unit-coefficient shift, it is
inverted (``a = f(idx)`` solved for loop indices), so the result is a
*gather*: each ``dA[a]`` sums over the loop indices left over, and no two
iterations write the same element. A shift adds a bounds guard.
"""
import sympy as sp

from ..ops.functions import IndexMax, IndexSum  # noqa: F401  (bodies may hold them)
from ..ops.index_body import IndexBody, Term, access_indices, access_name, accesses, scalar_access

DELTA = "delta"
OUT = "out"


def elementwise_vjp_expr(op, position, attrs):
    """(expr, symbols) of ``delta * d body/d x_position``; None if it is zero."""
    d = op.derivative(position, attrs)
    if d == 0:
        return None
    delta = sp.Symbol(DELTA, real=True)
    expr = delta * d
    used = [s for s in op.symbols if s in expr.free_symbols]
    return expr, (delta, *used)


def _partial(expr, occurrence):
    dummy = sp.Dummy("a")
    return sp.diff(expr.xreplace({occurrence: dummy}), dummy).xreplace({dummy: occurrence})


def _invert(occurrence, targets, loop_extents):
    """Solve ``occurrence.indices == targets`` for loop indices.

    Returns (substitution, guard). Raises NotImplementedError for index maps
    with non-unit coefficients (strided access), which have no gather form here.
    """
    subs, guard = {}, sp.true
    for ix, a in zip(access_indices(occurrence), targets):
        ix = ix.xreplace(subs)
        if ix.is_Integer:
            guard = guard & sp.Eq(a, ix)
            continue
        free = [s for s in ix.free_symbols if s in loop_extents and s not in subs]
        solved = None
        for s in free:
            coeff = sp.diff(ix, s)
            if coeff in (1, -1) and not (ix - coeff * s).has(s):
                solved = (s, sp.expand((a - (ix - coeff * s)) / coeff))
                break
        if solved is None:
            if not free:
                guard = guard & sp.Eq(a, ix)
                continue
            raise NotImplementedError(
                f"access {occurrence} has index {ix} with a non-unit coefficient; "
                f"its gradient has no gather form yet")
        s, value = solved
        subs[s] = value
        if value != a:  # shifted access: the solved loop index must stay in range
            ext = loop_extents[s]
            guard = guard & (value >= 0)
            if ext is not None:
                guard = guard & (value <= ext - 1)
    return subs, guard


def index_vjp_body(body, position, arg_shapes):
    """IndexBody of the gradient w.r.t. argument ``position`` (args: delta, inputs, out)."""
    name = body.arg_names[position]
    target_shape = arg_shapes[position]
    targets = tuple(sp.Symbol(f"a{d}", integer=True) for d in range(len(target_shape)))
    delta = sp.IndexedBase(DELTA)[body.out_indices] if body.out_indices else scalar_access(DELTA)
    out_access = sp.IndexedBase(OUT)[body.out_indices] if body.out_indices else scalar_access(OUT)
    extents = body.extents()
    terms = []
    for term in body.terms:
        occurrences = accesses(term.expr, {name})
        for occ in occurrences:
            partial = _partial(term.expr, occ)
            if partial == 0:
                continue
            if term.combiner == "max":
                partial = partial * sp.Piecewise((1, sp.Eq(term.expr, out_access)), (0, True))
            contribution = delta * partial
            loop = {i: extents[i] for i in (*body.out_indices, *term.reduce_indices)}
            subs, guard = _invert(occ, targets, loop)
            guard = (guard & term.guard).xreplace(subs)
            left = tuple((i, e) for i, e in loop.items() if i not in subs)
            terms.append(Term(contribution.xreplace(subs), left, "sum", guard))
    if not terms:
        return None
    used = set()
    every = {DELTA, OUT, *body.arg_names}
    for t in terms:
        used |= {access_name(a) for a in accesses(t.expr, every)}
    arg_names = tuple(n for n in (DELTA, *body.arg_names, OUT) if n in used)
    return IndexBody(targets, tuple(target_shape), tuple(terms), arg_names)
