"""The compiled training loop: ``Model.train_steps`` and ``fit`` against one ``step`` call per batch.

Whatever runs the steps -- the compiled loop, the kernel loop, the reference -- the
parameters, optimizer state, step count, random draws and losses must end as
``model.step`` on the same batches leaves them, to the last bit or two: the same kernels,
called one by one or inlined into one loop, may round differently (in full test sessions
float32 Adam and float64 SGD/Adam losses differed by one unit in the last place; the
same tests alone were exact).
"""
import numpy as np
import pytest

import graphnn as gn
from compile_support import make_optimizer


def _twins(make, optimizer, dtype, target="cpu", **options):
    """Two models of the same graph with the same initial weights."""
    graph, loss = make()
    return [gn.compile(graph, loss, optimizer=make_optimizer(optimizer), dtype=dtype, target=target,
                       wait=True, **options) for _ in range(2)]


def _regression():
    net = gn.lecture.regression_net()
    return net.graph, net.loss


def _dropout_net():
    g = gn.Graph("dropout-net", seed=4)
    x, y = g.input("x", (None, 3)), g.input("y", (None, 2))
    h = gn.nn.dropout(gn.dense(x, 5, activation="tanh", name="hidden"), rate=0.3)
    out = gn.dense(h, 2, name="out")
    g.output("out", out)
    return g, gn.mse(out, y)


def _image_net():
    """A feed of rank 3: rows of (2, 3) matrices."""
    g = gn.Graph("image-net", seed=5)
    x, y = g.input("x", (None, 2, 3)), g.input("y", (None, 1))
    out = gn.dense(gn.tanh(gn.flatten(x)), 1, name="out")
    g.output("out", out)
    return g, gn.mse(out, y)


def _data(graph, rows, seed=0):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal((rows, *node.shape[1:]))
            for name, node in graph.inputs.items() if node.batched and node.role != "random"}


def _by_steps(model, feeds, order, batch_size):
    losses = []
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        losses.append(model.step({k: v[rows] for k, v in feeds.items()}))
    return np.array(losses)


def _assert_same(got, expected, dtype, what=""):
    if np.dtype(dtype) == np.float64:
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14, err_msg=what)
    else:
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=what)


def _assert_same_state(a, b):
    assert a.step_count == b.step_count
    for name in a.params:
        _assert_same(a.params[name], b.params[name], a.dtype, name)
    for name in a.state:
        _assert_same(a.state[name], b.state[name], a.dtype, name)


def _order(kind):
    """203 rows shuffled (the loop gathers each batch's rows), or 0, 1, 2, ... (it reads each
    batch where it is in the data)."""
    return np.random.default_rng(2).permutation(203) if kind == "shuffled" else np.arange(203)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
@pytest.mark.parametrize("make", [_regression, _dropout_net, _image_net], ids=["regression", "dropout", "rank3"])
@pytest.mark.parametrize("kind", ["shuffled", "in-order"])
def test_train_steps_match_one_step_per_batch_bit_for_bit(make, optimizer, dtype, kind):
    looped, stepped = _twins(make, optimizer, dtype)
    feeds = _data(looped.graph, 203, seed=1)                       # 12 full batches and one of 11 rows
    order = _order(kind)
    before = {k: v.copy() for k, v in feeds.items()}
    losses = looped.train_steps(feeds, batch_size=16, order=order)
    assert looped.backend.build("step").loop is not None, "the steps did not run in the compiled loop"
    expected = _by_steps(stepped, feeds, order, 16)
    _assert_same(losses, expected, dtype, "losses")
    _assert_same_state(looped, stepped)
    # the random inputs' generator is where the steps leave it
    assert looped.rng.bit_generator.state == stepped.rng.bit_generator.state
    for k, v in feeds.items():      # batches read in place are read, never written
        np.testing.assert_array_equal(v, before[k])


def test_train_steps_on_the_reference_target_is_the_same_loop():
    looped, stepped = _twins(_regression, "Momentum", "float64", target="reference")
    feeds = _data(looped.graph, 50)
    losses = looped.train_steps(feeds, batch_size=8, steps=4)
    np.testing.assert_array_equal(losses, _by_steps(stepped, feeds, np.arange(32), 8))
    _assert_same_state(looped, stepped)


def test_train_steps_defaults_and_shuffle():
    looped, stepped = _twins(_regression, "SGD", "float32")
    feeds = _data(looped.graph, 40)
    assert looped.train_steps(feeds, batch_size=16).shape == (3,)       # one pass, the last batch of 8
    assert looped.step_count == 3
    _by_steps(stepped, feeds, np.arange(40), 16)
    # shuffle=True: the order is a permutation from the model's generator
    order = stepped.rng.permutation(40)
    _assert_same(looped.train_steps(feeds, batch_size=10, shuffle=True), _by_steps(stepped, feeds, order, 10),
                 "float32", "shuffled losses")
    _assert_same_state(looped, stepped)


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"batch_size": -5}, "batch_size must be a positive integer"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer"),
    ({"batch_size": 4, "steps": 20}, "20 steps of 4 rows"),
    ({"batch_size": 4, "order": [0, 1, 99]}, "row numbers in [0, 10)"),
    ({"batch_size": 4, "order": [[0, 1]]}, "1-D array"),
    ({"batch_size": 4, "order": [0.5, 1.5]}, "row numbers (integers)"),
    ({"batch_size": 4, "order": ["a", "b"]}, "row numbers (integers)"),
])
def test_train_steps_refuses_bad_arguments(kwargs, message):
    model = _twins(_regression, "SGD", "float32")[0]
    with pytest.raises(gn.GraphnnError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        model.train_steps(_data(model.graph, 10), **kwargs)
    assert model.step_count == 0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shuffle", [True, False])
def test_fit_matches_one_step_per_batch_bit_for_bit(dtype, shuffle):
    fitted, stepped = _twins(_dropout_net, "Adam", dtype)
    feeds = _data(fitted.graph, 150, seed=3)
    # the first step compiles the loop, so fit runs every full batch in it
    fitted.train_steps(feeds, batch_size=16, steps=1)
    stepped.step({k: v[:16] for k, v in feeds.items()})
    history = fitted.fit(feeds, epochs=4, batch_size=16, seed=7, verbose=False, shuffle=shuffle)
    assert fitted.backend.build("step").loop is not None
    # what fit does, one step call per batch
    shuffle_seed, random_seed, _ = np.random.SeedSequence(7).spawn(3)
    order_rng = np.random.default_rng(shuffle_seed)
    stepped.reseed(random_seed)
    expected = []
    for _ in range(4):
        order = order_rng.permutation(150) if shuffle else np.arange(150)     # in place, or gathered
        losses = _by_steps(stepped, feeds, order, 16)
        sizes = [len(order[s:s + 16]) for s in range(0, 150, 16)]
        total = 0.0
        for loss, size in zip(losses, sizes):
            total += float(loss) * size
        expected.append(total / 150)
    _assert_same(np.array(history["loss"]), np.array(expected), dtype, "history")
    _assert_same_state(fitted, stepped)
