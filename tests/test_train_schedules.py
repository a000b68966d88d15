"""Learning-rate schedules (computed in the compiled step) and fit callbacks."""
import math

import numpy as np
import pytest

import graphnn as gn
from graphnn.errors import ArgumentError, FileFormatError
from graphnn.train.callbacks import LambdaCallback
from graphnn.train.optimizers import from_config


def _cosine(t, steps, low=0.0, warm=0):
    if t < warm:
        return t / warm
    s = min(max(t - 1 - warm, 0), steps)
    return low + (1 - low) * (1 + math.cos(math.pi * s / steps)) / 2


CLOSED_FORMS = [
    (gn.cosine(steps=20), lambda t: _cosine(t, 20)),
    (gn.cosine(steps=20, min_factor=0.1, warmup=5), lambda t: _cosine(t, 20, 0.1, 5)),
    (gn.step_decay(every=7, rate=0.5), lambda t: 0.5 ** ((t - 1) // 7)),
    (gn.step_decay(every=3, rate=0.1, warmup=2), lambda t: t / 2 if t < 2 else 0.1 ** (max(t - 3, 0) // 3)),
    (gn.exponential_decay(rate=0.9, steps=4), lambda t: 0.9 ** ((t - 1) / 4)),
    (gn.warmup(8), lambda t: min(t / 8, 1.0)),
]


@pytest.mark.parametrize("schedule,exact", CLOSED_FORMS, ids=lambda v: repr(v) if isinstance(v, gn.Schedule) else "")
def test_schedule_factor_matches_its_closed_form(schedule, exact):
    for t in (1, 2, 3, 5, 6, 7, 8, 9, 15, 21, 22, 26, 40):
        assert schedule(t) == pytest.approx(exact(t), rel=1e-13, abs=1e-15), t
    optimizer = gn.Momentum(lr=0.3, schedule=schedule)
    assert optimizer.learning_rate(9) == pytest.approx(0.3 * exact(9), rel=1e-13)


def _net():
    net = gn.lecture.regression_net()
    x, y = gn.lecture.noisy_sine(n=48)
    return net, {"x": x, "y": y}


@pytest.mark.parametrize("make", [lambda s: gn.SGD(lr=0.3, schedule=s),
                                  lambda s: gn.Adam(lr=0.05, schedule=s)], ids=["sgd", "adam"])
def test_scheduled_fit_equals_steps_with_the_lr_set_by_hand(make):
    """The compiled loop computes lr(t) itself: the same as setting lr before every step."""
    net, feeds = _net()
    schedule = gn.cosine(min_factor=0.05, warmup=2)
    scheduled = gn.compile(net.graph, net.loss, optimizer=make(schedule), target="cpu", dtype="float64",
                           wait=True)
    history = scheduled.fit(feeds, epochs=3, batch_size=16, shuffle=False, verbose=False)
    assert scheduled.optimizer.hyper["decay_steps"] == 9 - 2       # 3 epochs x 3 batches, less warm-up
    by_hand = gn.compile(net.graph, net.loss, optimizer=make(None), target="reference", dtype="float64")
    base = by_hand.optimizer.hyper["lr"]
    for t in range(1, 10):
        by_hand.optimizer.hyper["lr"] = base * _cosine(t, 7, 0.05, 2)
        rows = slice(((t - 1) % 3) * 16, ((t - 1) % 3 + 1) * 16)
        by_hand.step({k: v[rows] for k, v in feeds.items()})
    for name, value in by_hand.get_params().items():
        np.testing.assert_allclose(scheduled.get_params()[name], value, rtol=1e-12, atol=1e-14)
    assert history["learning_rate"] == pytest.approx([base * _cosine(t, 7, 0.05, 2) for t in (3, 6, 9)])


def test_train_steps_runs_the_schedule_inside_one_compiled_call():
    net, feeds = _net()
    model = gn.compile(net.graph, net.loss, optimizer=gn.SGD(lr=0.2, schedule=gn.step_decay(4, 0.5)),
                       target="cpu", dtype="float64", wait=True)
    reference = gn.compile(net.graph, net.loss, optimizer=gn.SGD(lr=0.2, schedule=gn.step_decay(4, 0.5)),
                           target="reference", dtype="float64")
    order = np.tile(np.arange(48), 2)       # 12 steps of 8 rows, in one call
    a = model.train_steps(feeds, batch_size=8, steps=12, order=order)
    b = reference.train_steps(feeds, batch_size=8, steps=12, order=order)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    for name, value in reference.get_params().items():
        np.testing.assert_allclose(model.get_params()[name], value, rtol=1e-12, atol=1e-14)


def test_schedule_hyper_parameters_change_without_a_recompile():
    net, feeds = _net()
    model = gn.compile(net.graph, net.loss, optimizer=gn.SGD(lr=0.1, schedule=gn.exponential_decay(0.5)),
                       target="cpu", dtype="float64", wait=True)
    model.step(feeds)
    source = model.source
    model.optimizer.hyper["decay_rate"] = 0.25      # a kernel argument
    before = model.get_params()
    model.step(feeds)       # t = 2: lr = 0.1 * 0.25
    assert model.source == source
    reference = gn.compile(net.graph, net.loss, optimizer=gn.SGD(lr=0.1 * 0.25), target="reference",
                           dtype="float64")
    reference.set_params(before)
    reference.step(feeds)
    for name, value in reference.get_params().items():
        np.testing.assert_allclose(model.get_params()[name], value, rtol=1e-12, atol=1e-14)


def test_a_schedule_without_steps_is_refused_outside_fit():
    net, feeds = _net()
    model = gn.compile(net.graph, net.loss, optimizer=gn.Adam(schedule=gn.cosine()), target="reference")
    with pytest.raises(ArgumentError, match="decay_steps"):
        model.step(feeds)
    with pytest.raises(ArgumentError, match="decay_steps"):
        model.train_steps(feeds, batch_size=16, steps=2)
    assert model.step_count == 0
    with pytest.raises(ArgumentError, match="schedule"):
        gn.SGD(schedule="cosine")
    with pytest.raises(ArgumentError, match="min_factor"):
        gn.cosine(steps=10, min_factor=2)
    with pytest.raises(ArgumentError, match="decay_every"):
        gn.step_decay(every=0)


def test_a_schedule_saves_and_loads_and_training_continues_identically(tmp_path):
    net, feeds = _net()
    model = gn.compile(net.graph, net.loss, optimizer=gn.Adam(lr=0.05, schedule=gn.cosine(warmup=2)),
                       target="reference", dtype="float64")
    model.fit(feeds, epochs=2, batch_size=16, shuffle=False, verbose=False)
    gn.save(model, tmp_path / "m")
    loaded = gn.load(tmp_path / "m")
    assert loaded.optimizer.schedule is not None and loaded.optimizer.hyper == model.optimizer.hyper
    assert repr(loaded.optimizer) == repr(model.optimizer)
    for m in (model, loaded):
        m.train_steps(feeds, batch_size=16, steps=3)
    for name, value in model.get_params().items():
        np.testing.assert_array_equal(loaded.get_params()[name], value)
    with pytest.raises(FileFormatError, match="schedule"):
        from_config({"type": "SGD", "lr": 0.1, "schedule": {"type": "linear_forever"}})


def test_callbacks_run_every_k_steps_and_at_epoch_ends():
    net, feeds = _net()
    model = gn.compile(net.graph, net.loss, optimizer=gn.SGD(lr=0.1), target="cpu", dtype="float64", wait=True)
    steps, epochs, began, ended = [], [], [], []
    callback = LambdaCallback(on_step_end=lambda step, logs: steps.append((step, logs["epoch"])),
                              on_epoch_end=lambda epoch, logs: epochs.append((epoch, logs["loss"])),
                              on_train_begin=began.append, on_train_end=ended.append, every=4)
    history = model.fit(feeds, epochs=3, batch_size=8, verbose=False, callbacks=[callback])
    assert steps == [(4, 0), (8, 1), (12, 1), (16, 2)]     # 6 steps an epoch
    assert [e for e, _ in epochs] == [0, 1, 2]
    assert [loss for _, loss in epochs] == history["loss"]
    assert began == [{}] and ended == [history.last()]
    assert callback.model is model
    plain = gn.compile(net.graph, net.loss, optimizer=gn.SGD(lr=0.1), target="cpu", dtype="float64", wait=True)
    plain.fit(feeds, epochs=3, batch_size=8, verbose=False)
    for name, value in plain.get_params().items():   # returning to Python for callbacks changes nothing
        np.testing.assert_allclose(model.get_params()[name], value, rtol=1e-12, atol=1e-14)


def test_a_callback_stops_training():
    net, feeds = _net()
    model = gn.compile(net.graph, net.loss, optimizer=gn.SGD(lr=0.1), target="cpu", dtype="float64", wait=True)

    class StopAt(gn.Callback):
        every = 5

        def on_step_end(self, step, logs):
            if step == 10:
                self.model.stop_training = True

    history = model.fit(feeds, epochs=5, batch_size=8, verbose=False, callbacks=StopAt())
    assert model.step_count == 10 and history.stopped_by == "callback" and len(history.epoch) == 2

    def stop_after_second(epoch, logs):
        model.stop_training = epoch == 1
    history = model.fit(feeds, epochs=5, batch_size=8, verbose=False,
                        callbacks=[LambdaCallback(on_epoch_end=stop_after_second)])
    assert history.epoch == [0, 1] and history.stopped_by == "callback"


def test_bad_callbacks_are_named():
    net, feeds = _net()
    model = gn.compile(net.graph, net.loss, target="reference")
    with pytest.raises(ArgumentError, match="callbacks\\[0\\]"):
        model.fit(feeds, epochs=1, verbose=False, callbacks=[object()])
    with pytest.raises(ArgumentError, match="every=0"):
        model.fit(feeds, epochs=1, verbose=False, callbacks=[LambdaCallback(on_step_end=print, every=0)])
    assert model.step_count == 0


@pytest.mark.cuda
def test_a_schedule_on_cuda_matches_the_cpu():
    net, feeds = _net()
    runs = {}
    for target in ("cpu", "cuda"):
        model = gn.compile(net.graph, net.loss, optimizer=gn.Adam(lr=0.05, schedule=gn.cosine(steps=5, warmup=2)),
                           target=target, dtype="float64", wait=True)
        model.train_steps(feeds, batch_size=16, steps=6, order=np.tile(np.arange(48), 2))
        runs[target] = model.get_params()
    for name, value in runs["cpu"].items():
        np.testing.assert_allclose(runs["cuda"][name], value, rtol=1e-10, atol=1e-12)
