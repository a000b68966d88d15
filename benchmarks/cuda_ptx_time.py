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
import re
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
from graphnn.codegen.cuda import CudaModulePrinter, kernel_buffers, print_model  # noqa: E402
from graphnn.lower import Contract, Rows, lower  # noqa: E402
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
    # "# step_k1: the kernel gradients_k0 again, on ...": the launches of a shared kernel
    alias = dict(re.findall(r"^# (\w+): the kernel (\w+) again", source, flags=re.MULTILINE))
    with tempfile.TemporaryDirectory() as where:
        path = os.path.join(where, "ptx_module.py")
        with open(path, "w") as f:
            f.write(source)
        spec = importlib.util.spec_from_file_location("ptx_module", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)

        def array(kprog, name, flat=()):
            return types.Array(types.float32, 1 if name in flat else max(len(kprog.buffers[name].shape), 1), "C")

        done, products, t0 = set(), 0, time.perf_counter()
        for kprog in kprogs:
            if args.program not in ("all", kprog.name):
                continue
            for n, k in enumerate(kprog.kernels):
                flat = set(k.flat or ()) if isinstance(k, Rows) else set()
                sig = [array(kprog, b, flat) for b in kernel_buffers(k)] + [types.int64]
                name = f"{kprog.name}_k{n}"
                kernels = [(name, sig + [types.int64, types.int64] if isinstance(k, Contract) else sig)]
                if isinstance(k, Contract) and k.epilogue is not None:
                    kernels.append((f"{name}_epilogue",
                                    [array(kprog, b) for b in kernel_buffers(k.epilogue)] + [types.int64]))
                if isinstance(k, Rows) and k.sums:
                    part = types.Array(types.float32, 2, "C")
                    outs = list(dict.fromkeys(str(t.base.label) for t, _ in k.sums))
                    kernels = [(name, sig + [part]),
                               (f"{name}_finish", [array(kprog, b) for b in outs] + [types.int64, part])]
                for kname, signature in kernels:
                    base = kname.removesuffix("_finish")
                    kname = alias.get(base, base) + kname[len(base):]
                    if kname in done:
                        continue
                    done.add(kname)
                    products += isinstance(k, Contract) and not kname.endswith("_epilogue")
                    cuda.compile_ptx(getattr(module, kname).py_func, types.void(*signature), cc=(9, 0))
        took = time.perf_counter() - t0
    print(f"MLP {args.sizes}, program {args.program}: {len(done)} kernels ({products} tiled products) "
          f"compiled to PTX for sm_90 in {took:.1f} s")


if __name__ == "__main__":
    main()
