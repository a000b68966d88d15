"""The yardstick for the 1-2-1 tanh MSE SGD step: a hand-written, fused Numba kernel.

One pass over the batch does the forward pass, the backward pass and the
weight-gradient sums, with a branch-free rational tanh (no libm call, so the
row loop vectorises); the SGD update follows. It is not library code: it is
the "limit" column of ``benchmarks/train_step.py``, what a person writing one
kernel for this one net gets on this machine.

    python3 benchmarks/hand_fused.py          # its time per step, batch 64 and 4096
"""
import numpy as np
from numba import njit


@njit(inline="always", fastmath=True, error_model="numpy")
def _tanh(x):
    x = min(max(x, np.float32(-7.905311)), np.float32(7.905311))
    x2 = x * x
    p = np.float32(-2.76076847742355e-16)
    p = p * x2 + np.float32(2.00018790482477e-13)
    p = p * x2 + np.float32(-8.60467152213735e-11)
    p = p * x2 + np.float32(5.12229709037114e-08)
    p = p * x2 + np.float32(1.48572235717979e-05)
    p = p * x2 + np.float32(6.37261928875436e-04)
    p = p * x2 + np.float32(4.89352455891786e-03)
    p = p * x
    q = np.float32(1.19825839466702e-06)
    q = q * x2 + np.float32(1.18534705686654e-04)
    q = q * x2 + np.float32(2.26843463243900e-03)
    q = q * x2 + np.float32(4.89352518554385e-03)
    return p / q


@njit(fastmath=True, error_model="numpy", nogil=True)
def step(x, y, w1, b1, w2, b2, lr):
    """One SGD step of the 1-2-1 net (x, y: (N,) float32); returns the mean squared error."""
    n = x.shape[0]
    scale = np.float32(2.0) / np.float32(n)
    loss = np.float32(0.0)
    gw10 = gw11 = gb10 = gb11 = gw20 = gw21 = gb2 = np.float32(0.0)
    a0, a1, c0, c1, v0, v1, c2 = w1[0], w1[1], b1[0], b1[1], w2[0], w2[1], b2[0]
    for r in range(n):
        h0 = _tanh(a0 * x[r] + c0)
        h1 = _tanh(a1 * x[r] + c1)
        e = v0 * h0 + v1 * h1 + c2 - y[r]
        loss += e * e
        d = scale * e
        d0 = d * v0 * (np.float32(1.0) - h0 * h0)
        d1 = d * v1 * (np.float32(1.0) - h1 * h1)
        gw10 += d0 * x[r]
        gw11 += d1 * x[r]
        gb10 += d0
        gb11 += d1
        gw20 += d * h0
        gw21 += d * h1
        gb2 += d
    w1[0] -= lr * gw10
    w1[1] -= lr * gw11
    b1[0] -= lr * gb10
    b1[1] -= lr * gb11
    w2[0] -= lr * gw20
    w2[1] -= lr * gw21
    b2[0] -= lr * gb2
    return loss / np.float32(n)


def make_step(batch, seed=0):
    """``run()`` takes one step on a fixed batch and returns the loss as a float."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(batch).astype(np.float32)
    y = rng.standard_normal(batch).astype(np.float32)
    w1, w2 = (rng.standard_normal(2).astype(np.float32) for _ in range(2))
    b1, b2 = np.zeros(2, np.float32), np.zeros(1, np.float32)
    lr = np.float32(0.01)
    step(x, y, w1, b1, w2, b2, lr)
    return lambda: float(step(x, y, w1, b1, w2, b2, lr))


@njit(nogil=True, error_model="numpy")
def _many(x, y, w1, b1, w2, b2, lr, steps):
    total = 0.0
    for _ in range(steps):
        total += step(x, y, w1, b1, w2, b2, lr)
    return total


def inner_us(batch, steps=20000, seed=0):
    """Microseconds per step when the steps run in a compiled loop (no return to Python)."""
    import time
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(batch).astype(np.float32)
    y = rng.standard_normal(batch).astype(np.float32)
    w1, w2 = (rng.standard_normal(2).astype(np.float32) for _ in range(2))
    b1, b2 = np.zeros(2, np.float32), np.zeros(1, np.float32)
    _many(x, y, w1, b1, w2, b2, np.float32(0.01), 10)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        _many(x, y, w1, b1, w2, b2, np.float32(0.01), steps)
        best = min(best, (time.perf_counter() - t0) / steps * 1e6)
    return best


@njit(nogil=True, error_model="numpy")
def _streamed(x, y, w1, b1, w2, b2, lr, batch, steps):
    total = 0.0
    for s in range(steps):
        total += step(x[s * batch:(s + 1) * batch], y[s * batch:(s + 1) * batch], w1, b1, w2, b2, lr)
    return total


def streamed_us(batch, steps, seed=0):
    """Microseconds per step in a compiled loop over ``steps`` batches of one data set, each
    read in place in turn -- the data graphnn's loop reads in the benchmark (fit without
    shuffling), rather than one batch kept in cache."""
    import time
    rng = np.random.default_rng(seed)
    x = np.tile(rng.standard_normal(batch).astype(np.float32), steps)
    y = np.tile(rng.standard_normal(batch).astype(np.float32), steps)
    w1, w2 = (rng.standard_normal(2).astype(np.float32) for _ in range(2))
    b1, b2 = np.zeros(2, np.float32), np.zeros(1, np.float32)
    _streamed(x, y, w1, b1, w2, b2, np.float32(0.01), batch, 2)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        _streamed(x, y, w1, b1, w2, b2, np.float32(0.01), batch, steps)
        best = min(best, (time.perf_counter() - t0) / steps * 1e6)
    return best


if __name__ == "__main__":
    for batch in (64, 4096):
        print(f"batch {batch}: {inner_us(batch, 20000 if batch == 64 else 1000):.2f} us a step "
              f"(compiled loop of steps)")
