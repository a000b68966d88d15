"""fit: mini-batches, shuffling, metrics, validation, early stopping, augmentation, progress, seeds."""
import numpy as np
import pytest

import graphnn as gn
from train_support import classification_data, mlp_graph


def model_and_data(seed=0, optimizer=None, layers=None, n=40):
    g, loss = mlp_graph(seed=seed, layers=layers)
    model = gn.compile(g, loss, optimizer=optimizer or gn.Adam(lr=0.05), target="reference")
    x, y = classification_data(n=n, seed=seed)
    return model, {"x": x, "y": y}


def test_history_holds_per_epoch_loss_metrics_and_validation():
    model, feeds = model_and_data()
    val = dict(zip(("x", "y"), classification_data(n=20, seed=9)))
    history = model.fit(feeds, epochs=4, batch_size=16, metrics=["accuracy"], validation_data=val,
                        verbose=False)
    assert model.history is history and history.epoch == [0, 1, 2, 3]
    assert set(history.keys()) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 4 for v in history.history.values())
    assert history["loss"][-1] < history["loss"][0]
    logits = model.predict(val)
    assert history["val_accuracy"][-1] == np.mean(logits.argmax(1) == val["y"].argmax(1))
    assert history["val_loss"][-1] == pytest.approx(model.evaluate_loss(val), rel=1e-6)


def test_fit_is_deterministic_for_a_seed_with_dropout_and_augmentation():
    layers = [gn.GaussianNoise(0.1), gn.Dense(8, activation="relu"), gn.Dropout(0.3), gn.Dense(3)]
    runs = []
    for seed in (1, 1, 2):
        model, feeds = model_and_data(layers=layers)
        history = model.fit(feeds, epochs=3, batch_size=8, seed=seed, verbose=False,
                            augment=lambda a, rng: a + rng.normal(0, 0.01, a.shape))
        runs.append((history["loss"], model.get_params()))
    assert runs[0][0] == runs[1][0]
    assert all(np.array_equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])
    assert runs[0][0] != runs[2][0]


def test_unshuffled_full_batch_fit_equals_plain_steps():
    a, feeds = model_and_data(optimizer=gn.SGD(lr=0.1))
    b, _ = model_and_data(optimizer=gn.SGD(lr=0.1))
    a.fit(feeds, epochs=3, batch_size=None, shuffle=False, verbose=False)
    for _ in range(3):
        b.step(feeds)
    assert all(np.array_equal(a.get_params()[k], b.get_params()[k]) for k in a.params)
    assert a.step_count == 3


def test_augment_sees_every_batch_of_the_first_input():
    model, feeds = model_and_data(n=20)
    seen = []
    model.fit(feeds, epochs=2, batch_size=8, verbose=False,
              augment=lambda a, rng: seen.append(a.shape) or a)
    assert seen == [(8, 4), (8, 4), (4, 4)] * 2


def test_early_stopping_restores_the_best_parameters():
    first, feeds = model_and_data(optimizer=gn.SGD(lr=30.0))
    first.fit(feeds, epochs=1, batch_size=8, verbose=False, seed=0)
    model, _ = model_and_data(optimizer=gn.SGD(lr=30.0))        # diverges after the first epoch
    history = model.fit(feeds, epochs=20, batch_size=8, patience=2, monitor="loss", verbose=False, seed=0)
    assert history.stopped_early and history.epoch == [0, 1, 2]
    assert history.best_epoch == 0 and history["loss"][0] < min(history["loss"][1:])
    assert all(np.array_equal(model.get_params()[k], first.get_params()[k]) for k in model.params)


def test_targets_are_found_or_asked_for():
    g = gn.Graph()
    x, y, w = g.input("x", (None, 2)), g.input("y", (None, 1)), g.input("w", (None, 1))
    out = g.output("out", gn.dense(x, 1))
    ambiguous = gn.compile(g, gn.mean(gn.square(out - y) * w), target="reference")
    f = {"x": np.zeros((4, 2)), "y": np.zeros((4, 1)), "w": np.ones((4, 1))}
    with pytest.raises(ValueError, match="target="):
        ambiguous.fit(f, epochs=1, metrics=["mse"], verbose=False)
    history = ambiguous.fit(f, epochs=1, metrics=["mse"], target="y", verbose=False)
    assert "mse" in history


def test_progress_bar_shows_epochs_and_loss(capsys):
    model, feeds = model_and_data()
    model.fit(feeds, epochs=2, batch_size=16, metrics=["accuracy"], verbose=True)
    err = capsys.readouterr().err
    assert "epoch 2/2" in err and "loss=" in err and "accuracy=" in err


@pytest.mark.filterwarnings("ignore:overflow")
def test_a_diverging_loss_stops_training_with_a_warning():
    model, feeds = model_and_data(optimizer=gn.SGD(lr=1e30))
    with pytest.warns(RuntimeWarning, match="stopping"):
        history = model.fit(feeds, epochs=10, batch_size=40, verbose=False)
    assert len(history.epoch) < 10


def test_metric_functions():
    m = gn.metrics
    assert m.accuracy(np.array([[0.7], [0.2], [0.6]]), np.array([[1], [0], [0]])) == pytest.approx(2 / 3)
    assert m.accuracy(np.array([[1.0, 3.0], [2.0, 0.0]]), np.array([1, 0])) == 1.0
    assert m.logit_accuracy(np.array([-1.0, 2.0]), np.array([0, 1])) == 1.0
    assert m.resolve("mae")[1](np.ones(3), np.zeros(3)) == 1.0
    with pytest.raises(ValueError, match="unknown metric"):
        m.resolve("f1")


def test_fit_takes_new_hyper_parameters_of_the_compiled_optimizer():
    g, loss = mlp_graph()
    model = gn.compile(g, loss, target="reference")          # the default SGD(lr=0.01)
    x, y = classification_data(n=8)
    model.fit({"x": x, "y": y}, epochs=1, batch_size=8, optimizer=gn.SGD(lr=0.5), verbose=False)
    assert model.optimizer.hyper["lr"] == 0.5
    with pytest.raises(ValueError, match="update rule"):
        model.fit({"x": x, "y": y}, epochs=1, optimizer=gn.Adam(), verbose=False)


@pytest.mark.parametrize("wait", [True, False])
def test_fit_says_what_it_compiles_before_the_progress_bar(tmp_path, capsys, wait):
    g, loss = mlp_graph(seed=3)
    model = gn.compile(g, loss, optimizer=gn.Adam(lr=0.05), cache_dir=tmp_path, wait=wait)
    x, y = classification_data(n=40, seed=3)
    history = model.fit({"x": x, "y": y}, epochs=2, batch_size=16, verbose=True)
    out = capsys.readouterr().out
    assert f"compiling the training step of {g.name!r}" in out
    if wait:   # compiled before the first batch: the bar's ETA counts training only
        assert "done in" in out and "new kernel(s)" in out
        assert model.compile_status()["step"] in ("kernels", "compiled")
    else:
        assert "in the background" in out and "NumPy reference" in out
    model.wait_compiled()
    assert len(history["loss"]) == 2 and np.isfinite(history["loss"][-1])
