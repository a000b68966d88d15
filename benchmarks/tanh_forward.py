#!/usr/bin/env python3
"""Time a float32 forward of two tanh over 4096x256 (fast_math, the float32 default).

    python3 benchmarks/tanh_forward.py [--libm]

Best of 7 runs of 20 calls, after warm-up, compiled with wait=True into a fresh cache folder.
``--libm`` compiles with fast_math=False (libm's tanhf) for comparison. To compare two versions
of graphnn, run it under each: ``PYTHONPATH=<checkout> python3 benchmarks/tanh_forward.py``.
"""
import argparse
import tempfile
import time

import numpy as np

import graphnn as gn


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--libm", action="store_true", help="fast_math=False")
    args = parser.parse_args()
    g = gn.Graph("tanh_forward")
    x = g.input("x", (None, 256))
    g.output("y", gn.tanh(gn.tanh(x) * 3.0))
    with tempfile.TemporaryDirectory() as cache:
        model = gn.compile(g, wait=True, cache_dir=cache, fast_math=not args.libm)
        feeds = {"x": np.random.default_rng(0).standard_normal((4096, 256)).astype(np.float32) * 4}
        for _ in range(20):
            model.forward(feeds)
        model.wait_compiled()
        runs = []
        for _ in range(7):
            t0 = time.perf_counter()
            for _ in range(20):
                model.forward(feeds)
            runs.append((time.perf_counter() - t0) / 20 * 1e3)
    print(f"{gn.__file__}: {'libm' if args.libm else 'fast_tanh'}: {min(runs):.3f} ms per forward")


if __name__ == "__main__":
    main()
