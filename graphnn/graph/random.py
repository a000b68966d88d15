"""Random inputs: the randomness of dropout and noise injection, as fed values.

A random input is a node of kind ``"input"`` with role ``"random"``. Its
attributes name a distribution and its value in evaluation mode. Nothing
random happens inside a compiled kernel: a model fills these inputs before
each call -- with draws from its seeded ``numpy.random.Generator`` when it
trains, with the evaluation value when it predicts -- so every target runs
the same graph and a seed makes training reproducible.

>>> import numpy as np
>>> import graphnn as gn
>>> g = gn.Graph()
>>> mask = g.random("mask", (None, 3), "bernoulli", p=0.5, scale=2.0, eval=1.0)
>>> sample(mask, np.random.default_rng(0), batch=2)
array([[0., 2., 2.],
       [2., 0., 0.]])
>>> eval_value(mask, batch=2)
array([[1., 1., 1.],
       [1., 1., 1.]])
"""
import numpy as np

from ..errors import GraphnnError

# distribution -> (parameters with defaults, draw(rng, shape, **params))
DISTRIBUTIONS = {
    # value ``scale`` with probability p, else 0 (dropout keeps with p, scales by 1/p)
    "bernoulli": ({"p": 0.5, "scale": 1.0},
                  lambda rng, shape, p, scale: (rng.random(shape) < p) * float(scale)),
    "normal": ({"mean": 0.0, "std": 1.0},
               lambda rng, shape, mean, std: rng.normal(mean, std, size=shape)),
    "uniform": ({"low": 0.0, "high": 1.0},
                lambda rng, shape, low, high: rng.uniform(low, high, size=shape)),
    # the same value in every training step, no draw: "training" flags (BatchNorm: 1, eval 0)
    "constant": ({"value": 1.0}, lambda rng, shape, value: np.full(shape, value)),
}


def random_attrs(distribution, eval, params):
    """Validated node attributes of a random input."""
    if distribution not in DISTRIBUTIONS:
        raise GraphnnError(f"unknown distribution {distribution!r}; use one of {sorted(DISTRIBUTIONS)}")
    defaults, _ = DISTRIBUTIONS[distribution]
    unknown = set(params) - set(defaults)
    if unknown:
        raise GraphnnError(f"distribution {distribution!r} takes {sorted(defaults)}, not {sorted(unknown)}")
    full = {k: float(params.get(k, v)) for k, v in defaults.items()}
    return {"distribution": distribution, "eval": float(eval), **full}


def _full_shape(node, batch):
    return tuple(batch if d is None else d for d in node.shape)


def sample(node, rng, batch=1):
    """A training-mode draw for the random input ``node`` (float64)."""
    attrs = node.attr_dict
    defaults, draw = DISTRIBUTIONS[attrs["distribution"]]
    params = {k: attrs[k] for k in defaults}
    return np.asarray(draw(rng, _full_shape(node, batch), **params), dtype=np.float64)


def eval_value(node, batch=1):
    """The evaluation-mode value of the random input ``node`` (float64)."""
    return np.full(_full_shape(node, batch), node.attr("eval"), dtype=np.float64)


def is_random(node):
    return node.kind == "input" and node.role == "random"


def fill(nodes, feeds, batch, rng=None):
    """``feeds`` plus a value for every random input among ``nodes`` not fed already:
    a draw from ``rng`` (training), or the evaluation value when ``rng`` is None."""
    out = dict(feeds)
    for node in nodes:
        if is_random(node) and node.name not in out:
            out[node.name] = eval_value(node, batch) if rng is None else sample(node, rng, batch)
    return out
