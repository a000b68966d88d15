"""The CUDA backend: generated numba.cuda kernels, device-resident training.

Parameters, optimizer state, hyper-parameters and scratch space live on the
device in flat arrays; every buffer is a device view made once per batch size.
Per call only the feeds go to the device and only the requested outputs come
back (the loss of a training step is one scalar).
"""
import threading
from collections import OrderedDict

import numpy as np

from ..codegen.cuda import CudaModulePrinter, print_model
from ..codegen.layout import program_meta
from ..errors import ArgumentError, TargetError
from ..lower import lower
from . import cache as disk
from ..lower.program import hyper_name, program_signature

MAX_PLANS = 8              # (program, batch size) device buffer sets kept


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
        self.module = disk.import_module(path)
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
    return cuda


class CUDABackend:
    target = "cuda"

    def __init__(self, model, cache_dir=None, fast_math=None, matmul="auto"):
        if fast_math:
            raise TargetError("fast_math is a CPU option: the CUDA target prints libm calls, which "
                              "numba.cuda maps to the device's own math library")
        self.cuda = _cuda()
        self.model = model
        if matmul not in ("auto", "tiled", "cublas"):
            raise ArgumentError(f"matmul must be 'auto', 'tiled' or 'cublas', got {matmul!r}")
        self.cache_dir, self._matmul_option = cache_dir, matmul
        self._compile()
        have_cupy = _cupy_on_a_gpu(self.compiled.module._cupy)
        if matmul == "cublas" and not have_cupy:
            raise TargetError("matmul='cublas' needs CuPy and a GPU it can use (pip install "
                              "\"graphnn[cuda]\", which installs cupy-cuda12x); the CUDA simulator "
                              "runs the tiled kernels: use matmul='auto' or 'tiled'")
        # cuBLAS when CuPy works on this GPU (measured faster on H200, docs/cuda.md), else tiled
        self.matmul = "cublas" if matmul == "cublas" or (matmul == "auto" and have_cupy) else "tiled"
        self.compiled.module.USE_CUBLAS = self.matmul == "cublas"
        m = model
        self.param_slices = _slices(m.params)
        self.state_slices = _slices(m.state)
        self.d_params = self.cuda.to_device(_pack(m.params, m.dtype))
        self.d_state = self.cuda.to_device(_pack(m.state, m.dtype))
        self.hyper = np.zeros(max(len(self.compiled.hyper_order), 1), dtype=m.dtype)
        self.d_hyper = self.cuda.to_device(self.hyper)
        # (program, batch) -> device buffers and launches; the least recently used beyond
        # MAX_PLANS are dropped, so device memory does not grow with every batch size used
        self._views = OrderedDict()
        self._launches = {}
        # the device's parameters and state are newer than the model's host arrays (after a
        # step): model.params/state copy them back when next read (refresh_host)
        self.host_stale = False
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
            self.compiled.module.USE_CUBLAS = self.matmul == "cublas"
            self._views.clear()
            self._launches.clear()

    def _buffers(self, name, batch):
        """Device views of every buffer of a program at this batch size (made once)."""
        key = (name, batch)
        if key in self._views:
            self._views.move_to_end(key)
            return self._views[key]
        while len(self._views) >= MAX_PLANS:
            old, _ = self._views.popitem(last=False)
            self._launches.pop(old, None)
        meta = self.compiled.meta[name]
        const, per_n = meta["work"]
        d_work = self.cuda.device_array(const + per_n * batch, dtype=self.model.dtype)
        arrays = {"params": self.d_params, "state": self.d_state, "hyper": self.d_hyper, "work": d_work}
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
            views[cname] = self.cuda.to_device(getattr(self.compiled.module, f"_CONST_{cname}"))
        self._views[key] = (views, feeds, arrays)
        return self._views[key]

    def run(self, name, feeds, batch):
        with self._lock:
            if batch == 0:
                return self._run_empty(name, feeds)
            return self._run(name, feeds, batch)

    def _run_empty(self, name, feeds):
        """A batch of 0 rows has nothing to launch: the reference's values, alike on every
        target (a sum over the rows 0, a mean or max NaN), from the parameters on the device."""
        from .backends import ReferenceBackend
        self.sync_to_host()
        host = {k: v.copy_to_host() if hasattr(v, "copy_to_host") else v for k, v in feeds.items()}
        return ReferenceBackend(self.model).run(name, host, 0)

    def _run(self, name, feeds, batch):
        views, feed_bufs, arrays = self._buffers(name, batch)
        for k, h in enumerate(self.compiled.hyper_order):
            if h in feeds:
                self.hyper[k] = feeds[h]
        if self.compiled.hyper_order:
            self.d_hyper.copy_to_device(self.hyper)
        for node_name, (_, d_array) in feed_bufs.items():
            value = feeds[node_name]
            if not hasattr(value, "__cuda_array_interface__"):
                value = np.ascontiguousarray(value, dtype=self.model.dtype)
            d_array.copy_to_device(value)
        launches = self._launches.get((name, batch))
        if launches is None:
            launches = self._launches[(name, batch)] = getattr(self.compiled.module, name)(views, batch)
        for launch in launches:
            launch()
        if name in ("step", "apply"):      # the programs that write parameters and state
            self.host_stale = True
        out = {}
        for oname, (array, offset, size, shape) in self.compiled.meta[name]["outputs"].items():
            if array == "const":
                out[oname] = np.asarray(offset, dtype=self.model.dtype)
                continue
            if array == "feed":           # an input returned as fed
                value = feeds[offset]
                out[oname] = (value.copy_to_host() if hasattr(value, "copy_to_host")
                              else np.array(value, dtype=self.model.dtype))
                continue
            start = offset[0] + offset[1] * batch
            stop = start + size[0] + size[1] * batch
            full = tuple(batch if d is None else d for d in shape)
            out[oname] = arrays[array][start:stop].copy_to_host().reshape(full)
        return out

    def training_loop(self, batch, force=False):
        """Steps on full batches of ``batch`` rows with the data on the device, as the CPU's
        compiled loop: ``loop(data, drawn, order, start, steps, t0, hyper) -> losses``.

        The training data go to the device once per ``data`` (one ``fit``, one
        ``train_steps`` call) and stay there. Each step gathers its rows on the device through
        the order (the permutation the model's generator drew, uploaded once per call),
        launches the step's kernels, advances the step count on the device and keeps its loss
        there: no transfer and no wait per step. The losses come back once per call, which
        ``fit`` makes every few steps (for its progress bar and callbacks). Random inputs
        (dropout masks, noise) are drawn on the host as a step draws them, for all the call's
        steps at once, and uploaded in one transfer. ``force`` is the CPU's (it compiles its
        loop only when asked or when it pays); here the loop is always ready."""
        meta = self.compiled.meta["step"]
        loss = meta["outputs"].get("loss")
        if loss is None or loss[0] not in ("params", "state", "work"):
            return None     # a loss that is not computed on the device (a constant): step by step
        kernels = _loop_kernels(self.cuda)
        t_name = hyper_name("t")
        t_index = self.compiled.hyper_order.index(t_name) if t_name in self.compiled.hyper_order else None
        inputs = self.model.graph.inputs

        def loop(data, drawn, order, start, steps, t0, hyper, in_order=False):
            with self._lock:     # in_order: the rows are gathered on the device either way
                views, feed_bufs, arrays = self._buffers("step", batch)
                launches = self._launches.get(("step", batch))
                if launches is None:
                    launches = self._launches[("step", batch)] = self.compiled.module.step(views, batch)
                resident = self._resident(data, inputs)
                rows, copies = [], []
                for node_name, (_, d_feed) in feed_bufs.items():
                    if node_name in resident:
                        rows.append((resident[node_name], d_feed.reshape(batch, -1)))
                    elif node_name in data:     # no batch axis: the same value every step
                        d_feed.copy_to_device(np.ascontiguousarray(data[node_name], dtype=self.model.dtype))
                    elif node_name in drawn:
                        stacked = np.ascontiguousarray(drawn[node_name], dtype=self.model.dtype)
                        copies.append((self.cuda.to_device(stacked.reshape(steps, -1)),
                                       d_feed.reshape(-1) if d_feed.ndim else d_feed.reshape(1)))
                    else:
                        raise TargetError(f"the training loop of graph {self.model.graph.name!r} has no "
                                          f"value for input {node_name!r}")
                for k, h in enumerate(self.compiled.hyper_order):
                    if h in hyper:
                        self.hyper[k] = hyper[h]
                if t_index is not None:
                    self.hyper[t_index] = t0 + 1
                if self.compiled.hyper_order:
                    self.d_hyper.copy_to_device(self.hyper)
                d_order = self.cuda.to_device(np.ascontiguousarray(order[start:start + steps * batch],
                                                                   dtype=np.int64))
                d_losses = self.cuda.device_array(max(steps, 1), dtype=np.float64)
                array, offset, _, _ = loss
                loss_at = offset[0] + offset[1] * batch
                loss_array = arrays[array]
                blocks, threads = self.compiled.module._blocks, self.compiled.module.THREADS
                for step in range(steps):
                    for src, dst in rows:
                        kernels.gather[blocks(dst.size), threads](src, d_order, step * batch, dst)
                    for src, dst in copies:
                        kernels.copy_row[blocks(dst.size), threads](src, step, dst)
                    for launch in launches:
                        launch()
                    kernels.record[1, 1](loss_array, loss_at, d_losses, step, self.d_hyper,
                                         -1 if t_index is None else t_index)
                self.host_stale = True
                if t_index is not None:
                    self.hyper[t_index] = t0 + steps
                self.transfers["losses"] += 1
                return d_losses.copy_to_host()[:steps]
        return loop

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
                    uploaded[k] = self.cuda.to_device(value.reshape(len(value), -1))
                    self.transfers["data"] += 1
            self._data = (key, data, uploaded)      # holds data: its ids stay theirs
        return self._data[2]

    def release_data(self):
        """Free the training data kept on the device (after a fit)."""
        self._data = None

    def read_param(self, name):
        a, b, shape = self.param_slices[name]
        return self.d_params[a:b].copy_to_host().reshape(shape)

    def write_param(self, name, value):
        self.refresh_host()     # the host arrays must be current before the write copies one of them
        a, b, shape = self.param_slices[name]
        host = self.d_params.copy_to_host()
        host[a:b] = np.asarray(value, dtype=self.model.dtype).reshape(-1)
        self.d_params.copy_to_device(host)

    def write_state(self, name, value):
        self.refresh_host()
        a, b, shape = self.state_slices[name]
        host = self.d_state.copy_to_host()
        host[a:b] = np.asarray(value, dtype=self.model.dtype).reshape(-1)
        self.d_state.copy_to_device(host)

    def refresh_host(self):
        """Copy parameters and state back into the model's host arrays if a step changed them
        on the device since the last copy (model.params/state call this when read)."""
        if self.host_stale:
            with self._lock:
                if self.host_stale:
                    self.sync_to_host()

    def sync_to_host(self):
        """Copy parameters and state back into the model's host arrays."""
        self.host_stale = False
        params, state = self.model._params, self.model._state   # their plain storage: no refresh
        host = self.d_params.copy_to_host()
        for k, (a, b, shape) in self.param_slices.items():
            dict.__getitem__(params, k)[...] = host[a:b].reshape(shape)
        host = self.d_state.copy_to_host()
        for k, (a, b, shape) in self.state_slices.items():
            dict.__getitem__(state, k)[...] = host[a:b].reshape(shape)

    @property
    def source(self):
        return self.compiled.source


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


_LOOP_KERNELS = {}
cuda = None     # numba.cuda once _loop_kernels ran: a module global, as the simulator expects


def _gather(src, order, first, dst):
    i = cuda.grid(1)
    width = dst.shape[1]
    if i < dst.shape[0] * width:
        r = i // width
        dst[r, i - r * width] = src[order[first + r], i - r * width]


def _copy_row(src, row, dst):
    i = cuda.grid(1)
    if i < dst.shape[0]:
        dst[i] = src[row, i]


def _record(values, at, losses, step, hyper, t_index):
    losses[step] = values[at]
    if t_index >= 0:
        hyper[t_index] += 1


def _loop_kernels(module):
    """The training loop's own kernels (gathering rows, copying a step's draws, recording the
    loss and advancing the step count), compiled on first use."""
    global cuda
    if module not in _LOOP_KERNELS:
        cuda = module

        class Kernels:
            gather = module.jit(_gather)
            copy_row = module.jit(_copy_row)
            record = module.jit(_record)
        _LOOP_KERNELS[module] = Kernels
    return _LOOP_KERNELS[module]


def _slices(arrays):
    out, offset = {}, 0
    for k, a in arrays.items():
        size = max(a.size, 1)
        out[k] = (offset, offset + a.size, a.shape)
        offset += size
    return out


def _pack(arrays, dtype):
    total = sum(max(a.size, 1) for a in arrays.values())
    flat = np.zeros(max(total, 1), dtype=dtype)
    offset = 0
    for a in arrays.values():
        flat[offset:offset + a.size] = a.reshape(-1)
        offset += max(a.size, 1)
    return flat
