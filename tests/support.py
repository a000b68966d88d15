"""Helpers shared by the tests: one-op graphs and finite differences written independently of graphnn."""
import numpy as np

import graphnn as gn


def central_difference(f, args, position, eps=1e-6):
    """Elementwise central difference of an elementwise ``f(*args)`` w.r.t. ``args[position]``."""
    up, down = list(args), list(args)
    up[position] = args[position] + eps
    down[position] = args[position] - eps
    return (f(*up) - f(*down)) / (2 * eps)


def numeric_gradient(f, x, eps=1e-6):
    """Full gradient of a scalar ``f`` at array ``x`` by central differences, one entry at a time."""
    x = np.array(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + eps
        up = f(x)
        x[idx] = old - eps
        down = f(x)
        x[idx] = old
        grad[idx] = (up - down) / (2 * eps)
    return grad


def one_op_graph(op, n_inputs, attrs=None, shape=(None,), dtype=None):
    """A graph with ``n_inputs`` batched inputs a0, a1, ... fed to ``op``; returns (inputs, out, loss).

    The loss is sum(out), so the delta of input k is d op / d a_k elementwise."""
    g = gn.Graph(f"one_{op.name}")
    inputs = [g.input(f"a{k}", shape, dtype=dtype) for k in range(n_inputs)]
    out = op(*inputs, **(attrs or {}))
    return inputs, out, gn.sum(out)


def forward_and_derivatives(op, args, attrs=None, dtype="float64"):
    """(op(*args), [d op / d arg_k]) through graphnn.derive and the reference executor."""
    inputs, out, loss = one_op_graph(op, len(args), attrs, shape=(None,) + np.shape(args[0])[1:])
    back = gn.derive(loss)
    feeds = {node.name: np.asarray(a) for node, a in zip(inputs, args)}
    wanted = [out] + [back.delta(i) for i in inputs if back.has_delta(i)]
    values = gn.evaluate(wanted, feeds, dtype=dtype)
    derivatives = [values[back.delta(i).name] if back.has_delta(i) else np.zeros_like(values[out.name])
                   for i in inputs]
    return values[out.name], derivatives
