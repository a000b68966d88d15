"""Shared by the layer, regularizer and training tests: which targets to run, small nets.

``TARGETS`` has "cpu" when the compiled CPU target imports and always "reference" (the NumPy
oracle) for tiny cases; ``requires_cpu`` marks the tests that are only fast when compiled.
"""
import numpy as np
import pytest

import graphnn as gn


def _cpu_available():
    try:
        import graphnn.runtime.cpu  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


CPU = _cpu_available()
TARGETS = (["cpu"] if CPU else []) + ["reference"]
FAST_TARGET = "cpu" if CPU else "reference"
requires_cpu = pytest.mark.skipif(
    not CPU, reason="the compiled CPU target (graphnn.runtime.cpu) does not import here; "
                    "these trainings are too slow on the reference target")


def mlp_graph(inputs=4, hidden=8, outputs=3, seed=0, layers=None):
    """x (None, inputs) -> Sequential(layers or dense relu + dense) -> "logits"; softmax CE loss."""
    g = gn.Graph("mlp", seed=seed)
    x, y = g.input("x", (None, inputs)), g.input("y", (None, outputs))
    net = gn.Sequential(layers or [gn.Dense(hidden, activation="relu"), gn.Dense(outputs)])
    logits = g.output("logits", net(x))
    return g, gn.softmax_cross_entropy(logits, y)


def classification_data(n=32, inputs=4, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, inputs))
    labels = rng.integers(0, classes, size=n)
    return x, gn.data.one_hot(labels, classes)
