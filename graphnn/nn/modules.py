"""Keras-style layer objects and :class:`Sequential`.

A layer object holds its configuration; calling it on a node builds the
layer's parameters and op nodes into that node's graph, inside a scope named
after the layer (renderers draw a scope as one box). After the call,
``layer.params`` maps "W", "b" or "K" to the parameter nodes and
``layer.output`` is the node it returned.

>>> import graphnn as gn
>>> net = gn.Sequential([gn.Conv2D(4, 3, padding="same", activation="relu"), gn.MaxPool2D(2),
...                      gn.Flatten(), gn.Dropout(0.25), gn.Dense(10)])
>>> g = net.to_graph((None, 1, 8, 8), name="cnn")
>>> g.outputs["y_hat"].shape, g.num_parameters
((None, 10), 690)
"""
import numpy as np

from .. import ops
from ..errors import ArgumentError, ShapeError
from ..graph.node import Graph, Node, check_name, check_node, describe, format_shape, is_int
from .layers import activation_op, apply_activation, check_flag, check_stddev, dense, positive_int
from .regularize import dropout, gaussian_noise, weight_noise


class Layer:
    """Base class: ``__call__(x)`` builds the layer on node ``x`` and returns its output."""

    default_name = "layer"

    def __init__(self, name=None):
        if name is not None:
            check_name(name, type(self).__name__, empty=True)
        self.name = name or self.default_name
        self.params = {}
        self.output = None

    @property
    def what(self):
        """How messages name this layer: ``Dense 'hidden'``."""
        return f"{type(self).__name__} {self.name!r}"

    def __call__(self, x):
        check_node(x, self.what, "input x")
        self.output = self.build(x)
        return self.output

    def build(self, x):
        raise NotImplementedError

    def _scope(self, graph):
        return graph.scope(graph.unique_name(self.name).split("/")[-1])

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"


class Dense(Layer):
    """Fully connected: ``activation(x @ W + b)`` (see :func:`graphnn.dense`)."""

    default_name = "dense"

    def __init__(self, units, activation=None, init="glorot_uniform", bias_init="zeros",
                 use_bias=True, weight_noise=0.0, name=None):
        super().__init__(name)
        units = positive_int(units, self.what, "units")
        use_bias = check_flag(use_bias, self.what, "use_bias")
        weight_noise = check_stddev(weight_noise, self.what)
        activation_op(activation)   # an unknown name fails here, not when the layer is built
        self.units, self.activation, self.init, self.bias_init = units, activation, init, bias_init
        self.use_bias, self.weight_noise = use_bias, weight_noise

    def build(self, x):
        out = dense(x, self.units, activation=self.activation, name=self.name, init=self.init,
                    bias_init=self.bias_init, use_bias=self.use_bias, weight_noise=self.weight_noise)
        params = x.graph.parameters
        self.params = {k: params[f"{out.scope}/{k}"] for k in ("W", "b") if f"{out.scope}/{k}" in params}
        return out


def _kernel(value, what):
    """A positive int or a pair of them -> (rows, columns)."""
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) and v >= 1 for v in value):
        return (int(value[0]), int(value[1]))
    if is_int(value) and value >= 1:
        return (int(value), int(value))
    raise ArgumentError(f"{what}: kernel_size={describe(value)} must be a positive int or a pair of them")


def _padding(padding, kernel, what="Conv2D"):
    if not isinstance(padding, str):
        return padding           # an int or a pair: the conv2d op checks it
    if padding == "valid":
        return 0
    if padding == "same":
        if kernel[0] % 2 == 0 or kernel[1] % 2 == 0:
            raise ShapeError(f"{what}: padding='same' needs an odd kernel size, got {kernel}")
        return ((kernel[0] - 1) // 2, (kernel[1] - 1) // 2)
    raise ArgumentError(f"{what}: padding={padding!r} must be 'valid', 'same', an int or a pair of ints")


class Conv2D(Layer):
    """2-D convolution on NCHW input: ``activation(conv2d(x, K, b))``, K of shape
    (filters, channels, kh, kw). ``padding``: an int, a pair, "valid" (0) or "same"
    (keeps the size at stride 1; odd kernels)."""

    default_name = "conv"

    def __init__(self, filters, kernel_size, stride=1, padding=0, activation=None,
                 init="glorot_uniform", bias_init="zeros", use_bias=True, weight_noise=0.0, name=None):
        super().__init__(name)
        self.filters = positive_int(filters, self.what, "filters")
        self.kernel = _kernel(kernel_size, self.what)
        self.stride, self.padding = stride, _padding(padding, self.kernel, self.what)
        activation_op(activation)
        self.activation, self.init, self.bias_init = activation, init, bias_init
        self.use_bias = check_flag(use_bias, self.what, "use_bias")
        self.weight_noise = check_stddev(weight_noise, self.what)

    def build(self, x):
        if len(x.shape) != 4:
            raise ShapeError(f"Conv2D {self.name!r}: input {x.name!r} has shape {format_shape(x.shape)}; "
                             f"it takes (N, C, H, W)")
        graph = x.graph
        with self._scope(graph):
            K = graph.parameter("K", (self.filters, x.shape[1], *self.kernel), init=self.init)
            self.params = {"K": K}
            if self.use_bias:
                b = self.params["b"] = graph.parameter("b", (self.filters,), init=self.bias_init)
            else:
                b = graph.constant(np.zeros(self.filters), name="no_bias")
            if self.weight_noise:
                K = weight_noise(K, self.weight_noise)
            z = ops.conv2d(x, K, b, stride=self.stride, padding=self.padding, name="z")
            act = activation_op(self.activation)
            return apply_activation(act, z, getattr(act, "name", "act"), self.what) if act is not None else z


class MaxPool2D(Layer):
    """Max pooling over ``size`` windows (stride defaults to size)."""

    default_name = "max_pool"
    op = staticmethod(ops.max_pool2d)

    def __init__(self, size=2, stride=None, padding=0, name=None):
        super().__init__(name)
        self.size, self.stride, self.padding = size, stride, padding

    def build(self, x):
        with self._scope(x.graph):
            return self.op(x, size=self.size, stride=self.stride, padding=self.padding, name="pool")


class AvgPool2D(MaxPool2D):
    """Average pooling over ``size`` windows (stride defaults to size)."""

    default_name = "avg_pool"
    op = staticmethod(ops.avg_pool2d)


class Flatten(Layer):
    """(N, C, H, W) -> (N, C*H*W), row-major like ``numpy.reshape``."""

    default_name = "flatten"

    def build(self, x):
        return ops.flatten(x, name=self.name)


class Dropout(Layer):
    """Dropout with probability ``rate`` in training; the identity in evaluation."""

    default_name = "dropout"

    def __init__(self, rate=0.5, name=None):
        super().__init__(name)
        self.rate = rate

    def build(self, x):
        return dropout(x, self.rate, name=self.name)


class GaussianNoise(Layer):
    """Adds N(0, stddev^2) noise in training (inputs or hidden activations)."""

    default_name = "noise"

    def __init__(self, stddev=0.1, name=None):
        super().__init__(name)
        self.stddev = stddev

    def build(self, x):
        return gaussian_noise(x, self.stddev, name=self.name)


class Activation(Layer):
    """An activation by name ("relu", "tanh", ...) or op."""

    default_name = "activation"

    def __init__(self, activation, name=None):
        super().__init__(name)
        self.activation = activation_op(activation)

    def build(self, x):
        return apply_activation(self.activation, x, self.name, self.what)


class Sequential(Layer):
    """Layers (or any node -> node callables) applied in order.

    ``to_graph(input_shape)`` makes a new graph with input "x" and output "y_hat".
    """

    default_name = "sequential"

    def __init__(self, layers=(), name=None):
        super().__init__(name)
        self.named = name is not None
        if isinstance(layers, (str, bytes, Node)) or not hasattr(layers, "__iter__"):
            raise ArgumentError(f"{self.what}: layers={describe(layers)} must be a list of layers")
        self.layers = []
        for layer in layers:
            self.add(layer)

    def add(self, layer):
        if not callable(layer):
            raise ArgumentError(f"{self.what}: layer {len(self.layers)} is {describe(layer)}; a layer "
                                f"is a Layer object or a callable node -> node")
        self.layers.append(layer)
        return self

    def build(self, x):
        if not self.named:  # an unnamed Sequential adds no scope, as in Keras
            return self._apply(x)
        with self._scope(x.graph):
            return self._apply(x)

    def _apply(self, x):
        for position, layer in enumerate(self.layers):
            x = layer(x)
            if not isinstance(x, Node):
                raise ArgumentError(f"{self.what}: layer {position} ({layer!r}) returned {describe(x)}, "
                                    f"not a graph node")
        return x

    @property
    def parameters(self):
        """{layer name: {"W": node, ...}} of the layers built so far."""
        return {layer.name: layer.params for layer in self.layers if getattr(layer, "params", None)}

    def to_graph(self, input_shape, name="sequential", seed=0, input_name="x", output_name="y_hat"):
        """A new :class:`graphnn.Graph` holding this network; returns the graph."""
        graph = Graph(name, seed=seed)
        x = graph.input(input_name, input_shape)
        graph.output(output_name, self(x))
        return graph
