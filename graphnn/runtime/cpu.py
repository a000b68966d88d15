"""The CPU backend: generated kernels, compiled when a program first runs, never in the way.

Each program (forward, gradients, step) is built on its first call, in
stages (:class:`ProgramBuild`):

1. *generate*: lower, print, and write the kernel and driver modules that
   the disk cache lacks (a kernel that any graph compiled before is reused);
2. *kernels*: every kernel is compiled or loaded from Numba's cache; a call
   is then a short Python loop over the compiled kernels, bound once per
   batch size to views of the flat arrays (:class:`BoundProgram`);
3. *compiled*: where that loop's per-kernel call overhead is a measurable
   share of a step (tiny layers), the driver is compiled too, in the
   background, and replaces the loop.

With ``wait=True`` the first call finishes stages 1-2 and then runs. With
``wait=False`` they run in a background thread and calls do not wait: until
the kernels are ready a call runs on the NumPy reference executor. Every
path updates the same parameter and optimizer-state arrays in place, so
switching between them is seamless.
"""
import atexit
import math
from collections import OrderedDict
import queue
import sys
import threading
import time
import warnings

import numpy as np

from ..codegen.cpu import CPUPrinter, driver_module_source, standalone_source
from ..lower import lower
from ..lower.target import run_passes
from . import cache as disk
from .backends import ReferenceBackend
from ..lower.program import hyper_name, program_signature

# Above this many elements per kernel, the parallel variant pays for its threads.
PARALLEL_THRESHOLD = 1 << 15
SCRATCH_BATCH = 2          # warm-up runs on scratch arrays of this many rows
CALL_COST = 0.3e-6         # seconds a Python call of a compiled kernel costs (measured ~0.27 us)
TIMED_CALLS = 5            # calls timed before deciding whether a compiled driver pays
DRIVER_PAYS = 0.05         # compile the driver when the loop's call overhead exceeds 5 % of a call
MAX_DRIVER_CALLS = 400     # a driver's compile grows with its calls (~5 ms each): longer ones keep the loop
# A driver that inlines a BLAS call cannot be cached by Numba: it compiles again in every process,
# and while it (then the training loop around it) compiles, it holds Numba's compiler lock, so the
# caller's own kernel compiles wait (a short fit of an 8-layer net: 10 s -> 53 s on 2 cores). Such a
# driver is compiled only once the call overhead it would have saved has reached its estimated
# compile time (driver and loop): at most twice the best choice, whatever the run's length.
DRIVER_BASE = 0.5          # seconds of an uncached driver's compile, plus DRIVER_PER_CALL per call
DRIVER_PER_CALL = 5e-3
MAX_PLANS = 8              # (program, batch size) plans kept; the least recently used go first
MAX_SPARES = 4             # work arrays a plan keeps for calls made while its arena is in use


# While a build runs in the background, the interpreter switches threads this often (seconds).
# A build reads many files (imports, the cache); each read lets the GIL go, and with the default
# 5 ms switch interval a busy main thread (steps on the reference executor) keeps it for 5 ms
# every time: a 0.9 s build took longer than a 6 s fit, which then never ran a compiled step.
BUILD_SWITCH_INTERVAL = 1e-4


class _Worker:
    """One background thread that runs build jobs in order.

    At interpreter exit the queue is dropped and the job in progress finishes,
    so no cache file is left half-written and what was compiled is kept."""

    def __init__(self):
        self.jobs = queue.Queue()
        self.thread = None
        self.closing = False
        self.busy = threading.Lock()
        self.interval = None          # the switch interval to restore when the queue empties
        self._interval_lock = threading.Lock()
        atexit.register(self.close)

    def submit(self, job):
        if self.thread is None or not self.thread.is_alive():
            _plain_numba_messages()
            self.thread = threading.Thread(target=self._loop, name="graphnn-compile", daemon=True)
            self.thread.start()
        with self._interval_lock:
            if self.interval is None:
                self.interval = sys.getswitchinterval()
                sys.setswitchinterval(min(self.interval, BUILD_SWITCH_INTERVAL))
        self.jobs.put(job)

    def _loop(self):
        while True:
            job = self.jobs.get()
            if not self.closing:
                with self.busy:
                    job()
            with self._interval_lock:
                if self.jobs.empty() and self.interval is not None:
                    sys.setswitchinterval(self.interval)
                    self.interval = None

    def close(self):
        self.closing = True
        with self.busy:   # wait for the job in progress
            pass


WORKER = _Worker()


def _plain_numba_messages():
    """Keep Numba's error formatting from swapping sys.stdout/sys.stderr (colorama) in a thread.

    graphnn/__init__.py asks for plain messages through Numba's own environment variable when
    it is imported first; when Numba was imported before graphnn, its colour shell is replaced
    by one that does nothing, before any compile runs in the background."""
    import numba.core.errors as errors
    if hasattr(errors, "ColorShell"):
        class _PlainShell:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False
        errors.ColorShell = _PlainShell


class BoundProgram:
    """A program's kernel calls bound to views of the flat arrays at one batch size.

    Calling it runs the kernels in order -- a Python loop over compiled
    functions, so it needs no compile of its own. Only feeds change between
    calls; every other argument is a view made here once."""

    def __init__(self, build, params, state, hyper, batch, work=None):
        meta, module = build.meta, build.module
        const, per_n = meta["work"]
        self.batch = batch
        need = const + per_n * batch
        # ``work``: an arena at least this long, shared with the program's other batch sizes
        self.work = np.zeros(need, dtype=params.dtype) if work is None else work[:need]
        arrays = {"params": params, "state": state, "hyper": hyper, "work": self.work}
        self.flat = arrays
        views = {}
        for buf, (array, offset, size, shape) in meta["slots"].items():
            start = offset[0] + offset[1] * batch
            stop = start + size[0] + size[1] * batch
            full = tuple(batch if d is None else d for d in shape)
            views[buf] = arrays[array][start:stop].reshape(full) if full else arrays[array][start:stop]
        for name in meta["consts"]:
            views[name] = getattr(module, f"_CONST_{name}")
        feed_position = {buf: k for k, buf in enumerate(meta["feed_buffers"])}
        self.calls = []
        for kernel, args, flat in meta["calls"]:
            fn = getattr(module, kernel)
            values = [views[a].reshape(-1) if pos in flat and a in views else views.get(a)
                      for pos, a in enumerate(args)] + [batch]
            feeds = tuple((pos, feed_position[a], pos in flat) for pos, a in enumerate(args)
                          if a in feed_position)
            self.calls.append((fn, tuple(values), feeds))
        self.views = views

    def __call__(self, *feeds):
        for fn, args, fed in self.calls:
            if fed:
                args = list(args)
                for pos, k, flat in fed:
                    args[pos] = feeds[k].reshape(-1) if flat else feeds[k]
            fn(*args)


class ProgramBuild:
    """The generated modules of one program and loop variant, built in stages."""

    def __init__(self, backend, name, parallel):
        self.backend, self.name, self.parallel = backend, name, parallel
        self.stage = "reference"          # what a call can run now: reference, kernels, compiled
        self.error = None
        self.module = self.driver = self.meta = self.path = None
        self.cache_hit = None             # True if the driver module came from the cache
        self.new_kernels = 0              # kernel modules this build wrote
        self.timings = {}                 # stage -> seconds
        self.started = False
        self.done = threading.Event()     # stages 1-2 finished (or failed)
        self.driver_job = None            # threading.Event of the driver compile, once asked for
        self.loop = None                  # the compiled training loop (step program), once built
        self.loop_job = None              # threading.Event of the loop's compile, once asked for
        self.rent = None                  # calls left before an uncacheable driver compiles
        self._cacheable = None
        self._lock = threading.Lock()

    @property
    def driver_cacheable(self):
        """False when a kernel of the program calls BLAS (np.dot): Numba cannot cache a driver
        that inlines it ("dynamic globals"), so it compiles again in every process."""
        if self._cacheable is None:
            folder = self.path.parent
            self._cacheable = not any("np.dot(" in disk.read_source(folder / f"{name}.py")
                                      for name in disk.imported_modules(self.path))
        return self._cacheable

    def driver_pays_now(self, calls):
        """Decided that the driver pays (see :func:`_driver_pays`): compile it now when Numba can
        cache it, else after enough calls to have paid for its compile (``self.rent``)."""
        if self.driver_cacheable:
            self.compile_driver(background=True)
            return
        cost = 2 * (DRIVER_BASE + DRIVER_PER_CALL * calls)     # the driver, then the training loop
        self.rent = max(1, math.ceil(cost / (calls * CALL_COST)))

    def count_call(self):
        """One call run without the driver: compile it once the rent is paid."""
        self.rent -= 1
        if self.rent <= 0:
            self.rent = None
            self.compile_driver(background=True)

    def start(self, background):
        """Build now (``background=False``) or queue the build; idempotent."""
        with self._lock:
            if self.started:
                return
            self.started = True
        if background:
            WORKER.submit(self.build)
        else:
            self.build()

    def build(self):
        try:
            t0 = time.perf_counter()
            self._generate()
            t1 = time.perf_counter()
            b = self.backend
            scratch = BoundProgram(self, b.params_flat.copy(), b.state_flat.copy(), b.hyper.copy(),
                                   SCRATCH_BATCH)
            # compiles or loads every kernel; a damaged Numba cache file is set aside and compiled again
            disk.repairing_numba_cache(lambda: scratch(*self._scratch_feeds()))
            self.stage = "kernels"
            self.timings.update(generate=t1 - t0, kernels=time.perf_counter() - t1)
        except BaseException as exc:  # surfaces on the next call of the program
            self.error = exc
        finally:
            self.done.set()

    def compile_driver(self, background):
        """Compile the driver function itself (stage 3); idempotent."""
        def compile_it():
            b = self.backend
            const, per_n = self.meta["work"]
            work = np.zeros(const + per_n * SCRATCH_BATCH, dtype=b.model.dtype)
            _compile_driver(self.driver, (*self._scratch_feeds(), b.params_flat.copy(),
                                          b.state_flat.copy(), b.hyper.copy(), work, SCRATCH_BATCH))
            self.stage = "compiled"
        self._optional_compile("driver", compile_it, background)

    def compile_loop(self, background):
        """Compile the training loop around the step's kernels; idempotent. ``self.loop`` is
        set when it is ready (it stays None if it cannot be compiled: steps then run one by
        one)."""
        if "train" not in (self.meta or {}):
            return

        def compile_it():
            b = self.backend
            loop = getattr(self.module, self.meta["train"]["function"])
            const, per_n = self.meta["work"]
            work = np.zeros(const + per_n * SCRATCH_BATCH, dtype=b.model.dtype)
            feeds, rows = loop_arrays(self.meta, dict(zip(self.meta["feeds"], self._scratch_feeds())),
                                      SCRATCH_BATCH, 1, b.model.dtype)
            loop(*feeds, np.zeros(SCRATCH_BATCH, dtype=np.int64), 0, 0, 0, False, np.zeros(1),
                 *rows, b.params_flat.copy(), b.state_flat.copy(), b.hyper.copy(), work)
            self.loop = loop
        self._optional_compile("loop", compile_it, background)

    def _optional_compile(self, what, compile_it, background):
        """Run ``compile_it`` once (``self.<what>_job`` is its Event), now or in the background.

        What it compiles is optional -- the kernel loop keeps running without it -- so an
        error is recorded in ``timings["<what>_error"]``, not raised."""
        with self._lock:
            if getattr(self, f"{what}_job") is not None:
                return
            done = threading.Event()
            setattr(self, f"{what}_job", done)

        def job():
            try:
                t0 = time.perf_counter()
                disk.repairing_numba_cache(compile_it)
                self.timings[what] = time.perf_counter() - t0
            except BaseException as exc:
                self.timings[f"{what}_error"] = repr(exc)
            finally:
                done.set()
        if background:
            WORKER.submit(job)
        else:
            job()

    def wait(self):
        self.start(background=False)
        self.done.wait()
        if self.error is not None:
            raise self.error
        if self.driver_job is not None:
            self.driver_job.wait()
        if self.loop_job is not None:
            self.loop_job.wait()

    def generate(self):
        """Stage 1 alone: write (or find) the program's modules and import them; compiles nothing."""
        if self.module is None:
            self._generate()
        return self.path

    def _generate(self):
        b = self.backend
        printer = b.printer(self.parallel)
        program = b.model.programs[self.name]
        key = disk.make_key("cpu", b.model.graph.name, printer.dtype, printer.fast_math, printer.variant,
                            b.orders, program_signature(program))
        disk.on_import_path(b.cache_dir)
        path = disk.lookup(key, b.cache_dir, prefix="graphnn_p_")
        if path is not None and not all(disk.lookup(name, b.cache_dir, prefix="")
                                        for name in disk.imported_modules(path)):
            path = None   # a kernel it imports is missing or fails its checksum: print it again
        self.cache_hit = path is not None
        module = None
        if path is not None:
            try:
                module = disk.import_module(path)
            except Exception:   # a kernel file it imports is missing or damaged: rebuild
                module = None
        if module is None:
            source = b.program_source(self.name, printer)
            helpers = b.helpers_module(printer)
            written = [k.module for k in source.kernels
                       if disk.store_module(k.module, k.module_source(helpers, printer.helper_names),
                                            b.cache_dir)]
            self.new_kernels = len(written)
            path = disk.store(key, driver_module_source(printer, source, helpers, b.title),
                              b.cache_dir, prefix="graphnn_p_")
            disk.on_import_path(b.cache_dir)
            module = disk.import_module(path, rewritten=[path.stem, *written])
        self.path = path
        self.module = module
        self.meta = module._META[self.name]
        self.driver = getattr(module, f"{self.name}_{printer.variant}")

    def _scratch_feeds(self):
        meta, dtype = self.meta, self.backend.model.dtype
        return [np.zeros(tuple(SCRATCH_BATCH if d is None else d for d in meta["feed_shapes"][buf]),
                         dtype=dtype) for buf in meta["feed_buffers"]]


class CPUBackend:
    """Runs a model's programs through generated ``@njit`` kernels."""

    target = "cpu"

    def __init__(self, model, cache_dir=None, fast_math=None, parallel=False, wait=None):
        self.model = model
        self.cache_dir = cache_dir
        disk.cache_dir(cache_dir)         # checked now: a file in its place raises CacheError here
        self.fast_math = fast_math
        self.parallel = parallel
        self.wait = default_wait() if wait is None else bool(wait)
        self.title = f"graph {model.graph.name!r}"
        self.orders = _orders(model)
        self.hyper_order = [n for n, _ in self.orders[2]]
        self._flatten_buffers()
        self._builds = {}
        # (program, batch) -> _Plan, least recently used first. The plans of one program share
        # one work arena, sized for the largest batch since it last grew: memory stays that of
        # one batch size, whatever sizes a user calls with (issue: 1..400 rows grew 2.8 GB).
        self._plans = OrderedDict()
        self._arenas = {}                 # program -> its work arena
        self._busy = set()                # programs whose arena a call is using now
        # the plan tables; held through calls that update the model
        # (the model's lock: one for the model and its backend)
        self._lock = getattr(model, "lock", None) or threading.RLock()
        self._reference = ReferenceBackend(model)
        self._lowered = {}
        self._sources = {}

    # -- generated code --------------------------------------------------------------
    def printer(self, parallel=None, export=False):
        parallel = self.parallel is True if parallel is None else parallel
        dtype = self.model.dtype.name
        fast_math = (dtype == "float32") if self.fast_math is None else bool(self.fast_math)
        helpers = "graphnn_h_" + disk.make_key("helpers", dtype, fast_math)
        return CPUPrinter(dtype, fast_math, parallel, helpers_module=helpers, export=export)

    def lowered(self, name, printer):
        key = (name, printer.variant)
        if key not in self._lowered:
            kprog = lower(self.model.programs[name], self.model.dtype.name, reserved=printer.reserved,
                          contractions=printer.contractions)
            self._lowered[key] = run_passes(kprog, printer.passes)
        return self._lowered[key]

    def program_source(self, name, printer):
        return printer.program(self.lowered(name, printer), *self.orders)

    def helpers_module(self, printer):
        """Write the printer's helpers module unless the cache has it; returns its name."""
        disk.store_module(printer.helpers_module, printer.helpers_module_source(), self.cache_dir)
        return printer.helpers_module

    def source_of(self, parallel=False, export=False):
        """One module with every program of the model; printed once. ``export=True``: the
        module ``Model.export`` writes, which needs only numpy and numba (its own matmul)."""
        key = (parallel, export)
        if key not in self._sources:
            printer = self.printer(parallel, export)
            programs = [self.program_source(name, printer) for name in self.model.programs]
            self._sources[key] = standalone_source(printer, programs, self.title)
        return self._sources[key]

    @property
    def source(self):
        return self.source_of(self.parallel is True)

    # -- builds ------------------------------------------------------------------------
    def build(self, name, parallel=None):
        """The :class:`ProgramBuild` of a program (made on first use, not started)."""
        parallel = self.parallel is True if parallel is None else parallel
        key = (name, parallel)
        if key not in self._builds:
            self._builds[key] = ProgramBuild(self, name, parallel)
        return self._builds[key]

    def status(self):
        """{program name: stage} for programs that were called: reference, kernels or compiled."""
        return {name: b.stage for (name, _), b in self._builds.items() if b.started}

    def wait_compiled(self, names=None):
        """Finish building ``names`` (default: every program that was called)."""
        for (name, _), b in list(self._builds.items()):
            if (names is None and b.started) or (names is not None and name in names):
                b.wait()

    def _flatten_buffers(self):
        """One flat array each for parameters and state; the model's dicts become views."""
        m = self.model
        self.params_flat = _flat(m.params, m.dtype)
        self.state_flat = _flat(m.state, m.dtype)
        self.hyper = np.zeros(max(len(self.hyper_order), 1), dtype=m.dtype)

    def _plan(self, name, batch):
        """What a call of program ``name`` at this batch size needs, worked out once."""
        key = (name, batch)
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                self._plans.move_to_end(key)
                return plan
            build = self.build(name, self._parallel_for(name, batch))
        if self.wait:
            build.start(background=False)
        if build.error is not None:
            raise build.error
        if build.stage == "reference":
            return build          # still building in the background: no plan yet
        const, per_n = build.meta["work"]
        with self._lock:
            plan = self._plans.get(key)
            if plan is not None:
                return plan
            arena = self._arenas.get(name)
            if arena is None or len(arena) < const + per_n * batch:
                # the arena grows: plans bound to the old one let it go
                arena = self._arenas[name] = np.zeros(const + per_n * batch, dtype=self.params_flat.dtype)
                for old in [k for k in self._plans if k[0] == name]:
                    del self._plans[old]
            plan = _Plan(build, BoundProgram(build, self.params_flat, self.state_flat, self.hyper, batch,
                                             arena), self.hyper_order)
            self._plans[key] = plan
            while len(self._plans) > MAX_PLANS:
                self._plans.popitem(last=False)
            return plan

    def _private_plan(self, plan):
        """A plan like ``plan`` with a work array of its own, for a call made while another
        thread uses the program's arena."""
        bound = plan.bound
        return _Plan(plan.build, BoundProgram(plan.build, self.params_flat, self.state_flat, self.hyper,
                                              bound.batch), self.hyper_order, times=plan.times)

    def prepare(self, name, batch):
        """Start building program ``name`` for batches of ``batch`` rows (finish it if waiting).

        Returns its :class:`ProgramBuild`; ``fit`` calls this to say what it compiles."""
        self._plan(name, batch)
        build = self.build(name, self._parallel_for(name, batch))
        build.start(background=not self.wait)
        return build

    def _parallel_for(self, name, batch):
        if self.parallel == "auto":
            width = max([_count(n.shape, batch) for n in self.model.programs[name].nodes] + [1])
            return width >= PARALLEL_THRESHOLD
        return self.parallel is True

    def run(self, name, feeds, batch):
        """Run program ``name``. Thread-safe: calls of programs that update the model (the
        step) run one at a time; other calls run side by side, each on a work array of its own
        when the program's shared one is in use."""
        if batch == 0:      # no rows to loop over: the reference's values, alike on every target
            return self._reference.run(name, feeds, batch)      # (a sum 0, a mean or max NaN)
        updates = bool(self.model.programs[name].updates)
        if updates:
            with self._lock:
                return self._run(name, feeds, batch)
        plan = self._plan(name, batch)
        if isinstance(plan, ProgramBuild):
            return self._run_reference(plan, name, feeds, batch)
        with self._lock:
            shared = name not in self._busy
            if shared:
                self._busy.add(name)
                chosen = plan
            else:   # another thread uses the arena: a spare plan, kept for the next such call
                chosen = plan.spares.pop() if plan.spares else None
        if chosen is None:
            chosen = self._private_plan(plan)
        try:
            return chosen.run(feeds, self)
        finally:
            with self._lock:
                if shared:
                    self._busy.discard(name)
                elif len(plan.spares) < MAX_SPARES:
                    plan.spares.append(chosen)

    def _run(self, name, feeds, batch):
        plan = self._plan(name, batch)
        if isinstance(plan, ProgramBuild):
            return self._run_reference(plan, name, feeds, batch)
        return plan.run(feeds, self)

    def _run_reference(self, build, name, feeds, batch):
        """Nothing compiled yet: the reference runs it."""
        out = self._reference.run(name, feeds, batch)
        # the build starts after this call, so the first result does not share the
        # interpreter with a compile
        build.start(background=True)
        return out

    def fast_step(self, feeds, batch):
        """``step(feeds) -> loss or None``: the step program called with only the checks that
        matter once feeds like ``feeds`` passed the full ones -- the same names, shapes and
        dtype, C-contiguous -- or None where that does not apply (random inputs are drawn by
        the model, the program is not compiled yet). It returns None for feeds unlike these,
        and the caller takes the full path. Measured on the 1-2-1 net at batch 64: about
        2 us a step, against 4.3 us through the full path."""
        model = self.model
        with self._lock:
            plan = self._plans.get(("step", batch))
        if not isinstance(plan, _Plan) or len(plan.times) < TIMED_CALLS:
            return None
        nodes = model.programs["step"].nodes
        if any(n.kind == "input" and n.role == "random" for n in nodes):
            return None
        if any(type(v) is not np.ndarray or v.dtype != model.dtype or not v.flags.c_contiguous
               for v in feeds.values()):
            return None
        spec = [(k, feeds[k].shape) for k in plan.feeds]
        count = len(feeds)
        hyper_names = {hyper_name(h): h for h in model.optimizer.hyper}
        slots = [(k, hyper_names[h]) for k, h in plan.hyper if h in hyper_names]
        t_slot = next((k for k, h in plan.hyper if h == hyper_name("t")), None)
        loss, kind = next((view, full) for name, view, full in plan.outputs if name == "loss")
        if kind == "feed":        # a loss that is an input: nothing compiled computes it
            return None
        build, bound, params, state, hyper = plan.build, plan.bound, self.params_flat, self.state_flat, self.hyper
        work, dtype, optimizer_hyper = bound.work, model.dtype, model.optimizer.hyper

        lock = self._lock

        def step(given):
            if type(given) is not dict or len(given) != count:
                return None
            with lock:
                return locked_step(given)

        def locked_step(given):
            args = []
            for name, shape in spec:
                value = given.get(name)
                if (type(value) is not np.ndarray or value.shape != shape or value.dtype != dtype
                        or not value.flags.c_contiguous):
                    return None
                args.append(value)
            for k, h in slots:
                hyper[k] = optimizer_hyper[h]
            if t_slot is not None:
                hyper[t_slot] = float(model.step_count + 1)
            if build.stage == "compiled":
                build.driver(*args, params, state, hyper, work, batch)
            else:
                bound(*args)
                if build.rent is not None:
                    build.count_call()
            model.step_count += 1       # after the update, as Model.step counts
            return float(loss.item())
        return step

    def training_loop(self, batch, force=False):
        """The compiled loop of training steps for full batches of ``batch`` rows, as a function
        ``loop(data, drawn, order, start, steps, t0, hyper, in_order=False) -> losses``; None
        while it is not
        compiled (the caller then runs the steps one by one).

        ``data``: {feed: the whole array}, rows taken through ``order`` from ``start``;
        ``drawn``: {random input: its values for each step, stacked}. The loop is compiled
        where a single step's call overhead is a measurable share of the step (where the
        driver is compiled, see :func:`_driver_pays`), or when ``force``
        (:meth:`~graphnn.Model.train_steps` asks for it)."""
        plan = self._plan("step", batch)
        if isinstance(plan, ProgramBuild):
            return None
        build = plan.build
        if build.loop is None:
            if force or build.driver_job is not None:
                # asked for (train_steps): as the model waits; else behind the running steps
                build.compile_loop(background=not (self.wait and force))
            if build.loop is None:
                return None

        def loop(data, drawn, order, start, steps, t0, hyper, in_order=False):
            with self._lock:
                for k, h in plan.hyper:
                    if h in hyper:
                        self.hyper[k] = hyper[h]
                feeds, rows = plan.loop_buffers(data, drawn, batch, self.model.dtype)
                losses = np.empty(steps, dtype=np.float64)
                build.loop(*feeds, order, start, steps, t0, bool(in_order), losses, *rows, self.params_flat,
                           self.state_flat, self.hyper, plan.bound.work)
                return losses
        return loop

    def read_param(self, name):
        return self.model.params[name]

    def write_param(self, name, value):
        np.copyto(self.model.params[name], value)


def loop_arrays(meta, data, batch, steps, dtype, drawn=None, rows=None):
    """The training loop's feed arguments (whole arrays, per-step draws, unbatched feeds) and
    its row buffers (made once per batch size)."""
    feeds, made = [], []
    for name, kind in meta["train"]["feeds"]:
        if kind == "drawn":
            value = drawn[name] if drawn is not None else np.zeros((steps, *data[name].shape), dtype=dtype)
            feeds.append(value)
        elif kind == "rows":
            feeds.append(data[name].reshape(-1))
            if rows is None:
                made.append(np.zeros((batch, *data[name].shape[1:]), dtype=dtype))
        else:
            feeds.append(data[name])
    return feeds, (made if rows is None else rows)


class _Plan:
    """One program at one batch size: its bound kernel loop, outputs, and the driver decision."""

    def __init__(self, build, bound, hyper_order, times=None):
        self.build, self.bound = build, bound
        self.feeds = build.meta["feeds"]
        self.hyper = list(enumerate(hyper_order))
        self.outputs = []
        for oname, (array, offset, size, shape) in build.meta["outputs"].items():
            if array == "const":
                self.outputs.append((oname, np.asarray(offset, dtype=bound.work.dtype), None))
                continue
            if array == "feed":               # an input returned as fed: ``offset`` names it
                self.outputs.append((oname, offset, "feed"))
                continue
            start = offset[0] + offset[1] * bound.batch
            stop = start + size[0] + size[1] * bound.batch
            full = tuple(bound.batch if d is None else d for d in shape)
            self.outputs.append((oname, bound.flat[array][start:stop].reshape(full), full))
        self.times = [] if times is None else list(times)
        self.spares = []          # plans like this one with work arrays of their own (threads)
        self.rows = None          # the training loop's row buffers

    def loop_buffers(self, data, drawn, batch, dtype):
        feeds, rows = loop_arrays(self.build.meta, data, batch, 0, dtype, drawn, self.rows)
        self.rows = rows
        return feeds, rows

    def run(self, feeds, backend):
        build = self.build
        if build.error is not None:
            raise build.error
        for k, h in self.hyper:
            if h in feeds:
                backend.hyper[k] = feeds[h]
        args = [feeds[f] for f in self.feeds]
        if build.stage == "compiled":
            build.driver(*args, backend.params_flat, backend.state_flat, backend.hyper,
                         self.bound.work, self.bound.batch)
        elif len(self.times) < TIMED_CALLS:
            t0 = time.perf_counter()
            self.bound(*args)
            self.times.append(time.perf_counter() - t0)
            if len(self.times) == TIMED_CALLS and _driver_pays(self.times, len(self.bound.calls)):
                build.driver_pays_now(len(self.bound.calls))
        else:
            self.bound(*args)
            if build.rent is not None:
                build.count_call()
        return {oname: (np.array(feeds[view]) if full == "feed" else view.copy() if full is not None else view)
                for oname, view, full in self.outputs}


def _driver_pays(times, calls):
    """True when the kernel loop's call overhead is more than DRIVER_PAYS of a call's time."""
    # the fastest call: the first ones also pay for cold caches and page faults
    return calls <= MAX_DRIVER_CALLS and calls * CALL_COST > DRIVER_PAYS * min(times)


# A driver that links BLAS calls cannot be cached by Numba ("dynamic globals"); it is compiled
# again in a new process. The warning says nothing a user can act on: silence it for drivers
# only (catch_warnings would not be thread-safe in the background compile thread).
warnings.filterwarnings("ignore", message="Cannot cache compiled function", module=r"graphnn_p_")

def _compile_driver(driver, args):
    """Compile (or load) a driver by calling it once on scratch arrays.

    LLVM inlines the kernels into it at -O3. Measured on the 2-2-1 step: 9.7 us at -O3
    against 16 us at -O1 and 13 us for the kernel loop; the compile takes about as long
    at either level (0.7-1 s for the lecture nets), most of it in Numba's front end."""
    driver(*args)


def default_wait():
    """``wait`` when gn.compile is not told: the GRAPHNN_WAIT environment variable, else False."""
    import os
    return os.environ.get("GRAPHNN_WAIT", "0").strip().lower() in ("1", "true", "yes")


def _orders(model):
    param_order = [(k, v.shape) for k, v in model.params.items()]
    state_order = [(k, v.shape) for k, v in model.state.items()]
    hyper = (*(model.optimizer.hyper if model.optimizer else ()), "t")
    return param_order, state_order, [(hyper_name(h), ()) for h in hyper]


def _count(shape, batch):
    return int(np.prod([batch if d is None else d for d in shape], dtype=np.int64))


def _flat(arrays, dtype):
    total = sum(max(a.size, 1) for a in arrays.values())
    flat = np.zeros(max(total, 1), dtype=dtype)
    offset = 0
    for k, a in list(arrays.items()):
        size = max(a.size, 1)
        view = flat[offset:offset + size][:a.size].reshape(a.shape)
        view[...] = a
        arrays[k] = view
        offset += size
    return flat
