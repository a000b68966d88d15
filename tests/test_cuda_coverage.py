"""The CUDA target under the simulator (conftest switches it on), against the CPU target and the
NumPy reference, in float32 and float64: the pieces the other sweeps leave out.

What runs on the simulator elsewhere, and is not repeated here:

* every built-in elementwise op, value and derivative at extreme points: tests/test_op_sweep.py;
* every built-in index op (matmul, linear, reductions, label_one_hot, conv2d with and without
  stride/padding, max_pool2d, avg_pool2d, flatten, ...) on each of its declared ``examples``,
  value and gradients: tests/test_index_sweep.py (its TARGETS include "cuda");
* parameters and state read back after device steps, and save on CUDA / load on the CPU in
  float64 with Adam: tests/test_cuda_state.py; a cosine schedule with Adam in float64:
  tests/test_train_schedules.py.

Here, generated from what graphnn declares (the index ops of ``gn.BUILTINS``, the losses of
graphnn.ops.composite, the optimizer classes), with a test that fails when one is added that this
file does not run:

* conv2d, max_pool2d, avg_pool2d and flatten composed in a small net: forward and gradients;
* dropout and Gaussian noise: training steps with a fixed seed give the same parameters on every
  target (the masks are drawn on the host, from the model's generator);
* every loss and the L1/L2 weight penalties: value and gradients;
* every optimizer (SGD, Momentum, Nesterov, Adam; with weight decay; one with a cosine schedule):
  3 steps, parameters and optimizer state;
* save after 2 steps on CUDA, load on the CPU, 2 more steps on each: identical.

Batches of 3 rows and tiny shapes: the simulator runs one Python thread per CUDA thread.
"""
import inspect

import numpy as np
import pytest

import graphnn as gn
from graphnn.ops import composite
from graphnn.train import optimizers

pytestmark = pytest.mark.cuda

DTYPES = ["float32", "float64"]
TOL = {"float32": 1e-5, "float64": 1e-10}
BATCH = 3


def _close(got, want, dtype, what):
    tol = TOL[dtype]
    assert set(got) == set(want), f"{what}: {sorted(set(got) ^ set(want))}"
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want[k]), rtol=tol, atol=tol,
                                   err_msg=f"{what}: {k} ({dtype})")


def _models(graph, loss, dtype, optimizer=lambda: gn.SGD(lr=0.0), seed=None):
    """{target: model} for reference, cpu and cuda, each with its own optimizer instance."""
    return {t: gn.compile(graph, loss, target=t, dtype=dtype, optimizer=optimizer(), seed=seed, wait=True)
            for t in ("reference", "cpu", "cuda")}


def _agree(models, feeds, dtype):
    """Outputs, loss and gradients of cpu and cuda equal the reference's."""
    results = {t: (m.forward(feeds), *m.loss_and_gradients(feeds)) for t, m in models.items()}
    outs, value, grads = results["reference"]
    for t in ("cpu", "cuda"):
        got_outs, got_value, got_grads = results[t]
        _close(got_outs, outs, dtype, f"{t} outputs")
        _close({"loss": got_value}, {"loss": value}, dtype, f"{t} loss")
        _close(got_grads, grads, dtype, f"{t} gradients")
    return results["reference"]


# -- conv2d, pooling and flatten in a small net ----------------------------------------------

# the built-in index ops declared in graphnn/ops/conv.py: the net below uses each at least once
SPATIAL = {op.name for op in gn.BUILTINS.values() if op.kind == "index" and op.__module__ == "graphnn.ops.conv"}


def test_the_spatial_ops_are_found():
    assert {"conv2d", "max_pool2d", "avg_pool2d", "flatten"} <= SPATIAL


def _cnn():
    """x (N, 1, 6, 6) -> Gaussian noise -> conv 3x3 pad 1 -> relu -> max-pool 2 -> conv 3x3 stride 2
    pad 1 -> avg-pool 3 stride 1 pad 1 -> flatten -> dropout -> dense 3 -> softmax cross-entropy."""
    g = gn.Graph("cnn", seed=3)
    x, y = g.input("x", (None, 1, 6, 6)), g.input("y", (None, 3))
    h = gn.GaussianNoise(0.3, name="noise")(x)
    h = gn.Conv2D(2, 3, padding=1, activation="relu", name="c1")(h)                 # (N, 2, 6, 6)
    h = gn.MaxPool2D(2, name="p1")(h)                                                # (N, 2, 3, 3)
    h = gn.Conv2D(3, 3, stride=2, padding=1, activation="tanh", name="c2")(h)       # (N, 3, 2, 2)
    h = gn.AvgPool2D(3, stride=1, padding=1, name="p2")(h)                           # (N, 3, 2, 2)
    h = gn.Flatten(name="flat")(h)                                                   # (N, 12)
    h = gn.Dropout(0.5, name="drop")(h)
    logits = g.output("logits", gn.dense(h, 3, name="out"))
    loss = gn.softmax_cross_entropy(logits, y)
    used = {n.op.name for n in g.nodes(loss) if n.op is not None}
    assert SPATIAL <= used, sorted(SPATIAL - used)
    return g, loss


def _images():
    rng = np.random.default_rng(0)
    return {"x": rng.standard_normal((BATCH, 1, 6, 6)), "y": np.eye(3)[rng.integers(0, 3, BATCH)]}


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_pool_flatten_net_with_dropout_and_noise(dtype):
    """In evaluation (no mask, no noise) outputs, loss and gradients agree. In training the masks
    and the noise are drawn on the host from the model's generator (``seed=``): two Momentum
    steps give the same parameters on every target, and another seed gives others."""
    g, loss = _cnn()
    feeds = _images()
    models = _models(g, loss, dtype, lambda: gn.Momentum(lr=0.1), seed=7)
    _, value, grads = _agree(models, feeds, dtype)
    assert value > 0 and all(np.any(v != 0) for v in grads.values()), "a gradient is all zero"
    other = gn.compile(g, loss, target="reference", dtype=dtype, optimizer=gn.Momentum(lr=0.1), seed=8)
    for m in (*models.values(), other):
        for _ in range(2):
            m.step(feeds)
    want = models["reference"].get_params()
    for t in ("cpu", "cuda"):
        _close(models[t].get_params(), want, dtype, f"{t} params after training steps")
        _close(dict(models[t].state), dict(models["reference"].state), dtype, f"{t} velocities")
    assert not np.allclose(other.get_params()["out/W"], want["out/W"]), "the seed changed nothing"


# -- losses and weight penalties --------------------------------------------------------------

def _loss_functions():
    """The public losses of graphnn.ops.composite: the functions that take ``reduction=``."""
    return {name: fn for name, fn in vars(composite).items()
            if inspect.isfunction(fn) and not name.startswith("_") and fn.__module__ == composite.__name__
            and "reduction" in inspect.signature(fn).parameters}


# loss name -> its cases: (prediction from z, target drawn from rng for C classes, reduction)
LOSSES = {
    "mse": [(lambda z: z, lambda rng, c: rng.standard_normal((BATCH, c)), "mean")],
    "binary_cross_entropy": [(gn.sigmoid, lambda rng, c: rng.uniform(0, 1, (BATCH, c)), "mean")],
    "binary_cross_entropy_with_logits": [(lambda z: z, lambda rng, c: rng.integers(0, 2, (BATCH, c)), "sum")],
    "softmax_cross_entropy": [(lambda z: z, lambda rng, c: np.eye(c)[rng.integers(0, c, BATCH)], "mean"),
                              (lambda z: z, lambda rng, c: rng.integers(0, c, (BATCH, 1)), "sum")],
    "nll": [(gn.log_softmax, lambda rng, c: np.eye(c)[rng.integers(0, c, BATCH)], "sum"),
            (gn.log_softmax, lambda rng, c: rng.integers(0, c, (BATCH,)), "mean")],
}


def test_every_loss_is_in_the_table():
    assert set(_loss_functions()) == set(LOSSES)


def _loss_net():
    """One graph, every loss case an output with its own parameter: z = x_k * s_k, s_k (1, 3)
    (elementwise: no matrix product, whose tiles are slow in the simulator); the total adds the
    L1 and L2 weight penalties of every s_k."""
    g = gn.Graph("losses", seed=2)
    rng = np.random.default_rng(5)
    feeds, total = {}, None
    fns = _loss_functions()
    for name, cases in LOSSES.items():
        for k, (predict, target, reduction) in enumerate(cases):
            tag = f"{name}{k}"
            x = g.input(f"x_{tag}", (None, 3))
            y_value = np.asarray(target(rng, 3), dtype=float)
            y = g.input(f"y_{tag}", (None, *y_value.shape[1:]))
            feeds[x.name], feeds[y.name] = 2 * rng.standard_normal((BATCH, 3)), y_value
            s = g.parameter(f"s_{tag}", (1, 3), init=lambda rng, shape: rng.uniform(0.5, 1.5, shape))
            loss = fns[name](predict(x * s), y, reduction=reduction, name=tag)
            g.output(f"loss_{tag}", loss)
            total = loss if total is None else total + loss
    penalty = gn.weight_penalty(g, l2=0.05, l1=0.01)
    g.output("penalty", penalty)
    return g, total + penalty, feeds


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_loss_and_the_weight_penalties_value_and_gradients(dtype):
    g, loss, feeds = _loss_net()
    outs, value, grads = _agree(_models(g, loss, dtype), feeds, dtype)
    assert {f"loss_{n}{k}" for n, cases in LOSSES.items() for k in range(len(cases))} <= set(outs)
    assert float(outs["penalty"]) > 0 and len(grads) == sum(map(len, LOSSES.values()))
    assert all(np.all(v != 0) for v in grads.values())


# -- optimizers -------------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd": lambda: gn.SGD(lr=0.1),
    "sgd_weight_decay": lambda: gn.SGD(lr=0.1, weight_decay=0.01),
    "momentum": lambda: gn.Momentum(lr=0.1, momentum=0.9),
    "nesterov": lambda: gn.Momentum(lr=0.1, momentum=0.9, nesterov=True),
    "nesterov_weight_decay": lambda: gn.Momentum(lr=0.1, nesterov=True, weight_decay=0.01),
    "adam": lambda: gn.Adam(lr=0.05),
    "adam_weight_decay": lambda: gn.Adam(lr=0.05, weight_decay=0.01),
    "adamw": lambda: gn.Adam(lr=0.05, weight_decay=0.01, decoupled=True),
    "momentum_cosine": lambda: gn.Momentum(lr=0.1, schedule=gn.cosine(steps=3)),
}


def test_every_optimizer_class_is_in_the_table():
    classes = {cls for cls in vars(optimizers).values()
               if inspect.isclass(cls) and issubclass(cls, optimizers.Optimizer) and cls is not optimizers.Optimizer}
    assert classes == {type(make()) for make in OPTIMIZERS.values()}


def _small_net(dropout=0.0):
    """tanh(x * a + b) [-> dropout] -> mse: a (1, 2) and b (2,) (elementwise, no matrix product)."""
    g = gn.Graph("small_net", seed=4)
    x, y = g.input("x", (None, 2)), g.input("y", (None, 2))
    a = g.parameter("a", (1, 2), init=lambda rng, shape: rng.uniform(0.5, 1.5, shape))
    b = g.parameter("b", (2,), init=lambda rng, shape: rng.uniform(-0.5, 0.5, shape))
    h = gn.tanh(x * a + b)
    loss = gn.mse(gn.dropout(h, dropout) if dropout else h, y)
    rng = np.random.default_rng(6)
    return g, loss, {"x": rng.standard_normal((BATCH, 2)), "y": rng.standard_normal((BATCH, 2))}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_steps_match_the_cpu(name, dtype):
    g, loss, feeds = _small_net()
    models = {t: gn.compile(g, loss, target=t, dtype=dtype, optimizer=OPTIMIZERS[name](), wait=True)
              for t in ("cpu", "cuda")}
    start = models["cpu"].get_params()
    for m in models.values():
        for _ in range(3):
            m.step(feeds)
    cpu, cuda = models["cpu"], models["cuda"]
    assert not np.allclose(cpu.get_params()["a"], start["a"])
    _close(cuda.get_params(), cpu.get_params(), dtype, f"{name} params")
    _close(dict(cuda.state), dict(cpu.state), dtype, f"{name} optimizer state")
    assert cuda.step_count == cpu.step_count == 3


# -- save on CUDA, load on the CPU ------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES)
def test_trained_on_cuda_saved_loaded_on_cpu_continues_identically(dtype, tmp_path):
    """With dropout and Nesterov: the parameters, the velocities and the generator's state travel."""
    g, loss, feeds = _small_net(dropout=0.25)
    cuda = gn.compile(g, loss, target="cuda", dtype=dtype, optimizer=gn.Momentum(lr=0.1, nesterov=True),
                      seed=11, wait=True)
    for _ in range(2):
        cuda.step(feeds)
    gn.save(cuda, tmp_path / "m")
    cpu = gn.load(tmp_path / "m", target="cpu")
    assert cpu.dtype == np.dtype(dtype) and cpu.step_count == 2
    _close(cpu.get_params(), cuda.get_params(), dtype, "loaded params")
    _close(dict(cpu.state), dict(cuda.state), dtype, "loaded state")
    assert all(np.any(v != 0) for v in cpu.state.values()), "a saved velocity is all zero"
    for m in (cuda, cpu):
        for _ in range(2):
            m.step(feeds)
    _close(cpu.get_params(), cuda.get_params(), dtype, "params after 2 more steps")
    _close(dict(cpu.state), dict(cuda.state), dtype, "state after 2 more steps")
