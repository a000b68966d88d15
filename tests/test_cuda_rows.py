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
