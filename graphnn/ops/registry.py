"""Op declarations: every op is one SymPy body.

Two kinds of op, one idea:

* :class:`ElementwiseOp` -- a scalar expression of its inputs, applied with
  NumPy broadcasting. ``@elementwise def my_swish(x): return x * Sigmoid(x)``.
* :class:`IndexOp` -- index notation over tensors, e.g.
  ``out[n, j] = IndexSum(x[n, i] * W[i, j], i) + b[j]``; sums and maxima over
  loop indices, broadcasting by omitted indices.

Derivatives (``sp.diff``), the backward pass, the reference executor and the
code printers all read these bodies; nothing else describes an op.
"""
import functools
import hashlib
import inspect
import math
import sys
from collections.abc import Sequence

import numpy as np
import sympy as sp

from ..errors import ArgumentError, GraphMixError, OpDeclarationError, ShapeError
from ..graph.node import Graph, Node, format_shape, join_dtypes
from .functions import IndexMax, IndexSum, check_body
from .index_body import IndexBody, parse_index_body

REGISTRY = {}


class _Activations(Sequence):
    """The names of the registered ops declared ``activation=True``, in declaration order.

    Live: an op a user declares with ``@gn.elementwise(activation=True)`` joins it, and
    ``dense(..., activation=name)`` accepts it."""

    def _names(self):
        return tuple(n for n, op in REGISTRY.items() if getattr(op, "activation", False))

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self):
        return len(self._names())

    def __contains__(self, name):
        op = REGISTRY.get(name) if isinstance(name, str) else None
        return bool(getattr(op, "activation", False))

    def __repr__(self):
        return repr(self._names())


ACTIVATIONS = _Activations()


def _digest(*parts):
    """A content hash: an op's identity in node keys, compile-cache keys and saved files."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def _call_builder(fn, op_name, *args, **kwargs):
    """Run a user's body builder; Python control flow on a SymPy condition is refused by name."""
    try:
        return fn(*args, **kwargs)
    except TypeError as error:
        if "truth value of Relational" not in str(error):
            raise
        raise OpDeclarationError(
            f"op {op_name!r}: its builder tests a SymPy condition with Python's if/and/or/max/min "
            f"({error}); write Piecewise((value, condition), (other, True)), sp.Max or sp.Min "
            f"instead") from None


# -- attributes: each has a kind that says which values it takes ----------------------------

_MAX_INT = 2 ** 31 - 1   # int attributes end up in index arithmetic of generated kernels


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


class AttrKind:
    """The values an op attribute takes. ``convert(value)`` returns the value in its plain
    Python form (numpy scalars -> int/float, lists -> tuples) or raises ``ValueError``.

    An index op's builder declares a kind by annotating the keyword parameter
    (``stride: Ints(low=1, length=2) = 1``, ``keepdims: bool = False``); without an
    annotation the kind follows the default (bool, int, float, anything else plain).
    Elementwise attributes are real numbers (bools where the default is a bool)."""

    def __init__(self, what, convert):
        self.what = what
        self.convert = convert

    def __repr__(self):
        return f"<attribute kind: {self.what}>"


def _number(value):
    if not (_is_int(value) or isinstance(value, (float, np.floating))):
        raise ValueError
    value = int(value) if _is_int(value) else float(value)
    try:
        finite = math.isfinite(float(value))
    except OverflowError:    # an int beyond float64
        finite = False
    if not finite:
        raise ValueError
    return value


def _bool(value):
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError
    return bool(value)


def _plain(value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if _is_int(value) or isinstance(value, (float, np.floating)):
        return _number(value)
    if isinstance(value, (tuple, list)):
        return tuple(_plain(v) for v in value)
    raise ValueError


def _string(value):
    if not isinstance(value, str):
        raise ValueError
    return value


def _int_in(low, high):
    def convert(value):
        if not _is_int(value) or not low <= value <= high:
            raise ValueError
        return int(value)
    return convert


def Ints(low=None, length=None, optional=False):  # noqa: N802 - reads as a type in annotations
    """An int, or a tuple (or list) of ints -- ``length`` of them when given -- each at least
    ``low``; None too when ``optional``."""
    low = -_MAX_INT if low is None else low
    one = _int_in(low, _MAX_INT)
    what = "an int" + (f" >= {low}" if low > -_MAX_INT else "")
    what += {None: " or a tuple of them", 2: " or a pair of them"}.get(length, f" or a tuple of {length}")
    what += ", or None" if optional else ""

    def convert(value):
        if value is None and optional:
            return None
        if isinstance(value, (tuple, list)):
            if length is not None and len(value) != length:
                raise ValueError
            return tuple(one(v) for v in value)
        return one(value)
    return AttrKind(what, convert)


def _shape(value):
    if not isinstance(value, (tuple, list)):
        raise ValueError
    one = _int_in(1, _MAX_INT)
    return tuple(None if d is None else one(d) for d in value)


NUMBER = AttrKind("a real finite number (an int or a float, not a bool)", _number)
BOOL = AttrKind("True or False", _bool)
INT = AttrKind(f"an int (at most {_MAX_INT} in size)", _int_in(-_MAX_INT, _MAX_INT))
SHAPE = AttrKind("a tuple of positive ints (None for the batch axis)", _shape)
PLAIN = AttrKind("None, a bool, a finite number, a string, or a tuple of them", _plain)
_BY_TYPE = {bool: BOOL, int: INT, float: NUMBER, str: AttrKind("a string", _string)}


def attr_kind(default, annotation=inspect.Parameter.empty, elementwise=False):
    """The :class:`AttrKind` of an attribute with this default and annotation."""
    if elementwise:   # substituted into the SymPy body
        return BOOL if isinstance(default, bool) else NUMBER
    if isinstance(annotation, AttrKind):
        return annotation
    if isinstance(annotation, type) and annotation in _BY_TYPE:
        return _BY_TYPE[annotation]
    for kind in (bool, int, float):   # bool before int: True is an int
        if isinstance(default, kind):
            return _BY_TYPE[kind]
    return PLAIN


def _graph_of(args, op=None):
    """The graph of an op's node inputs, which must all be one graph's."""
    nodes = [a for a in args if isinstance(a, Node)]
    if not nodes:
        raise ArgumentError(f"op {getattr(op, 'name', '?')!r} needs at least one graph node among "
                            f"its inputs, got {', '.join(type(a).__name__ for a in args) or 'none'}")
    graph = nodes[0].graph
    for other in nodes[1:]:
        if other.graph is not graph:
            raise GraphMixError(
                f"op {getattr(op, 'name', '?')!r}: input {nodes[0].name!r} belongs to graph "
                f"{graph.name!r} and input {other.name!r} to graph {other.graph.name!r}; build "
                f"both in one graph, or reuse a network in another with gn.as_layer")
    return graph


def as_node(value, graph, what="an op"):
    """Nodes pass through; numbers and arrays become constants in ``graph``."""
    if isinstance(value, Node):
        return value
    try:
        return graph.constant(value)
    except (TypeError, ValueError):
        raise ArgumentError(f"{what}: input {_short(value)} is neither a graph node nor a number or "
                            f"an array of numbers") from None


def sympy_number(value):
    if isinstance(value, bool):
        return sp.Integer(int(value))
    if isinstance(value, int):
        return sp.Integer(value)
    return sp.Float(value)


def _flag(value, op_name, what):
    if not isinstance(value, (bool, np.bool_)):
        raise OpDeclarationError(f"op {op_name!r}: {what}= must be True or False, got {_short(value)}")
    return bool(value)


def _real(value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError
    value = float(value)
    if math.isnan(value):
        raise ValueError
    return value


def _interval(value):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError
    low, high = (_real(v) for v in value)
    if not low < high:
        raise ValueError
    return (low, high)


def _points(value):
    if isinstance(value, (tuple, list)):
        points = tuple(_real(v) for v in value)
    else:
        points = (_real(value),)
    if not all(math.isfinite(p) for p in points):
        raise ValueError
    return points


def _per_input(value, arg_names, op_name, what, convert, default):
    """One entry per input from: None (the default for each), a dict by input name, or one
    value (which then belongs to the first input; the others get the default)."""
    explain = {"domain": "(low, high) with low < high (math.inf for no bound)",
               "kinks": "a number or a tuple of finite numbers"}[what]
    if isinstance(value, dict) and set(value) - set(arg_names):
        raise OpDeclarationError(f"op {op_name!r}: {what}= names {sorted(set(value) - set(arg_names))}, "
                                 f"which are not inputs ({', '.join(arg_names)})")
    try:
        if value is None:
            return tuple(default for _ in arg_names)
        if isinstance(value, dict):
            return tuple(convert(value[a]) if a in value else default for a in arg_names)
        return (convert(value),) + tuple(default for _ in arg_names[1:])
    except (ValueError, TypeError):
        raise OpDeclarationError(f"op {op_name!r}: {what}={_short(value)} must be {explain}, or a "
                                 f"dict of them by input name") from None


class OpBase:
    """What every op shares: a name, argument names, attributes with defaults and kinds."""

    kind = "op"

    def __init__(self, name, arg_names, attr_defaults, doc=None, attr_kinds=None):
        self.name = name
        self.arg_names = tuple(arg_names)
        kinds = dict(attr_kinds or {})
        self.attr_kinds = {k: kinds.get(k) or attr_kind(v, elementwise=self.kind == "elementwise")
                           for k, v in dict(attr_defaults).items()}
        try:
            self.attr_defaults = self.check_attrs(attr_defaults)
        except ArgumentError as error:
            raise OpDeclarationError(f"{error} (the default in the declaration)") from None
        self.__doc__ = doc

    def check_attrs(self, attrs, node_name=None):
        """``attrs`` (declared ones) in plain form, or an :class:`ArgumentError` naming the op,
        the node, the attribute, its value and what it must be."""
        out = dict(attrs)
        for k, value in attrs.items():
            kind = self.attr_kinds.get(k)
            if kind is None:
                continue
            try:
                out[k] = kind.convert(value)
            except (ValueError, TypeError):
                where = f"op {self.name!r}" + (f" (node {node_name!r})" if node_name else "")
                raise ArgumentError(f"{where}: attribute {k}={_short(value)} ({type(value).__name__}) "
                                    f"must be {kind.what}") from None
        return out

    def resolve_attrs(self, attrs, node_name=None):
        unknown = set(attrs) - set(self.attr_defaults)
        if unknown:
            raise ArgumentError(f"op {self.name!r} has no attribute(s) {sorted(unknown)}; "
                                f"it takes {sorted(self.attr_defaults) or 'none'}")
        full = dict(self.attr_defaults)
        full.update(self.check_attrs(attrs, node_name))
        return full

    def node_key(self, node):
        """This op's identity as ``node`` uses it: a hash of the declaration's content."""
        raise NotImplementedError

    def __call__(self, *args, name=None, **attrs):
        if len(args) != len(self.arg_names):
            raise ArgumentError(f"op {self.name!r} takes {len(self.arg_names)} inputs "
                                f"({', '.join(self.arg_names)}), got {len(args)}")
        if name is not None and not isinstance(name, str):
            raise ArgumentError(f"op {self.name!r}: name {_short(name)} is not a string")
        graph = _graph_of(args, self)
        inputs = [as_node(a, graph, f"op {self.name!r}") for a in args]
        attrs = self.resolve_attrs(attrs, name or self.name)
        shape = self.infer_shape(inputs, attrs)
        dtype = join_dtypes(inputs, f"op {self.name!r}")
        return Node("op", self, inputs, attrs, shape, dtype,
                    graph.unique_name(name or self.name), graph, graph.current_scope)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"


class ElementwiseOp(OpBase):
    """A scalar SymPy expression applied elementwise with broadcasting.

    Besides its body a declaration may carry what the tests and tools need to know about it
    (see :func:`elementwise`): ``activation`` (usable as ``dense(..., activation=name)``),
    ``domain`` (one (low, high) per input), ``kinks`` (points per input where the derivative
    jumps) and ``derivative`` (an override of ``sp.diff``, checked against it)."""

    kind = "elementwise"

    def __init__(self, name, fn=None, arg_names=(), attr_defaults=None, expr=None, doc=None,
                 derivative=None, activation=False, domain=None, kinks=None):
        super().__init__(name, arg_names, attr_defaults or {}, doc)
        self.symbols = tuple(sp.Symbol(a, real=True) for a in self.arg_names)
        self.attr_symbols = {k: sp.Symbol(k, real=True) for k in self.attr_defaults}
        if expr is None:
            expr = _call_builder(fn, name, *self.symbols, **self.attr_symbols)
        self._allowed = frozenset((*self.symbols, *self.attr_symbols.values()))
        self.symbolic_expr = check_body(expr, name, symbols=self._allowed)
        self.activation = _flag(activation, name, "activation")
        self.domain = _per_input(domain, self.arg_names, name, "domain", _interval,
                                 (-math.inf, math.inf))
        self.kinks = _per_input(kinks, self.arg_names, name, "kinks", _points, ())
        self.derivative_override = self._declared_derivatives(derivative)
        override = (None if self.derivative_override is None
                    else tuple(sp.srepr(d) for d in self.derivative_override))
        self.digest = _digest("elementwise", name, self.arg_names, sorted(self.attr_defaults),
                              sp.srepr(self.symbolic_expr), *(() if override is None else (override,)))
        self.key = ("elementwise", name, self.digest)
        self._expr = functools.lru_cache(maxsize=None)(self._expr_uncached)
        self._derivative = functools.lru_cache(maxsize=None)(self._derivative_uncached)

    def _declared_derivatives(self, derivative):
        """The override's expressions, one per input (attributes as symbols), checked like bodies."""
        if derivative is None:
            return None
        if not callable(derivative):
            raise OpDeclarationError(f"op {self.name!r}: derivative= must be a function of the op's "
                                     f"inputs (and attributes) returning its derivative, got "
                                     f"{_short(derivative)}")
        value = _call_builder(derivative, self.name, *self.symbols, **self.attr_symbols)
        n = len(self.symbols)
        if isinstance(value, dict):
            unknown = set(value) - set(self.arg_names)
            missing = set(self.arg_names) - set(value)
            if unknown or missing:
                raise OpDeclarationError(
                    f"op {self.name!r}: derivative= returned derivatives for {sorted(value)}; give one "
                    f"for each input ({', '.join(self.arg_names)})")
            value = [value[a] for a in self.arg_names]
        elif n == 1 and not isinstance(value, (tuple, list)):
            value = [value]
        if not isinstance(value, (tuple, list)) or len(value) != n:
            raise OpDeclarationError(
                f"op {self.name!r}: derivative= must return {n} expression(s), one per input "
                f"({', '.join(self.arg_names)}), as a tuple or a dict by input name")
        return tuple(check_body(d, f"{self.name} (derivative)", symbols=self._allowed) for d in value)

    @property
    def fast_math(self):
        """Whether float32 CPU code may use a fast-math form here (``fast_math=True``): the body or
        a derivative calls exp, tanh or erf, directly or through a primitive's helper."""
        from ..codegen.fastmath import FAST_NAMES
        exprs = [self.symbolic_expr]
        exprs += [self.derivative(k, self.attr_defaults) for k in range(len(self.symbols))]   # cached
        for e in exprs:
            for f in e.atoms(sp.Function):
                if type(f).__name__ in FAST_NAMES:
                    return True
                source = getattr(type(f), "scalar_source", None) or ""
                if any(f"math.{n}(" in source for n in FAST_NAMES):
                    return True
        return False

    def node_key(self, node):
        return self.digest

    def _expr_uncached(self, attr_items):
        attrs = self.check_attrs(dict(attr_items))
        subs = {self.attr_symbols[k]: sympy_number(v) for k, v in attrs.items() if k in self.attr_symbols}
        if not subs:
            return self.symbolic_expr
        expr = self.symbolic_expr.xreplace(subs)
        try:   # log(alpha) with alpha = -1 is complex, alpha * 1e308 overflows...
            return check_body(expr, self.name, symbols=self._allowed)
        except OpDeclarationError as error:
            shown = ", ".join(f"{k}={v!r}" for k, v in sorted(attrs.items()))
            raise ArgumentError(f"op {self.name!r}: with {shown} its body is {expr}, which graphnn "
                                f"cannot compute: {error}") from None

    def expr(self, attrs=()):
        """The body with attribute values substituted, over ``self.symbols``."""
        items = tuple(sorted(dict(attrs).items()))
        return self._expr(items)

    def _derivative_uncached(self, attr_items, position):
        if self.derivative_override is None:
            return sp.diff(self._expr(attr_items), self.symbols[position])
        attrs = self.check_attrs(dict(attr_items))
        subs = {self.attr_symbols[k]: sympy_number(v) for k, v in attrs.items() if k in self.attr_symbols}
        return self.derivative_override[position].xreplace(subs)

    def derived_derivative(self, position, attrs=()):
        """``sp.diff`` of the body, whatever the declaration overrides (the override's check)."""
        return sp.diff(self.expr(attrs), self.symbols[position])

    def derivative(self, position, attrs=()):
        """``d body / d input[position]``: the declared override, else ``sp.diff`` (cached)."""
        items = tuple(sorted(dict(attrs).items()))
        return self._derivative(items, position)

    def infer_shape(self, inputs, attrs):
        self.expr(attrs)   # refuses attribute values that make the body incomputable
        return broadcast_shapes(inputs, self.name)


class IndexOp(OpBase):
    """An op in index notation; ``builder(*args, **attrs)`` returns its body."""

    kind = "index"

    def __init__(self, name, builder=None, arg_names=(), attr_defaults=None, body=None, doc=None,
                 attr_kinds=None, examples=()):
        super().__init__(name, arg_names, attr_defaults or {}, doc, attr_kinds)
        self.builder = builder
        self.fixed_body = body
        # a builder's body depends on the input shapes and attributes: node_key hashes it per node
        self.key = ("index", name, _digest(body.key) if body is not None else None)
        self._bodies = {}
        self.examples = tuple(self._example(e) for e in (examples or ()))

    def _example(self, example):
        """``{input: shape, attribute: value}`` checked: every input has a shape, the body builds."""
        if not isinstance(example, dict):
            raise OpDeclarationError(f"op {self.name!r}: an example is a dict of input shapes and "
                                     f"attribute values by name, got {_short(example)}")
        unknown = set(example) - set(self.arg_names) - set(self.attr_defaults)
        missing = set(self.arg_names) - set(example)
        if unknown or missing:
            raise OpDeclarationError(
                f"op {self.name!r}: example {_short(example)} "
                + (f"names {sorted(unknown)}, which are neither inputs nor attributes; " if unknown else "")
                + (f"lacks the shape of {sorted(missing)}; " if missing else "")
                + f"give a shape for each input ({', '.join(self.arg_names)})")
        shapes = []
        for a in self.arg_names:
            try:
                shape = SHAPE.convert(example[a])
            except ValueError:
                raise OpDeclarationError(f"op {self.name!r}: example shape {a}={_short(example[a])} "
                                         f"must be {SHAPE.what}") from None
            shapes.append(shape)
        attrs = {k: v for k, v in example.items() if k in self.attr_defaults}
        try:
            attrs = self.check_attrs(attrs)
            self.body(shapes, attrs)
        except (ArgumentError, ShapeError) as error:
            raise OpDeclarationError(f"op {self.name!r}: example {_short(example)} does not build: "
                                     f"{error}") from None
        return {**dict(zip(self.arg_names, shapes)), **attrs}

    def node_key(self, node):
        return _digest("index", self.name, self.arg_names, sorted(self.attr_defaults),
                       self.node_body(node).key)

    def body(self, inputs_or_shapes, attrs=()):
        """The :class:`IndexBody` for these input shapes and attributes."""
        if self.fixed_body is not None:
            return self.fixed_body
        shapes = tuple(n.shape if isinstance(n, Node) else tuple(n) for n in inputs_or_shapes)
        attrs = dict(attrs)
        cache_key = (shapes, tuple(sorted((k, repr(v)) for k, v in attrs.items())))
        if cache_key not in self._bodies:
            from .index_body import Arg
            attrs = self.check_attrs(attrs)
            args = [Arg(a, s) for a, s in zip(self.arg_names, shapes)]
            expr_out = _call_builder(self.builder, self.name, *args, **attrs)
            self._bodies[cache_key] = parse_index_body(self.name, args, expr_out)
        return self._bodies[cache_key]

    def infer_shape(self, inputs, attrs):
        try:
            return self.body(inputs, attrs).out_shape
        except ShapeError as error:
            # the builder sees argument names only; add the nodes and their shapes
            detail = ", ".join(f"{a}={n.name!r} {format_shape(n.shape)}"
                               for a, n in zip(self.arg_names, inputs))
            raise ShapeError(f"{error} [op {self.name!r} on {detail}]") from None

    def node_body(self, node):
        attrs = {k: v for k, v in node.attrs if k in self.attr_defaults}
        return self.body(node.inputs, attrs)


def broadcast_shapes(inputs, what):
    """NumPy broadcasting; the batch axis (None) broadcasts only with 1 or None."""
    rank = max(len(n.shape) for n in inputs)
    out = []
    for axis in range(rank):
        dims = []
        for n in inputs:
            offset = rank - len(n.shape)
            dims.append((n, n.shape[axis - offset] if axis >= offset else 1))
        chosen = 1
        for n, d in dims:
            if d == 1:
                continue
            if chosen == 1:
                chosen = d
            elif d != chosen:
                a = next(m for m, e in dims if e == chosen)
                raise ShapeError(
                    f"op {what!r}: shapes do not broadcast: {a.name!r} has shape "
                    f"{format_shape(a.shape)} and {n.name!r} has shape {format_shape(n.shape)}")
        out.append(chosen)
    # a batch axis must stay in front
    for axis, d in enumerate(out):
        if d is None and axis != 0:
            names = ", ".join(f"{n.name} {format_shape(n.shape)}" for n in inputs)
            raise ShapeError(f"op {what!r}: broadcasting would move the batch axis ({names})")
    return tuple(out)


def _signature(fn, op_name):
    """(input names, {attribute: default}, {attribute: AttrKind}) of a builder."""
    try:
        params = inspect.signature(fn, eval_str=True).parameters.values()
    except Exception:   # an annotation that does not evaluate: it declares nothing to graphnn
        params = inspect.signature(fn).parameters.values()
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise OpDeclarationError(f"op {op_name!r}: its builder takes {p}; an op has named inputs "
                                     f"(parameters without defaults) and attributes (with defaults)")
    args = [p.name for p in params if p.default is inspect.Parameter.empty]
    attrs = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return args, attrs, {p.name: attr_kind(p.default, p.annotation) for p in params if p.name in attrs}


_CHECK_POINTS = (-3.7, -1.3, -0.45, -1e-3, 0.3, 0.85, 2.2, 5.1, 40.0, -40.0)
_CHECK_DIGITS = 40


def _check_points(op):
    """Points inside every input's domain, away from its kinks, one list per input."""
    columns = []
    for (low, high), kinks in zip(op.domain, op.kinks):
        inside = [x for x in _CHECK_POINTS if low < x < high and all(abs(x - k) > 1e-2 for k in kinks)]
        if len(inside) < 3 and math.isfinite(low) and math.isfinite(high):
            inside = [low + (high - low) * f for f in (0.13, 0.37, 0.61, 0.88)]
        elif len(inside) < 3:
            start = low if math.isfinite(low) else high - 10.0
            inside = [start + f for f in (0.2, 1.1, 3.3, 7.9)]
        columns.append(inside)
    count = max(len(c) for c in columns)
    return [tuple(c[(k * (i + 1)) % len(c)] for i, c in enumerate(columns)) for k in range(count)]


def check_derivative(op, attrs=None, tolerance=1e-25):
    """Check an op's declared derivative against ``sp.diff`` of its body.

    Both are evaluated with mpmath at 40 digits at points inside the op's domain and away from
    its kinks (with the attributes' defaults, or ``attrs``); any relative difference above
    ``tolerance`` raises :class:`OpDeclarationError` naming the input and the point. An op
    without an override passes trivially. Symbolic equality (``sp.simplify``) is stronger
    where SymPy can decide it; this check decides everywhere, numerically."""
    if op.kind != "elementwise" or op.derivative_override is None:
        return
    import mpmath
    from .primitives import exact_form
    attrs = dict(op.attr_defaults if attrs is None else op.resolve_attrs(attrs))
    points = _check_points(op)
    for position, name in enumerate(op.arg_names):
        declared = exact_form(op.derivative(position, attrs))
        derived = exact_form(op.derived_derivative(position, attrs))
        both = sp.lambdify(op.symbols, [declared, derived], modules="mpmath")
        checked = 0
        with mpmath.workdps(_CHECK_DIGITS):
            for point in points:
                try:
                    a, b = both(*(mpmath.mpf(x) for x in point))
                    a, b = mpmath.mpf(a), mpmath.mpf(b)
                except (ZeroDivisionError, ValueError, TypeError, OverflowError):
                    continue    # undefined there (a pole, or outside the math's real domain)
                if not (mpmath.isfinite(a) and mpmath.isfinite(b)):
                    continue
                checked += 1
                if abs(a - b) > tolerance * max(1, abs(b)):
                    at = ", ".join(f"{n}={x:g}" for n, x in zip(op.arg_names, point))
                    raise OpDeclarationError(
                        f"op {op.name!r}: the declared derivative by {name!r} is "
                        f"{op.derivative_override[position]}, which is "
                        f"{mpmath.nstr(a, 12)} at {at}; sp.diff of the body gives "
                        f"{op.derived_derivative(position, attrs)} = {mpmath.nstr(b, 12)} there. "
                        f"Fix the derivative, or drop derivative= to use sp.diff's")
        if checked < 3:
            raise OpDeclarationError(
                f"op {op.name!r}: its declared derivative by {name!r} could not be checked against "
                f"sp.diff (defined at only {checked} of the sample points in the domain "
                f"{op.domain[position]}); declare the op's domain= so the check can sample it")


def _check_clash(op_name, replace):
    """Refuse a declaration that would take a built-in op's name, unless it says ``replace=True``."""
    if _flag(replace, op_name, "replace"):
        return
    # graphnn.ops.BUILTINS is set once graphnn's own ops are declared (absent while they are)
    if op_name in getattr(sys.modules.get(__package__), "BUILTINS", ()):
        raise OpDeclarationError(
            f"op {op_name!r}: graphnn has a built-in op of that name, which this declaration would "
            f"replace in every graph that uses it; choose another name (e.g. 'my_{op_name}'), or "
            f"pass replace=True to replace the built-in on purpose")


def elementwise(fn=None, *, name=None, derivative=None, activation=False, domain=None, kinks=None,
                lint=True, replace=False):
    """Declare an elementwise op from a function returning its SymPy body.

    Positional parameters are inputs; keyword parameters with defaults are
    attributes (they stay symbols in the displayed formula).

    >>> import graphnn as gn
    >>> @gn.elementwise
    ... def my_swish(x):
    ...     return x * gn.Sigmoid(x)
    >>> my_swish.derivative(0)
    x*(1 - Sigmoid(x))*Sigmoid(x) + Sigmoid(x)

    Keywords (all optional; the op's tests and tools read them):

    * ``derivative``: a function of the same parameters returning the derivative (a tuple, or a
      dict by input name, for several inputs) to use instead of ``sp.diff`` of the body -- a
      form that does not cancel, say. It is checked against ``sp.diff`` at declaration,
      numerically in high precision (:func:`check_derivative`); a wrong one is refused.
    * ``activation``: the op is an activation: ``dense(..., activation=name)`` accepts it and
      ``gn.ACTIVATIONS`` lists it.
    * ``domain``: (low, high) of the first input, or a dict of them by input name (default:
      every real number); tests and :func:`graphnn.lint` sample inside it.
    * ``kinks``: points where the derivative jumps (first input, or a dict by input name).
    * ``lint``: run :func:`graphnn.lint` on the op (reference target, float32 and float64) and
      issue one :class:`~graphnn.errors.NumericsWarning` if its value or a derivative gives NaN
      or overflows where the exact math is finite, or loses digits to its own arithmetic
      (default True; graphnn's own ops are linted by its test suite instead).
    * ``replace``: the op takes the name of a built-in op (one in ``gn.BUILTINS``), which then
      means this op wherever a graph names it; without ``replace=True`` such a clash is an
      :class:`~graphnn.errors.OpDeclarationError`. Redeclaring one of your own ops under its
      name needs no ``replace`` (re-running a notebook cell replaces it).

    >>> @gn.elementwise(activation=True, derivative=lambda x: 1 / (1 + abs(x)) ** 2)
    ... def my_softsign(x):
    ...     return x / (1 + abs(x))
    >>> my_softsign.derivative(0)
    (Abs(x) + 1)**(-2)
    """
    def wrap(f, stacklevel=3):
        _check_clash(name or f.__name__, replace)
        args, attrs, _ = _signature(f, name or f.__name__)
        op = ElementwiseOp(name or f.__name__, f, args, attrs, doc=f.__doc__, derivative=derivative,
                           activation=activation, domain=domain, kinks=kinks)
        if op.derivative_override is not None:
            check_derivative(op)
        REGISTRY[op.name] = op
        if _flag(lint, op.name, "lint") and not str(getattr(f, "__module__", "")).startswith("graphnn."):
            from ..lint import warn_declaration
            warn_declaration(op, stacklevel=stacklevel)
        functools.update_wrapper(op, f, updated=())
        return op
    return wrap(fn, stacklevel=4) if fn is not None else wrap


def index_op(fn=None, *, name=None, examples=(), replace=False):
    """Declare an op in index notation.

    The function receives one :class:`~graphnn.ops.index_body.Arg` per input
    (``x[n, i]`` makes an access, ``x.shape`` is known) and returns
    ``(out_indices, body)``.

    >>> import graphnn as gn
    >>> @gn.index_op
    ... def row_sums(x):
    ...     n, i = gn.indices("n i")
    ...     return (n,), gn.IndexSum(x[n, i], i)

    ``examples``: input shapes and attribute values the op's tests run it on, one dict each,
    e.g. ``[{"x": (None, 4)}]`` (None: the batch axis). The generated sweeps check every
    example's gradient against finite differences and its compiled code against the reference.

    ``replace``: as for :func:`elementwise`, taking a built-in op's name needs ``replace=True``.
    """
    def wrap(f):
        _check_clash(name or f.__name__, replace)
        args, attrs, kinds = _signature(f, name or f.__name__)
        op = IndexOp(name or f.__name__, f, args, attrs, doc=f.__doc__, attr_kinds=kinds,
                     examples=examples)
        REGISTRY[op.name] = op
        functools.update_wrapper(op, f, updated=())
        return op
    return wrap(fn) if fn is not None else wrap


__all__ = ["ElementwiseOp", "IndexOp", "IndexBody", "IndexSum", "IndexMax", "elementwise", "check_derivative",
           "index_op", "REGISTRY", "ACTIVATIONS", "Graph", "broadcast_shapes", "as_node", "AttrKind", "Ints",
           "NUMBER", "BOOL", "INT", "SHAPE", "PLAIN"]
