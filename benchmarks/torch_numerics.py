#!/usr/bin/env python3
"""graphnn against PyTorch at extreme inputs: every activation's value and derivative.

    python3 benchmarks/torch_numerics.py [--targets reference,cpu]

Needs PyTorch (CPU build is enough; it is not a graphnn dependency). For each activation PyTorch
implements, in float32 and float64, on each graphnn target, it evaluates value and derivative at
x in {+-1e4, +-100, +-30, +-20, +-1, +-1e-3, +-1e-8, 0, +-inf, nan} and prints every point that
differs beyond rtol (1e-5 float32, 1e-10 float64, with an absolute floor of two machine epsilons),
or where one side is NaN or infinite and the other is not. The last line counts the checks.
"""
import argparse

import numpy as np
import torch
import torch.nn.functional as F

import graphnn as gn

TORCH = {
    "identity": lambda x: x, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
    "leaky_relu": F.leaky_relu, "elu": F.elu, "celu": F.celu, "relu6": F.relu6,
    "hardswish": F.hardswish, "gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "softplus": F.softplus, "mish": F.mish, "swish": F.silu, "softsign": F.softsign,
}
POINTS = [-1e4, -100, -30, -20, -1, -1e-3, -1e-8, 0, 1e-8, 1e-3, 1, 20, 30, 100, 1e4,
          -np.inf, np.inf, np.nan]
RTOL = {"float32": 1e-5, "float64": 1e-10}


def graphnn_values(op, xs, target, dtype):
    g = gn.Graph(f"vs_torch_{op}")
    p = g.parameter("p", (len(xs),), init=lambda rng, shape: np.asarray(xs, dtype=np.float64))
    out = gn.REGISTRY[op](p)
    g.output("y", out)
    model = gn.compile(g, gn.sum(out), target=target, dtype=dtype, optimizer=gn.SGD(lr=0.0))
    with np.errstate(all="ignore"):
        return model.forward({})["y"], model.loss_and_gradients({})[1]["p"]


def torch_values(op, xs, dtype):
    x = torch.tensor(xs, dtype=getattr(torch, dtype), requires_grad=True)
    y = TORCH[op](x)
    y.sum().backward()
    return y.detach().numpy(), x.grad.numpy()


def differs(a, b, dtype):
    a, b = float(a), float(b)
    if np.isnan(a) or np.isnan(b) or np.isinf(a) or np.isinf(b):
        return not (a == b or (np.isnan(a) and np.isnan(b)))
    return abs(a - b) > RTOL[dtype] * abs(b) + 2 * float(np.finfo(dtype).eps)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", default="reference,cpu")
    args = parser.parse_args()
    checks, found = 0, []
    for op in TORCH:
        for dtype in ("float32", "float64"):
            tv, tg = torch_values(op, POINTS, dtype)
            for target in args.targets.split(","):
                gv, gg = graphnn_values(op, POINTS, target, dtype)
                for what, got, want in (("value", gv, tv), ("d/dx", gg, tg)):
                    for x, a, b in zip(POINTS, got, want):
                        checks += 1
                        if differs(a, b, dtype):
                            found.append(f"{op:<10} {what:<5} {dtype} {target:<9} x={x:<8g} graphnn {a:<12.6g} torch {b:.6g}")
    print("\n".join(found) if found else "no differences")
    print(f"{len(found)} differences in {checks} checks (torch {torch.__version__})")


if __name__ == "__main__":
    main()
