"""Parameter initializers: ``init(rng, shape) -> float64 array``.

Pass one to :meth:`graphnn.Graph.parameter` or :func:`graphnn.dense`.

>>> import numpy as np
>>> from graphnn.graph import init
>>> init.glorot_uniform()(np.random.default_rng(0), (2, 3)).shape
(2, 3)
"""
import math

import numpy as np

from ..errors import ArgumentError


def _fans(shape):
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    # graphnn stores dense weights as (in, out) and conv kernels as (out, in, kh, kw)
    if len(shape) == 2:
        return shape[0] * receptive, shape[1] * receptive
    return shape[1] * receptive, shape[0] * receptive


def normal(scale=0.1):
    """Small random normal weights with standard deviation ``scale``."""
    return lambda rng, shape: rng.normal(0.0, scale, size=shape)


def uniform(scale=0.1):
    """Uniform weights in [-scale, scale]."""
    return lambda rng, shape: rng.uniform(-scale, scale, size=shape)


def zeros():
    """All zeros (the usual bias)."""
    return lambda rng, shape: np.zeros(shape)


def constant(value=0.01):
    """A small positive constant (a bias that keeps ReLUs alive)."""
    return lambda rng, shape: np.full(shape, float(value))


def glorot_uniform():
    """Glorot/Xavier uniform: U(-a, a), a = sqrt(6/(fan_in+fan_out))."""
    def make(rng, shape):
        fan_in, fan_out = _fans(shape)
        a = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-a, a, size=shape)
    return make


def glorot_normal():
    """Glorot/Xavier normal: N(0, 2/(fan_in+fan_out))."""
    def make(rng, shape):
        fan_in, fan_out = _fans(shape)
        return rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), size=shape)
    return make


def he_normal():
    """He/Kaiming normal for ReLU nets: N(0, 2/fan_in)."""
    def make(rng, shape):
        fan_in, _ = _fans(shape)
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    return make


def he_uniform():
    """He/Kaiming uniform: U(-a, a), a = sqrt(6/fan_in)."""
    def make(rng, shape):
        fan_in, _ = _fans(shape)
        a = math.sqrt(6.0 / fan_in)
        return rng.uniform(-a, a, size=shape)
    return make


BY_NAME = {
    "normal": normal, "uniform": uniform, "zeros": zeros, "constant": constant,
    "glorot_uniform": glorot_uniform, "xavier_uniform": glorot_uniform,
    "glorot_normal": glorot_normal, "xavier_normal": glorot_normal,
    "he_normal": he_normal, "he_uniform": he_uniform,
}


def resolve(init, what=None):
    """Accept an initializer callable or its name; ``what`` (the parameter) prefixes an error."""
    if callable(init):
        return init
    if isinstance(init, str) and init in BY_NAME:
        return BY_NAME[init]()
    where = f"{what}: " if what else ""
    raise ArgumentError(f"{where}unknown initializer {init!r} ({type(init).__name__}); use one of "
                        f"{sorted(BY_NAME)} or a callable init(rng, shape)")
