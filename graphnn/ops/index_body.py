"""Index-notation bodies: the data form of an :class:`~graphnn.ops.registry.IndexOp`.

``out[o...] = sum over terms of  combine_{r...} expr(o..., r...)``

Each :class:`Term` has its own reduction indices (``IndexSum``/``IndexMax``)
and an optional guard (a SymPy condition; where it is false the term adds
nothing). Accesses are ``sp.Indexed`` of ``sp.IndexedBase`` named after the
op's arguments. Extents are ints, or ``None`` for the batch axis.
"""
import functools
from dataclasses import dataclass

import sympy as sp

from ..errors import OpDeclarationError, ShapeError
from ..graph.node import format_shape
from .functions import MAX_BY_TIES, REDUCTIONS, IndexMax, IndexSum, check_body


# The batch size as a symbol, for bodies that divide by a count (mean over the batch).
BATCH_SIZE = sp.Symbol("N_batch", integer=True, positive=True)


def indices(names):
    """Integer loop-index symbols: ``n, i = gn.indices("n i")``."""
    return sp.symbols(names, integer=True)


class Arg:
    """An op argument inside a builder: ``x[n, i]`` is an access, ``x.shape`` its shape."""

    def __init__(self, name, shape):
        self.name = name
        self.shape = tuple(shape)
        self.base = sp.IndexedBase(name)

    @property
    def ndim(self):
        return len(self.shape)

    def __getitem__(self, idx):
        idx = idx if isinstance(idx, tuple) else (idx,)
        if self.ndim == 0 and idx == ():
            return scalar_access(self.name)
        if len(idx) != self.ndim:
            raise ShapeError(f"access {self.name}{list(idx)} has {len(idx)} indices; "
                             f"{self.name} has shape {self.shape}")
        return self.base[idx]


@dataclass(frozen=True)
class Term:
    expr: sp.Expr
    reduce: tuple          # ((index symbol, extent), ...)
    combiner: str = "sum"  # "sum" or "max"
    guard: object = sp.true
    ties: str = "split"    # a maximum's gradient at ties: "split" evenly, or to the "first"

    @property
    def reduce_indices(self):
        return tuple(i for i, _ in self.reduce)


@dataclass(frozen=True)
class IndexBody:
    out_indices: tuple     # one symbol per output axis
    out_shape: tuple
    terms: tuple
    arg_names: tuple       # IndexedBase names, aligned with the node's inputs

    @functools.cached_property
    def key(self):
        """The body's content, exactly (``srepr``): its identity in node keys and file hashes."""
        return repr((sp.srepr(sp.Tuple(*self.out_indices)), self.out_shape, self.arg_names,
                     [(sp.srepr(t.expr), sp.srepr(sp.Tuple(*t.reduce_indices)), [e for _, e in t.reduce],
                       t.combiner if t.ties == "split" else f"{t.combiner}/{t.ties}", sp.srepr(t.guard))
                      for t in self.terms]))

    def extents(self):
        """index symbol -> extent (int, or None for the batch axis)."""
        ext = dict(zip(self.out_indices, self.out_shape))
        for t in self.terms:
            ext.update(dict(t.reduce))
        return ext

    def as_sympy(self):
        """The body as one SymPy expression (for display)."""
        total = sp.Integer(0)
        for t in self.terms:
            f = MAX_BY_TIES[t.ties] if t.combiner == "max" else IndexSum
            e = sp.Piecewise((t.expr, t.guard), (0, True)) if t.guard is not sp.true else t.expr
            e = f(e, *t.reduce_indices) if t.reduce else e
            total = total + e
        return total

    def __str__(self):
        out = "out[" + ", ".join(map(str, self.out_indices)) + "]"
        return f"{out} = {self.as_sympy()}"


def scalar_access(name):
    """A 0-d tensor inside a body is a plain symbol carrying the tensor's name."""
    return sp.Symbol(name, real=True)


def accesses(expr, names=None):
    """Tensor accesses in ``expr``: ``Indexed`` atoms, and symbols naming 0-d tensors.

    ``names`` (tensor names) makes plain symbols count as 0-d accesses."""
    found = [a for a in expr.atoms(sp.Indexed) if names is None or str(a.base) in names]
    if names is not None:
        labels = {a.base.label for a in expr.atoms(sp.Indexed)}
        found += [s for s in expr.free_symbols if isinstance(s, sp.Symbol) and s.is_real
                  and s not in labels and s.name in names]
    return sorted(set(found), key=sp.default_sort_key)


def access_name(acc):
    return str(acc.base) if isinstance(acc, sp.Indexed) else acc.name


def access_indices(acc):
    return tuple(acc.indices) if isinstance(acc, sp.Indexed) else ()


def _plain_extents(expr, shapes):
    """Extents of indices that appear alone in some access position."""
    ext = {}
    for acc in accesses(expr, shapes):
        shape = shapes[access_name(acc)]
        for pos, ix in enumerate(access_indices(acc)):
            if isinstance(ix, sp.Symbol):
                d = shape[pos]
                if ix in ext and ext[ix] != d:
                    raise ShapeError(
                        f"index {ix} runs over {_fmt(ext[ix])} in one access and over "
                        f"{_fmt(d)} in {acc} (shapes {shapes})")
                ext[ix] = d
    return ext


def guarded(body, condition):
    """``body`` where ``condition`` (on loop indices only) holds; elsewhere the
    element is left out of the term (0 in a sum, skipped by a maximum).

    Written as ``Piecewise((body, condition), (0, True))`` so that it displays
    as the mathematics says; :func:`parse_index_body` turns it into the term's
    guard. Padded convolutions use it to keep out-of-range accesses out.
    """
    return sp.Piecewise((body, condition), (0, True))


def in_range(index, extent):
    """The condition ``0 <= index <= extent - 1``."""
    return sp.And(index >= 0, index <= extent - 1)


def _is_guard(factor):
    return (isinstance(factor, sp.Piecewise) and len(factor.args) == 2
            and factor.args[1].cond == sp.true and factor.args[1].expr == 0
            and not factor.args[0].cond.atoms(sp.Indexed))


def _split_guard(expr):
    """``c * Piecewise((f, cond), (0, True))`` -> (c * f, cond); a condition on
    loop indices alone is a guard, one on tensor values stays in the body."""
    guard, factors = sp.true, []
    for factor in sp.Mul.make_args(expr):
        if _is_guard(factor):
            guard = guard & factor.args[0].cond
            factors.append(factor.args[0].expr)
        else:
            factors.append(factor)
    if guard == sp.true:
        return expr, guard
    return sp.Mul(*factors), guard


def _fmt(d):
    return "N (batch)" if d is None else str(d)


def _split_reduction(term, op_name):
    """``c * IndexSum(f, i)`` -> (f*c, (i,), "sum"); plain terms -> (term, (), "sum")."""
    coeff, rest = sp.Integer(1), []
    for factor in sp.Mul.make_args(term):
        if isinstance(factor, (IndexSum, IndexMax)):
            rest.append(factor)
        else:
            coeff = coeff * factor
    if not rest:
        return term, (), "sum", {}
    if len(rest) > 1:
        raise OpDeclarationError(f"op {op_name!r}: the term {term} multiplies two reductions; "
                                 f"compute each in its own op and multiply their outputs")
    red = rest[0]
    body, idx = red.args[0], red.args[1:]
    explicit = {}
    plain = []
    for i in idx:
        if isinstance(i, sp.Tuple):  # (i, extent)
            explicit[i[0]] = int(i[1])
            plain.append(i[0])
        else:
            plain.append(i)
    if isinstance(red, IndexMax):
        if coeff != 1:
            raise OpDeclarationError(f"op {op_name!r}: in the term {term} a maximum carries the "
                                     f"factor {coeff}; a maximum must stand alone: apply the factor "
                                     f"in another op (or move a positive factor inside IndexMax)")
        return body, tuple(plain), "max", explicit
    return coeff * body, tuple(plain), "sum", explicit


def _output_indices(op_name, result):
    """A builder's ``(out_indices, expr)``, checked: -> (indices, {index: given extent}, expr)."""
    if not (isinstance(result, (tuple, list)) and len(result) == 2 and isinstance(result[0], (tuple, list))):
        raise OpDeclarationError(
            f"op {op_name!r}: its builder returned {type(result).__name__} {str(result)[:120]}; an index "
            f"op's builder returns (output indices, body), e.g. ((n,), IndexSum(x[n, i], i))")
    raw_out, expr = result
    out_indices, out_ext = [], {}
    for entry in raw_out:
        if isinstance(entry, tuple):  # (index, extent) for an axis no access names
            if not (len(entry) == 2 and isinstance(entry[0], sp.Symbol) and isinstance(entry[1], (int, sp.Integer))
                    and not isinstance(entry[1], bool) and entry[1] >= 1):
                raise OpDeclarationError(f"op {op_name!r}: output entry {entry!r} is not (index, extent) "
                                         f"with a positive int extent")
            out_indices.append(entry[0])
            out_ext[entry[0]] = int(entry[1])
        elif isinstance(entry, sp.Symbol):
            out_indices.append(entry)
        else:
            raise OpDeclarationError(f"op {op_name!r}: output entry {entry!r} is not a loop index "
                                     f"(make them with gn.indices) nor an (index, extent) pair")
    if len(set(out_indices)) != len(out_indices):
        raise OpDeclarationError(f"op {op_name!r}: output indices {tuple(out_indices)} repeat an index")
    return tuple(out_indices), out_ext, expr


def _misplaced_reduction(term):
    """(enclosing expression, reduction) for a reduction that is not a factor at the top of
    ``term``; None when every reduction is one."""
    placed = {term} if isinstance(term, REDUCTIONS) else set(sp.Mul.make_args(term))
    stack = [(term, None)]
    while stack:
        e, parent = stack.pop()
        if isinstance(e, REDUCTIONS) and not (parent in (None, term) and e in placed):
            return parent, e
        stack.extend((arg, e) for arg in e.args)
    return None


def _check_accesses(op_name, raw, exprs, shapes):
    """Every access reads an input with one index per axis; -> the accessed bases' labels."""
    labels = set()
    for acc in set().union(*(e.atoms(sp.Indexed) for e in exprs)):
        name = str(acc.base)
        if name not in shapes:
            raise OpDeclarationError(f"op {op_name!r}: the term {raw} reads {acc}, but {name!r} is not "
                                     f"one of its inputs ({', '.join(shapes)})")
        if len(acc.indices) != len(shapes[name]):
            raise ShapeError(f"op {op_name!r}: access {acc} has {len(acc.indices)} indices; {name} has "
                             f"shape {format_shape(shapes[name])}")
        labels.add(acc.base.label)
    return labels


def _check_symbols(op_name, raw, term, labels, out_indices, shapes):
    """Every symbol of a term is an output index, one of its reduction indices, an input
    (an access's base, or a 0-d input) or the batch size."""
    allowed = {*out_indices, *term.reduce_indices, *labels, BATCH_SIZE}
    allowed.update(scalar_access(n) for n, shape in shapes.items() if shape == ())
    symbols = term.expr.free_symbols | term.guard.free_symbols
    stray = {s for s in symbols if not isinstance(s, sp.Indexed)} - allowed   # accesses count too
    for sym in sorted(stray, key=sp.default_sort_key):
        if sym.is_integer:
            raise OpDeclarationError(
                f"op {op_name!r}: in the term {raw} the index {sym} is neither an output index nor "
                f"reduced over; add it to the output indices or reduce it: IndexSum(..., {sym})")
        raise OpDeclarationError(
            f"op {op_name!r}: the term {raw} uses the symbol {sym}, which is none of its inputs "
            f"({', '.join(shapes)}) nor a loop index; pass a number as an attribute (a keyword "
            f"parameter of the builder)")


def parse_index_body(op_name, args, result):
    """Turn a builder's ``(out_indices, expr)`` into an :class:`IndexBody`.

    Refuses, with an :class:`~graphnn.errors.OpDeclarationError` naming the op and the
    term, what no executor computes: anything :func:`~.functions.check_body` refuses, a
    reduction that is not a factor at the top of its term (``log(IndexSum(...))``), a
    symbol that is neither an input, a loop index nor the batch size."""
    out_indices, out_ext, expr = _output_indices(op_name, result)
    expr = check_body(expr, op_name, index=True)
    shapes = {a.name: a.shape for a in args}
    terms = []
    for raw in sp.Add.make_args(expr):
        misplaced = _misplaced_reduction(raw)
        if misplaced is not None:
            outer, reduction = misplaced
            raise OpDeclarationError(
                f"op {op_name!r}: the reduction {reduction} sits inside {outer} (in the term {raw}); "
                f"a reduction must be a whole term, or a term times factors without reductions "
                f"(c * IndexSum(...)). Split the op in two: an index op that returns the reduction, "
                f"and an op that applies the rest to its output (e.g. gn.log(row_sums(gn.exp(x)))")
        body, red, combiner, explicit = _split_reduction(raw, op_name)
        body, guard = _split_guard(body)
        labels = _check_accesses(op_name, raw, (body, guard), shapes)
        ext = _plain_extents(body, shapes)
        ext.update(explicit)
        missing = [i for i in red if i not in ext]
        if missing:
            raise ShapeError(f"op {op_name!r}: reduction index {missing} appears in no "
                             f"plain access; give its extent as IndexSum(body, ({missing[0]}, n))")
        for i in out_indices:
            if i in ext:
                if i in out_ext and out_ext[i] != ext[i] and out_ext[i] != 1:
                    raise ShapeError(f"op {op_name!r}: output index {i} has extents "
                                     f"{_fmt(out_ext[i])} and {_fmt(ext[i])}")
                out_ext[i] = ext[i]
        both = [i for i in red if i in out_indices]
        if both:
            raise OpDeclarationError(f"op {op_name!r}: in the term {raw} the index {both[0]} is both an "
                                     f"output index and reduced over; use another index for one of them")
        ties = next((f.ties for f in sp.Mul.make_args(raw) if isinstance(f, IndexMax)), "split")
        term = Term(body, tuple((i, ext[i]) for i in red), combiner, guard, ties)
        _check_symbols(op_name, raw, term, labels, out_indices, shapes)
        terms.append(term)
    missing = [i for i in out_indices if i not in out_ext]
    if missing:
        raise ShapeError(f"op {op_name!r}: output index {missing} appears in no plain access")
    out_shape = tuple(out_ext[i] for i in out_indices)
    for axis, d in enumerate(out_shape):
        if d is None and axis != 0:
            raise ShapeError(f"op {op_name!r}: the batch axis must be the first output axis")
    return IndexBody(out_indices, out_shape, tuple(terms), tuple(a.name for a in args))
