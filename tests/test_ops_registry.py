"""The elementwise op table, generated from graphnn's declarations (tests/op_tables.py).

Each built-in op is checked against its plain math in high precision, its derivative against
central differences, its kinks against PyTorch's conventions and its extremes against the exact
values; a new op needs no edit here. The built-ins are also checked against definitions written
after PyTorch's documentation (``DEFINITIONS``).
"""
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import scipy.special

import graphnn as gn
import sympy as sp

from op_tables import (ACTIVATION_CASES, CASES, ELEMENTWISE, exact_derivative, exact_value,
                       math_derivative)
from support import forward_and_derivatives

SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_erf = np.vectorize(math.erf, otypes=[np.float64])


def _softplus(x):
    return np.logaddexp(0.0, x)


def _sigmoid(x):
    return scipy.special.expit(x)  # 1 / (1 + exp(-x)), from SciPy rather than graphnn


def _relu6(x):
    return np.minimum(np.maximum(x, 0.0), 6.0)


def _celu(x, alpha=1.0):
    return np.maximum(0.0, x) + np.minimum(0.0, alpha * np.expm1(x / alpha))


BATCH = 24

# Definitions written independently of graphnn, after PyTorch's documentation: a second oracle
# for the built-ins beside the plain-math one every op gets (tests/op_tables.py).
DEFINITIONS = {
    "add": lambda x, y: x + y,
    "sub": lambda x, y: x - y,
    "mul": lambda x, y: x * y,
    "div": lambda x, y: x / y,
    "neg": lambda x: -x,
    "pow": lambda x, y: x ** y,
    "power": lambda x: x ** 2,
    "square": lambda x: x * x,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "abs": np.abs,
    "identity": lambda x: x,
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "leaky_relu": lambda x: np.where(x > 0, x, 0.01 * x),
    "elu": lambda x: np.where(x > 0, x, np.expm1(x)),
    "celu": _celu,
    "relu6": _relu6,
    "hardswish": lambda x: x * _relu6(x + 3) / 6,
    "gelu": lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2))),
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3))),
    "softplus": _softplus,
    "mish": lambda x: x * np.tanh(_softplus(x)),
    "swish": lambda x: x * _sigmoid(x),
    "softsign": lambda x: x / (1 + np.abs(x)),
    "stop_gradient": lambda x: x,
    "bce_elementwise": lambda p, y: -(y * np.log(p) + (1 - y) * np.log(1 - p)),
    "bce_logits_elementwise": lambda z, y: np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))),
    "nll_elementwise": lambda y, log_p: -y * log_p,
}


def test_the_tables_are_generated_from_the_registry():
    """Every built-in elementwise op is a case; a user op that reuses a name does not replace it."""
    assert {c.name for c in CASES} == {n for n, op in gn.BUILTINS.items() if op.kind == "elementwise"}
    assert {c.name for c in ACTIVATION_CASES} == set(gn.ACTIVATIONS) & set(gn.BUILTINS)
    assert set(DEFINITIONS) <= set(gn.BUILTINS)


def test_activations_are_the_ops_declared_activation():
    for name in gn.ACTIVATIONS:
        assert gn.REGISTRY[name].kind == "elementwise" and gn.REGISTRY[name].activation
    assert "add" not in gn.ACTIVATIONS and "softsign" in gn.ACTIVATIONS


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_forward_matches_the_exact_math(case):
    args = case.sample(np.random.default_rng(0), (BATCH,))
    exact = exact_value(case, args)
    value, _ = forward_and_derivatives(case.op, args, case.attr_dict)
    np.testing.assert_allclose(value, exact, rtol=1e-12, atol=1e-14)
    value32, _ = forward_and_derivatives(case.op, args, case.attr_dict, dtype="float32")
    assert value32.dtype == np.float32
    np.testing.assert_allclose(value32, exact, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", sorted(DEFINITIONS))
def test_forward_matches_the_pytorch_definition(name):
    case = next(c for c in CASES if c.name == name and not c.attrs)
    args = case.sample(np.random.default_rng(3), (BATCH,))
    value, _ = forward_and_derivatives(case.op, args)
    np.testing.assert_allclose(value, DEFINITIONS[name](*args), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_backward_matches_finite_differences(case):
    args = case.sample(np.random.default_rng(1), (BATCH,))
    _, derivatives = forward_and_derivatives(case.op, args, case.attr_dict)
    assert len(derivatives) == len(args)
    for position, derived in enumerate(derivatives):
        expected = math_derivative(case, args, position)
        np.testing.assert_allclose(derived, expected, rtol=1e-6, atol=1e-7,
                                   err_msg=f"{case.id}: derivative w.r.t. input {position}")


def _symbolically_zero(difference, x):
    """True if SymPy shows ``difference`` is 0 for every real x: as is, or on x < 0, x = 0 and x > 0
    apart (Abs and sign resolve there). False: SymPy could not decide."""
    if sp.simplify(difference) == 0:
        return True
    pieces = [sp.refine(difference, sp.Q.positive(x)), sp.refine(difference, sp.Q.negative(x)),
              difference.subs(x, 0)]
    return all(sp.simplify(p) == 0 for p in pieces)


@pytest.mark.parametrize("op", [op for op in ELEMENTWISE if op.derivative_override is not None],
                         ids=lambda op: op.name)
def test_a_declared_derivative_equals_sympy_diff(op):
    """Symbolically where SymPy decides it, and numerically in high precision everywhere (what
    the declaration itself checks)."""
    gn.check_derivative(op)
    for position, x in enumerate(op.symbols):
        declared = op.derivative(position, op.attr_defaults)
        derived = op.derived_derivative(position, op.attr_defaults)
        if len(op.symbols) == 1:
            assert _symbolically_zero(declared - derived, x), f"{op.name}: {declared} != {derived}"


def test_the_symbolic_check_can_fail():
    x = sp.Symbol("x", real=True)
    assert not _symbolically_zero(1 / (1 + sp.Abs(x)) ** 3 - 1 / (1 + sp.Abs(x)) ** 2, x)
    assert _symbolically_zero(x * sp.sign(x) - sp.Abs(x), x)


def _derivative_at(name, x, attrs=None, dtype="float64"):
    value, (derivative,) = forward_and_derivatives(gn.REGISTRY[name], [np.array(x, dtype=np.float64)],
                                                   attrs, dtype=dtype)
    return value, derivative


KINKS = [  # (op, attrs, x, value, derivative) -- PyTorch's autograd at the kink
    ("relu", {}, 0.0, 0.0, 0.0),
    ("leaky_relu", {}, 0.0, 0.0, 0.01),
    ("leaky_relu", {"alpha": 0.2}, 0.0, 0.0, 0.2),
    ("relu6", {}, 0.0, 0.0, 0.0),
    ("relu6", {}, 6.0, 6.0, 0.0),
    ("hardswish", {}, -3.0, 0.0, -0.5),
    ("hardswish", {}, 3.0, 3.0, 1.5),
    ("abs", {}, 0.0, 0.0, 0.0),
    ("elu", {}, 0.0, 0.0, 1.0),
    ("elu", {"alpha": 0.5}, 0.0, 0.0, 0.5),
    ("celu", {"alpha": 2.0}, 0.0, 0.0, 1.0),
]


@pytest.mark.parametrize("name,attrs,x,value,derivative", KINKS,
                         ids=[f"{k[0]}{k[1] or ''}@{k[2]}" for k in KINKS])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_derivative_at_kinks_follows_pytorch(name, attrs, x, value, derivative, dtype):
    got_value, got_derivative = _derivative_at(name, [x], attrs, dtype)
    assert got_value[0] == pytest.approx(value, abs=1e-7)
    assert got_derivative[0] == pytest.approx(derivative, abs=1e-7)


EXTREMES = np.array([-1e4, -100.0, 0.0, 100.0, 1e4])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", ACTIVATION_CASES, ids=lambda c: c.id)
def test_activation_is_finite_and_correct_at_extreme_inputs(case, dtype):
    """Value and derivative at +-1e4, +-100 and 0 against the exact math (mpmath)."""
    value, derivative = _derivative_at(case.name, EXTREMES, dtype=dtype)
    assert value.dtype == derivative.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(value)), f"{case.name}({EXTREMES}) = {value}"
    assert np.all(np.isfinite(derivative)), f"{case.name}'({EXTREMES}) = {derivative}"
    rtol = {"float32": 1e-6, "float64": 1e-12}[dtype]
    np.testing.assert_allclose(value, exact_value(case, [EXTREMES]), rtol=rtol, atol=1e-30)
    np.testing.assert_allclose(derivative, exact_derivative(case, [EXTREMES], 0), rtol=rtol, atol=1e-30)


@pytest.mark.parametrize("case", ACTIVATION_CASES, ids=lambda c: c.id)
def test_activation_slope_at_plus_minus_100_is_the_true_slope(case):
    x = np.array([-100.0, 100.0])
    _, derivative = _derivative_at(case.name, x)
    np.testing.assert_allclose(derivative, math_derivative(case, [x], 0, eps=1e-4), rtol=1e-6, atol=1e-12)
