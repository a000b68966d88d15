"""Nodes and graphs: the explicit DAG a user builds.

A :class:`Node` is immutable: kind (input, parameter, constant, op), the op
that computes it, its input nodes, attributes, shape and dtype. Its structural
key is a hash of all of that (names of op nodes excluded), so identical
subgraphs hash the same and the key of the outputs can key the compile cache.

A :class:`Graph` is the builder and namespace: it names nodes, owns parameter
values and remembers inputs, parameters and named outputs.
"""
import contextlib
import hashlib
import math
import re

import numpy as np

from ..errors import ArgumentError, DtypeError, GraphnnError, ShapeError
from . import init as initializers

FLOAT_DTYPES = ("float32", "float64")
MAX_DIM = 2 ** 31 - 1    # one axis of a shape (index arithmetic in kernels is 32-bit)
MAX_SEED = 2 ** 31 - 1   # a graph's seed is below this (graphnn.io loads the same range)


def short_repr(value, limit=80):
    """``repr(value)`` on one line, cut at ``limit`` characters."""
    text = re.sub(r"\n\s*", " ", repr(value))    # arrays print on several lines
    return text if len(text) <= limit else text[:limit] + "..."


def describe(value):
    """A value and its type for a message: ``1.5 (float)``."""
    return f"{short_repr(value)} ({type(value).__name__})"


def is_int(value):
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_finite_real(value):
    """An int (not a bool) or a float that is finite."""
    if not (is_int(value) or isinstance(value, (float, np.floating))):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:    # an int beyond float64
        return False


def check_name(name, what, empty=False):
    """``name`` if it is a string, else an :class:`ArgumentError` naming ``what``. Any text is a
    name (quotes, newlines, NUL, non-ASCII); the empty string only where ``empty`` says so (it
    stands for a default name there): an input, parameter or output needs a name to be fed,
    found and saved by."""
    if not isinstance(name, str):
        raise ArgumentError(f"{what}: name {describe(name)} is not a string; names are text, e.g. 'x'")
    if not name and not empty:
        raise ArgumentError(f"{what}: the name is empty; give it a name, e.g. 'x'")
    return name


def check_node(value, what, arg="input"):
    """``value`` if it is a graph node, else an :class:`ArgumentError` naming ``what`` and ``arg``."""
    if not isinstance(value, Node):
        raise ArgumentError(f"{what}: {arg} {describe(value)} is not a graph node; build one with a "
                            f"graph (g.input, g.parameter, g.constant) or an op")
    return value


class Node:
    """One value in the graph. Build nodes with a :class:`Graph` and ops."""

    __slots__ = ("kind", "op", "inputs", "attrs", "shape", "dtype", "name",
                 "graph", "scope", "role", "_key", "__weakref__")

    # ``array * node`` must build one op node: NumPy gives way to the reflected operators
    # below instead of making an object array of one node per element
    __array_ufunc__ = None

    def __init__(self, kind, op, inputs, attrs, shape, dtype, name, graph,
                 scope="", role="forward"):
        self.kind = kind
        self.op = op
        self.inputs = tuple(inputs)
        self.attrs = tuple(sorted(dict(attrs).items()))
        self.shape = tuple(shape)
        self.dtype = dtype
        self.name = name
        self.graph = graph
        self.scope = scope
        self.role = role
        self._key = None

    # -- identity -------------------------------------------------------
    def attr(self, key, default=None):
        for k, v in self.attrs:
            if k == key:
                return v
        return default

    @property
    def attr_dict(self):
        return dict(self.attrs)

    @property
    def op_name(self):
        return self.kind if self.op is None else self.op.name

    @property
    def key(self):
        """Structural hash: equal for structurally identical subgraphs."""
        # inputs' keys first, with an explicit stack: recursing into them would hit the
        # recursion limit on deep chains
        stack = [self]
        while stack:
            node = stack[-1]
            if node._key is not None:
                stack.pop()
                continue
            pending = [p for p in node.inputs if p._key is None]
            if pending:
                stack.extend(pending)
            else:
                stack.pop()
                node._key = node._own_key()
        return self._key

    def _own_key(self):
        """This node's hash, given its inputs' keys."""
        h = hashlib.sha256()
        # the op's identity is the content of its declaration (its body for these shapes and
        # attributes), so an op declared again under the same name with another body differs
        h.update(repr((self.kind, self.op.node_key(self) if self.op is not None else None,
                       self.shape, self.dtype)).encode())
        for k, v in self.attrs:
            h.update(k.encode("utf-8", "surrogatepass"))
            h.update(v.tobytes() if isinstance(v, np.ndarray) else repr(v).encode())
        if self.kind in ("input", "parameter"):
            h.update(self.name.encode("utf-8", "surrogatepass"))
        for node in self.inputs:
            h.update(node._key.encode())
        return h.hexdigest()[:32]

    @property
    def batched(self):
        return len(self.shape) > 0 and self.shape[0] is None

    @property
    def size(self):
        """Number of elements per example (batch axis excluded)."""
        return int(np.prod([d for d in self.shape if d is not None], dtype=np.int64))

    def __repr__(self):
        return f"<Node {self.name}: {self.op_name} {format_shape(self.shape)}>"

    def _repr_svg_(self):
        """Jupyter shows a node as the picture of the graph that computes it."""
        from ..render import render
        return render(self).svg()

    # -- operators build op nodes (ops import lazily: graph must not import ops) --
    def _ops(self):
        from .. import ops
        return ops

    def __add__(self, other):
        return self._ops().add(self, other)

    def __radd__(self, other):
        return self._ops().add(other, self)

    def __sub__(self, other):
        return self._ops().sub(self, other)

    def __rsub__(self, other):
        return self._ops().sub(other, self)

    def __mul__(self, other):
        return self._ops().mul(self, other)

    def __rmul__(self, other):
        return self._ops().mul(other, self)

    def __truediv__(self, other):
        return self._ops().div(self, other)

    def __rtruediv__(self, other):
        return self._ops().div(other, self)

    def __pow__(self, other):
        return self._ops().pow(self, other)

    def __rpow__(self, other):
        return self._ops().pow(other, self)

    def __neg__(self):
        return self._ops().neg(self)

    def __matmul__(self, other):
        return self._ops().matmul(self, other)

    def __rmatmul__(self, other):
        return self._ops().matmul(other, self)

    # nodes are identities in a DAG; keep hashing by object
    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other


def format_shape(shape):
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def normalize_shape(shape, what):
    if not isinstance(shape, (tuple, list)):
        hint = f"; write ({shape},) for one axis" if is_int(shape) else ""
        raise ShapeError(f"{what}: shape {describe(shape)} is not a tuple of dimensions{hint}")
    shape = tuple(shape)
    for axis, d in enumerate(shape):
        if d is None and axis == 0:
            continue
        if not is_int(d) or not 1 <= d <= MAX_DIM:
            raise ShapeError(f"{what}: shape {short_repr(shape)} is invalid (axis {axis} is "
                             f"{describe(d)}); use positive ints up to 2**31 - 1, and None only "
                             f"for the batch axis 0")
    return tuple(None if d is None else int(d) for d in shape)


def normalize_dtype(dtype, what):
    if dtype is None:
        return None
    try:
        if not isinstance(dtype, (str, type, np.dtype)):
            raise TypeError
        name = np.dtype(dtype).name
    except (TypeError, ValueError):
        raise DtypeError(f"{what}: dtype {describe(dtype)} is not a NumPy dtype; use 'float32' "
                         f"or 'float64' (or None for the compile dtype)") from None
    if name not in FLOAT_DTYPES:
        raise DtypeError(f"{what}: dtype {name} is not supported; use float32 or float64")
    return name


def real_array(value, what, arg="value"):
    """``value`` as a float64 array, or an :class:`ArgumentError` naming ``what`` and ``arg``:
    strings, complex numbers, graph nodes, SymPy symbols and other objects are not real numbers.
    NaN and infinity are values like any other."""
    if isinstance(value, Node):
        raise ArgumentError(f"{what}: {arg} {describe(value)} is a graph node, not a number or an "
                            f"array; use the node itself")
    try:
        kind = np.asarray(value).dtype.kind
        if kind not in "fiubO":     # strings, bytes, complex, dates
            raise TypeError
        return np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ArgumentError(f"{what}: {arg} {describe(value)} is not a real number or a rectangular "
                            f"array of real numbers") from None


def join_dtypes(nodes, what):
    """The explicit dtype shared by ``nodes`` (None = the compile dtype)."""
    explicit = {n.dtype for n in nodes if n.dtype is not None}
    if len(explicit) > 1:
        detail = ", ".join(f"{n.name}: {n.dtype}" for n in nodes if n.dtype is not None)
        raise DtypeError(f"{what}: inputs have different dtypes ({detail}); cast one of them")
    return explicit.pop() if explicit else None


class Graph:
    """A network under construction: a namespace for nodes and parameters.

    >>> import graphnn as gn
    >>> net = gn.Graph("regression")
    >>> x = net.input("x", (None, 1))
    >>> y_hat = gn.dense(gn.tanh(gn.dense(x, 2, name="hidden")), 1, name="output")
    >>> net.num_parameters
    7
    """

    def __init__(self, name="graph", seed=0):
        if not isinstance(name, str):
            raise ArgumentError(f"Graph: name {describe(name)} is not a string")
        if seed is None:    # a fresh seed, kept so that the graph saves and rebuilds the same
            seed = int(np.random.default_rng().integers(MAX_SEED))
        if not is_int(seed) or not 0 <= seed < MAX_SEED:
            raise ArgumentError(f"Graph {name!r}: seed {describe(seed)} must be an integer in "
                                f"[0, 2**31 - 1), or None for a fresh random seed")
        self.name = name
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.inputs = {}
        self.random_inputs = {}   # role "random": filled by the model (dropout masks, noise)
        self.parameters = {}
        self.values = {}          # parameter name -> float64 array
        self.trainable = {}       # parameter name -> bool
        self.updates = {}         # buffer name -> node whose value a training step writes into it
        self.outputs = {}         # user-named outputs
        self._names = set()
        self._counters = {}
        self._scope = []
        self.composite_scopes = set()  # scope paths opened by composite ops (pictures draw them as one box)

    # -- naming -------------------------------------------------------------
    def unique_name(self, base):
        prefix = "/".join(self._scope)
        full = f"{prefix}/{base}" if prefix else base
        if full not in self._names:
            self._names.add(full)
            return full
        n = self._counters.get(full, 1)
        while f"{full}_{n}" in self._names:
            n += 1
        self._counters[full] = n + 1
        self._names.add(f"{full}_{n}")
        return f"{full}_{n}"

    def _free_name(self, name, what):
        """The full name for ``name`` in the current scope; it must not be taken yet."""
        check_name(name, f"graph {self.name!r}: {what}")
        prefix = "/".join(self._scope)
        full = f"{prefix}/{name}" if prefix else name
        if full in self._names:
            raise GraphnnError(f"{what} name {full!r} is already used in graph {self.name!r}")
        return full

    def _claim(self, name, what):
        full = self._free_name(name, what)
        self._names.add(full)
        return full

    @property
    def current_scope(self):
        return "/".join(self._scope)

    @contextlib.contextmanager
    def scope(self, name, composite=False):
        """Group nodes built inside (a layer, a composite op) under ``name``; ``composite=True``
        records it as a composite op's scope (see :attr:`composite_scopes`)."""
        self._scope.append(check_name(name, f"graph {self.name!r}: scope", empty=True))
        if composite:
            self.composite_scopes.add("/".join(self._scope))
        try:
            yield "/".join(self._scope)
        finally:
            self._scope.pop()

    # -- leaves -------------------------------------------------------------
    def input(self, name, shape, dtype=None):
        """A fed value; ``None`` as the first dimension is the batch axis."""
        check_name(name, f"graph {self.name!r}: input")
        shape = normalize_shape(shape, f"input {name!r}")
        node = Node("input", None, (), {}, shape, normalize_dtype(dtype, f"input {name!r}"),
                    self._claim(name, "input"), self, self.current_scope)
        self.inputs[node.name] = node
        return node

    def random(self, name, shape, distribution, eval=0.0, dtype=None, **params):
        """A random input (dropout mask, noise): drawn by the model when it trains,
        ``eval`` when it predicts. ``distribution``: "bernoulli" (p, scale), "normal"
        (mean, std) or "uniform" (low, high); see :mod:`graphnn.graph.random`."""
        from .random import random_attrs
        check_name(name, f"graph {self.name!r}: random input")
        shape = normalize_shape(shape, f"random input {name!r}")
        if not isinstance(distribution, str):
            raise ArgumentError(f"random input {name!r}: distribution {describe(distribution)} is not "
                                f"a string; use 'bernoulli', 'normal' or 'uniform'")
        for key, number in {"eval": eval, **params}.items():
            if not is_finite_real(number):
                raise ArgumentError(f"random input {name!r}: {key}={describe(number)} must be a finite "
                                    f"real number")
        if params.get("std", 0.0) < 0:
            raise ArgumentError(f"random input {name!r}: std={params['std']!r} must be >= 0")
        node = Node("input", None, (), random_attrs(distribution, eval, params), shape,
                    normalize_dtype(dtype, f"random input {name!r}"), self.unique_name(name), self,
                    self.current_scope, role="random")
        self.random_inputs[node.name] = node
        return node

    def parameter(self, name, shape, init="normal", value=None, trainable=True, dtype=None):
        """A learned tensor, initialised by ``init(rng, shape)`` or set to ``value``."""
        full = self._free_name(name, "parameter")   # everything is checked before it is claimed
        shape = normalize_shape(shape, f"parameter {full!r}")
        if None in shape:
            raise ShapeError(f"parameter {full!r}: shape {shape} has a batch axis; parameters have fixed shapes")
        dtype = normalize_dtype(dtype, f"parameter {full!r}")
        if not isinstance(trainable, (bool, np.bool_)):
            raise ArgumentError(f"parameter {full!r}: trainable={describe(trainable)} must be True or False")
        if value is None:
            make = initializers.resolve(init, f"parameter {full!r}")
            source = f"the result of init {getattr(make, '__name__', None) or short_repr(init)}"
            value = real_array(make(self.rng, shape), f"parameter {full!r}", source)
        else:
            source = "value"
            value = real_array(value, f"parameter {full!r}", source)
        if value.shape != shape:
            raise ShapeError(f"parameter {full!r}: {source} has shape {value.shape}, declared {shape}")
        self._names.add(full)
        node = Node("parameter", None, (), {}, shape, dtype, full, self, self.current_scope)
        self.parameters[full] = node
        self.values[full] = value
        self.trainable[full] = bool(trainable)
        return node

    def buffer(self, name, shape, init="zeros", value=None, dtype=None):
        """A non-trainable parameter that training steps rewrite (BatchNorm's running
        statistics): no gradient reaches it; :meth:`update` names its new value."""
        return self.parameter(name, shape, init=init, value=value, trainable=False, dtype=dtype)

    def update(self, buffer, value):
        """Write ``value`` into ``buffer`` in every training step (``model.step``, ``fit``),
        after the step has read the old value. Both are nodes of this graph of the same shape."""
        check_node(buffer, f"graph {self.name!r}: update", "buffer")
        check_node(value, f"graph {self.name!r}: update of {buffer.name!r}", "value")
        if buffer.kind != "parameter" or self.parameters.get(buffer.name) is not buffer \
                or self.trainable.get(buffer.name, True):
            raise ArgumentError(f"graph {self.name!r}: update: {buffer.name!r} is not a buffer of this "
                               f"graph; make one with graph.buffer(...)")
        if value.graph is not self or value.shape != buffer.shape:
            raise ShapeError(f"graph {self.name!r}: update of buffer {buffer.name!r} {format_shape(buffer.shape)}: "
                             f"value {value.name!r} has shape {format_shape(value.shape)}"
                             + ("" if value.graph is self else " and is in another graph"))
        if buffer.name in self.updates:
            raise ArgumentError(f"graph {self.name!r}: buffer {buffer.name!r} already has an update")
        self.updates[buffer.name] = value
        return value

    def constant(self, value, name=None):
        """A fixed array or scalar baked into the graph."""
        if name is not None:
            check_name(name, f"graph {self.name!r}: constant", empty=True)
        value = real_array(value, f"graph {self.name!r}: constant {name or 'const'!r}")
        node = Node("constant", None, (), {"value": value}, value.shape, None,
                    self.unique_name(name or "const"), self, self.current_scope)
        return node

    def output(self, name, node):
        """Name ``node`` as an output of this graph (used when it is reused as a layer)."""
        check_name(name, f"graph {self.name!r}: output")
        check_node(node, f"graph {self.name!r}: output {name!r}", "value")
        from .traverse import check_one_graph
        check_one_graph([node], self, f"graph {self.name!r}: output {name!r}")
        self.outputs[name] = node
        return node

    # -- queries ------------------------------------------------------------
    @property
    def num_parameters(self):
        """Number of scalar weights in all parameters of this graph."""
        return int(sum(np.prod(p.shape, dtype=np.int64) for p in self.parameters.values()))

    def nodes(self, *outputs):
        """Every node the outputs depend on, inputs first (topological order)."""
        from .traverse import topological
        return topological(outputs or tuple(self.outputs.values()))

    def text(self, *outputs):
        """One line per node: name, op, inputs, shape."""
        from .text import graph_text
        return graph_text(self.nodes(*outputs))

    def to_networkx(self, *outputs):
        """The graph as a ``networkx.DiGraph`` (node attributes: op, kind, shape)."""
        from .text import to_networkx
        return to_networkx(self.nodes(*outputs))

    def local_derivative(self, node, wrt):
        """SymPy expression of the local derivative of ``node`` w.r.t. its input ``wrt``."""
        from ..derive.local import local_derivative
        return local_derivative(node, wrt)

    def __repr__(self):
        return (f"<Graph {self.name!r}: {len(self.inputs)} inputs, "
                f"{len(self.parameters)} parameters ({self.num_parameters} weights)>")

    def _repr_svg_(self):
        """Jupyter shows a graph with named outputs as their picture (else as text)."""
        from ..render import render
        return render(self).svg() if self.outputs else None
