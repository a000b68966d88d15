"""The lecture's networks, ready to build (used by the demo, tests and docs).

* :func:`regression_net` -- 1 -> 2 tanh -> 1 linear, MSE: 7 weights.
* :func:`classifier_net` -- 2 -> 2 -> 1 sigmoid, binary cross-entropy: 9 weights.
* :func:`softmax_classifier` -- the two-class softmax classifier drawn as layers:
  z1 = x, z2 = linear, z3 = log-softmax, z4 = negative log-likelihood.

Each returns a :class:`LectureNet` with the graph, its loss and its layers.
"""
from dataclasses import dataclass, field

import numpy as np

from . import ops
from .graph import Graph
from .nn import dense


@dataclass
class LectureNet:
    graph: Graph
    loss: object
    output: object
    layers: dict = field(default_factory=dict)


def regression_net(seed=0, hidden_activation="tanh"):
    """The 1-2-1 regression net with 7 weights and MSE loss."""
    net = Graph("regression", seed=seed)
    x, y = net.input("x", (None, 1)), net.input("y", (None, 1))
    h = dense(x, 2, activation=hidden_activation, name="hidden")
    y_hat = dense(h, 1, name="output")
    loss = ops.mse(y_hat, y)
    net.output("y_hat", y_hat)
    return LectureNet(net, loss, y_hat, {"x": x, "y": y, "hidden": h, "y_hat": y_hat})


def classifier_net(seed=0, hidden_activation="tanh"):
    """The 2-2-1 classifier with 9 weights: sigmoid output, binary cross-entropy."""
    net = Graph("classifier", seed=seed)
    x, y = net.input("x", (None, 2)), net.input("y", (None, 1))
    h = dense(x, 2, activation=hidden_activation, name="hidden")
    p = dense(h, 1, activation="sigmoid", name="output")
    loss = ops.binary_cross_entropy(p, y)
    net.output("p", p)
    return LectureNet(net, loss, p, {"x": x, "y": y, "hidden": h, "p": p})


def softmax_classifier(seed=0, features=2):
    """Two-class softmax classifier: z2 = x theta, z3 = log-softmax, z4 = NLL (summed)."""
    net = Graph("softmax_classifier", seed=seed)
    x, y = net.input("x", (None, features)), net.input("y", (None, 2))
    z2 = dense(x, 2, name="linear")
    z3 = ops.log_softmax(z2, name="log_softmax")
    z4 = ops.nll(z3, y, reduction="sum", name="nll")
    net.output("log_probs", z3)
    return LectureNet(net, z4, z3, {"z1": x, "z2": z2, "z3": z3, "z4": z4, "y": y})


def noisy_sine(n=64, noise=0.1, seed=0):
    """The lecture's 1-D regression problem: y = sin(3x) + noise on x in [-1, 1]."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, size=(n, 1))
    return x, np.sin(3 * x) + noise * rng.standard_normal((n, 1))


def two_blobs(n=200, seed=0, distance=3.0):
    """The lecture's 2-D two-class problem: two Gaussian blobs, labels 0/1 in a column."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, size=n)
    centers = np.where(labels[:, None] == 1, distance / 2, -distance / 2) * np.array([1.0, 0.6])
    x = centers + rng.standard_normal((n, 2))
    return x, labels[:, None].astype(np.float64)
