"""Safety of training and feeding inputs: fit's arguments, 0-row batches, Ctrl-C during fit,
feeds that are not plain arrays of numbers, assigning parameters, optimizer hyper-parameters.

The lecture's 1-2-1 net throughout; compiled CPU models are made once per module and reset
between tests (their compile takes seconds).
"""
import copy
import os
import signal
import sys

import numpy as np
import pytest

import graphnn as gn

X, Y = gn.lecture.noisy_sine(n=32)
FEEDS = {"x": X, "y": Y}


def _model(target="reference", optimizer=None, dtype="float64"):
    net = gn.lecture.regression_net()
    return gn.compile(net.graph, net.loss, optimizer=optimizer or gn.Adam(lr=0.05), target=target,
                      dtype=dtype, wait=True)


INITIAL = _model().get_params()


def _reset(model):
    """Back to the initial parameters, zero optimizer state, step 0."""
    model.set_params(INITIAL)
    for name in model.state:
        model.state[name][...] = 0
    model.step_count = 0
    model.optimizer.hyper["lr"] = 0.05
    return model


@pytest.fixture(scope="module")
def cpu_pair():
    """Two compiled CPU models of the same net (float64, Adam), the training loop compiled."""
    models = [_model("cpu") for _ in range(2)]
    for m in models:
        m.train_steps(FEEDS, batch_size=8, steps=1)
        assert m.backend.build("step").loop is not None
    return models


@pytest.fixture(scope="module")
def reference_pair():
    return [_model() for _ in range(2)]


@pytest.fixture(params=["reference", "cpu"])
def model(request, cpu_pair, reference_pair):
    return _reset((cpu_pair if request.param == "cpu" else reference_pair)[0])


def _same_state(a, b):
    assert a.step_count == b.step_count
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name], err_msg=name)
    for name in a.state:
        np.testing.assert_array_equal(a.state[name], b.state[name], err_msg=name)


# -- 1. fit's arguments ----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, error, message", [
    ({"batch_size": -5}, gn.FeedError, "batch_size must be a positive integer; got -5"),
    ({"batch_size": 0}, gn.FeedError, "batch_size must be a positive integer; got 0"),
    ({"batch_size": 2.5}, gn.FeedError, "batch_size must be a positive integer; got 2.5"),
    ({"batch_size": True}, gn.FeedError, "batch_size must be a positive integer; got True"),
    ({"epochs": -1}, gn.FeedError, "epochs must be a non-negative integer; got -1"),
    ({"epochs": 2.5}, gn.FeedError, "epochs must be a non-negative integer; got 2.5"),
    ({"patience": -1}, gn.FeedError, "patience must be a non-negative integer; got -1"),
    ({"eval_batch_size": 0}, gn.FeedError, "eval_batch_size must be a positive integer; got 0"),
    ({"seed": "a"}, gn.ArgumentError, "seed must be a non-negative integer"),
    ({"validation_data": {"x": X[:0], "y": Y[:0]}}, gn.FeedError, "validation_data: the feeds have 0 rows"),
    ({"validation_data": {"x": X[:, 0], "y": Y}}, gn.FeedError, r"feed 'x' has shape \(32,\)"),
    ({"validation_data": X}, gn.FeedError, "validation_data must be a dict"),
])
def test_fit_refuses_bad_arguments_before_training(model, kwargs, error, message):
    with pytest.raises(error, match=message):
        model.fit(FEEDS, **{"epochs": 2, "batch_size": 8, "verbose": False, **kwargs})
    assert model.step_count == 0
    assert all(np.array_equal(model.get_params()[k], INITIAL[k]) for k in INITIAL)


@pytest.mark.parametrize("feeds, message", [
    ({"x": X[:0], "y": Y[:0]}, "fit: the feeds have 0 rows"),
    ({"x": X, "y": Y[:5]}, "different numbers of rows"),
    ({"x": X[:, 0], "y": Y}, r"feed 'x' has shape \(32,\)"),
    ({"x": 1.0, "y": Y}, "feed 'x' is a single number"),
    ({"x": X}, r"missing feed\(s\) \['y'\]"),
    ([X, Y], "feeds must be a dict"),
])
def test_fit_refuses_bad_feeds_before_training(model, feeds, message):
    with pytest.raises(gn.FeedError, match=message):
        model.fit(feeds, epochs=1, batch_size=8, verbose=False)
    assert model.step_count == 0


def test_fit_takes_numpy_integers_a_batch_larger_than_the_data_and_no_epochs(model):
    history = model.fit(FEEDS, epochs=np.int64(2), batch_size=np.int32(1000), shuffle=False, verbose=False)
    assert model.step_count == 2 and len(history["loss"]) == 2       # one batch of all 32 rows an epoch
    history = model.fit(FEEDS, epochs=0, verbose=False)
    assert model.step_count == 2 and history.epoch == [] and model.history is history


# -- 2. batches of 0 rows --------------------------------------------------------------------

def _empty_batch_behaviour(model):
    _reset(model)
    empty = {"x": X[:0], "y": Y[:0]}
    out = model.forward({"x": X[:0]})
    assert set(out) == set(model.forward({"x": X[:1]})) and out["y_hat"].shape == (0, 1)
    assert out["y_hat"].dtype == model.dtype
    for call in (model.step, model.loss_and_gradients, model.evaluate_loss):
        with pytest.raises(gn.FeedError, match="0 rows, and the loss of an empty batch is undefined"):
            call(empty)
    assert model.step_count == 0
    assert all(np.array_equal(model.get_params()[k], INITIAL[k]) for k in INITIAL)
    assert model.train_steps(empty, batch_size=4).shape == (0,)        # no rows, no steps


def test_an_empty_batch_predicts_no_rows_and_has_no_loss(model):
    _empty_batch_behaviour(model)


@pytest.mark.cuda
def test_an_empty_batch_on_cuda():
    _empty_batch_behaviour(_model("cuda"))


@pytest.mark.parametrize("target", ["reference", "cpu"])
def test_an_output_reduced_over_the_rows_of_an_empty_batch_is_a_mean_over_none(target):
    """0 rows: a mean is 0/0 = NaN (tests/test_numerics_extremes.py has sums and maxima)."""
    g = gn.Graph("mean-out")
    x = g.input("x", (None, 3))
    g.output("rows", gn.tanh(x))
    g.output("mean", gn.mean(x))
    model = gn.compile(g, target=target, wait=True)
    assert model.forward({"x": np.ones((2, 3))})["mean"] == pytest.approx(1.0)
    out = model.forward({"x": np.ones((0, 3))})
    assert out["rows"].shape == (0, 3) and np.isnan(out["mean"])


def test_the_reference_executor_takes_a_mean_over_no_rows_as_nan():
    g = gn.Graph()
    x = g.input("x", (None, 3))
    mean, total = gn.mean(x), gn.sum(x)
    values = gn.evaluate([mean, total], {"x": np.zeros((0, 3))})
    assert np.isnan(values[mean.name]) and values[total.name] == 0.0
    net = gn.lecture.regression_net()
    loss, grads = gn.loss_and_gradients(net.loss, {"x": X[:0], "y": Y[:0]})
    assert np.isnan(loss) and all(np.all(g == 0) for g in grads.values())    # sums over no rows


# -- 3. Ctrl-C during fit --------------------------------------------------------------------

def _events(run):
    """The profiler events of ``run()`` as (kind, function name), 'c_call' left out."""
    events = []

    def record(frame, kind, arg):
        if kind != "c_call":
            events.append((kind, frame.f_code.co_name))
    sys.setprofile(record)
    try:
        run()
    finally:
        sys.setprofile(None)
    return events


def _interrupted_at(event, run):
    """Run ``run()`` with a SIGINT sent at its ``event``-th profiler event, as a Ctrl-C would be;
    True if it raised KeyboardInterrupt. 'c_call' events are skipped: a signal cannot land
    between a call and the C function it calls."""
    seen = [0]

    def profile(frame, kind, arg):
        if kind == "c_call":
            return
        seen[0] += 1
        if seen[0] == event:
            sys.setprofile(None)
            signal.raise_signal(signal.SIGINT)
    sys.setprofile(profile)
    try:
        run()
    except KeyboardInterrupt:
        return True
    finally:
        sys.setprofile(None)
    return False


def _check_interrupts(model, twin, run, replay, points, returns_of=()):
    """Interrupt ``run`` (a fit of ``model``) at ``points`` spread over its events, and as the
    functions named in ``returns_of`` return; after each, ``replay`` of the same number of
    steps on ``twin`` must give the same model exactly."""
    _reset(model)
    run()                                   # warm: the runs below take the same path
    _reset(model)
    events = _events(run)
    chosen = set(np.linspace(1, 0.9 * len(events), points).astype(int))
    chosen |= {k + 1 for k, (kind, name) in enumerate(events) if kind == "return" and name in returns_of}
    assert len(chosen) > points / 2 + len(returns_of)
    interrupted = 0
    for event in sorted(chosen):
        _reset(model)
        interrupted += _interrupted_at(event, run)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        replay(_reset(twin), model.step_count)
        _same_state(model, twin)
    assert interrupted >= 0.8 * len(chosen), f"only {interrupted} of {len(chosen)} runs were interrupted"


@pytest.mark.parametrize("augment", [None, lambda a, rng: a], ids=["steps", "augment"])
def test_an_interrupted_fit_leaves_the_model_after_a_completed_step(reference_pair, augment):
    model, twin = reference_pair

    def run(m=model):
        m.fit(FEEDS, epochs=2, batch_size=8, shuffle=False, verbose=False, augment=augment)

    def replay(m, steps):       # what fit does, one step call per batch, batches in turn
        for s in range(steps):
            rows = slice(s % 4 * 8, s % 4 * 8 + 8)
            m.step({"x": X[rows], "y": Y[rows]})
    _check_interrupts(model, twin, run, replay, points=25)


def test_an_interrupted_fit_in_the_compiled_training_loop_is_consistent(cpu_pair):
    model, twin = cpu_pair

    def run(m=model):
        m.fit(FEEDS, epochs=3, batch_size=8, shuffle=False, verbose=False)

    def replay(m, steps):       # the same loop, one call (its steps agree bit for bit in float64)
        if steps:
            m.train_steps(FEEDS, batch_size=8, order=np.tile(np.arange(32), 3), steps=steps)
    # also as each call of the compiled loop returns, before fit counts its steps
    _check_interrupts(model, twin, run, replay, points=30, returns_of=("loop",))


@pytest.mark.parametrize("where", ["__exit__", "__enter__"])
def test_a_ctrl_c_as_the_guard_comes_or_goes_leaves_the_handler_as_it_was(where):
    """Python runs a signal handler as a function is entered: a Ctrl-C landing as fit removes
    its guard pre-empted the guard's __exit__ and left graphnn's handler installed, so later
    fits in the process held nothing (seen once, by chance, under pytest-xdist). The
    handler now removes itself before it passes an interrupt on outside a step."""
    from graphnn.runtime import model as runtime
    code = getattr(type(runtime.INTERRUPTS.held_to_step_ends()), where).__code__

    def at_entry(frame, kind, arg):
        if kind == "call" and frame.f_code is code:
            sys.setprofile(None)
            signal.raise_signal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        sys.setprofile(at_entry)
        try:
            with runtime.INTERRUPTS.held_to_step_ends():
                pass
        finally:
            sys.setprofile(None)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert runtime.INTERRUPTS.previous is None


def test_a_step_that_fails_inside_the_backend_does_not_count(reference_pair, monkeypatch):
    model = _reset(reference_pair[0])
    model.step({"x": X[:8], "y": Y[:8]})
    before = model.get_params()

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(model.backend, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        model.step({"x": X[:8], "y": Y[:8]})
    assert model.step_count == 1
    assert all(np.array_equal(model.get_params()[k], before[k]) for k in before)


def test_a_handler_of_the_user_gets_the_held_interrupt_after_the_step(reference_pair):
    model, twin = reference_pair
    _reset(model)
    calls = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    try:
        def step_with_ctrl_c(feeds, training=True, step=model.step):
            before = len(calls)
            signal.raise_signal(signal.SIGINT)      # arrives inside the step
            assert len(calls) == before, "the signal was not held to the step's end"
            return step(feeds, training)
        model.step = step_with_ctrl_c
        model.fit(FEEDS, epochs=1, batch_size=8, shuffle=False, verbose=False, augment=lambda a, rng: a)
    finally:
        del model.step
        signal.signal(signal.SIGINT, previous)
    assert calls == [signal.SIGINT] * 4 and model.step_count == 4      # the handler chose to go on


# -- 4. feeds --------------------------------------------------------------------------------

@pytest.mark.parametrize("value, message", [
    (np.ma.masked_array(X, mask=X > 0), r"feed 'x' is a masked array with masked entries.*filled"),
    ([[1.0, 2.0], [3.0]], "feed 'x' is not a rectangular array of numbers"),
    (X.astype(object), r"feed 'x' has dtype object; it must be numeric .*np.asarray\(value, dtype=float\)"),
    (X.astype(str), "feed 'x' has dtype <U32; it must be numeric"),
    (X + 1j, "feed 'x' has dtype complex128; it must be numeric"),
    (None, "feed 'x' is a NoneType, not a number or an array of numbers"),
    (X[:, 0], r"feed 'x' has shape \(32,\); input 'x' expects \(N, 1\)"),
    (np.zeros((32, 2)), r"feed 'x' has shape \(32, 2\); input 'x' expects \(N, 1\)"),
])
def test_feeds_that_are_not_arrays_of_numbers_are_refused_by_name(model, value, message):
    for call in (lambda: model.predict({"x": value}), lambda: model.step({"x": value, "y": Y}),
                 lambda: model.train_steps({"x": value, "y": Y}, batch_size=8),
                 lambda: model.fit({"x": value, "y": Y}, epochs=1, verbose=False)):
        with pytest.raises(gn.FeedError, match=message):
            call()
    assert model.step_count == 0


def test_feeds_must_be_a_dict(model):
    with pytest.raises(gn.FeedError, match="feeds must be a dict"):
        model.predict([X, Y])       # a bare X is taken (issue 14): the one input's rows
    with pytest.raises(gn.FeedError, match="feeds must be a dict"):
        model.train_steps([X, Y])


def test_bools_masks_without_masked_entries_nan_and_inf_are_taken(model):
    expected = model.predict({"x": (X > 0).astype(float)})
    np.testing.assert_array_equal(model.predict({"x": X > 0}), expected)          # bools are 0 and 1
    unmasked = np.ma.masked_array(X, mask=np.zeros_like(X, dtype=bool))
    np.testing.assert_array_equal(model.predict({"x": unmasked}), model.predict({"x": X}))
    special = X.copy()
    special[:3, 0] = [np.nan, np.inf, -np.inf]
    out = model.predict({"x": special})
    assert np.isnan(out[0, 0]) and np.all(np.isfinite(out[3:]))


# -- 5. assigning parameters and optimizer state ---------------------------------------------

def _assignment_behaviour(model):
    _reset(model)
    before = model.predict({"x": X})
    model.params["output/b"] = model.params["output/b"] + 1.5          # a new array
    np.testing.assert_allclose(model.predict({"x": X}), before + 1.5, rtol=1e-12)
    assert model.get_params()["output/b"] == pytest.approx(INITIAL["output/b"] + 1.5)
    model.params = {"output/b": INITIAL["output/b"] - 1.0}              # the attribute, too
    np.testing.assert_allclose(model.predict({"x": X}), before - 1.0, rtol=1e-12)
    model.params["output/b"] = INITIAL["output/b"]
    np.testing.assert_allclose(model.predict({"x": X}), before, rtol=1e-12)
    slot = next(k for k in model.state if k.startswith("output/W"))
    model.state[slot] = np.full(model.state[slot].shape, 0.25)
    np.testing.assert_array_equal(model.state[slot], 0.25)
    with pytest.raises(gn.FeedError, match=r"unknown parameter 'output/B'; the model has \["):
        model.params["output/B"] = np.zeros(1)
    with pytest.raises(gn.FeedError, match=r"parameter 'hidden/W': the value has shape \(2,\), "
                                           r"expected \(1, 2\)"):
        model.params["hidden/W"] = np.zeros(2)
    with pytest.raises(gn.FeedError, match="parameter 'output/b' has dtype <U3; it must be numeric"):
        model.params["output/b"] = np.array(["abc"])
    with pytest.raises(gn.FeedError, match="unknown optimizer state"):
        model.state["nope"] = np.zeros(1)
    with pytest.raises(gn.FeedError, match="cannot be removed"):
        del model.params["output/b"]
    assert isinstance(model.params, dict) and sorted(copy.deepcopy(model.params)) == sorted(INITIAL)
    return model.step({"x": X[:8], "y": Y[:8]}), model.get_params()


def test_assigning_parameters_and_state_acts_alike_on_every_target(cpu_pair, reference_pair):
    results = [_assignment_behaviour(m) for m in (reference_pair[0], cpu_pair[0])]
    (loss_ref, params_ref), (loss_cpu, params_cpu) = results
    assert loss_cpu == pytest.approx(loss_ref, rel=1e-12)
    for k in params_ref:     # the assigned state went into the CPU's step: the same update
        np.testing.assert_allclose(params_cpu[k], params_ref[k], rtol=1e-12, atol=1e-15, err_msg=k)


@pytest.mark.cuda
def test_assigning_parameters_and_state_on_cuda(reference_pair):
    loss_ref, params_ref = _assignment_behaviour(reference_pair[0])
    loss, params = _assignment_behaviour(_model("cuda"))
    assert loss == pytest.approx(loss_ref, rel=1e-12)
    for k in params_ref:
        np.testing.assert_allclose(params[k], params_ref[k], rtol=1e-12, atol=1e-15, err_msg=k)


# -- 6. optimizer hyper-parameters -----------------------------------------------------------

@pytest.mark.parametrize("name, value, message", [
    ("lr", "abc", "Adam hyper-parameter 'lr' must be a real number; got 'abc' \\(str\\)"),
    ("lr", None, "Adam hyper-parameter 'lr' must be a real number; got None"),
    ("lr", float("nan"), "Adam hyper-parameter 'lr' must be finite; got nan"),
    ("eps", float("inf"), "Adam hyper-parameter 'eps' must be finite; got inf"),
    ("lr", True, "Adam hyper-parameter 'lr': got the bool True"),
    ("beta1", 1.0, r"Adam hyper-parameter 'beta1' must be in \[0, 1\); got 1.0"),
    ("weight_decay", 0.1, "Adam has no hyper-parameter 'weight_decay'.*made without weight decay"),
])
def test_hyper_parameters_are_checked_when_set(model, name, value, message):
    with pytest.raises(gn.ArgumentError, match=message):
        model.optimizer.hyper[name] = value
    with pytest.raises(gn.ArgumentError, match=message):
        model.optimizer.hyper = {**model.optimizer.hyper, name: value}
    assert model.optimizer.hyper == {"lr": 0.05, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
    model.step({"x": X[:8], "y": Y[:8]})        # still trains


def test_hyper_parameters_are_checked_when_made():
    with pytest.raises(gn.ArgumentError, match="SGD hyper-parameter 'lr' must be a real number; got 'abc'"):
        gn.SGD(lr="abc")
    with pytest.raises(gn.ArgumentError, match="Momentum hyper-parameter 'momentum' must be finite"):
        gn.Momentum(momentum=float("nan"))
    with pytest.raises(gn.ArgumentError, match="cannot be removed"):
        gn.SGD().hyper.pop("lr")
    assert gn.Adam(lr=np.float32(0.5), beta1=np.array(0.5)).hyper["beta1"] == 0.5


@pytest.mark.parametrize("target", ["reference", "cpu"])
def test_a_negative_learning_rate_ascends_and_a_new_hyper_dict_takes_effect(target):
    model = _model(target, gn.SGD(lr=0.1))
    batch = {"x": X[:8], "y": Y[:8]}
    for _ in range(6):                          # past the CPU's fast-step switch
        model.step(batch)
    _, grads = model.loss_and_gradients(batch)
    before = model.get_params()
    model.optimizer.hyper = {"lr": -0.25}       # replaced as a whole: checked, then copied in
    model.step(batch)
    for k in before:
        np.testing.assert_allclose(model.get_params()[k], before[k] + 0.25 * grads[k], rtol=1e-12, atol=1e-15)


def _regression(target="reference"):
    net = gn.lecture.regression_net()
    return net, gn.compile(net.graph, net.loss, target=target)


@pytest.mark.parametrize("call, match", [
    (lambda net, m, p: gn.compile(net.graph, net.loss, optimizer="adam"), "optimizer must be"),
    (lambda net, m, p: gn.compile(net.graph, net.loss, cache_dir=3), "cache_dir must be"),
    (lambda net, m, p: gn.compile(net.graph, net.loss, bogus=1), r"no option\(s\) \['bogus'\]"),
    (lambda net, m, p: gn.compile(net.graph, net.loss, target="reference", parallel=True), "no option"),
    (lambda net, m, p: gn.compile(net.graph, net.loss, dtype="abc"), "dtype must be"),
    (lambda net, m, p: gn.save(m, None), "str or a path"),
    (lambda net, m, p: gn.load(3), "str or a path"),
    (lambda net, m, p: gn.save(m, str(p) + os.sep), "is a folder"),
    (lambda net, m, p: m.fit({"x": np.zeros((4, 1)), "y": np.zeros((4, 1))}, shuffle="no"), "shuffle"),
])
def test_raw_errors_from_arguments_are_graphnn_errors(tmp_path, call, match):
    net, model = _regression()
    with pytest.raises(gn.ArgumentError, match=match):
        call(net, model, tmp_path)


def test_a_folder_in_the_way_of_a_save_or_a_load(tmp_path):
    _, model = _regression()
    (tmp_path / "m.json").mkdir()
    with pytest.raises(gn.ArgumentError, match="is a folder"):
        gn.save(model, tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]      # nothing written
    with pytest.raises(gn.FileFormatError, match="is a folder"):
        gn.load(tmp_path / "m")
