#!/usr/bin/env python3
"""How many kernel launches one CUDA training step makes, without a GPU.

    python3 benchmarks/launch_count.py [--sizes 784,512,512,10] [--batches 256,8192]

Compiles the MLP's step for the CUDA target under numba's simulator, replaces every kernel
of the generated module by a stand-in that only counts its launches, and binds and calls
the step's launches once per batch size: with the tiled products (epilogues inside them
where the product is not split over blocks) and with cuBLAS (a stand-in too: one call per
product, each epilogue a kernel after it). Nothing runs, so it takes seconds; a launch from
Python costs a few microseconds of host time, which is what bounds small batches on a GPU
without CUDA graphs (docs/cuda.md).
"""
import argparse
import os
import sys

os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import graphnn as gn  # noqa: E402
from workloads import graphnn_mlp  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="784,512,512,10")
    parser.add_argument("--batches", default="256,8192")
    args = parser.parse_args()
    from numba.cuda.simulator.kernel import FakeCUDAKernel
    sizes = [int(s) for s in args.sizes.split(",")]
    act, loss = ("tanh", "mse") if sizes[-1] == 1 else ("relu", "ce")
    g, value = graphnn_mlp(sizes, act, loss)
    model = gn.compile(g, value, target="cuda", optimizer=gn.SGD(lr=0.01), matmul="tiled", wait=True)
    module = model.backend.compiled.module
    launched = []

    class Counted:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, config):
            return lambda *args: launched.append(self.name)
    for name in dir(module):
        kernel = getattr(module, name)
        if isinstance(kernel, FakeCUDAKernel) and not kernel._device:
            setattr(module, name, Counted(name))
    for batch in (int(b) for b in args.batches.split(",")):
        views = model.backend._buffers("step", batch)[0]
        for matmul in ("tiled", "cublas"):
            module._GEMM = (lambda *a: (lambda: launched.append("cublas"))) if matmul == "cublas" else None
            launched.clear()
            for launch in module.step(views, batch):
                launch()
            print(f"{'-'.join(map(str, sizes))} batch {batch}, {matmul}: {len(launched)} launches")


if __name__ == "__main__":
    main()
