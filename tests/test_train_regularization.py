"""Regularizers change training exactly as their definitions say.

L2: the penalty's gradient is lam * W, exactly. L1: lam * sign(W). Dropout: zero with probability
rate and scale the rest by 1/(1 - rate) in training, the identity in evaluation. Noise on inputs,
hidden activations and weights: added in training only. All randomness is a fed input, drawn from
the model's seeded generator.
"""
import numpy as np
import pytest

import graphnn as gn
from train_support import TARGETS, classification_data, mlp_graph


def regression(seed=0):
    g = gn.Graph("reg", seed=seed)
    x, y = g.input("x", (None, 3)), g.input("y", (None, 2))
    out = gn.dense(gn.dense(x, 4, activation="tanh", name="h"), 2, name="out")
    return g, gn.mse(out, y)


def feeds(seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(8, 3)), "y": rng.normal(size=(8, 2))}


@pytest.mark.parametrize("target", TARGETS)
def test_l2_gradient_term_is_exactly_lambda_times_w(target):
    g, data_loss = regression()
    lam = 0.01
    W = g.parameters["h/W"]
    penalty_only = gn.compile(gn.l2_penalty(W, lam), target=target, dtype="float64")
    _, grads = penalty_only.loss_and_gradients({})
    np.testing.assert_array_equal(grads["h/W"], lam * g.values["h/W"])

    plain = gn.compile(g, data_loss, target=target, dtype="float64")
    penalised = gn.compile(g, data_loss + gn.l2_penalty(W, lam), target=target, dtype="float64")
    _, g_plain = plain.loss_and_gradients(feeds())
    _, g_pen = penalised.loss_and_gradients(feeds())
    np.testing.assert_array_equal(g_pen["h/W"], g_plain["h/W"] + lam * g.values["h/W"])
    for other in ("h/b", "out/W", "out/b"):
        np.testing.assert_array_equal(g_pen[other], g_plain[other])


def test_l1_gradient_is_lambda_times_sign_and_weight_penalty_covers_all_weights():
    g, data_loss = regression()
    penalty = gn.weight_penalty(g, l2=0.02, l1=0.003)
    _, grads = gn.loss_and_gradients(penalty, {})
    assert set(grads) == {"h/W", "out/W"}  # biases are not penalised
    for name in grads:
        W = g.values[name]
        np.testing.assert_allclose(grads[name], 0.02 * W + 0.003 * np.sign(W), rtol=1e-14)


def test_sgd_weight_decay_is_the_l2_penalty_inside_the_update():
    g, data_loss = regression()
    lam, lr = 0.05, 0.1
    decayed = gn.compile(g, data_loss, optimizer=gn.SGD(lr=lr, weight_decay=lam), target="reference",
                         dtype="float64")
    penalised = gn.compile(g, data_loss + gn.weight_penalty(g, l2=lam) + gn.l2_penalty(
        g.parameters["h/b"], lam) + gn.l2_penalty(g.parameters["out/b"], lam),
        optimizer=gn.SGD(lr=lr), target="reference", dtype="float64")
    decayed.step(feeds())
    penalised.step(feeds())
    for k, v in decayed.get_params().items():
        np.testing.assert_allclose(v, penalised.get_params()[k], rtol=1e-13)


def dropout_net(rate=0.5, width=2000):
    g = gn.Graph("drop", seed=0)
    x = g.input("x", (None, width))
    y = g.output("y", gn.dropout(x, rate))
    return g, x, y


@pytest.mark.parametrize("target", TARGETS)
def test_dropout_zeroes_with_probability_rate_and_rescales_in_training(target):
    g, x, y = dropout_net(rate=0.25)
    model = gn.compile(g, outputs=[y], target=target, dtype="float64", seed=7)
    X = np.random.default_rng(0).uniform(1, 2, size=(5, 2000))
    train = model.forward({"x": X}, training=True)[y.name]
    dropped = train == 0
    assert abs(dropped.mean() - 0.25) < 0.02
    np.testing.assert_array_equal(train[~dropped], X[~dropped] * (1 / 0.75))
    np.testing.assert_array_equal(model.forward({"x": X})[y.name], X)     # eval: the identity
    again = model.forward({"x": X}, training=True)[y.name]
    assert not np.array_equal(again == 0, dropped)                        # a new mask per call


def test_dropout_masks_are_deterministic_for_a_seed():
    g, x, y = dropout_net()
    X = np.ones((4, 2000))
    a = gn.compile(g, outputs=[y], target="reference", seed=3).forward({"x": X}, training=True)
    b = gn.compile(g, outputs=[y], target="reference", seed=3).forward({"x": X}, training=True)
    c = gn.compile(g, outputs=[y], target="reference", seed=4).forward({"x": X}, training=True)
    assert np.array_equal(a[y.name], b[y.name]) and not np.array_equal(a[y.name], c[y.name])


def test_dropped_units_get_no_gradient_and_a_fed_mask_overrides_the_draw():
    g, loss = mlp_graph(layers=[gn.Dense(6, activation="tanh", name="h"), gn.Dropout(0.5),
                                gn.Dense(3, name="out")])
    x, y = classification_data(n=5)
    mask = np.ones((5, 6)) * 2.0
    mask[:, [1, 4]] = 0.0                      # units 1 and 4 dropped for every example
    model = gn.compile(g, loss, target="reference", dtype="float64")
    _, grads = model.loss_and_gradients({"x": x, "y": y, "dropout/mask": mask})
    assert np.all(grads["h/W"][:, [1, 4]] == 0) and np.all(grads["h/b"][[1, 4]] == 0)
    assert np.all(grads["h/W"][:, [0, 2, 3, 5]] != 0)
    assert np.all(grads["out/W"][[1, 4], :] == 0)


@pytest.mark.parametrize("target", TARGETS)
def test_gaussian_noise_on_inputs_is_added_in_training_only(target):
    g = gn.Graph("noise", seed=0)
    x = g.input("x", (None, 1000))
    y = g.output("y", gn.gaussian_noise(x, stddev=0.5))
    model = gn.compile(g, outputs=[y], target=target, dtype="float64")
    X = np.zeros((20, 1000))
    noise = model.forward({"x": X}, training=True)[y.name]
    assert abs(noise.mean()) < 0.01 and abs(noise.std() - 0.5) < 0.01
    np.testing.assert_array_equal(model.forward({"x": X})[y.name], X)


def test_noise_on_hidden_activations_and_weights_changes_training_steps_only():
    layers = [gn.Dense(6, activation="tanh", weight_noise=0.3, name="h"), gn.GaussianNoise(0.2),
              gn.Dense(3, name="out")]
    g, loss = mlp_graph(layers=layers)
    assert {k: n.shape for k, n in g.random_inputs.items()} == {
        "h/weight_noise/noise": (4, 6), "noise/noise": (None, 6)}
    clean_g, clean_loss = mlp_graph(layers=[gn.Dense(6, activation="tanh", name="h"), gn.Dense(3, name="out")])
    assert all(np.array_equal(clean_g.values[k], g.values[k]) for k in g.values)
    x, y = classification_data(n=16)
    noisy = gn.compile(g, loss, target="reference", dtype="float64")
    clean = gn.compile(clean_g, clean_loss, target="reference", dtype="float64")
    f = {"x": x, "y": y}
    assert noisy.evaluate_loss(f) == clean.evaluate_loss(f)                 # eval: no noise at all
    assert noisy.evaluate_loss(f, training=True) != clean.evaluate_loss(f)
    before = noisy.get_params()["h/W"]
    noisy.step(f)
    assert not np.array_equal(noisy.get_params()["h/W"], before)           # W itself is trained


def test_random_input_validation():
    g = gn.Graph()
    with pytest.raises(gn.GraphnnError, match="unknown distribution"):
        g.random("r", (None, 2), "cauchy")
    with pytest.raises(gn.GraphnnError, match="takes"):
        g.random("r", (None, 2), "normal", p=0.5)
    x = g.input("x", (None, 2))
    with pytest.raises(gn.GraphnnError, match="rate"):
        gn.dropout(x, rate=1.0)
    assert gn.dropout(x, rate=0.0) is x and gn.gaussian_noise(x, 0.0) is x
