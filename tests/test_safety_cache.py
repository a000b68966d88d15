"""The compile cache under damage: Numba's cache files corrupted, a folder that cannot be written
or is a file, a process killed while it compiles, folder and file permissions.

Every test points the cache at its own tmp_path (GRAPHNN_CACHE_DIR or cache_dir=)."""
import errno
import json
import os
import random
import shutil
import stat
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

import graphnn as gn
from compile_support import PYTHON, subprocess_env
from graphnn.runtime import cache as disk

# A child process: compile the 1-2-1 net (forward, gradients and the gradients' driver) through
# GRAPHNN_CACHE_DIR, and report its values and the reference executor's; "forward" compiles the
# forward program and its driver only.
CHILD = r"""
import json, sys
import graphnn as gn
net = gn.lecture.regression_net()
model = gn.compile(net.graph, net.loss, optimizer=gn.SGD(lr=0.1), target="cpu", dtype="float64", wait=True)
x, y = gn.lecture.noisy_sine(16, seed=0)
feeds = {"x": x, "y": y}
y_hat = model.forward(feeds)["y_hat"]
if sys.argv[1:] == ["forward"]:
    model.backend.build("forward").compile_driver(background=False)
    assert model.backend.build("forward").stage == "compiled"
    raise SystemExit(print(json.dumps({"y_hat": y_hat.ravel().tolist(), "reference_error": 0})))
build = model.backend.build("gradients")
loss, grads = model.loss_and_gradients(feeds)
build.compile_driver(background=False)              # the driver has Numba cache files of its own
assert build.stage == "compiled", build.timings
driver_loss, driver_grads = model.loss_and_gradients(feeds)
reference = gn.compile(net.graph, net.loss, target="reference", dtype="float64")
ref_y_hat = reference.forward(feeds)["y_hat"]
ref_loss, ref_grads = reference.loss_and_gradients(feeds)
print(json.dumps({
    "y_hat": y_hat.ravel().tolist(),
    "loss": loss,
    "grads": {k: v.ravel().tolist() for k, v in grads.items()},
    "reference_error": max([abs(loss - ref_loss), abs(driver_loss - ref_loss),
                            float(abs(y_hat - ref_y_hat).max())]
                           + [float(abs(g[k] - ref_grads[k]).max()) for g in (grads, driver_grads)
                              for k in grads]),
}))
"""


def run_child(cache, *args, **env):
    done = subprocess.run([PYTHON, "-c", CHILD, *args], capture_output=True, text=True, timeout=240,
                          env=subprocess_env(GRAPHNN_CACHE_DIR=cache, **env))
    assert done.returncode == 0, f"child failed ({done.returncode}):\n{done.stderr[-3000:]}"
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["reference_error"] < 1e-12, f"the compiled model disagrees with the reference: {report}"
    return report, done.stderr


def values(report):
    return report["y_hat"], report["loss"], report["grads"]


def numba_files(cache):
    return sorted((cache / "__pycache__").glob("*.nb[ic]"))


# -- Numba's cache files ----------------------------------------------------------------------
def _damage(files, rng):
    """Truncate the first file, overwrite the second with random bytes, empty the third."""
    good = files[0].read_bytes()
    files[0].write_bytes(good[:len(good) // 2])
    files[1].write_bytes(rng.randbytes(len(files[1].read_bytes())))
    files[2].write_bytes(b"")


def _warned_once_each(stderr, damaged):
    warned = [line for line in stderr.splitlines() if "Numba's cache file" in line]
    for f in damaged:
        assert sum(str(f) in line for line in warned) == 1, f"no single warning names {f}:\n{stderr}"
        assert Path(f"{f}.corrupt").exists() and f.exists(), f"{f.name} was not set aside and rebuilt"
    assert len(warned) == len(damaged), stderr


def test_damaged_numba_cache_files_are_set_aside_and_rebuilt(tmp_path):
    cache = tmp_path / "cache"
    first, _ = run_child(cache)
    index = [f for f in numba_files(cache) if f.suffix == ".nbi"]
    data = [f for f in numba_files(cache) if f.suffix == ".nbc"]
    # kernels, then the gradients' driver (sorted last: graphnn_p_ > graphnn_k_)
    assert len(index) == len(data) >= 3 and index[-1].name.startswith("graphnn_p_"), numba_files(cache)
    index, data = index[-3:], data[-3:]
    rng = random.Random(0)
    _damage(index, rng)                        # the driver's index emptied
    second, stderr = run_child(cache)          # checks its values against the reference
    assert values(second) == values(first)
    _warned_once_each(stderr, index)

    _damage(data[::-1], rng)                   # the driver's data truncated, a kernel's emptied
    third, stderr = run_child(cache)           # the index files rebuilt above load silently
    assert values(third) == values(first)
    _warned_once_each(stderr, data)


def test_numba_cache_of_generated_modules_stays_in_the_graphnn_folder(tmp_path):
    # Numba's own choice would be $NUMBA_CACHE_DIR first, then ~/.cache/numba where the module's
    # __pycache__ is not writable: neither may receive the generated modules' cache
    home, numba_dir, cache = tmp_path / "home", tmp_path / "numba", tmp_path / "cache"
    home.mkdir()
    run_child(cache, "forward", HOME=home, NUMBA_CACHE_DIR=numba_dir)
    assert not (home / ".cache" / "numba").exists(), list(home.rglob("*"))
    assert not numba_dir.exists() or not any(numba_dir.rglob("*")), list(numba_dir.rglob("*"))
    index = [f.name for f in numba_files(cache) if f.suffix == ".nbi"]
    assert any(f.startswith("graphnn_k_") for f in index) and any(f.startswith("graphnn_p_") for f in index)
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700


FULL_DISK = r"""
import errno
from numba.core import caching
def _no_space(self, *args, **kwargs):     # every write of Numba's cache fails, as on a full disk
    raise OSError(errno.ENOSPC, "No space left on device")
caching.IndexDataCacheFile.save = _no_space
"""


def test_numba_cache_files_that_cannot_be_written_leave_the_functions_compiled(tmp_path):
    """A full disk (every write of Numba's cache fails) after graphnn's folder was found
    writable: each function is compiled and used, with a warning that it is not kept."""
    cache = tmp_path / "cache"
    done = subprocess.run([PYTHON, "-c", FULL_DISK + CHILD], capture_output=True, text=True, timeout=240,
                          env=subprocess_env(GRAPHNN_CACHE_DIR=cache))
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["reference_error"] < 1e-12, report
    warned = [line for line in done.stderr.splitlines() if "could not write its cache" in line]
    assert warned and all("No space left on device" in line for line in warned), done.stderr[-3000:]
    assert numba_files(cache) == []


# -- the process killed while it compiles -------------------------------------------------------
def test_a_compile_killed_at_random_points_leaves_a_usable_cache(tmp_path):
    rng = random.Random(20240611)
    cache = tmp_path / "cache"
    for _ in range(4):
        child = subprocess.Popen([PYTHON, "-c", CHILD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                 env=subprocess_env(GRAPHNN_CACHE_DIR=cache))
        time.sleep(rng.uniform(0.3, 2.2))      # importing graphnn takes ~0.5 s, compiling ~2 s
        child.kill()
        child.wait()
        # no module file is ever seen half-written: each one there is whole and passes its checksum
        for module in cache.glob("graphnn_*.py"):
            assert disk._valid(module), f"a half-written module after kill -9: {module.name}"
    report, stderr = run_child(cache)          # checks its values against the reference executor
    assert "Traceback" not in stderr, stderr


def test_a_write_that_fails_leaves_the_old_file_whole(tmp_path):
    path = disk.store("k" * 24, "x = 1\n", tmp_path)
    good = path.read_text()
    with pytest.raises(UnicodeEncodeError):
        disk.write_atomic(path, "y = 2\n" * 1000 + "\ud800")      # fails in the middle of the write
    assert path.read_text() == good
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


# -- folders that cannot be used -----------------------------------------------------------------
def _regression_model(cache_dir):
    net = gn.lecture.regression_net()
    return net, gn.compile(net.graph, net.loss, target="cpu", dtype="float64", cache_dir=cache_dir, wait=True)


def _agrees_with_reference(net, model):
    x, y = gn.lecture.noisy_sine(8, seed=1)
    reference = gn.compile(net.graph, net.loss, target="reference", dtype="float64")
    np.testing.assert_allclose(model.forward({"x": x, "y": y})["y_hat"],
                               reference.forward({"x": x, "y": y})["y_hat"], rtol=0, atol=1e-12)


def _cache_warnings(record, text):
    return [w for w in record if issubclass(w.category, RuntimeWarning) and text in str(w.message)]


def _make_read_only(monkeypatch, folder):
    """Files and folders cannot be made inside ``folder``, as on a read-only file system (the
    tests run as root in CI, where chmod does not stop writes)."""
    real_open, real_mkdir = os.open, os.mkdir

    def inside(path):
        return Path(os.path.abspath(path)).is_relative_to(folder) and Path(os.path.abspath(path)) != folder

    def fake_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if inside(path):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_mkdir(path, *args, **kwargs)
    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def test_read_only_cache_folder_compiles_without_a_lasting_cache(tmp_path, monkeypatch):
    folder = tmp_path / "read-only"
    folder.mkdir()
    _make_read_only(monkeypatch, folder)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        net, model = _regression_model(folder)
        _agrees_with_reference(net, model)
        _, again = _regression_model(folder)          # the same folder: no second warning
        _agrees_with_reference(net, again)
    warned = _cache_warnings(record, "is not writable")
    assert len(warned) == 1 and str(folder) in str(warned[0].message), [str(w.message) for w in record]
    assert not any(folder.iterdir()), list(folder.rglob("*"))
    assert model.backend.build("forward").path.parent != folder


def _chmod_stops_writes():
    """False where a chmod 0o500 folder can still be written (root, with CAP_DAC_OVERRIDE)."""
    folder = Path(tempfile.mkdtemp())
    try:
        folder.chmod(0o500)
        (folder / "probe").touch()
        return False
    except PermissionError:
        return True
    finally:
        folder.chmod(0o700)
        shutil.rmtree(folder)


@pytest.mark.skipif(not _chmod_stops_writes(), reason="root writes into a chmod 0o500 folder; "
                    "test_read_only_cache_folder_compiles_without_a_lasting_cache simulates it")
def test_chmod_read_only_cache_folder_compiles_without_a_lasting_cache(tmp_path):
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o700)
    folder.chmod(0o500)
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            net, model = _regression_model(folder)
            _agrees_with_reference(net, model)
        warned = _cache_warnings(record, "is not writable")
        assert len(warned) == 1 and str(folder) in str(warned[0].message)
        assert not any(folder.iterdir())
    finally:
        folder.chmod(0o700)


def test_a_write_failing_later_moves_the_process_to_a_private_folder(tmp_path, monkeypatch):
    folder = tmp_path / "fills-up"
    disk.cache_dir(folder)                          # checked and found writable
    real = disk.write_atomic

    def disk_full(path, text):
        if Path(path).parent == folder:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, text)
    monkeypatch.setattr(disk, "write_atomic", disk_full)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        net, model = _regression_model(folder)
        _agrees_with_reference(net, model)
    warned = _cache_warnings(record, "is not writable")
    assert len(warned) == 1 and "No space left" in str(warned[0].message)


@pytest.mark.parametrize("how", ["explicit", "environment", "under a file"])
def test_a_cache_path_that_is_a_file_raises_cache_error(tmp_path, monkeypatch, how):
    in_the_way = tmp_path / "cache"
    in_the_way.write_text("not a folder")
    path = in_the_way / "sub" if how == "under a file" else in_the_way
    net = gn.lecture.regression_net()
    if how == "environment":
        monkeypatch.setenv("GRAPHNN_CACHE_DIR", str(path))
    options = {} if how == "environment" else {"cache_dir": path}
    with pytest.raises(gn.CacheError, match="is a file|parent folders is a file") as info:
        gn.compile(net.graph, net.loss, target="cpu", dtype="float64", **options)
    assert str(path) in str(info.value) and "GRAPHNN_CACHE_DIR" in str(info.value)
    assert in_the_way.read_text() == "not a folder"


# -- permissions -------------------------------------------------------------------------------
def test_a_new_cache_folder_is_private_and_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        folder = disk.cache_dir(tmp_path / "new" / "cache")
        path = disk.store("m" * 24, "x = 1\n", folder)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


@pytest.mark.parametrize("mode, owner, warns", [
    (0o777, "me", True),           # anyone can write
    (0o1777, "me", True),          # sticky, as /tmp: others still add modules of their own
    (0o775, "me", False),          # my own group-shared folder: my choice
    (0o775, "other", True),        # someone else's, and their group's
    (0o755, "other", False),       # someone else's, writable by them only
])
def test_a_cache_folder_others_can_write_warns_once(tmp_path, mode, owner, warns):
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(mode)
    if owner == "other":
        if os.geteuid() != 0:
            pytest.skip("giving a folder to another user needs root")
        os.chown(folder, 65534, -1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        disk.cache_dir(folder)
        disk.cache_dir(folder)
    warned = _cache_warnings(record, "can be written by other users")
    assert len(warned) == (1 if warns else 0), [str(w.message) for w in record]
    if warns:
        assert str(folder) in str(warned[0].message)
    assert stat.S_IMODE(os.stat(folder).st_mode) == mode, "graphnn changed a folder the user chose"


@pytest.mark.parametrize("umask, existing, expected", [(0o022, None, 0o644), (0o077, None, 0o600),
                                                       (0o022, 0o640, 0o640)])
def test_export_follows_the_umask_like_open(tmp_path, umask, existing, expected):
    net = gn.lecture.regression_net()
    model = gn.compile(net.graph, net.loss, target="cpu", dtype="float64", cache_dir=tmp_path / "cache")
    target = tmp_path / "exported.py"
    if existing is not None:
        target.write_text("old\n")
        target.chmod(existing)
    old = os.umask(umask)
    try:
        model.export(target)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(target).st_mode) == expected
    assert target.read_text() == model.backend.source_of(export=True)
