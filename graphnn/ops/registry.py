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
import inspect

import sympy as sp

from ..errors import GraphMixError, ShapeError
from ..graph.node import Graph, Node, format_shape, join_dtypes
from .functions import IndexMax, IndexSum, check_translatable
from .index_body import IndexBody, parse_index_body

REGISTRY = {}


def _srepr_key(*parts):
    return "|".join(sp.srepr(p) if isinstance(p, sp.Basic) else repr(p) for p in parts)


def _graph_of(args, op=None):
    """The graph of an op's node inputs, which must all be one graph's."""
    nodes = [a for a in args if isinstance(a, Node)]
    if not nodes:
        raise TypeError("an op needs at least one graph node among its inputs")
    graph = nodes[0].graph
    for other in nodes[1:]:
        if other.graph is not graph:
            raise GraphMixError(
                f"op {getattr(op, 'name', '?')!r}: input {nodes[0].name!r} belongs to graph "
                f"{graph.name!r} and input {other.name!r} to graph {other.graph.name!r}; build "
                f"both in one graph, or reuse a network in another with gn.as_layer")
    return graph


def as_node(value, graph):
    """Nodes pass through; numbers and arrays become constants in ``graph``."""
    if isinstance(value, Node):
        return value
    return graph.constant(value)


def sympy_number(value):
    if isinstance(value, bool):
        return sp.Integer(int(value))
    if isinstance(value, int):
        return sp.Integer(value)
    return sp.Float(value)


class OpBase:
    """What every op shares: a name, argument names, attributes with defaults."""

    kind = "op"

    def __init__(self, name, arg_names, attr_defaults, doc=None):
        self.name = name
        self.arg_names = tuple(arg_names)
        self.attr_defaults = dict(attr_defaults)
        self.__doc__ = doc

    def resolve_attrs(self, attrs):
        unknown = set(attrs) - set(self.attr_defaults)
        if unknown:
            raise TypeError(f"op {self.name!r} has no attribute(s) {sorted(unknown)}; "
                            f"it takes {sorted(self.attr_defaults) or 'none'}")
        full = dict(self.attr_defaults)
        full.update(attrs)
        return full

    def __call__(self, *args, name=None, **attrs):
        if len(args) != len(self.arg_names):
            raise TypeError(f"op {self.name!r} takes {len(self.arg_names)} inputs "
                            f"({', '.join(self.arg_names)}), got {len(args)}")
        graph = _graph_of(args, self)
        inputs = [as_node(a, graph) for a in args]
        attrs = self.resolve_attrs(attrs)
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
            expr = sp.sympify(fn(*self.symbols, **self.attr_symbols))
        self.symbolic_expr = check_translatable(expr, name)
        self.key = ("elementwise", name, _srepr_key(self.symbolic_expr))
        self._expr = functools.lru_cache(maxsize=None)(self._expr_uncached)
        self._derivative = functools.lru_cache(maxsize=None)(self._derivative_uncached)

    def _expr_uncached(self, attr_items):
        subs = {self.attr_symbols[k]: sympy_number(v) for k, v in attr_items if k in self.attr_symbols}
        return self.symbolic_expr.xreplace(subs) if subs else self.symbolic_expr

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
        return broadcast_shapes(inputs, self.name)


class IndexOp(OpBase):
    """An op in index notation; ``builder(*args, **attrs)`` returns its body."""

    kind = "index"

    def __init__(self, name, builder=None, arg_names=(), attr_defaults=None, body=None, doc=None):
        super().__init__(name, arg_names, attr_defaults or {}, doc)
        self.builder = builder
        self.fixed_body = body
        self.key = ("index", name, body.key if body is not None else None)
        self._bodies = {}

    def body(self, inputs_or_shapes, attrs=()):
        """The :class:`IndexBody` for these input shapes and attributes."""
        if self.fixed_body is not None:
            return self.fixed_body
        shapes = tuple(n.shape if isinstance(n, Node) else tuple(n) for n in inputs_or_shapes)
        attrs = dict(attrs)
        cache_key = (shapes, tuple(sorted((k, repr(v)) for k, v in attrs.items())))
        if cache_key not in self._bodies:
            from .index_body import Arg
            args = [Arg(a, s) for a, s in zip(self.arg_names, shapes)]
            expr_out = self.builder(*args, **attrs)
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


def _signature(fn):
    params = inspect.signature(fn).parameters.values()
    args = [p.name for p in params if p.default is inspect.Parameter.empty]
    attrs = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return args, attrs


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
        args, attrs = _signature(f)
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
        args, attrs = _signature(f)
        op = IndexOp(name or f.__name__, f, args, attrs, doc=f.__doc__)
        REGISTRY[op.name] = op
        functools.update_wrapper(op, f, updated=())
        return op
    return wrap(fn) if fn is not None else wrap


__all__ = ["ElementwiseOp", "IndexOp", "IndexBody", "IndexSum", "IndexMax", "elementwise",
           "index_op", "REGISTRY", "Graph", "broadcast_shapes", "as_node"]
