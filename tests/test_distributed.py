"""Data-parallel training over MPI (graphnn.distributed, issue 16).

The MPI tests launch ``mpiexec -n 2``, ``-n 3`` and ``-n 4`` on small scripts and compare with one
process training on the same global batches: SGD and Adam, float64 and float32, dropout, and
batches that do not divide among the ranks (41 rows in batches of 10: the last batch has one
row, so with 3 ranks two of them hold none).
"""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import graphnn as gn
from graphnn.distributed import shard

ROOT = Path(__file__).resolve().parents[1]

# every configuration trains, saves a checkpoint from rank 0 (gn.distributed.save), loads it on
# every rank and trains one more epoch from it
TRAIN = textwrap.dedent('''
    import json, sys
    import numpy as np
    import graphnn as gn

    where, distributed = sys.argv[1], (None if sys.argv[2] == "single" else "mpi")
    rank = gn.distributed.rank() if distributed else 0
    results = {}
    for opt, dtype, dropout in [("sgd", "float64", True), ("adam", "float64", True),
                                ("adam", "float32", True), ("sgd", "float32", False)]:
        g = gn.Graph("dp", seed=0)
        x, y = g.input("x", (None, 5)), g.input("y", (None, 3))
        layers = [gn.Dense(8, activation="tanh")] + ([gn.Dropout(0.3)] if dropout else []) + [gn.Dense(3)]
        logits = g.output("logits", gn.Sequential(layers)(x))
        optimizer = gn.Adam(lr=0.05) if opt == "adam" else gn.SGD(0.2)
        loss = gn.softmax_cross_entropy(logits, y)
        model = gn.compile(g, loss, optimizer=optimizer, dtype=dtype, wait=True)
        rng = np.random.default_rng(1)
        X, Y = rng.normal(size=(41, 5)), np.eye(3)[rng.integers(0, 3, 41)]
        h = model.fit(X, Y, epochs=3, batch_size=10, seed=7, verbose=False, distributed=distributed)
        path = f"{where}/{opt}-{dtype}.gnn"
        if distributed:
            gn.distributed.save(model, path)
        else:
            gn.save(model, path)
        resumed = gn.load(path)
        h2 = resumed.fit(X, Y, epochs=1, batch_size=10, seed=8, verbose=False, distributed=distributed)
        results[f"{opt}-{dtype}-{dropout}"] = {
            "loss": h["loss"] + h2["loss"], "step_count": resumed.step_count,
            "params": {k: v.tolist() for k, v in resumed.get_params().items()},
            "state": {k: np.asarray(v, dtype=np.float64).tolist() for k, v in resumed.state.items()}}
    json.dump(results, open(f"{where}/{sys.argv[2]}.{rank}.json", "w"))
''')


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT), NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1")
    env.pop("PYTEST_CURRENT_TEST", None)
    return env


@pytest.fixture(scope="module")
def mpiexec():
    pytest.importorskip("mpi4py", reason='needs mpi4py: pip install "graphnn[mpi]" (CI installs it)')
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    assert found, 'mpi4py is installed but no mpiexec is on PATH: pip install "graphnn[mpi]" (MPICH)'
    return found


def _launch(mpiexec, ranks, script, *args, cwd=None, timeout=120):
    command = [sys.executable, str(script), *args]
    if ranks:
        command = [mpiexec, "-n", str(ranks), *command]
    return subprocess.run(command, env=_env(), cwd=cwd, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def trained(mpiexec, tmp_path_factory):
    """{"single" | "n2" | "n3" | "n4": [results of each rank]}"""
    where = tmp_path_factory.mktemp("dp")
    script = where / "train.py"
    script.write_text(TRAIN)
    out = {}
    for name, ranks in (("single", 0), ("n2", 2), ("n3", 3), ("n4", 4)):
        done = _launch(mpiexec, ranks, script, str(where), name)
        assert done.returncode == 0, done.stderr[-3000:]
        out[name] = [json.loads((where / f"{name}.{r}.json").read_text()) for r in range(max(ranks, 1))]
    return out


def _close(a, b, rtol):
    a, b = np.asarray(a), np.asarray(b)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * max(1.0, float(np.abs(b).max(initial=0))))


@pytest.mark.parametrize("ranks", ["n2", "n3", "n4"])
@pytest.mark.slow     # mpiexec -n 1, 2, 3 and 4 train four configurations: about 25 s
def test_same_result_as_one_process(trained, ranks):
    single = trained["single"][0]
    for config, expected in single.items():
        rtol = 1e-12 if "float64" in config else 1e-5      # float32: measured up to 1.1e-6
        for result in trained[ranks]:
            got = result[config]
            assert got["step_count"] == expected["step_count"] == 5 * 4, config
            _close(got["loss"], expected["loss"], rtol)
            for k in expected["params"]:
                _close(got["params"][k], expected["params"][k], rtol)
            for k in expected["state"]:
                _close(got["state"][k], expected["state"][k], rtol)


@pytest.mark.parametrize("ranks", ["n2", "n3", "n4"])
@pytest.mark.slow     # shares the mpiexec runs of test_same_result_as_one_process
def test_every_rank_holds_the_same_model(trained, ranks):
    first = trained[ranks][0]
    for other in trained[ranks][1:]:
        assert other == first       # bit for bit: parameters, optimizer state, losses


@pytest.mark.slow     # shares the mpiexec runs of test_same_result_as_one_process
def test_dropout_draws_matter(trained):
    """The equality above is not vacuous: the dropout run differs from the one without."""
    single = trained["single"][0]
    a, b = single["sgd-float64-True"]["loss"], single["sgd-float32-False"]["loss"]
    assert abs(a[0] - b[0]) > 1e-3


# the CUDA target with host staging, under the CUDA simulator: each rank's gradients come back
# from the device, go through the Allreduce on the host, and the apply program's launch takes
# them back to the device
CUDA = textwrap.dedent('''
    import json, sys
    import numpy as np
    import graphnn as gn

    target, mode = sys.argv[1], sys.argv[2]
    distributed = None if mode == "single" else "mpi"
    g = gn.Graph("dpc", seed=0)
    x, y = g.input("x", (None, 5)), g.input("y", (None, 3))
    logits = g.output("logits", gn.Sequential([gn.Dense(6, activation="tanh"), gn.Dropout(0.3),
                                               gn.Dense(3)])(x))
    model = gn.compile(g, gn.softmax_cross_entropy(logits, y), optimizer=gn.Adam(0.05),
                       dtype="float64", target=target)
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(23, 5)), np.eye(3)[rng.integers(0, 3, 23)]
    h = model.fit(X, Y, epochs=2, batch_size=8, seed=3, verbose=False, distributed=distributed)
    rank = gn.distributed.rank() if distributed else 0
    json.dump({"loss": h["loss"], "step_count": model.step_count,
               "params": {k: v.tolist() for k, v in model.get_params().items()},
               "state": {k: np.asarray(v).tolist() for k, v in model.state.items()}},
              open(f"{target}-{mode}.{rank}.json", "w"))
''')


@pytest.mark.slow     # two simulated CUDA ranks: about 20 s
def test_cuda_target_with_host_staging_equals_one_cpu_process(mpiexec, tmp_path):
    pytest.importorskip("numba.cuda", reason="needs numba-cuda (the test extra installs it)")
    script = tmp_path / "cuda.py"
    script.write_text(CUDA)
    single = _launch(mpiexec, 0, script, "cpu", "single", cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    env = dict(_env(), NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run([mpiexec, "-n", "2", sys.executable, str(script), "cuda", "mpi"], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = json.loads((tmp_path / "cpu-single.0.json").read_text())
    results = [json.loads((tmp_path / f"cuda-mpi.{r}.json").read_text()) for r in range(2)]
    assert results[0] == results[1]
    got = results[0]
    assert got["step_count"] == expected["step_count"] == 2 * 3
    _close(got["loss"], expected["loss"], 1e-12)
    for part in ("params", "state"):     # read after device steps: the host copies are current
        assert got[part].keys() == expected[part].keys()
        for k in expected[part]:
            _close(got[part][k], expected[part][k], 1e-12)


MISMATCH = textwrap.dedent('''
    import graphnn as gn, numpy as np
    g = gn.Graph("dp", seed=0)
    x, y = g.input("x", (None, 5)), g.input("y", (None, 3))
    units = 8 if gn.distributed.rank() == 0 else 9
    logits = g.output("logits", gn.Sequential([gn.Dense(units, activation="tanh"), gn.Dense(3)])(x))
    model = gn.compile(g, gn.softmax_cross_entropy(logits, y), wait=True)
    try:
        model.fit(np.zeros((8, 5)), np.zeros((8, 3)), epochs=1, verbose=False, distributed="mpi")
    except gn.DistributedError as e:
        open(f"{gn.distributed.rank()}.txt", "w").write(str(e))
''')


def test_ranks_with_different_graphs_name_the_node(mpiexec, tmp_path):
    script = tmp_path / "mismatch.py"
    script.write_text(MISMATCH)
    done = _launch(mpiexec, 2, script, cwd=tmp_path, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    for r in range(2):      # every rank raises, none hangs
        message = (tmp_path / f"{r}.txt").read_text()
        assert "rank 1 disagrees with rank 0" in message and "first differing node 'dense/W'" in message \
            and "(5, 8)" in message and "(5, 9)" in message, message


FAILING = textwrap.dedent('''
    import graphnn as gn, numpy as np
    g = gn.Graph("dp", seed=0)
    x, y = g.input("x", (None, 5)), g.input("y", (None, 3))
    logits = g.output("logits", gn.Dense(3)(x))
    model = gn.compile(g, gn.softmax_cross_entropy(logits, y), wait=True)

    def boom(step, logs):
        if gn.distributed.rank() == 1 and step == 2:
            raise RuntimeError("disk full on rank one")
    model.fit(np.zeros((40, 5)), np.zeros((40, 3)), epochs=5, batch_size=4, verbose=False,
              distributed="mpi", callbacks=[gn.LambdaCallback(on_step_end=boom)])
    open(f"{gn.distributed.rank()}.txt", "w").write(f"finished {model.step_count}")
''')


def test_a_failing_rank_stops_every_rank(mpiexec, tmp_path):
    script = tmp_path / "failing.py"
    script.write_text(FAILING)
    done = _launch(mpiexec, 2, script, cwd=tmp_path, timeout=60)     # a hang raises TimeoutExpired
    assert done.returncode != 0
    assert "rank 1 of 2 failed during fit" in done.stderr and "disk full on rank one" in done.stderr
    assert not list(tmp_path.glob("*.txt")), [p.read_text() for p in tmp_path.glob("*.txt")]


def _net(sum_loss=False, norm=False):
    g = gn.Graph("one", seed=0)
    x, y = g.input("x", (None, 4)), g.input("y", (None, 2))
    h = gn.Dense(3)(x)
    if norm:
        h = gn.BatchNorm()(h)
    logits = g.output("logits", gn.Dense(2)(h))
    loss = gn.softmax_cross_entropy(logits, y, reduction="sum" if sum_loss else "mean")
    return gn.compile(g, loss, dtype="float64", wait=True)


def test_a_summed_loss_is_refused(mpiexec):
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(8, 4)), np.eye(2)[rng.integers(0, 2, 8)]
    with pytest.raises(gn.DistributedError, match="not a mean over the rows"):
        _net(sum_loss=True).fit(X, Y, epochs=1, verbose=False, distributed="mpi")
    # one process (no mpiexec) is a world of one rank: the mean loss trains as without MPI
    mean, plain = _net(), _net()
    h = mean.fit(X, Y, epochs=2, batch_size=3, verbose=False, distributed="mpi")
    expected = plain.fit(X, Y, epochs=2, batch_size=3, verbose=False)
    np.testing.assert_allclose(h["loss"], expected["loss"], rtol=1e-12)
    # where the steps' time went: 2 epochs of 3 batches
    assert h.distributed["ranks"] == 1 and h.distributed["steps"] == 6
    assert all(h.distributed[f"{k}_s"] > 0 for k in ("gradients", "allreduce", "apply"))


def test_batch_norm_buffers_are_refused(mpiexec):
    with pytest.raises(gn.DistributedError, match="BatchNorm running statistics"):
        _net(norm=True).fit(np.zeros((4, 4)), np.zeros((4, 2)), verbose=False, distributed="mpi")


def test_distributed_must_be_mpi():
    with pytest.raises(gn.ArgumentError, match="distributed must be 'mpi'"):
        _net().fit(np.zeros((4, 4)), np.zeros((4, 2)), verbose=False, distributed="nccl")


def test_missing_mpi4py_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)      # import mpi4py raises ImportError
    monkeypatch.setitem(sys.modules, "mpi4py.MPI", None)
    with pytest.raises(gn.DistributedError, match=r'pip install "graphnn\[mpi\]"'):
        _net().fit(np.zeros((4, 4)), np.zeros((4, 2)), verbose=False, distributed="mpi")
    with pytest.raises(gn.DistributedError, match="mpi4py"):
        gn.distributed.rank()


@pytest.mark.parametrize("rows,size", [(10, 3), (1, 3), (41, 2), (12, 4), (0, 2)])
def test_shards_partition_the_rows(rows, size):
    bounds = [shard(rows, r, size) for r in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == rows
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))       # contiguous, in rank order
    counts = [hi - lo for lo, hi in bounds]
    assert max(counts) - min(counts) <= 1
