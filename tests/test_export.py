"""Exported modules (``model.export``) run with only numpy and numba: no scipy, no graphnn.

One child process, with ``scipy`` and ``graphnn`` blocked at import, loads every exported
module by its path and its arrays with the module's own ``load_arrays``, runs ``forward`` and
one ``step``, and writes what it got; the test compares it with the model in this process."""
import importlib.util
import subprocess
import sys

import numpy as np
import pytest

import graphnn as gn

# the child: imports of scipy and graphnn fail, as in a venv with only numpy and numba
RUNNER = r"""
import importlib.abc, importlib.util, sys

class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("scipy", "graphnn"):
            raise ImportError(f"{name} is blocked: an exported module needs only numpy and numba")
        return None

sys.meta_path.insert(0, Blocked())
import numpy as np

for case in sys.argv[1:]:
    spec = importlib.util.spec_from_file_location(f"exported_{len(case)}_{abs(hash(case))}", case + ".py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    arrays = module.load_arrays(case + "_arrays.npz")
    feeds = dict(np.load(case + "_feeds.npz"))
    out = {f"forward:{k}": v for k, v in module.forward(feeds, arrays).items()}
    out["loss"] = np.array(module.step(feeds, arrays))
    out["params"], out["state"], out["hyper"] = arrays["params"], arrays["state"], arrays["hyper"]
    np.savez(case + "_out.npz", **out)
assert not any(name.split(".")[0] in ("scipy", "graphnn") for name in sys.modules)
"""

TOLERANCE = {"float32": dict(rtol=1e-5, atol=1e-6), "float64": dict(rtol=1e-12, atol=1e-13)}


def mlp(dtype, seed=0):
    """20 -> 32 -> 32 -> 3 with dropout: products large enough to be matrix products (plain and
    transposed), and a random input the exported module fills with its evaluation value."""
    net = gn.Graph(f"mlp_{dtype}", seed=seed)
    x, y = net.input("x", (None, 20)), net.input("y", (None, 3))
    h = gn.dense(x, 32, activation="relu", name="hidden")
    h = gn.dropout(gn.dense(h, 32, activation="tanh", name="hidden2"), 0.25)
    logits = net.output("logits", gn.dense(h, 3, name="output"))
    return gn.compile(net, gn.softmax_cross_entropy(logits, y), optimizer=gn.Adam(lr=0.01), dtype=dtype,
                      wait=True)


def mlp_data(rows=48, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 20))
    return {"x": x, "y": np.eye(3)[rng.integers(0, 3, rows)]}


def regression(dtype):
    net = gn.lecture.regression_net()
    return gn.compile(net.graph, net.loss, optimizer=gn.Adam(lr=0.05), dtype=dtype, wait=True)


def regression_data(rows=32):
    x = np.linspace(-1, 1, rows)[:, None]
    return {"x": x, "y": np.sin(3 * x)}


# each case costs the child a Numba compile of its module (seconds): one per dtype; float64
# products are checked against numpy's by test_matmul_handles_transposed_operands_as_np_dot
CASES = {"regression_f64": (regression, "float64", regression_data),
         "mlp_f32": (mlp, "float32", mlp_data)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Each case trained a little, exported, run in one blocked child; {case: (model, feeds, source, got)}."""
    folder = tmp_path_factory.mktemp("export")
    cases = {}
    for name, (make, dtype, data) in CASES.items():
        model, feeds = make(dtype), data()
        for _ in range(3):           # trained a little (fit would compile its loop too: seconds)
            model.step(feeds)
        path = model.export(folder / f"{name}.py")
        np.savez(folder / f"{name}_arrays.npz", **gn.exported_arrays(model))
        np.savez(folder / f"{name}_feeds.npz", **{k: np.asarray(v, dtype=dtype) for k, v in feeds.items()})
        cases[name] = (model, feeds, path.read_text())
    child = subprocess.run([sys.executable, "-I", "-c", RUNNER, *[str(folder / n) for n in cases]],
                           capture_output=True, text=True, timeout=300, cwd=folder)
    assert child.returncode == 0, child.stderr[-3000:]
    return {name: (*case, dict(np.load(folder / f"{name}_out.npz"))) for name, case in cases.items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_exported_module_runs_with_only_numpy_and_numba(exported, name):
    model, feeds, source, got = exported[name]
    tol = TOLERANCE[model.dtype.name]
    for output, value in model.forward(feeds).items():
        np.testing.assert_allclose(got[f"forward:{output}"], value, **tol, err_msg=f"{name}: {output}")
    expected_loss = model.step(feeds, training=False)     # dropout keeps every unit, as exported
    np.testing.assert_allclose(got["loss"], expected_loss, **tol, err_msg=f"{name}: step loss")
    after = gn.exported_arrays(model)       # the model after the same step: the child's arrays
    for kind in ("params", "state", "hyper"):
        np.testing.assert_allclose(got[kind], after[kind], **tol, err_msg=f"{name}: {kind} after a step")


@pytest.mark.parametrize("name", sorted(CASES))
def test_exported_source_names_its_dependencies_and_calls_no_blas(exported, name):
    import numba
    source = exported[name][2]
    assert "np.dot" not in source and "scipy" not in source.replace("no scipy", "")
    header = "\n".join(source.splitlines()[:5])
    assert f"numpy {np.__version__}, numba {numba.__version__}" in header and "no scipy" in header
    if name.startswith("mlp"):      # its products: plain, with a transposed a, with a transposed b
        assert {"_matmul(a0, a1, a2)", "_matmul(a0.T, a1, a2)", "_matmul(a0, a1.T, a2)"} <= set(
            line.strip() for line in source.splitlines())
    else:                           # the lecture net's products are written out in its loop
        assert "_matmul(a0" not in source


def test_the_process_keeps_blas_for_its_own_kernels():
    model = mlp("float32")
    assert "np.dot(" in model.source and "_matmul" not in model.source


@pytest.fixture(scope="module")
def module(tmp_path_factory):
    """The float64 MLP's exported module, imported here (graphnn present; it does not use it)."""
    path = mlp("float64").export(tmp_path_factory.mktemp("imported") / "mlp_module.py")
    spec = importlib.util.spec_from_file_location("graphnn_test_exported_mlp", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_handles_transposed_operands_as_np_dot(module, trans_a, trans_b):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(7, 5) if trans_a else (5, 7))
    b = rng.normal(size=(3, 7) if trans_b else (7, 3))
    out = np.full((5, 3), np.nan)
    module._matmul(a.T if trans_a else a, b.T if trans_b else b, out)
    np.testing.assert_allclose(out, (a.T if trans_a else a) @ (b.T if trans_b else b), rtol=1e-13)


def test_run_names_a_missing_feed_and_refuses_arrays_of_another_dtype(module):
    arrays = gn.exported_arrays(mlp("float64"))
    with pytest.raises(KeyError, match="no feed 'x'"):
        module.forward({"y": np.zeros((2, 3))}, arrays)
    with pytest.raises(ValueError, match="feed 'x' has shape \\(2, 4\\)"):
        module.forward({"x": np.zeros((2, 4))}, arrays)
    with pytest.raises(TypeError, match="float64"):
        module.forward({"x": np.zeros((2, 20))}, {**arrays, "params": arrays["params"].astype(np.float32)})


def test_exported_arrays_pack_the_models_values_in_its_order():
    model = mlp("float32")
    model.step(mlp_data())
    arrays = gn.exported_arrays(model)
    assert list(arrays["param_names"]) == list(model.params)
    assert list(arrays["state_names"]) == list(model.state)
    assert arrays["params"].dtype == np.float32
    np.testing.assert_array_equal(arrays["params"], np.concatenate([v.ravel() for v in model.params.values()]))
    np.testing.assert_array_equal(arrays["state"], np.concatenate([v.ravel() for v in model.state.values()]))
    hyper = dict(zip(arrays["hyper_names"], arrays["hyper"]))
    assert hyper["optimizer::lr"] == np.float32(0.01) and hyper["optimizer::t"] == 2.0    # the next step's
    with pytest.raises(gn.ArgumentError, match="compiled model"):
        gn.exported_arrays(model.graph)


def test_the_documented_example_runs(tmp_path, monkeypatch):
    """docs/compiler.md, "Exported modules": its code blocks, run one after the other."""
    import re
    from pathlib import Path
    text = (Path(__file__).resolve().parent.parent / "docs" / "compiler.md").read_text()
    section = text.split("\n## Exported modules\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    names = {}
    exec(compile("\n".join(blocks), "compiler.md", "exec"), names)
    model, x = names["model"], names["x"]
    # the example's last y_hat is read by hand after its step: the model takes the same step
    np.testing.assert_allclose(names["loss"], model.step({"x": x, "y": np.sin(3 * x)}, training=False),
                               rtol=1e-12)
    np.testing.assert_allclose(names["y_hat"], model.forward({"x": x})["y_hat"], rtol=1e-12)
