"""Edge labels: the local derivative dz^{l+1}/dz^l of one edge as short readable text.

:func:`graphnn.local_derivative` names symbols after full node names
('hidden/z') and uses graphnn's stable primitives (ClampedReciprocal, ...).
For a picture the names are shortened to their last part where that stays
unambiguous ('1 - tanh(z)**2') and the primitives are shown as the functions
they stand for (1/p, log p, sigmoid).
"""
import sympy as sp
from sympy.printing.latex import LatexPrinter, greek_letters_set
from sympy.printing.str import StrPrinter

from ..derive.local import local_derivative
from .style import shorten

SIGMA, PHI, CDF = sp.Function("σ"), sp.Function("φ"), sp.Function("Φ")  # sigmoid, normal pdf and cdf
_LATEX_FUNCTIONS = {"σ": r"\sigma", "φ": r"\varphi", "Φ": r"\Phi"}


class EdgeDerivative:
    """Readable text and LaTeX of dz/dx for one edge (consumer ``node``, input ``position``)."""

    def __init__(self, node, position):
        self.node, self.position = node, position
        ld = local_derivative(node, position)
        renames = _short_names(ld.expr, ld.of_access, ld.wrt_access)
        self.expr = _display(ld.expr.xreplace(_scalar_constants(node)).xreplace(renames))
        self.of = ld.of_access.xreplace(renames)
        self.wrt = ld.wrt_access.xreplace(renames)
        self.text = shorten(_Text().doprint(self.expr))

    @property
    def full(self):
        return f"∂{self.of}/∂{self.wrt} = {_Text().doprint(self.expr)}"

    @property
    def latex(self):
        latex = _Latex().doprint
        return r"\frac{\partial %s}{\partial %s} = %s" % (latex(self.of), latex(self.wrt), latex(self.expr))


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
        elif kind == "Sigmoid":
            replacements[call] = SIGMA(*call.args)
        elif kind == "Expm1":
            replacements[call] = sp.exp(*call.args) - 1
        elif kind in ("Softplus", "StopGradient"):
            replacements[call] = sp.Function(kind.lower())(*call.args)
        elif isinstance(call, sp.exp) and _plain(sp.sqrt(-2 * call.args[0])):
            # exp(-u**2/2) = sqrt(2 pi) phi(u), erf(u/sqrt(2)) = 2 Phi(u) - 1: GELU's pieces as people write them
            u = sp.sqrt(-2 * call.args[0])
            replacements[call] = sp.sqrt(2 * sp.pi) * PHI(u.args[0] if isinstance(u, sp.Abs) else u)
        elif isinstance(call, sp.erf) and _plain(sp.sqrt(2) * call.args[0]):
            replacements[call] = 2 * CDF(sp.sqrt(2) * call.args[0]) - 1
    # nested primitives (log of a sigmoid) are replaced one level per pass
    return _display(expr.xreplace(replacements)) if replacements else expr


def _plain(u):
    """Whether ``u`` is a simple argument (no root or power left) to write phi(u) or Phi(u) with."""
    return not u.has(sp.sqrt(2)) and not any(p.exp.is_Rational and not p.exp.is_Integer
                                              for p in u.atoms(sp.Pow))


class _Text(StrPrinter):
    """SymPy's text, with conditions as people write them: '1 if z > 0 else 0'."""

    def doprint(self, expr):
        self._top = expr
        return super().doprint(expr)

    def _print_Piecewise(self, expr):
        parts = []
        for value, condition in expr.args:
            if condition == sp.true:
                parts.append(self._print(value))
                break
            parts.append(f"{self._print(value)} if {self._print(condition)} else")
        else:
            parts.append("nan")
        text = " ".join(parts)
        return text if expr is self._top else f"({text})"

    # conditions in words, as in Python: 'a > 0 or b ≠ 0', not SymPy's '(a > 0) | Ne(b, 0)'
    def _print_Or(self, expr):
        return " or ".join(self._condition(a) for a in expr.args)

    def _print_And(self, expr):
        return " and ".join(self._condition(a) for a in expr.args)

    def _print_Not(self, expr):
        return f"not {self._condition(expr.args[0])}"

    def _print_Unequality(self, expr):
        return f"{self._print(expr.lhs)} ≠ {self._print(expr.rhs)}"

    def _condition(self, arg):
        text = self._print(arg)
        return f"({text})" if isinstance(arg, (sp.Or, sp.And)) else text


class _Latex(LatexPrinter):
    """SymPy's LaTeX, with node names upright ('\\mathrm{hidden/tanh}') and σ, φ, Φ as symbols."""

    def _print_Symbol(self, expr, style="plain"):
        name = expr.name
        if len(name) > 1 and name.lower() not in greek_letters_set:
            return r"\mathrm{%s}" % name.replace("_", r"\_")
        return super()._print_Symbol(expr, style=style)

    def _print_Function(self, expr, exp=None):
        name = type(expr).__name__
        if name in _LATEX_FUNCTIONS:
            args = ", ".join(self._print(a) for a in expr.args)
            text = r"%s\left(%s\right)" % (_LATEX_FUNCTIONS[name], args)
            return text if exp is None else r"%s^{%s}" % (text, exp)
        return super()._print_Function(expr, exp)
