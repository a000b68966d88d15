"""Shared by the compiler tests: the elementwise op table, graph builders, tolerances, a cache dir.

Numba compiles cost ~1 s per generated function, so the tests compile few graphs and share them:
elementwise ops are compiled in groups (one graph per group, each op with its own inputs and
parameters so every op's outputs and gradients can be checked on their own), and builders are
memoised so test files that need the same model get the already-imported module.
"""
import atexit
import functools
import math
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from op_tables import CASES  # noqa: E402
from support import numeric_gradient as _numeric_gradient  # noqa: E402

import graphnn as gn

REPO_ROOT = Path(__file__).resolve().parent.parent

# float64 <= 1e-10 and float32 <= 1e-5, relative to max(1, |reference|)
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}


@functools.lru_cache(maxsize=None)
def session_cache_dir():
    """One fresh compile cache per test session (removed at exit)."""
    path = Path(tempfile.mkdtemp(prefix="graphnn-compiler-tests-"))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def compile_cpu(graph, loss=None, **options):
    options.setdefault("cache_dir", session_cache_dir())
    return gn.compile(graph, loss, target="cpu", **options)


def compile_reference(graph, loss=None, **options):
    return gn.compile(graph, loss, target="reference", **options)


def relative_error(got, reference):
    """max |got - ref| / max(1, |ref|), computed in float64."""
    got = np.asarray(got, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    assert got.shape == reference.shape, f"shape {got.shape} != reference shape {reference.shape}"
    if got.size == 0:
        return 0.0
    return float(np.max(np.abs(got - reference) / np.maximum(1.0, np.abs(reference))))


def assert_close(got, reference, dtype, what):
    tolerance = TOLERANCE[dtype]
    error = relative_error(got, reference)
    assert np.all(np.isfinite(np.asarray(got, dtype=np.float64))), f"{what}: non-finite values {got}"
    assert error <= tolerance, (f"{what}: relative error {error:.3g} > {tolerance:g} ({dtype})\n"
                                f"compiled:  {np.asarray(got).ravel()[:8]}\n"
                                f"reference: {np.asarray(reference).ravel()[:8]}")


def subprocess_env(**extra):
    """Environment for a child Python that imports graphnn from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update({k: str(v) for k, v in extra.items()})
    return env


PYTHON = sys.executable

# -- the elementwise op table ----------------------------------------------------------------
BATCH, WIDTH = 8, 3
PARAM_SCALE = 0.02   # parameters are small offsets: samples stay inside each op's domain


@dataclass(frozen=True)
class Row:
    """One case of the generated op table (tests/op_tables.py) as the compiler tests use it."""
    case: object

    @property
    def name(self):
        return self.case.name

    @property
    def id(self):
        return self.case.id

    @property
    def attrs(self):
        return self.case.attr_dict

    @property
    def gradient_flows(self):
        return self.case.gradient_flows

    def sample(self, rng):
        return self.case.sample(rng, (BATCH, WIDTH))


ROWS = [Row(case) for case in CASES]
GROUP_SIZE = 6      # ~6 ops per generated module: compile time grows faster than linearly with size


def group_of(row):
    return ROWS.index(row) // GROUP_SIZE


def group_count():
    return math.ceil(len(ROWS) / GROUP_SIZE)


def output_name(row):
    return f"out{ROWS.index(row)}"


def param_name(row, position):
    return f"p{ROWS.index(row)}_{position}"


@functools.lru_cache(maxsize=None)
def op_group(group):
    """(graph, loss, feeds) for one group of rows: out_k = op_k(x_k_j + p_k_j), loss = sum_k sum(out_k).

    Op nodes are named ``op<k>_<name>`` (a node named like a helper, e.g. "sigmoid", is a
    separate test: see test_node_named_like_a_helper_or_loop_index)."""
    rng = np.random.default_rng(100 + group)
    graph = gn.Graph(f"op_group_{group}", seed=group)
    feeds, sums = {}, []
    for row in ROWS[group * GROUP_SIZE:(group + 1) * GROUP_SIZE]:
        k = ROWS.index(row)
        op = row.case.op
        samples = row.sample(rng)
        args = []
        for j, sample in enumerate(samples):
            x = graph.input(f"x{k}_{j}", (None, WIDTH))
            p = graph.parameter(param_name(row, j), (WIDTH,),
                                value=rng.uniform(-PARAM_SCALE, PARAM_SCALE, WIDTH))
            feeds[x.name] = sample
            args.append(x + p)
        out = op(*args, name=f"op{k}_{row.name}", **row.attrs)
        graph.output(output_name(row), out)
        sums.append(gn.sum(out))
    loss = sums[0]
    for s in sums[1:]:
        loss = loss + s
    return graph, loss, feeds


@functools.lru_cache(maxsize=None)
def op_group_models(group, dtype):
    """(compiled, reference) models of one op group (no optimizer: forward and gradients)."""
    graph, loss, _ = op_group(group)
    return compile_cpu(graph, loss, dtype=dtype), compile_reference(graph, loss, dtype=dtype)


# -- lecture networks -------------------------------------------------------------------------
def lecture_data(name, n=16, seed=0):
    if name == "regression_net":
        x, y = gn.lecture.noisy_sine(n, seed=seed)
    elif name == "classifier_net":
        x, y = gn.lecture.two_blobs(n, seed=seed)
    else:   # softmax_classifier, mlp: one-hot labels
        x, labels = gn.lecture.two_blobs(n, seed=seed)
        y = np.eye(2)[labels[:, 0].astype(int)]
    return {"x": x, "y": y}


def mlp(seed=0):
    """Two hidden layers (relu, gelu) and a softmax cross-entropy: products feeding products."""
    g = gn.Graph("mlp", seed=seed)
    x, y = g.input("x", (None, 2)), g.input("y", (None, 2))
    h = gn.dense(gn.dense(x, 5, activation="relu", name="hidden1"), 4, activation="gelu", name="hidden2")
    logits = gn.dense(h, 2, name="logits")
    g.output("logits", logits)
    return gn.lecture.LectureNet(g, gn.softmax_cross_entropy(logits, y), logits)


def lecture_net(name, seed=0):
    if name == "mlp":
        return mlp(seed)
    return getattr(gn.lecture, name)(seed=seed)


def make_optimizer(name):
    return {"SGD": lambda: gn.SGD(lr=0.1),
            "Momentum": lambda: gn.Momentum(lr=0.05, momentum=0.9, nesterov=True),
            "Adam": lambda: gn.Adam(lr=0.01)}[name]()


def numeric_gradient(f, x, eps=1e-5):
    """Central differences of a scalar ``f`` at float64 array ``x`` (see tests/support.py)."""
    return _numeric_gradient(f, x, eps)


def model_numeric_gradient(model, feeds, name, eps=1e-5):
    """d loss / d parameter ``name`` of a compiled model by central differences (restores it)."""
    original = model.get_params()[name]

    def loss_at(value):
        model.set_params({name: value})
        return model.evaluate_loss(feeds)

    try:
        return numeric_gradient(loss_at, original, eps)
    finally:
        model.set_params({name: original})


def lecture_models(net_name, optimizer, dtype, **options):
    """(compiled, reference) models of a lecture net, both from the same initial weights."""
    net = lecture_net(net_name)
    compiled = compile_cpu(net.graph, net.loss, optimizer=make_optimizer(optimizer), dtype=dtype, **options)
    reference = compile_reference(net.graph, net.loss, optimizer=make_optimizer(optimizer), dtype=dtype)
    return compiled, reference


# -- index-notation ops: contractions and reductions; convolution and pooling ---------------------
def reductions_graph():
    rng = np.random.default_rng(7)
    g = gn.Graph("reductions", seed=7)
    x = g.input("x", (None, 4))
    W, b, M = g.parameter("W", (4, 3)), g.parameter("b", (3,)), g.parameter("M", (3, 3))
    h = gn.tanh(gn.linear(x, W, b, name="lin"), name="act")
    prod = gn.matmul(h, M, name="prod")
    loss = (gn.sum(gn.mean(prod, axis=0, keepdims=True) * gn.max(prod, axis=1, keepdims=True), name="s1")
            + gn.sum(gn.sum_to(prod, shape=(3,)) * b, name="s2")
            + gn.sum(gn.sum(prod, axis=1) ** 2, name="s3"))
    g.output("prod", prod)
    g.output("row_max", gn.max(prod, axis=1, name="row_max"))
    return g, loss, {"x": rng.normal(size=(6, 4))}


def convolutions_graph():
    rng = np.random.default_rng(8)
    g = gn.Graph("convolutions", seed=8)
    img = g.input("img", (None, 2, 5, 5))
    K, kb, V = g.parameter("K", (3, 2, 3, 3)), g.parameter("kb", (3,)), g.parameter("V", (12, 2))
    conv = gn.conv2d(img, K, kb, stride=1, padding=1, name="conv")                       # (N, 3, 5, 5)
    pooled = gn.max_pool2d(gn.tanh(conv, name="conv_act"), size=2, name="maxpool")        # (N, 3, 2, 2)
    averaged = gn.avg_pool2d(conv, size=3, stride=2, padding=1, name="avgpool")           # (N, 3, 3, 3)
    loss = gn.sum(gn.flatten(pooled, name="flat") @ V, name="s4") + gn.mean(averaged * averaged, name="s5")
    g.output("pooled", pooled)
    g.output("averaged", averaged)
    return g, loss, {"img": rng.normal(size=(6, 2, 5, 5))}


INDEX_GRAPHS = {"reductions": reductions_graph, "convolutions": convolutions_graph}


@functools.lru_cache(maxsize=None)
def index_models(which, dtype):
    """(feeds, compiled, reference) for one of INDEX_GRAPHS."""
    g, loss, feeds = INDEX_GRAPHS[which]()
    return feeds, compile_cpu(g, loss, dtype=dtype), compile_reference(g, loss, dtype=dtype)
