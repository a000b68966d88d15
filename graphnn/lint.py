"""A stability lint for elementwise ops: values and derivatives against exact math.

``gn.lint(op)`` evaluates an op's value and each derivative graphnn's backward pass uses
(``op.derivative(k)``) on a grid log-spaced to +-1e4, plus 0, -0, the op's kinks, +-inf and
nan, restricted to its domain, on each target and dtype. The oracle is the same SymPy
expression with every primitive replaced by its exact math (``Primitive.exact``), evaluated
with mpmath at 60 digits (400 where the result is below 1e-20, so a cancellation of large
terms still leaves it right). At an infinite input whose exact form is NaN there (inf - inf,
0 * inf) the oracle takes the limit, evaluating at +-1e300 instead.

Each point is measured in ulps, |got - exact| / ulp(max(|exact|, smallest normal)), and by its
relative error |got - exact| / max(|exact|, smallest normal). Findings:

* ``nan``: NaN where the exact value is a number;
* ``overflow``: +-inf where the exact value is finite in the dtype;
* ``cancellation``: a relative error above the dtype's tolerance (``rtol``).

A cancellation is ``inherited`` when the same expression, evaluated with exact arithmetic on the
values of its functions (tanh, exp, erf, Sigmoid, ...) rounded to the dtype and moved by one ulp,
moves from the exact value by at least 1/16 of the error: the error is then a function value's
rounding carried through (``1 - tanh(x)**2`` where tanh(x) rounds to 1, ``exp(x) - 1`` near 0),
which arithmetic after it cannot undo. Otherwise it is the expression's own
arithmetic cancelling (softsign's ``sp.diff`` form): a rewrite removes it, and
:func:`declaration_warnings` reports it.
"""
import math
import warnings

import mpmath
import numpy as np
import sympy as sp

from .errors import ArgumentError, NumericsWarning
from .ops.primitives import StopGradient, exact_form

RTOL = {"float32": 1e-5, "float64": 1e-10}
KINDS = ("nan", "overflow", "cancellation")
_DIGITS, _MORE_DIGITS, _SMALL = 60, 400, mpmath.mpf("1e-20")
_INHERITED = 16          # a rounded-functions oracle within this factor of the error: inherited
_HUGE = mpmath.mpf("1e300")


def _grid(low, high, kinks, points=None, density=61):
    """Float32-representable points of [low, high] (so both dtypes see the same x)."""
    if points is None:
        mags = 10.0 ** np.linspace(-8, 4, density)
        xs = [0.0, -0.0, math.inf, -math.inf, math.nan, *mags, *-mags, *kinks]
        for bound, sign in ((low, 1), (high, -1)):
            if math.isfinite(bound):
                width = high - low if math.isfinite(high - low) else 1.0
                xs += [bound, *(bound + sign * width * mags[mags < 1])]
    else:
        xs = list(points)
    out, seen = [], set()
    for x in xs:
        x = float(np.float32(x))
        if not (math.isnan(x) or low <= x <= high):
            continue
        key = "nan" if math.isnan(x) else (x, math.copysign(1.0, x))
        if key not in seen:
            seen.add(key)
            out.append(x)
    return out


def _interior(low, high):
    """A representative point inside (low, high) for the inputs not being swept."""
    if math.isinf(low) and math.isinf(high):
        return 0.75
    if math.isinf(high):
        return low + 1.5
    if math.isinf(low):
        return high - 1.5
    return float(np.float32(low + 0.3 * (high - low)))


def _metadata(op):
    n = len(op.arg_names)
    domain = getattr(op, "domain", None) or ((-math.inf, math.inf),) * n
    kinks = getattr(op, "kinks", None) or ((),) * n
    return tuple(domain), tuple(kinks)


def _sweep(op, points=None, density=61):
    """(columns, swept): one float64 array per input, and the index of the input each point sweeps."""
    domain, kinks = _metadata(op)
    rest = [_interior(*d) for d in domain]
    columns, swept = [[] for _ in domain], []
    for k, ((low, high), ks) in enumerate(zip(domain, kinks)):
        for x in _grid(low, high, ks, points, density):
            for j, column in enumerate(columns):
                column.append(x if j == k else rest[j])
            swept.append(k)
    return [np.array(c, dtype=np.float64) for c in columns], np.array(swept)


# -- the oracle ------------------------------------------------------------------------------

class _Rounded(sp.Function):
    """Marks a function value to round to the dtype (the inherited-error oracle)."""


def _rounded_form(expr):
    """``expr`` with each function value (a primitive's, tanh's, a non-integer power's) marked
    for rounding, and each argument that is a product or power of inputs (x*y, x**3), then the
    primitives written as their exact math. Rounding such an argument counts an ill-conditioned
    function as inherited error: cos(x*y) at x*y = 237 moves by 4e-4 when x*y rounds in float32,
    and no rewrite avoids it. A sum is not rounded: log(1 + exp(x)) loses exp(x) in the sum,
    which log1p avoids."""
    exempt = (sp.Piecewise, sp.Abs, sp.sign, sp.Heaviside, sp.Max, sp.Min, StopGradient, _Rounded)

    def computed(e):
        if isinstance(e, sp.Function):
            return not isinstance(e, exempt)
        return isinstance(e, sp.Pow) and not e.exp.is_Integer

    def monomial(a):     # x*y, 2*x, x**3: one rounding no rewrite avoids (a sum's can be)
        return (isinstance(a, (sp.Mul, sp.Pow)) and not a.is_Number
                and all(f.is_Symbol or f.is_Number for f in a.args))

    def rounded(e):
        args = [_Rounded(a) if monomial(a) else a for a in e.args]
        return _Rounded(e.func(*args, evaluate=False))
    return exact_form(expr.replace(computed, rounded))


def _round_to(dtype, shift):
    """Round to ``dtype``, then move ``shift`` ulps (-1, 0 or 1)."""
    t = np.dtype(dtype).type

    def rounding(v):
        if isinstance(v, mpmath.mpc):
            raise TypeError("complex")
        with np.errstate(over="ignore"):
            r = t(float(v))
            if shift:
                r = np.nextafter(r, t(shift * np.inf))
            return mpmath.mpf(float(r))
    return rounding


class _Oracle:
    """The exact value of one expression at points, and its rounded-functions variant."""

    def __init__(self, symbols, expr):
        self.symbols, self.expr = symbols, expr
        self.fn = sp.lambdify(symbols, exact_form(expr), modules="mpmath")
        self._rounded = {}

    def _call(self, fn, point):
        args = [mpmath.mpf(x) for x in point]
        try:
            v = fn(*args)
            if any(mpmath.isinf(a) for a in args) and mpmath.isnan(v):     # inf - inf: the limit
                v = fn(*(mpmath.sign(a) * _HUGE if mpmath.isinf(a) else a for a in args))
            return None if isinstance(v, mpmath.mpc) else mpmath.mpf(v)
        except (ArithmeticError, TypeError, ValueError):    # a pole, a complex value
            return None

    def exact(self, point):
        if any(math.isnan(x) for x in point):
            return None     # nan in: nan out is the only exact answer (max(nan, c) would hide it)
        with mpmath.workdps(_DIGITS):
            v = self._call(self.fn, point)
        if v is not None and not mpmath.isnan(v) and abs(v) < _SMALL:
            with mpmath.workdps(_MORE_DIGITS):
                v = self._call(self.fn, point)
        return v

    def inherent(self, point, dtype, exact):
        """How far the expression moves from ``exact`` when its function values are rounded to
        ``dtype`` and moved by one ulp up or down (arithmetic exact): the error that rounding
        them carries into it (None where that is undefined)."""
        if dtype not in self._rounded:
            form = _rounded_form(self.expr)
            self._rounded[dtype] = [
                sp.lambdify(self.symbols, form, modules=[{"_Rounded": _round_to(dtype, s)}, "mpmath"])
                for s in (-1, 0, 1)]
        with mpmath.workdps(_DIGITS):
            values = [self._call(fn, point) for fn in self._rounded[dtype]]
            return max((abs(v - exact) for v in values if v is not None and not mpmath.isnan(v)),
                       default=None)


# -- measuring -------------------------------------------------------------------------------

def _measure(got, exact, dtype):
    """(ulps, relative error, kind or None) of ``got`` against ``exact`` (an mpf)."""
    info = np.finfo(dtype)
    with np.errstate(over="ignore"):
        rounded = float(np.dtype(dtype).type(float(exact)))
    if math.isnan(got):
        return math.inf, math.inf, "nan"
    if math.isinf(rounded):     # beyond the dtype's range: inf is the right answer
        if got == rounded or (math.isfinite(got) and got * rounded > 0 and abs(got) >= info.max / 2):
            return 0.0, 0.0, None
        return math.inf, math.inf, "overflow" if math.isinf(got) else "cancellation"
    if math.isinf(got):
        return math.inf, math.inf, "overflow"
    floor = max(abs(rounded), float(info.tiny))
    with mpmath.workdps(_DIGITS):
        err = abs(mpmath.mpf(got) - exact)
    ulps = float(err / float(np.spacing(np.dtype(dtype).type(floor))))
    rel = float(err / floor)
    if abs(rounded) < info.tiny and abs(got) < info.tiny:
        rel = 0.0       # a subnormal result flushed to zero (fast math) or rounded: no finding
    return ulps, rel, None


def _short(expr, limit=70):
    text = str(expr)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _where(op, point, swept):
    if len(op.arg_names) == 1:
        return f"{point[0]:.7g}"
    parts = [f"{a}={x:.7g}" for a, x in zip(op.arg_names, point)]
    return ", ".join(parts[swept:swept + 1] + parts[:swept] + parts[swept + 1:])


class Finding:
    """One kind of trouble in one row: where it is worst, and at how many points."""

    def __init__(self, row, kind, x, got, exact, ulps, rel, points, inherited=False):
        self.op, self.quantity, self.target, self.dtype = row.op, row.quantity, row.target, row.dtype
        self.expression = row.expression
        self.kind, self.x, self.got, self.exact = kind, x, got, exact
        self.ulps, self.rel, self.inherited = ulps, rel, inherited
        self.points = tuple(points)     # every point (a tuple of inputs) with this kind
        self.count = len(self.points)
        # its points have an infinite input (the findings at infinite and finite inputs are apart)
        self.at_infinity = any(math.isinf(x) for x in self.points[0])

    def __str__(self):
        how = " (inherited from a rounded function value)" if self.inherited else ""
        return (f"{self.op}: {self.quantity} = {_short(self.expression)} is {self.got:.7g} at x = "
                f"{self.x} where the exact value is {_fmt(self.exact)} ({_ulps(self.ulps)} ulps, "
                f"rel. err. {self.rel:.2g}) on {self.target} {self.dtype}: {self.kind}{how}"
                + (f", at {self.count} points" if self.count > 1 else ""))

    __repr__ = __str__


def _fmt(v):
    if v is None:
        return "undefined"
    if v != 0 and float(v) == 0:
        return f"{'-' if v < 0 else ''}0 (|v| < 1e-308)"
    return f"{float(v):.8g}"


def _ulps(u):
    return "inf" if math.isinf(u) else f"{u:.3g}"


class Row:
    """One (op, quantity, target, dtype): the worst point and the findings."""

    def __init__(self, op, quantity, expression, target, dtype):
        self.op, self.quantity, self.expression = op, quantity, expression
        self.target, self.dtype = target, dtype
        self.x, self.got, self.exact, self.ulps, self.rel = None, math.nan, None, 0.0, 0.0
        self.points = 0
        self.findings = []


class LintReport:
    """What :func:`lint` measured: ``rows`` (one per op, quantity, target and dtype),
    ``findings`` (every nan, overflow and cancellation) and ``ok`` (none)."""

    def __init__(self, rows, rtol):
        self.rows, self.rtol = rows, dict(rtol)

    @property
    def findings(self):
        return [f for r in self.rows for f in r.findings]

    @property
    def ok(self):
        return not self.findings

    def __str__(self):
        head = ("op", "quantity", "target", "dtype", "worst x", "got", "exact", "ulps", "rel. err.",
                "findings")
        lines = [head]
        for r in self.rows:
            kinds = ", ".join(f.kind + ("*" if f.inherited else "") for f in r.findings) or "-"
            lines.append((r.op, r.quantity, r.target, r.dtype, "-" if r.x is None else r.x,
                          f"{r.got:.7g}", _fmt(r.exact), _ulps(r.ulps), f"{r.rel:.2g}", kinds))
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
        text = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
        text.insert(1, "  ".join("-" * w for w in widths))
        if self.findings:
            text.append("")
            text.append(f"{len(self.findings)} finding(s) (* inherited from a rounded function "
                        f"value; rtol {self.rtol}):")
            text += [f"  {f}" for f in self.findings]
        else:
            text.append(f"no findings (rtol {self.rtol})")
        return "\n".join(text)

    def _repr_html_(self):
        import html
        cells = "".join(f"<th>{h}</th>" for h in ("op", "quantity", "target", "dtype", "worst x",
                                                   "ulps", "rel. err.", "findings"))
        body = [f"<tr>{cells}</tr>"]
        for r in self.rows:
            kinds = ", ".join(f.kind + ("*" if f.inherited else "") for f in r.findings) or "-"
            values = (r.op, r.quantity, r.target, r.dtype, r.x, _ulps(r.ulps), f"{r.rel:.2g}", kinds)
            body.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in values) + "</tr>")
        return f"<table>{''.join(body)}</table>"

    def __repr__(self):
        return (f"<LintReport: {len(self.rows)} rows, {len(self.findings)} findings>")


# -- evaluating on the targets ---------------------------------------------------------------

def _evaluate(items, target, dtype):
    """{(op index, quantity index): array} for every op of ``items`` in one graph: one parameter
    per op input, loss = the sum of all outputs, so each parameter's gradient is the op's
    derivative by that input at each point."""
    from .graph import Graph
    from .ops.index_ops import sum_
    from .runtime import compile as compile_model
    from .train import SGD
    g = Graph("lint")
    outs, params, loss = {}, {}, None
    for i, (op, attrs, columns, _) in enumerate(items):
        nodes = [g.parameter(f"op{i}_{a}", (len(c),), init=lambda rng, shape, c=c: c.copy())
                 for a, c in zip(op.arg_names, columns)]
        out = op(*nodes, name=f"op{i}", **attrs)
        g.output(f"op{i}", out)
        outs[i], params[i] = out, nodes
        total = sum_(out)
        loss = total if loss is None else loss + total
    model = compile_model(g, loss, target=target, dtype=dtype, optimizer=SGD(lr=0.0), wait=True)
    with np.errstate(all="ignore"):
        values = model.forward({})
        _, grads = model.loss_and_gradients({})
    got = {}
    for i, (op, _, _, _) in enumerate(items):
        got[i, 0] = np.asarray(values[f"op{i}"], dtype=np.float64)
        for k, node in enumerate(params[i]):
            # no gradient reaches an input the op stops (stop_gradient): its derivative is 0
            got[i, k + 1] = np.asarray(grads.get(node.name, np.zeros(node.shape)), dtype=np.float64)
    return got


def _reference(items, dtype):
    """The reference executor's per-op evaluation of each expression (what
    :func:`declaration_warnings` uses: no graph, no compile)."""
    from .reference.executor import _lambdify
    got = {}
    for i, (op, attrs, columns, _) in enumerate(items):
        args = [c.astype(dtype) for c in columns]
        exprs = [op.expr(attrs)] + [op.derivative(k, attrs) for k in range(len(columns))]
        for q, expr in enumerate(exprs):
            with np.errstate(all="ignore"):
                value = _lambdify(op.symbols, expr)(*args)
            got[i, q] = np.broadcast_to(np.asarray(value, dtype=dtype), columns[0].shape).astype(np.float64)
    return got


def _ops(ops):
    from .ops.registry import REGISTRY, ElementwiseOp
    if ops is None:
        return [op for op in REGISTRY.values() if op.kind == "elementwise"]
    out = []
    for op in ops if isinstance(ops, (list, tuple)) else [ops]:
        if isinstance(op, str):
            if op not in REGISTRY:
                raise ArgumentError(f"gn.lint: no op named {op!r} in gn.REGISTRY")
            op = REGISTRY[op]
        if not isinstance(op, ElementwiseOp):
            raise ArgumentError(f"gn.lint: {op!r} is not an elementwise op; the lint checks "
                                f"elementwise ops (declared with @gn.elementwise)")
        out.append(op)
    return out


def _attrs_for(op, attrs, several):
    if not attrs:
        return dict(op.attr_defaults)
    if several and any(isinstance(v, dict) for v in attrs.values()):    # {op name: attrs}
        attrs = attrs.get(op.name, {})
    return op.resolve_attrs(attrs, op.name)


def lint(ops=None, attrs=None, *, targets=("reference", "cpu"), dtypes=("float32", "float64"),
         points=None, rtol=None):
    """Check ops' values and derivatives against exact math; returns a :class:`LintReport`.

    ``ops``: an elementwise op, its name, or a list of them (default: every elementwise op in
    ``gn.REGISTRY``). ``attrs``: attribute values (for several ops, a dict of them by op name;
    default: the declared defaults). ``points``: the grid of each swept input (default:
    +-10**linspace(-8, 4, 61), 0, -0, the kinks, +-inf and nan, inside the op's domain; the
    other inputs sit at an interior point of theirs). ``rtol``: the relative tolerance per dtype
    (default ``{"float32": 1e-5, "float64": 1e-10}``). All ops of one call are evaluated in
    one graph per target and dtype.

    >>> import graphnn as gn
    >>> gn.lint("relu", targets=("reference",)).ok
    True
    """
    return _lint(ops, attrs, targets, dtypes, points, rtol)


def _lint(ops, attrs, targets, dtypes, points, rtol, evaluate=None, density=61):
    tolerance = dict(RTOL, **(rtol or {}))
    chosen = _ops(ops)
    items = []
    for op in chosen:
        a = _attrs_for(op, attrs or {}, len(chosen) > 1)
        columns, swept = _sweep(op, points, density)
        exprs = [("value", op.expr(a))] + [(f"d/d{n}", op.derivative(k, a))
                                           for k, n in enumerate(op.arg_names)]
        items.append((op, a, columns, swept))
        items[-1] = items[-1] + ([(q, e, _Oracle(op.symbols, e)) for q, e in exprs],)
    exact = {}
    rows = []
    for target in targets:
        for dtype in dtypes:
            if dtype not in tolerance:
                raise ArgumentError(f"gn.lint: dtype {dtype!r} must be float32 or float64")
            plain = [item[:4] for item in items]
            got = (evaluate or _evaluate)(plain, target, dtype)
            for i, (op, _, columns, swept, quantities) in enumerate(items):
                for q, (quantity, expr, oracle) in enumerate(quantities):
                    rows.append(_row(op, quantity, expr, oracle, columns, swept, got[i, q],
                                     target, dtype, tolerance[dtype], exact.setdefault((i, q), {})))
    return LintReport(rows, tolerance)


def _row(op, quantity, expr, oracle, columns, swept, got, target, dtype, rtol, cache):
    row = Row(op.name, quantity, expr, target, dtype)
    worst = {}
    points = {}
    for p in range(len(swept)):
        point = tuple(float(c[p]) for c in columns)
        if p not in cache:
            cache[p] = oracle.exact(point)
        exact = cache[p]
        if exact is None or mpmath.isnan(exact):
            continue      # undefined there, or nan in: nothing to compare
        row.points += 1
        ulps, rel, kind = _measure(float(got[p]), exact, dtype)
        if kind is None and rel > rtol:
            kind = "cancellation"
        where = _where(op, point, int(swept[p]))
        if row.x is None or ulps > row.ulps:
            row.x, row.got, row.exact, row.ulps, row.rel = where, float(got[p]), exact, ulps, rel
        if kind is None:
            continue
        key = (kind, any(math.isinf(x) for x in point))
        points.setdefault(key, []).append(point)
        inherited = False
        if kind == "cancellation":
            inherent = oracle.inherent(point, dtype, exact)
            inherited = inherent is not None and inherent * _INHERITED >= abs(
                mpmath.mpf(float(got[p])) - exact)
        # a finding is inherited only if all its points are: show a point that is not first
        rank = (not inherited, ulps)
        if key not in worst or rank > worst[key][0]:
            worst[key] = (rank, (where, float(got[p]), exact, ulps, rel), inherited)
    for key in sorted(worst, key=lambda k: (KINDS.index(k[0]), k[1])):
        _, shown, inherited = worst[key]
        row.findings.append(Finding(row, key[0], *shown, points[key], inherited))
    return row


def warns(finding):
    """The warning criterion: nan or overflow where the exact value is finite, or cancellation
    the expression's own arithmetic causes (not inherited from a rounded function value), at a
    finite input. (At +-inf, ``x * Sigmoid(x)`` and the like give inf * 0 = nan, as in PyTorch:
    the report shows them, a declaration does not warn.)"""
    return not finding.at_infinity and (finding.kind != "cancellation" or not finding.inherited)


def declaration_warnings(op, attrs=None, rtol=None):
    """One-line messages (see :func:`warns`) about an op's value and the derivatives graphnn's
    backward uses, for a declaration to warn with. A fast check: the reference executor's
    NumPy evaluation of each expression, float32 and float64, a grid of 25 magnitudes."""
    report = _lint([op], attrs, ("reference",), ("float32", "float64"), None, rtol,
                   evaluate=lambda items, target, dtype: _reference(items, dtype), density=25)
    return [str(f) for f in report.findings if warns(f)]


def warn_declaration(op, attrs=None, stacklevel=3):
    """Emit one :class:`~graphnn.errors.NumericsWarning` listing :func:`declaration_warnings`
    (nothing if there are none); returns the messages."""
    messages = declaration_warnings(op, attrs)
    if messages:
        warnings.warn(f"op {op.name!r}: the stability lint found\n  " + "\n  ".join(messages)
                      + "\nRewrite the body, or declare a stable derivative= (gn.lint(op) shows "
                        "every point)", NumericsWarning, stacklevel=stacklevel)
    return messages


# ``graphnn.lint`` is this function once graphnn is imported; its helpers stay reachable there
lint.declaration_warnings, lint.warn_declaration, lint.warns = declaration_warnings, warn_declaration, warns
lint.LintReport, lint.Finding = LintReport, Finding

__all__ = ["lint", "LintReport", "Finding", "declaration_warnings", "warn_declaration", "warns",
           "NumericsWarning", "RTOL"]
