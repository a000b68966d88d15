"""Normalization layers: LayerNorm and BatchNorm, built from index ops.

Both are graphs of ordinary ops -- ``mean``, ``mean_square`` (a reduction declared by its SymPy
body), elementwise arithmetic -- so their backward pass comes from the generic delta rule, with
no derivative written here.

BatchNorm tells training from evaluation as dropout does, by a random input: ``<name>/training``
is 1 in a training step and 0 in evaluation (``model.forward``, ``predict``, ``evaluate``). The
layer normalizes with ``training * batch statistic + (1 - training) * running statistic``. The
running statistics are *buffers* (:meth:`graphnn.Graph.buffer`): non-trainable parameters that
every training step rewrites with the value :meth:`graphnn.Graph.update` names, inside the
compiled step program (and the compiled loop of ``fit``/``train_steps``).

>>> import numpy as np
>>> import graphnn as gn
>>> g = gn.Graph(); x = g.input("x", (None, 3))
>>> y = gn.batch_norm(x, name="bn")
>>> sorted(g.updates)
['bn/running_mean', 'bn/running_var']
"""
import numpy as np

from .. import ops
from ..errors import ArgumentError, ShapeError
from ..graph.node import check_name, check_node, describe, format_shape, is_finite_real
from .layers import check_flag
from .modules import Layer


def _check(x, name, eps, what):
    check_name(name, what, empty=True)
    check_node(x, f"{what} {name!r}", "input x")
    if not is_finite_real(eps) or eps <= 0:
        raise ArgumentError(f"{what} {name!r}: eps={describe(eps)} must be a finite number > 0")


def _scope(x, name):
    graph = x.graph
    return graph.scope(graph.unique_name(name).split("/")[-1])


def _feature_axes(x, axis, name):
    """The normalized axes of ``layer_norm``, sorted, never the batch axis."""
    ndim = len(x.shape)
    axes = axis if isinstance(axis, (tuple, list)) else (axis,)
    out = set()
    for a in axes:
        if not isinstance(a, (int, np.integer)) or isinstance(a, bool) or not -ndim <= a < ndim:
            raise ArgumentError(f"layer_norm {name!r}: axis {describe(a)} is not an axis of input "
                                f"{x.name!r} {format_shape(x.shape)}")
        out.add(int(a) % ndim)
    if not out or 0 in out:
        raise ShapeError(f"layer_norm {name!r}: axis={axis!r} includes the batch axis 0 of "
                         f"{x.name!r} {format_shape(x.shape)}; layer_norm normalizes each example over "
                         f"its feature axes (use batch_norm to normalize over the batch)")
    return tuple(sorted(out))


def layer_norm(x, axis=-1, eps=1e-5, affine=True, name="layer_norm"):
    """``(x - mean) / sqrt(var + eps) * gamma + beta`` per example, the mean and the (biased)
    variance taken over ``axis`` (an axis or a tuple of axes, never the batch axis), as
    ``torch.nn.LayerNorm`` over the trailing axes. ``gamma`` (ones) and ``beta`` (zeros) are
    parameters ``<name>/gamma`` and ``<name>/beta`` of the normalized axes' shape (size 1 on the
    axes in between), or absent with ``affine=False``."""
    _check(x, name, eps, "layer_norm")
    affine = check_flag(affine, f"layer_norm {name!r}", "affine")
    axes = _feature_axes(x, axis, name)
    graph = x.graph
    with _scope(x, name):
        d = ops.sub(x, ops.mean(x, axis=axes, keepdims=True), name="centered")
        var = ops.mean_square(d, axis=axes, keepdims=True, name="var")
        y = ops.div(d, ops.sqrt(ops.add(var, float(eps)), name="std"), name="normalized")
        if not affine:
            return y
        shape = tuple(x.shape[a] if a in axes else 1 for a in range(axes[0], len(x.shape)))
        gamma = graph.parameter("gamma", shape, value=np.ones(shape))
        beta = graph.parameter("beta", shape, init="zeros")
        return ops.add(ops.mul(y, gamma, name="scaled"), beta, name="layer_norm")


def batch_norm(x, momentum=0.1, eps=1e-5, affine=True, name="batch_norm"):
    """Batch normalization of ``x`` (N, C) or (N, C, L) or (N, C, H, W) per channel C, over all
    other axes, as ``torch.nn.BatchNorm1d``/``BatchNorm2d``.

    Training: ``(x - batch mean) / sqrt(batch var + eps) * gamma + beta`` with the biased batch
    variance; each step then sets ``running = (1 - momentum) * running + momentum * batch``, with
    the *unbiased* batch variance for ``running_var`` (PyTorch's convention). Evaluation uses
    the running statistics. Buffers ``<name>/running_mean`` (zeros) and ``<name>/running_var``
    (ones), shape (C,), are in ``model.params`` and saved with the model."""
    _check(x, name, eps, "batch_norm")
    if not is_finite_real(momentum) or not 0.0 <= momentum <= 1.0:
        raise ArgumentError(f"batch_norm {name!r}: momentum={describe(momentum)} must be in [0, 1]")
    affine = check_flag(affine, f"batch_norm {name!r}", "affine")
    if len(x.shape) not in (2, 3, 4) or x.shape[1] is None:
        raise ShapeError(f"batch_norm {name!r}: input {x.name!r} has shape {format_shape(x.shape)}; "
                         f"batch_norm takes (N, C), (N, C, L) or (N, C, H, W)")
    graph, channels = x.graph, x.shape[1]
    axes = (0, *range(2, len(x.shape)))
    trailing = len(x.shape) - 2

    def per_channel(v, label):      # (C,) -> (C, 1, 1) against (N, C, H, W)
        return ops.append_axes(v, count=trailing, name=label) if trailing else v

    with _scope(x, name):
        running_mean = graph.buffer("running_mean", (channels,), init="zeros")
        running_var = graph.buffer("running_var", (channels,), value=np.ones(channels))
        training = graph.random("training", (1,), "constant", value=1.0, eval=0.0)
        # the statistics' arithmetic, drawn as one box (as a composite op) next to the buffers
        with graph.scope("statistics", composite=True):
            batch_mean = ops.mean(x, axis=axes, name="batch_mean")
            d = ops.sub(x, per_channel(batch_mean, "batch_mean_c"), name="batch_centered")
            batch_var = ops.mean_square(d, axis=axes, name="batch_var")
            evaluating = ops.sub(1.0, training, name="evaluating")
            mean = ops.add(ops.mul(training, batch_mean), ops.mul(evaluating, running_mean), name="mean")
            var = ops.add(ops.mul(training, batch_var), ops.mul(evaluating, running_var), name="var")
            std = ops.sqrt(ops.add(var, float(eps)), name="std")
            unbiased = ops.mean_square(d, axis=axes, correction=1, name="batch_var_unbiased")
        y = ops.div(ops.sub(x, per_channel(mean, "mean_c"), name="centered"), per_channel(std, "std_c"),
                    name="normalized")
        keep = 1.0 - float(momentum)
        graph.update(running_mean, ops.add(ops.mul(running_mean, keep), ops.mul(batch_mean, float(momentum)),
                                           name="new_running_mean"))
        graph.update(running_var, ops.add(ops.mul(running_var, keep), ops.mul(unbiased, float(momentum)),
                                          name="new_running_var"))
        if not affine:
            return y
        gamma = graph.parameter("gamma", (channels,), value=np.ones(channels))
        beta = graph.parameter("beta", (channels,), init="zeros")
        return ops.add(ops.mul(y, per_channel(gamma, "gamma_c")), per_channel(beta, "beta_c"),
                       name="batch_norm")


class LayerNorm(Layer):
    """Layer normalization over ``axis`` with learned ``gamma``/``beta`` (see
    :func:`graphnn.layer_norm`)."""

    default_name = "layer_norm"

    def __init__(self, axis=-1, eps=1e-5, affine=True, name=None):
        super().__init__(name)
        self.axis, self.eps, self.affine = axis, eps, affine

    def build(self, x):
        out = layer_norm(x, self.axis, self.eps, self.affine, name=self.name)
        self.params = _params(x.graph, out, ("gamma", "beta"))
        return out


class BatchNorm(Layer):
    """Batch normalization per channel, as ``torch.nn.BatchNorm1d/2d`` (see
    :func:`graphnn.batch_norm`). After the call, ``layer.params`` holds ``gamma``/``beta``
    and ``layer.buffers`` ``running_mean``/``running_var``."""

    default_name = "batch_norm"

    def __init__(self, momentum=0.1, eps=1e-5, affine=True, name=None):
        super().__init__(name)
        self.momentum, self.eps, self.affine = momentum, eps, affine
        self.buffers = {}

    def build(self, x):
        out = batch_norm(x, self.momentum, self.eps, self.affine, name=self.name)
        self.params = _params(x.graph, out, ("gamma", "beta"))
        self.buffers = _params(x.graph, out, ("running_mean", "running_var"))
        return out


def _params(graph, out, names):
    return {k: graph.parameters[f"{out.scope}/{k}"] for k in names if f"{out.scope}/{k}" in graph.parameters}
