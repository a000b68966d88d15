"""Printing scalar SymPy bodies as Numba-compatible Python.

One printer for every target; targets differ only in the table of math
functions (``math_names``) and in which primitives have fast forms. Every
numeric literal is wrapped in ``_F(...)`` -- the kernel's float type -- so
float32 kernels never promote to float64; loop indices print as plain ints in
accesses, and as ``_F(i)`` where a body uses one as a value.
"""
import sympy as sp
from sympy.printing.pycode import PythonCodePrinter

from ..ops.primitives import PRIMITIVES, Primitive
from ..lower.ir import BATCH, IR_HELPERS

MATH_NAMES = {
    "exp": "math.exp", "log": "math.log", "tanh": "math.tanh", "sinh": "math.sinh",
    "cosh": "math.cosh", "sin": "math.sin", "cos": "math.cos", "tan": "math.tan",
    "atan": "math.atan", "erf": "math.erf", "erfc": "math.erfc",
    # float-valued, as SymPy's floor of a real: math.floor gives an int, which overflows
    # (and makes NaN an integer) for values beyond int64
    "floor": "np.floor", "ceiling": "np.ceil",
}


class ScalarPrinter(PythonCodePrinter):
    """SymPy -> one Python expression over scalars and ``buf[i, j]`` loads."""

    def __init__(self, math_names=None, settings=None):
        super().__init__(settings or {})
        self.math_names = dict(MATH_NAMES, **(math_names or {}))

    def _print(self, expr, **kwargs):
        # fold numeric subexpressions (sqrt(2), pi/2, exp(-1/2)) into one typed literal
        if isinstance(expr, sp.Expr) and not expr.is_Atom and expr.is_number:
            try:
                return f"_F({float(expr)!r})"
            except TypeError:  # not real: leave it to the printer
                pass
        if isinstance(expr, sp.Mul):
            number, rest = expr.as_independent(*expr.free_symbols, as_Add=False)
            if number != 1 and not number.is_Atom and rest != 1:
                return f"{self._print(number)}*{self.parenthesize(rest, 50)}"
        return super()._print(expr, **kwargs)

    # -- numbers are typed -----------------------------------------------------
    def _print_Float(self, expr):
        return f"_F({float(expr)!r})"

    def _print_Integer(self, expr):
        return f"_F({float(expr)!r})"

    def _print_Rational(self, expr):
        return f"_F({float(expr)!r})"

    _print_Half = _print_Rational
    _print_One = _print_Integer
    _print_Zero = _print_Integer
    _print_NegativeOne = _print_Integer

    def _print_Pi(self, expr):
        return f"_F({float(sp.pi)!r})"

    def _print_Exp1(self, expr):
        return f"_F({float(sp.E)!r})"

    def _print_BooleanTrue(self, expr):
        return "True"

    def _print_BooleanFalse(self, expr):
        return "False"

    def _print_Symbol(self, expr):
        if expr == BATCH:
            return "_F(N)"
        if expr.is_integer:   # a loop index used as a value (a position): typed like literals
            return f"_F({super()._print_Symbol(expr)})"
        return super()._print_Symbol(expr)

    # -- loads: indices are integers ----------------------------------------------
    def _print_Indexed(self, expr):
        idx = ", ".join(index_code(i) for i in expr.indices)
        return f"{expr.base.label}[{idx}]"

    # -- arithmetic ----------------------------------------------------------------
    def _print_Pow(self, expr, rational=False):
        base, e = expr.base, expr.exp
        b = self.parenthesize(base, sp.printing.precedence.PRECEDENCE["Pow"])
        if e.is_Integer and 1 <= abs(int(e)) <= 4:
            if not (base.is_Symbol or base.is_Number or isinstance(base, sp.Indexed)) and abs(int(e)) > 1:
                # an expensive base (a helper call): evaluate it once, power by integer exponent
                p = f"({self._print(base)})**{abs(int(e))}"
                return f"({p})" if e > 0 else f"(_F(1.0)/({p}))"
            prod = "*".join([b] * abs(int(e)))
            return f"({prod})" if e > 1 else prod if e > 0 else f"(_F(1.0)/({prod}))"
        if e == sp.Rational(1, 2):
            return f"math.sqrt({self._print(base)})"
        if e == -sp.Rational(1, 2):
            return f"(_F(1.0)/math.sqrt({self._print(base)}))"
        return f"{b}**{self.parenthesize(e, sp.printing.precedence.PRECEDENCE['Pow'])}"

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_sign(self, expr):
        x = self._print(expr.args[0])
        return f"(_F(0.0) if {x} == _F(0.0) else math.copysign(_F(1.0), {x}))"

    def _print_Max(self, expr):
        return self._nested("max", expr.args)

    def _print_Min(self, expr):
        return self._nested("min", expr.args)

    def _nested(self, fn, args):
        out = self._print(args[0])
        for a in args[1:]:
            out = f"{fn}({out}, {self._print(a)})"
        return out

    def _print_Function(self, expr):
        if isinstance(expr, (Primitive, *IR_HELPERS)):
            args = ", ".join(self._print(a) for a in expr.args)
            return f"{expr.helper_name}({args})"
        return super()._print_Function(expr)

    def _print_known_func(self, expr):
        name = type(expr).__name__
        if name in self.math_names:
            return f"{self.math_names[name]}({', '.join(self._print(a) for a in expr.args)})"
        return super()._print_known_func(expr)

    def _print_Relational(self, expr):
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[expr.rel_op]
        return f"({self._print(expr.lhs)} {op} {self._print(expr.rhs)})"


for _name in MATH_NAMES:
    setattr(ScalarPrinter, f"_print_{_name}", ScalarPrinter._print_known_func)


def index_code(expr):
    """An integer index expression (loop indices, N, integer arithmetic)."""
    expr = sp.sympify(expr)
    if expr.is_Integer:
        return str(int(expr))
    return sp.pycode(expr).replace("math.floor", "int")


def helpers_source(names=None, math_names=None):
    """Source of the scalar helpers the primitives print as (``F`` -> ``_F``).

    ``math_names`` maps math functions to a target's own forms ({"exp": "fast_exp"}),
    applied to the helpers' bodies as to every printed expression."""
    out = []
    for p in (*PRIMITIVES, *IR_HELPERS):
        if names is None or p.helper_name in names:
            source = p.scalar_source.replace("F(", "_F(")
            for fn, replacement in (math_names or {}).items():
                source = source.replace(f"math.{fn}(", f"{replacement}(")
            out.append(source)
    return out
