"""Local derivatives dz^{l+1}/dz^l of one edge, as SymPy and LaTeX.

For an index op the derivative is the true one, element by element: a term's guard shows
as ``Piecewise((partial, guard), (0, True))`` (a cumsum's d cum[n, j]/d x[n, i] is 1 only
where i <= j), and a maximum's partial carries the indicator its gradient uses: 1/c at one
of c tied maxima (``IndexMax``), or 1 at the first maximum only (``IndexMaxFirst``).
"""
import sympy as sp

from ..errors import ArgumentError
from ..graph.node import Node
from ..ops.functions import MAX_BY_TIES, IndexMax, IndexSum
from ..ops.index_body import accesses
from ..derive.vjp import _is_max, _partial, row_major


class LocalDerivative:
    """The derivative of ``node`` w.r.t. its input ``wrt``.

    ``expr`` is a SymPy expression over symbols named after the input nodes
    (for index ops: indexed accesses), ``latex`` its LaTeX, ``wrt_access``
    the access it is taken against (index ops) or the input symbol.
    """

    def __init__(self, node, wrt, expr, wrt_access, of_access):
        self.node, self.wrt, self.expr = node, wrt, expr
        self.wrt_access, self.of_access = wrt_access, of_access

    @property
    def latex(self):
        return (r"\frac{\partial %s}{\partial %s} = %s"
                % (sp.latex(self.of_access), sp.latex(self.wrt_access), sp.latex(self.expr)))

    def _repr_latex_(self):
        return f"${self.latex}$"

    def __str__(self):
        return f"d{self.of_access}/d{self.wrt_access} = {self.expr}"

    __repr__ = __str__


def _position(node, wrt):
    if isinstance(wrt, int):
        return wrt
    for pos, p in enumerate(node.inputs):
        if p is wrt:
            return pos
    names = ", ".join(p.name for p in node.inputs)
    raise ArgumentError(f"{getattr(wrt, 'name', wrt)!r} is not an input of {node.name!r} (inputs: {names})")


def _primed(term, mark="'"):
    """``term``'s expression and guard over fresh copies i' of its reduction indices."""
    fresh = {i: sp.Symbol(f"{i.name}{mark}", integer=True) for i in term.reduce_indices}
    return term.expr.xreplace(fresh), term.guard.xreplace(fresh), tuple(fresh.values())


def _max_share(term, maximum):
    """The indicator a max term's gradient uses at one element (see the module docstring).
    ``maximum``: the term's maximum (the output), or None to write it out."""
    if maximum is None:
        expr, guard, primed = _primed(term, "''")
        inner = sp.Piecewise((expr, guard), (0, True)) if guard != sp.true else expr
        maximum = MAX_BY_TIES[term.ties](inner, *primed)
    expr, guard, primed = _primed(term)
    hit, tie = sp.Eq(term.expr, maximum), sp.Eq(expr, maximum) & guard
    if term.ties == "first":   # 1 - [an element before this one is maximal too]
        before = row_major(tuple(zip(primed, (e for _, e in term.reduce))))[0] < row_major(term.reduce)[0]
        earlier = IndexMax(sp.Piecewise((1, tie & before), (0, True)), *primed)
        return sp.Piecewise((1 - earlier, hit), (0, True))
    count = IndexSum(sp.Piecewise((1, tie), (0, True)), *primed)
    return sp.Piecewise((1 / count, hit), (0, True))


def symbol_for(node):
    return sp.Symbol(node.name, real=True)


def local_derivative(node: Node, wrt):
    """dz/d(input) of one edge. ``wrt``: the input node or its position."""
    if node.kind != "op":
        raise ArgumentError(f"{node.name!r} is a {node.kind}; it has no inputs to differentiate by")
    pos = _position(node, wrt)
    parent = node.inputs[pos]
    if node.op.kind == "elementwise":
        rename = {s: symbol_for(p) for s, p in zip(node.op.symbols, node.inputs)}
        expr = node.op.derivative(pos, node.attr_dict).xreplace(rename)
        return LocalDerivative(node, parent, expr, symbol_for(parent), symbol_for(node))
    body = node.op.node_body(node)
    name = body.arg_names[pos]
    rename = {sp.IndexedBase(a): sp.IndexedBase(p.name) for a, p in zip(body.arg_names, node.inputs)}
    of = sp.IndexedBase(node.name)[body.out_indices] if body.out_indices else symbol_for(node)
    # the output stands in as a placeholder until the inputs are renamed (a node may share
    # its name with one of the op's arguments)
    out = sp.Dummy("out", real=True)
    out = sp.IndexedBase(out)[body.out_indices] if body.out_indices else out
    total, wrt_access = sp.Integer(0), None
    for term in body.terms:
        for occ in accesses(term.expr, {name}):
            partial = _partial(term.expr, occ)
            if _is_max(term):
                partial = partial * _max_share(term, out if len(body.terms) == 1 else None)
            if term.guard != sp.true:
                partial = sp.Piecewise((partial, term.guard), (0, True))
            total += partial
            wrt_access = occ
    wrt_access = wrt_access if wrt_access is not None else symbol_for(parent)
    scalar = {sp.Symbol(a, real=True): sp.Symbol(p.name, real=True)
              for a, p in zip(body.arg_names, node.inputs)}
    return LocalDerivative(node, parent, total.xreplace(rename).xreplace(scalar).xreplace({out: of}),
                           wrt_access.xreplace(rename).xreplace(scalar), of)
