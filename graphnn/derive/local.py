"""Local derivatives dz^{l+1}/dz^l of one edge, as SymPy and LaTeX."""
import sympy as sp

from ..errors import ArgumentError
from ..graph.node import Node
from ..ops.index_body import accesses
from ..derive.vjp import _partial


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
    total, wrt_access = sp.Integer(0), None
    for term in body.terms:
        for occ in accesses(term.expr, {name}):
            total += _partial(term.expr, occ)
            wrt_access = occ
    of = sp.IndexedBase(node.name)[body.out_indices] if body.out_indices else symbol_for(node)
    wrt_access = wrt_access if wrt_access is not None else symbol_for(parent)
    scalar = {sp.Symbol(a, real=True): sp.Symbol(p.name, real=True)
              for a, p in zip(body.arg_names, node.inputs)}
    return LocalDerivative(node, parent, total.xreplace(rename).xreplace(scalar),
                           wrt_access.xreplace(rename).xreplace(scalar), of)
