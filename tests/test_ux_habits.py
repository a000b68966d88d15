"""Keras/PyTorch habits (issue 14): predict(X), fit(X, y), evaluate, validation_split, summary,
and the progress bar's clock, early-stop message and Jupyter import."""
import inspect
import subprocess
import sys

import numpy as np
import pytest

import graphnn as gn
from graphnn.train.fit import _restart_clock, tqdm
from train_support import classification_data, mlp_graph


def model(seed=0, optimizer=None):
    g, loss = mlp_graph(seed=seed)
    return gn.compile(g, loss, optimizer=optimizer or gn.Adam(lr=0.05), target="reference")


def test_predict_takes_a_bare_array_for_a_single_input_graph():
    m = model()
    x, _ = classification_data(n=8)
    assert np.array_equal(m.predict(x), m.predict({"x": x}))


def test_fit_and_evaluate_take_x_and_y_as_keras():
    x, y = classification_data(n=40)
    a, b = model(), model()
    ha = a.fit(x, y, epochs=2, batch_size=16, metrics=["accuracy"], verbose=False)
    hb = b.fit({"x": x, "y": y}, epochs=2, batch_size=16, metrics=["accuracy"], verbose=False)
    assert ha.history == hb.history
    logs = a.evaluate(x, y, metrics=["accuracy"])
    assert logs == gn.train.evaluate(a, {"x": x, "y": y}, metrics=["accuracy"])
    assert set(logs) == {"loss", "accuracy"} and a.evaluate({"x": x, "y": y}) == {"loss": logs["loss"]}


def test_fit_shows_its_parameters_to_help():
    params = inspect.signature(gn.Model.fit).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in params.values())
    assert {"y", "epochs", "batch_size", "validation_split", "patience", "metrics"} <= set(params)


def test_a_bare_array_needs_one_input_and_fit_needs_y():
    g = gn.Graph("two")
    a, b, t = g.input("a", (None, 2)), g.input("b", (None, 2)), g.input("t", (None, 1))
    out = g.output("out", gn.dense(a + b, 1))
    m = gn.compile(g, gn.mean(gn.square(out - t)), target="reference")
    with pytest.raises(gn.FeedError, match=r"'a'.*'b'"):
        m.predict(np.zeros((3, 2)))
    single = model()
    x, y = classification_data(n=8)
    with pytest.raises(gn.FeedError, match=r"\['y'\].*fit\(X, y\)"):
        single.fit(x, epochs=1, verbose=False)
    with pytest.raises(gn.ArgumentError, match="not a dict and y="):
        single.fit({"x": x}, y, verbose=False)


def test_validation_split_holds_out_the_last_rows_before_shuffling():
    x, y = classification_data(n=40)
    a, b = model(), model()
    ha = a.fit(x, y, epochs=2, batch_size=8, validation_split=0.25, verbose=False)
    hb = b.fit({"x": x[:30], "y": y[:30]}, epochs=2, batch_size=8,
               validation_data=(x[30:], y[30:]), verbose=False)
    assert ha.history == hb.history and "val_loss" in ha
    with pytest.raises(gn.ArgumentError, match="not both"):
        a.fit(x, y, validation_split=0.2, validation_data=(x, y), verbose=False)
    with pytest.raises(gn.ArgumentError, match="between 0 and 1"):
        a.fit(x, y, validation_split=1.5, verbose=False)
    with pytest.raises(gn.FeedError, match="no training rows"):
        a.fit(x[:1], y[:1], validation_split=0.5, verbose=False)


def test_summary_lists_layers_shapes_parameters_and_the_optimizer():
    g = gn.Graph("frozen", seed=0)
    x, y = g.input("x", (None, 4)), g.input("y", (None, 1))
    h = gn.Dense(8, activation="tanh")(x)
    with g.scope("head"):
        w = g.parameter("W", (8, 1), trainable=False)
        out = g.output("out", h @ w)
    m = gn.compile(g, gn.mean(gn.square(out - y)), optimizer=gn.SGD(0.1), target="reference")
    printed = []
    text = m.summary(print_fn=printed.append)
    assert printed == [text] and isinstance(text, str)
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()}
    assert rows["dense"] == ["(N,", "8)", "40", "yes"]
    assert rows["head"] == ["(N,", "1)", "8", "frozen"]
    assert "total weights: 48 (40 trainable, 8 frozen)" in text and "optimizer: SGD(lr=0.1" in text


def test_early_stopping_says_so_and_which_epoch_it_restored(capsys):
    x, y = classification_data(n=40)
    m = model(optimizer=gn.SGD(lr=30.0))        # diverges after the first epoch
    history = m.fit(x, y, epochs=20, batch_size=8, patience=2, monitor="loss", verbose=True)
    out = "".join(capsys.readouterr())
    assert history.stopped_early
    assert "early stop at epoch 3" in out and "restored the best weights (epoch 1)" in out


def test_the_bar_restarts_its_clock_after_the_first_compiled_steps():
    bar = tqdm(total=10, disable=False, file=sys.stderr)
    bar.update(3)
    bar.start_t -= 1000.0                       # as if the first steps had compiled for 1000 s
    _restart_clock(bar)
    meter = bar.format_dict
    bar.close()
    assert meter["n"] == 3 and meter["initial"] == 3 and meter["elapsed"] < 1000.0


def test_import_in_jupyter_without_ipywidgets_prints_no_tqdm_warning():
    code = """
import sys, types, warnings
class Shell:
    config = {"IPKernelApp": {}}
sys.modules["IPython"] = types.SimpleNamespace(get_ipython=lambda: Shell())
sys.modules["ipywidgets"] = None                # not installed
warnings.simplefilter("error")
import graphnn, tqdm.std
fit = sys.modules["graphnn.train.fit"]
assert fit.tqdm is tqdm.std.tqdm, fit.tqdm
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("target", ["reference", "cpu"])
@pytest.mark.parametrize("label_shape", [(None,), (None, 1)])
@pytest.mark.parametrize("loss_fn", ["softmax_cross_entropy", "nll"])
def test_integer_class_labels_give_the_loss_and_gradients_of_one_hot_targets(target, label_shape,
                                                                             loss_fn):
    def compiled(shape):
        g = gn.Graph("labels", seed=0)
        x, y = g.input("x", (None, 4)), g.input("y", shape)
        logits = g.output("logits", gn.dense(x, 3))
        pred = logits if loss_fn == "softmax_cross_entropy" else gn.log_softmax(logits)
        return gn.compile(g, getattr(gn, loss_fn)(pred, y), target=target, dtype="float64")
    x = np.random.default_rng(1).normal(size=(6, 4))
    labels = np.array([0, 2, 1, 1, 0, 2])
    loss, grads = compiled(label_shape).loss_and_gradients(
        {"x": x, "y": labels.reshape(-1, *label_shape[1:])})
    expected, expected_grads = compiled((None, 3)).loss_and_gradients({"x": x, "y": np.eye(3)[labels]})
    assert loss == pytest.approx(expected, rel=1e-12)
    for k in expected_grads:
        np.testing.assert_allclose(grads[k], expected_grads[k], rtol=1e-10, atol=1e-14)


def test_fit_takes_integer_labels_with_accuracy():
    g = gn.Graph("labels", seed=0)
    x, y = g.input("x", (None, 4)), g.input("y", (None,))
    logits = g.output("logits", gn.Sequential([gn.Dense(8, activation="relu"), gn.Dense(3)])(x))
    m = gn.compile(g, gn.softmax_cross_entropy(logits, y), optimizer=gn.Adam(lr=0.05),
                   target="reference")
    x_data, onehot = classification_data(n=40)
    history = m.fit(x_data, onehot.argmax(axis=1), epochs=5, batch_size=8, metrics=["accuracy"],
                    verbose=False)
    assert history["loss"][-1] < history["loss"][0] and 0 <= history["accuracy"][-1] <= 1
