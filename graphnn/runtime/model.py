"""The model object users call: forward, gradients, training steps, fit.

Parameters and optimizer state live in the model (NumPy arrays in the
model's dtype, or device arrays for CUDA) and are passed to the backend's
functions as arguments on every call.
"""
import numpy as np

from ..errors import ArgumentError, FeedError, GraphMixError
from ..graph.node import Graph, Node
from ..graph.random import fill, is_random, sample
from ..graph.traverse import topological
from ..reference.executor import check_feeds
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
        raise TypeError(f"compile takes a Graph, a loss node or a net with .graph and .loss; "
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
        raise ValueError(f"graph {graph.name!r} has no outputs and no loss: name one with "
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

    def __init__(self, graph_or_loss, loss=None, outputs=None, optimizer=None, target="cpu",
                 dtype="float32", seed=None, **options):
        from ..train.optimizers import SGD
        self.graph, self.loss_node, self.output_nodes = _split_graph(graph_or_loss, loss, outputs)
        self.dtype = np.dtype(dtype)
        if self.dtype.name not in ("float32", "float64"):
            raise ValueError(f"dtype must be float32 or float64, got {self.dtype.name}")
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
        from .backends import make_backend
        wait = options.pop("wait", None)
        if target == "cpu":
            options["wait"] = wait
        self.backend = make_backend(target, self, **options)

    # -- feeding --------------------------------------------------------------
    def _feeds(self, program, feeds, training=False):
        # fast path: feeds with the names, shapes and dtypes of an earlier call that was
        # fully checked pass straight through (a training step of a small net is a few us)
        # only arrays have a shape and dtype to key on; anything else takes the full check
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

    def reseed(self, seed):
        """Restart the random inputs' generator (dropout masks, noise) from ``seed``."""
        self.rng = np.random.default_rng(seed)

    def _hyper(self):
        values = {hyper_name(h): v for h, v in self.optimizer.hyper.items()}
        values[hyper_name("t")] = float(self.step_count)
        return values

    # -- the calls ------------------------------------------------------------
    def forward(self, feeds, training=False):
        """The outputs for ``feeds``: {output name: array}.

        ``training=True`` draws the random inputs (dropout, noise) as a training step
        does; by default they take their evaluation values (dropout keeps every unit)."""
        arrays, batch = self._feeds("forward", feeds, training)
        return self.backend.run("forward", arrays, batch)

    __call__ = forward

    def predict(self, feeds, training=False):
        """The first output's array."""
        return next(iter(self.forward(feeds, training).values()))

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
        arrays, batch = self._feeds("step", feeds, training)
        self.step_count += 1
        hyper = self._hyper()
        for k in self._step_hyper_names():
            arrays[k] = hyper[k]
        out = self.backend.run("step", arrays, batch)
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
        steps one by one.

        >>> import graphnn as gn, numpy as np
        >>> net = gn.lecture.regression_net()
        >>> model = gn.compile(net.graph, net.loss, optimizer=gn.SGD(0.1))
        >>> x, y = gn.lecture.noisy_sine(n=64)
        >>> losses = model.train_steps({"x": x, "y": y}, batch_size=16, steps=8)
        >>> losses.shape, model.step_count
        ((8,), 8)
        """
        self._need_loss()
        data, rows = self._training_data(feeds)
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
        return self._run_steps(data, order, 0, steps, batch_size, force=True)

    def _training_data(self, feeds):
        """The feeds of training steps, checked once: ({name: array in the model dtype}, rows)."""
        nodes = [n for n in self.programs["step"].nodes if n.role != "optimizer"]
        arrays, rows = check_feeds([n for n in nodes if not is_random(n) or n.name in feeds], feeds)
        if not any(n.batched for n in nodes if n.kind == "input" and n.name in arrays):
            raise FeedError("train_steps: no feed has a batch axis to take mini-batches from")
        return {k: np.ascontiguousarray(v, dtype=self.dtype) for k, v in arrays.items()}, rows

    def _run_steps(self, data, order, start, steps, batch_size, force=False):
        """Steps on rows order[start + s*batch_size ...]: full batches in the backend's compiled
        loop when it has one, the others (and everything on other targets) one call each."""
        losses = np.empty(steps, dtype=np.float64)
        full = min(steps, (len(order) - start) // batch_size)
        done = 0
        nodes = [n for n in self.programs["step"].nodes if n.role != "optimizer"]
        randoms = [n for n in nodes if is_random(n) and n.name not in data]
        fed_random = any(is_random(n) and n.name in data for n in nodes)
        loop = self.backend.training_loop(batch_size, force) if full > 0 and not fed_random and hasattr(
            self.backend, "training_loop") else None
        if loop is not None:
            drawn = {}
            if randoms:     # the draws the steps would make, in the order they make them
                per_step = [[sample(n, self.rng, batch_size) for n in randoms] for _ in range(full)]
                drawn = {n.name: np.ascontiguousarray(np.stack([d[k] for d in per_step]), dtype=self.dtype)
                         for k, n in enumerate(randoms)}
            hyper = self._hyper()
            losses[:full] = loop(data, drawn, order, start, full, self.step_count,
                                 {k: hyper[k] for k in self._step_hyper_names()})
            self.step_count += full
            done = full
        batched = {k for k, v in data.items() if self.graph.inputs[k].batched}
        for s in range(done, steps):
            rows = order[start + s * batch_size:start + (s + 1) * batch_size]
            losses[s] = self.step({k: (v[rows] if k in batched else v) for k, v in data.items()})
        return losses

    def _step_hyper_names(self):
        if self._step_hyper is None:
            wanted = {n.name for n in self.programs["step"].inputs}
            self._step_hyper = [k for k in self._hyper() if k in wanted]
        return self._step_hyper

    def fit(self, feeds, **kwargs):
        """Train on ``feeds`` (see :func:`graphnn.train.fit`)."""
        from ..train.fit import fit
        return fit(self, feeds, **kwargs)

    def compile_status(self):
        """{program: stage} of the programs called so far on the CPU target.

        ``"reference"``: still compiling, calls run on the NumPy reference executor;
        ``"kernels"``: kernels compiled, a Python driver calls them;
        ``"compiled"``: the whole program is one compiled function.
        Other targets report every program as ``"compiled"``."""
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
            raise ValueError("this model was compiled without a loss; pass loss= to gn.compile")

    # -- parameters -----------------------------------------------------------
    def get_params(self):
        """A float64 copy of every parameter."""
        return {k: np.array(self.backend.read_param(k), dtype=np.float64) for k in self.params}

    def set_params(self, values):
        """Overwrite parameters (shapes must match)."""
        for k, v in values.items():
            if k not in self.params:
                raise FeedError(f"unknown parameter {k!r}; the model has {sorted(self.params)}")
            v = np.asarray(v, dtype=self.dtype)
            if v.shape != self.params[k].shape:
                raise FeedError(f"parameter {k!r}: value has shape {v.shape}, expected {self.params[k].shape}")
            self.backend.write_param(k, v)

    @property
    def source(self):
        """The generated source code (compiled targets)."""
        return self.backend.source

    def _repr_svg_(self):
        """Jupyter shows a compiled model as the picture of its graph."""
        from .. import render
        return render(self).svg()

    def export(self, path):
        """Write the generated module to ``path``: it needs only numpy and numba.

        Its functions take the feeds, then the flat ``params``, ``state``,
        ``hyper`` and ``work`` arrays and the batch size ``N``; ``_META``
        inside it gives every buffer's place in those arrays.
        """
        from pathlib import Path

        from .cache import write_atomic
        path = Path(path)
        write_atomic(path, self.backend.source)
        return path

    def __repr__(self):
        return (f"<Model {self.graph.name!r} target={self.target} dtype={self.dtype.name} "
                f"params={sum(v.size for v in self.params.values())}>")


def _positive_int(name, value, zero=False):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < (0 if zero else 1):
        raise FeedError(f"{name} must be a{' non-negative' if zero else ' positive'} integer; got {value!r}")
    return int(value)


def _contiguous(value, dtype):
    if type(value) is np.ndarray and value.dtype == dtype and value.flags.c_contiguous:
        return value
    if hasattr(value, "__cuda_array_interface__"):
        return value
    return np.ascontiguousarray(value, dtype=dtype)
