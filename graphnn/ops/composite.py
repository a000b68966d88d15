"""Composite ops: softmax, losses and penalties written from primitives.

They cost nothing extra: their derivatives, code and rendering come from the
primitives they are made of. Each builds its nodes inside a graph scope so
renderers can draw it as one box.
"""
import math

import sympy as sp

from ..errors import ArgumentError, ShapeError
from ..graph.node import Node, format_shape
from . import elementwise as ew
from . import index_ops as ix
from .primitives import ClampedLog, Softplus, StopGradient
from .index_body import indices
from .registry import NUMBER, _short, as_node, elementwise, index_op


@elementwise
def stop_gradient(x):
    """Identity forward, no gradient backward."""
    return StopGradient(x)


@elementwise(domain={"p": (0.0, 1.0), "y": (0.0, 1.0)})
def bce_elementwise(p, y):
    """-(y log p + (1-y) log(1-p)), logs clamped at -100 like PyTorch."""
    return -(y * ClampedLog(p) + (1 - y) * ClampedLog(1 - p))


# near float32's largest: "x > -_HUGE" tells a -inf apart in both dtypes; where a weight is 0
# the value is 0 on either side of it, so a finite x beyond it changes nothing
_HUGE = sp.Float(3.0e38)


@elementwise(domain={"y": (0.0, 1.0)})
def bce_logits_elementwise(z, y):
    """Binary cross-entropy on a logit: y softplus(-z) + (1-y) softplus(z).

    The same value as softplus(z) - z*y, without its cancellation (at z = 30, y = 1 that form
    kept 2 digits: 9.237e-14 for 9.358e-14). A term whose weight is 0 is 0 (xlogy's
    convention), so z = +-inf gives 0 when it is right and +inf when it is wrong, not NaN."""
    # the 0 branch is taken only where the weight is 0 and the softplus infinite, so the
    # derivative in y stays softplus(-z) - softplus(z) = -z at y = 0 and 1
    # (branches, not "or": the reference's NumPy form of "or" does not broadcast)
    first, second = y * Softplus(-z), (1 - y) * Softplus(z)
    return (sp.Piecewise((first, sp.Ne(y, 0)), (first, z > -_HUGE), (0, True))
            + sp.Piecewise((second, sp.Ne(y, 1)), (second, z < _HUGE), (0, True)))


@elementwise(domain={"y": (0.0, 1.0), "log_p": (-math.inf, 0.0)})
def nll_elementwise(y, log_p):
    """-y log p, and 0 where y = 0 and log p = -inf (a masked logit; 0 * -inf is NaN), as
    torch.xlogy. Only that case takes the 0 branch, so d/dy stays -log p at y = 0."""
    return sp.Piecewise((-y * log_p, sp.Ne(y, 0)), (-y * log_p, log_p > -_HUGE), (0, True))


def _scoped(node, name, what):
    """The graph scope a composite builds in; ``node`` must be a graph node, ``name`` text."""
    if not isinstance(node, Node):
        raise ArgumentError(f"{what}: input {_short(node)} is not a graph node; build it with a "
                            f"graph (g.input, g.parameter, an op)")
    if not isinstance(name, str):
        raise ArgumentError(f"{what}: name {_short(name)} is not a string")
    return node.graph.scope(node.graph.unique_name(name).split("/")[-1], composite=True)


def softmax(x, axis=-1, name="softmax"):
    """exp(x - max x) / sum exp(x - max x) along ``axis``."""
    with _scoped(x, name, "softmax"):
        shifted = x - stop_gradient(ix.max_(x, axis=axis, keepdims=True), name="max_shift")
        e = ew.exp(shifted)
        return ew.div(e, ix.sum_(e, axis=axis, keepdims=True), name="softmax")


def log_softmax(x, axis=-1, name="log_softmax"):
    """x - max x - log sum exp(x - max x) along ``axis``."""
    with _scoped(x, name, "log_softmax"):
        shifted = x - stop_gradient(ix.max_(x, axis=axis, keepdims=True), name="max_shift")
        lse = ew.log(ix.sum_(ew.exp(shifted), axis=axis, keepdims=True))
        return ew.sub(shifted, lse, name="log_softmax")


def _check_same(a, b, what):
    if not isinstance(a, Node):
        raise ArgumentError(f"{what}: prediction {_short(a)} is not a graph node")
    b = as_node(b, a.graph, what)
    if a.shape != b.shape:
        raise ShapeError(f"{what}: prediction {a.name!r} has shape {format_shape(a.shape)} but "
                         f"target {b.name!r} has shape {format_shape(b.shape)}")
    return b


def _reduce(x, reduction, what):
    if isinstance(reduction, str) and reduction in ("mean", "sum"):
        return (ix.mean if reduction == "mean" else ix.sum_)(x, name=what)
    raise ArgumentError(f"{what}: reduction must be 'mean' or 'sum', got {_short(reduction)}")


def mse(y_hat, y, reduction="mean", name="mse"):
    """Mean squared error, mean((y_hat - y)^2)."""
    y = _check_same(y_hat, y, name)
    with _scoped(y_hat, name, "mse"):
        return _reduce(ew.square(y_hat - y), reduction, name)


def binary_cross_entropy(p, y, reduction="mean", name="bce"):
    """BCE on probabilities p in [0, 1] (a sigmoid output)."""
    y = _check_same(p, y, name)
    with _scoped(p, name, "binary_cross_entropy"):
        return _reduce(bce_elementwise(p, y), reduction, name)


def binary_cross_entropy_with_logits(z, y, reduction="mean", name="bce_logits"):
    """BCE on logits z (sigmoid folded in, stable)."""
    y = _check_same(z, y, name)
    with _scoped(z, name, "binary_cross_entropy_with_logits"):
        return _reduce(bce_logits_elementwise(z, y), reduction, name)


@index_op(examples=[{"labels": (None,), "classes": 3}, {"labels": (None, 1), "classes": 2}])
def label_one_hot(labels, classes: int = 2):
    """Class labels (N,) or (N, 1) -- integers fed to a float input -- as one-hot rows
    (N, classes): row n is 1 in column labels[n], 0 elsewhere. The body is the bump
    (1 - d^2)^2 where |d| < 1, d = label - c, else 0: exactly one-hot at integer labels, with
    slope 0 there, and smooth between them (as the op sweeps need of every op)."""
    n, c = indices("n c")
    d = (labels[n] if labels.ndim == 1 else labels[n, 0]) - c
    return (n, (c, classes)), sp.Piecewise(((1 - d ** 2) ** 2, d ** 2 < 1), (0, True))


def _labels(prediction, y):
    """Whether ``y`` holds class labels: shape (N,) or (N, 1) against a prediction (N, C) with
    C > 1 columns."""
    return (isinstance(prediction, Node) and isinstance(y, Node) and len(prediction.shape) == 2
            and isinstance(prediction.shape[1], int) and prediction.shape[1] > 1
            and y.shape in ((prediction.shape[0],), (prediction.shape[0], 1)))


def nll(log_probs, y, reduction="mean", name="nll"):
    """Negative log-likelihood: -sum_c y_c log p_c per example, of one-hot targets ``y`` (N, C)
    or of integer class labels ``y`` (N,) or (N, 1) (as PyTorch's ``nll_loss``)."""
    labels = _labels(log_probs, y)
    if not labels:
        y = _check_same(log_probs, y, name)
    with _scoped(log_probs, name, "nll"):
        if labels:
            y = label_one_hot(y, classes=log_probs.shape[1], name="one_hot")
        per_example = ix.sum_(nll_elementwise(y, log_probs), axis=-1)
        return _reduce(per_example, reduction, name)


def softmax_cross_entropy(logits, y, reduction="mean", name="softmax_ce"):
    """Cross-entropy against softmax(logits) of one-hot targets ``y`` (N, C) or of integer
    class labels ``y`` (N,) or (N, 1) (as PyTorch's ``cross_entropy``)."""
    if not _labels(logits, y):
        _check_same(logits, y, name)
    with _scoped(logits, name, "softmax_cross_entropy"):
        return nll(log_softmax(logits), y, reduction=reduction)


def _penalty_weight(lam, what):
    try:
        return NUMBER.convert(lam)
    except ValueError:
        raise ArgumentError(f"{what}: lam={_short(lam)} must be {NUMBER.what}") from None


def l2_penalty(weight, lam=1e-3, name="l2"):
    """lam/2 * sum(W^2): its gradient is exactly lam * W."""
    lam = _penalty_weight(lam, "l2_penalty")
    with _scoped(weight, name, "l2_penalty"):
        return ew.mul(ix.sum_(ew.square(weight)), lam / 2.0, name=name)


def l1_penalty(weight, lam=1e-3, name="l1"):
    """lam * sum(|W|)."""
    lam = _penalty_weight(lam, "l1_penalty")
    with _scoped(weight, name, "l1_penalty"):
        return ew.mul(ix.sum_(ew.abs_(weight)), lam, name=name)
