#!/usr/bin/env python3
"""GPU check for target="cuda": correctness against the CPU target, then timings.

Run on a machine with an NVIDIA GPU (under 5 minutes):

    python3 benchmarks/gpu_check.py [--out FILE] [--quick] [--runs 2]

1. Correctness: the lecture's networks and a small MLP, float32 and float64,
   compiled for "cuda" and "cpu": loss, gradients and parameters after three
   SGD/Adam steps must agree (float64 <= 1e-9 relative, float32 <= 1e-4).
2. Timings, ``--runs`` times one after the other (the CUDA issue's targets hold only
   if they hold in every run):
   * median training step (forward + backward + SGD, loss read back) of MLP
     784-512-512-10 ReLU softmax-CE at batch 256 and 8192 and of the 1-2-1 tanh
     net at batch 65536, for graphnn's tiled matmul, graphnn with cuBLAS (CuPy),
     and PyTorch eager on the same GPU, with ratios;
   * the 784-512-512-10 net at batch 256 inside the device training loop that
     ``fit`` runs (``model.train_steps`` over 64 batches on the device, the losses
     read back once), per step, against PyTorch eager;
   * the generated tiled SGEMM against cuBLAS on 4096 x 4096 float32.
"""
import argparse
import os
import sys
import time

import numpy as np

# numba-cuda 0.30 registers an overload for np.row_stack, which numpy 2.5 removed;
# give it the alias back so numba.cuda imports next to a newer numpy
if not hasattr(np, "row_stack"):
    np.row_stack = np.vstack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

import graphnn as gn  # noqa: E402
from workloads import data, graphnn_mlp, median_us, torch_step  # noqa: E402

LINES = []
SMOKE = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def say(text=""):
    print(text, flush=True)
    LINES.append(text)


def correctness():
    say("== correctness: target='cuda' vs target='cpu'")
    cases = [
        ("regression 1-2-1", gn.lecture.regression_net, gn.lecture.noisy_sine(64), gn.SGD(lr=0.1)),
        ("classifier 2-2-1", gn.lecture.classifier_net, gn.lecture.two_blobs(64), gn.Adam(lr=0.01)),
    ]
    x2, labels = gn.lecture.two_blobs(64)
    cases.append(("softmax classifier", gn.lecture.softmax_classifier,
                  (x2, np.eye(2)[labels[:, 0].astype(int)]), gn.Momentum(lr=0.1)))
    ok = True
    for dtype, tol in (("float64", 1e-9), ("float32", 1e-4)):
        for title, make, (x, y), opt in cases + [("mlp 20-64-64-5 relu ce", None, (None, None), None)]:
            if make is None:
                sizes = [3, 4, 2] if SMOKE else [20, 64, 64, 5]
                g, loss = graphnn_mlp(sizes, "relu", "ce")
                x, y = data(sizes, "ce", 5 if SMOKE else 300, dtype=np.float64)
                opt, graph = gn.SGD(lr=0.05), g
            else:
                net = make()
                graph, loss = net.graph, net.loss
            feeds = {"x": x, "y": y}
            errs = []
            models = [gn.compile(graph, loss, target=t, dtype=dtype, optimizer=type(opt)(**_hyper(opt)), wait=True)
                      for t in ("cpu", "cuda")]
            (l1, g1), (l2, g2) = (m.loss_and_gradients(feeds) for m in models)
            errs.append(abs(l1 - l2) / max(1.0, abs(l1)))
            errs += [np.abs(g1[k] - g2[k]).max() / max(1.0, np.abs(g1[k]).max()) for k in g1]
            for _ in range(3):
                for m in models:
                    m.step(feeds)
            p1, p2 = (m.get_params() for m in models)
            errs += [np.abs(p1[k] - p2[k]).max() / max(1.0, np.abs(p1[k]).max()) for k in p1]
            # fit's device loop (one CUDA graph per step once captured) against the reference
            # executor's fit: same seed, same batches
            fitted = [gn.compile(graph, loss, target=t, dtype=dtype, optimizer=type(opt)(**_hyper(opt)), wait=True)
                      for t in ("reference", "cuda")]
            h1, h2 = (m.fit(x, y, epochs=2, batch_size=max(1, len(x) // 4), seed=1, verbose=False)
                      for m in fitted)
            errs += [np.abs(np.asarray(h1["loss"]) - np.asarray(h2["loss"])).max() / max(1.0, abs(l1))]
            p1, p2 = (m.get_params() for m in fitted)
            errs += [np.abs(p1[k] - p2[k]).max() / max(1.0, np.abs(p1[k]).max()) for k in p1]
            err = max(errs)
            launcher = fitted[1].backend.launcher
            if launcher.capture_error:
                say(f"  {title}: CUDA graph capture failed: {launcher.capture_error}")
            ok &= err <= tol
            say(f"  {title:28s} {dtype}: max relative difference {err:.2e} "
                f"{'ok' if err <= tol else 'FAIL'} (tolerance {tol:g})")
    return ok


def _hyper(opt):
    return {k: v for k, v in opt.hyper.items()}


def time_graphnn(sizes, act, loss, batch, matmul, reps, device_feeds=True, graphs=True):
    from numba import cuda
    g, value = graphnn_mlp(sizes, act, loss)
    model = gn.compile(g, value, target="cuda", optimizer=gn.SGD(lr=0.01), matmul=matmul, graphs=graphs,
                       wait=True)
    x, y = data(sizes, loss, batch)
    feeds = {"x": cuda.to_device(x), "y": cuda.to_device(y)} if device_feeds else {"x": x, "y": y}
    t0 = time.perf_counter()
    model.step(feeds)
    first = time.perf_counter() - t0
    # model.step returns the loss: a device -> host copy, so every timed step synchronises
    took = median_us(lambda: model.step(feeds), reps, warmup=3)
    launcher = model.backend.launcher
    if matmul == "cublas" and launcher.cublas_error:
        say(f"  ({launcher.cublas_error})")
    if graphs and not SMOKE and (launcher.capture_error or not launcher.captured):
        say(f"  (no CUDA graph: {launcher.capture_error or 'none captured'})")
    return took, first


def time_torch(sizes, act, loss, batch, reps):
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    step = torch_step(sizes, act, loss, batch, device="cuda")
    return median_us(step, reps, warmup=5)      # step() reads the loss: it synchronises


def time_graphnn_loop(sizes, act, loss, batch, matmul, steps=64, graphs=True):
    """us per step of the device training loop (fit's), over ``steps`` batches on the device."""
    g, value = graphnn_mlp(sizes, act, loss)
    model = gn.compile(g, value, target="cuda", optimizer=gn.SGD(lr=0.01), matmul=matmul, graphs=graphs,
                       wait=True)
    x, y = data(sizes, loss, batch * steps)
    feeds = {"x": x, "y": y}
    model.train_steps(feeds, batch_size=batch, steps=2)       # compiles
    best = float("inf")
    for _ in range(1 if SMOKE else 3):
        t0 = time.perf_counter()
        model.train_steps(feeds, batch_size=batch, steps=steps)   # data upload included, once
        best = min(best, (time.perf_counter() - t0) / steps * 1e6)
    return best


def time_sgemm(n, reps):
    """(tiled us, cuBLAS us or None) for one n x n x n float32 product, synchronised."""
    from numba import cuda
    g = gn.Graph("sgemm")
    a = g.input("a", (None, n))
    w = g.parameter("w", (n, n))
    g.output("c", gn.matmul(a, w))
    model = gn.compile(g, target="cuda", matmul="tiled", wait=True)
    module = model.backend.compiled.module
    kernel = module.forward_k0              # the forward program's one kernel: the product
    rng = np.random.default_rng(0)
    A = cuda.to_device(rng.random((n, n), dtype=np.float32))
    B = cuda.to_device(rng.random((n, n), dtype=np.float32))
    C = cuda.device_array((n, n), dtype=np.float32)
    run = module._bind_contract(kernel, A, B, C, False, False, 1.0, n)

    def tiled():
        run()
        cuda.synchronize()
    out = [median_us(tiled, reps, warmup=2), None]
    expected = A.copy_to_host() @ B.copy_to_host()
    tiled()
    assert np.allclose(C.copy_to_host(), expected, rtol=1e-3, atol=1e-3 * n), "tiled SGEMM is wrong"
    try:
        import cupy
        if not SMOKE:
            cA, cB, cC = cupy.asarray(A), cupy.asarray(B), cupy.asarray(C)

            def cublas():
                cupy.matmul(cA, cB, out=cC)
                cuda.synchronize()
            out[1] = median_us(cublas, reps, warmup=2)
    except ImportError:
        pass
    return out


def timings(quick):
    say("")
    say("== training step, float32, median wall time per step (loss read back each step)")
    workloads = [("784-512-512-10 ReLU CE", [784, 512, 512, 10], "relu", "ce", 256),
                 ("784-512-512-10 ReLU CE", [784, 512, 512, 10], "relu", "ce", 8192),
                 ("1-2-1 tanh MSE", [1, 2, 1], "tanh", "mse", 65536)]
    if SMOKE:  # a dry run of this script under the CUDA simulator
        workloads = [("4-8-3 ReLU CE", [4, 8, 3], "relu", "ce", 5)]
    reps = 1 if SMOKE else 10 if quick else 30
    try:
        import torch
        have_torch = torch.cuda.is_available()
    except ImportError:
        have_torch = False
    say("(graphed: CUDA graphs on, the default; eager: graphs=False, one Python launch per kernel)")
    say(f"{'workload':34s} {'tiled us':>10s} {'cuBLAS us':>10s} {'eager us':>10s} {'torch us':>10s} "
        f"{'tiled/torch':>11s} {'cuBLAS/torch':>12s}")
    for title, sizes, act, loss, batch in workloads:
        row = {}
        for matmul, graphs, column in (("tiled", True, "tiled"), ("cublas", True, "cublas"),
                                       ("cublas", False, "eager")):
            try:
                row[column], first = time_graphnn(sizes, act, loss, batch, matmul, reps, graphs=graphs)
                row[column + "_first"] = first
            except Exception as exc:  # report and go on: one failure must not hide the rest
                say(f"  {title} b{batch} {column}: FAILED {type(exc).__name__}: {exc}")
        if have_torch:
            row["torch"] = time_torch(sizes, act, loss, batch, reps)

        def fmt(k):
            return f"{row[k]:10.1f}" if k in row else f"{'-':>10s}"

        def ratio(k):
            return f"{row[k] / row['torch']:.2f}x" if k in row and "torch" in row else "-"
        say(f"{title + ' b' + str(batch):34s} {fmt('tiled')} {fmt('cublas')} {fmt('eager')} {fmt('torch')} "
            f"{ratio('tiled'):>11s} {ratio('cublas'):>12s}")
        if "tiled_first" in row:
            say(f"{'':34s} first step (kernel compile included): tiled {row['tiled_first']:.1f} s"
                + (f", cuBLAS {row['cublas_first']:.1f} s" if "cublas_first" in row else ""))

    title, sizes, batch = "784-512-512-10 ReLU CE in fit's loop", [784, 512, 512, 10], 256
    if SMOKE:
        title, sizes, batch = "4-8-3 ReLU CE in fit's loop", [4, 8, 3], 5
    row = {}
    for matmul, graphs, column in (("tiled", True, "tiled"), ("cublas", True, "cublas"),
                                   ("cublas", False, "eager")):
        try:
            row[column] = time_graphnn_loop(sizes, "relu", "ce", batch, matmul, steps=4 if SMOKE else 64,
                                            graphs=graphs)
        except Exception as exc:
            say(f"  {title} b{batch} {column}: FAILED {type(exc).__name__}: {exc}")
    if have_torch:
        row["torch"] = time_torch(sizes, "relu", "ce", batch, reps)
    cells = " ".join(f"{row[k]:10.1f}" if k in row else f"{'-':>10s}" for k in ("tiled", "cublas", "eager", "torch"))
    ratios = " ".join(f"{row[k] / row['torch']:.2f}x".rjust(w) if k in row and "torch" in row else "-".rjust(w)
                      for k, w in (("tiled", 11), ("cublas", 12)))
    say(f"{title + ' b' + str(batch):34s} {cells} {ratios}")

    n = 8 if SMOKE else 4096
    tiled, cublas = time_sgemm(n, 1 if SMOKE else 10 if quick else 20)
    flops = 2 * n ** 3
    say(f"SGEMM {n}x{n}x{n} float32: tiled {tiled:.1f} us ({flops / tiled / 1e3:.0f} GFLOP/s)"
        + (f", cuBLAS {cublas:.1f} us ({flops / cublas / 1e3:.0f} GFLOP/s), tiled/cuBLAS "
           f"{tiled / cublas:.2f}x (target <= 1.5x)" if cublas else ", cuBLAS: CuPy not installed"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", help="also write the report to this file")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--runs", type=int, default=2, help="timing runs, one after the other")
    args = parser.parse_args()
    from numba import cuda
    if not cuda.is_available():
        print("no CUDA GPU: run this on a GPU machine", file=sys.stderr)
        return 2
    if SMOKE:
        say("device: CUDA simulator (smoke run of this script, timings meaningless)")
    else:
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
        say(f"device: {name}, compute capability {dev.compute_capability}")
    t0 = time.perf_counter()
    ok = correctness()
    for run in range(args.runs):
        say(f"\n== timing run {run + 1} of {args.runs}")
        timings(args.quick)
    say(f"\ntotal {time.perf_counter() - t0:.0f} s; correctness {'ok' if ok else 'FAILED'}")
    if args.out:
        with open(args.out, "w") as f:
            f.write("\n".join(LINES) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
