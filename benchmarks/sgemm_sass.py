#!/usr/bin/env python3
"""The tiled matrix product's machine code, without a GPU: registers, spills, and how much
of its inner loop is multiply-adds.

    python3 benchmarks/sgemm_sass.py [--nvdisasm PATH]

For each dtype and SGEMM configuration, the generated product kernel is compiled to PTX for
sm_90 (numba-cuda), then by ``ptxas -v`` (from the CUDA toolkit wheels of the ``cuda`` extra)
to machine code: its registers per thread and spilled bytes. With ``nvdisasm`` (in the
test extra; ``pip install nvidia-cuda-nvdisasm``, or give its path) it also counts the
instructions one slab of K takes in the main loop (the loop that holds the barrier), against
the slab's FMAs: the share of FMAs bounds what the kernel can reach when instruction issue,
not memory, limits it. It counts the slab's 128-bit shared-memory loads too.
Times need a GPU: benchmarks/sgemm_sweep.py.
"""
import argparse
import glob
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

if not hasattr(np, "row_stack"):       # numba-cuda 0.30 next to numpy 2.5
    np.row_stack = np.vstack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import graphnn as gn  # noqa: E402
from graphnn.codegen.cuda import DGEMM, SGEMM, Sgemm, kernel_signatures, print_model  # noqa: E402
from graphnn.lower import lower  # noqa: E402
from graphnn.lower.target import CUDA_PASSES, run_passes  # noqa: E402


def _tool(name, given=None):
    if given:
        return given
    found = shutil.which(name)
    if found:
        return found
    import nvidia
    hits = [h for p in nvidia.__path__ for h in glob.glob(os.path.join(p, "*", "bin", name))]
    return hits[0] if hits else None


def product_ptx(dtype, config, where, activation=None):
    """PTX (sm_90) of the tiled kernel of ``x @ W`` printed with ``config``; with an
    ``activation``, of a dense layer's product, its bias and activation as the epilogue."""
    from numba import cuda, types
    import numba.cuda.dispatcher as dispatcher

    class Hopper:      # compile_ptx asks the current device for its compute capability
        compute_capability = (9, 0)
    dispatcher.get_current_device = lambda: Hopper()
    g = gn.Graph("sass")
    x = g.input("x", (None, 64))
    out = g.output("out", gn.dense(x, 64, activation=activation) if activation
                   else gn.matmul(x, g.parameter("W", (64, 64))))
    model = gn.compile(g, gn.sum(out), target="reference", dtype=dtype)
    kprog = lower(model.programs["forward"], dtype)
    run_passes(kprog, CUDA_PASSES)          # the epilogue joins its product
    source, _ = print_model([kprog], dtype, "sass", [(k, v.shape) for k, v in model.params.items()], [],
                            [("optimizer::t", ())], sgemm=config)
    path = os.path.join(where, f"sass_{dtype}_{config.tile}_{config.bk}_{int(config.prefetch)}_{activation}.py")
    with open(path, "w") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    name, args = next((name, args) for name, args, kind in kernel_signatures(kprog, source) if kind == "product")
    ptx, _ = cuda.compile_ptx(getattr(module, name).py_func, types.void(*args), cc=(9, 0))
    return ptx


def slab_instructions(sass, fmas):
    """What one slab of the main loop executes, for a slab that makes ``fmas`` FMAs (bk steps
    of k, sub x sub each): {"instructions", "runs", "vector_loads", "scalar_loads"}.

    The slab is the loop that holds the barrier; its inner loop (the steps of k) is counted
    ``runs`` times, the number that makes ``fmas``: the printer's trip count (bk / unroll)
    when the inner loop holds the printed FMAs, a multiple of it if the compiler unrolled it
    further, and no whole number if FMAs are missing. Loads are shared-memory reads: 128-bit
    (``LDS.128``) and narrower."""
    items = []
    for line in sass.splitlines():
        label = re.match(r"^\.?(L_x_\d+):", line.strip())
        if label:
            items.append(("label", label.group(1)))
            continue
        m = re.match(r"^\s+/\*[0-9a-f]+\*/\s+(.*)$", line)
        if m:
            items.append(("op", m.group(1)))
    at = {name: i for i, (kind, name) in enumerate(items) if kind == "label"}
    loops = []
    for i, (kind, text) in enumerate(items):
        jump = re.search(r"BRA\s+`\(\.(L_x_\d+)\)", text) if kind == "op" else None
        if jump and at.get(jump.group(1), i) < i:
            loops.append([t for kd, t in items[at[jump.group(1)]:i + 1] if kd == "op"])

    def count(body, op):
        return sum(1 for t in body if re.search(op, t))
    fma, wide, narrow = r"\bD?F?FMA\b", r"\bLDS\.128\b", r"\bLDS(?!\.128)(\.\S+)?\s"
    slab = min((b for b in loops if count(b, "BAR") and count(b, fma)), key=len)
    inner = [b for b in loops if count(b, fma) and not count(b, "BAR") and len(b) < len(slab)]
    body, runs = [], 1.0
    if inner:
        body = min(inner, key=len)
        runs = (fmas - (count(slab, fma) - count(body, fma))) / count(body, fma)

    def total(op=None):
        n = len if op is None else (lambda b: count(b, op))
        return n(slab) + (runs - 1) * n(body)
    return {"instructions": round(total()), "runs": runs, "vector_loads": round(total(wide)),
            "scalar_loads": round(total(narrow))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nvdisasm", help="path of nvdisasm (default: PATH, then the nvidia wheels)")
    parser.add_argument("--defaults", action="store_true", help="only the configuration each dtype uses")
    args = parser.parse_args()
    ptxas, nvdisasm = _tool("ptxas"), _tool("nvdisasm", args.nvdisasm)
    if ptxas is None:
        sys.exit("ptxas not found: pip install \"graphnn[cuda]\" (the CUDA toolkit wheels)")
    configs = [("float32", SGEMM, None), ("float32", SGEMM, "relu"), ("float32", Sgemm(128, 16, True), None),
               ("float32", Sgemm(64, 16, True, 4, 4), None),
               ("float64", DGEMM, None), ("float64", DGEMM, "tanh"), ("float64", Sgemm(64, 16, True), None),
               ("float64", SGEMM, None)]
    if args.defaults:
        configs = [(dtype, config, act) for dtype, config, act in configs
                   if config == (SGEMM if dtype == "float32" else DGEMM)]
    print(f"ptxas: {ptxas}\nnvdisasm: {nvdisasm or 'not found (no instruction counts)'}")
    print(f"{'dtype':8} {'tile':>4} {'bk':>3} {'prefetch':>8} {'epilogue':>8} {'registers':>9} {'spilled':>8} "
          f"{'vec':>3} {'unroll':>6} {'slab instr':>10} {'FMA':>6} {'FMA share':>9} {'LDS.128':>7} {'LDS':>4} "
          f"{'inner runs':>10}")
    with tempfile.TemporaryDirectory() as where:
        for dtype, config, activation in configs:
            ptx_path, cubin = os.path.join(where, "k.ptx"), os.path.join(where, "k.cubin")
            with open(ptx_path, "w") as f:
                f.write(product_ptx(dtype, config, where, activation))
            report = subprocess.run([ptxas, "-arch=sm_90", "-O3", "-v", ptx_path, "-o", cubin],
                                    capture_output=True, text=True, check=True).stderr
            registers = re.search(r"Used (\d+) registers", report).group(1)
            spilled = re.search(r"(\d+) bytes spill stores", report).group(1)
            line = (f"{dtype:8} {config.tile:>4} {config.bk:>3} {str(config.prefetch):>8} "
                    f"{activation or '-':>8} {registers:>9} {spilled + ' B':>8} {config.vec:>3} {config.unroll:>6}")
            if nvdisasm:
                sass = subprocess.run([nvdisasm, "-c", cubin], capture_output=True, text=True).stdout
                fma = config.bk * (config.tile // 16) ** 2
                slab = slab_instructions(sass, fma)
                line += (f" {slab['instructions']:>10} {fma:>6} {fma / slab['instructions']:>9.0%} "
                         f"{slab['vector_loads']:>7} {slab['scalar_loads']:>4} {slab['runs']:>10.3g}")
            print(line)


if __name__ == "__main__":
    main()
