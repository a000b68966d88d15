"""``fit``: mini-batch training with shuffling, metrics, validation and early stopping.

Each step is the model's compiled training step (forward, backward and the
optimizer update in one call). Everything random -- the shuffling, dropout
and noise draws, augmentation -- comes from generators seeded by ``seed``,
so the same call gives the same history and parameters.

>>> import graphnn as gn
>>> net = gn.lecture.regression_net()
>>> model = gn.compile(net.graph, net.loss, optimizer=gn.Adam(lr=0.05), target="reference")
>>> x, y = gn.lecture.noisy_sine(n=64)
>>> history = model.fit({"x": x, "y": y}, epochs=3, batch_size=16, verbose=False)
>>> len(history["loss"])
3
"""
import importlib.util
import math
import time
import warnings
from collections.abc import Mapping

import numpy as np
import sympy as sp

if importlib.util.find_spec("ipywidgets") is not None:
    from tqdm.auto import tqdm      # a widget in Jupyter
else:
    from tqdm.std import tqdm       # tqdm.auto would warn "IProgress not found" in Jupyter

from ..errors import ArgumentError, FeedError
from ..graph.traverse import topological
from ..reference.executor import check_feeds, feed_array
from ..runtime.model import INTERRUPTS, _positive_int
from . import metrics as metric_functions
from .callbacks import Callbacks

CHUNK_SECONDS = 0.2      # fit returns to Python about this often when steps run in a compiled loop


class History:
    """Per-epoch logs: ``history["loss"]``, ``history["val_accuracy"]``, ... (Keras' ``History``).

    ``epoch`` lists the epochs run, ``best_epoch`` the one early stopping kept,
    ``stopped_early`` whether patience ran out.
    """

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.best_epoch = None
        self.stopped_early = False
        self.stopped_by = None      # "patience", "callback" (model.stop_training) or None

    def append(self, epoch, logs):
        self.epoch.append(epoch)
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)

    def __getitem__(self, key):
        return self.history[key]

    def __contains__(self, key):
        return key in self.history

    def keys(self):
        return self.history.keys()

    def last(self):
        """The last epoch's logs."""
        return {k: v[-1] for k, v in self.history.items()}

    def __repr__(self):
        last = ", ".join(f"{k}={v:.4g}" for k, v in self.last().items())
        return f"<History {len(self.epoch)} epochs: {last}>"


def _user_inputs(nodes):
    return {n.name for n in nodes if n.kind == "input" and n.role not in ("random", "optimizer")}


def _target_and_output(model, target, output):
    outputs = model.output_nodes
    if output is None:
        output = next(iter(outputs))
    elif output not in outputs:
        raise ArgumentError(f"fit: output {output!r} is not an output of the model; it has {sorted(outputs)}")
    if target is None and model.loss_node is not None:
        candidates = sorted(_user_inputs(topological([model.loss_node]))
                            - _user_inputs(topological([outputs[output]])))
        if len(candidates) != 1:
            raise ArgumentError(f"fit: cannot tell which feed holds the targets (candidates {candidates}); "
                             f"pass target='name'")
        target = candidates[0]
    return target, output


def as_feeds(model, x, y=None, what="fit", target=None, output=None):
    """The feeds dict of ``x``: a dict as it is; a bare array for the one input the model's
    outputs read, with ``y`` (if given) for the target (the one other input the loss reads)."""
    if isinstance(x, Mapping):
        if y is not None:
            raise ArgumentError(f"{what}: pass the targets inside the feeds dict, or x and y as "
                                f"arrays; not a dict and y=")
        return x
    if isinstance(x, (list, tuple)) and any(hasattr(v, "shape") for v in x):
        raise FeedError(f"{what}: feeds must be a dict {{input name: array}} (or one array for a "
                        f"graph with one input); got a {type(x).__name__} of arrays")
    inputs = sorted(_user_inputs(model.programs["forward"].nodes))
    if len(inputs) != 1:
        raise FeedError(f"{what}: a bare array feeds a graph with one input; graph "
                        f"{model.graph.name!r} has inputs {inputs}: pass a dict "
                        f"{{{', '.join(repr(k) + ': ...' for k in inputs)}}}")
    feeds = {inputs[0]: x}
    if y is None and what != "predict" and model.loss_node is not None:
        others = sorted(_user_inputs(topological([model.loss_node])) - {inputs[0]})
        if others:
            raise FeedError(f"{what}: the loss of {model.graph.name!r} also reads input(s) {others} "
                            f"(the targets); pass them as y ({what}(X, y)) or pass a feeds dict")
    if y is not None:
        if model.loss_node is None:
            raise ArgumentError(f"{what}: y= needs a loss to read it; this model has none")
        name, _ = _target_and_output(model, target, output)
        if name is None or name == inputs[0]:
            raise ArgumentError(f"{what}: the loss of {model.graph.name!r} reads no target besides "
                                f"input {inputs[0]!r}; leave out y")
        feeds[name] = y
    return feeds


def _arrays(feeds, what):
    """{name: NumPy array} of a feeds dict, each checked (see :func:`feed_array`)."""
    if not isinstance(feeds, Mapping):
        raise FeedError(f"{what} must be a dict {{input name: array}}; got a {type(feeds).__name__}")
    return {k: np.asarray(feed_array(k, v)) for k, v in feeds.items()}


def _batched(model, feeds, what="fit"):
    """Names of the feeds that have a batch axis, and their common row count (at least one)."""
    inputs = model.graph.inputs
    names = [k for k in feeds if k in inputs and inputs[k].batched]
    if not names:
        raise FeedError(f"{what}: no feed has a batch axis")
    flat = [k for k in names if feeds[k].ndim == 0]
    if flat:
        raise FeedError(f"{what}: feed {flat[0]!r} is a single number; input {flat[0]!r} takes rows")
    rows = {len(feeds[k]) for k in names}
    if len(rows) != 1:
        raise FeedError(f"{what}: feeds have different numbers of rows: "
                        f"{ {k: len(feeds[k]) for k in names} }")
    n = rows.pop()
    if n == 0:
        raise FeedError(f"{what}: the feeds have 0 rows ({', '.join(names)}); there is nothing to "
                        f"{'evaluate' if what != 'fit' else 'train on'}")
    return names, n


def _split(feeds, batched, n, fraction, validation_data):
    """(training feeds, validation feeds): the last ``fraction`` of the rows held out."""
    if validation_data is not None:
        raise ArgumentError("fit: pass validation_data or validation_split, not both")
    if isinstance(fraction, (bool, np.bool_)) or not isinstance(fraction, (int, float, np.floating)) \
            or not 0 < fraction < 1:
        raise ArgumentError(f"fit: validation_split must be a fraction between 0 and 1 "
                            f"(e.g. 0.2); got {fraction!r}")
    cut = int(n * (1 - fraction))       # as Keras: the last rows, before shuffling
    if cut < 1 or cut >= n:
        raise FeedError(f"fit: validation_split={fraction} of {n} rows leaves "
                        f"{'no training' if cut < 1 else 'no validation'} rows; feed more rows "
                        f"or change the fraction")
    return _take(feeds, batched, slice(0, cut)), _take(feeds, batched, slice(cut, n))


def _take(feeds, batched, rows):
    return {k: (v[rows] if k in batched else v) for k, v in feeds.items()}


def _augmenter(model, augment):
    if augment is None or isinstance(augment, dict):
        return augment or {}
    first = next((k for k, n in model.graph.inputs.items() if n.batched), None)
    return {first: augment}


def evaluate(model, feeds, metrics=(), target=None, output=None, batch_size=1024):
    """Loss and metrics on ``feeds`` in evaluation mode (dropout off, no noise):
    {"loss": ..., "accuracy": ...}. Runs in chunks of ``batch_size`` rows."""
    feeds = _arrays(feeds, "evaluate: feeds")
    batched, n = _batched(model, feeds, "evaluate")
    batch_size = _positive_int("evaluate: batch_size", batch_size)
    named = [metric_functions.resolve(m) for m in metrics]
    logs = {}
    if model.loss_node is not None:
        total = 0.0
        for start in range(0, n, batch_size):
            rows = slice(start, min(n, start + batch_size))
            total += model.evaluate_loss(_take(feeds, batched, rows)) * (rows.stop - rows.start)
        logs["loss"] = total / n
    if named:
        target, output = _target_and_output(model, target, output)
        inputs = _user_inputs(model.programs["forward"].nodes)
        parts = []
        for start in range(0, n, batch_size):
            rows = slice(start, min(n, start + batch_size))
            chunk = {k: v for k, v in _take(feeds, batched, rows).items() if k in inputs}
            parts.append(model.forward(chunk)[output])
        prediction = np.concatenate(parts)
        for name, fn in named:
            logs[name] = fn(prediction, feeds[target])
    return logs


def _use_optimizer(model, optimizer):
    """Take the hyper-parameters of ``optimizer`` when its update rules are the compiled ones
    (they are kernel arguments: no recompile); a different rule needs gn.compile."""
    if optimizer is None:
        return
    compiled = model.optimizer
    same = (compiled is not None and type(compiled) is type(optimizer)
            and {k: sp.srepr(v) for k, v in compiled.rules().items()}
            == {k: sp.srepr(v) for k, v in optimizer.rules().items()})
    if not same:
        raise ArgumentError(f"fit(optimizer={optimizer!r}): the model was compiled with {compiled!r}; "
                         f"fit can change its hyper-parameters (lr, momentum, ...) but not its update "
                         f"rule -- pass optimizer= to gn.compile instead")
    compiled.hyper.update(optimizer.hyper)


def _compile_step(model, batch_size, verbose):
    """Compile the training step before the first batch, saying so and how long it took.

    Returns the build when it goes on in the background (``gn.compile(..., wait=False)``):
    the first steps then run on the reference executor and ``fit`` says when they switch."""
    prepare = getattr(model.backend, "prepare", None)
    if prepare is None:
        return None
    if verbose:
        print(f"compiling the training step of {model.graph.name!r} ...", end=" ", flush=True)
    build = prepare("step", batch_size)
    if build is None:       # (CUDA, wait=True: its kernels compile as the first step launches them)
        if verbose:
            print("as the first step runs", flush=True)
        return None
    if build.stage == "reference":
        if verbose:
            print("in the background; the first steps run on the NumPy reference meanwhile", flush=True)
        return build
    if verbose:
        print(f"done in {_took(build)}", flush=True)
    return None


def _took(build):
    seconds = sum(v for v in build.timings.values() if isinstance(v, float))
    reused = "" if build.cache_hit else f", {build.new_kernels} new kernel(s)"
    return f"{seconds:.2f} s{reused}"


def _restart_clock(bar):
    """Measure the bar's rate (and ETA) from now on, counting the steps done as its start."""
    if bar.disable:
        return
    done = bar.n
    bar.reset()
    bar.n = bar.last_print_n = bar.initial = done
    bar.refresh()


def _improved(value, best, mode, min_delta):
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def fit(model, feeds, y=None, epochs=10, batch_size=32, shuffle=True, validation_data=None,
        validation_split=None, metrics=(), patience=None, monitor=None, min_delta=0.0,
        restore_best=True, seed=0, verbose=True, augment=None, target=None, output=None,
        eval_batch_size=1024, optimizer=None, callbacks=None, distributed=None):
    """Train ``model`` on ``feeds`` ({input name: array}) and return a :class:`History`.

    * ``feeds, y``: as in Keras, ``fit(X, y)`` with bare arrays where the outputs read one
      input (``X``) and the loss one other (the target, ``y``).
    * ``epochs``, ``batch_size``, ``shuffle``: mini-batches drawn without replacement
      each epoch (the last batch may be smaller).
    * ``metrics``: names ("accuracy", "mse", "mae", ...) or callables ``f(pred, target)``,
      computed after each epoch in evaluation mode on the training data and on
      ``validation_data`` (a feeds dict, or ``(X, y)``); logged as "accuracy", "val_accuracy"...
    * ``validation_split``: a fraction in (0, 1): the last rows of the feeds, taken before
      any shuffling (as Keras), are held out as ``validation_data``.
      The prediction is ``output`` (default the model's first output) and the target the
      feed ``target`` (default: the one input the loss reads and the output does not).
    * ``patience``: early stopping after that many epochs without improvement of
      ``monitor`` (default "val_loss" with validation data, else "loss"); the best
      parameters are restored (``restore_best``).
    * ``augment``: a callable ``f(array, rng) -> array`` applied to the first batched input
      of every batch (e.g. :class:`graphnn.data.Augment`), or {input name: callable}.
    * ``seed``: shuffling, dropout/noise draws and augmentation are seeded from it.
    * ``verbose``: a tqdm progress bar with the running loss and the last metrics.
    * ``optimizer``: new hyper-parameters for the compiled optimizer, e.g. ``gn.SGD(lr=0.1)`` on
      a model compiled with the default ``SGD(0.01)`` (the same update rule; no recompile).
      A learning-rate schedule made with ``steps=None`` (e.g. ``gn.cosine()``) is set to end
      with this fit's last step; with a schedule the logs have "learning_rate" (the last step's).
    * ``callbacks``: objects with ``on_epoch_end(epoch, logs)``, ``on_step_end(step, logs)``
      (every ``callback.every`` steps), ``on_train_begin(logs)``, ``on_train_end(logs)``;
      see :mod:`graphnn.train.callbacks`. ``model.stop_training = True`` ends the fit.
    * ``distributed="mpi"``: data-parallel training over the processes ``mpiexec`` started,
      each on its share of every batch, with the result of one process (:mod:`graphnn.distributed`).

    The arguments, the feeds and ``validation_data`` are checked before the first step
    (:class:`~graphnn.FeedError` naming the one at fault). Ctrl-C lets the step in progress
    finish, then raises KeyboardInterrupt: parameters, optimizer state and ``step_count``
    are those of the last completed step, and ``model.history`` has the completed epochs.
    """
    if distributed is not None:
        from ..distributed import fit as distributed_fit
        return distributed_fit(model, feeds, y, distributed, epochs=epochs, batch_size=batch_size,
                               shuffle=shuffle, validation_data=validation_data,
                               validation_split=validation_split, metrics=metrics, patience=patience,
                               monitor=monitor, min_delta=min_delta, restore_best=restore_best, seed=seed,
                               verbose=verbose, augment=augment, target=target, output=output,
                               eval_batch_size=eval_batch_size, optimizer=optimizer, callbacks=callbacks)
    model._need_loss()
    epochs = _positive_int("fit: epochs", epochs, zero=True)
    if batch_size is not None:
        batch_size = _positive_int("fit: batch_size", batch_size)
    if patience is not None:
        patience = _positive_int("fit: patience", patience, zero=True)
    eval_batch_size = _positive_int("fit: eval_batch_size", eval_batch_size)
    feeds = _arrays(as_feeds(model, feeds, y, "fit", target, output), "fit: feeds")
    batched, n = _batched(model, feeds)
    if validation_split is not None:
        feeds, validation_data = _split(feeds, batched, n, validation_split, validation_data)
        n -= len(validation_data[batched[0]])
    model._check_training_feeds(feeds, "fit")        # names, shapes and dtypes, before any step
    if validation_data is not None:                  # before training, not after the first epoch
        if isinstance(validation_data, tuple) and len(validation_data) == 2:
            validation_data = as_feeds(model, *validation_data, "fit: validation_data", target, output)
        validation_data = _arrays(validation_data, "fit: validation_data")
        _batched(model, validation_data, "fit: validation_data")
        check_feeds([node for node in model.programs["gradients"].nodes if node.role != "optimizer"],
                    validation_data)
    _use_optimizer(model, optimizer)
    callbacks = Callbacks(callbacks, model)
    if not isinstance(shuffle, (bool, np.bool_)):
        raise ArgumentError(f"fit: shuffle must be True or False, got {shuffle!r}")
    if batch_size is None or batch_size > n:
        batch_size = n
    named = [metric_functions.resolve(m)[0] for m in metrics]
    if named:  # fail before training when targets cannot be found
        _target_and_output(model, target, output)
    monitor = monitor or ("val_loss" if validation_data is not None else "loss")
    mode = "min" if monitor.endswith("loss") or monitor.endswith(("mse", "mae")) else "max"
    try:
        shuffle_seed, random_seed, augment_seed = np.random.SeedSequence(seed).spawn(3)
    except (TypeError, ValueError) as exc:
        raise ArgumentError(f"fit: seed must be a non-negative integer (or None); "
                            f"got {seed!r}: {exc}") from None
    order_rng, augment_rng = np.random.default_rng(shuffle_seed), np.random.default_rng(augment_seed)
    model.reseed(random_seed)
    augmenters = _augmenter(model, augment)
    history = History()
    best, best_params, waited = None, None, 0
    batches = math.ceil(n / batch_size)
    scheduled = model.optimizer is not None and model.optimizer.schedule is not None
    if scheduled and epochs:    # a schedule of steps=None ends with this fit's last step
        warm = model.optimizer.hyper.get("warmup_steps", 0.0)
        for name in model.optimizer.pending:    # the decay reaches its end one step after the last
            model.optimizer.hyper[name] = max(1.0, model.step_count + epochs * batches - warm)
    model.stop_training = False
    build = _compile_step(model, batch_size, verbose)   # before the bar: its ETA starts after it
    data = None if augmenters else model._training_data(feeds)[0]
    chunk, timed = 1, False
    bar = tqdm(total=epochs * batches, disable=not verbose, unit="batch", dynamic_ncols=True, leave=True)
    try:
        # Ctrl-C ends the step in progress first: the model is left after a completed step
        with INTERRUPTS.held_to_step_ends():
            callbacks.call("on_train_begin", {})
            for epoch in range(epochs):
                bar.set_description(f"epoch {epoch + 1}/{epochs}")
                order = order_rng.permutation(n) if shuffle else np.arange(n)
                total, b = 0.0, 0
                while b < batches:
                    if augmenters:      # augmentation runs in Python, on each batch
                        rows = order[b * batch_size:(b + 1) * batch_size]
                        batch = _take(feeds, batched, rows)
                        for name, fn in augmenters.items():
                            batch[name] = fn(batch[name], augment_rng)
                        with INTERRUPTS:
                            losses, count = [model.step(batch)], 1
                    else:               # a chunk of steps; on the CPU one compiled call
                        count = min(chunk, batches - b, callbacks.steps_to_next(model.step_count) or chunk)
                        started = time.perf_counter()
                        losses = model._run_steps(data, order, b * batch_size, count, batch_size,
                                                  in_order=not shuffle)
                        if time.perf_counter() - started < CHUNK_SECONDS / 2:
                            chunk *= 2      # return to Python (bar, callbacks) a few times a second
                    for s, loss in enumerate(losses):
                        total += float(loss) * (min(n, (b + s + 1) * batch_size) - (b + s) * batch_size)
                    b += count
                    if build is not None and build.stage != "reference":
                        if verbose:
                            bar.write(f"compiled the training step in the background in {_took(build)}; "
                                      f"steps now run the compiled kernels")
                        build, timed = None, False
                    bar.update(count)
                    if not timed and build is None:     # the ETA counts compiled steps only:
                        _restart_clock(bar)             # the first ones include compiling
                        timed = True
                    bar.set_postfix(loss=f"{total / min(n, b * batch_size):.4g}", refresh=False)
                    if callbacks.stepping:
                        callbacks.step_end(model.step_count, {
                            "loss": float(losses[-1]), "epoch": epoch,
                            "epoch_loss": total / min(n, b * batch_size),
                            **({"learning_rate": model.optimizer.learning_rate(model.step_count)}
                               if scheduled else {})})
                    if model.stop_training:
                        break
                logs = {"loss": total / min(n, b * batch_size)}
                if scheduled:
                    logs["learning_rate"] = model.optimizer.learning_rate(model.step_count)
                if not np.isfinite(logs["loss"]):
                    warnings.warn(f"fit: the loss became {logs['loss']} in epoch {epoch + 1}; stopping",
                                  RuntimeWarning, stacklevel=2)
                    history.append(epoch, logs)
                    break
                if named:
                    evaluated = evaluate(model, feeds, metrics, target, output, eval_batch_size)
                    logs.update({k: v for k, v in evaluated.items() if k != "loss"})
                if validation_data is not None:
                    evaluated = evaluate(model, validation_data, metrics, target, output, eval_batch_size)
                    logs.update({f"val_{k}": v for k, v in evaluated.items()})
                history.append(epoch, logs)
                bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=True)
                callbacks.call("on_epoch_end", epoch, dict(logs))
                if model.stop_training:
                    history.stopped_by = "callback"
                    if verbose:
                        bar.total = bar.n
                        bar.refresh()
                        bar.write(f"stopped at epoch {epoch + 1}: a callback set model.stop_training")
                    break
                if monitor not in logs:
                    raise ArgumentError(f"fit: monitor {monitor!r} is not logged; logs are {sorted(logs)}")
                if _improved(logs[monitor], best, mode, min_delta):
                    best, waited, history.best_epoch = logs[monitor], 0, epoch
                    if patience is not None and restore_best:
                        best_params = model.get_params()
                else:
                    waited += 1
                    if patience is not None and waited >= patience:
                        history.stopped_early, history.stopped_by = True, "patience"
                        break
            restored = best_params is not None and history.best_epoch != history.epoch[-1]
            if restored:
                with INTERRUPTS:
                    model.set_params(best_params)
            callbacks.call("on_train_end", history.last() if history.epoch else {})
            if history.stopped_early and verbose:
                bar.total = bar.n       # the bar ends full, and says why it ended early
                bar.refresh()
                bar.write(f"early stop at epoch {history.epoch[-1] + 1}: {monitor} did not improve "
                          f"for {patience} epoch(s); "
                          + (f"restored the best weights (epoch {history.best_epoch + 1})" if restored
                             else "kept the last weights"))
    finally:
        bar.close()
        model._release_data()       # the training data a backend kept (CUDA: on the device)
        model.history = history     # the epochs completed, also when interrupted
    return history
