"""Learning-rate schedules: a factor f(t) of the step number, as a SymPy expression.

A schedule multiplies the optimizer's ``lr`` by ``f(t)``, where ``t`` is the step
being taken (1, 2, ...; ``model.step_count + 1``). The factor is part of the
update rule, so it is computed inside the compiled step -- also inside the
compiled training loop, which never returns to Python between steps -- and its
numbers (``decay_steps``, ``warmup_steps``...) are hyper-parameters: changing
them does not recompile.

>>> import graphnn as gn
>>> schedule = gn.cosine(steps=100, warmup=10)
>>> [round(schedule(t), 3) for t in (1, 10, 11, 61, 111, 200)]
[0.1, 1.0, 1.0, 0.5, 0.0, 0.0]
>>> gn.SGD(lr=0.1, schedule=schedule).learning_rate(61)
0.05
"""
import math
import numbers

import sympy as sp

from ..errors import ArgumentError, FileFormatError

t = sp.Symbol("t", real=True)


def _hyper(name):
    return sp.Symbol(name, real=True)


class Schedule:
    """Base class: ``values`` ({hyper-parameter: number}) and ``factor()``, a SymPy expression
    of ``t`` and those hyper-parameters' symbols.

    ``warmup``: that many steps of linear warm-up (factor t / warmup) before the schedule,
    which then starts at its own step 1. ``steps=None`` where a schedule has a length:
    :meth:`graphnn.Model.fit` sets it so that the schedule ends with the fit's last step.
    """

    kind = None
    limits = {}

    def __init__(self, warmup=0, **values):
        self.values = {}
        for name, value in values.items():
            self.values[name] = None if value is None else self._checked(name, value)
        self.values["warmup_steps"] = self._checked("warmup_steps", warmup)

    def _checked(self, name, value):
        where = f"{type(self).__name__}: {name}"
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise ArgumentError(f"{where} must be a finite number; got {value!r}")
        low, high = self.limits.get(name, (0.0, math.inf))
        if not low <= value <= high:
            raise ArgumentError(f"{where} must be in [{low:g}, {high:g}]; got {value!r}")
        return float(value)

    @property
    def pending(self):
        """Names whose value ``fit`` fills in (given as None)."""
        return [k for k, v in self.values.items() if v is None]

    def decay(self, s):
        """The factor after warm-up, at step ``s`` = 0, 1, ... of the schedule."""
        raise NotImplementedError

    def factor(self):
        """f(t): warm-up, then :meth:`decay`; a SymPy expression. The warm-up branch is there
        also with ``warmup=0`` (it never applies then), so setting ``warmup_steps`` later
        takes effect without a recompile."""
        warmup = _hyper("warmup_steps")
        return sp.Piecewise((t / warmup, t < warmup), (self.decay(sp.Max(t - 1 - warmup, 0)), True))

    def __call__(self, step):
        """The factor at step ``step`` (1, 2, ...), a float."""
        if self.pending:
            raise ArgumentError(f"{self!r}: {', '.join(self.pending)} is not set yet (fit sets it; "
                                f"or give it when making the schedule)")
        return self.evaluate(step, self.values)

    def evaluate(self, step, values):
        """The factor at step ``step`` for hyper-parameter ``values`` ({name: number}), a float;
        the SymPy factor is turned into a Python function once per schedule."""
        if getattr(self, "_function", None) is None:
            names = sorted(self.values)
            self._names = names
            self._function = sp.lambdify([t, *map(_hyper, names)], self.factor(), modules="math")
        return float(self._function(step, *(values[k] for k in self._names)))

    def config(self, values=None):
        """{"type": ..., and the constructor's arguments}; ``values``: the hyper-parameters as an
        optimizer holds them now (a pending one, 0.0 there, is written None)."""
        values = self.values if values is None else {
            k: (None if k in self.pending and values[k] == 0.0 else values[k]) for k in self.values}
        return {"type": self.kind, **{k: v for k, v in values.items() if k != "warmup_steps"},
                "warmup": values["warmup_steps"]}

    def __repr__(self):
        args = ", ".join(f"{k}={v:g}" if v is not None else f"{k}=None" for k, v in self.config().items()
                         if k != "type")
        return f"{self.kind}({args})"


class StepDecay(Schedule):
    """lr * rate ** floor(s / every): multiply by ``rate`` every ``every`` steps (torch's StepLR)."""

    kind = "step_decay"
    limits = {"decay_every": (1.0, math.inf)}

    def __init__(self, every, rate=0.1, warmup=0):
        super().__init__(warmup, decay_every=every, decay_rate=rate)

    def decay(self, s):
        return _hyper("decay_rate") ** sp.floor(s / _hyper("decay_every"))


class ExponentialDecay(Schedule):
    """lr * rate ** (s / steps): smooth exponential decay, by ``rate`` every ``steps`` steps
    (Keras' ExponentialDecay; torch's ExponentialLR with steps=1)."""

    kind = "exponential_decay"
    limits = {"decay_steps": (1e-300, math.inf)}

    def __init__(self, rate, steps=1, warmup=0):
        super().__init__(warmup, decay_rate=rate, decay_steps=steps)

    def decay(self, s):
        return _hyper("decay_rate") ** (s / _hyper("decay_steps"))


class CosineDecay(Schedule):
    """lr * (m + (1 - m) (1 + cos(pi min(s, steps) / steps)) / 2), m = ``min_factor``: from lr
    to ``min_factor * lr`` over ``steps`` steps, then flat (torch's CosineAnnealingLR, one
    half-period). ``steps=None``: ``fit`` makes it end with its last step."""

    kind = "cosine"
    limits = {"decay_steps": (1.0, math.inf), "min_factor": (0.0, 1.0)}

    def __init__(self, steps=None, min_factor=0.0, warmup=0):
        super().__init__(warmup, decay_steps=steps, min_factor=min_factor)

    def decay(self, s):
        steps, low = _hyper("decay_steps"), _hyper("min_factor")
        return low + (1 - low) * (1 + sp.cos(sp.pi * sp.Min(s, steps) / steps)) / 2


class Warmup(Schedule):
    """Linear warm-up over ``steps`` steps (factor t / steps), then a constant 1."""

    kind = "warmup"
    limits = {"warmup_steps": (1.0, math.inf)}

    def __init__(self, steps):
        super().__init__(steps)

    def decay(self, s):
        return sp.Integer(1)


def step_decay(every, rate=0.1, warmup=0):
    """Multiply the learning rate by ``rate`` every ``every`` steps. See :class:`StepDecay`."""
    return StepDecay(every, rate, warmup)


def exponential_decay(rate, steps=1, warmup=0):
    """Multiply the learning rate by ``rate`` every ``steps`` steps, smoothly. See
    :class:`ExponentialDecay`."""
    return ExponentialDecay(rate, steps, warmup)


def cosine(steps=None, min_factor=0.0, warmup=0):
    """Cosine decay to ``min_factor * lr`` over ``steps`` steps (after ``warmup`` linear
    warm-up steps). See :class:`CosineDecay`."""
    return CosineDecay(steps, min_factor, warmup)


def warmup(steps):
    """Linear warm-up over ``steps`` steps, then the optimizer's lr. See :class:`Warmup`."""
    return Warmup(steps)


KINDS = {"step_decay": StepDecay, "exponential_decay": ExponentialDecay, "cosine": CosineDecay,
         "warmup": Warmup}


def from_config(config):
    """Rebuild a schedule from :meth:`Schedule.config` (FileFormatError on what it did not write)."""
    if not isinstance(config, dict) or config.get("type") not in KINDS:
        raise FileFormatError(f"learning-rate schedule config {config!r:.80}: unknown type; graphnn "
                              f"knows {sorted(KINDS)}")
    config = dict(config)
    kind = KINDS[config.pop("type")]
    try:
        if kind is Warmup:
            return Warmup(config.pop("warmup"), **config)
        return kind(**{_argument(kind, k): v for k, v in config.items()})
    except (TypeError, ArgumentError) as error:
        raise FileFormatError(f"learning-rate schedule config {config!r:.80}: {error}") from None


def _argument(kind, key):
    """The constructor argument a config key (a hyper-parameter name) comes from."""
    names = {"decay_every": "every", "decay_rate": "rate", "decay_steps": "steps",
             "min_factor": "min_factor", "warmup": "warmup"}
    return names.get(key, key)
