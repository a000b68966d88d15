"""When a compiled driver is built: at once where Numba can cache it, else once it has paid.

A driver inlining a BLAS call is compiled again in every process and holds Numba's compiler lock
while it compiles, stalling the caller's own compiles; it waits until the call overhead it would
have saved reaches its estimated compile time (graphnn/runtime/cpu.py, DRIVER_BASE)."""
import numpy as np

import graphnn as gn
from graphnn.runtime import cpu


def _model(width, depth=3):
    g = gn.Graph(f"rent_{width}", seed=0)
    x, y = g.input("x", (None, 4)), g.input("y", (None, 1))
    h = x
    for k in range(depth):
        h = gn.dense(h, width, activation="tanh", name=f"h{k}")
    out = g.output("y_hat", gn.dense(h, 1, name="out"))
    model = gn.compile(g, gn.mse(out, y), optimizer=gn.SGD(0.01), target="cpu", dtype="float64", wait=True)
    rng = np.random.default_rng(0)
    return model, {"x": rng.normal(size=(2, 4)), "y": rng.normal(size=(2, 1))}


def _steps(model, feeds, n):
    for _ in range(n):
        model.step({k: v.copy() for k, v in feeds.items()})     # new arrays: the general path too


def test_a_cacheable_driver_compiles_as_soon_as_it_pays():
    model, feeds = _model(width=2)          # products of 2 are written out: no BLAS
    _steps(model, feeds, cpu.TIMED_CALLS + 1)
    build = model.backend._plan("step", 2).build
    assert build.driver_cacheable and build.rent is None
    assert build.driver_job is not None     # asked for right after the timed calls


def test_a_driver_calling_blas_waits_until_its_compile_has_paid():
    model, feeds = _model(width=16)         # np.dot: Numba cannot cache the driver
    _steps(model, feeds, cpu.TIMED_CALLS + 1)
    build = model.backend._plan("step", 2).build
    assert not build.driver_cacheable
    calls = len(model.backend._plan("step", 2).bound.calls)
    expected = np.ceil(2 * (cpu.DRIVER_BASE + cpu.DRIVER_PER_CALL * calls) / (calls * cpu.CALL_COST))
    assert build.driver_job is None and 0 < build.rent <= expected   # thousands of calls to go
    build.rent = 3                          # as if the rent were nearly paid
    _steps(model, feeds, 2)
    assert build.driver_job is None and build.rent == 1
    model.step(feeds)                       # the fast path counts too
    model.step(feeds)
    assert build.rent is None and build.driver_job is not None
    build.wait()
    before = model.get_params()
    loss = model.step(feeds)
    assert build.stage == "compiled" and np.isfinite(loss)
    assert any(not np.array_equal(before[k], v) for k, v in model.get_params().items())
