#!/usr/bin/env python3
"""The generated tiled SGEMM's configurations against cuBLAS, on one GPU.

    python3 benchmarks/sgemm_sweep.py [--n 4096] [--reps 20]

For each configuration (block tile, K slab, prefetching, runs of adjacent rows per
thread, steps of k per iteration; ``graphnn.codegen.cuda.Sgemm``)
the product kernel is generated and compiled in a scratch cache, checked against cuBLAS
on fresh random inputs (relative Frobenius error), then timed: median of ``--reps``
synchronised calls. The default configuration is the first line. Under numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1 ... --n 8 --reps 1``) it runs end to end, timings
meaningless.
"""
import argparse
import os
import sys
import tempfile

import numpy as np

if not hasattr(np, "row_stack"):       # numba-cuda 0.30 next to numpy 2.5
    np.row_stack = np.vstack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import graphnn as gn  # noqa: E402
from graphnn.codegen import cuda as printer  # noqa: E402
from workloads import median_us  # noqa: E402

CONFIGS = [printer.SGEMM,                                              # 128/16, runs of 4, 4 steps of k
           printer.Sgemm(tile=128, bk=16, prefetch=True),                 # earlier: rows 16 apart, no unrolling
           printer.Sgemm(tile=128, bk=16, prefetch=True, vec=4, unroll=1),
           printer.Sgemm(tile=128, bk=16, prefetch=True, vec=4, unroll=2),
           printer.Sgemm(tile=64, bk=16, prefetch=True, vec=4, unroll=4)]


def kernel_for(cfg, n):
    """(module, kernel) of a graph whose forward program is one n-wide product."""
    saved = printer.SGEMM
    printer.SGEMM = cfg
    try:
        g = gn.Graph("sgemm")
        a = g.input("a", (None, n))
        w = g.parameter("w", (n, n))
        g.output("c", gn.matmul(a, w))
        model = gn.compile(g, target="cuda", matmul="tiled", cache_dir=tempfile.mkdtemp(prefix="sgemm"), wait=True)
    finally:
        printer.SGEMM = saved
    module = model.backend.compiled.module
    assert f"tiled SGEMM {cfg.tile}x{cfg.tile}" in model.backend.source
    return module, module.forward_k0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    from numba import cuda
    n, rng = args.n, np.random.default_rng(0)
    try:
        import cupy
        if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
            cupy = None
    except ImportError:
        cupy = None
    flops = 2 * n ** 3
    cublas = None
    if cupy is not None:
        cA, cB = (cupy.asarray(rng.standard_normal((n, n), dtype=np.float32)) for _ in range(2))
        cC = cupy.empty((n, n), dtype=np.float32)

        def run_cublas():
            cupy.matmul(cA, cB, out=cC)
            cupy.cuda.Device().synchronize()
        cublas = median_us(run_cublas, args.reps, warmup=3)
        print(f"cuBLAS (CuPy) {n}^3 float32: {cublas:.1f} us, {flops / cublas / 1e6:.2f} TFLOP/s", flush=True)
    print(f"{'tile':>5s} {'bk':>3s} {'prefetch':>8s} {'vec':>3s} {'unroll':>6s} {'us':>10s} {'TFLOP/s':>8s} {'/cuBLAS':>8s} {'rel err':>9s}")
    for cfg in CONFIGS:
        try:
            module, kernel = kernel_for(cfg, n)
            A = rng.standard_normal((n, n), dtype=np.float32)
            B = rng.standard_normal((n, n), dtype=np.float32)
            dA, dB = cuda.to_device(A), cuda.to_device(B)
            dC = cuda.to_device(np.full((n, n), np.nan, dtype=np.float32))    # poisoned
            run = module._bind_contract(kernel, dA, dB, dC, False, False, 1.0, n)
            run()
            cuda.synchronize()
            got = dC.copy_to_host()
            if cupy is not None:
                ref = cupy.asnumpy(cupy.matmul(cupy.asarray(A.astype(np.float64)), cupy.asarray(B.astype(np.float64))))
            else:
                ref = A.astype(np.float64) @ B.astype(np.float64)
            err = np.linalg.norm(got - ref) / np.linalg.norm(ref)

            def tiled():
                run()
                cuda.synchronize()
            us = median_us(tiled, args.reps, warmup=3)
            ratio = f"{us / cublas:.2f}x" if cublas else "-"
            print(f"{cfg.tile:5d} {cfg.bk:3d} {str(cfg.prefetch):>8s} {cfg.vec:3d} {cfg.unroll:6d} {us:10.1f} {flops / us / 1e6:8.2f} "
                  f"{ratio:>8s} {err:9.1e}{'' if err < 1e-5 else '  WRONG'}", flush=True)
        except Exception as exc:
            print(f"{cfg}: FAILED {type(exc).__name__}: {exc}", flush=True)


if __name__ == "__main__":
    main()
