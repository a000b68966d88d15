#!/usr/bin/env python3
"""CPU training-step benchmark: graphnn against PyTorch and JAX, side by side.

    python3 benchmarks/train_step.py [--reps 200] [--frameworks graphnn,torch,jax] [--keep-openblas-env]

Each framework runs in its own process (Numba's OpenMP next to PyTorch's libgomp
slows PyTorch down), one after another, on the same workloads (benchmarks/workloads.py):
median time of a training step (forward + backward + SGD update, float32, loss
read back) after warm-up. It also times graphnn's cold compile (fresh cache, new
process) and warm start (populated cache, new process) of the 784-512-512-10 step,
and the sgemm-bound of that step from numpy's measured sgemm rate.

By default the worker processes run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE
unset (this machine sets them and they halve sgemm); --keep-openblas-env keeps them.
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
TARGETS_US = {"1-2-1 tanh MSE b64": 1.5, "32-(8x64 GELU)-1 MSE b512": 450.0}


def _median_us(step, reps, warmup=10):
    from workloads import median_us
    return median_us(step, reps, warmup)


def worker_graphnn(reps):
    sys.path.insert(0, ROOT)
    import graphnn as gn
    from workloads import WORKLOADS, data, graphnn_mlp
    for title, (sizes, act, loss, batch) in WORKLOADS.items():
        g, value = graphnn_mlp(sizes, act, loss)
        model = gn.compile(g, value, optimizer=gn.SGD(lr=0.01), wait=True)
        x, y = data(sizes, loss, batch)
        feeds = {"x": x, "y": y}
        for _ in range(10):      # past the timed first calls, then let a driver compile finish
            model.step(feeds)
        model.wait_compiled()
        us = _median_us(lambda: model.step(feeds), reps if batch * sizes[1] < 10 ** 6 else max(reps // 10, 20))
        print(json.dumps({"workload": title, "us": us}), flush=True)


def worker_torch(reps):
    import torch
    from workloads import WORKLOADS, torch_step
    torch.set_num_threads(os.cpu_count() or 1)
    for title, (sizes, act, loss, batch) in WORKLOADS.items():
        step = torch_step(sizes, act, loss, batch)
        us = _median_us(step, reps if batch * sizes[1] < 10 ** 6 else max(reps // 10, 20))
        print(json.dumps({"workload": title, "us": us}), flush=True)


def worker_jax(reps):
    from workloads import WORKLOADS, jax_step
    for title, (sizes, act, loss, batch) in WORKLOADS.items():
        run = jax_step(sizes, act, loss, batch)
        us = _median_us(run, reps if batch * sizes[1] < 10 ** 6 else max(reps // 10, 20))
        print(json.dumps({"workload": title, "us": us}), flush=True)


def worker_compile(cache):
    """Time gn.compile + first step of the 784-512-512-10 net (cold or warm, per cache)."""
    t0 = time.perf_counter()
    sys.path.insert(0, ROOT)
    import graphnn as gn
    from workloads import data, graphnn_mlp
    t1 = time.perf_counter()
    g, value = graphnn_mlp([784, 512, 512, 10], "relu", "ce")
    model = gn.compile(g, value, optimizer=gn.SGD(lr=0.01), cache_dir=cache, wait=True)
    x, y = data([784, 512, 512, 10], "ce", 256)
    t2 = time.perf_counter()
    model.step({"x": x, "y": y})
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "compile_s": t2 - t1, "first_step_s": t3 - t2,
                      "cache_hit": model.backend.build("step").cache_hit}), flush=True)


def worker_sgemm():
    import numpy as np
    a = np.random.rand(256, 784).astype(np.float32)
    b = np.random.rand(784, 512).astype(np.float32)
    t = _median_us(lambda: a @ b, 100, warmup=20)
    print(json.dumps({"gflops": 2 * 256 * 784 * 512 / (t * 1e-6) / 1e9}), flush=True)


def spawn(args, env):
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env,
                          cwd=HERE)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else ["?"]
        return rows, tail[0]
    return rows, None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker")
    parser.add_argument("--cache")
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--frameworks", default="graphnn,torch,jax")
    parser.add_argument("--keep-openblas-env", action="store_true")
    args = parser.parse_args()
    if args.worker:
        sys.path.insert(0, HERE)
        if args.worker == "compile":
            return worker_compile(args.cache)
        if args.worker == "sgemm":
            return worker_sgemm()
        return globals()["worker_" + args.worker](args.reps)

    env = dict(os.environ)
    if not args.keep_openblas_env:
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
    results, notes = {}, []
    for fw in args.frameworks.split(","):
        rows, err = spawn(["--worker", fw, "--reps", str(args.reps)], env)
        if err:
            notes.append(f"{fw}: not timed ({err})")
        results[fw] = {r["workload"]: r["us"] for r in rows}
    sgemm, _ = spawn(["--worker", "sgemm"], env)
    with tempfile.TemporaryDirectory() as cache:
        cold, err1 = spawn(["--worker", "compile", "--cache", cache], env)
        warm, err2 = spawn(["--worker", "compile", "--cache", cache], env)

    frameworks = [f for f in results if results[f]]
    print(f"Training step, float32, median us ({os.cpu_count()} cores; OPENBLAS env "
          f"{'kept' if args.keep_openblas_env else 'unset'})")
    head = f"{'workload':30s}" + "".join(f"{f:>12s}" for f in frameworks)
    head += "".join(f"{'gn/' + f:>12s}" for f in frameworks if f != "graphnn")
    print(head)
    from workloads import WORKLOADS
    for title in WORKLOADS:
        row = f"{title:30s}"
        for f in frameworks:
            v = results[f].get(title)
            row += f"{v:12.1f}" if v is not None else f"{'-':>12s}"
        for f in frameworks:
            if f != "graphnn" and title in results[f] and title in results.get("graphnn", {}):
                row += f"{results['graphnn'][title] / results[f][title]:11.2f}x"
        target = TARGETS_US.get(title)
        if target and title in results.get("graphnn", {}):
            row += f"   target {target:g} us: {'met' if results['graphnn'][title] <= target else 'missed'}"
        print(row)
    if sgemm:
        gf = sgemm[0]["gflops"]
        flops = 6 * 256 * (784 * 512 + 512 * 512 + 512 * 10)
        print(f"numpy sgemm rate here: {gf:.0f} GFLOP/s -> the 784-512-512-10 b256 step "
              f"({flops / 1e9:.2f} GFLOP) is bounded by {flops / gf / 1e3:.0f} us")
    for label, rows, err in (("cold compile (fresh cache, new process)", cold, err1),
                             ("warm start (cached, new process)", warm, err2)):
        if rows:
            r = rows[0]
            print(f"{label}: compile {r['compile_s']:.2f} s + first step {r['first_step_s']:.2f} s "
                  f"(import graphnn {r['import_s']:.2f} s, cache hit {r['cache_hit']})")
        else:
            print(f"{label}: failed ({err})")
    for n in notes:
        print(n)


if __name__ == "__main__":
    sys.exit(main())
