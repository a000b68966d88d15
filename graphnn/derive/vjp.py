"""Vector-Jacobian products derived from op bodies -- the only backward rules.

Elementwise ops: ``delta_x = sum_to(delta * d body / d x, shape(x))``.

Index ops (the generic "einsum" rule): for each occurrence ``A[f(idx)]`` of
input A in a term, take the partial of the term w.r.t. that occurrence,
multiply by ``delta[out_idx]``, and accumulate into ``dA[a]``. When f maps
loop indices to A's axes plainly or with a unit-coefficient shift, it is
inverted (``a = f(idx)`` solved for loop indices), so the result is a
*gather*: each ``dA[a]`` sums over the loop indices left over, and no two
iterations write the same element. A shift adds a bounds guard; a stride
(coefficient s != 1, as in a strided convolution or pooling) adds a
divisibility guard ``Mod(a - rest, s) == 0`` and reads the solved index as
``floor((a - rest) / s)``; mixed-radix digits (a flatten) are inverted
jointly. An index that cannot be solved keeps its loop with an equality
guard, so every index op has a gradient.

A maximum's partial is an indicator, and at ties its convention (the term's
``ties``) decides which elements share the gradient: ``"split"``
(``IndexMax``, PyTorch's ``amax``) gives each of the c maximal elements
1/c, ``"first"`` (``IndexMaxFirst``, PyTorch's ``max_pool2d``) gives all of it
to the first one in row-major order of the reduction indices. The gradient
body reads the tie count, or the first maximum's position, from an auxiliary
index body (:func:`tie_bodies`) that the backward graph computes once per
forward node from its inputs and output.
"""
import sympy as sp

from ..ops.functions import IndexMax, IndexSum  # noqa: F401  (bodies may hold them)
from ..ops.index_body import (BATCH_SIZE, IndexBody, Term, access_indices, access_name, accesses,
                               scalar_access)

DELTA = "delta"
OUT = "out"
TERM_MAX = "max"    # TERM_MAX + k: max term k's own maximum, where the body has other terms
TIES = "ties"       # TIES + k: its tie count ("split") or minus its first maximum's position ("first")


def elementwise_vjp_expr(op, position, attrs, recompute=False):
    """(expr, symbols) of ``delta * d body/d x_position``; None if it is zero.

    Unless ``recompute``, a derivative that contains the op's own body is written
    in terms of the op's output (tanh' = 1 - out**2, sigmoid' = out*(1 - out)):
    the forward value is kept instead of recomputed. ``symbols`` then ends with
    the symbol ``out``, which stands for the forward node itself.
    """
    d = op.derivative(position, attrs)
    if d == 0:
        return None
    out = sp.Symbol(OUT, real=True)
    if not recompute:
        body = op.expr(attrs)
        if not (body.is_Symbol or body.is_Number) and d.has(body) and out not in op.symbols:
            d = d.xreplace({body: out})
    delta = sp.Symbol(DELTA, real=True)
    expr = delta * d
    used = [s for s in op.symbols if s in expr.free_symbols]
    return expr, (delta, *used, *([out] if out in expr.free_symbols else []))


def _partial(expr, occurrence):
    dummy = sp.Dummy("a")
    return sp.diff(expr.xreplace({occurrence: dummy}), dummy).xreplace({dummy: occurrence})


def _extent_rank(extent):
    return float("inf") if extent is None else extent


def _linear_candidates(ix, loop_extents, solved):
    """(loop index, integer coefficient) pairs that ``ix`` is affine in."""
    found = []
    for s in sorted(ix.free_symbols, key=sp.default_sort_key):
        if s not in loop_extents or s in solved:
            continue
        coeff = sp.diff(ix, s)
        if coeff.is_Integer and coeff != 0 and not (ix - coeff * s).has(s):
            found.append((s, int(coeff)))
    return found


def _digit(ix, loop_extents):
    """``Mod(floor(j/s), E)``, ``floor(j/s)`` or ``Mod(j, E)`` -> (j, s, E); else None.

    These are the digits of ``j`` in a mixed radix: how a reshape (flatten)
    reads its input in index notation."""
    E = None
    inner = ix
    if isinstance(ix, sp.Mod):
        inner, E = ix.args
        if not E.is_Integer:
            return None
        E = int(E)
    s = 1
    if isinstance(inner, sp.floor):
        arg = inner.args[0]
        syms = [x for x in arg.free_symbols if x in loop_extents]
        if len(syms) != 1:
            return None
        j = syms[0]
        c = sp.diff(arg, j)
        if arg != c * j or not c.is_Rational or c.p != 1:
            return None
        s = int(c.q)
    elif inner in loop_extents:
        j = inner
    else:
        return None
    if E is None and s == 1:
        return None  # a plain index: the affine path handles it
    return j, s, E


def _invert_digits(indices, targets, loop_extents, target_extents):
    """Jointly invert access positions that are the mixed-radix digits of one loop
    index ``j`` (a flatten): ``j = sum_k s_k a_k``. Returns (subs, guard, positions)."""
    groups = {}
    for pos, ix in enumerate(indices):
        d = _digit(ix, loop_extents)
        if d is not None:
            groups.setdefault(d[0], []).append((d[1], d[2], pos))
    subs, guard, done = {}, sp.true, set()
    for j, digits in groups.items():
        digits.sort(key=lambda d: (d[0], d[2]))  # by stride (E may be None: not comparable)
        stride, ok = 1, True
        for k, (s, E, _) in enumerate(digits):
            last = k == len(digits) - 1
            if s != stride or (E is None and not last):
                ok = False
                break
            stride = s * E if E is not None else None
        ext = loop_extents[j]
        # a bounded top digit must cover all of j's range, or several j share one element
        if not ok or (stride is not None and (ext is None or ext > stride)):
            continue
        value = sum(s * targets[pos] for s, _, pos in digits)
        for s, E, pos in digits:
            if E is not None and target_extents[pos] is not None and target_extents[pos] > E:
                guard = guard & (targets[pos] <= E - 1)
        if stride is None and ext is not None:
            top = sum(s * ((target_extents[pos] or 1) - 1) for s, _, pos in digits)
            if top > ext - 1:
                guard = guard & (value <= ext - 1)
        subs[j] = value
        done |= {pos for _, _, pos in digits}
    return subs, guard, done


def _invert(occurrence, targets, loop_extents, target_extents=None):
    """Solve ``occurrence.indices == targets`` for loop indices.

    Returns (substitution, guard). An index affine in loop indices is solved
    for the one with the largest extent (so the loops left over are the short
    ones, e.g. the kernel window of a convolution); a coefficient s != 1
    (a strided access) adds the divisibility guard ``Mod(a - rest, s) == 0``;
    every solved index gets a range guard. Mixed-radix digits of one index (a
    flatten) are inverted jointly. Anything else stays a loop index with an
    equality guard: still a gather, summing over the indices left over.
    """
    indices = access_indices(occurrence)
    target_extents = target_extents or (None,) * len(targets)
    subs, guard, done = _invert_digits(indices, targets, loop_extents, target_extents)
    for pos, (ix, a) in enumerate(zip(indices, targets)):
        if pos in done:
            continue
        ix = sp.expand(ix.xreplace(subs))
        candidates = _linear_candidates(ix, loop_extents, subs)
        if not candidates:
            guard = guard & sp.Eq(a, ix)
            continue
        s, coeff = max(candidates, key=lambda c: (_extent_rank(loop_extents[c[0]]), abs(c[1]) == 1))
        numerator = sp.expand((a - (ix - coeff * s)) * (1 if coeff > 0 else -1))
        step = abs(coeff)
        value = numerator / step
        subs[s] = value
        if step != 1:
            guard = guard & sp.Eq(sp.Mod(numerator, step), 0)
        if value != a:  # shifted or strided: the solved loop index must stay in range
            ext = loop_extents[s]
            guard = guard & (numerator >= 0)
            if ext is not None:
                guard = guard & (numerator <= step * (ext - 1))
    return subs, guard


def _coefficients(expr):
    return [term.as_coeff_Mul()[0] for term in sp.Add.make_args(sp.expand(expr))]


def _integer_index(ix):
    """An index with fractional coefficients (a solved strided access) is exact under
    its divisibility guard; write it as ``floor`` so it stays an integer expression."""
    if all(c.is_Integer for c in _coefficients(ix)):
        return ix
    return sp.floor(sp.expand(ix))


def _integer_accesses(expr):
    repl = {}
    for acc in expr.atoms(sp.Indexed):
        new = tuple(_integer_index(i) for i in acc.indices)
        if new != tuple(acc.indices):
            repl[acc] = acc.base[new]
    return expr.xreplace(repl) if repl else expr


def _integer_relations(cond):
    """Clear fractions in relations (``a/2 - k/2 >= 0`` -> ``a - k >= 0``)."""
    repl = {}
    for rel in cond.atoms(sp.Rel):
        diff = sp.expand(rel.lhs - rel.rhs)
        denominators = [c.q for c in _coefficients(diff) if c.is_Rational]
        scale = sp.ilcm(*denominators) if len(denominators) > 1 else (denominators or [1])[0]
        if scale != 1:
            repl[rel] = type(rel)(sp.expand(diff * scale), 0)
    return cond.xreplace(repl) if repl else cond


def _drop_implied(cond, target_extents):
    """Drop linear relations on target indices that hold over their whole range
    (``a2 >= 0``, ``a2 <= 6`` for an axis of 7): checking the box corners suffices."""
    if cond == sp.true:
        return cond
    repl = {}
    for rel in cond.atoms(sp.Rel):
        syms = rel.free_symbols
        if not syms or not syms <= set(target_extents) or any(target_extents[a] is None for a in syms):
            continue
        if isinstance(rel, (sp.Eq, sp.Ne)) or any(not c.is_Integer for c in _coefficients(rel.lhs - rel.rhs)):
            continue
        if any(isinstance(t, (sp.Mod, sp.floor)) for t in sp.preorder_traversal(rel)):
            continue
        syms = sorted(syms, key=sp.default_sort_key)
        corners = [{}]
        for a in syms:
            corners = [{**c, a: v} for c in corners for v in (0, target_extents[a] - 1)]
        if all(bool(rel.xreplace(c)) for c in corners):
            repl[rel] = sp.true
    return cond.xreplace(repl) if repl else cond


def _access(name, out_indices):
    return sp.IndexedBase(name)[out_indices] if out_indices else scalar_access(name)


def _is_max(term):
    return term.combiner == "max" and bool(term.reduce)


def row_major(reduce):
    """(position, count): the row-major position of a term's reduction indices, in the order
    they are listed, and the number of positions (the batch axis counts as ``N_batch``)."""
    position, count = sp.Integer(0), sp.Integer(1)
    for i, extent in reversed(reduce):
        position += count * i
        count *= BATCH_SIZE if extent is None else extent
    return position, count


def term_maximum(body, k):
    """The name holding max term ``k``'s maximum: the output, or where the body has other
    terms the auxiliary ``max<k>``."""
    return OUT if len(body.terms) == 1 else f"{TERM_MAX}{k}"


def _used(terms, names):
    used = set()
    for t in terms:
        used |= {access_name(a) for a in accesses(t.expr, set(names))}
    return tuple(n for n in names if n in used)


def tie_bodies(body):
    """{name: IndexBody}, in the order to build them: what the gradients of ``body``'s max
    terms read besides delta, the inputs and the output. For max term k: ``max<k>``, the
    term's own maximum (only where the body has other terms, so the output is not it), and
    ``ties<k>``: the number of elements equal to it ("split"), or minus the row-major
    position of the first of them ("first"; minus the number of positions where none is).
    Their arguments are ``body``'s, ``out`` and the names before them."""
    made = {}
    for k, term in enumerate(body.terms):
        if not _is_max(term):
            continue
        ref = term_maximum(body, k)
        if ref != OUT:
            made[ref] = IndexBody(body.out_indices, body.out_shape,
                                  (Term(term.expr, term.reduce, "max", term.guard),),
                                  _used([term], body.arg_names))
        hit = sp.Eq(term.expr, _access(ref, body.out_indices))
        if term.ties == "first":
            position, count = row_major(term.reduce)
            tie = Term(sp.Piecewise((-position, hit), (-count, True)), term.reduce, "max", term.guard)
        else:
            tie = Term(sp.Piecewise((1, hit), (0, True)), term.reduce, "sum", term.guard)
        made[f"{TIES}{k}"] = IndexBody(body.out_indices, body.out_shape, (tie,),
                                       _used([tie], (*body.arg_names, ref)))
    return made


def tie_share(body, k):
    """The factor of max term ``k``'s partial for one element: 1/c where it is one of c maximal
    elements ("split"), 1 where it is the first maximal element ("first"), else 0."""
    term = body.terms[k]
    ties = _access(f"{TIES}{k}", body.out_indices)
    if term.ties == "first":
        return sp.Piecewise((1, sp.Eq(-row_major(term.reduce)[0], ties)), (0, True))
    hit = sp.Eq(term.expr, _access(term_maximum(body, k), body.out_indices))
    return sp.Piecewise((1 / ties, hit), (0, True))


def index_vjp_body(body, position, arg_shapes):
    """IndexBody of the gradient w.r.t. argument ``position`` (args: delta, inputs, out, and
    the auxiliaries of :func:`tie_bodies` its max terms read)."""
    name = body.arg_names[position]
    target_shape = arg_shapes[position]
    targets = tuple(sp.Symbol(f"a{d}", integer=True) for d in range(len(target_shape)))
    delta = _access(DELTA, body.out_indices)
    extents = body.extents()
    terms = []
    for k, term in enumerate(body.terms):
        occurrences = accesses(term.expr, {name})
        for occ in occurrences:
            partial = _partial(term.expr, occ)
            if partial == 0:
                continue
            if _is_max(term):
                partial = partial * tie_share(body, k)
            contribution = delta * partial
            loop = {i: extents[i] for i in (*body.out_indices, *term.reduce_indices)}
            subs, guard = _invert(occ, targets, loop, tuple(target_shape))
            guard = _integer_relations(_integer_accesses((guard & term.guard).xreplace(subs)))
            guard = _drop_implied(guard, dict(zip(targets, target_shape)))
            left = tuple((i, e) for i, e in loop.items() if i not in subs)
            terms.append(Term(_integer_accesses(contribution.xreplace(subs)), left, "sum", guard))
    if not terms:
        return None
    return IndexBody(targets, tuple(target_shape), tuple(terms),
                     _used(terms, (DELTA, *body.arg_names, OUT, *tie_bodies(body))))
