"""Layers: functions that add parameters and op nodes to a graph."""
import inspect

import numpy as np

from .. import ops
from ..errors import ArgumentError, ShapeError
from ..graph.node import Node, check_name, check_node, describe, format_shape, is_finite_real, is_int
from ..ops.registry import OpBase


def positive_int(value, what, arg):
    """``value`` as an int if it is a positive integer (not a bool), else an ArgumentError."""
    if not is_int(value) or value < 1:
        raise ArgumentError(f"{what}: {arg}={describe(value)} must be a positive int")
    return int(value)


def check_flag(value, what, arg):
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentError(f"{what}: {arg}={describe(value)} must be True or False")
    return bool(value)


def check_stddev(value, what, arg="weight_noise"):
    """A finite real number >= 0 (0 = off)."""
    if not is_finite_real(value) or value < 0:
        raise ArgumentError(f"{what}: {arg}={describe(value)} must be a finite number >= 0")
    return value


def short(value):
    """A string as its repr, anything else with its type too."""
    return repr(value) if isinstance(value, str) else describe(value)


def activation_op(activation):
    """An activation given by name, op, or None (identity)."""
    if activation is None:
        return None
    if callable(activation):
        return activation
    if isinstance(activation, str) and activation in ops.REGISTRY and activation in ops.ACTIVATIONS:
        return ops.REGISTRY[activation]
    raise ArgumentError(f"unknown activation {short(activation)}; use one of {list(ops.ACTIVATIONS)} "
                        f"or an op")


def apply_activation(act, z, name, what):
    """``act(z)``, passing ``name`` when ``act`` takes one; the result must be a node."""
    try:
        params = inspect.signature(act).parameters.values()
        takes_name = any(p.name == "name" or p.kind is p.VAR_KEYWORD for p in params)
    except (TypeError, ValueError):   # no signature to read (a builtin)
        takes_name = False
    takes_name = takes_name or isinstance(act, OpBase)   # an op's signature shows its body's arguments
    out = act(z, name=name) if takes_name else act(z)
    if not isinstance(out, Node):
        raise ArgumentError(f"{what}: activation {short(act)} returned {describe(out)}, not a graph node")
    return out


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
    name = "dense" if name is None else check_name(name, "dense", empty=True) or "dense"
    what = f"dense {name!r}"
    check_node(x, what, "input x")
    units = positive_int(units, what, "units")
    use_bias = check_flag(use_bias, what, "use_bias")
    weight_noise = check_stddev(weight_noise, what)
    act = activation_op(activation)
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
        return apply_activation(act, z, getattr(act, "name", "act"), what) if act is not None else z
