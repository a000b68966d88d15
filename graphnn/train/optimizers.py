"""Optimizers, each declared by SymPy update rules.

An update rule is an elementwise body over the parameter ``p``, its gradient
``g``, the optimizer's slots (``v``, ``m``...) and scalar hyper-parameters
(``lr``, ``t``...). The training step adds one elementwise node per updated
buffer, so the update is compiled and fused like every other op, and
hyper-parameters are kernel arguments (changing ``lr`` does not recompile).
Every rule reads the old values only; slot updates are substituted into the
parameter rule, so there is no write-before-read hazard.
"""
import sympy as sp

from ..ops.registry import ElementwiseOp

p, g, t = sp.symbols("p g t", real=True)


class Optimizer:
    """Base class: ``slots`` (names), ``hyper`` (name -> value) and ``rules()``."""

    slots = ()

    def __init__(self, **hyper):
        self.hyper = {k: float(v) for k, v in hyper.items()}

    def rules(self):
        """{buffer: SymPy expression}; buffer is "param" or a slot name."""
        raise NotImplementedError

    @property
    def symbols(self):
        return (p, g, *(sp.Symbol(s, real=True) for s in self.slots),
                *(sp.Symbol(h, real=True) for h in self.hyper), t)

    def ops(self):
        """{buffer: ElementwiseOp} with arguments (p, g, slots..., hyper..., t), pruned."""
        made = {}
        for buffer, expr in self.rules().items():
            used = [s for s in self.symbols if s in expr.free_symbols]
            made[buffer] = ElementwiseOp(f"{type(self).__name__.lower()}_{buffer}",
                                         arg_names=[s.name for s in used], expr=expr)
        return made

    def config(self):
        return {"type": type(self).__name__, **self.hyper}

    def __repr__(self):
        args = ", ".join(f"{k}={v:g}" for k, v in self.hyper.items())
        return f"{type(self).__name__}({args})"


def _decayed(expr_g, weight_decay):
    return expr_g + sp.Symbol("weight_decay", real=True) * p if weight_decay else expr_g


class SGD(Optimizer):
    """p <- p - lr * (g + weight_decay * p)

    >>> import graphnn as gn
    >>> gn.SGD(lr=0.1).rules()["param"]
    -g*lr + p
    """

    def __init__(self, lr=0.01, weight_decay=0.0):
        super().__init__(lr=lr, **({"weight_decay": weight_decay} if weight_decay else {}))

    def rules(self):
        lr = sp.Symbol("lr", real=True)
        return {"param": p - lr * _decayed(g, "weight_decay" in self.hyper)}


class Momentum(Optimizer):
    """v <- mu v + g;  p <- p - lr v  (Nesterov: p <- p - lr (g + mu v))."""

    slots = ("v",)

    def __init__(self, lr=0.01, momentum=0.9, nesterov=False, weight_decay=0.0):
        self.nesterov = bool(nesterov)
        super().__init__(lr=lr, momentum=momentum,
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

    def __init__(self, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, decoupled=False):
        self.decoupled = bool(decoupled)
        super().__init__(lr=lr, beta1=beta1, beta2=beta2, eps=eps,
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
    """Rebuild an optimizer from :meth:`Optimizer.config`."""
    config = dict(config)
    kind = config.pop("type")
    classes = {"SGD": SGD, "Momentum": Momentum, "Adam": Adam}
    if kind not in classes:
        raise ValueError(f"unknown optimizer type {kind!r}")
    return classes[kind](**config)
