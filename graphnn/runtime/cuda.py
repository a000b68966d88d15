"""The CUDA backend: generated numba.cuda kernels, device-resident training.

Parameters, optimizer state, hyper-parameters and scratch space live on the
device in flat arrays; every buffer is a device view made once per batch size.
Per call only the feeds go to the device and only the requested outputs come
back (the loss of a training step is one scalar).
"""
import sys
import threading
import time
from collections import OrderedDict

import numpy as np

from ..codegen.cuda import CudaModulePrinter, print_model
from ..codegen.layout import program_meta
from ..errors import ArgumentError, FeedError, TargetError
from ..lower import lower
from . import cache as disk
from .model import device_to_host
from ..lower.program import hyper_name, program_signature

MAX_PLANS = 8              # (program, batch size) device buffer sets kept
SCRATCH_BATCH = 2          # rows of the scratch buffers a background build runs a program on


class CompiledModule:
    """Generated source of one model (all its programs in one module), its import, and its layout."""

    def __init__(self, model, target, printer_fn, cache_dir=None, key_extra=()):
        self.model = model
        param_order = [(k, v.shape) for k, v in model.params.items()]
        state_order = [(k, v.shape) for k, v in model.state.items()]
        hyper_order = [(hyper_name(h), ()) for h in (*(model.optimizer.hyper if model.optimizer else ()), "t")]
        key = disk.make_key(target, model.graph.name, model.dtype.name, key_extra,
                            param_order, state_order, hyper_order,
                            [program_signature(p) for p in model.programs.values()])
        path = disk.lookup(key, cache_dir)
        self.cache_hit = path is not None
        if path is None:
            reserved = CudaModulePrinter.reserved()
            kprogs = [lower(p, model.dtype.name, reserved=reserved, contractions=CudaModulePrinter.contractions)
                      for p in model.programs.values()]
            source, meta = printer_fn(kprogs, model.dtype.name, f"graph {model.graph.name!r}",
                                      param_order, state_order, hyper_order)
            source += "\n_META = " + repr(_meta_literal(meta, kprogs)) + "\n"
            path = disk.store(key, source, cache_dir)
        self.path = path
        self.module = disk.import_module(path, cuda=True)
        self.meta = self.module._META
        self.hyper_order = [n for n, _ in hyper_order]

    @property
    def source(self):
        return disk.read_source(self.path)


def _meta_literal(meta, kprogs):
    return {kprog.name: program_meta(kprog, *meta[kprog.name][1:]) for kprog in kprogs}


def _cuda():
    # numba-cuda 0.30 overloads np.row_stack, which numpy 2.5 removed: give it the alias
    if not hasattr(np, "row_stack"):
        np.row_stack = np.vstack
    try:
        from numba import cuda
    except ImportError as exc:  # pragma: no cover - numba-cuda missing
        raise TargetError("target='cuda' needs the numba-cuda package: pip install numba-cuda") from exc
    if not cuda.is_available():
        raise TargetError(
            "target='cuda': no CUDA GPU is available on this machine (numba.cuda.is_available() "
            "is False). Use target='cpu', or set NUMBA_ENABLE_CUDASIM=1 before numba is "
            "imported to run the kernels in the CUDA simulator.")
    _simulator_shared_arrays_once()
    return cuda


_SHARED_LOCK = threading.Lock()


def _simulator_shared_arrays_once():
    """Under numba's CUDA simulator, make ``cuda.shared.array`` give every thread of a block the
    same array.

    The simulator runs each CUDA thread as a Python thread, and a block's shared array is made
    by the first thread that reaches ``cuda.shared.array``: it looks the call's line up in a dict
    and, finding nothing, makes the array and stores it -- a check then an insert, with no lock
    (numba-cuda 0.30, simulator/kernelapi.py ``FakeCUDAShared.array``). When the interpreter
    switches threads between the two (more often on a loaded machine), two threads of the block
    each make an array: their "shared" writes and reads go to different arrays, and a sum over
    the block (a row pass's partial sums, an SGEMM slab) takes uninitialized memory for the
    other threads' values -- a plausible, wrong loss. Here the look-up and the insert are made
    under one lock. (The call's line is found from its frame, as the simulator's own
    ``traceback.extract_stack`` finds it, without reading every frame's source line.)"""
    from numba import config
    if not config.ENABLE_CUDASIM:
        return
    try:
        from numba.cuda.simulator import kernelapi
        shared, numba_type, as_dtype = kernelapi.FakeCUDAShared, kernelapi.types.Type, kernelapi.numpy_support.as_dtype
    except (ImportError, AttributeError):      # pragma: no cover - another numba-cuda layout
        return
    if getattr(shared.array, "_graphnn_locked", False):
        return
    original = shared.array

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:     # dynamic shared memory; alignment: the error
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, numba_type):
            dtype = as_dtype(dtype)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        with _SHARED_LOCK:
            found = self._allocations.get(key)
            if found is None:
                found = self._allocations[key] = np.empty(shape, dtype)
        return found

    array._graphnn_locked = True
    shared.array = array


class CUDABackend:
    target = "cuda"

    def __init__(self, model, cache_dir=None, fast_math=None, matmul="auto", graphs=True, wait=None):
        from .cpu import default_wait
        self.wait = default_wait() if wait is None else bool(wait)
        if fast_math:
            raise TargetError("fast_math is a CPU option: the CUDA target prints libm calls, which "
                              "numba.cuda maps to the device's own math library")
        self.cuda = _cuda()
        self.model = model
        if matmul not in ("auto", "tiled", "cublas"):
            raise ArgumentError(f"matmul must be 'auto', 'tiled' or 'cublas', got {matmul!r}")
        self.cache_dir, self._matmul_option = cache_dir, matmul
        self._compile()
        cupy = _import_cupy()
        have_cupy = _cupy_on_a_gpu(cupy)
        if matmul == "cublas" and not have_cupy:
            raise TargetError("matmul='cublas' needs CuPy and a GPU it can use (pip install "
                              "\"graphnn[cuda]\", which installs cupy-cuda12x); the CUDA simulator "
                              "runs the tiled kernels: use matmul='auto' or 'tiled'")
        if graphs not in (True, False):
            raise ArgumentError(f"graphs must be True or False, got {graphs!r}")
        # the stream all of this model's work goes on, CUDA graphs when CuPy can capture them,
        # and cuBLAS (measured faster on H200, docs/cuda.md) when CuPy brought it, else tiled
        self.launcher = Launcher(self.cuda, cupy, graphs, cublas=matmul != "tiled")
        self.matmul = "cublas" if self.launcher.gemm is not None else "tiled"
        self.stream = self.launcher.stream
        m = model
        self.param_slices = _slices(m.params)
        self.state_slices = _slices(m.state)
        self.d_params = self.cuda.to_device(_pack(m.params, m.dtype), stream=self.stream)
        self.d_state = self.cuda.to_device(_pack(m.state, m.dtype), stream=self.stream)
        self.hyper = np.zeros(max(len(self.compiled.hyper_order), 1), dtype=m.dtype)
        self.d_hyper = self.cuda.to_device(self.hyper, stream=self.stream)
        # (program, batch) -> device buffers and launch plans; the least recently used beyond
        # MAX_PLANS are dropped, so device memory does not grow with every batch size used
        self._views = OrderedDict()
        self._launches = {}     # (program, batch) -> Plan
        self._loops = {}        # batch -> the training loop's LoopPlan
        # the device's parameters and state are newer than the model's host arrays (after a
        # step): model.params/state copy them back when next read (refresh_host)
        self.host_stale = False
        # the other way round: calls ran on the NumPy reference while the kernels compiled
        # (wait=False) and changed the host arrays; the next device call uploads them first
        self.device_stale = False
        self._builds = {}       # program -> CudaBuild (wait=False)
        # the training data on the device (training_loop), and the uploads and loss read-backs
        # it made (counted for the tests: once per data, once per call)
        self._data = None
        self.transfers = {"data": 0, "losses": 0}
        # one call at a time: calls share device buffers
        # (the model's lock: one for the model and its backend)
        self._lock = getattr(model, "lock", None) or threading.RLock()

    def _compile(self):
        self.compiled = CompiledModule(self.model, self.target, print_model, self.cache_dir,
                                       key_extra=("matmul", self._matmul_option))  # one module per choice

    def add_programs(self):
        """Compile the module again after programs were added to ``model.programs`` (the
        ``apply`` program of :mod:`graphnn.distributed`); parameters and state stay on the
        device as they are (their layout does not depend on the programs)."""
        with self._lock:
            if set(self.model.programs) <= set(self.compiled.meta):
                return
            self._compile()
            self._views.clear()
            self._launches.clear()
            self._loops.clear()
            self._builds.clear()

    def _buffers(self, name, batch):
        """Device views of every buffer of a program at this batch size (made once)."""
        key = (name, batch)
        if key in self._views:
            self._views.move_to_end(key)
            return self._views[key]
        while len(self._views) >= MAX_PLANS:
            old, _ = self._views.popitem(last=False)
            self._launches.pop(old, None)
            if old[0] == "step":
                self._loops.pop(old[1], None)
        const, per_n = self.compiled.meta[name]["work"]
        d_work = self.cuda.device_array(const + per_n * batch, dtype=self.model.dtype)
        arrays = {"params": self.d_params, "state": self.d_state, "hyper": self.d_hyper, "work": d_work}
        views, feeds = self._views_on(name, batch, arrays)
        self._views[key] = (views, feeds, arrays)
        return self._views[key]

    def _views_on(self, name, batch, arrays):
        """({buffer: device view}, {feed: (buffer, device array)}) of program ``name`` at this
        batch size over the flat ``arrays`` (params, state, hyper, work)."""
        meta = self.compiled.meta[name]
        views = {}
        for buf, (array, offset, size, shape) in meta["slots"].items():
            start = offset[0] + offset[1] * batch
            stop = start + size[0] + size[1] * batch
            full = tuple(batch if d is None else d for d in shape)
            view = arrays[array][start:stop]
            views[buf] = view.reshape(full) if full else view
        feeds = {}
        for buf, node_name in meta["feed_buffers"].items():
            shape = meta["feed_shapes"][buf]
            full = tuple(batch if d is None else d for d in shape)
            feeds[node_name] = (buf, self.cuda.device_array(full, dtype=self.model.dtype))
            views[buf] = feeds[node_name][1]
        for cname in meta["consts"]:
            views[cname] = self.cuda.to_device(getattr(self.compiled.module, f"_CONST_{cname}"), stream=self.stream)
        return views, feeds

    def run(self, name, feeds, batch):
        with self._lock:
            if batch == 0:
                return self._run_empty(name, feeds)
            if not self.wait:
                build = self._build(name)
                if build.stage == "reference":
                    return self._run_reference(build, name, feeds, batch)
            self._device_current()
            return self._run(name, feeds, batch)

    # -- wait=False: the reference runs while the kernels compile -------------------------

    def _build(self, name):
        build = self._builds.get(name)
        if build is None:
            build = self._builds[name] = CudaBuild(self, name)
        return build

    def prepare(self, name, batch):
        """Start compiling program ``name``'s kernels in the background (``wait=False``) and
        return its :class:`CudaBuild`; ``fit`` calls this before its first step. With
        ``wait=True`` nothing starts here (None): the first call compiles as it launches."""
        if self.wait:
            return None
        with self._lock:
            build = self._build(name)
        build.start()
        return build

    def status(self):
        """{program: "reference" or "compiled"} for the programs a background build was
        started for (``wait=False``); with ``wait=True`` every program is compiled when called."""
        if self.wait:
            return {name: "compiled" for name in self.model.programs}
        return {name: b.stage for name, b in self._builds.items() if b.started}

    def wait_compiled(self, names=None):
        """Finish the background builds of ``names`` (default: every one started)."""
        for name, b in list(self._builds.items()):
            if (names is None and b.started) or (names is not None and name in names):
                b.wait()

    def _run_reference(self, build, name, feeds, batch):
        """The program on the NumPy reference executor, on the model's host arrays, while its
        kernels compile; the device's copies are brought up to date by the next device call."""
        from .backends import ReferenceBackend
        self.refresh_host()         # a step ran on the device since the host arrays were read
        host = {k: device_to_host(v) if hasattr(v, "__cuda_array_interface__") else v for k, v in feeds.items()}
        out = ReferenceBackend(self.model).run(name, host, batch)
        if self.model.programs[name].updates:
            self.device_stale = True
        build.start()       # after the first result, as on the CPU
        return out

    def _device_current(self):
        """Upload the host's parameters and state if the reference changed them last."""
        if self.device_stale:
            m = self.model
            self.d_params.copy_to_device(_pack(_plain(m._params), m.dtype), stream=self.stream)
            self.d_state.copy_to_device(_pack(_plain(m._state), m.dtype), stream=self.stream)
            self.launcher.synchronize()
            self.device_stale = False

    def warm(self, name):
        """Compile, or load from numba-cuda's disk cache, every kernel program ``name``
        launches, by running the program once on scratch buffers of ``SCRATCH_BATCH`` rows
        (copies of the parameters, state and hyper-parameters, zero feeds: the model's own
        buffers are not touched; matrix products that cuBLAS makes are left out, they
        compile nothing). The kernels get the argument types the model's
        calls will give them, so those find them compiled. Returns how many kernels were
        compiled rather than loaded (0 where numba keeps no counts: the simulator)."""
        m = self.model
        cuda, module, dtype = self.cuda, self.compiled.module, m.dtype
        const, per_n = self.compiled.meta[name]["work"]
        hyper = np.zeros(self.d_hyper.size, dtype=dtype)
        try:        # the optimizer's values and t = 1: no 1 / (1 - beta^0) in Adam's scratch step
            values = m._hyper(t=1) if m.optimizer is not None else {}
        except Exception:
            values = {}
        for k, h in enumerate(self.compiled.hyper_order):
            hyper[k] = values.get(h, 0.0)
        # copies of the model's values (a scratch step on them makes no infinities or NaNs that
        # zeros would: log(0), x / 0), read as they are (a torn read does no harm here)
        arrays = {"params": cuda.to_device(_pack(_plain(m._params), dtype)),
                  "state": cuda.to_device(_pack(_plain(m._state), dtype)),
                  "hyper": cuda.to_device(hyper),
                  "work": cuda.to_device(np.zeros(const + per_n * SCRATCH_BATCH, dtype=dtype))}
        views, feeds = self._views_on(name, SCRATCH_BATCH, arrays)
        for _, d_feed in feeds.values():        # zeros, not whatever the memory held
            if d_feed.size:
                d_feed.copy_to_device(np.zeros(d_feed.shape, dtype=dtype))
        gemm = None if self.launcher.gemm is None else (lambda *args: (lambda: None))
        with _BIND_LOCK:
            saved = module._STREAM, module._GEMM
            module._STREAM, module._GEMM = 0, gemm
            try:
                launches = getattr(module, name)(views, SCRATCH_BATCH)
            finally:
                module._STREAM, module._GEMM = saved
        kernels = [v for v in vars(module).values() if hasattr(v, "stats")]

        def misses():
            return sum(sum(k.stats.cache_misses.values()) for k in kernels)
        if name == "step" and self.compiled.meta["step"]["outputs"].get("loss") is not None:
            launches += self._loop_warm_launches(dtype)
        before = misses()
        for launch in launches:
            disk.repairing_numba_cache(launch)
        cuda.synchronize()
        return misses() - before

    def _loop_warm_launches(self, dtype):
        """The training loop's own kernels (gather, copy a draw, record the loss) launched on
        one-element scratch arrays of the types the loop gives them."""
        cuda, kernels = self.cuda, _loop_kernels(self.cuda)
        rows, values = cuda.to_device(np.zeros((1, 1), dtype=dtype)), cuda.to_device(np.zeros(1, dtype=dtype))
        order, counter = cuda.to_device(np.zeros(1, dtype=np.int64)), cuda.to_device(np.zeros(1, dtype=np.int64))
        losses = cuda.to_device(np.zeros(1, dtype=np.float64))
        return [lambda: kernels.gather[1, 1, 0](rows, order, counter, cuda.to_device(np.zeros((1, 1), dtype=dtype))),
                lambda: kernels.copy_row[1, 1, 0](rows, counter, cuda.to_device(np.zeros(1, dtype=dtype))),
                lambda: kernels.record[1, 1, 0](values, 0, losses, counter, values, -1)]

    def _run_empty(self, name, feeds):
        """A batch of 0 rows has nothing to launch: the reference's values, alike on every
        target (a sum over the rows 0, a mean or max NaN), from the parameters on the device."""
        from .backends import ReferenceBackend
        self.sync_to_host()
        host = {k: v.copy_to_host() if hasattr(v, "copy_to_host") else v for k, v in feeds.items()}
        return ReferenceBackend(self.model).run(name, host, 0)

    def _plan(self, name, batch, views):
        """The bound launches of a program at this batch size (made once per buffer set)."""
        plan = self._launches.get((name, batch))
        if plan is None:
            module = self.compiled.module
            plan = self._launches[(name, batch)] = Plan(self.launcher.bind(
                module, lambda: getattr(module, name)(views, batch)))
        return plan

    def _run(self, name, feeds, batch):
        views, feed_bufs, arrays = self._buffers(name, batch)
        stream = self.stream
        for k, h in enumerate(self.compiled.hyper_order):
            if h in feeds:
                self.hyper[k] = feeds[h]
        if self.compiled.hyper_order:
            self.d_hyper.copy_to_device(self.hyper, stream=stream)
        if stream != 0 and any(hasattr(feeds[n], "__cuda_array_interface__") for n in feed_bufs):
            # a device feed may still be written by work on the default stream, which this
            # model's own stream does not wait for: wait for it before copying from it
            self.cuda.default_stream().synchronize()
        for node_name, (_, d_array) in feed_bufs.items():
            value = feeds[node_name]
            if not hasattr(value, "__cuda_array_interface__"):
                value = np.ascontiguousarray(value, dtype=self.model.dtype)
            elif not getattr(value, "__cuda_memory__", False):
                # another library's device array (CuPy, PyTorch): numba copies device to device
                # only from its own arrays, and would take this one for host memory
                value = self.cuda.as_cuda_array(value)
            try:
                d_array.copy_to_device(value, stream=stream)
            except (ValueError, TypeError) as exc:   # a strided device array (a slice, a transpose)
                raise FeedError(f"feed {node_name!r}: a device array is copied as it is laid out, "
                                f"and this one cannot be ({exc}); pass a C-contiguous array "
                                f"(cupy.ascontiguousarray) of shape {tuple(d_array.shape)}") from None
        self.launcher.run(self._plan(name, batch, views))
        if name in ("step", "apply"):      # the programs that write parameters and state
            self.host_stale = True
        out = {}
        for oname, (array, offset, size, shape) in self.compiled.meta[name]["outputs"].items():
            if array == "const":
                out[oname] = np.asarray(offset, dtype=self.model.dtype)
                continue
            if array == "feed":           # an input returned as fed
                value = feeds[offset]
                out[oname] = (device_to_host(value) if hasattr(value, "__cuda_array_interface__")
                              else np.array(value, dtype=self.model.dtype))
                continue
            start = offset[0] + offset[1] * batch
            stop = start + size[0] + size[1] * batch
            full = tuple(batch if d is None else d for d in shape)
            out[oname] = arrays[array][start:stop].copy_to_host(stream=stream).reshape(full)
        self.launcher.synchronize()
        return out

    def training_loop(self, batch, force=False):
        """Steps on full batches of ``batch`` rows with the data on the device, as the CPU's
        compiled loop: ``loop(data, drawn, order, start, steps, t0, hyper) -> losses``.

        The training data go to the device once per ``data`` (one ``fit``, one
        ``train_steps`` call) and stay there. Each step gathers its rows on the device through
        the order (the permutation the model's generator drew, uploaded once per call),
        launches the step's kernels, advances the step count on the device and keeps its loss
        there: no transfer and no wait per step. The step's position is itself on the device
        (a counter its last kernel advances), so every step is the same launch sequence: with
        CUDA graphs it is captured once and each step is one graph launch. The losses come
        back once per call, which ``fit`` makes every few steps (for its progress bar and
        callbacks). Random inputs (dropout masks, noise) are drawn on the host as a step draws
        them, for all the call's steps at once, and uploaded in one transfer. ``force`` is the
        CPU's (it compiles its loop only when asked or when it pays); here the loop is always
        ready."""
        meta = self.compiled.meta["step"]
        loss = meta["outputs"].get("loss")
        if loss is None or loss[0] not in ("params", "state", "work"):
            return None     # a loss that is not computed on the device (a constant): step by step
        if not self.wait:
            with self._lock:
                build = self._build("step")
            if build.stage == "reference":
                build.start()
                return None     # step by step (on the reference) until the kernels are ready
        kernels = _loop_kernels(self.cuda)
        t_name = hyper_name("t")
        t_index = self.compiled.hyper_order.index(t_name) if t_name in self.compiled.hyper_order else None
        inputs = self.model.graph.inputs
        stream, dtype = self.stream, self.model.dtype

        def loop(data, drawn, order, start, steps, t0, hyper, in_order=False):
            with self._lock:     # in_order: the rows are gathered on the device either way
                self._device_current()
                views, feed_bufs, arrays = self._buffers("step", batch)
                step_plan = self._plan("step", batch, views)
                resident = self._resident(data, inputs)
                lp = self._loops.get(batch)
                need = (steps, tuple(sorted((k, np.shape(v)[1:]) for k, v in drawn.items())),
                        tuple(sorted((k, id(v)) for k, v in resident.items())))
                if lp is None or lp.steps < steps or lp.shape_key != need[1:]:
                    # more steps than the buffers hold: double them; new data alone: same size
                    capacity = steps if lp is None else max(steps, 2 * lp.steps) if steps > lp.steps else lp.steps
                    lp = self._loops[batch] = self._loop_plan(
                        kernels, batch, capacity, need[1:], views,
                        feed_bufs, arrays, loss, t_index, resident, drawn, data, step_plan)
                for node_name, (_, d_feed) in feed_bufs.items():
                    if node_name not in resident and node_name not in drawn and node_name in data:
                        # no batch axis: the same value every step
                        d_feed.copy_to_device(np.ascontiguousarray(data[node_name], dtype=dtype), stream=stream)
                for node_name, d_drawn in lp.drawn.items():
                    stacked = np.ascontiguousarray(drawn[node_name], dtype=dtype).reshape(steps, -1)
                    d_drawn[:steps].copy_to_device(stacked, stream=stream)
                for k, h in enumerate(self.compiled.hyper_order):
                    if h in hyper:
                        self.hyper[k] = hyper[h]
                if t_index is not None:
                    self.hyper[t_index] = t0 + 1
                if self.compiled.hyper_order:
                    self.d_hyper.copy_to_device(self.hyper, stream=stream)
                rows = np.ascontiguousarray(order[start:start + steps * batch], dtype=np.int64)
                if rows.size:
                    lp.order[:rows.size].copy_to_device(rows, stream=stream)
                lp.counter.copy_to_device(np.zeros(1, dtype=np.int64), stream=stream)
                for _ in range(steps):
                    self.launcher.run(lp.plan)
                self.host_stale = True
                if t_index is not None:
                    self.hyper[t_index] = t0 + steps
                self.transfers["losses"] += 1
                losses = lp.losses[:max(steps, 1)].copy_to_host(stream=stream)
                self.launcher.synchronize()
                return losses[:steps]
        return loop

    def _loop_plan(self, kernels, batch, capacity, shape_key, views, feed_bufs, arrays, loss, t_index,
                   resident, drawn, data, step_plan):
        """The device buffers of a training loop for up to ``capacity`` steps, and the one
        step's launch sequence over them: gather the rows, copy the step's draws, the step's
        own launches, record the loss and advance the counters."""
        cuda, stream = self.cuda, self.stream
        lp = LoopPlan()
        lp.steps, lp.shape_key = capacity, shape_key
        lp.order = cuda.device_array(max(capacity * batch, 1), dtype=np.int64, stream=stream)
        lp.losses = cuda.device_array(max(capacity, 1), dtype=np.float64, stream=stream)
        lp.counter = cuda.device_array(1, dtype=np.int64, stream=stream)
        lp.drawn = {}
        launches = []
        module = self.compiled.module
        blocks, threads, configure = module._blocks, module.THREADS, module._configure
        for node_name, (_, d_feed) in feed_bufs.items():
            if node_name in resident:
                dst = d_feed.reshape(batch, -1)
                launch = configure(kernels.gather, blocks(dst.size), threads, stream)
                launches.append(_bound(launch, resident[node_name], lp.order, lp.counter, dst))
            elif node_name in drawn:
                dst = d_feed.reshape(-1) if d_feed.ndim else d_feed.reshape(1)
                src = lp.drawn[node_name] = cuda.device_array((capacity, dst.size), dtype=self.model.dtype,
                                                              stream=stream)
                launch = configure(kernels.copy_row, blocks(dst.size), threads, stream)
                launches.append(_bound(launch, src, lp.counter, dst))
            elif node_name not in data:
                raise TargetError(f"the training loop of graph {self.model.graph.name!r} has no "
                                  f"value for input {node_name!r}")
        launches += step_plan.launches
        array, offset, _, _ = loss
        record = configure(kernels.record, 1, 1, stream)
        launches.append(_bound(record, arrays[array], offset[0] + offset[1] * batch, lp.losses, lp.counter,
                               self.d_hyper, -1 if t_index is None else t_index))
        lp.plan = Plan(launches)
        return lp

    def _resident(self, data, inputs):
        """{feed: its rows on the device as (rows, values per row)} for the batched feeds of
        ``data``, uploaded on the first call with this ``data`` and reused after."""
        key = tuple((k, id(v)) for k, v in data.items())
        if self._data is None or self._data[0] != key:
            self._data = None       # the previous data's device memory goes first
            uploaded = {}
            for k, v in data.items():
                if k in inputs and inputs[k].batched:
                    value = np.ascontiguousarray(v, dtype=self.model.dtype)
                    uploaded[k] = self.cuda.to_device(value.reshape(len(value), -1), stream=self.stream)
                    self.transfers["data"] += 1
            self._data = (key, data, uploaded)      # holds data: its ids stay theirs
        return self._data[2]

    def release_data(self):
        """Free the training data kept on the device (after a fit), and the loops bound to it."""
        self._data = None
        self._loops.clear()

    def read_param(self, name):
        if self.device_stale:       # the reference ran last: the host's array is the newer
            return dict.__getitem__(self.model._params, name)
        a, b, shape = self.param_slices[name]
        value = self.d_params[a:b].copy_to_host(stream=self.stream)
        self.launcher.synchronize()
        return value.reshape(shape)

    def write_param(self, name, value):
        a, b, shape = self.param_slices[name]
        if self.device_stale:       # into the newer host arrays; the next device call uploads them
            np.copyto(dict.__getitem__(self.model._params, name), np.asarray(value).reshape(shape))
            return
        self.refresh_host()     # the host arrays must be current before the write copies one of them
        host = self.d_params.copy_to_host(stream=self.stream)
        host[a:b] = np.asarray(value, dtype=self.model.dtype).reshape(-1)
        self.d_params.copy_to_device(host, stream=self.stream)
        self.launcher.synchronize()

    def write_state(self, name, value):
        if self.device_stale:       # the model wrote the host array; the next device call uploads it
            return
        self.refresh_host()
        a, b, shape = self.state_slices[name]
        host = self.d_state.copy_to_host(stream=self.stream)
        host[a:b] = np.asarray(value, dtype=self.model.dtype).reshape(-1)
        self.d_state.copy_to_device(host, stream=self.stream)
        self.launcher.synchronize()

    def refresh_host(self):
        """Copy parameters and state back into the model's host arrays if a step changed them
        on the device since the last copy (model.params/state call this when read)."""
        if self.host_stale:
            with self._lock:
                if self.host_stale:
                    self.sync_to_host()

    def sync_to_host(self):
        """Copy parameters and state back into the model's host arrays (unless the host's
        are the newer: the reference ran last, ``wait=False``)."""
        self.host_stale = False
        if self.device_stale:
            return
        params, state = self.model._params, self.model._state   # their plain storage: no refresh
        host = self.d_params.copy_to_host(stream=self.stream)
        self.launcher.synchronize()
        for k, (a, b, shape) in self.param_slices.items():
            dict.__getitem__(params, k)[...] = host[a:b].reshape(shape)
        host = self.d_state.copy_to_host(stream=self.stream)
        self.launcher.synchronize()
        for k, (a, b, shape) in self.state_slices.items():
            dict.__getitem__(state, k)[...] = host[a:b].reshape(shape)

    @property
    def source(self):
        return self.compiled.source


def _import_cupy():
    try:
        import cupy
        return cupy
    except Exception:       # not installed, or a CuPy that cannot load its CUDA libraries
        return None


def _cupy_on_a_gpu(cupy):
    """True when CuPy imported and can run on a device numba sees: not under numba's CUDA
    simulator (whose arrays CuPy cannot read), and with a driver CuPy can use."""
    from numba import config
    if cupy is None or config.ENABLE_CUDASIM:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:       # e.g. a driver older than CuPy's CUDA runtime
        return False


class CudaBuild:
    """The background compile of one program's kernels (``wait=False``): ``stage`` is
    "reference" (calls run on the NumPy reference executor) until the kernels are compiled or
    loaded, then "compiled". Runs on the CPU backend's build thread (one at a time, finished
    at interpreter exit). A build that fails hands over anyway: the next call compiles its
    kernels as it launches them, as with ``wait=True``, and raises what is really wrong."""

    def __init__(self, backend, name):
        self.backend, self.name = backend, name
        self.stage = "reference"
        self.started = False
        self.error = None           # why the background run failed (the calls then compile)
        self.timings = {}
        self.cache_hit, self.new_kernels = False, 0
        self.done = threading.Event()

    def start(self):
        if self.started:
            return
        self.started = True
        from .cpu import WORKER
        WORKER.submit(self._run)

    def _run(self):
        started = time.perf_counter()
        try:
            self.new_kernels = self.backend.warm(self.name)
            self.cache_hit = self.new_kernels == 0
        except Exception as exc:
            self.error = exc
        finally:
            self.timings["kernels"] = time.perf_counter() - started
            self.stage = "compiled"
            self.done.set()

    def wait(self):
        if not self.started:
            self.start()
        self.done.wait()


class Plan:
    """A launch sequence (bound kernel launches, cuBLAS calls), and its CUDA graph once captured."""

    def __init__(self, launches):
        self.launches = launches
        self.graph = None
        self.runs = 0


class LoopPlan:
    """A training loop's device buffers (the order, the draws, the losses, the step counter)
    and the plan of one of its steps."""


def _bound(launch, *args):
    return lambda: launch(*args)


class Launcher:
    """Where a CUDA model's work goes.

    With CuPy on a GPU, every launch and copy of the model goes on a stream of its own, and
    a launch sequence that ran once eagerly (compiling and loading its kernels) is captured
    into a CUDA graph: from then on the sequence is one graph launch, not one Python call
    per kernel. Matrix products then call cuBLAS (the library CuPy brought) on a handle of
    the model's own, which a capture can record (``runtime/cublas.py``). Without CuPy (or
    under numba's simulator, or with ``graphs=False``) the launches are made one by one, on
    the default stream when CuPy is missing. A capture that fails (``capture_error`` says
    why) leaves that plan to eager launches: the results are the same either way."""

    def __init__(self, cuda, cupy, graphs=True, cublas=True):
        self.cuda = cuda
        self.cupy = cupy if _cupy_on_a_gpu(cupy) else None
        self.graphs = bool(graphs) and self.cupy is not None
        self.capture_error = self.cublas_error = None
        self.captured = 0
        self.gemm = None
        if self.cupy is not None:
            self.cp_stream = self.cupy.cuda.Stream(non_blocking=True)
            self.stream = cuda.external_stream(self.cp_stream.ptr)
            if cublas:
                from .cublas import Cublas, agrees, cupy_gemm
                try:
                    self.gemm = Cublas(cuda, self.stream, self.cp_stream.ptr).bind
                    if not agrees(self.gemm, cuda, self.stream, self.synchronize):
                        raise RuntimeError("its products disagreed with numpy's")
                except Exception as exc:
                    # the direct binding is not usable here: cuBLAS through cupy.matmul, which
                    # a capture cannot record (plans with products then launch eagerly)
                    self.cublas_error = f"direct cuBLAS binding not used: {type(exc).__name__}: {exc}"
                    self.gemm = cupy_gemm(self.cupy, self.cp_stream)
        else:
            self.cp_stream, self.stream = None, 0

    def bind(self, module, make):
        """Bind a program's launches (``make()``, from the generated ``module``) to this
        launcher's stream: the module reads ``_STREAM`` while it binds them, and a module
        can be shared by models (the disk cache), each with its own stream."""
        with _BIND_LOCK:
            saved = module._STREAM, module._GEMM
            module._STREAM, module._GEMM = self.stream, self.gemm
            try:
                return make()
            finally:
                module._STREAM, module._GEMM = saved

    def run(self, plan):
        if plan.graph is not None:
            plan.graph.launch(stream=self.cp_stream)
            return
        if plan.runs:
            for launch in plan.launches:
                launch()
        else:
            # the first run compiles each kernel, or loads it from numba-cuda's disk cache: a
            # damaged cache file is set aside and that launch alone is tried again (the load
            # fails before the kernel is queued, and the launches before it are not repeated)
            for launch in plan.launches:
                disk.repairing_numba_cache(launch)
        plan.runs += 1
        if self.graphs and plan.runs == 1:
            plan.graph = self.capture(plan.launches)

    def capture(self, launches):
        """The launches captured as a CUDA graph (they do not run), or None if capture failed."""
        s = self.cp_stream
        try:
            # numba frees dropped device arrays in batches: a free inside the capture would
            # invalidate it, so frees wait until the capture ends
            with self.cuda.defer_cleanup():
                s.begin_capture()
                try:
                    for launch in launches:
                        launch()
                finally:
                    graph = s.end_capture()
        except Exception as exc:       # e.g. a driver without graph support: launch one by one
            self.capture_error = f"{type(exc).__name__}: {exc}"
            return None
        self.captured += 1
        return graph

    def synchronize(self):
        if self.cp_stream is not None:
            self.cp_stream.synchronize()


_BIND_LOCK = threading.Lock()


_LOOP_KERNELS = {}
cuda = None     # numba.cuda once _loop_kernels ran: a module global, as the simulator expects


def _gather(src, order, counter, dst):
    # the rows of step counter[0]: order[step * batch + r] for each row r of the batch
    i = cuda.grid(1)
    width = dst.shape[1]
    if i < dst.shape[0] * width:
        r = i // width
        dst[r, i - r * width] = src[order[counter[0] * dst.shape[0] + r], i - r * width]


def _copy_row(src, counter, dst):
    i = cuda.grid(1)
    if i < dst.shape[0]:
        dst[i] = src[counter[0], i]


def _record(values, at, losses, counter, hyper, t_index):
    losses[counter[0]] = values[at]
    counter[0] += 1
    if t_index >= 0:
        hyper[t_index] += 1


def _loop_kernels(module):
    """The training loop's own kernels (gathering rows, copying a step's draws, recording the
    loss and advancing the step count), compiled on first use."""
    global cuda
    if module not in _LOOP_KERNELS:
        cuda = module

        class Kernels:
            gather = _cached_kernel(module, _gather)
            copy_row = _cached_kernel(module, _copy_row)
            record = _cached_kernel(module, _record)
        _LOOP_KERNELS[module] = Kernels
    return _LOOP_KERNELS[module]


def _cached_kernel(module, fn):
    """``fn`` as a kernel whose machine code numba caches on disk (numba's own cache folders:
    these are graphnn's code, not generated); compiled in each process where numba finds no
    folder it can write."""
    try:
        return module.jit(cache=True)(fn)
    except RuntimeError:        # "cannot cache function ...: no locator available"
        return module.jit(fn)


def _slices(arrays):
    out, offset = {}, 0
    for k, a in arrays.items():
        size = max(a.size, 1)
        out[k] = (offset, offset + a.size, a.shape)
        offset += size
    return out


def _plain(buffers):
    """The arrays of ``model.params`` or ``model.state`` as stored: no copy from the device."""
    return {k: dict.__getitem__(buffers, k) for k in dict.keys(buffers)}


def _pack(arrays, dtype):
    total = sum(max(a.size, 1) for a in arrays.values())
    flat = np.zeros(max(total, 1), dtype=dtype)
    offset = 0
    for a in arrays.values():
        flat[offset:offset + a.size] = a.reshape(-1)
        offset += max(a.size, 1)
    return flat
