#!/usr/bin/env python3
"""Data-parallel scaling: training steps per second for 1, 2 and 4 MPI ranks (issue 16).

    python3 benchmarks/scaling.py [--ranks 1,2,4] [--steps 60] [--batch 256]

Each count of ranks runs ``mpiexec -n R`` on this file (``--worker``), one thread per rank
(NUMBA_NUM_THREADS=OMP_NUM_THREADS=1), at the same global batch size: every rank computes the
gradients of batch/R rows, then one Allreduce and the update. Two nets, float32, SGD:

* digits: the 64-32-10 MLP on gn.data.load_digits (1797 rows);
* mlp784: a 784-512-512-10 net on random data (4096 rows).

Steps/s is rank 0's, timed after a warm-up epoch (compiles excluded); efficiency is
steps/s(R) / (R * steps/s(1)) at a fixed global batch (strong scaling: 1.0 is ideal). On a
machine with fewer cores than ranks the ranks share cores and the numbers show the cost of
the MPI layer, not a speed-up.

For more than one rank it also prints where rank 0's step time goes (the gradients program on
its shard, the Allreduce including waiting for the slowest rank, the optimizer's apply program)
and the Allreduce of the same flat buffer timed alone after a barrier: the most that
overlapping the Allreduce with the backward pass (non-blocking Iallreduce by layer) could save,
as a share of the step.
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(net, steps, batch):
    import numpy as np

    import graphnn as gn
    g = gn.Graph(net, seed=0)
    if net == "digits":
        X, Y = gn.data.load_digits()
        sizes = [32]
    else:
        rng = np.random.default_rng(0)
        X, Y = rng.normal(size=(4096, 784)), np.eye(10)[rng.integers(0, 10, 4096)]
        sizes = [512, 512]
    x, y = g.input("x", (None, X.shape[1])), g.input("y", (None, 10))
    layers = [gn.Dense(n, activation="relu") for n in sizes] + [gn.Dense(10)]
    logits = g.output("logits", gn.Sequential(layers)(x))
    model = gn.compile(g, gn.softmax_cross_entropy(logits, y), optimizer=gn.SGD(0.01), wait=True)
    distributed = "mpi" if gn.distributed.size() > 1 else None
    per_epoch = -(-len(X) // batch)
    epochs = max(1, steps // per_epoch)
    # warm-up: the compiles, including those started once enough steps have run (a driver
    # that calls BLAS compiles after its saved call overhead pays for it), then wait for them
    model.fit(X, Y, epochs=epochs, batch_size=batch, verbose=False, distributed=distributed)
    model.wait_compiled()
    started = time.perf_counter()
    history = model.fit(X, Y, epochs=epochs, batch_size=batch, verbose=False, distributed=distributed)
    seconds = time.perf_counter() - started
    result = {"steps_per_s": epochs * per_epoch / seconds}
    if distributed:
        # where a step's time goes on this rank, and the Allreduce alone (after a barrier, so no
        # rank waits for another): the most that overlapping it with the backward pass could save
        parts = history.distributed
        result.update({k: 1e3 * parts[f"{k}_s"] / parts["steps"] for k in ("gradients", "allreduce", "apply")})
        from mpi4py import MPI
        comm = MPI.COMM_WORLD
        flat = np.zeros(1 + sum(v.size for v in model.params.values()), dtype=model.dtype)
        times = []
        for _ in range(30):
            comm.Barrier()
            t0 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
            times.append(time.perf_counter() - t0)
        result["allreduce_alone"] = 1e3 * float(np.median(times))
        result["values"] = int(flat.size)
    if not distributed or gn.distributed.rank() == 0:
        print(json.dumps(result))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", default="1,2,4")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--nets", default="digits,mlp784")
    parser.add_argument("--worker", default=None)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.steps, args.batch)
    env = dict(os.environ, PYTHONPATH=str(ROOT), NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    mpiexec = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(mpiexec) if mpiexec.exists() else "mpiexec"
    print(f"{os.cpu_count()} cores; global batch {args.batch}; float32; one thread per rank")
    print("| net | ranks | steps/s | speed-up | efficiency | gradients ms | Allreduce ms (with waits) "
          "| Allreduce alone ms | apply ms | overlap could save |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for net in args.nets.split(","):
        base = None
        for ranks in [int(r) for r in args.ranks.split(",")]:
            command = [sys.executable, __file__, "--worker", net, "--steps", str(args.steps),
                       "--batch", str(args.batch)]
            if ranks > 1:
                command = [mpiexec, "-n", str(ranks), *command]
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800)
            if done.returncode != 0:
                sys.exit(f"{net} on {ranks} rank(s) failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rate = result["steps_per_s"]
            base = base or rate
            parts = " | | | | | |"
            if ranks > 1:
                share = result["allreduce_alone"] / (1e3 / rate)
                parts = (f" | {result['gradients']:.2f} | {result['allreduce']:.2f} | "
                         f"{result['allreduce_alone']:.3f} | {result['apply']:.2f} | {100 * share:.1f} % |")
            print(f"| {net} | {ranks} | {rate:.1f} | {rate / base:.2f} | {rate / (ranks * base):.2f}{parts}",
                  flush=True)


if __name__ == "__main__":
    main()
