"""The SymPy functions an op body may use, and the check that enforces it.

Printers (NumPy reference, Numba CPU, Numba CUDA) translate exactly these; an
op declared with anything else is refused when it is declared, not when it
is first compiled.
"""
import sympy as sp

from ..errors import UnknownFunctionError
from .primitives import PRIMITIVES, Primitive

BUILTIN_FUNCTIONS = (
    sp.exp, sp.log, sp.tanh, sp.sinh, sp.cosh, sp.sin, sp.cos, sp.tan, sp.atan,
    sp.erf, sp.erfc, sp.Abs, sp.sign, sp.Piecewise, sp.Max, sp.Min, sp.floor, sp.ceiling,
    sp.Mod,  # integer index arithmetic (flatten digits, strided-gradient guards)
)


class IndexSum(sp.Function):
    """``IndexSum(body, i, j, ...)``: the sum of ``body`` over loop indices i, j, ..."""

    def _latex(self, printer):
        idx = ",".join(printer._print(i) for i in self.args[1:])
        return r"\sum_{%s} %s" % (idx, printer.parenthesize(self.args[0], 1000))

    def _sympystr(self, printer):
        idx = ", ".join(printer._print(i) for i in self.args[1:])
        return f"Sum[{idx}]({printer._print(self.args[0])})"


class IndexMax(sp.Function):
    """``IndexMax(body, i, ...)``: the maximum of ``body`` over loop indices."""

    def _latex(self, printer):
        idx = ",".join(printer._print(i) for i in self.args[1:])
        return r"\max_{%s} %s" % (idx, printer.parenthesize(self.args[0], 1000))

    def _sympystr(self, printer):
        idx = ", ".join(printer._print(i) for i in self.args[1:])
        return f"Max[{idx}]({printer._print(self.args[0])})"


def known(func_class):
    if isinstance(func_class, type) and issubclass(func_class, Primitive):
        return func_class in PRIMITIVES
    return func_class in BUILTIN_FUNCTIONS


def check_translatable(expr, op_name):
    """Raise if ``expr`` uses a function no printer knows."""
    for f in expr.atoms(sp.Function):
        cls = type(f)
        if cls in (IndexSum, IndexMax) or known(cls):
            continue
        raise UnknownFunctionError(
            f"op {op_name!r}: its SymPy body uses {cls.__name__}, which graphnn cannot "
            f"translate to code. Use SymPy's exp/log/tanh/erf/Abs/Piecewise/Max/Min..., "
            f"or add a stable primitive to graphnn.ops.primitives")
    return expr
