"""Small layers on the CPU: products written out in their loop, and one pass over the batch rows.

The lowering and the CPU target pass ``fuse_rows`` turn a small net's step into a
single loop over the rows (:class:`graphnn.lower.ir.Rows`) plus the optimizer updates.
Every result is checked against the NumPy reference executor in float32 and float64.
"""
import numpy as np
import pytest

import graphnn as gn
from compile_support import assert_close, make_optimizer
from graphnn.lower.ir import Contract, Fused, Reduce, Rows


def _lowered(model, program="step"):
    backend = model.backend
    return backend.lowered(program, backend.printer(False))


def _small_net(activations=("tanh", "sigmoid"), widths=(3, 4, 3, 2), loss="ce", seed=3, hidden_output=False):
    g = gn.Graph("small-" + "-".join(map(str, widths)), seed=seed)
    x, y = g.input("x", (None, widths[0])), g.input("y", (None, widths[-1]))
    h = x
    for k, (width, act) in enumerate(zip(widths[1:-1], activations)):
        h = gn.dense(h, width, activation=act, name=f"hidden{k}")
        if hidden_output and k == 0:
            g.output("first_hidden", h)
    out = gn.dense(h, widths[-1], name="out")
    g.output("out", out)
    value = gn.softmax_cross_entropy(out, y) if loss == "ce" else gn.mse(out, y)
    return g, value


def _feeds(graph, rows=37, seed=0):
    rng = np.random.default_rng(seed)
    feeds = {"x": rng.standard_normal((rows, graph.inputs["x"].shape[1]))}
    width = graph.inputs["y"].shape[1]
    feeds["y"] = np.eye(width)[rng.integers(0, width, rows)]
    return feeds


def test_the_lecture_regression_step_is_one_pass_over_the_rows():
    net = gn.lecture.regression_net()
    model = gn.compile(net.graph, net.loss, optimizer=gn.SGD(0.1), wait=True)
    kernels = _lowered(model).kernels
    passes = [k for k in kernels if isinstance(k, Rows)]
    assert len(passes) == 1 and not any(isinstance(k, (Contract, Reduce)) for k in kernels)
    # the rest are the four parameter updates, after the pass
    assert kernels[0] is passes[0] and all(isinstance(k, Fused) for k in kernels[1:]) and len(kernels) == 5
    (rows,) = passes
    assert rows.stores == [], "row values nobody else reads must stay in registers"
    summed = {str(t.base.label) for t, _ in rows.sums}
    assert {"mse_mse", "delta_hidden_W_hidden_z", "delta_output_W_output_z"} <= summed


def test_a_row_value_read_elsewhere_is_stored():
    graph, loss = _small_net(hidden_output=True)
    model = gn.compile(graph, loss, dtype="float64", wait=True)
    stored = {str(t.base.label) for k in _lowered(model, "forward").kernels if isinstance(k, Rows)
              for t, _ in k.stores}
    assert stored, "the forward pass of a small net should be a row pass that stores its outputs"
    reference = gn.compile(graph, loss, dtype="float64", target="reference")
    feeds = {"x": _feeds(graph)["x"]}
    got, expected = model.forward(feeds), reference.forward(feeds)
    for name in expected:
        assert_close(got[name], expected[name], "float64", name)


def test_wide_layers_keep_their_matrix_products():
    graph, loss = _small_net(widths=(3, 40, 2), activations=("relu",))
    model = gn.compile(graph, loss, wait=True)
    kernels = _lowered(model).kernels
    assert any(isinstance(k, Contract) for k in kernels), "a 40-wide layer's products should stay BLAS calls"


NETS = {
    "tanh-sigmoid-ce": dict(activations=("tanh", "sigmoid"), widths=(3, 4, 3, 2), loss="ce"),
    "relu-gelu-mse": dict(activations=("relu", "gelu"), widths=(2, 4, 4, 3), loss="mse"),
    "softplus-elu-ce": dict(activations=("softplus", "elu"), widths=(4, 16, 3, 3), loss="ce"),
    "wide-input": dict(activations=("tanh",), widths=(12, 4, 1), loss="mse"),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_row_passes_match_the_reference(name, dtype):
    graph, loss = _small_net(**NETS[name])
    model = gn.compile(graph, loss, optimizer=make_optimizer("Adam"), dtype=dtype, wait=True)
    reference = gn.compile(graph, loss, optimizer=make_optimizer("Adam"), dtype=dtype, target="reference")
    assert any(isinstance(k, Rows) for k in _lowered(model).kernels), f"{name}: no row pass to test"
    for step in range(3):
        feeds = _feeds(graph, seed=step)
        value, grads = model.loss_and_gradients(feeds)
        ref_value, ref_grads = reference.loss_and_gradients(feeds)
        assert_close(value, ref_value, dtype, f"{name} loss")
        for k in ref_grads:
            assert_close(grads[k], ref_grads[k], dtype, f"{name} d loss / d {k}")
        assert_close(model.step(feeds), reference.step(feeds), dtype, f"{name} step {step}")
    for k, v in reference.get_params().items():
        assert_close(model.get_params()[k], v, dtype, f"{name} {k} after 3 steps")


def test_the_parallel_variant_of_a_row_pass_matches_the_reference():
    graph, loss = _small_net(**NETS["tanh-sigmoid-ce"])
    model = gn.compile(graph, loss, dtype="float64", parallel=True, wait=True)
    reference = gn.compile(graph, loss, dtype="float64", target="reference")
    feeds = _feeds(graph, rows=500)
    value, grads = model.loss_and_gradients(feeds)
    ref_value, ref_grads = reference.loss_and_gradients(feeds)
    assert_close(value, ref_value, "float64", "loss")
    for k in ref_grads:
        assert_close(grads[k], ref_grads[k], "float64", k)


def test_an_empty_batch_sums_to_zero():
    """The model refuses a 0-row step (FeedError); the kernels themselves sum 0 rows to 0."""
    net = gn.lecture.regression_net()
    model = gn.compile(net.graph, net.loss, dtype="float64", wait=True)
    empty = {"x": np.zeros((0, 1)), "y": np.zeros((0, 1))}
    with pytest.raises(gn.FeedError, match="0 rows"):
        model.loss_and_gradients(empty)
    out = model.backend.run("gradients", empty, 0)
    grads = {k: v for k, v in out.items() if k.startswith("grad::")}
    assert grads and all(np.all(g == 0) for g in grads.values())
