"""LayerNorm and BatchNorm: forward against closed-form NumPy, gradients against central
differences and the closed-form normalization gradient, BatchNorm's running statistics (the
buffers a training step rewrites) against a NumPy re-computation and PyTorch's convention,
evaluation mode, save/load, a short fit, and a picture."""
import numpy as np
import pytest

import graphnn as gn
from support import numeric_gradient

EPS = 1e-5


def _np_norm(x, axes, gamma, beta, eps=EPS):
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    xhat = (x - mean) / np.sqrt(var + eps)
    return xhat * gamma + beta, xhat, 1.0 / np.sqrt(var + eps)


def _closed_form_dx(dy, xhat, inv_std, axes):
    """dx = (1/M) * inv_std * (M*dy - sum(dy) - xhat*sum(dy*xhat)), sums over the M normalized
    values (dy already multiplied by gamma)."""
    count = np.prod([xhat.shape[a] for a in axes])
    s1 = dy.sum(axis=axes, keepdims=True)
    s2 = (dy * xhat).sum(axis=axes, keepdims=True)
    return inv_std / count * (count * dy - s1 - xhat * s2)


def _param_net(kind, x_value, upstream, **kwargs):
    """x as a parameter (so the gradient reaches it) -> norm -> loss = sum(y * upstream):
    dL/dy = upstream."""
    g = gn.Graph(kind)
    x = g.parameter("x", x_value.shape, value=x_value)
    y = (gn.layer_norm if kind == "ln" else gn.batch_norm)(x, name=kind, **kwargs)
    g.output("y", y)
    loss = gn.sum(gn.mul(y, g.constant(upstream, name="upstream")))
    return g, loss


def _set_affine(model, kind, gamma, beta):
    model.params[f"{kind}/gamma"] = gamma
    model.params[f"{kind}/beta"] = beta


@pytest.fixture(scope="module")
def ln_case():
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, (4, 2, 3))
    return x, rng.normal(size=x.shape), rng.normal(1.0, 0.3, (2, 3)), rng.normal(size=(2, 3))


@pytest.mark.parametrize("target", ["reference", "cpu"])
def test_layer_norm_forward_and_gradient(ln_case, target):
    x, up, gamma, beta = ln_case
    g, loss = _param_net("ln", x, up, axis=(1, 2))
    assert g.parameters["ln/gamma"].shape == (2, 3)
    model = gn.compile(g, loss, optimizer=gn.SGD(0.0), target=target, dtype="float64", wait=True)
    _set_affine(model, "ln", gamma, beta)
    expected, xhat, inv_std = _np_norm(x, (1, 2), gamma, beta)
    np.testing.assert_allclose(model.forward({})["y"], expected, rtol=1e-10, atol=1e-12)
    _, grads = model.loss_and_gradients({})
    closed = _closed_form_dx(up * gamma, xhat, inv_std, (1, 2))
    np.testing.assert_allclose(grads["x"], closed, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(grads["ln/gamma"], (up * xhat).sum(0), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(grads["ln/beta"], up.sum(0), rtol=1e-8, atol=1e-10)

    def loss_at(value):
        model.params["x"] = value
        return model.evaluate_loss({})
    fd = numeric_gradient(loss_at, x)
    np.testing.assert_allclose(grads["x"], fd, rtol=1e-6, atol=1e-7)


def test_layer_norm_last_axis_and_errors():
    g = gn.Graph()
    x = g.input("x", (None, 3, 5))
    y = gn.LayerNorm(name="ln")
    out = y(x)
    assert out.shape == (None, 3, 5) and y.params["gamma"].shape == (5,)
    model = gn.compile(g, outputs={"y": out}, target="reference", dtype="float64")
    X = np.random.default_rng(1).normal(size=(2, 3, 5))
    np.testing.assert_allclose(model.forward({"x": X})["y"], _np_norm(X, (2,), 1.0, 0.0)[0], atol=1e-12)
    with pytest.raises(gn.ShapeError, match="batch axis"):
        gn.layer_norm(x, axis=0)
    with pytest.raises(gn.ArgumentError, match="eps"):
        gn.layer_norm(x, eps=0.0)
    with pytest.raises(gn.ArgumentError, match="axis"):
        gn.layer_norm(x, axis=3)


@pytest.mark.parametrize("target, shape", [("reference", (6, 3)), ("reference", (4, 2, 3, 2)), ("cpu", (6, 3))],
                         ids=["ref-1d", "ref-2d", "cpu-1d"])
def test_batch_norm_training_forward_and_gradient(target, shape):
    rng = np.random.default_rng(2)
    x, up = rng.normal(0.5, 2.0, shape), rng.normal(size=shape)
    channels = shape[1]
    axes = (0, *range(2, len(shape)))
    view = (channels,) + (1,) * (len(shape) - 2)
    gamma, beta = rng.normal(1.0, 0.3, channels), rng.normal(size=channels)
    g, loss = _param_net("bn", x, up)
    model = gn.compile(g, loss, optimizer=gn.SGD(0.0), target=target, dtype="float64", wait=True)
    _set_affine(model, "bn", gamma, beta)
    expected, xhat, inv_std = _np_norm(x, axes, gamma.reshape(view), beta.reshape(view))
    np.testing.assert_allclose(model.forward({}, training=True)["y"], expected, rtol=1e-10, atol=1e-12)
    _, grads = model.loss_and_gradients({}, training=True)
    closed = gamma.reshape(view) * _closed_form_dx(up, xhat, inv_std, axes)
    np.testing.assert_allclose(grads["x"], closed, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(grads["bn/gamma"], (up * xhat).sum(axis=axes), rtol=1e-8, atol=1e-10)
    assert "bn/running_mean" not in grads and "bn/running_var" not in grads   # buffers: no gradient

    def loss_at(value):
        model.params["x"] = value
        return model.loss_and_gradients({}, training=True)[0]
    fd = numeric_gradient(loss_at, x)
    np.testing.assert_allclose(grads["x"], fd, rtol=1e-6, atol=1e-7)


def _bn_model(shape, target="cpu", momentum=0.1, lr=0.05, dtype="float64"):
    g = gn.Graph("bn_net")
    x, t = g.input("x", (None, *shape)), g.input("t", (None, *shape))
    y = g.output("y", gn.BatchNorm(momentum=momentum, name="bn")(x))
    model = gn.compile(g, gn.mse(y, t), optimizer=gn.SGD(lr), target=target, dtype=dtype, wait=True)
    return g, model


def _running(batches, axes, momentum=0.1):
    """PyTorch's running statistics: the mean, and the unbiased batch variance."""
    mean, var = 0.0, 1.0
    for b in batches:
        count = np.prod([b.shape[a] for a in axes])
        mean = (1 - momentum) * mean + momentum * b.mean(axis=axes)
        var = (1 - momentum) * var + momentum * b.var(axis=axes) * count / (count - 1)
    return mean, var


@pytest.mark.parametrize("target, shape", [
    ("reference", (3,)), ("reference", (2, 3, 3)), ("cpu", (3,)), ("cpu", (2, 3, 3)),
    pytest.param("cuda", (3,), marks=pytest.mark.cuda)], ids=["ref-1d", "ref-2d", "cpu-1d", "cpu-2d", "cuda-1d"])
def test_running_statistics_after_steps_and_in_the_compiled_loop(target, shape):
    rng = np.random.default_rng(3)
    X, T = rng.normal(2.0, 3.0, (12, *shape)), rng.normal(size=(12, *shape))
    axes = (0, *range(2, 1 + len(shape)))
    _, model = _bn_model(shape, target, momentum=0.2)
    assert np.all(model.params["bn/running_mean"] == 0) and np.all(model.params["bn/running_var"] == 1)
    model.step({"x": X[:4], "t": T[:4]})
    model.train_steps({"x": X, "t": T}, batch_size=4, order=np.arange(4, 12))   # compiled loop on CPU
    mean, var = _running([X[:4], X[4:8], X[8:]], axes, momentum=0.2)
    p = model.get_params()          # (a CUDA model's model.params may be stale)
    np.testing.assert_allclose(p["bn/running_mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(p["bn/running_var"], var, rtol=1e-12)
    # evaluation uses them; training uses the batch's
    view = (-1,) + (1,) * (len(shape) - 1)
    expected = ((X - p["bn/running_mean"].reshape(view)) / np.sqrt(p["bn/running_var"].reshape(view) + EPS)
                * p["bn/gamma"].reshape(view) + p["bn/beta"].reshape(view))
    np.testing.assert_allclose(model.predict({"x": X}), expected, rtol=1e-10, atol=1e-12)
    batch = _np_norm(X, axes, p["bn/gamma"].reshape(view), p["bn/beta"].reshape(view))[0]
    np.testing.assert_allclose(model.forward({"x": X}, training=True)["y"], batch, rtol=1e-10, atol=1e-12)
    # loss_and_gradients does not step: the buffers stay
    model.loss_and_gradients({"x": X, "t": T}, training=True)
    np.testing.assert_array_equal(model.get_params()["bn/running_mean"], p["bn/running_mean"])


def test_running_statistics_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    X = rng.normal(1.0, 2.0, (8, 2, 3, 3))
    _, model = _bn_model((2, 3, 3), lr=0.0)
    bn = torch.nn.BatchNorm2d(2).double()
    for b in (X[:4], X[4:]):
        model.step({"x": b, "t": np.zeros_like(b)})
        bn(torch.from_numpy(b))
    np.testing.assert_allclose(model.params["bn/running_mean"], bn.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(model.params["bn/running_var"], bn.running_var.numpy(), rtol=1e-12)
    bn.eval()
    np.testing.assert_allclose(model.predict({"x": X}), bn(torch.from_numpy(X)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)


def test_save_load_keeps_the_buffers_and_their_updates(tmp_path):
    rng = np.random.default_rng(5)
    X, T = rng.normal(1.0, 2.0, (8, 3)), rng.normal(size=(8, 3))
    _, model = _bn_model((3,))
    model.train_steps({"x": X, "t": T}, batch_size=4)
    gn.save(model, tmp_path / "bn")
    loaded = gn.load(tmp_path / "bn", dtype="float64")
    for k in ("bn/running_mean", "bn/running_var", "bn/gamma"):
        np.testing.assert_array_equal(loaded.params[k], model.params[k])
    np.testing.assert_array_equal(loaded.predict({"x": X}), model.predict({"x": X}))
    assert sorted(loaded.graph.updates) == ["bn/running_mean", "bn/running_var"]
    # training goes on updating them exactly as in the original
    model.step({"x": X[:4], "t": T[:4]})
    loaded.step({"x": X[:4], "t": T[:4]})
    assert not np.array_equal(loaded.params["bn/running_mean"], gn.load(tmp_path / "bn").params["bn/running_mean"])
    np.testing.assert_allclose(loaded.params["bn/running_var"], model.params["bn/running_var"], rtol=1e-12)


def test_batch_norm_trains_on_digits():
    X, Y = gn.data.load_digits()
    X, Y = X[:256], Y[:256]
    net = gn.Sequential([gn.Dense(16), gn.BatchNorm(name="bn"), gn.Activation("relu"), gn.Dense(10)])
    g = net.to_graph((None, 64), name="digits_bn")
    y = g.input("y", (None, 10))
    model = gn.compile(g, gn.softmax_cross_entropy(g.outputs["y_hat"], y), optimizer=gn.Adam(0.01),
                       wait=True)
    before = model.evaluate_loss({"x": X, "y": Y})
    model.fit({"x": X, "y": Y}, epochs=3, batch_size=32, verbose=0)
    after = model.evaluate_loss({"x": X, "y": Y})      # evaluation mode: the running statistics
    assert after < 0.5 * before
    assert np.all(model.params["bn/running_var"] != 1.0)


def test_buffer_errors():
    g = gn.Graph("g")
    x = g.input("x", (None, 3))
    with pytest.raises(gn.ArgumentError, match="momentum"):
        gn.batch_norm(x, momentum=1.5)
    with pytest.raises(gn.ShapeError, match="batch_norm takes"):
        gn.batch_norm(g.input("v", (None,)))
    w = g.parameter("w", (3,))
    with pytest.raises(gn.GraphnnError, match="not a buffer"):
        g.update(w, w * 2.0)
    b = g.buffer("b", (3,))
    with pytest.raises(gn.ShapeError, match="shape"):
        g.update(b, x)
    g.update(b, b * 0.5)
    with pytest.raises(gn.GraphnnError, match="already has an update"):
        g.update(b, b * 0.5)
    loss = gn.sum(gn.mul(x, b))
    g.trainable["b"] = True
    with pytest.raises(gn.GraphnnError, match="is trainable"):
        gn.compile(g, loss, optimizer=gn.SGD(0.1), target="reference")


def test_render_a_batch_norm_net():
    g, model = _bn_model((2, 3, 3))
    svg = gn.render(model.loss_node).svg()
    assert "<svg" in svg and "bn" in svg


def test_a_one_row_batch_leaves_the_running_variance_finite():
    """PyTorch refuses a training batch of one value per channel; here its unbiased variance
    (0/0) divides by 1 instead, so the running variance decays but stays finite."""
    _, model = _bn_model((3,), target="reference")
    model.step({"x": np.array([[1.0, 2.0, 3.0]]), "t": np.zeros((1, 3))})
    np.testing.assert_array_equal(model.params["bn/running_var"], np.full(3, 0.9))
    np.testing.assert_allclose(model.params["bn/running_mean"], [0.1, 0.2, 0.3])


def test_summary_shows_the_buffers_apart_from_frozen_weights():
    net = gn.Sequential([gn.Dense(4), gn.BatchNorm(name="bn"), gn.Dropout(0.5, name="drop"), gn.Dense(2)])
    g = net.to_graph((None, 3))
    model = gn.compile(g, outputs={"y": g.outputs["y_hat"]}, target="reference")
    rows = {line.split()[0]: line for line in model.summary(print_fn=None).splitlines()[3:8]}
    assert rows["bn"].split()[1:] == ["(N,", "4)", "16", "yes", "+", "buffers"]   # not "bn (input)"
    assert rows["drop"].split()[1:] == ["(N,", "4)", "0", "-"]
    assert "total weights: 34 (34 trainable, 0 frozen); buffers: 8 values" in str(model.summary(print_fn=None))


@pytest.mark.parametrize("mode, updated", [("share", True), ("copy", True), ("freeze", False)])
def test_a_batch_norm_net_reused_as_a_layer_keeps_its_updates(mode, updated):
    inner = gn.Graph("inner")
    inner.output("y", gn.batch_norm(inner.input("x", (None, 3)), name="bn"))
    host = gn.Graph("host")
    x, t = host.input("x", (None, 3)), host.input("t", (None, 3))
    y = gn.as_layer(inner, params=mode, name="block")(x)
    assert sorted(host.updates) == (["block/bn/running_mean", "block/bn/running_var"] if updated else [])
    model = gn.compile(host, gn.mse(y, t), optimizer=gn.SGD(0.1), target="reference", dtype="float64")
    X = np.random.default_rng(6).normal(2.0, 1.0, (4, 3))
    model.step({"x": X, "t": X})
    expected = 0.1 * X.mean(0) if updated else np.zeros(3)
    np.testing.assert_allclose(model.params["block/bn/running_mean"], expected, rtol=1e-12)


def test_a_file_whose_updates_name_a_trained_parameter_is_refused(tmp_path):
    import json
    _, model = _bn_model((3,), target="reference")
    gn.save(model, tmp_path / "bn")
    path = tmp_path / "bn.json"
    document = json.loads(path.read_text())
    ids = {n["name"]: n["id"] for n in document["nodes"]}
    assert document["updates"] == {"bn/running_mean": ids["bn/new_running_mean"],
                                   "bn/running_var": ids["bn/new_running_var"]}
    document["updates"] = {"bn/gamma": ids["bn/new_running_mean"]}
    path.write_text(json.dumps(document))
    with pytest.raises(gn.FileFormatError, match=r"updates\['bn/gamma'\].*not a buffer"):
        gn.load(tmp_path / "bn")


def test_pictures_draw_the_statistics_as_one_box_and_buffers_as_buffers():
    g = gn.Graph("bn_picture")
    x = g.input("x", (None, 3))
    y = g.output("y", gn.BatchNorm(name="bn")(gn.dense(x, 4, name="hidden")))
    source = gn.render(y).source
    assert "running_mean" in source and "(4,) · buffer" in source
    assert "bn · 8 weights" in source               # gamma and beta; the statistics are not weights
    assert "statistics" in source and "batch_var" not in source      # one box, by default
    assert "batch_var" in gn.render(y, expand=True).source
