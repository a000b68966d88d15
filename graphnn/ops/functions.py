"""The SymPy functions an op body may use, and the check that enforces it.

Printers (NumPy reference, Numba CPU, Numba CUDA) translate exactly these; an
op declared with anything else is refused when it is declared, not when it
is first compiled. :func:`check_body` walks a body against a whitelist of what
the printers translate (``codegen/scalar.py``, ``reference/executor.py``): real
finite numbers, pi and E, +, *, **, the functions below, Piecewise with a
default branch, conditions of comparisons, And, Or, Not; accesses and
reductions in index bodies.
"""
import math

import sympy as sp
from sympy.core.relational import Relational
from sympy.logic.boolalg import Boolean

from ..errors import OpDeclarationError, UnknownFunctionError
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
    """``IndexMax(body, i, ...)``: the maximum of ``body`` over loop indices.

    At ties its gradient is split evenly among the maximal elements (PyTorch's ``amax``)."""

    ties = "split"   # the term's tie convention (Term.ties): how the gradient treats ties
    _label = "Max"

    def _latex(self, printer):
        idx = ",".join(printer._print(i) for i in self.args[1:])
        return r"\max_{%s} %s" % (idx, printer.parenthesize(self.args[0], 1000))

    def _sympystr(self, printer):
        idx = ", ".join(printer._print(i) for i in self.args[1:])
        return f"{self._label}[{idx}]({printer._print(self.args[0])})"


class IndexMaxFirst(IndexMax):
    """``IndexMaxFirst(body, i, ...)``: the same maximum as :class:`IndexMax`; at ties its
    gradient goes whole to the first maximal element, first in row-major order of the
    reduction indices as listed (PyTorch's ``max_pool2d``)."""

    ties = "first"
    _label = "MaxFirst"

    def _latex(self, printer):
        idx = ",".join(printer._print(i) for i in self.args[1:])
        return r"\max^{\mathrm{first}}_{%s} %s" % (idx, printer.parenthesize(self.args[0], 1000))


MAX_BY_TIES = {"split": IndexMax, "first": IndexMaxFirst}


REDUCTIONS = (IndexSum, IndexMax)

# What the printers (NumPy reference, Numba CPU and CUDA) translate, besides the functions
# above: +, *, ** over symbols, numbers, pi and E; Piecewise whose last branch is (value, True);
# conditions built from comparisons, And, Or, Not; accesses x[i, j] in index ops.
_CONSTANTS = (type(sp.pi), type(sp.E))
_CONNECTIVES = (sp.And, sp.Or, sp.Not)
_ALLOWED = ("+, -, *, /, ** over the op's inputs and attributes, real numbers, pi, E, the "
            "functions exp/log/tanh/sinh/cosh/sin/cos/tan/atan/erf/erfc/Abs/sign/Max/Min/floor/"
            "ceiling/Mod, Piecewise ending in a (value, True) branch, and graphnn's primitives")


def known(func_class):
    if isinstance(func_class, type) and issubclass(func_class, Primitive):
        return func_class in PRIMITIVES
    return func_class in BUILTIN_FUNCTIONS


def _show(expr, limit=120):
    text = str(expr)
    return text if len(text) <= limit else text[:limit] + "..."


def as_expression(value, op_name):
    """``value`` (a builder's return value) as a scalar SymPy expression, or an
    :class:`OpDeclarationError`. Plain numbers are fine: a constant body."""
    try:
        expr = sp.sympify(value, strict=True)   # strict: no parsing of strings
    except (sp.SympifyError, TypeError, ValueError):
        raise OpDeclarationError(
            f"op {op_name!r}: its body is {type(value).__name__} {_show(repr(value))}, not a SymPy "
            f"expression; return an expression of the op's inputs (a number is fine: a constant)") from None
    if isinstance(expr, Boolean) and not isinstance(expr, sp.Expr):
        raise OpDeclarationError(
            f"op {op_name!r}: its body {_show(expr)} is a condition, not a value; for an indicator "
            f"write Piecewise((1, condition), (0, True))")
    if not isinstance(expr, sp.Expr):
        raise OpDeclarationError(
            f"op {op_name!r}: its body is a {type(expr).__name__} ({_show(expr)}), not one scalar "
            f"expression")
    return expr


def check_body(value, op_name, symbols=None, index=False):
    """``value`` as an op body every printer can translate, or a :class:`OpDeclarationError`
    (:class:`UnknownFunctionError` for a function or SymPy object no printer knows) naming
    the op and the offending subexpression.

    ``symbols``: the free symbols an elementwise body may use (its inputs and attributes);
    ``index``: an index-notation body (accesses and reductions allowed; where they may sit
    and which symbols are loop indices is checked by :func:`~.index_body.parse_index_body`)."""
    expr = as_expression(value, op_name)
    _check(expr, op_name, symbols, index)
    return expr


def _check_number(expr, op_name):
    """A constant subexpression: the printers fold it into one float64 literal."""
    try:
        value = float(expr)
    except OverflowError:
        raise OpDeclarationError(f"op {op_name!r}: the number {_show(expr)} in its body does not "
                                 f"fit a float64") from None
    except (TypeError, ValueError):
        raise OpDeclarationError(f"op {op_name!r}: {_show(expr)} in its body is not a real number "
                                 f"(graphnn computes with real floats)") from None
    if not math.isfinite(value) and expr.is_finite:
        raise OpDeclarationError(f"op {op_name!r}: the number {_show(expr)} in its body does not "
                                 f"fit a float64 (it would be {value})")
    if not math.isfinite(value):
        raise OpDeclarationError(f"op {op_name!r}: {_show(expr)} in its body is not a finite number "
                                 f"({value}); graphnn refuses NaN and infinite constants")
    if value == 0 and expr.is_zero is False:
        raise OpDeclarationError(f"op {op_name!r}: the number {_show(expr)} in its body is not 0 but "
                                 f"rounds to 0 in a float64")


def _check(expr, op_name, symbols, index):
    if isinstance(expr, sp.Symbol):
        if symbols is not None and expr not in symbols:
            names = ", ".join(sorted(s.name for s in symbols)) or "none"
            raise OpDeclarationError(
                f"op {op_name!r}: its body uses the symbol {expr.name!r}, which is none of its "
                f"inputs and attributes ({names}); build the body from the function's parameters "
                f"(a symbol made elsewhere, e.g. without real=True, is another symbol)")
        return
    if expr.is_Atom and expr.is_number:
        _check_number(expr, op_name)
        if not isinstance(expr, (sp.Number, *_CONSTANTS)):
            raise UnknownFunctionError(f"op {op_name!r}: its body uses the constant {expr}, which "
                                       f"graphnn cannot translate to code; write its value")
        return
    if isinstance(expr, sp.Indexed):
        if not index:
            raise OpDeclarationError(f"op {op_name!r}: the access {_show(expr)} belongs in an index "
                                     f"op (@gn.index_op); an elementwise body uses its inputs as scalars")
        for i in expr.indices:
            _check(i, op_name, symbols, index)
        return
    if isinstance(expr, REDUCTIONS):
        if not index:
            raise OpDeclarationError(f"op {op_name!r}: {_show(expr)} is a reduction; reductions belong "
                                     f"in an index op (@gn.index_op)")
        _check(expr.args[0], op_name, symbols, index)
        for entry in expr.args[1:]:
            _check_reduction_index(entry, expr, op_name)
        return
    if isinstance(expr, sp.Piecewise):
        if expr.args[-1].cond != sp.true:
            raise OpDeclarationError(
                f"op {op_name!r}: {_show(expr)} has no default branch; end the Piecewise with "
                f"(value, True) so that every input has a value")
        for branch in expr.args:
            _check(branch.expr, op_name, symbols, index)
            _check_condition(branch.cond, op_name, symbols, index)
        return
    if isinstance(expr, (sp.Add, sp.Mul, sp.Pow)) or known(type(expr)):
        if expr.is_number:   # the printers fold it into one literal
            _check_number(expr, op_name)
        for a in expr.args:
            _check(a, op_name, symbols, index)
        return
    if isinstance(expr, Boolean):
        raise OpDeclarationError(f"op {op_name!r}: the condition {_show(expr)} is used as a value; "
                                 f"for an indicator write Piecewise((1, condition), (0, True))")
    if isinstance(expr, sp.Function):
        raise UnknownFunctionError(
            f"op {op_name!r}: its SymPy body uses {type(expr).__name__}, which graphnn cannot "
            f"translate to code. Use SymPy's exp/log/tanh/erf/Abs/Piecewise/Max/Min..., or add a "
            f"stable primitive to graphnn.ops.primitives")
    raise UnknownFunctionError(
        f"op {op_name!r}: its SymPy body uses {type(expr).__name__} ({_show(expr)}), which graphnn "
        f"cannot translate to code; an op body may use {_ALLOWED}")


def _check_condition(cond, op_name, symbols, index):
    if cond in (sp.true, sp.false):
        return
    if isinstance(cond, Relational):
        _check(cond.lhs, op_name, symbols, index)
        _check(cond.rhs, op_name, symbols, index)
        return
    if isinstance(cond, _CONNECTIVES):
        for c in cond.args:
            _check_condition(c, op_name, symbols, index)
        return
    raise UnknownFunctionError(f"op {op_name!r}: the condition {_show(cond)} uses "
                               f"{type(cond).__name__}, which graphnn cannot translate to code; "
                               f"write conditions with comparisons, And, Or and Not")


def _check_reduction_index(entry, reduction, op_name):
    """A reduction index: a symbol, or (symbol, extent) with a positive int extent."""
    if isinstance(entry, sp.Symbol):
        return
    if (isinstance(entry, sp.Tuple) and len(entry) == 2 and isinstance(entry[0], sp.Symbol)
            and isinstance(entry[1], sp.Integer) and entry[1] >= 1):
        return
    raise OpDeclarationError(f"op {op_name!r}: {_show(reduction)} reduces over {_show(entry)}; "
                             f"give a loop index i, or (i, extent) with a positive int extent")
