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

import numpy as np

from ..errors import DtypeError, GraphnnError, ShapeError
from . import init as initializers

FLOAT_DTYPES = ("float32", "float64")


class Node:
    """One value in the graph. Build nodes with a :class:`Graph` and ops."""

    __slots__ = ("kind", "op", "inputs", "attrs", "shape", "dtype", "name",
                 "graph", "scope", "role", "_key", "__weakref__")

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
            h.update(k.encode())
            h.update(v.tobytes() if isinstance(v, np.ndarray) else repr(v).encode())
        if self.kind in ("input", "parameter"):
            h.update(self.name.encode())
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

    # nodes are identities in a DAG; keep hashing by object
    __hash__ = object.__hash__

    def __eq__(self, other):
        return self is other


def format_shape(shape):
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def normalize_shape(shape, what):
    shape = tuple(shape)
    for axis, d in enumerate(shape):
        if d is None and axis == 0:
            continue
        if d is None or not isinstance(d, (int, np.integer)) or d < 1:
            raise ShapeError(f"{what}: shape {shape} is invalid; use positive ints, "
                             f"and None only for the batch axis 0")
    return tuple(None if d is None else int(d) for d in shape)


def normalize_dtype(dtype, what):
    if dtype is None:
        return None
    name = np.dtype(dtype).name
    if name not in FLOAT_DTYPES:
        raise DtypeError(f"{what}: dtype {name} is not supported; use float32 or float64")
    return name


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
        self.name = name
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.inputs = {}
        self.random_inputs = {}   # role "random": filled by the model (dropout masks, noise)
        self.parameters = {}
        self.values = {}          # parameter name -> float64 array
        self.trainable = {}       # parameter name -> bool
        self.outputs = {}         # user-named outputs
        self._names = set()
        self._counters = {}
        self._scope = []

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

    def _claim(self, name, what):
        prefix = "/".join(self._scope)
        full = f"{prefix}/{name}" if prefix else name
        if full in self._names:
            raise GraphnnError(f"{what} name {full!r} is already used in graph {self.name!r}")
        self._names.add(full)
        return full

    @property
    def current_scope(self):
        return "/".join(self._scope)

    @contextlib.contextmanager
    def scope(self, name):
        """Group nodes built inside (a layer, a composite op) under ``name``."""
        self._scope.append(name)
        try:
            yield "/".join(self._scope)
        finally:
            self._scope.pop()

    # -- leaves -------------------------------------------------------------
    def input(self, name, shape, dtype=None):
        """A fed value; ``None`` as the first dimension is the batch axis."""
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
        shape = normalize_shape(shape, f"random input {name!r}")
        node = Node("input", None, (), random_attrs(distribution, eval, params), shape,
                    normalize_dtype(dtype, name), self.unique_name(name), self, self.current_scope,
                    role="random")
        self.random_inputs[node.name] = node
        return node

    def parameter(self, name, shape, init="normal", value=None, trainable=True, dtype=None):
        """A learned tensor, initialised by ``init(rng, shape)`` or set to ``value``."""
        shape = normalize_shape(shape, f"parameter {name!r}")
        if None in shape:
            raise ShapeError(f"parameter {name!r}: shape {shape} has a batch axis; parameters have fixed shapes")
        full = self._claim(name, "parameter")
        if value is None:
            value = initializers.resolve(init)(self.rng, shape)
        value = np.array(value, dtype=np.float64)
        if value.shape != shape:
            raise ShapeError(f"parameter {full!r}: value has shape {value.shape}, declared {shape}")
        node = Node("parameter", None, (), {}, shape, normalize_dtype(dtype, f"parameter {full!r}"),
                    full, self, self.current_scope)
        self.parameters[full] = node
        self.values[full] = value
        self.trainable[full] = bool(trainable)
        return node

    def constant(self, value, name=None):
        """A fixed array or scalar baked into the graph."""
        value = np.array(value, dtype=np.float64)
        node = Node("constant", None, (), {"value": value}, value.shape, None,
                    self.unique_name(name or "const"), self, self.current_scope)
        return node

    def output(self, name, node):
        """Name ``node`` as an output of this graph (used when it is reused as a layer)."""
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
