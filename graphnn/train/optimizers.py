"""Optimizers, each declared by SymPy update rules.

An update rule is an elementwise body over the parameter ``p``, its gradient
``g``, the optimizer's slots (``v``, ``m``...) and scalar hyper-parameters
(``lr``, ``t``...). The training step adds one elementwise node per updated
buffer, so the update is compiled and fused like every other op, and
hyper-parameters are kernel arguments (changing ``lr`` does not recompile).
Every rule reads the old values only; slot updates are substituted into the
parameter rule, so there is no write-before-read hazard.
"""
import inspect
import math
import numbers

import numpy as np
import sympy as sp

from ..errors import ArgumentError, FileFormatError
from ..ops.registry import ElementwiseOp
from .schedules import Schedule
from .schedules import from_config as schedule_from_config

p, g, t = sp.symbols("p g t", real=True)


class Hyper(dict):
    """An optimizer's hyper-parameters, {name: float}, checked as they are set.

    A value must be a finite real number (negative ones are allowed: a negative ``lr``
    ascends), inside the optimizer's ``limits`` where it has them. The names are fixed
    when the optimizer is made: the compiled step has one argument per name."""

    def __init__(self, values=(), owner="Optimizer", limits=None):
        self.owner, self.limits = owner, dict(limits or {})
        super().__init__({name: self._checked(name, value) for name, value in dict(values).items()})

    def _checked(self, name, value):
        where = f"{self.owner} hyper-parameter {name!r}"
        if isinstance(value, (bool, np.bool_)):
            raise ArgumentError(f"{where}: got the bool {value!r}; give a number")
        if isinstance(value, np.ndarray) and value.shape == () and value.dtype.kind in "fiu":
            value = value.item()
        if not isinstance(value, numbers.Real):
            raise ArgumentError(f"{where} must be a real number; got {value!r} ({type(value).__name__})")
        value = float(value)
        if not math.isfinite(value):
            raise ArgumentError(f"{where} must be finite; got {value!r}")
        low, high = self.limits.get(name, (-math.inf, math.inf))
        if not low <= value < high:
            raise ArgumentError(f"{where} must be in [{low:g}, {high:g}); got {value!r}")
        return value

    def checked(self, values):
        """{name: float} of ``values`` ({name: value}), every one checked; nothing is set."""
        for name in values:
            if name not in self:
                hint = (" (it was made without weight decay: pass weight_decay= to the optimizer "
                        "and compile again)" if name == "weight_decay" else "")
                raise ArgumentError(f"{self.owner} has no hyper-parameter {name!r}; it has "
                                    f"{sorted(self)}{hint}")
        return {name: self._checked(name, value) for name, value in values.items()}

    def __setitem__(self, name, value):
        super().__setitem__(name, self.checked({name: value})[name])

    def update(self, *args, **kwargs):
        for name, value in self.checked(dict(*args, **kwargs)).items():
            super().__setitem__(name, value)

    def setdefault(self, name, value=None):
        if name not in self:
            self[name] = value      # refused: the names are fixed
        return self[name]

    def _fixed(self, *args, **kwargs):
        raise ArgumentError(f"the hyper-parameters of {self.owner} cannot be removed; "
                            f"set a new value instead")

    __delitem__ = pop = popitem = clear = _fixed

    def __reduce__(self):
        return type(self), (dict(self), self.owner, self.limits)


class Optimizer:
    """Base class: ``slots`` (names), ``hyper`` (name -> value) and ``rules()``.

    ``limits``: {hyper-parameter: (low, high)}, the values it can take (low <= value < high)."""

    slots = ()
    limits = {}

    def __init__(self, schedule=None, **hyper):
        if schedule is not None and not isinstance(schedule, Schedule):
            raise ArgumentError(f"{type(self).__name__}: schedule={schedule!r:.60} is not a learning-rate "
                                f"schedule; use gn.cosine(...), gn.step_decay(...), "
                                f"gn.exponential_decay(...) or gn.warmup(...)")
        self.schedule = schedule
        given = dict(schedule.values) if schedule is not None else {}
        clash = sorted(set(given) & set(hyper))
        if clash:
            raise ArgumentError(f"{type(self).__name__}: hyper-parameter(s) {clash} of the schedule "
                                f"clash with the optimizer's")
        pending = [k for k, v in given.items() if v is None]
        limits = dict(self.limits)
        for name in given:      # as the schedule checks them (Hyper's upper bound is open)
            low, high = schedule.limits.get(name, (0.0, math.inf))
            limits[name] = (low, math.nextafter(high, math.inf))
        self._hyper = Hyper({**hyper, **{k: v for k, v in given.items() if v is not None}},
                            type(self).__name__, limits)
        for name in pending:    # fit fills these in; a step before then is refused
            dict.__setitem__(self._hyper, name, 0.0)

    @property
    def hyper(self):
        """{name: value}; ``optimizer.hyper["lr"] = 0.01`` takes effect at the next step (no
        recompile). Values are checked as they are set."""
        return self._hyper

    @hyper.setter
    def hyper(self, values):
        values = dict(values)
        if getattr(self, "_hyper", None) is None:
            self._hyper = Hyper(values, type(self).__name__, self.limits)
            return
        checked = self._hyper.checked(values)       # all checked before any is set
        missing = sorted(set(self._hyper) - set(values))
        if missing:
            raise ArgumentError(f"{type(self).__name__}.hyper: a new dict must set every "
                                f"hyper-parameter; it lacks {missing}")
        self._hyper.update(checked)

    def rules(self):
        """{buffer: SymPy expression}; buffer is "param" or a slot name."""
        raise NotImplementedError

    def update_rules(self):
        """:meth:`rules` with the learning-rate schedule applied: ``lr`` -> ``lr * f(t)``."""
        rules = self.rules()
        if self.schedule is None:
            return rules
        lr = sp.Symbol("lr", real=True)
        scaled = lr * self.schedule.factor()
        return {buffer: expr.xreplace({lr: scaled}) for buffer, expr in rules.items()}

    @property
    def pending(self):
        """Schedule hyper-parameters not set yet (``steps=None``: ``fit`` sets them)."""
        if self.schedule is None:
            return []
        return [k for k in self.schedule.pending if self.hyper[k] == 0.0]

    def check_ready(self, what="step"):
        if self.pending:
            raise ArgumentError(f"{what}: the learning-rate schedule {self.schedule!r} has no "
                                f"{' or '.join(self.pending)} yet; fit sets it from its epochs, or give "
                                f"it to the schedule (e.g. gn.cosine(steps=1000))")

    def learning_rate(self, t):
        """The learning rate of step ``t`` (1, 2, ...), schedule included: a float."""
        self.check_ready("learning_rate")
        lr = self.hyper["lr"]
        return lr if self.schedule is None else lr * self.schedule.evaluate(t, self.hyper)

    @property
    def symbols(self):
        return (p, g, *(sp.Symbol(s, real=True) for s in self.slots),
                *(sp.Symbol(h, real=True) for h in self.hyper), t)

    def ops(self):
        """{buffer: ElementwiseOp} with arguments (p, g, slots..., hyper..., t), pruned."""
        made = {}
        for buffer, expr in self.update_rules().items():
            used = [s for s in self.symbols if s in expr.free_symbols]
            made[buffer] = ElementwiseOp(f"{type(self).__name__.lower()}_{buffer}",
                                         arg_names=[s.name for s in used], expr=expr)
        return made

    def config(self):
        own = {k: v for k, v in self.hyper.items() if self.schedule is None or k not in self.schedule.values}
        config = {"type": type(self).__name__, **own}
        if self.schedule is not None:
            config["schedule"] = self.schedule.config(self.hyper)
        return config

    def __repr__(self):
        own = self.config()
        args = ", ".join(f"{k}={v:g}" for k, v in own.items() if k not in ("type", "schedule")
                         and not isinstance(v, bool))
        if self.schedule is not None:
            scheduled = dict(own["schedule"])
            kind = scheduled.pop("type")
            args += f", schedule={kind}(" + ", ".join(
                f"{k}={'None' if v is None else format(v, 'g')}" for k, v in scheduled.items()) + ")"
        return f"{type(self).__name__}({args})"


def _decayed(expr_g, weight_decay):
    return expr_g + sp.Symbol("weight_decay", real=True) * p if weight_decay else expr_g


class SGD(Optimizer):
    """p <- p - lr * (g + weight_decay * p)

    >>> import graphnn as gn
    >>> gn.SGD(lr=0.1).rules()["param"]
    -g*lr + p
    """

    def __init__(self, lr=0.01, weight_decay=0.0, schedule=None):
        super().__init__(schedule, lr=lr, **({"weight_decay": weight_decay} if weight_decay else {}))

    def rules(self):
        lr = sp.Symbol("lr", real=True)
        return {"param": p - lr * _decayed(g, "weight_decay" in self.hyper)}


class Momentum(Optimizer):
    """v <- mu v + g;  p <- p - lr v  (Nesterov: p <- p - lr (g + mu v))."""

    slots = ("v",)

    def __init__(self, lr=0.01, momentum=0.9, nesterov=False, weight_decay=0.0, schedule=None):
        self.nesterov = bool(nesterov)
        super().__init__(schedule, lr=lr, momentum=momentum,
                         **({"weight_decay": weight_decay} if weight_decay else {}))

    def rules(self):
        lr, mu, v = sp.symbols("lr momentum v", real=True)
        grad = _decayed(g, "weight_decay" in self.hyper)
        v_new = mu * v + grad
        step = grad + mu * v_new if self.nesterov else v_new
        return {"v": v_new, "param": p - lr * step}

    def config(self):
        return {**super().config(), "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam with bias correction; ``weight_decay`` adds L2 to the gradient (AdamW-style
    decoupled decay is ``decoupled=True``)."""

    slots = ("m", "v")
    limits = {"beta1": (0.0, 1.0), "beta2": (0.0, 1.0)}   # beta = 1 divides by 1 - beta**t = 0

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False,
                 schedule=None):
        self.decoupled = bool(decoupled)
        super().__init__(schedule, lr=lr, beta1=beta1, beta2=beta2, eps=eps,
                         **({"weight_decay": weight_decay} if weight_decay else {}))

    def rules(self):
        lr, b1, b2, eps, m, v = sp.symbols("lr beta1 beta2 eps m v", real=True)
        wd = sp.Symbol("weight_decay", real=True) if "weight_decay" in self.hyper else 0
        grad = g if self.decoupled else g + wd * p
        m_new = b1 * m + (1 - b1) * grad
        v_new = b2 * v + (1 - b2) * grad ** 2
        m_hat = m_new / (1 - b1 ** t)
        v_hat = v_new / (1 - b2 ** t)
        p_new = p - lr * m_hat / (sp.sqrt(v_hat) + eps)
        if self.decoupled:
            p_new = p_new - lr * wd * p
        return {"m": m_new, "v": v_new, "param": p_new}

    def config(self):
        return {**super().config(), "decoupled": self.decoupled}


def from_config(config):
    """Rebuild an optimizer from :meth:`Optimizer.config`. A config that it did not write
    (an unknown type or key, a value of the wrong type) raises FileFormatError naming the key."""
    classes = {"SGD": SGD, "Momentum": Momentum, "Adam": Adam}
    if not isinstance(config, dict) or not isinstance(config.get("type"), str):
        raise FileFormatError(f"optimizer config {config!r:.80} has no \"type\"")
    config = dict(config)
    kind = config.pop("type")
    if "schedule" in config:
        config["schedule"] = schedule_from_config(config["schedule"])
    if kind not in classes:
        raise FileFormatError(f"unknown optimizer type {kind!r:.40}; graphnn knows {sorted(classes)}")
    arguments = inspect.signature(classes[kind]).parameters
    for key, value in config.items():
        if key == "schedule":
            continue
        if key not in arguments:
            raise FileFormatError(f"{kind} has no hyper-parameter {key!r:.40}")
        flag = isinstance(arguments[key].default, bool)
        if isinstance(value, bool) != flag or not isinstance(value, (int, float)):
            raise FileFormatError(f"{kind} {key!r} should be {'true or false' if flag else 'a number'}, "
                                  f"not {value!r:.40}")
    return classes[kind](**config)
