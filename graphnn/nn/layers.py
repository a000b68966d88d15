"""Layers: functions that add parameters and op nodes to a graph."""
from .. import ops
from ..errors import ArgumentError, ShapeError
from ..graph.node import format_shape


def activation_op(activation):
    """An activation given by name, op, or None (identity)."""
    if activation is None:
        return None
    if callable(activation):
        return activation
    if activation in ops.REGISTRY and activation in ops.ACTIVATIONS:
        return ops.REGISTRY[activation]
    raise ArgumentError(f"unknown activation {activation!r}; use one of {list(ops.ACTIVATIONS)} or an op")


def dense(x, units, activation=None, name="dense", init="glorot_uniform", bias_init="zeros",
          use_bias=True, weight_noise=0.0):
    """A fully connected layer: ``activation(x @ W + b)``, W of shape (in, units).

    ``weight_noise`` > 0 adds Gaussian noise of that standard deviation to W in
    every training step (see :func:`graphnn.nn.weight_noise`).

    >>> import graphnn as gn
    >>> g = gn.Graph(); x = g.input("x", (None, 3))
    >>> h = gn.dense(x, 4, activation="tanh", name="hidden")
    >>> g.num_parameters, h.shape
    (16, (None, 4))
    """
    if len(x.shape) != 2:
        raise ShapeError(f"dense {name!r}: input {x.name!r} has shape {format_shape(x.shape)}; "
                         f"dense takes (batch, features) -- flatten it first")
    graph = x.graph
    scope = graph.unique_name(name).split("/")[-1]
    with graph.scope(scope):
        W = graph.parameter("W", (x.shape[1], units), init=init)
        if weight_noise:
            from .regularize import weight_noise as noisy
            W = noisy(W, weight_noise)
        if use_bias:
            b = graph.parameter("b", (units,), init=bias_init)
            z = ops.linear(x, W, b, name="z")
        else:
            z = ops.matmul(x, W, name="z")
        act = activation_op(activation)
        return act(z, name=getattr(act, "name", "act")) if act is not None else z
