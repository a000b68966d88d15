"""Kernels that differ only in their buffers' names are printed (and compiled) once per
CUDA module: two layers of one shape, and the products that the ``forward``,
``gradients`` and ``step`` programs all make. The second use is a launch of the first
kernel on its own buffers -- so it must pass them in the kernel's order, which these tests
check against the CPU and the reference, with layer names chosen so that SymPy orders the
terms of their expressions differently.
"""
import re

import numpy as np
import pytest

import graphnn as gn

pytestmark = pytest.mark.cuda


def _deep(names=("zeta", "alpha", "q_EPILOGUE_LAUNCH"), width=12, features=10, target="y", square=False):
    """Dense tanh layers named ``names`` (a 12x12 product each after the first) and a linear
    output under an MSE; with ``square``, the input first goes through ``x @ (S @ S)``."""
    g = gn.Graph("shared", seed=0)
    x, y = g.input("x", (None, features)), g.input(target, (None, 1))
    h = x
    if square:
        S = g.parameter("S", (features, features))
        h = gn.tanh(gn.matmul(x, gn.matmul(S, S)))
    for name in names:
        h = gn.dense(h, width, activation="tanh", name=name)
    out = g.output("out", gn.dense(h, 1, name="out"))
    return g, gn.mse(out, y)


def _defined(source):
    return re.findall(r"^@cuda\.jit\(cache=True\)\ndef (\w+)\(", source, flags=re.MULTILINE)


def test_layers_of_one_shape_launch_one_kernel_each_on_its_own_buffers():
    """Also, names that look like generated ones stay names: the target is fed as
    ``forward_k0`` (the ``step`` program binds its buffers as locals and launches the kernel
    ``forward_k0``), a layer's name holds the printer's placeholder for an epilogue's launch,
    and ``S @ S`` passes one buffer as both operands."""
    g, loss = _deep(target="forward_k0", square=True)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(9, 10)), "forward_k0": rng.normal(size=(9, 1))}
    models = {t: gn.compile(g, loss, target=t, dtype="float64", optimizer=gn.Adam(0.05), wait=True)
              for t in ("cuda", "cpu")}
    source = models["cuda"].source
    # the 12x12 layers "alpha" and "q_EPILOGUE_LAUNCH" make the same forward product (with the
    # same bias and tanh epilogue) in every program: printed once, launched for both
    shared = re.findall(r"^# (\w+): the kernel (\w+) again, on (.*)$", source, flags=re.MULTILINE)
    assert any("alpha_W" in on and "LAUNCH" not in on for _, _, on in shared), shared
    assert any("q_EPILOGUE_LAUNCH_W" in on for _, _, on in shared), shared
    assert "_EPILOGUE_LAUNCH" not in source.replace("q_EPILOGUE_LAUNCH", "")
    defined = _defined(source)
    assert len(defined) == len(set(defined))
    for name, first, _ in shared:
        assert name not in defined and first in defined, (name, first)
    # and each launch computes its own layer: loss, gradients, a step, parameters
    (loss_value, grads), (want_loss, want) = (m.loss_and_gradients(feeds) for m in models.values())
    np.testing.assert_allclose(loss_value, want_loss, rtol=1e-12)
    for k in want:
        np.testing.assert_allclose(grads[k], want[k], rtol=1e-11, atol=1e-12, err_msg=k)
    losses = [m.step(feeds) for m in models.values()]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-12)
    for k, v in models["cpu"].get_params().items():
        np.testing.assert_allclose(models["cuda"].get_params()[k], v, rtol=1e-11, atol=1e-12, err_msg=k)


def test_sharing_does_not_depend_on_how_the_layers_are_named():
    """The same network under other layer names prints the same kernels, and as many."""
    sources = []
    for names in (("zeta", "alpha", "mid"), ("a_first", "z_second", "b_third")):
        g, loss = _deep(names)
        model = gn.compile(g, loss, target="cuda", dtype="float64", optimizer=gn.SGD(0.1))
        sources.append(model.source)
    counts = [len(_defined(s)) for s in sources]
    assert counts[0] == counts[1], counts
    shared = [len(re.findall(r"^# \w+: the kernel \w+ again", s, flags=re.MULTILINE)) for s in sources]
    assert shared[0] == shared[1] and shared[0] > 0, shared


def test_products_of_other_shapes_or_activations_are_kernels_of_their_own():
    g = gn.Graph("distinct", seed=0)
    x = g.input("x", (None, 10))
    h = gn.dense(x, 12, activation="tanh", name="one")
    h = gn.dense(h, 12, activation="relu", name="two")      # another epilogue
    out = g.output("out", gn.dense(h, 12, activation="relu", name="three"))
    model = gn.compile(g, gn.sum(out), target="cuda", dtype="float64")
    source = model.source
    forward = source[source.index("def forward(b, N)"):]
    forward = forward[:forward.index("\n\n\n")]
    kernels = re.findall(r"_bind_contract\((\w+),", forward)
    # "one" (tanh) and "two" (relu) differ; "three" is "two" again
    assert len(kernels) == 3 and kernels[0] != kernels[1] and kernels[1] == kernels[2], kernels
