#!/usr/bin/env python3
"""Compile-time benchmark: setup + first training step, graphnn against JAX, side by side.

    python3 benchmarks/compile_time.py [--workloads all|quick] [--no-jax] [--chain 100,1000]

Every measurement runs in a fresh process; "cold" means an empty graphnn/Numba
cache. Times start after ``import graphnn`` (or ``import jax``), which is
timed on its own. For each workload graphnn is measured five ways:

* first step, not waiting -- ``gn.compile(..., wait=False)``: build, derive and
  the first training step (on the NumPy reference while kernels compile);
* compiled, cold -- ``wait=True``, empty cache: until the first step has run
  on compiled kernels;
* time to compiled in the wait=False run (the background build's end);
* known kernels -- a new process compiling a *new* graph (other names, twice
  the hidden layers; for the random DAG, the same DAG renamed) whose kernel
  kinds the cold run compiled;
* warm -- the same graph again in a new process.

JAX: build, ``jax.jit`` trace + XLA compile and the first step (float32).
A chain of N dense+tanh layers (8 wide) shows how compile time grows with N.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

WORKLOADS = {
    "1-2-1 tanh MSE b64": ("mlp", [1, 2, 1], "tanh", "mse", 64),
    "2-2-1 sigmoid BCE b256": ("mlp", [2, 2, 1], "sigmoid", "bce", 256),
    "64-128-128-10 ReLU CE b128": ("mlp", [64, 128, 128, 10], "relu", "ce", 128),
    "784-512-512-10 ReLU CE b256": ("mlp", [784, 512, 512, 10], "relu", "ce", 256),
    "32-(8x64 GELU)-1 MSE b512": ("mlp", [32] + [64] * 8 + [1], "gelu", "mse", 512),
    "random DAG, 40 ops, b64": ("dag", 40, None, "mse", 64),
}
QUICK = ["1-2-1 tanh MSE b64", "64-128-128-10 ReLU CE b128", "random DAG, 40 ops, b64"]
TARGETS = {"first": 0.4, "first_big": 0.6, "dag": 1.0, "known": 0.15, "warm": 0.1}


def _graph(spec, variant=0):
    """(graph, loss, x, y) of a workload; ``variant`` 1 renames it and doubles its hidden layers."""
    from workloads import data, graphnn_mlp, random_dag
    kind, sizes, act, loss, batch = spec
    if kind == "dag":   # the variant: the same DAG under another name (a DAG's kinds are its own)
        g, value = random_dag(sizes, seed=0)
        g.name += "-renamed" if variant else ""
        x, y = data([8, 8], "mse", batch)
        return g, value, x, y
    if variant:
        sizes = [sizes[0]] + sizes[1:-1] * 2 + [sizes[-1]]
    g, value = graphnn_mlp(sizes, act, loss, seed=variant)
    if variant:
        g.name += "-renamed"
    x, y = data(sizes, loss, batch)
    return g, value, x, y


def worker_graphnn(title, wait, variant):
    t0 = time.perf_counter()
    sys.path.insert(0, ROOT)
    import graphnn as gn
    t1 = time.perf_counter()
    g, value, x, y = _graph(WORKLOADS[title], variant)
    model = gn.compile(g, value, optimizer=gn.SGD(lr=0.01), wait=wait)
    model.step({"x": x, "y": y})
    t2 = time.perf_counter()
    stage = model.compile_status()["step"]
    model.wait_compiled()
    t3 = time.perf_counter()
    build = model.backend.build("step")
    print(json.dumps({"import_s": t1 - t0, "first_s": t2 - t1, "compiled_s": t3 - t1, "stage": stage,
                      "new_kernels": build.new_kernels, "cache_hit": build.cache_hit}), flush=True)


def worker_jax(title):
    t0 = time.perf_counter()
    import jax  # noqa: F401 -- timed on its own, as graphnn's import is
    t1 = time.perf_counter()
    from workloads import jax_step
    kind, sizes, act, loss, batch = WORKLOADS[title]
    if kind == "dag":
        print(json.dumps({"skipped": "no JAX version of the random DAG"}), flush=True)
        return
    jax_step(sizes, act, loss, batch)()      # build, trace, compile and the first step
    print(json.dumps({"import_s": t1 - t0, "first_s": time.perf_counter() - t1}), flush=True)


def worker_chain(n):
    t0 = time.perf_counter()
    sys.path.insert(0, ROOT)
    import numpy as np
    import graphnn as gn
    t1 = time.perf_counter()
    g = gn.Graph(f"chain-{n}")
    x, y = g.input("x", (None, 8)), g.input("y", (None, 8))
    h = x
    for k in range(n):
        h = gn.dense(h, 8, activation="tanh", name=f"layer{k}")
    model = gn.compile(g, gn.mse(h, y), optimizer=gn.SGD(lr=0.01), wait=True)
    rng = np.random.default_rng(0)
    model.step({"x": rng.standard_normal((64, 8)), "y": rng.standard_normal((64, 8))})
    t2 = time.perf_counter()
    build = model.backend.build("step")
    print(json.dumps({"n": n, "import_s": t1 - t0, "compiled_s": t2 - t1, **build.timings,
                      "kernel_calls": len(build.meta["calls"]),
                      "distinct_kernels": len({call[0] for call in build.meta["calls"]})}), flush=True)


def spawn(args, cache=None):
    env = dict(os.environ)
    if cache is not None:
        env["GRAPHNN_CACHE_DIR"] = cache
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, cwd=HERE)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not rows:
        tail = proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else ["no output"]
        return {"error": tail[0]}
    return rows[0]


def _fmt(row, key="first_s"):
    return f"{row[key]:8.2f}" if key in row else f"{'-':>8s}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker")
    parser.add_argument("--title")
    parser.add_argument("--wait", type=int, default=1)
    parser.add_argument("--variant", type=int, default=0)
    parser.add_argument("--n", type=int)
    parser.add_argument("--workloads", default="all")
    parser.add_argument("--no-jax", action="store_true")
    parser.add_argument("--chain", default="100,1000")
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, HERE)
        if args.worker == "graphnn":
            return worker_graphnn(args.title, bool(args.wait), args.variant)
        if args.worker == "jax":
            return worker_jax(args.title)
        return worker_chain(args.n)

    titles = QUICK if args.workloads == "quick" else list(WORKLOADS)
    print(f"Setup + first training step, seconds after import ({os.cpu_count()} cores, float32, "
          f"each cell a new process; cold = empty cache)")
    head = (f"{'workload':30s}{'first':>8s}{'cold':>8s}{'to cmp':>8s}{'known':>8s}{'warm':>8s}"
            f"{'JAX':>8s}{'first/JAX':>10s}{'cold/JAX':>9s}")
    print(head)
    imports = []
    for title in titles:
        with tempfile.TemporaryDirectory() as c1, tempfile.TemporaryDirectory() as c2:
            first = spawn(["--worker", "graphnn", "--title", title, "--wait", "0"], c1)
            cold = spawn(["--worker", "graphnn", "--title", title, "--wait", "1"], c2)
            known = spawn(["--worker", "graphnn", "--title", title, "--wait", "1", "--variant", "1"], c2)
            warm = spawn(["--worker", "graphnn", "--title", title, "--wait", "1"], c2)
        jax = {} if args.no_jax else spawn(["--worker", "jax", "--title", title])
        imports.append(cold.get("import_s"))
        row = (f"{title:30s}{_fmt(first)}{_fmt(cold)}{_fmt(first, 'compiled_s')}{_fmt(known)}"
               f"{_fmt(warm)}{_fmt(jax)}")
        if "first_s" in jax and "first_s" in first:
            row += f"{first['first_s'] / jax['first_s']:9.2f}x{cold['first_s'] / jax['first_s']:8.2f}x"
        print(row, flush=True)
        for name, r in (("first", first), ("cold", cold), ("known", known), ("warm", warm), ("jax", jax)):
            if "error" in r:
                print(f"   {name}: failed: {r['error']}")
        if "new_kernels" in known:
            print(f"   known-kernels graph: {known['new_kernels']} new kernel(s); "
                  f"first step of the wait=False run ran on: {first.get('stage')}")
    ok = [i for i in imports if i is not None]
    if ok:
        print(f"import graphnn: {min(ok):.2f} s (min of {len(ok)} processes)")
    print("\nCompile time against graph size: a chain of N dense+tanh layers, cold, wait=True")
    chains = {}
    for n in (int(v) for v in args.chain.split(",") if v):
        with tempfile.TemporaryDirectory() as cache:
            chains[n] = r = spawn(["--worker", "chain", "--n", str(n)], cache)
        if "error" in r:
            print(f"  N = {n}: failed: {r['error']}")
            continue
        print(f"  N = {n:5d}: {r['compiled_s']:7.2f} s  (generate {r.get('generate', 0):.2f} s, kernels "
              f"{r.get('kernels', 0):.2f} s; {r['kernel_calls']} kernel calls, {r['distinct_kernels']} distinct)")
    ns = sorted(n for n in chains if "compiled_s" in chains[n])
    if len(ns) >= 2:
        lo, hi = ns[0], ns[-1]
        print(f"  {hi}-layer chain / {lo}-layer chain: {chains[hi]['compiled_s'] / chains[lo]['compiled_s']:.1f}x "
              f"(the graph is {hi / lo:.0f}x larger)")


if __name__ == "__main__":
    sys.exit(main())
