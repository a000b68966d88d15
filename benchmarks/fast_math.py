#!/usr/bin/env python3
"""Float32 fast math against libm, op by op: forward, and forward + gradient, over 4096x256.

    python3 benchmarks/fast_math.py [--ops tanh,sigmoid,gelu] [--rows 4096]

For each activation, one graph y = op(x) (forward) and one loss sum(op(p)) (value and gradient
through the backward kernels) are compiled twice into fresh cache folders, with fast_math=True
(the float32 default: vectorisable fast_tanh / fast_erf / fast_exp) and fast_math=False
(math.tanh, math.erf, math.exp: libm calls). Best of 7 runs of 10 calls each, after warm-up.
Prints ms per call and the libm/fast ratio, side by side in one run.
"""
import argparse
import tempfile
import time

import numpy as np

import graphnn as gn

DEFAULT_OPS = ("tanh", "sigmoid", "gelu", "gelu_tanh", "swish", "mish", "softplus", "elu", "exp")


def _best(call, repeat=7, number=10):
    for _ in range(3):
        call()
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            call()
        runs.append((time.perf_counter() - t0) / number * 1e3)
    return min(runs)


def _measure(op, rows, fast, cache):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((rows, 256)) * 3).astype(np.float32)
    g = gn.Graph(f"fm_{op}")
    inp = g.input("x", (None, 256))
    g.output("y", gn.REGISTRY[op](inp))
    forward = gn.compile(g, wait=True, cache_dir=cache, fast_math=fast)
    g2 = gn.Graph(f"fmg_{op}")
    p = g2.parameter("p", x.shape, init=lambda r, s: x.astype(np.float64))
    train = gn.compile(g2, gn.sum(gn.REGISTRY[op](p)), wait=True, cache_dir=cache, fast_math=fast,
                       optimizer=gn.SGD(lr=0.0))
    return (_best(lambda: forward.forward({"x": x})), _best(lambda: train.loss_and_gradients({})))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", default=",".join(DEFAULT_OPS))
    parser.add_argument("--rows", type=int, default=4096)
    args = parser.parse_args()
    print(f"float32, {args.rows}x256, ms per call (best of 7 x 10)")
    print(f"{'op':<10} {'fwd fast':>9} {'fwd libm':>9} {'ratio':>6} {'grad fast':>10} {'grad libm':>10} {'ratio':>6}")
    for op in args.ops.split(","):
        with tempfile.TemporaryDirectory() as c1, tempfile.TemporaryDirectory() as c2:
            ff, gf = _measure(op, args.rows, True, c1)
            fl, gl = _measure(op, args.rows, False, c2)
        print(f"{op:<10} {ff:9.3f} {fl:9.3f} {fl / ff:6.1f} {gf:10.3f} {gl:10.3f} {gl / gf:6.1f}")


if __name__ == "__main__":
    main()
