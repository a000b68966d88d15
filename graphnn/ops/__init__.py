"""Stage 1b: the op registry. Every op is one SymPy body; see :mod:`.registry`."""
from .composite import (binary_cross_entropy, binary_cross_entropy_with_logits, bce_elementwise,
                        bce_logits_elementwise, l1_penalty, l2_penalty, label_one_hot, log_softmax, mse, nll,
                        softmax, softmax_cross_entropy, stop_gradient)
from .elementwise import (abs_, add, celu, div, elu, exp, gelu, gelu_tanh, hardswish,
                          identity, leaky_relu, log, mish, mul, neg, pow, power, relu, relu6,
                          sigmoid, softplus, softsign, sqrt, square, sub, swish, tanh)
from .conv import avg_pool2d, conv2d, flatten, max_pool2d
from .functions import IndexMax, IndexMaxFirst, IndexSum
from .index_body import BATCH_SIZE, IndexBody, Term, guarded, in_range, indices
from .index_ops import append_axes, linear, matmul, max_, mean, mean_square, sum_, sum_to
from .primitives import PRIMITIVES, ClampedLog, ClampedReciprocal, Expm1, Sigmoid, Softplus, StopGradient
from .registry import (ACTIVATIONS, REGISTRY, AttrKind, ElementwiseOp, IndexOp, Ints, check_derivative,
                       elementwise, index_op)

BUILTINS = dict(REGISTRY)
"""The ops graphnn declares, by name: what the generated test sweeps cover (a user op that
reuses a name replaces the REGISTRY entry, not this one)."""

_elementwise_pow = pow


def pow(x, y):  # noqa: A001
    """x ** y; a number exponent becomes the attribute of op ``power``."""
    if isinstance(y, (int, float)):
        return power(x, p=float(y))
    return _elementwise_pow(x, y)
