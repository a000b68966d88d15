"""Edge labels: the local derivative dz^{l+1}/dz^l of one edge as short readable text.

:func:`graphnn.local_derivative` names symbols after full node names
('hidden/z') and uses graphnn's stable primitives (ClampedReciprocal, ...).
For a picture the names are shortened to their last part where that stays
unambiguous ('1 - tanh(z)**2') and the primitives are shown as the functions
they stand for (1/p, log p, sigmoid).
"""
import sympy as sp

from ..derive.local import local_derivative
from .style import shorten


class EdgeDerivative:
    """Readable text and LaTeX of dz/dx for one edge (consumer ``node``, input ``position``)."""

    def __init__(self, node, position):
        self.node, self.position = node, position
        ld = local_derivative(node, position)
        renames = _short_names(ld.expr, ld.of_access, ld.wrt_access)
        self.expr = _display(ld.expr.xreplace(_scalar_constants(node)).xreplace(renames))
        self.of = ld.of_access.xreplace(renames)
        self.wrt = ld.wrt_access.xreplace(renames)
        self.text = shorten(str(self.expr))

    @property
    def full(self):
        return f"∂{self.of}/∂{self.wrt} = {self.expr}"

    @property
    def latex(self):
        return r"\frac{\partial %s}{\partial %s} = %s" % (sp.latex(self.of), sp.latex(self.wrt),
                                                         sp.latex(self.expr))


def _scalar_constants(node):
    """{symbol of a scalar constant input: its value}, so 'c*x' reads '0.5*x'."""
    values = {}
    for parent in node.inputs:
        value = parent.attr("value") if parent.kind == "constant" else None
        if value is not None and value.size == 1:
            v = float(value.item())
            values[sp.Symbol(parent.name, real=True)] = _number(v)
    return values


def _number(v):
    """A scalar as SymPy prints it shortly: 2, 0.5, 1e-08 (a Float would print 0.500000000000000)."""
    if v.is_integer():
        return sp.Integer(int(v))
    text = sp.Symbol(f"{abs(v):.4g}", positive=True)
    return -text if v < 0 else text


def _node_names(*exprs):
    """Names of node symbols and indexed bases in ``exprs`` (node names are the ones with '/')."""
    names = set()
    for expr in exprs:
        for atom in expr.atoms(sp.Symbol, sp.IndexedBase):
            name = atom.name if isinstance(atom, sp.Symbol) else str(atom.label)
            names.add(name)
    return names


def _short_names(*exprs):
    """{old atom: renamed atom}: 'hidden/z' -> 'z' unless two names would collide."""
    names = _node_names(*exprs)
    short = {n: n.rsplit("/", 1)[-1] for n in names}
    counts = {}
    for s in short.values():
        counts[s] = counts.get(s, 0) + 1
    target = {n: (s if counts[s] == 1 else n) for n, s in short.items()}
    renames = {}
    for expr in exprs:
        for atom in expr.atoms(sp.Symbol, sp.IndexedBase):
            if isinstance(atom, sp.Symbol) and target.get(atom.name, atom.name) != atom.name:
                renames[atom] = sp.Symbol(target[atom.name])
            elif isinstance(atom, sp.IndexedBase) and target.get(str(atom.label)) != str(atom.label):
                renames[atom] = sp.IndexedBase(target[str(atom.label)])
    return renames


def _display(expr):
    """Replace graphnn's stable primitives by the functions they stand for."""
    replacements = {}
    for call in expr.atoms(sp.Function):
        kind = type(call).__name__
        if kind == "ClampedReciprocal":
            replacements[call] = 1 / call.args[0]
        elif kind.startswith("Clamped"):
            replacements[call] = sp.Function(kind[len("Clamped"):].lower())(*call.args)
        elif kind in ("Sigmoid", "Softplus", "StopGradient"):
            replacements[call] = sp.Function(kind.lower())(*call.args)
    # nested primitives (log of a sigmoid) are replaced one level per pass
    return _display(expr.xreplace(replacements)) if replacements else expr
