#!/usr/bin/env python3
"""Where a CUDA training step's time goes: each kernel's device time, the host's.

    python3 benchmarks/gpu_profile.py [--sizes 784,512,512,10] [--batch 8192] [--matmul cublas] [--reps 20]

For one MLP training step (ReLU hidden layers, softmax-CE; 1-2-1 tanh MSE with
``--sizes 1,2,1``) on the CUDA target it prints:

* ``model.step`` with CUDA graphs (the default) and with ``graphs=False``: median wall time,
  and the graph replay alone (one launch and the wait);
* every launch of the step, in order, named after its kernel in the generated module:
  its device time (CUDA events around it on the model's stream, median over ``--reps``
  steps) and the host time of the launch call itself (median);
* the totals: device time of all launches, host time of all launch calls. A step launched
  one by one takes about the larger of the two; a graph, about the device time.

No profiler needed (CUDA events only). Under numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1 ... --sizes 4,8,3 --batch 5 --reps 1``) it runs end to end with
meaningless times.
"""
import argparse
import os
import re
import statistics
import sys
import time

import numpy as np

if not hasattr(np, "row_stack"):       # numba-cuda 0.30 next to numpy 2.5
    np.row_stack = np.vstack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import graphnn as gn  # noqa: E402
from workloads import data, graphnn_mlp, median_us  # noqa: E402


def launch_names(source, program="step"):
    """The kernel each launch of ``program`` runs, in order, read from the generated host function."""
    body = source[source.index(f"\ndef {program}(b, N):"):]
    body = body[:body.index("\n    ]")]
    return [m.group(2) for m in re.finditer(r"^        (_bind\w*)\((\w+)", body, re.M)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="784,512,512,10")
    parser.add_argument("--batch", type=int, default=8192)
    parser.add_argument("--matmul", default="auto", choices=("auto", "tiled", "cublas"))
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    from numba import cuda
    sizes = [int(s) for s in args.sizes.split(",")]
    act, loss = ("tanh", "mse") if sizes[-1] == 1 else ("relu", "ce")
    x, y = data(sizes, loss, args.batch)
    feeds = {"x": cuda.to_device(x), "y": cuda.to_device(y)}
    title = f"{'-'.join(map(str, sizes))} {act} {loss} batch {args.batch}"

    models = {}
    for graphs in (True, False):
        g, value = graphnn_mlp(sizes, act, loss)
        model = gn.compile(g, value, target="cuda", optimizer=gn.SGD(lr=0.01), matmul=args.matmul,
                           graphs=graphs, wait=True)
        for _ in range(3):
            model.step(feeds)
        models[graphs] = model
    eager, graphed = models[False], models[True]
    backend = eager.backend
    print(f"{title}: matmul {backend.matmul}"
          + (f" ({backend.launcher.cublas_error})" if backend.launcher.cublas_error else ""))
    for graphs, model in models.items():
        us = median_us(lambda: model.step(feeds), args.reps, warmup=2)
        print(f"  model.step, graphs={graphs}: {us:.1f} us")
    plan = graphed.backend._launches[("step", args.batch)]
    if plan.graph is not None:
        launcher = graphed.backend.launcher

        def replay():
            launcher.run(plan)
            launcher.synchronize()
        print(f"  graph replay alone (launch + wait): {median_us(replay, args.reps, warmup=2):.1f} us")
    else:
        print(f"  no graph captured: {graphed.backend.launcher.capture_error or 'graphs off'}")

    launches = backend._launches[("step", args.batch)].launches
    names = launch_names(backend.source)
    if len(names) != len(launches):
        names = [f"launch {n}" for n in range(len(launches))]
    stream = backend.stream
    device = [[] for _ in launches]
    host = [[] for _ in launches]
    for _ in range(args.reps):
        events = [cuda.event() for _ in range(len(launches) + 1)]
        events[0].record(stream=stream)
        for n, launch in enumerate(launches):
            t0 = time.perf_counter()
            launch()
            host[n].append((time.perf_counter() - t0) * 1e6)
            events[n + 1].record(stream=stream)
        events[-1].synchronize()
        for n in range(len(launches)):
            device[n].append(events[n].elapsed_time(events[n + 1]) * 1e3)
    rows = [(name, statistics.median(d), statistics.median(h)) for name, d, h in zip(names, device, host)]
    print(f"\n  {'#':>3s} {'kernel':28s} {'device us':>10s} {'host us':>9s}")
    for n, (name, d, h) in enumerate(rows):
        print(f"  {n:3d} {name:28s} {d:10.1f} {h:9.1f}")
    print(f"  {'':3s} {'total':28s} {sum(r[1] for r in rows):10.1f} {sum(r[2] for r in rows):9.1f}")


if __name__ == "__main__":
    main()
