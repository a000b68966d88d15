"""Acceptance: the lecture's nets and real ones train to stated quality with fit.

* the 1-2-1 tanh net fits y = sin(3x) + N(0, 0.1^2): training MSE < 0.03 (the noise alone is 0.01)
  and MSE < 0.015 against the noise-free sine;
* the 2-2-1 net separates the two blobs: >= 95 % training accuracy (>= 94 % on 1000 new points;
  the Bayes rate of these blobs is 96 %);
* an MLP on the 8x8 digits: >= 96 % test accuracy; a small CNN: >= 97 % (compiled CPU target);
* a pre-trained sub-network frozen inside a new network keeps its weights bit-identical.
"""
import numpy as np
import pytest

import graphnn as gn
from train_support import FAST_TARGET, TARGETS, requires_cpu


def test_regression_net_fits_a_noisy_sine():
    x, y = gn.lecture.noisy_sine(n=128, noise=0.1, seed=0)
    net = gn.lecture.regression_net(seed=0)
    model = gn.compile(net.graph, net.loss, optimizer=gn.Adam(lr=0.05), target=FAST_TARGET)
    history = model.fit({"x": x, "y": y}, epochs=100, batch_size=32, verbose=False)
    assert history["loss"][-1] < 0.03
    grid = np.linspace(-1, 1, 201)[:, None]
    assert np.mean((model.predict({"x": grid}) - np.sin(3 * grid)) ** 2) < 0.015


def test_classifier_net_separates_two_blobs():
    x, y = gn.lecture.two_blobs(n=200, seed=0)
    new_x, new_y = gn.lecture.two_blobs(n=1000, seed=1)
    net = gn.lecture.classifier_net(seed=0)
    assert net.graph.num_parameters == 9
    model = gn.compile(net.graph, net.loss, optimizer=gn.Adam(lr=0.05), target=FAST_TARGET)
    history = model.fit({"x": x, "y": y}, epochs=30, batch_size=32, metrics=["accuracy"],
                        validation_data={"x": new_x, "y": new_y}, verbose=False)
    assert history["accuracy"][-1] >= 0.95
    assert history["val_accuracy"][-1] >= 0.94


def digits(layout):
    X, Y = gn.data.load_digits(layout=layout)
    return gn.data.train_test_split(X, Y, test_fraction=0.25, seed=0, stratify=Y)


@pytest.mark.slow
@requires_cpu
def test_mlp_on_digits_reaches_96_percent():
    Xtr, Xte, Ytr, Yte = digits("flat")
    mean, scale = Xtr.mean(0), Xtr.std(0) + 0.1                  # standardised pixels
    g = gn.Graph("digits_mlp", seed=0)
    x, y = g.input("x", (None, 64)), g.input("y", (None, 10))
    net = gn.Sequential([gn.GaussianNoise(0.3), gn.Dense(128, activation="relu"), gn.Dense(10)])
    logits = g.output("logits", net(x))
    model = gn.compile(g, gn.softmax_cross_entropy(logits, y), optimizer=gn.Adam(lr=3e-3), target="cpu")
    model.fit({"x": (Xtr - mean) / scale, "y": Ytr}, epochs=40, batch_size=32, verbose=False, seed=0)
    test = gn.train.evaluate(model, {"x": (Xte - mean) / scale, "y": Yte}, metrics=["accuracy"])
    assert test["accuracy"] >= 0.96, test


@pytest.mark.slow
@requires_cpu
def test_cnn_on_digits_reaches_97_percent():
    Xtr, Xte, Ytr, Yte = digits("nchw")
    g = gn.Graph("digits_cnn", seed=0)
    x, y = g.input("x", (None, 1, 8, 8)), g.input("y", (None, 10))
    net = gn.Sequential([
        gn.Conv2D(16, 3, padding="same", activation="relu"), gn.MaxPool2D(2),     # 16 x 4 x 4
        gn.Conv2D(32, 3, padding="same", activation="relu"), gn.MaxPool2D(2),     # 32 x 2 x 2
        gn.Flatten(), gn.Dense(64, activation="relu"), gn.Dense(10)])
    logits = g.output("logits", net(x))
    model = gn.compile(g, gn.softmax_cross_entropy(logits, y), optimizer=gn.Adam(lr=3e-3), target="cpu")
    model.fit({"x": Xtr, "y": Ytr}, epochs=20, batch_size=32, verbose=False, seed=0)
    test = gn.train.evaluate(model, {"x": Xte, "y": Yte}, metrics=["accuracy"])
    assert test["accuracy"] >= 0.97, test


@pytest.mark.parametrize("target", TARGETS)
def test_frozen_pretrained_subnetwork_stays_bit_identical_through_training(target):
    # pre-train the lecture's 1-2-1 net, then reuse its hidden layer as a frozen feature extractor
    net = gn.lecture.regression_net(seed=0)
    x, y = gn.lecture.noisy_sine(n=64, seed=0)
    pre = gn.compile(net.graph, net.loss, optimizer=gn.Adam(lr=0.05), target=target)
    pre.fit({"x": x, "y": y}, epochs=20, batch_size=16, verbose=False)
    features = gn.as_layer(pre, outputs=[net.layers["hidden"]], params="freeze", name="pretrained")

    host = gn.Graph("host", seed=2)
    hx, hy = host.input("x", (None, 1)), host.input("y", (None, 1))
    hidden = gn.dense(features(hx), 4, activation="tanh", name="new")
    y_hat = host.output("y_hat", gn.dense(hidden, 1, name="head"))
    model = gn.compile(host, gn.mse(y_hat, hy), optimizer=gn.Adam(lr=0.05), target=target)
    frozen = [k for k, t in host.trainable.items() if not t]
    assert frozen == ["pretrained/hidden/W", "pretrained/hidden/b"]
    assert not set(frozen) & set(model.trainable)
    before = model.get_params()
    np.testing.assert_array_equal(before["pretrained/hidden/W"], pre.get_params()["hidden/W"])
    model.fit({"x": x, "y": y}, epochs=5, batch_size=16, verbose=False)
    after = model.get_params()
    for k in frozen:
        assert after[k].tobytes() == before[k].tobytes(), k
    assert not np.array_equal(after["head/W"], before["head/W"])
    assert not np.array_equal(after["new/W"], before["new/W"])
