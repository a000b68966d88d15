"""The CUDA target against the reference executor and the CPU target.

Under the CUDA simulator (conftest switches it on), on tiny shapes: the simulator
runs one Python thread per CUDA thread. Select these with ``-m cuda``.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import graphnn as gn
from graphnn import lecture

pytestmark = pytest.mark.cuda


def _compare(net, feeds, dtype, optimizer, tol, steps=2):
    ref = gn.compile(net.graph, net.loss, target="reference", dtype=dtype, optimizer=optimizer())
    cpu = gn.compile(net.graph, net.loss, target="cpu", dtype=dtype, optimizer=optimizer())
    cuda = gn.compile(net.graph, net.loss, target="cuda", dtype=dtype, optimizer=optimizer())
    losses = [m.loss_and_gradients(feeds) for m in (ref, cpu, cuda)]
    (l0, g0) = losses[0]
    for l1, g1 in losses[1:]:
        assert abs(l1 - l0) <= tol * max(1.0, abs(l0))
        for k in g0:
            np.testing.assert_allclose(g1[k], g0[k], rtol=tol, atol=tol)
    for _ in range(steps):
        values = [m.step(feeds) for m in (ref, cpu, cuda)]
        assert max(values) - min(values) <= tol * max(1.0, abs(values[0]))
    params = [m.get_params() for m in (ref, cpu, cuda)]
    for k in params[0]:
        for other in params[1:]:
            np.testing.assert_allclose(other[k], params[0][k], rtol=tol, atol=tol)
    outs = [m.forward(feeds) for m in (ref, cuda)]
    for k in outs[0]:
        np.testing.assert_allclose(outs[1][k], outs[0][k], rtol=tol, atol=tol)
    return cuda


def test_regression_net_float32_training_step():
    x, y = lecture.noisy_sine(6)
    model = _compare(lecture.regression_net(), {"x": x, "y": y}, "float32", lambda: gn.SGD(lr=0.1), 1e-5)
    assert "@cuda.jit" in model.source and "hidden/tanh" in model.source


def test_softmax_classifier_float64_with_adam():
    x, labels = lecture.two_blobs(5)
    y = np.eye(2)[labels[:, 0].astype(int)]
    _compare(lecture.softmax_classifier(), {"x": x, "y": y}, "float64", lambda: gn.Adam(lr=0.01), 1e-10)


def test_two_hidden_layers_keep_every_matrix_product():
    g = gn.Graph("mlp2", seed=1)
    x, y = g.input("x", (None, 3)), g.input("y", (None, 2))
    h = gn.dense(gn.dense(x, 4, activation="relu", name="h0"), 4, activation="relu", name="h1")
    net = lecture.LectureNet(g, gn.softmax_cross_entropy(gn.dense(h, 2, name="out"), y), h)
    xs = np.random.default_rng(0).standard_normal((5, 3))
    _compare(net, {"x": xs, "y": np.eye(2)[[0, 1, 1, 0, 1]]}, "float64", lambda: gn.Momentum(lr=0.1), 1e-10)


@pytest.mark.slow     # the simulator runs the split-K SGEMM: about 20 s
def test_split_k_weight_gradient_with_atomics():
    """A long batch into a tiny weight gradient takes the split-K path (atomic adds)."""
    g = gn.Graph("splitk")
    x = g.input("x", (None, 3))
    W = g.parameter("W", (3, 2))
    loss = gn.sum(gn.matmul(x, W))
    model = gn.compile(g, loss, target="cuda", dtype="float64")
    xs = np.random.default_rng(0).standard_normal((2100, 3))
    value, grads = model.loss_and_gradients({"x": xs})
    assert value == pytest.approx(float((xs @ g.values["W"]).sum()), rel=1e-12)
    np.testing.assert_allclose(grads["W"], np.repeat(xs.sum(0)[:, None], 2, axis=1), rtol=1e-12)


def test_no_gpu_and_no_simulator_is_a_clear_error():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    code = ("import graphnn as gn\n"
            "from numba import cuda\n"
            "print('GPU present' if cuda.is_available() else 'no GPU')\n"
            "net = gn.lecture.regression_net()\n"
            "try:\n"
            "    gn.compile(net.graph, net.loss, target='cuda')\n"
            "except gn.TargetError as e:\n"
            "    print('TargetError:', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    if "GPU present" in out.stdout:
        pytest.skip("a real GPU is present, so the no-GPU error cannot be provoked on this machine")
    assert "TargetError" in out.stdout, out.stderr[-2000:]
    assert "no CUDA GPU" in out.stdout and "NUMBA_ENABLE_CUDASIM" in out.stdout


PTX_CHILD = r'''
import re, sys, importlib.util
import numpy as np
np.row_stack = getattr(np, "row_stack", np.vstack)  # numba-cuda 0.30 on numpy 2.5
from numba import cuda, types
import graphnn as gn
from graphnn.lower import lower
from graphnn.codegen.cuda import CudaModulePrinter, print_model, kernel_signatures
import numba.cuda.dispatcher as dispatcher

class _Hopper:  # device functions ask the current device for its compute capability
    compute_capability = (9, 0)
dispatcher.get_current_device = lambda: _Hopper()

def float64_instructions(fn, sig):
    ptx, _ = cuda.compile_ptx(fn, sig, cc=(9, 0))
    return [line.strip() for line in ptx.splitlines() if re.search(r"\.f64\b", line)]

# the counter can fail: a float64 literal in a float32 kernel shows up
def control(x, out, N):
    i = cuda.grid(1)
    if i < N:
        out[i] = x[i] * 0.1
assert float64_instructions(control, types.void(types.float32[::1], types.float32[::1], types.int64))

g = gn.Graph("ptx")
x, y = g.input("x", (None, 6)), g.input("y", (None, 2))
h = gn.dense(x, 24, activation="gelu", name="h")     # a product with its bias and GELU as epilogue
h = gn.mish(gn.dense(h, 4, activation="sigmoid", name="h2"))
loss = gn.softmax_cross_entropy(gn.dense(h, 2, name="out"), y) + gn.l2_penalty(g.parameters["h/W"], 1e-3)
model = gn.compile(g, loss, target="reference", dtype="float32", optimizer=gn.Adam())
kprogs = [lower(p, "float32", contractions=CudaModulePrinter.contractions) for p in model.programs.values()]
order = [(k, v.shape) for k, v in model.params.items()]
source, _ = print_model(kprogs, "float32", "ptx", order, [(k, v.shape) for k, v in model.state.items()],
                        [("optimizer::" + h, ()) for h in (*model.optimizer.hyper, "t")])
path = sys.argv[1] + "/ptx_module.py"
open(path, "w").write(source)
spec = importlib.util.spec_from_file_location("ptx_module", path)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
checked, bad, rows, epilogues, products = 0, [], 0, 0, 0
for kprog in kprogs:
    for name, signature, kind in kernel_signatures(kprog, source):
        rows += kind == "rows"
        epilogues += kind == "epilogue"
        if kind == "product":
            # the tiled product is one template (its compile takes ~10 s): one of them, the
            # first with an epilogue (a device function inside it), plus every epilogue's kernel
            if products or not hasattr(module, f"{name}_at"):
                continue
            products += 1
        found = float64_instructions(getattr(module, name).py_func, types.void(*signature))
        checked += 1
        if found:
            bad.append(f"{name}: {found[:3]}")
assert rows, "the step has no row pass to check"
assert epilogues and products, "no product has an epilogue to check"
print("checked", checked)
assert not bad, "float64 in float32 device code:\n" + "\n".join(bad)
print("PTX-OK")
'''


TOOLKIT_PROBE = r"""
import numpy as np
np.row_stack = getattr(np, "row_stack", np.vstack)  # numba-cuda 0.30 on numpy 2.5
try:
    from numba.cuda.cudadrv.libs import open_libdevice
    from numba.cuda.cudadrv.nvvm import NVVM
    NVVM().get_version()      # libNVVM, the compiler to PTX
    open_libdevice()          # libdevice, CUDA's math library as NVVM IR
except Exception as e:
    print("MISSING", type(e).__name__, str(e).strip().replace(chr(10), " ")[:200])
else:
    print("TOOLKIT-OK")
"""


def cuda_toolkit_missing(prelude=""):
    """Why the CUDA toolkit (libNVVM and libdevice, the 'numba-cuda[cu12]' wheels) cannot be
    used in this environment, or None when it can. Only the toolkit is probed: a PTX
    compile that fails with the toolkit present is a failure, not a skip."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", prelude + TOOLKIT_PROBE], capture_output=True,
                         text=True, env=env, timeout=300)
    if "TOOLKIT-OK" in out.stdout:
        return None
    found = out.stdout.strip() or (out.stderr.strip().splitlines() or [f"exit status {out.returncode}"])[-1]
    return ("needs the CUDA toolkit (libNVVM, libdevice): pip install 'numba-cuda[cu12]'; the "
            "simulator tests run without it; here: " + found[:240])


HIDE_TOOLKIT = r"""
import cuda.pathfinder as pf
_find = pf.load_nvidia_dynamic_lib
def _hidden(name, *args, **kwargs):   # as on a machine without the toolkit wheels
    if name in ("nvvm", "nvrtc"):
        raise pf.DynamicLibNotFoundError(f"lib{name} not found (hidden by the test)")
    return _find(name, *args, **kwargs)
pf.load_nvidia_dynamic_lib = _hidden
"""


def test_without_the_toolkit_ptx_skips_with_a_reason_and_the_simulator_runs():
    """Without libNVVM (hidden here), the PTX test's probe gives a reason naming the wheels
    to install, while a model still compiles and runs for target='cuda' in the simulator."""
    reason = cuda_toolkit_missing(HIDE_TOOLKIT)
    assert reason is not None and "numba-cuda[cu12]" in reason and "libnvvm not found" in reason
    code = HIDE_TOOLKIT + (
        "import graphnn as gn\n"
        "net = gn.lecture.regression_net()\n"
        "x, y = gn.lecture.noisy_sine(4)\n"
        "model = gn.compile(net.graph, net.loss, target='cuda', dtype='float32')\n"
        "print('loss', model.loss_and_gradients({'x': x, 'y': y})[0])\n")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", GRAPHNN_WAIT="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and "loss" in out.stdout, out.stderr[-2000:]


@pytest.mark.slow     # compiles a training step to PTX: about 25 s
def test_float32_device_code_has_no_float64_ptx(tmp_path):
    """Compile every generated kernel to PTX for sm_90 (no GPU needed) and count f64 instructions."""
    missing = cuda_toolkit_missing()
    if missing:
        pytest.skip(missing)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    out = subprocess.run([sys.executable, "-c", PTX_CHILD, str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert "PTX-OK" in out.stdout, out.stdout[-2000:] + out.stderr[-3000:]


@pytest.mark.slow     # two product kernels through numba and ptxas: about 15 s
def test_the_default_product_kernels_spill_no_registers():
    """ptxas (CUDA toolkit wheels) compiles the tiled product of each dtype for sm_90: a
    kernel that needs more than 255 registers per thread spills to local memory. The
    128x128 float32 tile fits; the same tile in float64 spilled (100 bytes), so float64
    uses 64x64 (benchmarks/sgemm_sass.py). nvdisasm then reads the main loop: its shared
    reads are vector loads, and FMAs are most of its instructions."""
    missing = cuda_toolkit_missing()
    if missing:
        pytest.skip(missing)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    script = os.path.join(os.path.dirname(__file__), "..", "benchmarks", "sgemm_sass.py")
    out = subprocess.run([sys.executable, script, "--defaults"], capture_output=True, text=True, env=env,
                         timeout=600)
    if out.returncode and "ptxas not found" in out.stderr:
        pytest.skip("ptxas not found: " + out.stderr.strip()[-200:])
    rows = [line.split() for line in out.stdout.splitlines() if line.startswith("float")]
    assert [(r[0], r[1], r[4]) for r in rows] == [("float32", "128", "-"), ("float32", "128", "relu"),
                                                  ("float64", "64", "-"), ("float64", "64", "tanh")], out.stdout
    for r in rows:                     # (with and without an epilogue inside the product)
        assert int(r[5]) <= 255 and r[6] == "0", r
    if "nvdisasm: not found" in out.stdout:
        pytest.skip("registers and spills checked; nvdisasm not found (the test extra installs "
                    "nvidia-cuda-nvdisasm), so the instruction mix is not")
    for r in rows:
        dtype, tile, bk, unroll = r[0], int(r[1]), int(r[2]), int(r[9])    # (r[6:8]: "0 B" spilled)
        share, vector_loads, scalar_loads, runs = float(r[12].rstrip("%")) / 100, int(r[13]), int(r[14]), r[15]
        # the inner loop holds the printed steps of k and their FMAs: it runs bk / unroll
        # times per slab (a loop missing FMAs would need a fractional count)
        assert runs == str(bk // unroll), r
        # every read from shared memory is a 128-bit load: each step of k reads a thread's
        # tile/16 values of A and of B, 16 bytes at a time
        assert scalar_loads == 0 and vector_loads == bk * 2 * (tile // 16) * np.dtype(dtype).itemsize // 16, r
        # 72% and 52% on 2026-11-28
        assert share >= (0.65 if dtype == "float32" else 0.45), r


def test_constants_of_any_rank_keep_their_shape_on_the_device():
    """A matrix constant is indexed as a matrix by the kernels: the module must hold it with
    its shape (it was a flat array, and the first 2-D index failed)."""
    g = gn.Graph("constants", seed=0)
    x, y = g.input("x", (None, 3)), g.input("y", (None, 2))
    C = g.constant(np.arange(6.0).reshape(3, 2) / 5, name="C")
    T = g.constant(np.linspace(-1, 1, 12).reshape(2, 3, 2), name="T")
    W = g.parameter("W", (3, 2))
    out = g.output("out", gn.matmul(gn.tanh(x), W) + gn.matmul(x, C) + gn.sum(T))
    loss = gn.mse(out, y)
    feeds = {"x": np.linspace(-1, 1, 12).reshape(4, 3), "y": np.ones((4, 2))}
    got = gn.compile(g, loss, target="cuda", dtype="float64", wait=True).loss_and_gradients(feeds)
    expected = gn.compile(g, loss, target="reference", dtype="float64").loss_and_gradients(feeds)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-12)
    np.testing.assert_allclose(got[1]["W"], expected[1]["W"], rtol=1e-12)


def test_launches_bound_with_different_sizes_keep_their_own_configuration():
    """A program binds its launches once and runs them many times; two launches of one kernel
    with different grids (a fill of two buffers, the loop's gather of two feeds) must each
    keep their own. numba's simulator configures the kernel object itself, so the module
    configures it again at each launch there."""
    from numba import cuda
    net = lecture.regression_net()
    module = gn.compile(net.graph, net.loss, target="cuda").backend.compiled.module
    big, small = cuda.to_device(np.ones(1000)), cuda.to_device(np.ones(10))
    fill_big = module._bind(module._fill, module._blocks(1000), module.THREADS, big, 0.0)
    fill_small = module._bind(module._fill, module._blocks(10), module.THREADS, small, 0.0)
    fill_big()
    fill_small()
    assert not big.copy_to_host().any() and not small.copy_to_host().any()


def test_threads_of_a_block_share_one_shared_array(monkeypatch):
    """numba's simulator makes a block's shared array when the first of its threads reaches
    ``cuda.shared.array``: a look-up, then an insert. A thread switch between the two gave
    two threads two arrays, and a block's sums took uninitialized memory for the others'
    values (a wrong loss, now and then, on a loaded machine). Here the first thread is held
    between the look-up and the insert while the second makes its call."""
    import threading
    from numba import config
    if not config.ENABLE_CUDASIM:
        pytest.skip("a property of numba's CUDA simulator")
    from numba.cuda.simulator.kernelapi import FakeCUDAShared
    net = lecture.regression_net()
    gn.compile(net.graph, net.loss, target="cuda")      # the backend makes the simulator's arrays safe
    shared = FakeCUDAShared(0)
    inside, release = threading.Event(), threading.Event()
    empty = np.empty

    def held_empty(*args, **kwargs):
        if threading.current_thread().name == "first":
            inside.set()
            release.wait(10)
        return empty(*args, **kwargs)
    monkeypatch.setattr(np, "empty", held_empty)
    got = {}

    def block_thread():
        got[threading.current_thread().name] = shared.array((4, 8), np.float64)     # one line
    first = threading.Thread(target=block_thread, name="first")
    second = threading.Thread(target=block_thread, name="second")
    first.start()
    assert inside.wait(10)
    second.start()
    second.join(0.5)        # it waits for the first one's array
    release.set()
    first.join(10)
    second.join(10)
    assert got["first"] is got["second"]


class _OtherLibraryArray:
    """A device array of another library (CuPy, PyTorch): the CUDA array interface, a shape
    and a dtype, and neither numba's ``__cuda_memory__`` nor ``copy_to_host`` -- numba would
    take it for host memory, and CuPy refuses to become a NumPy array."""

    def __init__(self, values):
        self.values = np.ascontiguousarray(values)
        self.shape, self.dtype, self.size = self.values.shape, self.values.dtype, self.values.size
        self.ndim = self.values.ndim
        self.__cuda_array_interface__ = {"shape": self.shape, "typestr": self.dtype.str, "version": 3,
                                         "data": (self.values.ctypes.data, False), "strides": None}

    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed")


def test_another_librarys_device_arrays_are_feeds_and_parameters(monkeypatch):
    """Feeds and parameter values may be CuPy (or PyTorch) device arrays: the CUDA backend
    copies them device to device through a numba view (``cuda.as_cuda_array``), which the
    simulator lacks, so a stand-in makes the view here."""
    from numba import cuda
    viewed = []

    def as_cuda_array(obj, sync=True):
        viewed.append(obj)
        return cuda.to_device(obj.values)
    monkeypatch.setattr(cuda, "as_cuda_array", as_cuda_array, raising=False)
    net = lecture.regression_net()
    x, y = lecture.noisy_sine(6)
    models = [gn.compile(net.graph, net.loss, target="cuda", dtype="float64", optimizer=gn.SGD(lr=0.1))
              for _ in range(2)]
    on_host = models[0].step({"x": x, "y": y})
    on_device = models[1].step({"x": _OtherLibraryArray(x), "y": _OtherLibraryArray(y)})
    assert on_device == pytest.approx(on_host, rel=1e-15) and len(viewed) == 2
    w = next(iter(models[1].params))
    new = np.full(models[1].params[w].shape, 0.25)
    models[1].params[w] = _OtherLibraryArray(new)
    np.testing.assert_array_equal(models[1].get_params()[w], new)
