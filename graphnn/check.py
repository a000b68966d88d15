"""Gradient checking by central finite differences in float64."""
import numpy as np

from .derive import derive
from .derive.autodiff import check_loss
from .errors import ArgumentError
from .reference import evaluate


class GradCheckReport:
    """Per-node comparison of derived and finite-difference gradients."""

    def __init__(self, rows, tolerance):
        self.rows = rows          # (name, analytic, numeric, relative error)
        self.tolerance = tolerance

    @property
    def ok(self):
        return all(r[3] <= self.tolerance for r in self.rows)

    @property
    def max_error(self):
        return max((r[3] for r in self.rows), default=0.0)

    def __str__(self):
        lines = [f"{'node':<28} {'derived':>14} {'finite diff':>14} {'rel err':>9}"]
        for name, a, n, e in self.rows:
            flag = "" if e <= self.tolerance else "  <-- FAIL"
            lines.append(f"{name:<28} {a:>14.6e} {n:>14.6e} {e:>9.1e}{flag}")
        lines.append(f"{'ok' if self.ok else 'FAILED'} (tolerance {self.tolerance:g})")
        return "\n".join(lines)

    __repr__ = __str__


def check_grad(loss, feeds, wrt=None, params=None, eps=1e-6, tolerance=1e-6, seed=0,
               directions=2):
    """Compare the derived gradient of ``loss`` with central differences.

    For each parameter (and each fed input, when ``wrt`` names it) it draws
    random unit directions v and compares ``<grad, v>`` with
    (L(p + eps v) - L(p - eps v)) / (2 eps), all in float64.

    >>> import graphnn as gn, numpy as np
    >>> g = gn.Graph(); x = g.input("x", (None, 1))
    >>> loss = gn.mse(gn.dense(x, 1), x)
    >>> gn.check_grad(loss, {"x": np.ones((4, 1))}).ok
    True
    """
    rng = np.random.default_rng(seed)
    backward = derive(check_loss(loss, "check_grad"))
    # ``params`` overrides some or all of the parameters' own values, as in evaluate();
    # a merged graph's parameters may come from several graphs
    own = {n.name: n.graph.values[n.name] for n in backward.forward if n.kind == "parameter"}
    params = {k: np.array(v, dtype=np.float64) for k, v in {**own, **(params or {})}.items()}
    feeds = {k: np.array(v, dtype=np.float64) for k, v in feeds.items()}
    targets = [n for n in backward.forward if n.kind == "parameter"]
    if wrt is not None:
        names = {getattr(w, "name", w) for w in wrt}
        targets = [n for n in backward.forward if n.name in names]
        unknown = sorted(names - {n.name for n in targets})
        if unknown:  # an empty report would pass silently
            raise ArgumentError(f"check_grad: wrt names {unknown}, which the loss "
                             f"{loss.name!r} does not depend on")
    if not targets:
        raise ArgumentError(f"check_grad: the loss {loss.name!r} has no parameters to check; "
                         f"name inputs with wrt=[...]")
    outs = [loss] + [backward.delta(n) for n in targets if backward.has_delta(n)]
    values = evaluate(outs, feeds, params=params)
    rows = []
    for node in targets:
        grad = values[backward.delta(node).name] if backward.has_delta(node) else 0.0
        store = params if node.kind == "parameter" else feeds
        base = store[node.name]
        for d in range(directions):
            v = rng.standard_normal(base.shape)
            v /= np.linalg.norm(v) or 1.0
            store[node.name] = base + eps * v
            up = evaluate([loss], feeds, params=params)[loss.name]
            store[node.name] = base - eps * v
            down = evaluate([loss], feeds, params=params)[loss.name]
            store[node.name] = base
            numeric = float((up - down) / (2 * eps))
            analytic = float(np.sum(np.broadcast_to(grad, base.shape) * v))
            err = abs(analytic - numeric) / max(1.0, abs(analytic), abs(numeric))
            rows.append((f"{node.name}[dir {d}]", analytic, numeric, err))
    return GradCheckReport(rows, tolerance)
