"""Save and load: a versioned JSON graph spec plus an npz of arrays, written atomically.

A loaded model gives bit-identical outputs and resumes training bit-identically; a file from a
newer format version, a corrupted JSON or arrays file, or a changed op give clear errors.
"""
import json
import os

import numpy as np
import pytest
import sympy as sp

import graphnn as gn
from train_support import TARGETS


def small_cnn(seed=0):
    g = gn.Graph("cnn", seed=seed)
    x, y = g.input("x", (None, 1, 6, 6)), g.input("y", (None, 3))
    net = gn.Sequential([gn.GaussianNoise(0.1), gn.Conv2D(2, 3, padding="same", activation="relu"),
                         gn.MaxPool2D(2), gn.Flatten(), gn.Dropout(0.2), gn.Dense(3)])
    logits = g.output("logits", net(x))
    return g, gn.softmax_cross_entropy(logits, y) + gn.weight_penalty(g, l2=1e-3)


def data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(n, 1, 6, 6)), "y": gn.data.one_hot(rng.integers(0, 3, n), 3)}


@pytest.mark.parametrize("target", TARGETS)
def test_save_load_gives_bit_identical_outputs_and_resumes_training(tmp_path, target):
    g, loss = small_cnn()
    model = gn.compile(g, loss, optimizer=gn.Adam(lr=0.01), target=target, seed=5)
    model.fit(data(), epochs=2, batch_size=4, verbose=False)
    path = tmp_path / "ckpt" / "cnn"
    gn.save(model, path)
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["cnn.json", "cnn.npz"]   # no temp files left
    loaded = gn.load(path)
    assert loaded.target == target and loaded.dtype == model.dtype and loaded.step_count == model.step_count
    feeds = data(seed=1)
    assert loaded.predict(feeds).tobytes() == model.predict(feeds).tobytes()
    # optimizer state, step count and the dropout/noise generator come back too
    assert model.step(feeds) == loaded.step(feeds)
    for k, v in model.get_params().items():
        assert v.tobytes() == loaded.get_params()[k].tobytes(), k


def test_the_json_spec_names_ops_by_registry_name_with_attributes(tmp_path):
    g, loss = small_cnn()
    gn.save(gn.compile(g, loss, target="reference"), tmp_path / "m.json")
    spec = json.loads((tmp_path / "m.json").read_text())
    assert spec["format"] == "graphnn-model" and spec["version"] == gn.io.FORMAT_VERSION
    by_name = {n["name"]: n for n in spec["nodes"]}
    conv = by_name["conv/z"]
    assert conv["op"] == "conv2d" and conv["attrs"] == {"padding": [1, 1], "stride": 1}
    assert conv["scope"] == "conv" and conv["shape"] == [None, 2, 6, 6]
    mask = by_name["dropout/mask"]
    assert mask["role"] == "random" and mask["attrs"]["distribution"] == "bernoulli"
    assert by_name["conv/K"]["trainable"] is True
    assert spec["outputs"] == {"logits": by_name["dense/z"]["id"]}
    assert spec["model"]["optimizer"]["type"] == "SGD"
    assert spec["arrays"]["file"] == "m.npz"


def test_graph_only_save_and_frozen_flags_round_trip(tmp_path):
    net = gn.lecture.classifier_net()
    net.graph.trainable["hidden/W"] = False
    gn.save(net.graph, tmp_path / "clf", loss=net.loss)
    graph, outputs, loss, section = gn.load_graph(tmp_path / "clf")
    assert section is None and loss.name == net.loss.name and list(outputs) == ["p"]
    assert graph.trainable["hidden/W"] is False and graph.text(loss) == net.graph.text(net.loss)
    model = gn.load(tmp_path / "clf", target="reference")
    assert "hidden/W" not in model.trainable


def saved(tmp_path):
    net = gn.lecture.regression_net()
    gn.save(gn.compile(net.graph, net.loss, target="reference"), tmp_path / "m")
    return tmp_path / "m.json", tmp_path / "m.npz"


def test_a_newer_format_version_is_refused_clearly(tmp_path):
    json_path, _ = saved(tmp_path)
    spec = json.loads(json_path.read_text())
    spec["version"] = gn.io.FORMAT_VERSION + 1
    json_path.write_text(json.dumps(spec))
    with pytest.raises(gn.FileFormatError, match="newer|version 2.*Upgrade graphnn"):
        gn.load(json_path)


def test_corrupted_json_is_refused_clearly(tmp_path):
    json_path, _ = saved(tmp_path)
    text = json_path.read_text()
    json_path.write_text(text[: len(text) // 2])
    with pytest.raises(gn.FileFormatError, match="corrupted or truncated"):
        gn.load(json_path)
    json_path.write_text(json.dumps({"hello": 1}))
    with pytest.raises(gn.FileFormatError, match="not a graphnn model file"):
        gn.load(json_path)


def test_corrupted_or_missing_arrays_are_refused_clearly(tmp_path):
    json_path, npz_path = saved(tmp_path)
    blob = bytearray(npz_path.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    npz_path.write_bytes(bytes(blob))
    with pytest.raises(gn.FileFormatError, match="checksum"):
        gn.load(json_path)
    npz_path.unlink()
    with pytest.raises(gn.FileFormatError, match="missing"):
        gn.load(json_path)


def test_malformed_spec_and_changed_ops_are_refused(tmp_path):
    json_path, _ = saved(tmp_path)
    spec = json.loads(json_path.read_text())
    broken = dict(spec, nodes=[{k: v for k, v in n.items() if k != "inputs"} for n in spec["nodes"]])
    json_path.write_text(json.dumps(broken))
    with pytest.raises(gn.FileFormatError, match="malformed"):
        gn.load(json_path)
    changed = dict(spec, nodes=[dict(n, op_hash="0" * 16) if n.get("op") == "tanh" else n
                                for n in spec["nodes"]])
    json_path.write_text(json.dumps(changed))
    with pytest.raises(gn.FileFormatError, match="declared differently"):
        gn.load(json_path)
    unknown = dict(spec, nodes=[dict(n, op="no_such_op") if n.get("op") == "tanh" else n
                                for n in spec["nodes"]])
    json_path.write_text(json.dumps(unknown))
    with pytest.raises(gn.FileFormatError, match="not registered"):
        gn.load(json_path)


def test_unregistered_ops_cannot_be_saved(tmp_path):
    g = gn.Graph()
    x = g.input("x", (None, 2))
    op = gn.ElementwiseOp("private_double", arg_names=["x"], expr=2 * sp.Symbol("x", real=True))
    node = gn.Node("op", op, [x], {}, x.shape, None, "double", g)
    g.output("y", node)
    with pytest.raises(gn.FileFormatError, match="registered"):
        gn.save(g, tmp_path / "x")
    assert not list(tmp_path.iterdir())
