"""The op tables every sweep is generated from: graphnn's own declarations.

Each built-in elementwise op (``gn.BUILTINS``) is one case with its default attributes, sampled
inside its declared ``domain`` and away from its declared ``kinks``; an op added to graphnn
joins every sweep (reference, compiled CPU, CUDA simulator, extreme inputs) with no test edit.
``VARIANTS`` adds attribute values worth a case of their own (optional extra coverage).

Oracles are independent of graphnn's executors: the body's plain math (each primitive written
as the formula it stands for) evaluated with mpmath at 50 digits, and central differences of
that math in float64.
"""
import math
from dataclasses import dataclass

import mpmath
import numpy as np
import sympy as sp

import graphnn as gn
from graphnn.ops.primitives import Primitive

ELEMENTWISE = tuple(op for op in gn.BUILTINS.values() if op.kind == "elementwise")
INDEX = tuple(op for op in gn.BUILTINS.values() if op.kind == "index")

# attribute values worth a case besides the defaults: (attrs, domain override or None)
VARIANTS = {
    "leaky_relu": [({"alpha": 0.2}, None)],
    "elu": [({"alpha": 0.5}, None)],
    "celu": [({"alpha": 2.0}, None)],
    "power": [({"p": 3.0}, None), ({"p": 0.5}, {"x": (0.0, math.inf)})],
}

SAMPLE_RANGE = 4.0     # samples lie in domain ∩ [-4, 4]
KINK_DISTANCE = 0.15   # and at least this far from a kink


@dataclass(frozen=True)
class Case:
    op: object
    attrs: tuple = ()                   # sorted (name, value) pairs
    domain: tuple = None                # per input; None: the op's declared domain

    @property
    def name(self):
        return self.op.name

    @property
    def attr_dict(self):
        return dict(self.attrs)

    @property
    def full_attrs(self):
        """The case's attributes with the op's defaults for the rest."""
        return self.op.resolve_attrs(self.attr_dict)

    @property
    def id(self):
        extra = ",".join(f"{k}={v}" for k, v in self.attrs)
        return f"{self.name}[{extra}]" if extra else self.name

    @property
    def domains(self):
        return self.domain if self.domain is not None else self.op.domain

    @property
    def gradient_flows(self):
        """False where the body holds a primitive whose derivative is 0 by design (stop_gradient)."""
        return all(getattr(type(f), "derivative_matches_definition", True)
                   for f in self.op.symbolic_expr.atoms(sp.Function))

    def sample(self, rng, shape):
        """One array of ``shape`` per input, inside its domain and away from its kinks."""
        out = []
        for (low, high), kinks in zip(self.domains, self.op.kinks):
            lo, hi = max(low, -SAMPLE_RANGE), min(high, SAMPLE_RANGE)
            margin = 0.05 * (hi - lo)
            lo, hi = lo + (margin if math.isfinite(low) else 0), hi - (margin if math.isfinite(high) else 0)
            x = rng.uniform(lo, hi, shape)
            for kink in kinks:
                near = np.abs(x - kink) < KINK_DISTANCE
                side = np.where(x >= kink, 1.0, -1.0)
                x = np.where(near, kink + side * (KINK_DISTANCE + 0.05), x)
            out.append(x)
        return out


def _case(op, attrs=None, domain=None):
    doms = None
    if domain is not None:
        doms = tuple(tuple(domain.get(a, d)) for a, d in zip(op.arg_names, op.domain))
    return Case(op, tuple(sorted((attrs or {}).items())), doms)


CASES = tuple([_case(op) for op in ELEMENTWISE]
              + [_case(gn.BUILTINS[name], attrs, dom)
                 for name, variants in VARIANTS.items() for attrs, dom in variants])
ACTIVATION_CASES = tuple(c for c in CASES if c.op.activation and not c.attrs)


# -- oracles ---------------------------------------------------------------------------------

def exact_form(expr, frozen=None):
    """``expr`` with primitives written as their plain math; a primitive whose derivative is 0
    by design (StopGradient) becomes a symbol from ``frozen`` ({primitive call: symbol}) when given."""
    def plain(e):
        if frozen is not None and not getattr(type(e), "derivative_matches_definition", True):
            return frozen.setdefault(e, sp.Dummy("frozen"))
        exact = getattr(type(e), "exact", None) or type(e).definition
        return exact(e.args[0])
    return expr.replace(lambda e: isinstance(e, Primitive), plain)


def _mp_function(expr, symbols):
    return sp.lambdify(symbols, expr, modules="mpmath")


def exact_values(expr, symbols, args, digits=50):
    """``expr`` at each point of ``args`` (arrays, broadcast together) with mpmath, as float64
    (NaN where the math is undefined)."""
    f = _mp_function(expr, symbols)
    arrays = np.broadcast_arrays(*[np.asarray(a, dtype=np.float64) for a in args])
    out = np.empty(arrays[0].shape)
    with mpmath.workdps(digits):
        for idx in np.ndindex(out.shape):
            try:
                value = f(*(mpmath.mpf(float(a[idx])) for a in arrays))
                out[idx] = float(mpmath.re(value)) if abs(mpmath.im(value)) == 0 else math.nan
            except (ZeroDivisionError, ValueError, OverflowError):
                out[idx] = math.nan
    return out


def exact_value(case, args):
    return exact_values(exact_form(case.op.expr(case.full_attrs)), case.op.symbols, args)


def exact_derivative(case, args, position):
    """graphnn's derivative expression of input ``position``, evaluated exactly."""
    return exact_values(exact_form(case.op.derivative(position, case.full_attrs)), case.op.symbols, args)


def math_derivative(case, args, position, eps=1e-6):
    """Central difference of the body's plain math in float64 (primitives with a zero derivative
    by design held at their unperturbed value) -- an oracle that never reads graphnn's derivative."""
    frozen = {}
    body = exact_form(case.op.expr(case.full_attrs), frozen)
    calls = list(frozen.items())
    f = sp.lambdify((*case.op.symbols, *[s for _, s in calls]), body, modules=["numpy", "scipy"])
    held = [sp.lambdify(case.op.symbols, exact_form(call), modules=["numpy", "scipy"])(*args)
            for call, _ in calls]
    up, down = list(args), list(args)
    up[position] = args[position] + eps
    down[position] = args[position] - eps
    with np.errstate(all="ignore"):
        return (np.asarray(f(*up, *held)) - np.asarray(f(*down, *held))) / (2 * eps) + 0 * args[0]
