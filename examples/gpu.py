"""The same graph on the GPU: ``target="cuda"`` against ``target="cpu"``.

Lecture section "Summary": deep learning frameworks run the same computational graph on
CPUs and GPUs. graphnn prints the kernel IR of a graph as ``numba.cuda`` kernels instead of
CPU Numba code; nothing about the graph changes. The lecture's 1-2-1 regression net is
compiled for both targets from the same initial weights and trained with the same Adam steps
on the same batches; the losses, the trained weights and the predictions are compared.

Without a CUDA GPU the kernels run in numba's CUDA simulator (one Python thread per CUDA
thread: slow, so the example stays tiny). The simulator must be switched on before numba is
first imported, so this script sets ``NUMBA_ENABLE_CUDASIM=1`` before it imports graphnn
when it finds no NVIDIA GPU, and says so.

    PYTHONPATH=. python3 examples/gpu.py [--fast] [--out FOLDER]

Writes ``gpu_cpu_vs_cuda.png`` (loss per step on both targets; both fits).
"""
import os
import shutil
import subprocess
import sys


def _has_nvidia_gpu():
    """True when ``nvidia-smi`` lists a GPU (checked without importing numba)."""
    if not shutil.which("nvidia-smi"):
        return False
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return False
    return listed.returncode == 0 and "GPU" in listed.stdout


if "numba" not in sys.modules and "NUMBA_ENABLE_CUDASIM" not in os.environ and not _has_nvidia_gpu():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"          # must precede the first import of numba

import numpy as np  # noqa: E402

import graphnn as gn  # noqa: E402
from _common import figure, parse, save  # noqa: E402


def device_description():
    """(simulated, words) for the device the cuda target runs on."""
    from numba import config, cuda
    if config.ENABLE_CUDASIM:
        return True, ("numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, set before numba was imported; "
                      "no GPU used -- the kernels run as Python threads)")
    if not cuda.is_available():
        return False, None
    return False, f"the GPU {cuda.get_current_device().name.decode()}"


def main(argv=None):
    args, out = parse(__doc__.splitlines()[0], argv)
    simulated, device = device_description()
    if device is None:
        raise gn.TargetError("gpu.py: numba finds no CUDA GPU and the simulator is off (numba was "
                             "imported before this script could set NUMBA_ENABLE_CUDASIM=1); run it "
                             "as its own process, or set NUMBA_ENABLE_CUDASIM=1 yourself")
    print(f"target='cuda' runs on {device}")
    steps, n = (4, 16) if args.fast else ((30, 32) if simulated else (300, 256))
    x, y = gn.lecture.noisy_sine(n=n, seed=0)
    feeds = {"x": x, "y": y}
    net = gn.lecture.regression_net(seed=0)
    models = {target: gn.compile(net.graph, net.loss, optimizer=gn.Adam(lr=0.1), target=target, wait=True)
              for target in ("cpu", "cuda")}
    losses = {target: [float(model.step(feeds)) for _ in range(steps)] for target, model in models.items()}
    params = {target: model.get_params() for target, model in models.items()}
    grid = np.linspace(-1, 1, 41)[:, None]
    fits = {target: model.predict({"x": grid}) for target, model in models.items()}

    loss_diff = max(abs(a - b) for a, b in zip(losses["cpu"], losses["cuda"]))
    param_diff = max(float(np.max(np.abs(params["cpu"][k] - params["cuda"][k]))) for k in params["cpu"])
    fit_diff = float(np.max(np.abs(fits["cpu"] - fits["cuda"])))
    print(f"lecture 1-2-1 net, float32, Adam(lr=0.1), {steps} full-batch steps on {n} points")
    print(f"  loss: cpu {losses['cpu'][0]:.6f} -> {losses['cpu'][-1]:.6f}, "
          f"cuda {losses['cuda'][0]:.6f} -> {losses['cuda'][-1]:.6f}")
    print(f"  largest difference cpu vs cuda: loss {loss_diff:.1e}, weights {param_diff:.1e}, "
          f"predictions {fit_diff:.1e}")
    kernels = models["cuda"].source.count("@cuda.jit")
    print(f"  model.source of the cuda model: {kernels} generated numba.cuda kernels")

    fig, axes = figure(2, 1, size=(4.6, 3.6))
    at = np.arange(1, steps + 1)
    axes[0, 0].plot(at, losses["cpu"], "-", color="tab:blue", linewidth=3, alpha=0.5, label="cpu")
    axes[0, 0].plot(at, losses["cuda"], "o", color="tab:red", markersize=4, label="cuda")
    axes[0, 0].set(xlabel="step", ylabel="MSE", title="Training loss, same steps")
    axes[0, 1].plot(x[:, 0], y[:, 0], ".", color="gray", label="data")
    axes[0, 1].plot(grid[:, 0], fits["cpu"][:, 0], "-", color="tab:blue", linewidth=3, alpha=0.5, label="cpu")
    axes[0, 1].plot(grid[:, 0], fits["cuda"][:, 0], "--", color="tab:red", label="cuda")
    axes[0, 1].set(xlabel="x", ylabel="y", title=f"Fit after {steps} steps", xticks=[-1, -0.5, 0, 0.5, 1])
    for ax in axes[0]:
        ax.legend()
    fig.suptitle("cuda: " + ("numba's CUDA simulator" if simulated else device), fontsize=10)
    save(fig, out, "gpu_cpu_vs_cuda.png")
    return {"simulated": simulated, "device": device, "steps": steps, "loss_diff": loss_diff,
            "param_diff": param_diff, "fit_diff": fit_diff, "kernels": kernels,
            "final_loss": {t: v[-1] for t, v in losses.items()}}


if __name__ == "__main__":
    main()
