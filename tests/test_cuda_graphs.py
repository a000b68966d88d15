"""CUDA graphs (issue 15, item 3): a launch sequence that ran once is captured and then
replayed as one launch. numba's simulator has no streams to capture, so these tests put a
stand-in in the capture's place: it records the bound launches without running them, and its
"graph" runs exactly those launches again, with the arguments they were bound with -- which is
what a CUDA graph replays. That checks what a graph relies on: every step of the device loop is
the same launch sequence (the step's position is read from a counter on the device, not passed
from Python), and a replay gives the result of eager launches. The real capture ran on a GPU:
docs/cuda.md."""
import numpy as np
import pytest

import graphnn as gn

pytestmark = pytest.mark.cuda


class _Stream:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def synchronize(self):
        pass


class _Graph:
    def __init__(self, launches):
        self.launches, self.replays = list(launches), 0

    def launch(self, stream=None):
        self.replays += 1
        for launch in self.launches:
            launch()


def _stand_in_stream(launcher):
    # on a GPU the launcher's own stream must outlive the swap: numba's launches still use it
    launcher.kept = launcher.cp_stream
    launcher.graphs, launcher.cp_stream = True, _Stream()


def _with_stand_in_graphs(model):
    launcher = model.backend.launcher
    _stand_in_stream(launcher)
    graphs = []

    def capture(launches):
        graphs.append(_Graph(launches))
        launcher.captured += 1
        return graphs[-1]
    launcher.capture = capture
    return graphs


def _model(dtype="float64", adam=True, **options):
    g = gn.Graph("graphs", seed=0)
    x, y = g.input("x", (None, 4)), g.input("y", (None, 3))
    logits = g.output("logits", gn.Sequential([gn.Dense(5, activation="tanh"), gn.Dropout(0.25),
                                               gn.Dense(3)])(x))
    # Adam with a schedule reads the step count t, which the device loop advances in its graph
    optimizer = gn.Adam(0.05, schedule=gn.cosine(steps=12)) if adam else gn.SGD(0.1)
    return gn.compile(g, gn.softmax_cross_entropy(logits, y), optimizer=optimizer, dtype=dtype,
                      target="cuda", **options)


def _data(rows=12):
    rng = np.random.default_rng(2)
    return rng.normal(size=(rows, 4)), np.eye(3)[rng.integers(0, 3, rows)]


def test_steps_replayed_from_a_graph_equal_eager_steps():
    X, Y = _data(3)
    eager, replayed = _model(adam=False), _model(adam=False)
    graphs = _with_stand_in_graphs(replayed)
    for _ in range(3):
        np.testing.assert_allclose(replayed.step({"x": X, "y": Y}), eager.step({"x": X, "y": Y}), rtol=1e-12)
    # captured after the first (eager) step; steps 2-3 were the graph
    assert len(graphs) == 1 and graphs[0].replays == 2
    for k, v in eager.get_params().items():
        np.testing.assert_allclose(replayed.get_params()[k], v, rtol=1e-12, atol=1e-15, err_msg=k)


def test_the_device_loop_replays_one_step_graph_for_every_step():
    X, Y = _data(8)
    eager, replayed = _model(), _model()
    graphs = _with_stand_in_graphs(replayed)
    expected = eager.fit(X, Y, epochs=2, batch_size=4, seed=5, verbose=False)
    got = replayed.fit(X, Y, epochs=2, batch_size=4, seed=5, verbose=False)
    # bit for bit under the simulator; on a GPU the atomic sums may round differently
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-12)
    for k, v in eager.get_params().items():
        np.testing.assert_allclose(replayed.get_params()[k], v, rtol=1e-12, atol=1e-15, err_msg=k)
    for k, v in eager.state.items():
        np.testing.assert_allclose(replayed.state[k], v, rtol=1e-12, atol=1e-15, err_msg=k)
    # one graph for the loop's step (gather, dropout draws, the step, the loss and the
    # counters): every step after the first in each call was a replay of it
    loop_graphs = [g for g in graphs if g.replays]
    assert loop_graphs and sum(g.replays for g in loop_graphs) >= 4 - 2
    # and the step counter ended where 4 steps leave it
    assert replayed.step_count == eager.step_count == 4


def test_a_failed_capture_leaves_eager_launches():
    X, Y = _data(3)
    eager, model = _model(adam=False), _model(adam=False)
    launcher = model.backend.launcher
    _stand_in_stream(launcher)

    def refuse(launches):
        launcher.capture_error = "RuntimeError: no capture here"
        return None
    launcher.capture = refuse
    for _ in range(2):
        np.testing.assert_allclose(model.step({"x": X, "y": Y}), eager.step({"x": X, "y": Y}), rtol=1e-12)
    assert launcher.capture_error and all(p.graph is None for p in model.backend._launches.values())


def test_graphs_option_is_checked():
    with pytest.raises(gn.ArgumentError, match="graphs must be True or False"):
        _model(adam=False, graphs="yes")
    from numba import config
    model = _model(adam=False, graphs=True)
    if config.ENABLE_CUDASIM:
        # no CuPy GPU under the simulator: graphs are off, launches go on the default stream
        assert model.backend.launcher.graphs is False and model.backend.stream == 0
    else:
        assert model.backend.launcher.graphs is True and model.backend.stream != 0
    assert _model(adam=False, graphs=False).backend.launcher.graphs is False


class _Buffer:
    """A host array standing in for a device buffer: its 'pointer' is a key into MEMORY."""
    MEMORY = {}

    def __init__(self, array):
        self.array = np.ascontiguousarray(array)
        self.shape, self.dtype = self.array.shape, self.array.dtype
        self.MEMORY[id(self)] = self.array.reshape(-1)
        self.__cuda_array_interface__ = {"data": (id(self), False)}


class _ColumnMajorBlas:
    """cublas{S,D}gemm_v2 as the cuBLAS documentation defines them (column-major, leading
    dimensions, op N/T), on _Buffer memory."""

    def _gemm(self, handle, op_a, op_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        def matrix(ptr, rows, cols, ld):      # column j of a column-major matrix at ptr + j * ld
            return _Buffer.MEMORY[ptr][:ld * cols].reshape(cols, ld).T[:rows]
        A = matrix(a, k, m, lda).T if op_a else matrix(a, m, k, lda)
        B = matrix(b, n, k, ldb).T if op_b else matrix(b, k, n, ldb)
        C = matrix(c, m, n, ldc)
        # cuBLAS does not read C when beta is 0 (its documentation): the NaN poison stays out
        C[...] = alpha._obj.value * (A @ B) + (beta._obj.value * C if beta._obj.value else 0)
        return 0

    cublasSgemm_v2 = cublasDgemm_v2 = _gemm


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cublas_products_of_row_major_buffers(trans_a, trans_b, dtype):
    """The row-major product graphnn asks for, mapped onto cuBLAS's column-major GEMM
    (operands swapped, each leading dimension the stored row length), checked against numpy
    with a column-major GEMM written from cuBLAS's definition."""
    from graphnn.runtime.cublas import Cublas
    rng = np.random.default_rng(3)
    M, K, P = 5, 7, 3
    a = rng.normal(size=(K, M) if trans_a else (M, K)).astype(dtype)
    b = rng.normal(size=(P, K) if trans_b else (K, P)).astype(dtype)
    out = _Buffer(np.full((M, P), np.nan, dtype=dtype))
    blas = Cublas.__new__(Cublas)
    blas.lib, blas.handle = _ColumnMajorBlas(), None
    blas.bind(_Buffer(a), _Buffer(b), out, trans_a, trans_b, 0.5)()
    expected = 0.5 * ((a.T if trans_a else a) @ (b.T if trans_b else b))
    np.testing.assert_allclose(out.array, expected, rtol=1e-6 if dtype == np.float32 else 1e-12)


def test_the_cublas_self_check_catches_a_wrong_binding():
    """A model checks the direct cuBLAS binding on small products before using it (on a GPU:
    a binding that disagrees is replaced by cupy.matmul). The check itself, with numpy
    standing in for the device: a right binding passes, one that ignores a transpose fails."""
    from graphnn.runtime.cublas import agrees

    class Host:     # to_device / copy_to_host on host arrays
        @staticmethod
        def to_device(a, stream=None):
            class D:
                def __init__(self, v):
                    self.v = np.array(v)

                def copy_to_host(self, stream=None):
                    return self.v
            return D(a)

    def right(a, b, out, trans_a, trans_b, scale):
        def run():
            out.v[...] = scale * ((a.v.T if trans_a else a.v) @ (b.v.T if trans_b else b.v))
        return run

    def wrong(a, b, out, trans_a, trans_b, scale):
        def run():
            A = a.v.T if trans_a else a.v
            out.v[...] = scale * (A @ b.v.reshape(b.v.shape[::-1] if trans_b else b.v.shape))
        return run
    assert agrees(right, Host, None, lambda: None)
    assert not agrees(wrong, Host, None, lambda: None)


def test_an_sgemm_configuration_that_would_drop_elements_is_refused():
    """Each of the 256 threads stages tile * bk / 256 elements of a slab: a configuration where
    that is not whole would leave part of the slab unstaged, so the printer refuses it."""
    from graphnn.codegen.cuda import CudaModulePrinter, Sgemm
    assert CudaModulePrinter("float32").sgemm.tile == 128 and CudaModulePrinter("float64").sgemm.tile == 64
    for bad in (Sgemm(tile=24, bk=16, prefetch=True), Sgemm(tile=16, bk=8, prefetch=False)):
        with pytest.raises(ValueError, match="multiple of 256"):
            CudaModulePrinter("float32", bad)
