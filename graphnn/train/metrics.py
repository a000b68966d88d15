"""Metrics for :func:`graphnn.train.fit`: functions ``metric(prediction, target) -> float``.

>>> import numpy as np
>>> accuracy(np.array([[0.9], [0.2]]), np.array([[1.0], [1.0]]))
0.5
>>> accuracy(np.array([[2.0, 1.0], [0.0, 3.0]]), np.array([[1, 0], [1, 0]]))
0.5
"""
import numpy as np

from ..errors import ArgumentError


def _labels(target):
    target = np.asarray(target)
    return target.argmax(axis=-1) if target.ndim == 2 and target.shape[1] > 1 else target.reshape(len(target))


def accuracy(prediction, target):
    """Share of correct classes. One column: a probability thresholded at 0.5 against
    0/1 targets (the lecture's sigmoid output); several columns: the arg-max (of
    probabilities, logits or log-probabilities alike) against one-hot or integer targets."""
    prediction = np.asarray(prediction)
    if prediction.ndim == 1 or prediction.shape[-1] == 1:
        return binary_accuracy(prediction, target)
    return float(np.mean(prediction.argmax(axis=-1) == _labels(target)))


def binary_accuracy(prediction, target, threshold=0.5):
    """Share of rows where ``prediction >= threshold`` matches ``target >= 0.5``."""
    p = np.asarray(prediction).reshape(len(prediction)) >= threshold
    t = np.asarray(target).reshape(len(target)) >= 0.5
    return float(np.mean(p == t))


def logit_accuracy(prediction, target):
    """Binary accuracy of a logit output (threshold 0)."""
    return binary_accuracy(prediction, target, threshold=0.0)


def mean_squared_error(prediction, target):
    return float(np.mean((np.asarray(prediction) - np.asarray(target)) ** 2))


def mean_absolute_error(prediction, target):
    return float(np.mean(np.abs(np.asarray(prediction) - np.asarray(target))))


BY_NAME = {
    "accuracy": accuracy, "acc": accuracy, "binary_accuracy": binary_accuracy,
    "logit_accuracy": logit_accuracy, "mse": mean_squared_error, "mae": mean_absolute_error,
}


def resolve(metric):
    """(name, function) for a metric name or callable."""
    if callable(metric):
        return getattr(metric, "__name__", "metric"), metric
    if metric in BY_NAME:
        return metric, BY_NAME[metric]
    raise ArgumentError(f"unknown metric {metric!r}; use one of {sorted(BY_NAME)} or a callable")
