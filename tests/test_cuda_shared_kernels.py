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


def _deep(names=("zeta", "alpha", "mid"), width=12, features=10):
    g = gn.Graph("shared", seed=0)
    x, y = g.input("x", (None, features)), g.input("y", (None, 1))
    h = x
    for name in names:
        h = gn.dense(h, width, activation="tanh", name=name)
    out = g.output("out", gn.dense(h, 1, name="out"))
    return g, gn.mse(out, y)


def _defined(source):
    return re.findall(r"^@cuda\.jit\(cache=True\)\ndef (\w+)\(", source, flags=re.MULTILINE)


def test_layers_of_one_shape_launch_one_kernel_each_on_its_own_buffers():
    g, loss = _deep()
    rng = np.random.default_rng(0)
    feeds = {"x": rng.normal(size=(9, 10)), "y": rng.normal(size=(9, 1))}
    models = {t: gn.compile(g, loss, target=t, dtype="float64", optimizer=gn.Adam(0.05), wait=True)
              for t in ("cuda", "cpu", "reference")}
    source = models["cuda"].source
    # the 12x12 layers "alpha" and "mid" make the same forward product (with the same bias
    # and tanh epilogue) in every program: printed once, launched for both
    shared = re.findall(r"^# (\w+): the kernel (\w+) again, on (.*)$", source, flags=re.MULTILINE)
    assert any("alpha_W" in on and "mid" not in on for _, _, on in shared), shared
    assert any("mid_W" in on for _, _, on in shared), shared
    defined = _defined(source)
    assert len(defined) == len(set(defined))
    for name, first, _ in shared:
        assert name not in defined and first in defined, (name, first)
    # and each launch computes its own layer: loss, gradients, steps, parameters
    loss_value, grads = models["cuda"].loss_and_gradients(feeds)
    for target in ("cpu", "reference"):
        want_loss, want = models[target].loss_and_gradients(feeds)
        np.testing.assert_allclose(loss_value, want_loss, rtol=1e-12)
        for k in want:
            np.testing.assert_allclose(grads[k], want[k], rtol=1e-11, atol=1e-12, err_msg=k)
    for _ in range(2):
        losses = {t: m.step(feeds) for t, m in models.items()}
        np.testing.assert_allclose(losses["cuda"], losses["cpu"], rtol=1e-12)
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
