"""Callbacks: code of yours that ``fit`` runs between steps and epochs.

A callback is any object with some of these methods (all optional)::

    on_train_begin(logs)           before the first step
    on_epoch_end(epoch, logs)      after each epoch; logs as in the History ("loss", "val_loss"...)
    on_step_end(step, logs)        every ``every`` steps (its attribute; default 1), step =
                                   model.step_count; logs {"loss", "epoch", "epoch_loss", "learning_rate"}
    on_train_end(logs)             after the last epoch (also after an early stop)

``fit`` gives each callback the model first (``set_model(model)``, or the attribute
``model``). Setting ``model.stop_training = True`` in a callback ends ``fit`` after the
step or epoch in progress, as in Keras.

Steps run in a compiled loop that returns to Python only now and then; a callback with
``on_step_end`` makes it return every ``every`` steps, so a large ``every`` keeps
training fast.
"""
import numbers

from ..errors import ArgumentError

HOOKS = ("on_train_begin", "on_epoch_end", "on_step_end", "on_train_end")


class Callback:
    """Base class with no-op hooks; override the ones you need. ``every``: how often
    :meth:`on_step_end` runs, in steps."""

    every = 1
    model = None

    def set_model(self, model):
        self.model = model

    def on_train_begin(self, logs):
        pass

    def on_epoch_end(self, epoch, logs):
        pass

    def on_step_end(self, step, logs):
        pass

    def on_train_end(self, logs):
        pass


class LambdaCallback(Callback):
    """A callback from functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...,
    on_step_end=lambda step, logs: ..., every=100)``."""

    def __init__(self, on_train_begin=None, on_epoch_end=None, on_step_end=None, on_train_end=None,
                 every=1):
        self.every = every
        for name, fn in (("on_train_begin", on_train_begin), ("on_epoch_end", on_epoch_end),
                         ("on_step_end", on_step_end), ("on_train_end", on_train_end)):
            if fn is not None:
                if not callable(fn):
                    raise ArgumentError(f"LambdaCallback: {name}={fn!r:.60} is not callable")
                setattr(self, name, fn)
        if on_step_end is None:
            self.on_step_end = None     # no step hook: fit need not return to Python for it


class Callbacks:
    """The callbacks of one ``fit`` call, checked when ``fit`` starts."""

    def __init__(self, callbacks, model):
        if callbacks is None:
            callbacks = ()
        if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)):
            callbacks = (callbacks,) if callbacks is not None else ()
        self.items = list(callbacks)
        for position, cb in enumerate(self.items):
            if not any(callable(getattr(cb, hook, None)) for hook in HOOKS):
                raise ArgumentError(f"fit: callbacks[{position}] ({cb!r:.60}) has none of the methods "
                                    f"{', '.join(HOOKS)}")
        self.stepping = [cb for cb in self.items if callable(getattr(cb, "on_step_end", None))]
        for cb in self.stepping:
            every = getattr(cb, "every", 1)
            if isinstance(every, bool) or not isinstance(every, numbers.Integral) or every < 1:
                raise ArgumentError(f"fit: callback {cb!r:.60} has every={every!r}; give a whole number "
                                    f"of steps >= 1")
        for cb in self.items:
            if callable(getattr(cb, "set_model", None)):
                cb.set_model(model)
            else:
                try:
                    cb.model = model
                except AttributeError:
                    pass

    def steps_to_next(self, step):
        """How many steps after ``step`` (model.step_count) the next on_step_end is due; None if none."""
        if not self.stepping:
            return None
        return min(cb.every - step % cb.every for cb in self.stepping)

    def call(self, hook, *args):
        for cb in self.items:
            fn = getattr(cb, hook, None)
            if callable(fn):
                fn(*args)

    def step_end(self, step, logs):
        for cb in self.stepping:
            if step % cb.every == 0:
                cb.on_step_end(step, logs)
