#!/usr/bin/env python3
"""Where a training step's time goes: each kernel of the compiled step, timed on its own.

    python3 benchmarks/profile_step.py ["32-(8x64 GELU)-1 MSE b512"] [--reps 300]

Builds the workload's step (benchmarks/workloads.py) on the CPU target, then calls each
kernel of the step -- in program order, on the step's own buffers -- ``reps`` times and
prints the median time of each, with the graph nodes it computes, largest first, and
the sum against the time of the whole step.
"""
import argparse
import os
import statistics
import sys
import time
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)


def kernel_times(model, feeds, reps):
    """[(median seconds, kernel name, the node it computes, whether it calls BLAS)] for each call of
    the step, in order."""
    import numpy as np
    build = model.backend.build("step")
    plan = model.backend._plan("step", len(next(iter(feeds.values()))))
    args = [np.ascontiguousarray(feeds[f], dtype=model.dtype) for f in plan.feeds]
    plan.bound(*args)                                      # every kernel compiled and warm
    bound, source = plan.bound, model.backend.program_source("step", model.backend.printer(False))
    texts = {k.name: k.text for k in source.kernels}
    rows = []
    for (fn, values, fed), (name, _, _), note in zip(bound.calls, build.meta["calls"], source.call_notes):
        values = list(values)
        for pos, k, flat in fed:
            values[pos] = args[k].reshape(-1) if flat else args[k]
        for _ in range(5):
            fn(*values)
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn(*values)
            times.append(time.perf_counter() - t0)
        rows.append((statistics.median(times), name, note, "np.dot(" in texts[name]))
    return rows


def main():
    from workloads import WORKLOADS, data, graphnn_mlp
    import graphnn as gn
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workload", nargs="?", default="32-(8x64 GELU)-1 MSE b512", choices=sorted(WORKLOADS))
    parser.add_argument("--reps", type=int, default=300)
    args = parser.parse_args()
    sizes, act, loss, batch = WORKLOADS[args.workload]
    graph, value = graphnn_mlp(sizes, act, loss)
    model = gn.compile(graph, value, optimizer=gn.SGD(lr=0.01), wait=True)
    x, y = data(sizes, loss, batch)
    feeds = {"x": x, "y": y}
    for _ in range(10):
        model.step(feeds)
    model.wait_compiled()
    steps = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        model.step(feeds)
        steps.append(time.perf_counter() - t0)
    step = statistics.median(steps)
    rows = kernel_times(model, feeds, args.reps)
    by_kind = defaultdict(float)
    for t, _, what, blas in rows:
        by_kind[_kind(what, blas)] += t
    total = sum(r[0] for r in rows)
    print(f"{args.workload}: step {step * 1e6:.0f} us (model.step, median); its {len(rows)} kernel calls "
          f"timed one by one sum to {total * 1e6:.0f} us")
    print(f"\n{'us':>8s} {'share':>6s}  kind")
    for kind, t in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"{t * 1e6:8.1f} {t / total:6.1%}  {kind}")
    print(f"\n{'us':>8s}  kernel (the first node it computes)")
    for t, name, what, _ in sorted(rows, key=lambda r: -r[0])[:15]:
        print(f"{t * 1e6:8.1f}  {name}  {what[:110]}")


def _kind(what, blas):
    if blas:
        return "matrix products (BLAS)"
    if what.startswith("update["):
        return "optimizer updates"
    if what.startswith("delta["):
        return "backward loops and sums"
    return "forward loops and sums"


if __name__ == "__main__":
    sys.exit(main())
