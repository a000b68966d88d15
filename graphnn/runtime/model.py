"""The model object users call: forward, gradients, training steps, fit.

Parameters and optimizer state live in the model (NumPy arrays in the
model's dtype, or device arrays for CUDA) and are passed to the backend's
functions as arguments on every call.
"""
import signal
import threading
from collections.abc import Mapping

import numpy as np

from ..errors import ArgumentError, FeedError, GraphMixError
from ..graph.node import Graph, Node
from ..graph.random import fill, is_random, sample
from ..graph.traverse import topological
from ..reference.executor import check_feeds, feed_array
from ..lower.program import build_programs, hyper_name, slot_name


def _split_graph(graph_or_loss, loss, outputs):
    if isinstance(graph_or_loss, Node):
        loss = graph_or_loss if loss is None else loss
        graph = graph_or_loss.graph
    elif isinstance(graph_or_loss, Graph):
        graph = graph_or_loss
    elif hasattr(graph_or_loss, "graph") and hasattr(graph_or_loss, "loss"):
        graph, loss = graph_or_loss.graph, loss if loss is not None else graph_or_loss.loss
    else:
        raise ArgumentError(f"compile takes a Graph, a loss node or a net with .graph and .loss; "
                        f"got {type(graph_or_loss).__name__}")
    if outputs is None:
        outputs = dict(graph.outputs)
    elif isinstance(outputs, Node):
        outputs = {outputs.name: outputs}
    elif not isinstance(outputs, dict):
        outputs = {n.name: n for n in outputs}
    if not outputs and loss is not None:
        outputs = {"loss": loss}
    if not outputs:
        raise ArgumentError(f"graph {graph.name!r} has no outputs and no loss: name one with "
                         f"graph.output(name, node) or pass loss=")
    _check_one_graph(graph, loss, outputs)
    return graph, loss, outputs


def _check_one_graph(graph, loss, outputs):
    """Every node the model computes belongs to ``graph``: a node of another graph would read
    that graph's parameters under this graph's names."""
    roots = {**outputs, **({"loss": loss} if loss is not None else {})}
    for key, root in roots.items():
        if not isinstance(root, Node):
            raise ArgumentError(f"output {key!r} of graph {graph.name!r} is a {type(root).__name__}, "
                                f"not a node")
        for n in topological([root]):
            if n.graph is not graph:
                raise GraphMixError(f"{'the loss' if key == 'loss' else f'output {key!r}'} uses node "
                                    f"{n.name!r} of graph {n.graph.name!r}, but the model compiles "
                                    f"graph {graph.name!r}; build it in one graph, or reuse a network "
                                    f"in another with gn.as_layer")


class Model:
    """A compiled network. Build it with :func:`graphnn.compile`."""

    stop_training = False   # a fit callback sets it to end the fit (as in Keras)

    def __init__(self, graph_or_loss, loss=None, outputs=None, optimizer=None, target="cpu",
                 dtype="float32", seed=None, **options):
        from ..train.optimizers import SGD, Optimizer
        self.graph, self.loss_node, self.output_nodes = _split_graph(graph_or_loss, loss, outputs)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise ArgumentError(f"compile: dtype must be 'float32' or 'float64', got {dtype!r}") from None
        if self.dtype.name not in ("float32", "float64"):
            raise ArgumentError(f"dtype must be float32 or float64, got {self.dtype.name}")
        if optimizer is not None and not isinstance(optimizer, Optimizer):
            raise ArgumentError(f"compile: optimizer must be an optimizer object such as gn.Adam(lr=1e-3) "
                                f"or gn.SGD(lr=0.1), not {optimizer!r}")
        if not isinstance(target, str):
            raise ArgumentError(f"compile: target must be 'cpu', 'cuda' or 'reference', not {target!r}")
        self.target = target
        self.optimizer = optimizer if optimizer is not None or self.loss_node is None else SGD(0.01)
        used = {n.name for n in topological([*self.output_nodes.values()]
                                            + ([self.loss_node] if self.loss_node is not None else []))
                if n.kind == "parameter"}
        self.params = {k: np.array(v, dtype=self.dtype, order="C", copy=True)
                       for k, v in self.graph.values.items() if k in used}
        self.trainable = [k for k in self.params if self.graph.trainable.get(k, True)]
        self.programs = build_programs(self.graph, self.loss_node, self.output_nodes,
                                       self.optimizer, self.trainable)
        self.state = {}
        if self.optimizer is not None:
            for name in self.trainable:
                for slot in self.optimizer.slots:
                    self.state[slot_name(name, slot)] = np.zeros_like(self.params[name])
        self.step_count = 0
        self.history = {}
        self._feed_cache, self._feed_nodes, self._step_hyper = {}, {}, None
        self._fast_step = None      # a step call with the checks of the last one done (CPU)
        # draws for random inputs (dropout masks, noise) in training mode
        self.rng = np.random.default_rng(self.graph.seed if seed is None else seed)
        # held by every call that updates the model (a step, a compiled run of steps): a step is
        # atomic -- parameters, optimizer state, step_count and the generator move together --
        # when threads share the model. The backends hold the same lock.
        self.lock = threading.RLock()
        from .backends import make_backend
        wait = options.pop("wait", None)
        if target in ("cpu", "cuda"):
            options["wait"] = wait
        self.backend = make_backend(target, self, **options)
        # after the backend: it may have moved the arrays into storage of its own (the CPU's
        # flat arrays), and assigning a new value must write into that storage
        # a target computing in storage of its own (CUDA) copies it back lazily, when read
        refresh = getattr(self.backend, "refresh_host", None)
        self._params = _Buffers("parameter", self._params, self._write_param, refresh)
        self._state = _Buffers("optimizer state", self._state, self._write_state, refresh)

    @property
    def params(self):
        """{name: array} of the parameters. ``model.params[name] = value`` (or
        ``model.params = {name: value}``) copies the value into the arrays the target computes
        with, after checking its name and shape. On CUDA the arrays are copied back from the
        device when read after a training step (all at once, only then)."""
        return self._params

    @params.setter
    def params(self, values):
        if isinstance(getattr(self, "_params", None), _Buffers):
            self._params.update(values)
        else:
            self._params = values

    @property
    def state(self):
        """{slot name: array} of the optimizer state; assigned like :attr:`params`."""
        return self._state

    @state.setter
    def state(self, values):
        if isinstance(getattr(self, "_state", None), _Buffers):
            self._state.update(values)
        else:
            self._state = values

    # -- feeding --------------------------------------------------------------
    def _feeds(self, program, feeds, training=False):
        # fast path: feeds with the names, shapes and dtypes of an earlier call that was
        # fully checked pass straight through (a training step of a small net is a few us)
        # only arrays have a shape and dtype to key on; anything else takes the full check
        if type(feeds) is not dict and not isinstance(feeds, Mapping):
            raise FeedError(f"feeds must be a dict {{input name: array}}; got a {type(feeds).__name__}")
        cacheable = all(type(v) is np.ndarray for v in feeds.values())
        signature = (program, training, tuple((k, v.shape, v.dtype) for k, v in feeds.items())
                     ) if cacheable else None
        known = self._feed_cache.get(signature) if cacheable else None
        if known is not None:
            names, batch = known
            return {k: _contiguous(feeds[k], self.dtype) for k in names}, batch
        nodes = self._feed_nodes.get(program)
        if nodes is None:
            nodes = [n for n in self.programs[program].nodes if n.role != "optimizer"]
            self._feed_nodes[program] = nodes
        has_random = any(is_random(n) for n in nodes)
        if training:  # random inputs get fresh draws; in eval mode check_feeds fills eval values
            randoms = {n.name for n in nodes if is_random(n)}
            _, batch = check_feeds([n for n in nodes if n.name not in randoms],
                                   {k: v for k, v in feeds.items() if k not in randoms})
            feeds = fill(nodes, feeds, batch, self.rng)
        arrays, batch = check_feeds(nodes, feeds)
        if batch == 0:
            self._check_empty_batch(program)
        out = {}
        for k, v in arrays.items():
            if hasattr(v, "__cuda_array_interface__"):  # a device array: the CUDA backend copies on device
                if np.dtype(v.dtype) != self.dtype:
                    raise FeedError(f"feed {k!r} is a device array of dtype {np.dtype(v.dtype)}; "
                                    f"this model runs in {self.dtype}")
                out[k] = v
            else:
                out[k] = np.ascontiguousarray(v, dtype=self.dtype)
        if cacheable and not has_random and set(out) <= set(feeds):
            self._feed_cache[signature] = (list(out), batch)
        return out, batch

    def _check_empty_batch(self, program):
        """A batch of 0 rows, alike on every target: outputs with a batch axis have 0 rows, a
        reduction over the rows is a sum 0, a mean or max NaN (:meth:`forward`); the loss of a
        step has no value."""
        if program != "forward":
            call = "step" if program == "step" else "loss_and_gradients"
            raise FeedError(f"{call}: the feeds have 0 rows, and the loss of an empty batch is "
                            f"undefined (a mean over no rows); feed at least one row")

    def reseed(self, seed):
        """Restart the random inputs' generator (dropout masks, noise) from ``seed``."""
        self.rng = np.random.default_rng(seed)

    def _hyper(self, t=None):
        self.optimizer.check_ready()
        values = {hyper_name(h): v for h, v in self.optimizer.hyper.items()}
        values[hyper_name("t")] = float(self.step_count if t is None else t)
        return values

    # -- the calls ------------------------------------------------------------
    def forward(self, feeds, training=False):
        """The outputs for ``feeds``: {output name: array}.

        ``training=True`` draws the random inputs (dropout, noise) as a training step
        does; by default they take their evaluation values (dropout keeps every unit)."""
        arrays, batch = self._feeds("forward", feeds, training)
        if batch == 0 and all(node.batched for node in self.output_nodes.values()):
            return {name: np.zeros((0, *node.shape[1:]), dtype=self.dtype)     # 0 rows of each
                    for name, node in self.output_nodes.items()}
        return self.backend.run("forward", arrays, batch)

    __call__ = forward

    def predict(self, feeds, training=False):
        """The first output's array for ``feeds``: a dict {input name: array}, or a bare array
        where the outputs read one input (``model.predict(X)``, as Keras)."""
        from ..train.fit import as_feeds
        return next(iter(self.forward(as_feeds(self, feeds, what="predict"), training).values()))

    def loss_and_gradients(self, feeds, training=False):
        """(loss, {parameter name: gradient}) without changing the parameters."""
        self._need_loss()
        arrays, batch = self._feeds("gradients", feeds, training)
        out = self.backend.run("gradients", arrays, batch)
        grads = {k[len("grad::"):]: v for k, v in out.items() if k.startswith("grad::")}
        return float(out["loss"]), grads

    def evaluate_loss(self, feeds, training=False):
        """The loss value for ``feeds`` (no update)."""
        return self.loss_and_gradients(feeds, training)[0]

    def step(self, feeds, training=True):
        """One training step: forward, backward and the optimizer update, in place.

        Random inputs (dropout masks, noise) are drawn from the model's generator
        (seeded by ``seed=`` of :func:`graphnn.compile`, default the graph's seed)."""
        fast = self._fast_step
        if fast is not None and training:
            loss = fast(feeds)
            if loss is not None:
                return loss
        self._need_loss()
        with self.lock:
            arrays, batch = self._feeds("step", feeds, training)
            hyper = self._hyper(t=self.step_count + 1)
            for k in self._step_hyper_names():
                arrays[k] = hyper[k]
            out = self.backend.run("step", arrays, batch)
            self.step_count += 1    # after the update: a step that fails or is interrupted does not count
        if training and type(feeds) is dict and set(feeds) == set(arrays) - set(hyper):
            maker = getattr(self.backend, "fast_step", None)
            self._fast_step = maker(feeds, batch) if maker is not None else None
        return float(out["loss"])

    def train_steps(self, feeds, batch_size=32, steps=None, order=None, shuffle=False):
        """Training steps on mini-batches of ``feeds``, run in one compiled call; their losses.

        Step ``s`` trains on rows ``order[s*batch_size:(s+1)*batch_size]``; ``order``
        defaults to the rows in turn, or with ``shuffle=True`` to a permutation drawn from
        the model's generator. ``steps`` defaults to one pass over ``order`` (the last batch
        may be smaller). Parameters, optimizer state, ``step_count`` and the random
        inputs' draws end as ``steps`` calls of :meth:`step` on the same batches leave
        them, to the last bit or two (the same kernels, called one by one or inlined into
        one loop, may round differently).

        On the CPU target the steps of full batches run in a compiled loop (gathering the
        rows, the step and the loss, with no return to Python); other targets, and the
        first call while that loop compiles in the background (``wait=False``), run the
        steps one by one. Ctrl-C lets the step (or the compiled loop) in progress finish,
        then raises KeyboardInterrupt.

        >>> import graphnn as gn, numpy as np
        >>> net = gn.lecture.regression_net()
        >>> model = gn.compile(net.graph, net.loss, optimizer=gn.SGD(0.1))
        >>> x, y = gn.lecture.noisy_sine(n=64)
        >>> losses = model.train_steps({"x": x, "y": y}, batch_size=16, steps=8)
        >>> losses.shape, model.step_count
        ((8,), 8)
        """
        self._need_loss()
        with INTERRUPTS.held_to_step_ends():
            return self._train_steps(feeds, batch_size, steps, order, shuffle)

    def _train_steps(self, feeds, batch_size, steps, order, shuffle):
        data, rows = self._training_data(feeds)
        in_order = order is None and not shuffle
        if order is None:
            order = self.rng.permutation(rows) if shuffle else np.arange(rows)
        order = np.asarray(order)
        if order.size and order.dtype.kind not in "iu":
            raise FeedError(f"train_steps: order must hold row numbers (integers); got dtype {order.dtype}")
        order = np.ascontiguousarray(order, dtype=np.int64)
        if order.ndim != 1 or (order.size and (order.min() < 0 or order.max() >= rows)):
            raise FeedError(f"train_steps: order must be a 1-D array of row numbers in [0, {rows}); "
                            f"got shape {order.shape}")
        batch_size = _positive_int("batch_size", batch_size)
        available = -(-len(order) // batch_size)
        steps = available if steps is None else _positive_int("steps", steps, zero=True)
        if steps > available:
            raise FeedError(f"train_steps: {steps} steps of {batch_size} rows need {steps * batch_size} "
                            f"rows of order; it has {len(order)}")
        if not in_order and order.size:     # an order given as 0, 1, 2, ...
            in_order = order[0] == 0 and np.array_equal(order, np.arange(order.size))
        try:
            return self._run_steps(data, order, 0, steps, batch_size, force=True, in_order=in_order)
        finally:
            self._release_data()

    def _release_data(self):
        """Free training data a backend keeps (CUDA keeps it on the device for the steps of
        one fit or train_steps call)."""
        release = getattr(self.backend, "release_data", None)
        if release is not None:
            release()

    def _training_data(self, feeds):
        """The feeds of training steps, checked once: ({name: array in the model dtype}, rows)."""
        arrays, rows = self._check_training_feeds(feeds)
        return {k: np.ascontiguousarray(v, dtype=self.dtype) for k, v in arrays.items()}, rows

    def _check_training_feeds(self, feeds, what="train_steps"):
        """The feeds of training steps, checked: ({name: array as fed}, rows)."""
        nodes = [n for n in self.programs["step"].nodes if n.role != "optimizer"]
        if not isinstance(feeds, Mapping):
            raise FeedError(f"{what}: feeds must be a dict {{input name: array}}; "
                            f"got a {type(feeds).__name__}")
        arrays, rows = check_feeds([n for n in nodes if not is_random(n) or n.name in feeds], feeds)
        if not any(n.batched for n in nodes if n.kind == "input" and n.name in arrays):
            raise FeedError(f"{what}: no feed has a batch axis to take mini-batches from")
        return arrays, rows

    def _run_steps(self, data, order, start, steps, batch_size, force=False, in_order=False):
        """Steps on rows order[start + s*batch_size ...]: full batches in the backend's compiled
        loop when it has one, the others (and everything on other targets) one call each.
        ``in_order``: ``order`` is 0, 1, 2, ... (the CPU's loop then reads the batches in place).

        Each step -- or the compiled loop with its steps -- runs to its end before an interrupt
        (Ctrl-C) held by :data:`INTERRUPTS` is raised, so the parameters, the optimizer state,
        ``step_count`` and the random draws always agree."""
        losses = np.empty(steps, dtype=np.float64)
        full = min(steps, (len(order) - start) // batch_size)
        done = 0
        nodes = [n for n in self.programs["step"].nodes if n.role != "optimizer"]
        randoms = [n for n in nodes if is_random(n) and n.name not in data]
        fed_random = any(is_random(n) and n.name in data for n in nodes)
        loop = self.backend.training_loop(batch_size, force) if full > 0 and not fed_random and hasattr(
            self.backend, "training_loop") else None
        if loop is not None:
            with INTERRUPTS:
                drawn = {}
                if randoms:     # the draws the steps would make, in the order they make them
                    per_step = [[sample(n, self.rng, batch_size) for n in randoms] for _ in range(full)]
                    drawn = {n.name: np.ascontiguousarray(np.stack([d[k] for d in per_step]),
                                                          dtype=self.dtype)
                             for k, n in enumerate(randoms)}
                hyper = self._hyper()
                losses[:full] = loop(data, drawn, order, start, full, self.step_count,
                                     {k: hyper[k] for k in self._step_hyper_names()}, in_order)
                self.step_count += full
            done = full
        batched = {k for k, v in data.items() if self.graph.inputs[k].batched}
        for s in range(done, steps):
            rows = order[start + s * batch_size:start + (s + 1) * batch_size]
            with INTERRUPTS:
                losses[s] = self.step({k: (v[rows] if k in batched else v) for k, v in data.items()})
        return losses

    def _step_hyper_names(self):
        if self._step_hyper is None:
            wanted = {n.name for n in self.programs["step"].inputs}
            self._step_hyper = [k for k in self._hyper() if k in wanted]
        return self._step_hyper

    def fit(self, feeds, y=None, epochs=10, batch_size=32, shuffle=True, validation_data=None,
            validation_split=None, metrics=(), patience=None, monitor=None, min_delta=0.0,
            restore_best=True, seed=0, verbose=True, augment=None, target=None, output=None,
            eval_batch_size=1024, optimizer=None, callbacks=None, distributed=None):
        """Train on ``feeds`` -- a dict {input name: array}, or ``fit(X, y)`` with arrays where
        the outputs read one input and the loss one other -- and return a History
        (see :func:`graphnn.train.fit` for every argument)."""
        from ..train.fit import fit
        return fit(self, feeds, y, epochs=epochs, batch_size=batch_size, shuffle=shuffle,
                   validation_data=validation_data, validation_split=validation_split,
                   metrics=metrics, patience=patience, monitor=monitor, min_delta=min_delta,
                   restore_best=restore_best, seed=seed, verbose=verbose, augment=augment,
                   target=target, output=output, eval_batch_size=eval_batch_size,
                   optimizer=optimizer, callbacks=callbacks, distributed=distributed)

    def evaluate(self, feeds, y=None, metrics=(), target=None, output=None, batch_size=1024):
        """Loss and metrics in evaluation mode: {"loss": ..., "accuracy": ...}.

        ``feeds`` is a dict {input name: array}, or ``evaluate(X, y)`` as :meth:`fit` takes
        them (see :func:`graphnn.train.evaluate`)."""
        from ..train.fit import as_feeds, evaluate
        return evaluate(self, as_feeds(self, feeds, y, "evaluate", target, output), metrics,
                        target, output, batch_size)

    def summary(self, print_fn=print):
        """A table of the model's layers (top-level scopes) in the order they compute: output
        shape, parameter count, trainable or frozen; then the total weights and the optimizer.
        Printed with ``print_fn`` (``None``: not printed) and returned as a string."""
        from ..graph.node import format_shape
        roots = [*self.output_nodes.values()] + ([self.loss_node] if self.loss_node is not None else [])
        rows = {}               # layer -> [kind, last node, parameter names]
        for n in topological(roots):
            if n.role in ("optimizer",):
                continue
            layer = n.scope.split("/")[0] if n.scope else n.name
            # a fed input's own row; a layer's random input (dropout mask, BatchNorm's flag) is not one
            row = rows.setdefault(layer, ["input" if n.kind == "input" and n.role != "random" else "", None, []])
            if n.kind == "parameter":
                row[2].append(n.name)
            elif n.kind == "op" or row[1] is None:
                row[1] = n
        table = [("layer", "output shape", "params", "trainable")]
        buffers = set(getattr(self.graph, "updates", {}))   # written by steps (BatchNorm statistics)
        for layer, (kind, last, names) in rows.items():
            size = sum(self.params[k].size for k in names if k in self.params)
            weights = [k for k in names if k in self.params and k not in buffers]
            frozen = [k for k in weights if k not in self.trainable]
            state = "-" if not weights else "frozen" if len(frozen) == len(weights) else \
                "partly" if frozen else "yes"
            if any(k in buffers for k in names):
                state += " + buffers"
            shape = format_shape(last.shape) if last is not None else "-"
            table.append((layer + (" (input)" if kind else ""), shape, str(size), state))
        widths = [max(len(r[i]) for r in table) for i in range(4)]
        line = "  ".join("-" * w for w in widths)
        text = [f"Model {self.graph.name!r} (target={self.target}, dtype={self.dtype.name})", line]
        for i, r in enumerate(table):
            text.append("  ".join(c.rjust(w) if j == 2 else c.ljust(w)
                                  for j, (c, w) in enumerate(zip(r, widths))).rstrip())
            if i == 0:
                text.append(line)
        total = sum(v.size for v in self.params.values())
        trainable = sum(self.params[k].size for k in self.trainable)
        held = sum(self.params[k].size for k in buffers if k in self.params)
        text += [line, f"total weights: {total - held} ({trainable} trainable, {total - trainable - held} "
                       f"frozen)" + (f"; buffers: {held} values (written by training steps)" if held else ""),
                 f"optimizer: {self.optimizer!r}" if self.optimizer is not None else "optimizer: none"]
        result = _Summary("\n".join(text))
        if print_fn is not None:
            print_fn(result)
        return result

    def compile_status(self):
        """{program: stage} of the programs called so far on the CPU and CUDA targets.

        ``"reference"``: still compiling, calls run on the NumPy reference executor;
        ``"kernels"`` (CPU): kernels compiled, a Python driver calls them;
        ``"compiled"``: the whole program is one compiled function (CPU), or its kernels are
        compiled and calls run on the device (CUDA). With ``wait=True`` the CUDA target
        reports every program as ``"compiled"`` (its kernels compile as a call launches
        them); the reference target reports every program as ``"compiled"``."""
        status = getattr(self.backend, "status", None)
        if status is None:
            return {name: "compiled" for name in self.programs}
        return status()

    def wait_compiled(self, programs=None):
        """Block until the programs called so far (or ``programs``) are compiled.

        >>> import graphnn as gn, numpy as np
        >>> net = gn.lecture.regression_net()
        >>> model = gn.compile(net.graph, net.loss, wait=False)
        >>> _ = model.forward({"x": np.zeros((4, 1))})   # runs at once, compiles meanwhile
        >>> model.wait_compiled(); model.compile_status()
        {'forward': 'compiled'}
        """
        waiter = getattr(self.backend, "wait_compiled", None)
        if waiter is not None:
            waiter(programs)
        return self

    def _need_loss(self):
        if self.loss_node is None:
            raise ArgumentError("this model was compiled without a loss; pass loss= to gn.compile")

    # -- parameters -----------------------------------------------------------
    def get_params(self):
        """A float64 copy of every parameter."""
        return {k: np.array(self.backend.read_param(k), dtype=np.float64) for k in self.params}

    def set_params(self, values):
        """Overwrite parameters (shapes must match); ``model.params[name] = value`` sets one.
        Every value is checked before any is written."""
        checked = {k: self.params.checked(k, v) for k, v in values.items()}
        for k, v in checked.items():
            self._write_param(k, v)

    def _write_param(self, name, value):
        self.backend.write_param(name, value)
        host = dict.__getitem__(self.params, name)
        if self.backend.read_param(name) is not host:   # the backend keeps its own copy (CUDA)
            np.copyto(host, value)

    def _write_state(self, name, value):
        np.copyto(dict.__getitem__(self.state, name), value)
        write = getattr(self.backend, "write_state", None)   # the backend keeps its own copy (CUDA)
        if write is not None:
            write(name, value)

    @property
    def source(self):
        """The generated source code (compiled targets)."""
        return self.backend.source

    def _repr_svg_(self):
        """Jupyter shows a compiled model as the picture of its graph."""
        from .. import render
        return render(self).svg()

    def export(self, path):
        """Write the generated module to ``path``: it needs only numpy and numba (no scipy).

        Its ``forward(feeds, arrays)`` (and ``step``, ``run``) take the arrays of
        :func:`graphnn.exported_arrays`, saved with ``np.savez`` and read back by its
        ``load_arrays(path)``. Its compiled functions take the feeds, then the flat
        ``params``, ``state``, ``hyper`` and ``work`` arrays and the batch size ``N``;
        ``_META`` inside it gives every buffer's place in those arrays (docs/compiler.md,
        "Exported modules").
        """
        from pathlib import Path

        from .cache import write_atomic
        path = Path(path)
        if path.is_dir():
            raise ArgumentError(f"export: {str(path)!r} is a folder; give the path of the .py file to write")
        path.parent.mkdir(parents=True, exist_ok=True)     # as gn.save does
        source_of = getattr(self.backend, "source_of", None)      # the CPU backend's printer
        write_atomic(path, self.backend.source if source_of is None
                     else source_of(self.backend.parallel is True, export=True))
        return path

    def __repr__(self):
        return (f"<Model {self.graph.name!r} target={self.target} dtype={self.dtype.name} "
                f"params={sum(v.size for v in self.params.values())}>")


class _Summary(str):
    """The text of :meth:`Model.summary`; its repr is short, as the table was printed."""

    def __repr__(self):
        return f"<summary: {self.splitlines()[0]}>"


class _Buffers(dict):
    """``model.params`` and ``model.state``: {name: array}, where assigning a new value copies it
    into the storage the target computes with (the CPU's flat arrays, the GPU's memory), so
    ``model.params["b"] = value`` acts alike on every target. The names and shapes are fixed."""

    def __init__(self, kind, arrays, write, refresh=None):
        super().__init__(arrays)
        self.kind, self._write, self._refresh = kind, write, refresh

    # reads: a target with storage of its own (CUDA) first copies newer values back
    def _fresh(self):
        if self._refresh is not None:
            self._refresh()

    def __getitem__(self, name):
        self._fresh()
        return dict.__getitem__(self, name)

    def get(self, name, default=None):
        self._fresh()
        return dict.get(self, name, default)

    def values(self):
        self._fresh()
        return dict.values(self)

    def items(self):
        self._fresh()
        return dict.items(self)

    def __iter__(self):     # also makes dict(model.params) and {**model.params} read through here
        self._fresh()
        return dict.__iter__(self)

    def copy(self):
        return {k: np.array(v) for k, v in self.items()}

    def checked(self, name, value):
        """``value`` as an array of this buffer's dtype and shape, or a FeedError."""
        if name not in self:
            raise FeedError(f"unknown {self.kind} {name!r}; the model has {sorted(self)}")
        stored = dict.__getitem__(self, name)
        array = feed_array(name, value, what=self.kind)
        if hasattr(array, "__cuda_array_interface__"):
            array = device_to_host(array)
        if array.shape != stored.shape:
            raise FeedError(f"{self.kind} {name!r}: the value has shape {array.shape}, "
                            f"expected {stored.shape}")
        return np.asarray(array, dtype=stored.dtype)

    def __setitem__(self, name, value):
        self._write(name, self.checked(name, value))

    def update(self, *args, **kwargs):
        values = dict(*args, **kwargs)
        checked = {k: self.checked(k, v) for k, v in values.items()}
        for k, v in checked.items():
            self._write(k, v)

    def setdefault(self, name, value=None):
        if name not in self:
            self.checked(name, value)   # raises: the names are fixed
        return self[name]

    def _fixed(self, *args, **kwargs):
        raise FeedError(f"the model's {self.kind} arrays cannot be removed; assign a new value instead")

    __delitem__ = pop = popitem = clear = _fixed

    def __reduce__(self):       # a copy is a plain dict of copies
        return dict, (self.copy(),)


class _InterruptGuard:
    """Ctrl-C between training steps, never inside one.

    While ``held_to_step_ends()`` is open (``fit`` and ``train_steps`` open it; only in the
    main thread, where Python delivers signals, and only over a handler set from Python), a
    SIGINT that arrives inside a ``with INTERRUPTS:`` block -- one training step, or one call
    of the compiled training loop -- is held until the block ends and then handed to the
    handler that was there before (Python's default raises KeyboardInterrupt). A step thus
    finishes completely or, interrupted before it began, not at all."""

    def __init__(self):
        self.depth = 0              # open step blocks in the main thread
        self.held = None            # (signum, frame) of a SIGINT held back
        self.previous = None        # the handler held signals go to, while installed

    def held_to_step_ends(self):
        return _Installed(self)

    def _handler(self, signum, frame):
        if self.depth:
            self.held = (signum, frame)
            return
        # outside a step the interrupt goes on now, and ends the run: put the previous handler
        # back first. Python runs a handler as a function is entered, so a Ctrl-C landing as
        # the guard is removed pre-empts _Installed.__exit__ and would leave this one installed
        previous = self.previous or signal.default_int_handler
        if self.previous is not None and threading.get_ident() == _MAIN_THREAD:
            signal.signal(signal.SIGINT, self.previous)
            self.previous, self.held, self.depth = None, None, 0
        previous(signum, frame)

    def __enter__(self):
        if self.previous is not None and threading.get_ident() == _MAIN_THREAD:
            self.depth += 1
            return True
        return False

    def __exit__(self, *exc):
        if self.previous is not None and threading.get_ident() == _MAIN_THREAD and self.depth:
            self.depth -= 1
            if not self.depth and self.held is not None:
                held, self.held = self.held, None
                self.previous(*held)
        return False


class _Installed:
    def __init__(self, guard):
        self.guard, self.installed = guard, False

    def __enter__(self):
        guard = self.guard
        if guard.previous is not None or threading.get_ident() != _MAIN_THREAD:
            return self                 # nested, or not where signals arrive
        previous = signal.getsignal(signal.SIGINT)
        if not callable(previous):      # ignored, the default action, or set outside Python
            return self
        guard.previous, guard.depth, guard.held = previous, 0, None   # before a signal can need it
        try:
            signal.signal(signal.SIGINT, guard._handler)
        except BaseException:           # interrupted right here: as if never installed
            signal.signal(signal.SIGINT, previous)
            guard.previous = None
            raise
        self.installed = True
        return self

    def __exit__(self, *exc):
        if not self.installed:
            return False
        guard = self.guard
        previous = guard.previous
        if previous is None:            # an interrupt outside a step removed the guard already
            return False
        try:
            signal.signal(signal.SIGINT, previous)
        finally:
            held, guard.previous, guard.held, guard.depth = guard.held, None, None, 0
        if held is not None:
            previous(*held)
        return False


_MAIN_THREAD = threading.main_thread().ident
INTERRUPTS = _InterruptGuard()


def _positive_int(name, value, zero=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < (0 if zero else 1):
        raise FeedError(f"{name} must be a{' non-negative' if zero else ' positive'} integer; got {value!r}")
    return int(value)


def device_to_host(array):
    """A device array's values as a NumPy array: numba's own, or another library's (CuPy,
    PyTorch) through a numba view of its memory (numba reads no other library's arrays)."""
    if not hasattr(array, "copy_to_host"):
        from numba import cuda
        array = cuda.as_cuda_array(array)
    return array.copy_to_host()


def _contiguous(value, dtype):
    if type(value) is np.ndarray and value.dtype == dtype and value.flags.c_contiguous:
        return value
    if hasattr(value, "__cuda_array_interface__"):
        return value
    return np.ascontiguousarray(value, dtype=dtype)
