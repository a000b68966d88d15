"""Fewer, larger CUDA kernels (issue 15, item 4), under the simulator against the CPU and the
reference:

* a matrix product's epilogue -- a dense layer's bias and activation, an optimizer's update
  of a weight from its gradient -- runs inside the tiled product on each element in
  registers; a product summed over blocks (split K) or made by cuBLAS stores its output and
  launches the epilogue after, with the same result;
* a softmax-CE's forward and backward, with the logits' bias and the row maximum, are one
  row pass.
"""
import re

import numpy as np
import pytest
import sympy as sp

import graphnn as gn

pytestmark = pytest.mark.cuda


def _graph(hidden=24, classes=3, features=20, activation="relu"):
    g = gn.Graph("epilogues", seed=0)
    x, y = g.input("x", (None, features)), g.input("y", (None, classes))
    logits = g.output("logits", gn.Sequential([gn.Dense(hidden, activation=activation),
                                               gn.Dense(classes)])(x))
    return g, gn.softmax_cross_entropy(logits, y)


def _residual_mse(width=32):
    """An epilogue that reads the product's own operand and the batch size: the output
    layer ``Dense(width)(x) + x`` under a mean squared error (whose gradient has 1/N) is one
    loop after the product -- bias, the residual and the loss's delta."""
    g = gn.Graph("residual", seed=0)
    x, y = g.input("x", (None, width)), g.input("y", (None, width))
    logits = g.output("logits", gn.Dense(width)(x) + x)
    return g, gn.mse(logits, y)


def _feeds(rows=40, features=20, classes=3, seed=1):
    rng = np.random.default_rng(seed)
    return {"x": rng.normal(size=(rows, features)), "y": np.eye(classes)[rng.integers(0, classes, rows)]}


def _cuda_kernels(model, program="step"):
    from graphnn.codegen.cuda import CudaModulePrinter
    from graphnn.lower import lower
    from graphnn.lower.target import CUDA_PASSES, run_passes
    kprog = lower(model.programs[program], model.dtype.name, contractions=CudaModulePrinter.contractions)
    return run_passes(kprog, CUDA_PASSES).kernels


def _compare(models, feeds, dtype, steps=2):
    rtol = 1e-12 if dtype == "float64" else 3e-5
    atol = 1e-12 if dtype == "float64" else 1e-5
    cuda = models["cuda"]
    loss, grads = cuda.loss_and_gradients(feeds)
    for target in ("cpu", "reference"):
        expected_loss, expected = models[target].loss_and_gradients(feeds)
        np.testing.assert_allclose(loss, expected_loss, rtol=rtol)
        for k in expected:
            np.testing.assert_allclose(grads[k], expected[k], rtol=rtol, atol=atol, err_msg=k)
    for _ in range(steps):
        values = {t: m.step(feeds) for t, m in models.items()}
        np.testing.assert_allclose(values["cuda"], values["cpu"], rtol=rtol)
    for target in ("cpu", "reference"):
        for k, v in models[target].get_params().items():
            np.testing.assert_allclose(cuda.get_params()[k], v, rtol=rtol, atol=atol, err_msg=k)
    out = cuda.forward(feeds)["logits"]
    np.testing.assert_allclose(out, models["reference"].forward(feeds)["logits"], rtol=rtol, atol=atol)


def _models(optimizer, dtype, **graph):
    g, loss = _graph(**graph)
    return {t: gn.compile(g, loss, optimizer=optimizer(), target=t, dtype=dtype, wait=True)
            for t in ("cuda", "cpu", "reference")}


def test_the_bias_activation_and_weight_update_are_epilogues_of_their_products():
    from graphnn.lower import Contract, Fused
    g, loss = _graph()
    model = gn.compile(g, loss, optimizer=gn.SGD(0.1), target="reference")
    kernels = _cuda_kernels(model)
    products = [k for k in kernels if isinstance(k, Contract)]
    with_epilogue = [k for k in products if k.epilogue is not None]
    # the hidden layer's product carries its bias and ReLU; the first weight's gradient
    # carries the SGD update of that weight
    forward = next(k for k in with_epilogue if "x" == k.a)
    comments = " ".join(forward.epilogue.comments)
    assert "relu" in comments and "linear" in comments
    assert any("sgd_param" in " ".join(k.epilogue.comments) for k in with_epilogue)
    # an epilogue is no longer a kernel of its own in the list
    loops = [k for k in kernels if isinstance(k, Fused)]
    assert all(k.epilogue not in loops for k in with_epilogue)
    # and the product's output is read by nothing else
    from graphnn.lower.target import _kernel_io
    for k in with_epilogue:
        assert not any(k.out in _kernel_io(other)[0] for other in kernels if other is not k)


@pytest.mark.parametrize("dtype,optimizer", [("float64", lambda: gn.Adam(0.05)),
                                             ("float32", lambda: gn.SGD(0.1))], ids=["float64-adam", "float32-sgd"])
def _epilogues(model):
    module = model.backend.compiled.module
    return {name for name in dir(module) if name.endswith("_epilogue")}


def _host(source, program):
    """The host function of ``program`` in a CUDA module's source."""
    text = source[source.index(f"def {program}(b, N):"):]
    return text[:text.index("\n\n\n")] if "\n\n\n" in text else text


def _count_epilogue_launches(monkeypatch, model):
    """{epilogue kernel: launches}: its own kernel runs only where the product cannot apply it."""
    module = model.backend.compiled.module
    calls = {}

    class Counting:
        def __init__(self, name, kernel):
            self.name, self.kernel = name, kernel

        def __getitem__(self, config):
            launch = self.kernel[config]

            def run(*args):
                calls[self.name] = calls.get(self.name, 0) + 1
                return launch(*args)
            return run
    for name in dir(module):
        if name.endswith("_epilogue"):
            monkeypatch.setattr(module, name, Counting(name, getattr(module, name)))
    return calls


@pytest.mark.parametrize("dtype,optimizer", [("float64", lambda: gn.Adam(0.05)),
                                             ("float32", lambda: gn.SGD(0.1))], ids=["float64-adam", "float32-sgd"])
def test_products_with_epilogues_match_the_cpu_and_the_reference(dtype, optimizer, monkeypatch):
    models = _models(optimizer, dtype)
    source = models["cuda"].source
    assert "# the epilogue of step_k" in source and "@cuda.jit(device=True)" in source
    calls = _count_epilogue_launches(monkeypatch, models["cuda"])
    _compare(models, _feeds(), dtype)
    assert calls == {}        # every epilogue ran inside its product


def test_a_split_k_product_launches_its_epilogue_after(monkeypatch):
    """The weight gradient is summed over the rows: with few output tiles the tiled kernel
    splits that sum over blocks that add atomically, so the epilogue (the weight's update)
    cannot run inside it; the product stores its output and the epilogue's kernel runs next."""
    models = _models(lambda: gn.Momentum(0.1), "float64")
    module = models["cuda"].backend.compiled.module
    monkeypatch.setattr(module, "SPLIT_K", 8)      # 40 rows: 3 blocks of 16 rows each
    calls = _count_epilogue_launches(monkeypatch, models["cuda"])
    _compare(models, _feeds(), "float64")
    # every product here has K >= 16, so each one splits and launches its epilogue after:
    # each epilogue kernel as often as the programs that launch it ran (a kernel can serve
    # several programs: the hidden layer's forward product is the same in gradients and step)
    assert set(calls) == _epilogues(models["cuda"])
    source = models["cuda"].source
    ran = {"gradients": 1, "step": 2, "forward": 1}         # as _compare calls them
    first = re.search(r"epilogue=_bind\((\w+),", _host(source, "step")).group(1)
    assert calls[first] == sum(times * _host(source, program).count(f"epilogue=_bind({first},")
                               for program, times in ran.items()) >= 2, (first, calls)


def test_cublas_products_launch_their_epilogues_after(monkeypatch):
    """cuBLAS writes the product to memory: the epilogue's kernel then runs on it. A stand-in
    for cuBLAS (the product made on the host) takes its place under the simulator."""
    models = _models(lambda: gn.SGD(0.1), "float64")
    products = []

    from numba import cuda

    def gemm(a, b, out, trans_a, trans_b, scale):
        def run():
            cuda.synchronize()      # (on a GPU: the model's own stream wrote a and b)
            A, B = a.copy_to_host(), b.copy_to_host()
            out.copy_to_device(np.ascontiguousarray(float(scale) * ((A.T if trans_a else A) @ (B.T if trans_b else B))))
            products.append(out.shape)
        return run
    models["cuda"].backend.launcher.gemm = gemm
    calls = _count_epilogue_launches(monkeypatch, models["cuda"])
    _compare(models, _feeds(), "float64")
    assert products and set(calls) == _epilogues(models["cuda"])


def test_softmax_ce_forward_and_backward_are_one_row_pass():
    """The logits' bias, the row maximum, the softmax, the loss and its backward down to the
    logits' delta and bias gradient: one pass over the rows, whose values stay in registers."""
    from graphnn.lower import Reduce, Rows
    g, loss = _graph(hidden=24, classes=10)
    model = gn.compile(g, loss, optimizer=gn.SGD(0.1), target="reference")
    kernels = _cuda_kernels(model)
    passes = [k for k in kernels if isinstance(k, Rows)]
    assert len(passes) == 1
    comments = " ".join(passes[0].comments)
    for part in ("dense_1/z", "log_softmax/max", "log_softmax/sum", "nll/nll", "vjp_mean_x", "vjp_linear_b"):
        assert part in comments, part
    assert not [k for k in kernels if isinstance(k, Reduce) and "softmax_ce" in k.comment]
    # the softmax's values are not stored: only what the products after the pass read
    stored = {str(t.base.label) for t, _ in passes[0].stores}
    assert not any("exp" in name or "log_softmax_log_softmax" in name for name in stored), stored


def test_the_one_pass_softmax_ce_matches_and_keeps_nan():
    """(Both dtypes over several blocks of rows: tests/test_cuda_rows.py.)"""
    models = _models(lambda: gn.SGD(0.1), "float32", classes=10)
    _compare(models, _feeds(classes=10), "float32", steps=1)
    # a NaN input gives a NaN loss on every target, as the maximum reduction keeps it
    feeds = _feeds(classes=10)
    feeds["x"][3, 2] = np.nan
    values = {t: m.loss_and_gradients(feeds)[0] for t, m in models.items()}
    assert all(np.isnan(v) for v in values.values()), values


def test_an_epilogue_reading_the_products_operand_and_the_batch_size():
    from graphnn.lower import Contract
    g, loss = _residual_mse()
    models = {t: gn.compile(g, loss, optimizer=gn.SGD(0.1), target=t, dtype="float64", wait=True)
              for t in ("cuda", "cpu", "reference")}
    product = next(k for k in _cuda_kernels(models["reference"]) if isinstance(k, Contract) and k.a == "x")
    reads = {str(acc.base.label) for _, e in product.epilogue.assigns for acc in e.atoms(sp.Indexed)}
    assert "x" in reads and any(sp.Symbol("N", integer=True, positive=True) in e.free_symbols
                                for _, e in product.epilogue.assigns)
    rng = np.random.default_rng(4)
    feeds = {"x": rng.normal(size=(40, 32)), "y": rng.normal(size=(40, 32))}
    _compare(models, feeds, "float64")
