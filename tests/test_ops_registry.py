"""One table over the elementwise op registry.

Every registered elementwise op must have a row here (``test_every_elementwise_op_has_a_row``), so
a new op cannot land without its forward definition, derivative check and extreme-input check.
The reference definitions are written independently of graphnn, after PyTorch's documentation.
"""
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
import scipy.special

import graphnn as gn
from support import central_difference, forward_and_derivatives

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


# -- domains: rng -> list of input arrays (float64, shape (BATCH,)) -------------
BATCH = 24


def uniform(low, high, n_inputs=1):
    return lambda rng: [rng.uniform(low, high, BATCH) for _ in range(n_inputs)]


def positive(n_inputs=1):
    return uniform(0.2, 5.0, n_inputs)


def nonzero_denominator(rng):
    return [rng.uniform(-4, 4, BATCH), rng.choice([-1, 1], BATCH) * rng.uniform(0.5, 3, BATCH)]


def probability_and_target(rng):
    return [rng.uniform(0.05, 0.95, BATCH), rng.uniform(0, 1, BATCH)]


def logit_and_target(rng):
    return [rng.uniform(-6, 6, BATCH), rng.uniform(0, 1, BATCH)]


def target_and_log_probability(rng):
    return [rng.uniform(0, 1, BATCH), rng.uniform(-6, -0.01, BATCH)]


@dataclass
class Row:
    name: str
    reference: object                 # numpy forward definition (float64)
    domain: object = uniform(-4, 4)
    attrs: dict = field(default_factory=dict)
    kinks: tuple = ()                 # points the sampler keeps away from (derivative undefined)
    gradient_flows: bool = True       # False: the derivative is zero by design (stop_gradient)

    @property
    def id(self):
        extra = ",".join(f"{k}={v}" for k, v in self.attrs.items())
        return f"{self.name}[{extra}]" if extra else self.name

    def sample(self, seed=0):
        rng = np.random.default_rng(seed)
        args = self.domain(rng)
        for kink in self.kinks:  # push samples at least 0.05 away from every kink
            args[0] = np.where(np.abs(args[0] - kink) < 0.05, kink + 0.1, args[0])
        return args


ROWS = [
    # arithmetic
    Row("add", lambda x, y: x + y, uniform(-4, 4, 2)),
    Row("sub", lambda x, y: x - y, uniform(-4, 4, 2)),
    Row("mul", lambda x, y: x * y, uniform(-4, 4, 2)),
    Row("div", lambda x, y: x / y, nonzero_denominator),
    Row("neg", lambda x: -x),
    Row("pow", lambda x, y: x ** y, lambda rng: [rng.uniform(0.3, 3, BATCH), rng.uniform(-2, 2, BATCH)]),
    Row("power", lambda x: x ** 2),
    Row("power", lambda x: x ** 3, attrs={"p": 3.0}),
    Row("power", lambda x: np.sqrt(x), positive(), attrs={"p": 0.5}),
    Row("square", lambda x: x * x),
    Row("exp", np.exp),
    Row("log", np.log, positive()),
    Row("sqrt", np.sqrt, positive()),
    Row("abs", np.abs, kinks=(0.0,)),
    # activations (torch.nn definitions)
    Row("identity", lambda x: x),
    Row("sigmoid", _sigmoid, uniform(-12, 12)),
    Row("tanh", np.tanh),
    Row("relu", lambda x: np.maximum(x, 0.0), kinks=(0.0,)),
    Row("leaky_relu", lambda x: np.where(x > 0, x, 0.01 * x), kinks=(0.0,)),
    Row("leaky_relu", lambda x: np.where(x > 0, x, 0.2 * x), attrs={"alpha": 0.2}, kinks=(0.0,)),
    Row("elu", lambda x: np.where(x > 0, x, np.expm1(x)), kinks=(0.0,)),
    Row("elu", lambda x: np.where(x > 0, x, 0.5 * np.expm1(x)), attrs={"alpha": 0.5}, kinks=(0.0,)),
    Row("celu", _celu, kinks=(0.0,)),
    Row("celu", lambda x: _celu(x, 2.0), attrs={"alpha": 2.0}, kinks=(0.0,)),
    Row("relu6", _relu6, uniform(-3, 9), kinks=(0.0, 6.0)),
    Row("hardswish", lambda x: x * _relu6(x + 3) / 6, uniform(-6, 6), kinks=(-3.0, 3.0)),
    Row("gelu", lambda x: 0.5 * x * (1 + _erf(x / math.sqrt(2)))),
    Row("gelu_tanh", lambda x: 0.5 * x * (1 + np.tanh(SQRT_2_OVER_PI * (x + 0.044715 * x ** 3)))),
    Row("softplus", _softplus, uniform(-12, 12)),
    Row("mish", lambda x: x * np.tanh(_softplus(x)), uniform(-8, 8)),
    Row("swish", lambda x: x * _sigmoid(x), uniform(-8, 8)),
    # building blocks of composite ops
    Row("stop_gradient", lambda x: x, gradient_flows=False),
    Row("bce_elementwise", lambda p, y: -(y * np.log(p) + (1 - y) * np.log(1 - p)), probability_and_target),
    Row("bce_logits_elementwise",  # PyTorch's BCEWithLogits formula
        lambda z, y: np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))), logit_and_target),
    Row("nll_elementwise", lambda y, log_p: -y * log_p, target_and_log_probability),
]


def test_every_elementwise_op_has_a_row():
    registered = {name for name, op in gn.REGISTRY.items() if op.kind == "elementwise"}
    missing = registered - {row.name for row in ROWS}
    assert not missing, f"elementwise ops without a row in the op table: {sorted(missing)}"


def test_every_activation_is_a_registered_elementwise_op():
    for name in gn.ACTIVATIONS:
        assert gn.REGISTRY[name].kind == "elementwise"


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_forward_matches_definition(row):
    args = row.sample()
    op = gn.REGISTRY[row.name]
    value, _ = forward_and_derivatives(op, args, row.attrs)
    np.testing.assert_allclose(value, row.reference(*args), rtol=1e-10, atol=1e-12)
    value32, _ = forward_and_derivatives(op, args, row.attrs, dtype="float32")
    assert value32.dtype == np.float32
    np.testing.assert_allclose(value32, row.reference(*args), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_backward_matches_finite_differences(row):
    args = row.sample(seed=1)
    _, derivatives = forward_and_derivatives(gn.REGISTRY[row.name], args, row.attrs)
    assert len(derivatives) == len(args)
    for position, derived in enumerate(derivatives):
        if row.gradient_flows:
            expected = central_difference(row.reference, args, position)
        else:
            expected = np.zeros_like(args[position])
        np.testing.assert_allclose(derived, expected, rtol=1e-6, atol=1e-7,
                                   err_msg=f"{row.id}: derivative w.r.t. input {position}")


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

# (value at -1e4, value at 1e4, derivative at -1e4, derivative at 1e4)
LIMITS = {
    "identity": (-1e4, 1e4, 1.0, 1.0),
    "sigmoid": (0.0, 1.0, 0.0, 0.0),
    "tanh": (-1.0, 1.0, 0.0, 0.0),
    "relu": (0.0, 1e4, 0.0, 1.0),
    "leaky_relu": (-100.0, 1e4, 0.01, 1.0),
    "elu": (-1.0, 1e4, 0.0, 1.0),
    "celu": (-1.0, 1e4, 0.0, 1.0),
    "relu6": (0.0, 6.0, 0.0, 0.0),
    "hardswish": (0.0, 1e4, 0.0, 1.0),
    "gelu": (0.0, 1e4, 0.0, 1.0),
    "gelu_tanh": (0.0, 1e4, 0.0, 1.0),
    "softplus": (0.0, 1e4, 0.0, 1.0),
    "mish": (0.0, 1e4, 0.0, 1.0),
    "swish": (0.0, 1e4, 0.0, 1.0),
}


def test_limits_table_covers_every_activation():
    assert set(LIMITS) == set(gn.ACTIVATIONS)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", gn.ACTIVATIONS)
def test_activation_is_finite_and_correct_at_extreme_inputs(name, dtype):
    value, derivative = _derivative_at(name, EXTREMES, dtype=dtype)
    assert value.dtype == derivative.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(value)), f"{name}({EXTREMES}) = {value}"
    assert np.all(np.isfinite(derivative)), f"{name}'({EXTREMES}) = {derivative}"
    low, high, d_low, d_high = LIMITS[name]
    np.testing.assert_allclose([value[0], value[-1]], [low, high], rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose([derivative[0], derivative[-1]], [d_low, d_high], rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("name", gn.ACTIVATIONS)
def test_activation_at_plus_minus_100_matches_definition(name):
    row = next(r for r in ROWS if r.name == name and not r.attrs)
    x = np.array([-100.0, 100.0])
    value, derivative = _derivative_at(name, x)
    np.testing.assert_allclose(value, row.reference(x), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(derivative, central_difference(row.reference, [x], 0, eps=1e-4),
                               rtol=1e-6, atol=1e-12)
