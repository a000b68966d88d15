"""Index-notation bodies: the data form of an :class:`~graphnn.ops.registry.IndexOp`.

``out[o...] = sum over terms of  combine_{r...} expr(o..., r...)``

Each :class:`Term` has its own reduction indices (``IndexSum``/``IndexMax``)
and an optional guard (a SymPy condition; where it is false the term adds
nothing). Accesses are ``sp.Indexed`` of ``sp.IndexedBase`` named after the
op's arguments. Extents are ints, or ``None`` for the batch axis.
"""
from dataclasses import dataclass

import sympy as sp

from ..errors import ShapeError
from .functions import IndexMax, IndexSum, check_translatable


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

    @property
    def reduce_indices(self):
        return tuple(i for i, _ in self.reduce)


@dataclass(frozen=True)
class IndexBody:
    out_indices: tuple     # one symbol per output axis
    out_shape: tuple
    terms: tuple
    arg_names: tuple       # IndexedBase names, aligned with the node's inputs

    @property
    def key(self):
        return repr((self.out_indices, self.out_shape, self.arg_names,
                     [(sp.srepr(t.expr), t.reduce, t.combiner, sp.srepr(t.guard)) for t in self.terms]))

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
            f = IndexMax if t.combiner == "max" else IndexSum
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


def _split_reduction(term):
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
        raise ValueError(f"term {term} multiplies two reductions; write them as separate ops")
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
            raise ValueError(f"term {term}: a maximum cannot carry a coefficient")
        return body, tuple(plain), "max", explicit
    return coeff * body, tuple(plain), "sum", explicit


def parse_index_body(op_name, args, result):
    """Turn a builder's ``(out_indices, expr)`` into an :class:`IndexBody`."""
    raw_out, expr = result
    out_indices, out_ext = [], {}
    for entry in raw_out:
        if isinstance(entry, tuple):  # (index, extent) for an axis no access names
            out_indices.append(entry[0])
            out_ext[entry[0]] = entry[1]
        else:
            out_indices.append(entry)
    out_indices = tuple(out_indices)
    expr = check_translatable(sp.sympify(expr), op_name)
    shapes = {a.name: a.shape for a in args}
    terms = []
    for raw in sp.Add.make_args(expr):
        body, red, combiner, explicit = _split_reduction(raw)
        body, guard = _split_guard(body)
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
        terms.append(Term(body, tuple((i, ext[i]) for i in red), combiner, guard))
    missing = [i for i in out_indices if i not in out_ext]
    if missing:
        raise ShapeError(f"op {op_name!r}: output index {missing} appears in no plain access")
    out_shape = tuple(out_ext[i] for i in out_indices)
    for axis, d in enumerate(out_shape):
        if d is None and axis != 0:
            raise ShapeError(f"op {op_name!r}: the batch axis must be the first output axis")
    return IndexBody(out_indices, out_shape, tuple(terms), tuple(a.name for a in args))
