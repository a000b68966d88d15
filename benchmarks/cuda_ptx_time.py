#!/usr/bin/env python3
"""How long the CUDA target's kernels take to compile to PTX, without a GPU.

Prints the CUDA module of an MLP (the backend's printer, float32, SGD) and compiles each
kernel that a program launches to PTX for sm_90 with ``cuda.compile_ptx`` -- numba-cuda's
typing, lowering and NVVM, the part of a first step's compilation that needs no GPU (the
driver's PTX-to-machine-code step comes on top, on the GPU). A kernel that several launches
share is compiled once, as on the GPU.

    python3 benchmarks/cuda_ptx_time.py [--sizes 784,512,512,10] [--program step|all]

Needs the CUDA toolkit wheels of numba-cuda (libNVVM, libdevice); run without
NUMBA_ENABLE_CUDASIM.
"""
import argparse
import importlib.util
import os
import sys
import tempfile
import time

import numpy as np

if not hasattr(np, "row_stack"):        # numba-cuda 0.30 next to numpy 2.5
    np.row_stack = np.vstack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import graphnn as gn  # noqa: E402
from graphnn.codegen.cuda import CudaModulePrinter, kernel_signatures, print_model  # noqa: E402
from graphnn.lower import lower  # noqa: E402
from workloads import graphnn_mlp  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    ap.add_argument("--sizes", default="784,512,512,10")
    ap.add_argument("--program", default="step", help="a program's name, or 'all'")
    args = ap.parse_args()
    from numba import cuda, types
    import numba.cuda.dispatcher as dispatcher

    class Hopper:       # device functions ask the current device for its compute capability
        compute_capability = (9, 0)
    dispatcher.get_current_device = lambda: Hopper()

    g, value = graphnn_mlp([int(s) for s in args.sizes.split(",")], "relu", "softmax_ce")
    model = gn.compile(g, value, target="reference", dtype="float32", optimizer=gn.SGD(lr=0.01))
    kprogs = [lower(p, "float32", reserved=CudaModulePrinter.reserved(),
                    contractions=CudaModulePrinter.contractions) for p in model.programs.values()]
    source, _ = print_model(kprogs, "float32", "ptx", [(k, v.shape) for k, v in model.params.items()], [],
                            [("optimizer::" + h, ()) for h in (*model.optimizer.hyper, "t")])
    with tempfile.TemporaryDirectory() as where:
        path = os.path.join(where, "ptx_module.py")
        with open(path, "w") as f:
            f.write(source)
        spec = importlib.util.spec_from_file_location("ptx_module", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        compiled, products, t0 = [], 0, time.perf_counter()
        for kprog in kprogs:
            if args.program not in ("all", kprog.name):
                continue
            for name, signature, kind in kernel_signatures(kprog, source):
                if name in compiled:        # (launched by an earlier program)
                    continue
                compiled.append(name)
                products += kind == "product"
                cuda.compile_ptx(getattr(module, name).py_func, types.void(*signature), cc=(9, 0))
        took = time.perf_counter() - t0
    print(f"MLP {args.sizes}, program {args.program}: {len(compiled)} kernels ({products} tiled products) "
          f"compiled to PTX for sm_90 in {took:.1f} s")


if __name__ == "__main__":
    main()
