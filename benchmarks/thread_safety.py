#!/usr/bin/env python3
"""What thread safety costs a single thread: the model's lock on the 1-2-1 net at batch 64.

    python3 benchmarks/thread_safety.py [--reps 3]

Times ``model.step`` and ``model.forward`` (median of 5 runs of 20,000 / 5,000 calls, best of
``--reps`` models) with the model's lock, and with the lock replaced by a no-op context, in one
process, alternating, and prints the ratios. Also: ``forward`` from 4 threads at once on one
model, checked against the single-thread results.
"""
import argparse
import statistics
import threading
import time

import numpy as np

import graphnn as gn


class _NoLock:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _model(locked):
    net = gn.lecture.regression_net()
    model = gn.compile(net.graph, net.loss, optimizer=gn.SGD(lr=0.01), wait=True, seed=0)
    if not locked:
        model.lock = model.backend._lock = _NoLock()
    return model


def _time(fn, calls):
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        runs.append((time.perf_counter() - t0) / calls * 1e6)
    return statistics.median(runs)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    x = np.linspace(-1, 1, 64, dtype=np.float32)[:, None]
    feeds = {"x": x, "y": np.sin(3 * x)}
    best = {}
    for _ in range(args.reps):
        for locked in (True, False):
            model = _model(locked)
            for _ in range(2000):                 # past the timed calls: compiled driver, fast step
                model.step(feeds)
                model.forward({"x": x})
            model.wait_compiled()
            step = _time(lambda: model.step(feeds), 20000)
            forward = _time(lambda: model.forward({"x": x}), 5000)
            old = best.get(locked, (float("inf"), float("inf")))
            best[locked] = (min(old[0], step), min(old[1], forward))
    (s1, f1), (s0, f0) = best[True], best[False]
    print(f"model.step    with lock {s1:6.2f} us   without {s0:6.2f} us   ratio {s1 / s0:.3f}")
    print(f"model.forward with lock {f1:6.2f} us   without {f0:6.2f} us   ratio {f1 / f0:.3f}")

    model = _model(True)
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((50, 1)).astype(np.float32) for _ in range(4)]
    expect = [model.forward({"x": a})["y_hat"] for a in inputs]
    wrong = []

    def work(k):
        for _ in range(500):
            if not np.array_equal(model.forward({"x": inputs[k]})["y_hat"], expect[k]):
                wrong.append(k)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    print(f"forward from 4 threads, 2000 calls: {len(wrong)} results differ from one thread's")


if __name__ == "__main__":
    main()
