"""Elementwise ops, each declared once by its SymPy body.

Kinks follow PyTorch: the branch a Piecewise takes at the kink decides the
derivative there (relu'(0) = 0, leaky_relu'(0) = alpha, relu6'(0) = relu6'(6) = 0,
hardswish'(-3) = -0.5, hardswish'(3) = 1.5).
"""
import math

import sympy as sp

from .primitives import Expm1, Sigmoid, Softplus
from .registry import elementwise

# -- arithmetic -----------------------------------------------------------


@elementwise
def add(x, y):
    """x + y"""
    return x + y


@elementwise
def sub(x, y):
    """x - y"""
    return x - y


@elementwise
def mul(x, y):
    """x * y"""
    return x * y


@elementwise(kinks={"y": 0.0})
def div(x, y):
    """x / y"""
    return x / y


@elementwise
def neg(x):
    """-x"""
    return -x


@elementwise(domain={"x": (0.0, math.inf)})
def pow(x, y):  # noqa: A001 - the op is called pow
    """x ** y for a tensor exponent (use ``x ** 2`` for a number: op ``power``)."""
    return x ** y


@elementwise
def power(x, p=2.0):
    """x ** p for a number p (an attribute)."""
    return x ** p


@elementwise
def exp(x):
    return sp.exp(x)


@elementwise(domain=(0.0, math.inf))
def log(x):
    return sp.log(x)


@elementwise(domain=(0.0, math.inf))
def sqrt(x):
    return sp.sqrt(x)


@elementwise(name="abs", kinks=0.0)
def abs_(x):
    """|x|; abs'(0) = 0 as in PyTorch."""
    return sp.Abs(x)


@elementwise
def square(x):
    return x ** 2


# -- activations ----------------------------------------------------------


@elementwise(activation=True)
def identity(x):
    """The output activation of regression nets."""
    return x


@elementwise(activation=True)
def sigmoid(x):
    return Sigmoid(x)


@elementwise(activation=True)
def tanh(x):
    return sp.tanh(x)


@elementwise(activation=True, kinks=0.0)
def relu(x):
    # x <= 0 tested first: NaN fails every comparison and falls through to x, as in PyTorch
    return sp.Piecewise((0, x <= 0), (x, True))


@elementwise(activation=True, kinks=0.0)
def leaky_relu(x, alpha=0.01):
    return sp.Piecewise((x, x > 0), (alpha * x, True))


@elementwise(activation=True, kinks=0.0)
def elu(x, alpha=1.0):
    return sp.Piecewise((alpha * Expm1(x), x <= 0), (x, True))


@elementwise(activation=True, kinks=0.0)
def celu(x, alpha=1.0):
    return sp.Piecewise((alpha * Expm1(x / alpha), x <= 0), (x, True))


@elementwise(activation=True, kinks=(0.0, 6.0))
def relu6(x):
    return sp.Piecewise((0, x <= 0), (6, x >= 6), (x, True))     # NaN falls through to x


@elementwise(activation=True, kinks=(-3.0, 3.0))
def hardswish(x):
    return sp.Piecewise((0, x < -3), (x * (x + 3) / 6, x <= 3), (x, True))


@elementwise(activation=True)
def gelu(x):
    """Exact GELU: x * Phi(x) with the Gaussian CDF written with erf."""
    return x / 2 * (1 + sp.erf(x / sp.sqrt(2)))


@elementwise(activation=True)
def gelu_tanh(x):
    """GELU's tanh approximation (PyTorch ``approximate='tanh'``)."""
    return x / 2 * (1 + sp.tanh(sp.sqrt(2 / sp.pi) * (x + sp.Rational(44715, 1000000) * x ** 3)))


@elementwise(activation=True)
def softplus(x):
    return Softplus(x)


@elementwise(activation=True)
def mish(x):
    return x * sp.tanh(Softplus(x))


@elementwise(activation=True)
def swish(x):
    """x * sigmoid(x) (SiLU)."""
    return x * Sigmoid(x)


@elementwise(activation=True, derivative=lambda x: 1 / (1 + sp.Abs(x)) ** 2)
def softsign(x):
    """x / (1 + |x|) (PyTorch's Softsign).

    Its derivative is declared, not derived: ``sp.diff`` gives 1/(1+|x|) - x*sign(x)/(1+|x|)**2,
    two terms of about 1/|x| whose difference, 1/|x|**2, keeps only ~4 digits at |x| = 1e4 in
    float32. The declared form has no cancellation; the declaration checks it against sp.diff."""
    return x / (1 + sp.Abs(x))
