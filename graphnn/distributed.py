"""Data-parallel training over MPI: ``model.fit(X, y, distributed="mpi")`` under ``mpiexec``.

Every process (rank) runs the same script, builds the same model and loads the same data.
``fit`` then checks that the ranks agree (the graph, the optimizer, the data), copies rank 0's
parameters, optimizer state and step count to every rank, and trains: each step's global batch
-- the rows ``fit`` takes from the permutation drawn from the seed shared by every rank -- is
split into contiguous shards, one per rank; each rank runs the compiled gradients program on its
shard, the weighted gradients and loss go through one in-place ``Allreduce`` of one flat
buffer, and each rank runs the compiled optimizer update (the ``apply`` program). Random inputs
(dropout masks, noise) are drawn for the whole global batch from the shared generator on every
rank, and each rank takes its shard's rows. Every rank thus ends every step with the same
parameters, optimizer state and loss history, equal to those of one process training on the
same global batches (see docs/distributed.md).

>>> import graphnn as gn
>>> gn.distributed.rank(), gn.distributed.size()      # one process without mpiexec
(0, 1)
"""
import contextlib
import hashlib
import os
import sys
import time
import traceback

import numpy as np

from .errors import ArgumentError, DistributedError, GraphnnError
from .graph.random import is_random, sample

INSTALL = 'pip install "graphnn[mpi]"'


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise DistributedError(f"distributed training needs mpi4py and an MPI library; install them "
                               f"with {INSTALL} (mpi4py and MPICH, with its mpiexec). Importing "
                               f"mpi4py failed: {exc}") from None
    return MPI


def world():
    """``MPI.COMM_WORLD`` (mpi4py), the processes ``mpiexec`` started."""
    return _mpi().COMM_WORLD


def rank():
    """This process's number, 0 to ``size() - 1``; 0 without mpiexec."""
    return world().Get_rank()


def size():
    """How many processes train together; 1 without mpiexec."""
    return world().Get_size()


def save(model, path, comm=None):
    """Save a checkpoint of ``model`` (:func:`graphnn.save`, atomic) from rank 0 alone; every
    rank waits until the file is written, then any rank can :func:`graphnn.load` it."""
    from .io import save as save_model
    comm = comm or world()
    written, error = None, None
    if comm.Get_rank() == 0:
        try:
            written = save_model(model, path)
        except GraphnnError as exc:      # every rank raises it, none waits for rank 0
            error = str(exc)
    error = comm.bcast(error, root=0)
    if error is not None:
        raise DistributedError(f"rank 0 could not save the checkpoint {str(path)!r}: {error}")
    return comm.bcast(written, root=0)


def fit(model, feeds, y=None, distributed="mpi", comm=None, **options):
    """:func:`graphnn.train.fit` over the ranks of ``comm`` (default every process mpiexec
    started); the same arguments and the same :class:`~graphnn.train.History` on every rank.
    ``model.fit(X, y, distributed="mpi")`` calls this. The progress bar shows on rank 0 only."""
    from .train.fit import as_feeds, fit as train_fit
    if distributed != "mpi":
        raise ArgumentError(f"fit: distributed must be 'mpi' (training over MPI processes, run under "
                            f"mpiexec) or None; got {distributed!r}")
    comm = comm or world()
    model._need_loss()
    trainer = _Trainer(model, comm)
    arrays = as_feeds(model, feeds, y, "fit", options.get("target"), options.get("output"))
    trainer.check(arrays)
    options["verbose"] = options.get("verbose", True) and comm.Get_rank() == 0
    with _aborting(comm), trainer.installed():
        history = train_fit(model, arrays, **options)
    history.distributed = {"ranks": comm.Get_size(), "steps": trainer.steps,
                           **{f"{k}_s": v for k, v in trainer.seconds.items()}}
    return history


class _Trainer:
    """The distributed step of one model: shard, gradients, one Allreduce, apply."""

    def __init__(self, model, comm):
        from .lower.program import build_apply
        self.model, self.comm = model, comm
        self.mpi = _mpi()
        buffers = sorted(k for k in getattr(model.graph, "updates", {}) if k in model.params)
        if buffers:
            raise DistributedError(f"graph {model.graph.name!r}: training steps write buffer(s) {buffers} "
                                   f"(BatchNorm running statistics), which distributed training does not "
                                   f"synchronize yet; use LayerNorm, or train in one process")
        gradients = model.programs["gradients"]
        self.names = [k[len("grad::"):] for k in gradients.outputs if k.startswith("grad::")]
        if "apply" not in model.programs:
            params = {n.name: n for n in gradients.nodes if n.kind == "parameter"}
            model.programs["apply"] = build_apply(model.graph, model.optimizer, params, self.names)
        add = getattr(model.backend, "add_programs", None)     # CUDA: one module of every program
        if add is not None:
            add()
        self.apply_inputs = {n.name for n in model.programs["apply"].inputs}
        shapes = [model.params[k].shape for k in self.names]
        sizes = [int(np.prod(s, dtype=np.int64)) for s in shapes]
        self.buffer = np.zeros(1 + sum(sizes), dtype=model.dtype)      # [loss, gradients...]
        offsets = np.cumsum([1, *sizes])
        self.views = {f"grad::{k}": self.buffer[o:o + n].reshape(s)
                      for k, o, n, s in zip(self.names, offsets, sizes, shapes)}
        nodes = [n for n in model.programs["step"].nodes if n.role != "optimizer"]
        self.randoms = [n for n in nodes if is_random(n)]      # in the order a step draws them
        # this rank's seconds in each part of its steps (history.distributed): the Allreduce's
        # includes waiting for the slowest rank
        self.seconds = {"gradients": 0.0, "allreduce": 0.0, "apply": 0.0}
        self.steps = 0

    # -- before training ---------------------------------------------------------------
    def check(self, feeds):
        """Every rank agrees on the graph, optimizer and data (else every rank raises), rank 0's
        parameters, optimizer state and step count are copied to all, the loss is a mean."""
        model, comm = self.model, self.comm
        rows = self._fingerprint(feeds)
        digest = hashlib.sha256(repr(rows).encode()).hexdigest()
        digests = comm.allgather(digest)
        if len(set(digests)) > 1:
            every = comm.allgather(rows)
            other = next(r for r, d in enumerate(digests) if d != digests[0])
            raise DistributedError(_difference(model, every[0], every[other], other))
        flat = np.concatenate([np.ravel(v) for v in (*model.params.values(), *model.state.values())]
                              + [np.zeros(0, model.dtype)]).astype(model.dtype)
        comm.Bcast(flat, root=0)
        offset = 0
        for values, write in ((model.params, model.set_params), (model.state, model.state.update)):
            new = {}
            for k, v in values.items():
                new[k] = flat[offset:offset + v.size].reshape(v.shape)
                offset += v.size
            if new:
                write(new)
        model.step_count = comm.bcast(model.step_count, root=0)
        _check_mean_loss(model, feeds)

    def _fingerprint(self, feeds):
        """[(what, name, digest, text)]: the programs' nodes in order, the optimizer, the dtype
        and each feed's bytes; equal on every rank that builds the same model on the same data."""
        from .graph.text import node_line
        model = self.model
        rows = [("model", "dtype", model.dtype.name, model.dtype.name),
                ("model", "optimizer", repr(model.optimizer), repr(model.optimizer))]
        for name in ("gradients", "apply"):
            for n in model.programs[name].nodes:
                line = node_line(n)
                digest = hashlib.sha256(f"{n.key} {line}".encode()).hexdigest()[:16]
                rows.append(("node", n.name, digest, line))
        for k in sorted(feeds):
            v = np.ascontiguousarray(feeds[k])
            digest = hashlib.sha256(f"{v.dtype} {v.shape}".encode() + v.tobytes()).hexdigest()[:16]
            rows.append(("feed", k, digest, f"{v.dtype} array of shape {v.shape}"))
        return rows

    # -- training ----------------------------------------------------------------------
    @contextlib.contextmanager
    def installed(self):
        """``fit`` runs its steps through this trainer: the model's ``step`` and ``_run_steps``
        and its backend's ``prepare`` are replaced for the duration of the fit."""
        model, backend = self.model, self.model.backend
        prepare = getattr(backend, "prepare", None)
        model.step, model._run_steps = self.step, self.run_steps
        if prepare is not None:     # fit compiles the step program; the ranks run these two
            def prepare_programs(name, batch):
                prepare("apply", 1)
                model.wait_compiled(["apply"])
                return prepare("gradients" if name == "step" else name, batch)
            backend.prepare = prepare_programs
        try:
            yield self
        finally:
            del model.step, model._run_steps
            if prepare is not None:
                del backend.prepare

    def run_steps(self, data, order, start, steps, batch_size, force=False, in_order=False):
        """As :meth:`Model._run_steps`: the steps on rows ``order[start + s*batch_size ...]``."""
        batched = {k for k, v in data.items() if self.model.graph.inputs[k].batched}
        losses = np.empty(steps, dtype=np.float64)
        for s in range(steps):
            rows = order[start + s * batch_size:start + (s + 1) * batch_size]
            losses[s] = self.step({k: (v[rows] if k in batched else v) for k, v in data.items()})
        return losses

    def step(self, feeds, training=True):
        """One step on the global batch ``feeds`` (the same on every rank); its loss."""
        from .runtime.model import INTERRUPTS
        model, comm = self.model, self.comm
        inputs = model.graph.inputs
        batched = {k for k, v in feeds.items() if k in inputs and inputs[k].batched}
        total = len(feeds[next(iter(batched))])
        feeds = dict(feeds)
        if training:    # the global batch's draws, as one process makes them
            for n in self.randoms:
                if n.name not in feeds:
                    feeds[n.name] = sample(n, model.rng, total)
                    if n.batched:
                        batched.add(n.name)
        low, high = shard(total, comm.Get_rank(), comm.Get_size())
        clock, seconds = time.perf_counter, self.seconds
        with INTERRUPTS, model.lock:
            started = clock()
            self.buffer[:] = 0
            if high > low:
                part = {k: (v[low:high] if k in batched else v) for k, v in feeds.items()}
                arrays, rows = model._feeds("gradients", part, training)
                out = model.backend.run("gradients", arrays, rows)
                weight = (high - low) / total       # exact for a loss that is a mean over rows
                self.buffer[0] = out["loss"] * weight
                for k, view in self.views.items():
                    np.multiply(out[k], weight, out=view)
            computed = clock()
            comm.Allreduce(self.mpi.IN_PLACE, self.buffer, op=self.mpi.SUM)
            reduced = clock()
            hyper = model._hyper(t=model.step_count + 1)
            given = {k: v for k, v in hyper.items() if k in self.apply_inputs}
            model.backend.run("apply", {**self.views, **given}, 1)
            model.step_count += 1
            seconds["gradients"] += computed - started
            seconds["allreduce"] += reduced - computed
            seconds["apply"] += clock() - reduced
            self.steps += 1
        return float(self.buffer[0])


def shard(rows, rank, size):
    """(first, end) of the contiguous rows of ``rank`` among ``size`` ranks: the first
    ``rows % size`` ranks take one row more."""
    base, extra = divmod(rows, size)
    first = rank * base + min(rank, extra)
    return first, first + base + (rank < extra)


def _difference(model, mine, theirs, other):
    """The message for ranks 0 and ``other`` that disagree: the first row that differs."""
    for a, b in zip(mine, theirs):
        if a[:3] != b[:3]:
            what = {"node": "node", "feed": "feed", "model": "model"}[a[0]]
            if a[0] == "feed" or b[0] == "feed":
                hint = "every rank must load the same data (fit splits each batch among the ranks)"
            else:
                hint = "every rank must run the same script and build the same model"
            return (f"rank {other} disagrees with rank 0 on graph {model.graph.name!r}: first "
                    f"differing {what} {a[1]!r} (rank 0: {a[3]}; rank {other}: "
                    f"{b[1] if b[1] != a[1] else ''}{' ' if b[1] != a[1] else ''}{b[3]}); {hint}")
    longer = "rank 0" if len(mine) > len(theirs) else f"rank {other}"
    extra = (mine if len(mine) > len(theirs) else theirs)[min(len(mine), len(theirs))]
    return (f"rank {other} disagrees with rank 0 on graph {model.graph.name!r}: {longer} has more, "
            f"first {extra[0]} {extra[1]!r} ({extra[3]}); every rank must run the same script and "
            f"build the same model")


def _check_mean_loss(model, feeds):
    """Refuse a loss that is not a mean over the rows: the ranks' gradients are weighted by
    their share of the rows, which is exact for a mean (plus terms that do not read the rows,
    such as weight penalties) and wrong for a sum. A mean keeps its value when every row is
    fed twice; a sum doubles."""
    inputs = model.graph.inputs
    batched = [k for k in feeds if k in inputs and inputs[k].batched]
    count = min(len(feeds[batched[0]]), 4)
    once = {k: (v[:count] if k in batched else v) for k, v in feeds.items()}
    twice = {k: (np.concatenate([v[:count], v[:count]]) if k in batched else v) for k, v in feeds.items()}
    one, two = model.evaluate_loss(once), model.evaluate_loss(twice)
    tol = 1e-9 if model.dtype == np.float64 else 1e-4
    if not abs(two - one) <= tol * max(abs(one), abs(two), 1e-30):
        raise DistributedError(f"the loss of graph {model.graph.name!r} is not a mean over the rows of "
                               f"the batch (its value went from {one:.6g} to {two:.6g} when every row "
                               f"was fed twice): distributed training weights each rank's gradients "
                               f"by its share of the rows, which is exact only for a mean. Divide the "
                               f"summed loss by the batch size (gn.BATCH_SIZE), e.g. use a mean")


@contextlib.contextmanager
def _aborting(comm):
    """An error on one rank stops every rank (``Abort``) instead of leaving them waiting in a
    collective call for it."""
    try:
        yield
    except BaseException as exc:
        if comm.Get_size() == 1:
            raise
        sys.stderr.write(f"graphnn.distributed: rank {comm.Get_rank()} of {comm.Get_size()} failed "
                         f"during fit; stopping every rank (MPI Abort):\n"
                         + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
        sys.stderr.flush()
        comm.Abort(1)
        os._exit(1)     # MPICH's Abort may return before mpiexec ends the processes: go no further
