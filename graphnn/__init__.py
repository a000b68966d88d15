"""graphnn: a symbolic computational-graph compiler for neural networks.

Build a network as an explicit DAG, declare every op once as a SymPy body,
derive the backward pass as delta nodes, evaluate it with the NumPy
reference executor, and compile it to generated Numba code.
"""
import os as _os
import sys as _sys

# Numba colours its messages through colorama, which swaps sys.stdout and sys.stderr in and
# out; done from graphnn's background compile thread, that races with anything that redirects
# them in the main thread (doctest, pytest, contextlib.redirect_stdout) and loses its output.
# Plain messages avoid it. (If numba is already imported, runtime/cpu.py does the same.)
if "numba" not in _sys.modules:
    _os.environ.setdefault("NUMBA_DISABLE_ERROR_MESSAGE_HIGHLIGHTING", "1")

from .version import __version__  # noqa: E402
from .errors import (ArgumentError, CacheError, DistributedError, DtypeError, FeedError,
                     FileFormatError, GraphCycleError, GraphMixError, GraphnnError,
                     OpDeclarationError, ShapeError, TargetError, UnknownFunctionError)
from .graph import Graph, Node, init, substitute, topological
from .ops import (ACTIVATIONS, BATCH_SIZE, BUILTINS, REGISTRY, ClampedLog, ElementwiseOp, IndexMax, IndexOp,
                  IndexSum, Expm1, Sigmoid, Softplus, StopGradient, abs_, add, binary_cross_entropy, check_derivative,
                  binary_cross_entropy_with_logits, celu, div, elementwise, elu, exp, gelu,
                  gelu_tanh, hardswish, identity, index_op, indices, l1_penalty, l2_penalty,
                  leaky_relu, linear, log, log_softmax, matmul, max_, mean, mish, mse, mul, neg,
                  nll, pow, power, relu, relu6, sigmoid, softmax, softmax_cross_entropy, softplus,
                  softsign, sqrt, square, stop_gradient, sub, sum_, sum_to, swish, tanh)
from .derive import Backward, LocalDerivative, derive, local_derivative
from .reference import evaluate, loss_and_gradients
from .check import check_grad
from .render import render
from .ops import IndexMaxFirst, avg_pool2d, conv2d, flatten, label_one_hot, max_pool2d
from .ops import append_axes, mean_square
from .nn import (Activation, AvgPool2D, Conv2D, Dense, Dropout, Flatten, GaussianNoise, GraphLayer, Layer,
                 MaxPool2D, Sequential, as_layer, dense, dropout, gaussian_noise, weight_noise,
                 weight_penalty)
from .nn import BatchNorm, LayerNorm, batch_norm, layer_norm
from . import nn

# PyTorch-style short names next to the underscore-suffixed ones
abs = abs_  # noqa: A001
sum = sum_  # noqa: A001
max = max_  # noqa: A001
bce = binary_cross_entropy
bce_with_logits = binary_cross_entropy_with_logits
from .train import SGD, Adam, Momentum, Optimizer
from .train import Callback, LambdaCallback, Schedule, cosine, exponential_decay, step_decay, warmup
from .runtime import Model, compile  # noqa: A001
from . import lecture
from . import data
from .io import load, load_graph, save
from .export import exported_arrays  # noqa: E402  (the arrays an exported module runs with)
from .train import History, fit, metrics
from .lint import NumericsWarning, lint  # noqa: E402  (gn.lint; graphnn.lint.declaration_warnings)
from .explain import explain  # noqa: E402  (gn.explain: the chain rule, path by path)
from . import distributed  # noqa: E402  (gn.distributed: training over MPI; imports mpi4py on use)
