#!/usr/bin/env python3
"""CPU training-step benchmark: graphnn against PyTorch, torch.compile and JAX, side by side.

    python3 benchmarks/train_step.py [--reps 200] [--frameworks graphnn,torch,torch_compile,jax,hand]
                                     [--keep-openblas-env]

Each framework runs in its own process (Numba's OpenMP next to PyTorch's libgomp
slows PyTorch down), one after another, on the same workloads (benchmarks/workloads.py):
median time of a training step (forward + backward + SGD update, float32, loss
read back) after warm-up. graphnn is timed twice: one ``model.step`` call from
Python ("graphnn step"), and per step inside ``model.train_steps`` -- the compiled
loop ``fit`` runs ("graphnn loop"). "hand" is the hand-fused kernel of
benchmarks/hand_fused.py for the 1-2-1 net: called from Python, and in a compiled
loop of steps on one batch ("hand loop") and over the data set graphnn's loop reads, each
batch in turn ("hand streamed"). The script also times graphnn's cold compile (fresh
cache, new process) and warm start (populated cache, new process) of the
784-512-512-10 step, and the sgemm bound of that step from numpy's measured sgemm
rate, and prints each target of the speed issue with its verdict.

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


def _median_us(step, reps, warmup=10):
    from workloads import median_us
    return median_us(step, reps, warmup)


def _reps(reps, sizes, batch):
    return reps if batch * sizes[1] < 10 ** 6 else max(reps // 10, 20)


def worker_graphnn(reps):
    sys.path.insert(0, ROOT)
    import numpy as np
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
        us = _median_us(lambda: model.step(feeds), _reps(reps, sizes, batch))
        print(json.dumps({"workload": title, "framework": "graphnn step", "us": us}), flush=True)
        # the compiled loop: steps over a data set of `steps` batches, as fit runs them
        steps = _loop_steps(sizes, batch)
        big = {k: np.tile(v, (steps, 1)) for k, v in feeds.items()}
        model.train_steps(big, batch_size=batch, steps=2)       # compiles the loop
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            model.train_steps(big, batch_size=batch, steps=steps)
            times.append((time.perf_counter() - t0) / steps * 1e6)
        print(json.dumps({"workload": title, "framework": "graphnn loop", "us": min(times)}), flush=True)
        if sizes == [784, 512, 512, 10]:    # its sgemm bound, measured next to it (the machine drifts)
            print(json.dumps({"workload": title, "framework": "sgemm bound", "us": _sgemm_bound_us()}),
                  flush=True)


def _loop_steps(sizes, batch):
    """How many batches the data set of the "graphnn loop" measure holds."""
    return max(10, min(2000, 2_000_000 // (batch * sum(sizes))))


def _sgemm_bound_us():
    """The 784-512-512-10 b256 step's matrix products at numpy's sgemm rate, measured now."""
    import numpy as np
    a = np.random.rand(256, 784).astype(np.float32)
    b = np.random.rand(784, 512).astype(np.float32)
    t = _median_us(lambda: a @ b, 200, warmup=20)
    rate = 2 * 256 * 784 * 512 / (t * 1e-6)
    return 6 * 256 * (784 * 512 + 512 * 512 + 512 * 10) / rate * 1e6


def worker_torch(reps, compiled=False):
    import torch
    from workloads import WORKLOADS, torch_step
    torch.set_num_threads(os.cpu_count() or 1)
    name = "torch.compile" if compiled else "torch"
    for title, (sizes, act, loss, batch) in WORKLOADS.items():
        step = torch_step(sizes, act, loss, batch, compiled=compiled)
        us = _median_us(step, _reps(reps, sizes, batch))
        print(json.dumps({"workload": title, "framework": name, "us": us}), flush=True)


def worker_torch_compile(reps):
    worker_torch(reps, compiled=True)


def worker_jax(reps):
    from workloads import WORKLOADS, jax_step
    for title, (sizes, act, loss, batch) in WORKLOADS.items():
        run = jax_step(sizes, act, loss, batch)
        us = _median_us(run, _reps(reps, sizes, batch))
        print(json.dumps({"workload": title, "framework": "jax", "us": us}), flush=True)


def worker_hand(reps):
    import hand_fused
    from workloads import WORKLOADS
    for title, (sizes, act, loss, batch) in WORKLOADS.items():
        if sizes != [1, 2, 1]:
            continue
        us = _median_us(hand_fused.make_step(batch), reps)
        print(json.dumps({"workload": title, "framework": "hand", "us": us}), flush=True)
        loop = hand_fused.inner_us(batch, 20000 if batch < 1000 else 1000)
        print(json.dumps({"workload": title, "framework": "hand loop", "us": loop}), flush=True)
        # over the data set graphnn's loop reads (the same number of batches, in order)
        streamed = hand_fused.streamed_us(batch, _loop_steps(sizes, batch))
        print(json.dumps({"workload": title, "framework": "hand streamed", "us": streamed}), flush=True)


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
    parser.add_argument("--frameworks", default="graphnn,jax,torch_compile,torch,hand")
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
        for r in rows:
            results.setdefault(r["framework"], {})[r["workload"]] = r["us"]
    sgemm, _ = spawn(["--worker", "sgemm"], env)
    with tempfile.TemporaryDirectory() as cache:
        cold, err1 = spawn(["--worker", "compile", "--cache", cache], env)
        warm, err2 = spawn(["--worker", "compile", "--cache", cache], env)

    from workloads import WORKLOADS
    columns = [c for c in ("graphnn step", "graphnn loop", "jax", "torch.compile", "torch", "hand", "hand loop",
                           "hand streamed") if c in results]
    print(f"Training step, float32, median us ({os.cpu_count()} cores; OPENBLAS env "
          f"{'kept' if args.keep_openblas_env else 'unset'})")
    print(f"{'workload':30s}" + "".join(f"{c:>15s}" for c in columns))
    for title in WORKLOADS:
        row = f"{title:30s}"
        for c in columns:
            v = results[c].get(title)
            row += f"{v:15.2f}" if v is not None else f"{'-':>15s}"
        print(row)
    bound = None
    if sgemm:
        gf = sgemm[0]["gflops"]
        flops = 6 * 256 * (784 * 512 + 512 * 512 + 512 * 10)
        bound = flops / gf / 1e3
        print(f"numpy sgemm rate here: {gf:.0f} GFLOP/s -> the 784-512-512-10 b256 step "
              f"({flops / 1e9:.2f} GFLOP) is bounded by {bound:.0f} us")
    print()
    for line in _verdicts(results, bound):
        print(line)
    print()
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


def _verdicts(results, bound):
    """One line per target of the speed issue: the measured ratio and met/missed."""
    def get(framework, workload):
        return results.get(framework, {}).get(workload)

    def line(what, value, target, unit=""):
        if value is None or target is None:
            return f"{what}: not measured"
        return f"{what}: {value:.2f}{unit} (target <= {target:.2f}{unit}): {'met' if value <= target else 'missed'}"

    tiny, big = "1-2-1 tanh MSE b64", "1-2-1 tanh MSE b4096"
    out = []
    for w in (tiny, big):
        loop, hand = get("graphnn loop", w), get("hand", w)
        out.append(line(f"{w}, graphnn loop / hand-fused kernel (called from Python)",
                        loop / hand if loop and hand else None, 2.0, "x"))
        hand_loop = get("hand loop", w)
        if loop and hand_loop:
            out.append(f"    (against the hand kernel in a compiled loop of steps: {loop / hand_loop:.1f}x)")
        streamed, step = get("hand streamed", w), get("graphnn step", w)
        if loop and streamed:
            out.append(f"    (like for like: graphnn loop / hand loop over the same data set {loop / streamed:.2f}x; "
                       f"one model.step / hand kernel, both from Python on one batch {step / hand:.2f}x)")
    out.append(line(f"{tiny}, one model.step call", get("graphnn step", tiny), 3.0, " us"))
    out.append(line("2-2-1 sigmoid BCE b256, graphnn loop", get("graphnn loop", "2-2-1 sigmoid BCE b256"), 4.0,
                    " us"))
    mid = "64-128-128-10 ReLU CE b128"
    ratio = get("graphnn loop", mid) / get("jax", mid) if get("graphnn loop", mid) and get("jax", mid) else None
    out.append(line(f"{mid}, graphnn loop / JAX", ratio, 0.7, "x"))
    gelu = "32-(8x64 GELU)-1 MSE b512"
    peers = [v for v in (get("jax", gelu), get("torch.compile", gelu)) if v]
    ratio = get("graphnn loop", gelu) / min(peers) if peers and get("graphnn loop", gelu) else None
    out.append(line(f"{gelu}, graphnn loop / faster of JAX and torch.compile", ratio, 0.8, "x"))
    large = "784-512-512-10 ReLU CE b256"
    bound = get("sgemm bound", large) or bound
    if bound and get("graphnn loop", large):
        share = bound / get("graphnn loop", large)
        peer = f", JAX {bound / get('jax', large):.0%}" if get("jax", large) else ""
        out.append(f"{large}: graphnn at {share:.0%} of the sgemm rate (target >= 97 %{peer}): "
                   f"{'met' if share >= 0.97 else 'missed'}")
    return out


if __name__ == "__main__":
    sys.exit(main())
