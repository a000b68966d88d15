"""Layers as graph builders, Sequential, and networks reused as layers (shared, copied, frozen)."""
import numpy as np
import pytest

import graphnn as gn


def test_sequential_cnn_shapes_names_and_parameter_count():
    net = gn.Sequential([gn.Conv2D(4, 3, padding="same", activation="relu"), gn.MaxPool2D(2),
                         gn.Conv2D(6, 3, stride=2, padding=1), gn.AvgPool2D(2), gn.Flatten(),
                         gn.Dropout(0.5), gn.Dense(10)])
    g = net.to_graph((None, 1, 8, 8), name="cnn")
    out = g.outputs["y_hat"]
    assert out.shape == (None, 10)
    assert g.num_parameters == (4 * 9 + 4) + (6 * 4 * 9 + 6) + (6 * 10 + 10)
    assert set(g.parameters) == {"conv/K", "conv/b", "conv_1/K", "conv_1/b", "dense/W", "dense/b"}
    assert list(g.random_inputs) == ["dropout/mask"]
    assert net.layers[0].params["K"].shape == (4, 1, 3, 3)
    assert net.layers[-1].params["W"].shape == (6, 10)
    assert [n.shape for n in (net.layers[1].output, net.layers[3].output)] == [(None, 4, 4, 4), (None, 6, 1, 1)]


def test_named_sequential_scopes_its_layers():
    g = gn.Graph()
    x = g.input("x", (None, 3))
    gn.Sequential([gn.Dense(2, name="a"), gn.Activation("tanh"), gn.Dense(1, name="b")], name="block")(x)
    assert set(g.parameters) == {"block/a/W", "block/a/b", "block/b/W", "block/b/b"}


def test_layer_classes_equal_the_functional_layers():
    g1, g2 = gn.Graph(seed=3), gn.Graph(seed=3)
    x1, x2 = g1.input("x", (None, 3)), g2.input("x", (None, 3))
    a = gn.dense(x1, 4, activation="relu", name="d")
    b = gn.Dense(4, activation="relu", name="d")(x2)
    assert g1.text(a) == g2.text(b)
    assert all(np.array_equal(g1.values[k], g2.values[k]) for k in g1.values)


def test_conv_padding_names_and_errors():
    assert gn.Conv2D(2, 5, padding="same").padding == (2, 2)
    assert gn.Conv2D(2, 3, padding="valid").padding == 0
    with pytest.raises(gn.ShapeError, match="odd"):
        gn.Conv2D(2, 4, padding="same")
    g = gn.Graph()
    with pytest.raises(gn.ShapeError, match="N, C, H, W"):
        gn.Conv2D(2, 3)(g.input("x", (None, 8, 8)))


def test_conv_without_bias_and_with_weight_noise():
    g = gn.Graph()
    x = g.input("x", (None, 1, 5, 5))
    layer = gn.Conv2D(2, 3, use_bias=False, weight_noise=0.1)
    y = layer(x)
    assert set(layer.params) == {"K"} and set(g.parameters) == {"conv/K"}
    assert [n.shape for n in g.random_inputs.values()] == [(2, 1, 3, 3)]
    X = np.ones((1, 1, 5, 5))
    K = g.values["conv/K"]
    np.testing.assert_allclose(gn.evaluate([y], {"x": X})[y.name][0, :, 0, 0], K.sum(axis=(1, 2, 3)))


# -- networks reused as layers ----------------------------------------------------------

def encoder(seed=0):
    inner = gn.Graph("encoder", seed=seed)
    x = inner.input("x", (None, 2))
    inner.output("features", gn.dense(x, 3, activation="tanh", name="hidden"))
    return inner


def host_with(layer, calls=2):
    host = gn.Graph("host", seed=1)
    a, b = host.input("a", (None, 2)), host.input("b", (None, 2))
    outs = [layer(a), layer(b)][:calls]
    return host, outs


def test_shared_layer_uses_one_set_of_parameters_inside_its_scope():
    inner = encoder()
    layer = gn.as_layer(inner, params="share", name="enc")
    host, (fa, fb) = host_with(layer)
    assert set(host.parameters) == {"enc/hidden/W", "enc/hidden/b"}
    assert fa.scope == "enc/hidden" and fb.scope == "enc_1/hidden"
    np.testing.assert_array_equal(host.values["enc/hidden/W"], inner.values["hidden/W"])
    assert all(host.trainable.values())
    X = np.random.default_rng(0).normal(size=(4, 2))
    got = gn.evaluate([fa, fb], {"a": X, "b": X})
    np.testing.assert_array_equal(got[fa.name], got[fb.name])


def test_copied_layer_gets_parameters_per_call_starting_from_the_same_values():
    inner = encoder()
    host, _ = host_with(gn.as_layer(inner, params="copy", name="enc"))
    assert set(host.parameters) == {"enc/hidden/W", "enc/hidden/b", "enc_1/hidden/W", "enc_1/hidden/b"}
    np.testing.assert_array_equal(host.values["enc/hidden/W"], host.values["enc_1/hidden/W"])
    host.values["enc/hidden/W"] += 1  # copies, not views
    assert not np.array_equal(host.values["enc/hidden/W"], inner.values["hidden/W"])


def test_layer_checks_its_inputs():
    layer = gn.as_layer(encoder(), name="enc")
    host = gn.Graph()
    with pytest.raises(gn.GraphnnError, match="expects shape"):
        layer(host.input("z", (None, 5)))
    with pytest.raises(gn.GraphnnError, match="missing"):
        layer()
    with pytest.raises(gn.GraphnnError, match="params must be"):
        gn.as_layer(encoder(), params="borrow")
