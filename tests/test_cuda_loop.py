"""Whole epochs on the device (issue 15, item 3): on the CUDA target ``fit`` and
``train_steps`` keep the training data on the device, gather each step's rows there through
the order, advance the step count there and read the losses back once per call. Under the CUDA
simulator: equal to the CPU, bit-identical to the same steps called one by one, one upload of
the data per fit."""
import numpy as np
import pytest

import graphnn as gn

pytestmark = pytest.mark.cuda


def _model(target, dtype="float64"):
    g = gn.Graph("loop", seed=0)
    x, y = g.input("x", (None, 5)), g.input("y", (None, 3))
    logits = g.output("logits", gn.Sequential([gn.Dense(6, activation="tanh"), gn.Dropout(0.3),
                                               gn.Dense(3)])(x))
    # a schedule reads the step count t, which the loop advances on the device
    optimizer = gn.Adam(0.05, schedule=gn.cosine(steps=10))
    return gn.compile(g, gn.softmax_cross_entropy(logits, y), optimizer=optimizer, dtype=dtype,
                      target=target, wait=True)


def _data(rows=12):
    rng = np.random.default_rng(1)
    return rng.normal(size=(rows, 5)), np.eye(3)[rng.integers(0, 3, rows)]


def _counting_loop(model):
    """Count the calls of the CUDA backend's training loop."""
    made, calls = model.backend.training_loop, []

    def training_loop(batch, force=False):
        loop = made(batch, force)

        def counted(*args):
            calls.append(args[4])       # steps
            return loop(*args)
        return counted
    model.backend.training_loop = training_loop
    return calls


def test_fit_on_the_device_equals_the_cpu_with_one_upload():
    X, Y = _data()
    cpu, cuda = _model("cpu"), _model("cuda")
    calls = _counting_loop(cuda)
    expected = cpu.fit(X, Y, epochs=2, batch_size=4, seed=3, verbose=False)
    got = cuda.fit(X, Y, epochs=2, batch_size=4, seed=3, verbose=False)
    assert sum(calls) == 6 and cuda.step_count == cpu.step_count == 6    # every step in the loop
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-12)
    for k, v in cpu.get_params().items():
        np.testing.assert_allclose(cuda.get_params()[k], v, rtol=1e-12, atol=1e-14, err_msg=k)
    for k, v in cpu.state.items():
        np.testing.assert_allclose(cuda.state[k], v, rtol=1e-12, atol=1e-14, err_msg=k)
    # x and y went to the device once for the whole fit; the losses came back once per call
    assert cuda.backend.transfers == {"data": 2, "losses": len(calls)}
    assert cuda.backend._data is None       # released when the fit ended


def _same(a, b, what=""):
    """Bit for bit under the simulator; on a GPU the bias gradients' atomic adds may round
    in another order from one call to the next."""
    from numba import config
    if config.ENABLE_CUDASIM:
        np.testing.assert_array_equal(a, b, err_msg=what)
    else:
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=what)


def test_the_loop_is_bit_identical_to_steps_one_by_one():
    X, Y = _data()
    looped, stepped = _model("cuda", "float32"), _model("cuda", "float32")
    stepped.backend.training_loop = lambda batch, force=False: None     # one step per call
    feeds = {"x": X, "y": Y}
    a = looped.train_steps(feeds, batch_size=4, steps=3, shuffle=True)
    b = stepped.train_steps(feeds, batch_size=4, steps=3, shuffle=True)
    assert looped.backend.transfers["losses"] == 1 and stepped.backend.transfers["losses"] == 0
    _same(a, b, "losses")
    assert looped.step_count == stepped.step_count == 3
    for k, v in stepped.get_params().items():
        _same(looped.get_params()[k], v, k)
    for k, v in stepped.state.items():
        _same(looped.state[k], v, k)
    # the generator drew the same masks: the next step is the same too
    _same(looped.step(feeds), stepped.step(feeds), "the next step")


def test_new_data_is_uploaded_again():
    X, Y = _data(8)
    model = _model("cuda")
    model.train_steps({"x": X, "y": Y}, batch_size=4, steps=1)
    X[:] = 0.0      # changed in place between calls: the next call must not train on the old rows
    expected = _model("cpu")
    expected.train_steps({"x": _data(8)[0], "y": Y}, batch_size=4, steps=1)
    model.train_steps({"x": X, "y": Y}, batch_size=4, steps=1)
    expected.train_steps({"x": X, "y": Y}, batch_size=4, steps=1)
    assert model.backend.transfers["data"] == 4
    for k, v in expected.get_params().items():
        np.testing.assert_allclose(model.get_params()[k], v, rtol=1e-12, atol=1e-14, err_msg=k)
