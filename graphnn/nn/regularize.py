"""Regularizers as graph nodes: dropout, noise injection, weight penalties.

Dropout and noise read a *random input* (:meth:`graphnn.Graph.random`) that
the model fills in each training step and sets to its evaluation value when
it predicts, so "train vs eval mode" is a property of the feeds, not of the
compiled code. The norm penalties :func:`graphnn.l2_penalty` and
:func:`graphnn.l1_penalty` are ordinary nodes added to the loss;
:func:`weight_penalty` adds one for every weight matrix or kernel.

>>> import numpy as np
>>> import graphnn as gn
>>> g = gn.Graph(); x = g.input("x", (None, 4))
>>> y = gn.dropout(x, rate=0.5)
>>> gn.evaluate([y], {"x": np.ones((1, 4))})[y.name]      # eval mode: the identity
array([[1., 1., 1., 1.]])
"""
from .. import ops
from ..errors import ArgumentError, GraphnnError
from ..graph.node import check_name, check_node, describe, is_finite_real
from .layers import check_stddev


def _check(x, name, what):
    """``x`` must be a graph node and ``name`` a string."""
    check_name(name, what, empty=True)
    check_node(x, f"{what} {name!r}", "input x")


def _scope(node, name):
    graph = node.graph
    return graph.scope(graph.unique_name(name).split("/")[-1])


def dropout(x, rate=0.5, name="dropout"):
    """Inverted dropout: in training each element is zeroed with probability ``rate``
    and the kept ones are scaled by 1/(1 - rate); in evaluation ``x`` passes unchanged.

    The mask is a random input ``<name>/mask`` with values in {0, 1/(1 - rate)}.
    """
    _check(x, name, "dropout")
    if not is_finite_real(rate) or not 0.0 <= rate < 1.0:
        raise ArgumentError(f"dropout {name!r}: rate must be in [0, 1), got {describe(rate)}")
    if rate == 0.0:
        return x
    keep = 1.0 - rate
    with _scope(x, name):
        mask = x.graph.random("mask", x.shape, "bernoulli", p=keep, scale=1.0 / keep, eval=1.0)
        return ops.mul(x, mask, name="dropout")


def _additive_noise(x, stddev, name, what):
    """``x + e``, e ~ N(0, stddev^2) of x's shape: a random input drawn each training step, 0 in evaluation."""
    _check(x, name, what)
    check_stddev(stddev, f"{what} {name!r}", "stddev")
    if stddev == 0:
        return x
    with _scope(x, name):
        noise = x.graph.random("noise", x.shape, "normal", std=stddev, eval=0.0)
        return ops.add(x, noise, name="noisy")


def gaussian_noise(x, stddev=0.1, name="noise"):
    """Noise injection on inputs or hidden activations: ``x + e``, e ~ N(0, stddev^2)
    drawn in every training step; e = 0 in evaluation."""
    return _additive_noise(x, stddev, name, "gaussian_noise")


def weight_noise(weight, stddev=0.01, name="weight_noise"):
    """Noise on weights: the layer reads ``W + e``, e ~ N(0, stddev^2) of W's shape drawn
    in every training step (one draw per step, shared by the batch); e = 0 in evaluation.
    The gradient still updates W itself."""
    return _additive_noise(weight, stddev, name, "weight_noise")


def weights(graph, trainable_only=True):
    """The weight matrices and kernels of ``graph``: parameters with 2 or more axes
    (biases, with one axis, are not penalised by convention)."""
    return [p for name, p in graph.parameters.items()
            if len(p.shape) >= 2 and (graph.trainable.get(name, True) or not trainable_only)]


def weight_penalty(graph_or_weights, l2=0.0, l1=0.0, name="weight_penalty"):
    """One node: the sum of ``l2_penalty(W, l2)`` and ``l1_penalty(W, l1)`` over the weights.

    Its gradient w.r.t. each W is ``l2 * W + l1 * sign(W)``; add it to the data loss.

    >>> import graphnn as gn
    >>> net = gn.lecture.regression_net()
    >>> loss = net.loss + gn.nn.weight_penalty(net.graph, l2=1e-3)
    """
    params = weights(graph_or_weights) if hasattr(graph_or_weights, "parameters") else list(graph_or_weights)
    if not params:
        raise GraphnnError("weight_penalty: there are no weights (parameters with 2 or more axes)")
    terms = []
    for W in params:
        base = W.name.replace("/", ".")
        if l2:
            terms.append(ops.l2_penalty(W, l2, name=f"{name}.l2.{base}"))
        if l1:
            terms.append(ops.l1_penalty(W, l1, name=f"{name}.l1.{base}"))
    if not terms:
        raise GraphnnError("weight_penalty: give l2= or l1= (both are 0)")
    total = terms[0]
    for t in terms[1:]:
        total = ops.add(total, t, name=name)
    return total
