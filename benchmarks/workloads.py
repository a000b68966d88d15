"""The benchmark workloads, built the same way for graphnn and for PyTorch/JAX.

Each workload is an MLP: layer sizes, hidden activation, loss and batch size.
"""
import statistics
import time

import numpy as np

WORKLOADS = {
    "1-2-1 tanh MSE b64": ([1, 2, 1], "tanh", "mse", 64),
    "1-2-1 tanh MSE b4096": ([1, 2, 1], "tanh", "mse", 4096),
    "2-2-1 sigmoid BCE b256": ([2, 2, 1], "sigmoid", "bce", 256),
    "64-128-128-10 ReLU CE b128": ([64, 128, 128, 10], "relu", "ce", 128),
    "784-512-512-10 ReLU CE b256": ([784, 512, 512, 10], "relu", "ce", 256),
    "32-(8x64 GELU)-1 MSE b512": ([32] + [64] * 8 + [1], "gelu", "mse", 512),
}


def data(sizes, loss, batch, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    if loss == "ce":
        y = np.eye(sizes[-1], dtype=dtype)[rng.integers(0, sizes[-1], batch)]
    elif loss == "bce":
        y = (rng.random((batch, 1)) > 0.5).astype(dtype)
    else:
        y = rng.standard_normal((batch, sizes[-1])).astype(dtype)
    return x, y


def graphnn_mlp(sizes, activation, loss, seed=0):
    """(graph, loss node) of the workload in graphnn."""
    import graphnn as gn
    g = gn.Graph("mlp-" + "-".join(map(str, sizes)), seed=seed)
    x = g.input("x", (None, sizes[0]))
    y = g.input("y", (None, sizes[-1]))
    h = x
    for k, width in enumerate(sizes[1:-1]):
        h = gn.dense(h, width, activation=activation, name=f"hidden{k}")
    out = gn.dense(h, sizes[-1], name="out")
    if loss == "mse":
        value = gn.mse(out, y)
    elif loss == "bce":
        value = gn.bce(gn.sigmoid(out), y)
    else:
        value = gn.softmax_cross_entropy(out, y)
    g.output("out", out)
    return g, value


def torch_mlp(sizes, activation, loss, device="cpu"):
    """(model, loss function) of the workload in PyTorch."""
    import torch
    acts = {"tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU,
            "gelu": torch.nn.GELU}
    layers = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [torch.nn.Linear(a, b), acts[activation]()]
    layers.append(torch.nn.Linear(sizes[-2], sizes[-1]))
    model = torch.nn.Sequential(*layers).to(device)
    if loss == "mse":
        fn = torch.nn.MSELoss()
    elif loss == "bce":
        fn = torch.nn.BCEWithLogitsLoss()
    else:
        ce = torch.nn.CrossEntropyLoss()
        fn = lambda out, y: ce(out, y.argmax(dim=1))  # noqa: E731 - one-hot targets as in graphnn
    return model, fn


def median_us(step, reps, warmup=10):
    """Median wall time of ``step()`` in microseconds, after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def torch_step(sizes, activation, loss, batch, device="cpu", compiled=False):
    """A PyTorch SGD training step of the workload that returns the loss (it synchronises).

    ``compiled``: the forward pass and loss go through ``torch.compile`` (its backward is
    compiled with it, by AOTAutograd); the optimizer step stays eager."""
    import torch
    model, fn = torch_mlp(sizes, activation, loss, device=device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = (torch.from_numpy(a).to(device) for a in data(sizes, loss, batch))

    def forward_loss(x, y):
        return fn(model(x), y)
    run = torch.compile(forward_loss) if compiled else forward_loss

    def step():
        opt.zero_grad(set_to_none=True)
        value = run(x, y)
        value.backward()
        opt.step()
        return value.item()
    return step


def jax_step(sizes, activation, loss, batch):
    """A jitted JAX SGD training step of the workload: ``run()`` takes one step and returns
    the loss as a float (it synchronises). The first call traces and compiles."""
    import jax
    import jax.numpy as jnp
    acts = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu,
            "gelu": lambda v: jax.nn.gelu(v, approximate=False)}
    key = jax.random.PRNGKey(0)
    params = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        params.append((jax.random.normal(sub, (a, b)) * (1 / a) ** 0.5, jnp.zeros(b)))

    def loss_fn(ps, x, y):
        for W, b in ps[:-1]:
            x = acts[activation](x @ W + b)
        out = x @ ps[-1][0] + ps[-1][1]
        if loss == "mse":
            return jnp.mean((out - y) ** 2)
        if loss == "bce":
            return jnp.mean(jax.nn.softplus(out) - out * y)
        return -jnp.mean(jnp.sum(y * jax.nn.log_softmax(out), axis=1))

    @jax.jit
    def step(ps, x, y):
        value, grads = jax.value_and_grad(loss_fn)(ps, x, y)
        return [(W - 0.01 * gW, b - 0.01 * gb) for (W, b), (gW, gb) in zip(ps, grads)], value
    x, y = (jnp.asarray(a) for a in data(sizes, loss, batch))
    state = {"p": params}

    def run():
        state["p"], value = step(state["p"], x, y)
        return float(value)
    return run


def random_dag(n_ops, seed=0, width=8):
    """(graph, loss) of a random DAG of about ``n_ops`` op nodes over an 8-wide input.

    Each new node applies a random op to one or two earlier nodes: activations,
    arithmetic, and dense layers (a matrix product with its bias), so the graph
    has fan-out, fan-in and contractions."""
    import graphnn as gn
    rng = np.random.default_rng(seed)
    g = gn.Graph(f"random-dag-{n_ops}-{seed}", seed=seed)
    x, y = g.input("x", (None, width)), g.input("y", (None, width))
    nodes = [x]
    unary = [gn.tanh, gn.sigmoid, gn.relu, gn.softplus, gn.gelu, gn.elu]
    count = 0
    while count < n_ops:
        kind = rng.integers(0, 3)
        a = nodes[-1]       # every node feeds the next: all of them reach the loss
        if kind == 0:
            nodes.append(unary[int(rng.integers(len(unary)))](a))
            count += 1
        elif kind == 1:
            b = nodes[int(rng.integers(0, len(nodes)))]
            nodes.append(gn.add(a, b) if rng.random() < 0.5 else gn.mul(a, b))
            count += 1
        else:
            nodes.append(gn.dense(a, width, name=f"dense{len(nodes)}"))
            count += 1
    loss = gn.mse(nodes[-1], y)
    return g, loss
