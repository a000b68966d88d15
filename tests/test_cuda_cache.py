"""numba-cuda's disk cache of the generated CUDA kernels.

Every generated kernel is declared ``@cuda.jit(cache=True)``: on a GPU the first process
compiles it and numba-cuda writes its machine code (per GPU architecture) beside the cached
module, where a later process loads it. Saving and loading machine code needs a GPU; what
these tests check needs none: where the cache of each kernel goes (the graphnn cache folder,
whatever ``$NUMBA_CACHE_DIR`` says), and that a damaged cache file of a kernel is set aside
and that launch alone tried again, as on the CPU.
"""
import json
import os
import subprocess
import sys

import pytest

import graphnn as gn
from graphnn.runtime import cache as disk

pytestmark = pytest.mark.cuda

CHILD_PRELUDE = r'''
import json, sys, warnings
from pathlib import Path
import numpy as np
np.row_stack = getattr(np, "row_stack", np.vstack)  # numba-cuda 0.30 on numpy 2.5
from numba import cuda, types
from numba.cuda.dispatcher import CUDADispatcher
from graphnn.runtime import cache as disk
folder, path = disk.cache_dir(sys.argv[1]), Path(sys.argv[2])
module = disk.import_module(path, cuda=True)
kernels = {n: v for n, v in vars(module).items()
           if isinstance(v, CUDADispatcher) and not v.targetoptions.get("device")}
'''

WHERE_CHILD = CHILD_PRELUDE + r'''
print(json.dumps({n: [type(k._cache).__name__, k._cache._cache_path] for n, k in kernels.items()}))
'''

DAMAGED_CHILD = CHILD_PRELUDE + r'''
from numba.cuda import codegen
# the cache's index key names the GPU's architecture: without a GPU, say sm_90
codegen.JITCUDACodegen.magic_tuple = lambda self: ("no GPU", (9, 0))
name, kernel = sorted(kernels.items())[0]
index = Path(kernel._cache._cache_file._index_path)
index.parent.mkdir(exist_ok=True)
index.write_bytes(b"\x80\x04 a truncated pickle")
sig = types.void(*[types.float32[:, ::1]] * 8)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    got = disk.repairing_numba_cache(lambda: kernel._cache.load_overload(sig, kernel.targetctx))
print(json.dumps({"loaded": repr(got), "index_left": index.exists(),
                  "set_aside": index.with_name(index.name + ".corrupt").exists(),
                  "warnings": [str(w.message) for w in caught]}))
'''


UNSAVED_CHILD = CHILD_PRELUDE + r'''
import threading
from numba.cuda import codegen
codegen.JITCUDACodegen.magic_tuple = lambda self: ("no GPU", (9, 0))
(name, kernel), (_, other) = sorted(kernels.items())[:2]


class Compiled:     # what numba-cuda saves after a compile, holding something no pickle takes
    codegen = codegen.JITCUDACodegen("graphnn")

    def _reduce_states(self):
        return {"lock": threading.Lock()}


calls = []


def compile_and_save():
    calls.append(1)
    kernel._cache.save_overload(types.void(types.float32[::1]), Compiled())


with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    disk.repairing_numba_cache(compile_and_save)
print(json.dumps({"calls": len(calls), "enabled": kernel._cache._enabled, "other": other._cache._enabled,
                  "warnings": [str(w.message) for w in caught]}))
'''


def _cuda_module(tmp_path):
    """A CUDA training step's generated module, printed under the simulator into ``tmp_path``."""
    net = gn.lecture.classifier_net()
    model = gn.compile(net.graph, net.loss, target="cuda", optimizer=gn.Adam(lr=0.01), cache_dir=tmp_path)
    return model.backend.compiled


def _child(code, tmp_path, path, **env):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"} | env
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(path)], capture_output=True,
                         text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_kernel_caches_its_machine_code_in_the_graphnn_cache_folder(tmp_path):
    compiled = _cuda_module(tmp_path / "cache")
    source = compiled.source
    defined = source.count("\n@cuda.jit(cache=True)\ndef ")
    assert defined >= 5 and "@cuda.jit\n" not in source, source[:2000]
    # numba-cuda itself, no simulator: each kernel's cache is the cache folder's __pycache__,
    # even where NUMBA_CACHE_DIR points numba's own caches elsewhere
    elsewhere = tmp_path / "numba-elsewhere"
    where = _child(WHERE_CHILD, tmp_path / "cache", compiled.path, NUMBA_CACHE_DIR=str(elsewhere))
    assert len(where) == defined, where
    for name, (kind, cache_path) in where.items():
        assert kind == "CUDACache", (name, kind)
        assert cache_path == str(compiled.path.parent / "__pycache__"), (name, cache_path)


def test_a_damaged_kernel_cache_file_is_set_aside_and_loaded_again(tmp_path):
    """The load path of numba-cuda itself, on a truncated index file: graphnn finds the file
    in the traceback, moves it aside with a warning, and the second load finds no entry
    (there the kernel would be compiled again)."""
    compiled = _cuda_module(tmp_path / "cache")
    got = _child(DAMAGED_CHILD, tmp_path / "cache", compiled.path)
    assert got["loaded"] == "None" and got["set_aside"] and not got["index_left"], got
    assert any("is damaged" in w and ".nbi" in w for w in got["warnings"]), got


def test_a_kernel_whose_cache_cannot_be_written_runs_uncached(tmp_path):
    """numba-cuda's own save path fails (here: a compiled kernel it cannot pickle): that
    kernel's cache is turned off with a warning and the launch is made again; the other
    kernels keep theirs."""
    compiled = _cuda_module(tmp_path / "cache")
    got = _child(UNSAVED_CHILD, tmp_path / "cache", compiled.path)
    assert got["calls"] == 2 and got["enabled"] is False and got["other"] is True, got
    assert any("could not write its cache" in w and "lock" in w for w in got["warnings"]), got


def test_a_plan_s_first_run_repairs_a_launch_without_repeating_the_launches_before_it(tmp_path):
    """The first run of a launch sequence compiles (or loads) its kernels one launch at a
    time: where a load fails on a damaged cache file, only that launch runs again."""
    from numba.cuda.core.caching import IndexDataCacheFile

    from graphnn.runtime.cuda import Launcher, Plan, _cuda
    folder = disk.cache_dir(tmp_path)
    index = IndexDataCacheFile(str(folder / "__pycache__"), "graphnn_x.k-1", ("stamp", 1))
    os.makedirs(os.path.dirname(index._index_path), exist_ok=True)
    with open(index._index_path, "wb") as f:
        f.write(b"not a pickle")
    ran = []
    plan = Plan([lambda: ran.append("a"), lambda: ran.append(("b", index._load_index())),
                 lambda: ran.append("c")])
    launcher = Launcher(_cuda(), None)
    with pytest.warns(RuntimeWarning, match="is damaged"):
        launcher.run(plan)
    assert ran == ["a", ("b", {}), "c"]
    assert os.path.exists(index._index_path + ".corrupt")
    launcher.run(plan)
    assert ran[3:] == ["a", ("b", {}), "c"] and plan.runs == 2


def test_a_failure_that_is_no_cache_damage_is_raised_at_once(tmp_path):
    from graphnn.runtime.cuda import Launcher, Plan, _cuda
    ran = []

    def broken():
        ran.append("b")
        raise ValueError("not a cache problem")
    plan = Plan([lambda: ran.append("a"), broken, lambda: ran.append("c")])
    with pytest.raises(ValueError, match="not a cache problem"):
        Launcher(_cuda(), None).run(plan)
    assert ran == ["a", "b"]


TRAIN_CHILD = r'''
import json, sys
import numpy as np
np.row_stack = getattr(np, "row_stack", np.vstack)  # numba-cuda 0.30 on numpy 2.5
import graphnn as gn
net = gn.lecture.classifier_net()
rng = np.random.default_rng(3)
x, y = rng.standard_normal((16, 2)), rng.integers(0, 2, (16, 1)).astype(float)
model = gn.compile(net.graph, net.loss, target="cuda", optimizer=gn.Adam(lr=0.01), cache_dir=sys.argv[1])
losses = [float(model.step({"x": x, "y": y})) for _ in range(3)]
kernels = [v for v in vars(model.backend.compiled.module).values() if hasattr(v, "stats")]
stats = ({"hits": sum(sum(k.stats.cache_hits.values()) for k in kernels),
          "misses": sum(sum(k.stats.cache_misses.values()) for k in kernels)} if kernels else None)
print(json.dumps({"losses": losses, "params": {k: v.tolist() for k, v in model.get_params().items()},
                  "module_cached": model.backend.compiled.cache_hit, "kernel_cache": stats}))
'''


def test_a_new_process_on_a_warm_cache_trains_as_the_first_did(tmp_path):
    """Two processes train the same model on one cache folder: the second finds the module
    (and, on a GPU, every kernel's machine code: no kernel is compiled again) and gives the
    same losses and parameters bit for bit."""
    env = dict(os.environ)
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", TRAIN_CHILD, str(tmp_path)], capture_output=True,
                             text=True, env=env, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    cold, warm = runs
    assert [cold["module_cached"], warm["module_cached"]] == [False, True]
    assert warm["losses"] == cold["losses"] and warm["params"] == cold["params"]
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        assert cold["kernel_cache"] is None      # the simulator compiles nothing: nothing to cache
    else:
        # a real GPU: the first process compiled and saved every kernel, the second loaded them
        assert cold["kernel_cache"]["misses"] >= 5 and cold["kernel_cache"]["hits"] == 0, cold
        assert warm["kernel_cache"] == {"hits": cold["kernel_cache"]["misses"], "misses": 0}, warm
