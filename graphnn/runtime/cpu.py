"""The CPU backend: lower, print, cache and call generated Numba code."""
import numpy as np

from ..graph.text import node_line
from ..lower import lower
from ..codegen.cpu import print_model
from . import cache as disk
from .program import hyper_name

# Above this many elements per kernel, the parallel variant pays for its threads.
PARALLEL_THRESHOLD = 1 << 15


def program_signature(program):
    """What a program computes, for the cache key (delta names excluded)."""
    rows = []
    for n in program.nodes:
        label = node_line(n) if n.role in ("forward", "optimizer") else n.op_name
        rows.append((n.key, label))
    return (rows, sorted(program.outputs), sorted(program.updates))


class CompiledModule:
    """Generated source of one model, its import, and the layout of its arrays."""

    def __init__(self, model, target, printer_fn, cache_dir=None, fast_math=None, key_extra=()):
        self.model = model
        param_order = [(k, v.shape) for k, v in model.params.items()]
        state_order = [(k, v.shape) for k, v in model.state.items()]
        hyper_order = [(hyper_name(h), ()) for h in (*(model.optimizer.hyper if model.optimizer else ()), "t")]
        key = disk.make_key(target, model.graph.name, model.dtype.name, fast_math, key_extra,
                            param_order, state_order, hyper_order,
                            [program_signature(p) for p in model.programs.values()])
        path = disk.lookup(key, cache_dir)
        self.cache_hit = path is not None
        if path is None:
            kprogs = [lower(p, model.dtype.name) for p in model.programs.values()]
            source, meta = printer_fn(kprogs, model.dtype.name, f"graph {model.graph.name!r}",
                                      param_order, state_order, hyper_order, fast_math=fast_math)
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
    out = {}
    for kprog in kprogs:
        feeds, slots, work = meta[kprog.name]
        outs = {}
        for name, buf in kprog.outputs.items():
            s = slots.get(buf)
            if s is None:  # a constant output
                value = float(np.asarray(kprog.buffers[buf].value))
                outs[name] = ("const", value, None, ())
            else:
                outs[name] = (s.array, s.offset, s.size, s.shape)
        feed_bufs = {b.name: b.node.name for b in kprog.buffers.values() if b.role == "feed"}
        out[kprog.name] = {
            "feeds": feeds, "outputs": outs, "work": work,
            "slots": {k: (v.array, v.offset, v.size, v.shape) for k, v in slots.items()},
            "feed_buffers": feed_bufs,
            "feed_shapes": {b: kprog.buffers[b].shape for b in feed_bufs},
            "consts": [b.name for b in kprog.buffers.values() if b.role == "const"],
        }
    return out


class CPUBackend:
    """Runs a model's programs through generated ``@njit`` functions."""

    target = "cpu"

    def __init__(self, model, cache_dir=None, fast_math=None, parallel=False):
        self.model = model
        self.parallel = parallel
        self.compiled = CompiledModule(model, self.target, print_model, cache_dir, fast_math)
        self._flatten_buffers()
        self._plans = {}

    def _flatten_buffers(self):
        """One flat array each for parameters and state; the model's dicts become views."""
        m = self.model
        self.params_flat = _flat(m.params, m.dtype)
        self.state_flat = _flat(m.state, m.dtype)
        self.hyper = np.zeros(max(len(self.compiled.hyper_order), 1), dtype=m.dtype)

    def _plan(self, name, batch):
        """What a call of program ``name`` at this batch size needs, worked out once."""
        key = (name, batch)
        plan = self._plans.get(key)
        if plan is not None:
            return plan
        meta = self.compiled.meta[name]
        m = self.model
        const, per_n = meta["work"]
        work = np.zeros(const + per_n * batch, dtype=m.dtype)
        width = max([s[2][0] + s[2][1] * batch for s in meta["slots"].values()] + [1])
        parallel = self.parallel is True or (self.parallel == "auto" and width >= PARALLEL_THRESHOLD)
        fn = getattr(self.compiled.module, f"{name}_{'parallel' if parallel else 'serial'}")
        arrays = {"params": self.params_flat, "state": self.state_flat, "work": work, "hyper": self.hyper}
        outputs = []
        for oname, (array, offset, size, shape) in meta["outputs"].items():
            if array == "const":
                outputs.append((oname, np.asarray(offset, dtype=m.dtype), None))
                continue
            start = offset[0] + offset[1] * batch
            stop = start + size[0] + size[1] * batch
            full = tuple(batch if d is None else d for d in shape)
            outputs.append((oname, arrays[array][start:stop].reshape(full), full))
        hyper = [(k, h) for k, h in enumerate(self.compiled.hyper_order)]
        plan = (fn, meta["feeds"], work, outputs, hyper)
        self._plans[key] = plan
        return plan

    def run(self, name, feeds, batch):
        fn, feed_names, work, outputs, hyper = self._plan(name, batch)
        for k, h in hyper:
            if h in feeds:
                self.hyper[k] = feeds[h]
        fn(*[feeds[f] for f in feed_names], self.params_flat, self.state_flat, self.hyper, work, batch)
        return {oname: (view.copy() if full is not None else view) for oname, view, full in outputs}

    def read_param(self, name):
        return self.model.params[name]

    def write_param(self, name, value):
        np.copyto(self.model.params[name], value)

    @property
    def source(self):
        return self.compiled.source


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
