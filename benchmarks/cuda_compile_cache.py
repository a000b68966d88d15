#!/usr/bin/env python3
"""The CUDA target's first training step in a new process: kernels compiled, then loaded.

numba-cuda caches each generated kernel's machine code beside graphnn's cached module
(``@cuda.jit(cache=True)``). This script runs the same child process twice on one empty
cache folder: the first compiles every kernel and writes the cache, the second loads it.
Each child builds the MLP, compiles it for ``target="cuda"`` with ``wait=True``, times its first
``step`` (which compiles or loads the kernels) and its second, and counts the cache's index
files. A third child, on a second empty folder, compiles with ``wait=False``: its first step
runs on the NumPy reference while the kernels compile in the background; it times that step
and how long after ``gn.compile`` the kernels were ready (``model.wait_compiled()``).

    python3 benchmarks/cuda_compile_cache.py [--sizes 784,512,512,10] [--batch 256] [--matmul auto]

Needs a GPU (under numba's CUDA simulator nothing is compiled: it runs, and times nothing
worth reading).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def child(sizes, batch, matmul, wait=True):
    import numpy as np
    if not hasattr(np, "row_stack"):        # numba-cuda 0.30 next to numpy 2.5
        np.row_stack = np.vstack
    t0 = time.perf_counter()
    sys.path.insert(0, os.path.dirname(HERE))
    sys.path.insert(0, HERE)
    import graphnn as gn
    from numba import cuda
    from workloads import data, graphnn_mlp
    t1 = time.perf_counter()
    g, value = graphnn_mlp(sizes, "relu", "softmax_ce")
    model = gn.compile(g, value, target="cuda", optimizer=gn.SGD(lr=0.01), matmul=matmul, wait=wait)
    t2 = time.perf_counter()
    x, y = data(sizes, "softmax_ce", batch)
    feeds = {"x": cuda.to_device(x), "y": cuda.to_device(y)}
    model.step(feeds)
    t3 = time.perf_counter()
    model.wait_compiled()       # (wait=False: the first step ran on the reference)
    ready = time.perf_counter() - t2
    t3b = time.perf_counter()
    model.step(feeds)
    t4 = time.perf_counter() - t3b + t3
    folder = model.backend.compiled.path.parent / "__pycache__"
    index = sorted(p.name for p in folder.glob("*.nbi")) if folder.is_dir() else []
    print(json.dumps({"imports": t1 - t0, "compile": t2 - t1, "first_step": t3 - t2,
                      "second_step": t4 - t3, "index_files": len(index), "ready": ready,
                      "matmul": model.backend.matmul}))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--sizes", default="784,512,512,10")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--matmul", default="auto", choices=("auto", "tiled", "cublas"))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--nowait", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.child:
        child(sizes, args.batch, args.matmul, wait=not args.nowait)
        return
    with tempfile.TemporaryDirectory(prefix="graphnn-cuda-cache-") as folder, \
            tempfile.TemporaryDirectory(prefix="graphnn-cuda-cache-") as other:
        rows = []
        for run, where, nowait in (("cold", folder, []), ("warm", folder, []), ("cold, wait=False", other, ["--nowait"])):
            env = dict(os.environ, GRAPHNN_CACHE_DIR=where)
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", "--sizes", args.sizes,
                                  "--batch", str(args.batch), "--matmul", args.matmul, *nowait],
                                 capture_output=True, text=True, env=env)
            if out.returncode:
                sys.exit(f"the {run} child failed:\n{out.stderr[-3000:]}")
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row["process"] = time.perf_counter() - t0
            rows.append((run, row))
    print(f"MLP {args.sizes}, batch {args.batch}, matmul={args.matmul} ({rows[0][1]['matmul']}), "
          f"one new process each, one cache folder")
    print(f"{'cache':16s} {'imports':>8s} {'compile':>8s} {'1st step':>9s} {'kernels ready':>14s} "
          f"{'2nd step':>9s} {'process':>8s} {'index files':>12s}")
    for run, r in rows:
        print(f"{run:16s} {r['imports']:7.2f}s {r['compile']:7.2f}s {r['first_step']:8.2f}s {r['ready']:13.2f}s "
              f"{r['second_step'] * 1e3:7.1f}ms {r['process']:7.2f}s {r['index_files']:12d}")
    cold, warm, nowait = rows[0][1], rows[1][1], rows[2][1]
    print(f"first step, warm / cold: {warm['first_step'] / cold['first_step']:.2f}x "
          f"({cold['first_step']:.2f} s -> {warm['first_step']:.2f} s)")
    print(f"first step, cold, wait=False (on the reference while the kernels compile): "
          f"{nowait['first_step']:.2f} s; kernels ready {nowait['ready']:.2f} s after gn.compile")


if __name__ == "__main__":
    main()
