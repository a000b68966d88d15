"""The on-disk compile cache: hits across processes, invalidation, concurrency, corruption."""
import json
import subprocess
from pathlib import Path

import graphnn as gn
from compile_support import PYTHON, compile_cpu, subprocess_env
from graphnn.runtime import cache as disk

# A child process: compile the 1-2-1 net through GRAPHNN_CACHE_DIR and report what happened.
CHILD = r"""
import json, sys
import graphnn as gn
net = gn.lecture.regression_net(hidden_activation=sys.argv[1])
model = gn.compile(net.graph, net.loss, optimizer=gn.SGD(lr=0.1), target="cpu", dtype="float64", wait=True)
if sys.argv[2] == "build":      # write the cache entries, compile no kernel
    print(json.dumps({"path": str(model.backend.build("forward").generate())}))
    raise SystemExit
x, y = gn.lecture.noisy_sine(16, seed=0)
feeds = {"x": x, "y": y}
y_hat = model.forward(feeds)["y_hat"]
loss, grads = model.loss_and_gradients(feeds)
reference = gn.compile(net.graph, net.loss, target="reference", dtype="float64")
ref_loss, ref_grads = reference.loss_and_gradients(feeds)
builds = [model.backend.build("forward"), model.backend.build("gradients")]
kernels = {fn for b in builds for fn in vars(b.module).values() if type(fn).__name__ == "CPUDispatcher"
           and fn.__name__.startswith("_k_")}
print(json.dumps({
    "cache_hit": builds[0].cache_hit,
    "path": str(builds[0].path),
    "new_kernels": sum(b.new_kernels for b in builds),
    "kernels": len(kernels),
    "y_hat": y_hat.ravel().tolist(),
    "loss": loss,
    "grads": {k: v.ravel().tolist() for k, v in grads.items()},
    "reference_error": max([abs(loss - ref_loss)] + [float(abs(grads[k] - ref_grads[k]).max()) for k in grads]),
    "numba_cache_hits": sum(sum(d.stats.cache_hits.values()) for d in kernels),
    "numba_cache_misses": sum(sum(d.stats.cache_misses.values()) for d in kernels),
}))
"""


def start_child(cache, activation="tanh", mode="run"):
    return subprocess.Popen([PYTHON, "-c", CHILD, activation, mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env(GRAPHNN_CACHE_DIR=cache))


def finish_child(process):
    out, err = process.communicate(timeout=240)
    assert process.returncode == 0, f"child failed ({process.returncode}):\n{err[-3000:]}"
    report = json.loads(out.strip().splitlines()[-1])
    if "reference_error" in report:
        assert report["reference_error"] < 1e-12, f"child's compiled model disagrees with the reference: {report}"
    return report


def run_child(cache, activation="tanh", mode="run"):
    return finish_child(start_child(cache, activation, mode))


def same_values(a, b):
    return a["y_hat"] == b["y_hat"] and a["loss"] == b["loss"] and a["grads"] == b["grads"]


def test_second_process_hits_the_cache(tmp_path):
    first = run_child(tmp_path)
    assert first["cache_hit"] is False
    assert first["kernels"] >= 2 and first["new_kernels"] == first["kernels"]
    assert first["numba_cache_misses"] == first["kernels"] and first["numba_cache_hits"] == 0
    second = run_child(tmp_path)
    assert second["cache_hit"] is True, "a new process regenerated a graph it had cached"
    assert second["path"] == first["path"] and second["new_kernels"] == 0
    assert second["numba_cache_hits"] == second["kernels"] == first["kernels"], \
        f"Numba recompiled in the second process: {second}"
    assert second["numba_cache_misses"] == 0
    assert same_values(first, second)


def test_cache_dir_option_and_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GRAPHNN_CACHE_DIR", str(tmp_path / "from_env"))
    net = gn.lecture.regression_net()
    model = gn.compile(net.graph, net.loss, target="cpu", dtype="float64")
    assert model.backend.build("step").generate().parent == tmp_path / "from_env"
    explicit = gn.compile(net.graph, net.loss, target="cpu", dtype="float64", cache_dir=tmp_path / "explicit")
    assert explicit.backend.build("step").generate().parent == tmp_path / "explicit"
    assert explicit.backend.build("step").cache_hit is False   # a new directory starts empty


def _entry(tmp_path, net, **options):
    model = compile_cpu(net.graph, net.loss, cache_dir=tmp_path, **options)
    build = model.backend.build("step")
    path = build.generate()
    return build.cache_hit, path


def test_changed_graph_gets_a_new_entry(tmp_path):
    # generating a program writes and imports its modules but compiles no kernel: cheap
    hit, path = _entry(tmp_path, gn.lecture.regression_net())
    assert not hit
    assert _entry(tmp_path, gn.lecture.regression_net()) == (True, path)
    # parameter values are kernel arguments: other initial weights share the entry
    assert _entry(tmp_path, gn.lecture.regression_net(seed=5)) == (True, path)
    changes = {
        "activation": (gn.lecture.regression_net(hidden_activation="sigmoid"), {}),
        "dtype": (gn.lecture.regression_net(), {"dtype": "float64"}),
        "optimizer": (gn.lecture.regression_net(), {"optimizer": gn.Adam()}),
        "fast_math": (gn.lecture.regression_net(), {"fast_math": False}),
    }
    paths = {path}
    for what, (net, options) in changes.items():
        hit, other = _entry(tmp_path, net, **options)
        assert not hit, f"changing the {what} hit the old cache entry"
        assert other not in paths, f"changing the {what} reused a cache file"
        paths.add(other)
    assert set(tmp_path.glob("graphnn_p_*.py")) == paths


def test_a_wider_layer_changes_the_key(tmp_path):
    def net(width):
        g = gn.Graph("wide")
        x = g.input("x", (None, 3))
        return g, gn.sum(gn.dense(x, width, activation="tanh", name="hidden"))
    keys = set()
    for width in (2, 3):
        g, loss = net(width)
        model = compile_cpu(g, loss, cache_dir=tmp_path, dtype="float64")
        keys.add(model.backend.build("forward").generate().name)
    assert len(keys) == 2


def test_concurrent_compiles_both_succeed(tmp_path):
    children = [start_child(tmp_path), start_child(tmp_path)]
    first, second = [finish_child(c) for c in children]
    assert first["path"] == second["path"]
    assert same_values(first, second)
    assert not list(tmp_path.glob("*.tmp")), "a temporary file was left behind"
    assert disk.lookup(Path(first["path"]).stem, tmp_path, prefix="") is not None


def test_garbage_entry_is_rebuilt_in_a_new_process(tmp_path):
    path = Path(run_child(tmp_path, mode="build")["path"])
    assert disk.lookup(path.stem, tmp_path, prefix="") == path
    kernel = tmp_path / (disk.imported_modules(path)[-1] + ".py")
    for garbage in (path, kernel):          # the driver, then one of the kernels it imports
        garbage.write_text("this is not python ((((\n")
        rebuilt = run_child(tmp_path)          # checks its values against the reference executor
        assert rebuilt["cache_hit"] is False, f"a garbage cache entry was used: {garbage.name}"
        assert Path(rebuilt["path"]) == path
        assert disk.lookup(garbage.stem, tmp_path, prefix="") == garbage


def _mse_kernel(path):
    """The cached kernel module holding the MSE derivative's constant 2."""
    for name in disk.imported_modules(path):
        if "_F(2.0)" in disk.read_source(path.parent / f"{name}.py"):
            return path.parent / f"{name}.py"
    raise AssertionError("no kernel holds the MSE derivative")


def test_tampered_or_truncated_entry_fails_its_checksum(tmp_path):
    net = gn.lecture.regression_net()
    model = compile_cpu(net.graph, net.loss, cache_dir=tmp_path, dtype="float64")
    path = model.backend.build("gradients").generate()
    kernel = _mse_kernel(path)
    for entry, edit in ((kernel, ("_F(2.0)", "_F(3.0)")),     # a plausible-looking edit of a derivative
                        (path, ("N)", "N + 1)"))):              # and of the driver's views
        good = entry.read_text()
        assert good.startswith("# graphnn-checksum: ")
        assert disk.lookup(entry.stem, tmp_path, prefix="") == entry
        tampered = good.replace(*edit)
        assert tampered != good
        for broken in (tampered, good[: len(good) // 2], "", good.replace("# graphnn-checksum: ", "# ")):
            entry.write_text(broken)
            assert disk.lookup(entry.stem, tmp_path, prefix="") is None
            again = compile_cpu(net.graph, net.loss, cache_dir=tmp_path, dtype="float64")
            build = again.backend.build("gradients")
            assert build.generate() == path and build.cache_hit is False
            assert entry.read_text() == good, "the rebuilt entry differs from the original"


def test_store_is_atomic_and_leaves_no_temporaries(tmp_path):
    path = disk.store("k" * 24, "x = 1\n", tmp_path)
    assert disk.lookup("k" * 24, tmp_path) == path
    assert disk.read_source(path) == "x = 1\n"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
