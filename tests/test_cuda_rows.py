"""Row passes on CUDA: a small net's step is one pass over the batch rows, one thread per
row, with its sums over the rows added per block and then block by block in order (no
atomics). Under the CUDA simulator against the CPU and the reference, over several blocks."""
import re

import numpy as np
import pytest

import graphnn as gn

pytestmark = pytest.mark.cuda


def _launches(model, program):
    """The kernel launches of one call of ``program``, read from the generated host function."""
    source = model.source
    body = source[source.index(f"def {program}(b, N):"):]
    body = body[:body.index("\n    ]\n")]
    return 2 * body.count("_bind_rows(") + len(re.findall(r"_bind\(|_bind_contract\(", body))


@pytest.mark.parametrize("make", [gn.lecture.regression_net, gn.lecture.classifier_net],
                         ids=["1-2-1", "2-2-1"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_small_nets_step_is_one_row_pass(make, dtype):
    net = make()
    models = {t: gn.compile(net.graph, net.loss, optimizer=gn.Adam(lr=0.05), target=t, dtype=dtype,
                            wait=True) for t in ("cuda", "cpu", "reference")}
    cuda = models["cuda"]
    assert "one thread per row" in cuda.source
    # the pass and its sums, then one update per parameter
    assert _launches(cuda, "step") == 2 + len(cuda.params)
    rng = np.random.default_rng(0)
    rows = 300                  # two blocks of 256 threads, the second partly empty
    feeds = {name: rng.normal(size=(rows, *node.shape[1:]))
             for name, node in net.graph.inputs.items() if node.batched}
    if make is gn.lecture.classifier_net:
        feeds["y"] = (feeds["y"] > 0).astype(float)
    rtol = 1e-12 if dtype == "float64" else 2e-5
    loss, grads = cuda.loss_and_gradients(feeds)
    for target in ("cpu", "reference"):
        expected_loss, expected = models[target].loss_and_gradients(feeds)
        np.testing.assert_allclose(loss, expected_loss, rtol=rtol)
        for k in expected:
            np.testing.assert_allclose(grads[k], expected[k], rtol=rtol, atol=rtol * 1e-2, err_msg=k)
    for model in models.values():
        for _ in range(3):
            model.step(feeds)
    # Adam divides by the gradient's magnitude: float32 rounding of a small gradient moves a
    # parameter by up to ~lr * 1e-4 (measured 1.1e-6 after 3 steps at lr 0.05)
    atol = 1e-12 if dtype == "float64" else 1e-5
    for target in ("cpu", "reference"):
        for k, v in models[target].get_params().items():
            np.testing.assert_allclose(cuda.get_params()[k], v, rtol=rtol, atol=atol, err_msg=k)


def test_the_simulator_runs_the_tiled_products_even_with_cupy_installed(monkeypatch):
    """matmul="auto" takes cuBLAS only where CuPy can use a GPU: never under the simulator,
    whose arrays CuPy cannot read (CI installs CuPy with the cuda extra)."""
    from graphnn.runtime import cuda as backend

    class FakeCupy:      # a CuPy that imported and sees a device
        class cuda:
            class runtime:
                @staticmethod
                def getDeviceCount():
                    return 1
    assert backend._cupy_on_a_gpu(None) is False
    assert backend._cupy_on_a_gpu(FakeCupy) is False          # the simulator is on in these tests
    net = gn.lecture.softmax_classifier()
    model = gn.compile(net.graph, net.loss, target="cuda", wait=True)
    assert model.backend.matmul == "tiled"
    with pytest.raises(gn.TargetError, match="simulator runs the tiled kernels"):
        gn.compile(net.graph, net.loss, target="cuda", matmul="cublas")
    from numba import config
    monkeypatch.setattr(config, "ENABLE_CUDASIM", False)
    assert backend._cupy_on_a_gpu(FakeCupy) is True


class _BrokenRuntime:
    class cuda:
        class runtime:
            @staticmethod
            def getDeviceCount():
                raise RuntimeError("cudaErrorInsufficientDriver")


def test_a_cupy_that_cannot_reach_the_driver_is_not_used(monkeypatch):
    from numba import config

    from graphnn.runtime import cuda as backend
    monkeypatch.setattr(config, "ENABLE_CUDASIM", False)
    assert backend._cupy_on_a_gpu(_BrokenRuntime) is False


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_ten_class_softmax_cross_entropy_runs_in_row_passes(dtype):
    """On the GPU a row pass also takes sums and maxima within a row of up to 16 elements: a
    10-class softmax-CE's forward (the row maximum, kept NaN-exact, and the loss) and its
    backward (down to the bias gradient) are one pass instead of a dozen kernels."""
    from graphnn.codegen.cuda import CudaModulePrinter
    from graphnn.lower import Reduce, Rows, lower
    from graphnn.lower.target import CUDA_PASSES, run_passes
    g = gn.Graph("ce10", seed=0)
    x, y = g.input("x", (None, 6)), g.input("y", (None, 10))
    logits = g.output("logits", gn.Sequential([gn.Dense(12, activation="relu"), gn.Dense(10)])(x))
    loss = gn.softmax_cross_entropy(logits, y)
    models = {t: gn.compile(g, loss, optimizer=gn.Adam(lr=0.05), target=t, dtype=dtype, wait=True)
              for t in ("cuda", "cpu", "reference")}
    kprog = lower(models["reference"].programs["step"], dtype, contractions=CudaModulePrinter.contractions)
    run_passes(kprog, CUDA_PASSES)
    passes = [k for k in kprog.kernels if isinstance(k, Rows)]
    fused = [c for k in passes for c in k.comments]
    ce = [k for k in passes if any("log_softmax/sum" in c for c in k.comments)]
    assert len(ce) == 1 and len(fused) >= 15          # (the 12-wide hidden layer may join one too)
    assert any("log_softmax/max" in c for c in ce[0].comments)
    assert any("vjp_linear_b" in c for c in ce[0].comments)
    assert not [k.comment for k in kprog.kernels if isinstance(k, Reduce) and "softmax_ce" in k.comment]
    rng = np.random.default_rng(1)
    feeds = {"x": rng.normal(size=(300, 6)), "y": np.eye(10)[rng.integers(0, 10, 300)]}
    rtol = 1e-12 if dtype == "float64" else 2e-5
    loss_value, grads = models["cuda"].loss_and_gradients(feeds)
    for target in ("cpu", "reference"):
        expected_loss, expected = models[target].loss_and_gradients(feeds)
        np.testing.assert_allclose(loss_value, expected_loss, rtol=rtol)
        for k in expected:
            np.testing.assert_allclose(grads[k], expected[k], rtol=rtol, atol=rtol * 1e-1, err_msg=k)
    atol = 1e-12 if dtype == "float64" else 1e-5
    for model in models.values():      # one Adam step (the optimizers' state over several
        model.step(feeds)               # steps: tests/test_cuda_coverage.py, test_cuda_state.py)
    for k, v in models["cpu"].get_params().items():
        np.testing.assert_allclose(models["cuda"].get_params()[k], v, rtol=rtol, atol=atol, err_msg=k)
