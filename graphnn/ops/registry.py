"""Op declarations: every op is one SymPy body.

Two kinds of op, one idea:

* :class:`ElementwiseOp` -- a scalar expression of its inputs, applied with
  NumPy broadcasting. ``@elementwise def swish(x): return x * Sigmoid(x)``.
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

import numpy as np
import sympy as sp

from ..errors import ArgumentError, GraphMixError, OpDeclarationError, ShapeError
from ..graph.node import Graph, Node, format_shape, join_dtypes
from .functions import IndexMax, IndexSum, check_body
from .index_body import IndexBody, parse_index_body

REGISTRY = {}


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
    """A scalar SymPy expression applied elementwise with broadcasting."""

    kind = "elementwise"

    def __init__(self, name, fn=None, arg_names=(), attr_defaults=None, expr=None, doc=None):
        super().__init__(name, arg_names, attr_defaults or {}, doc)
        self.symbols = tuple(sp.Symbol(a, real=True) for a in self.arg_names)
        self.attr_symbols = {k: sp.Symbol(k, real=True) for k in self.attr_defaults}
        if expr is None:
            expr = _call_builder(fn, name, *self.symbols, **self.attr_symbols)
        self._allowed = frozenset((*self.symbols, *self.attr_symbols.values()))
        self.symbolic_expr = check_body(expr, name, symbols=self._allowed)
        self.digest = _digest("elementwise", name, self.arg_names, sorted(self.attr_defaults),
                              sp.srepr(self.symbolic_expr))
        self.key = ("elementwise", name, self.digest)
        self._expr = functools.lru_cache(maxsize=None)(self._expr_uncached)
        self._derivative = functools.lru_cache(maxsize=None)(self._derivative_uncached)

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
        return sp.diff(self._expr(attr_items), self.symbols[position])

    def derivative(self, position, attrs=()):
        """``d body / d input[position]`` by ``sp.diff`` (cached)."""
        items = tuple(sorted(dict(attrs).items()))
        return self._derivative(items, position)

    def infer_shape(self, inputs, attrs):
        self.expr(attrs)   # refuses attribute values that make the body incomputable
        return broadcast_shapes(inputs, self.name)


class IndexOp(OpBase):
    """An op in index notation; ``builder(*args, **attrs)`` returns its body."""

    kind = "index"

    def __init__(self, name, builder=None, arg_names=(), attr_defaults=None, body=None, doc=None,
                 attr_kinds=None):
        super().__init__(name, arg_names, attr_defaults or {}, doc, attr_kinds)
        self.builder = builder
        self.fixed_body = body
        # a builder's body depends on the input shapes and attributes: node_key hashes it per node
        self.key = ("index", name, _digest(body.key) if body is not None else None)
        self._bodies = {}

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


def elementwise(fn=None, *, name=None):
    """Declare an elementwise op from a function returning its SymPy body.

    Positional parameters are inputs; keyword parameters with defaults are
    attributes (they stay symbols in the displayed formula).

    >>> import graphnn as gn
    >>> @gn.elementwise
    ... def swish(x):
    ...     return x * gn.Sigmoid(x)
    >>> swish.derivative(0)
    x*(1 - Sigmoid(x))*Sigmoid(x) + Sigmoid(x)
    """
    def wrap(f):
        args, attrs, _ = _signature(f, name or f.__name__)
        op = ElementwiseOp(name or f.__name__, f, args, attrs, doc=f.__doc__)
        REGISTRY[op.name] = op
        functools.update_wrapper(op, f, updated=())
        return op
    return wrap(fn) if fn is not None else wrap


def index_op(fn=None, *, name=None):
    """Declare an op in index notation.

    The function receives one :class:`~graphnn.ops.index_body.Arg` per input
    (``x[n, i]`` makes an access, ``x.shape`` is known) and returns
    ``(out_indices, body)``.

    >>> import graphnn as gn
    >>> @gn.index_op
    ... def row_sums(x):
    ...     n, i = gn.indices("n i")
    ...     return (n,), gn.IndexSum(x[n, i], i)
    """
    def wrap(f):
        args, attrs, kinds = _signature(f, name or f.__name__)
        op = IndexOp(name or f.__name__, f, args, attrs, doc=f.__doc__, attr_kinds=kinds)
        REGISTRY[op.name] = op
        functools.update_wrapper(op, f, updated=())
        return op
    return wrap(fn) if fn is not None else wrap


__all__ = ["ElementwiseOp", "IndexOp", "IndexBody", "IndexSum", "IndexMax", "elementwise",
           "index_op", "REGISTRY", "Graph", "broadcast_shapes", "as_node", "AttrKind", "Ints",
           "NUMBER", "BOOL", "INT", "SHAPE", "PLAIN"]
