"""Initializers draw what their definitions say (statistics over large draws)."""
import math

import numpy as np
import pytest

import graphnn as gn
from graphnn.graph import init

RNG_SEED = 0


def draw(initializer, shape):
    return initializer(np.random.default_rng(RNG_SEED), shape)


def test_small_normal_and_uniform_with_a_scale():
    w = draw(init.normal(0.05), (400, 500))
    assert abs(w.mean()) < 1e-3 and abs(w.std() - 0.05) < 1e-3
    u = draw(init.uniform(0.2), (400, 500))
    assert u.min() >= -0.2 and u.max() <= 0.2
    assert abs(u.std() - 0.2 / math.sqrt(3)) < 1e-3     # var of U(-a, a) is a^2 / 3


def test_zeros_and_small_positive_constant():
    assert np.array_equal(draw(init.zeros(), (3, 4)), np.zeros((3, 4)))
    c = draw(init.constant(0.01), (7,))
    assert np.all(c == 0.01)
    assert np.all(draw(gn.graph.init.resolve("constant"), (2,)) > 0)


@pytest.mark.parametrize("shape,fan_in,fan_out", [((300, 200), 300, 200), ((64, 16, 3, 3), 144, 576)])
def test_glorot_uniform_and_normal(shape, fan_in, fan_out):
    a = math.sqrt(6 / (fan_in + fan_out))
    u = draw(init.glorot_uniform(), shape)
    assert u.min() >= -a and u.max() <= a and u.max() > 0.99 * a
    assert abs(u.var() - 2 / (fan_in + fan_out)) < 0.03 * 2 / (fan_in + fan_out)
    n = draw(init.glorot_normal(), shape)
    assert abs(n.var() - 2 / (fan_in + fan_out)) < 0.03 * 2 / (fan_in + fan_out)


@pytest.mark.parametrize("shape,fan_in", [((300, 200), 300), ((64, 16, 3, 3), 144)])
def test_he_normal_and_uniform_keep_relu_variance(shape, fan_in):
    n = draw(init.he_normal(), shape)
    assert abs(n.var() - 2 / fan_in) < 0.03 * 2 / fan_in
    u = draw(init.he_uniform(), shape)
    assert u.max() <= math.sqrt(6 / fan_in)
    assert abs(u.var() - 2 / fan_in) < 0.03 * 2 / fan_in


def test_layers_use_their_initializers_and_names_resolve():
    g = gn.Graph(seed=1)
    x = g.input("x", (None, 1, 8, 8))
    gn.Conv2D(8, 3, init="he_normal", bias_init=init.constant(0.1))(x)
    assert np.all(g.values["conv/b"] == 0.1)
    assert g.values["conv/K"].shape == (8, 1, 3, 3)
    for name in ("xavier_uniform", "xavier_normal", "he_uniform", "normal", "uniform", "zeros"):
        assert callable(init.resolve(name))
    with pytest.raises(ValueError, match="unknown initializer"):
        init.resolve("orthogonal-ish")
