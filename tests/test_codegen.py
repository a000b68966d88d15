"""Code generation: the scalar printer (exact strings), float32 purity of the compiled kernels
(LLVM IR), readable generated source, and the standalone exported module."""
import ast
import json
import re
import subprocess

import numpy as np
import pytest
import sympy as sp
from numba import njit

from compile_support import (INDEX_GRAPHS, PYTHON, assert_close, group_count, index_models, lecture_data,
                             lecture_models, op_group, op_group_models)
from graphnn.codegen.cpu import CPUPrinter
from graphnn.codegen.scalar import ScalarPrinter
from graphnn.lower import Fused, lower
from graphnn.lower.ir import BATCH
from graphnn.ops.primitives import Sigmoid

x, y = sp.symbols("x y", real=True)


# -- the scalar printer ------------------------------------------------------------------------
PRINTED = [
    (x * sp.Float(0.5), "_F(0.5)*x"),
    (x / 2, "(_F(0.5))*x"),
    (3 * x + 1, "_F(3.0)*x + _F(1.0)"),
    (sp.Max(x, 0), "max(_F(0.0), x)"),
    (sp.Min(x, 0, y), "min(min(_F(0.0), x), y)"),
    (x ** 2, "(x*x)"),
    (x ** 3, "(x*x*x)"),
    (x ** -2, "(_F(1.0)/(x*x))"),
    (y / x ** 2, "y/(x*x)"),          # the denominator keeps its parentheses
    (sp.sqrt(x), "math.sqrt(x)"),
    (1 / sp.sqrt(x), "(_F(1.0)/math.sqrt(x))"),
    (sp.pi * x, "_F(3.141592653589793)*x"),
    (x / BATCH, "x/_F(N)"),
    (sp.exp(-x), "math.exp(-x)"),
    (sp.Abs(x), "abs(x)"),
    (Sigmoid(x), "sigmoid(x)"),
    (sp.Piecewise((x, x > 0), (0, True)), "((x) if (x > _F(0.0)) else (_F(0.0)))"),
    (sp.IndexedBase("W")[sp.Symbol("i0", integer=True), 1], "W[i0, 1]"),
]


@pytest.mark.parametrize("expr,text", PRINTED, ids=[t for _, t in PRINTED])
def test_scalar_printer_exact(expr, text):
    assert ScalarPrinter().doprint(expr) == text


def test_scalar_printer_math_table_is_per_target():
    assert ScalarPrinter().doprint(sp.tanh(x)) == "math.tanh(x)"
    assert ScalarPrinter(math_names={"tanh": "fast_tanh"}).doprint(sp.tanh(x)) == "fast_tanh(x)"


def test_every_printed_number_is_typed():
    exprs = [e for e, _ in PRINTED] + [sp.erf(x / sp.sqrt(2)) * sp.Rational(1, 2), sp.exp(-x ** 2 / 2)]
    for expr in exprs:
        text = ScalarPrinter().doprint(expr)
        bare = re.findall(r"(?<![\w.(\[])\d+\.?\d*(?:e-?\d+)?(?![\w\]])", re.sub(r"_F\([^()]*\)", "", text))
        assert not bare, f"{expr}: untyped literal(s) {bare} in {text!r}"


def test_numeric_subexpressions_fold_to_one_typed_literal():
    assert ScalarPrinter().doprint(sp.sqrt(2) * x) == f"_F({float(sp.sqrt(2))!r})*x"
    assert ScalarPrinter().doprint(sp.erf(x / sp.sqrt(2)) * sp.pi / 2) == (
        f"_F({float(sp.pi / 2)!r})*math.erf(_F({float(1 / sp.sqrt(2))!r})*x)")


# -- float32 kernels do no float64 arithmetic ----------------------------------------------------
# Instructions that compute in double. Comparisons (fcmp) and int->double conversions come from
# Numba's own reshape checks inlined into the kernel and are not arithmetic, so they are not matched.
DOUBLE_ARITHMETIC = re.compile(
    r"=\s*(?:fadd|fsub|fmul|fdiv|frem|fneg)\s+(?:[a-z]+\s+)*(?:<\d+ x )?double\b"   # scalar or vector
    r"|\bfpext\b|\bfptrunc\b"                                                         # float <-> double
    r"|\bcall\b[^@]*\bdouble\b[^@]*@|@llvm\.[a-z0-9.]*\.f64\b")                       # double libm/intrinsics
FLOAT_ARITHMETIC = re.compile(r"=\s*(?:fadd|fmul)\s+(?:[a-z]+\s+)*(?:<\d+ x )?float\b")


def defined_functions(ir):
    """{function name: lines} of every function defined (not merely declared) in an IR module."""
    functions, name, body = {}, None, []
    for line in ir.splitlines():
        if line.startswith("define "):
            name, body = re.search(r"@([\w.$\"]+)", line).group(1), [line]
        elif name is not None:
            body.append(line)
            if line.startswith("}"):
                functions[name] = body
                name = None
    return functions


def double_arithmetic(dispatcher, *owners):
    """(function, line) pairs computing in double, in the functions whose name contains an owner
    (generated modules: a kernel and the scalar helpers; BLAS and Numba internals are left out)."""
    assert dispatcher.signatures, f"{dispatcher} never compiled: call it first"
    if sum(dispatcher.stats.cache_hits.values()):
        dispatcher.recompile()      # code loaded from Numba's cache cannot be inspected
    found, checked = [], 0
    for ir in dispatcher.inspect_llvm().values():
        for name, body in defined_functions(ir).items():
            if not any(o in name for o in owners) or name.startswith(("_ZN7cpython", "cfunc.")):
                continue    # the Python-boundary wrappers box and unbox Python floats as double
            checked += 1
            found += [(name[:70], line.strip()) for line in body if DOUBLE_ARITHMETIC.search(line)]
    assert checked, f"no function of {owners} found in the IR of {dispatcher}"
    return found


def _report(found):
    return "\n".join(f"{name}: {line}" for name, line in found[:40])


def test_the_double_arithmetic_check_can_fail():
    # a float32 function with a bare literal computes in double: the check must see it
    @njit(fastmath={"reassoc", "contract", "arcp", "nsz"}, error_model="numpy")
    def promoted(a):
        return a * 0.5

    @njit(fastmath={"reassoc", "contract", "arcp", "nsz"}, error_model="numpy")
    def typed(a):
        return a * np.float32(0.5)

    promoted(np.float32(1.0))
    typed(np.float32(1.0))
    assert double_arithmetic(promoted, "promoted")
    assert not double_arithmetic(typed, "typed")


def _float32_dispatchers():
    """(label, dispatcher, owner) of compiled float32 models: every elementwise op, the index ops,
    and the lecture nets' training steps with each optimizer."""
    out = []
    for group in range(group_count()):
        model, _ = op_group_models(group, "float32")
        _, _, feeds = op_group(group)
        model.forward(feeds)
        model.loss_and_gradients(feeds)
        out += [(f"op group {group}", model)]
    for which in sorted(INDEX_GRAPHS):
        feeds, model, _ = index_models(which, "float32")
        model.loss_and_gradients(feeds)
        out.append((which, model))
    for net, optimizer in (("regression_net", "Adam"), ("classifier_net", "Momentum"),
                           ("softmax_classifier", "SGD")):
        model, _ = lecture_models(net, optimizer, "float32")
        model.step(lecture_data(net))
        out.append((f"{net} {optimizer}", model))
    return [(f"{label} {name}", kernel, owners) for label, m in out for name, kernel, owners in kernels_of(m)]


def kernels_of(model):
    """(program, kernel dispatcher, (its module, the helpers module)) of every program that ran."""
    helpers = model.backend.helpers_module(model.backend.printer())
    out = []
    for (name, _), build in model.backend._builds.items():
        for kernel in {fn for fn, _, _ in build_calls(build)}:
            out.append((name, kernel, (kernel.py_func.__module__, helpers)))
    return out


def build_calls(build):
    return [(getattr(build.module, kernel), args, None) for kernel, args, _ in build.meta["calls"]]


def test_float32_kernels_do_no_float64_arithmetic():
    failures, floats = [], []
    for label, dispatcher, owners in _float32_dispatchers():
        found = double_arithmetic(dispatcher, *owners)
        if found:
            failures.append(f"{label}:\n{_report(found)}")
        floats.append(FLOAT_ARITHMETIC.search("\n".join(dispatcher.inspect_llvm().values())) is not None)
    assert not failures, "float64 arithmetic in float32 kernels:\n" + "\n\n".join(failures)
    assert sum(floats) > len(floats) // 2, "few kernels do float arithmetic: are these the kernels?"


def test_float64_kernels_are_seen_computing_in_double():
    model, _ = lecture_models("regression_net", "SGD", "float64")
    model.step(lecture_data("regression_net"))
    found = [double_arithmetic(kernel, *owners) for _, kernel, owners in kernels_of(model)]
    assert any(found)


# -- readable source -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def regression_model():
    model, _ = lecture_models("regression_net", "SGD", "float64")
    return model


def test_source_names_nodes_and_formulas(regression_model):
    source = regression_model.source
    for text in ("hidden/tanh", "hidden/W", "output/z", "[tanh: tanh(x)]", "mse/square",
                 "delta[hidden/z<-hidden/tanh]",
                 "def forward_serial(", "def gradients_serial(", "def step_serial(",
                 "hidden_W = params[", "hidden_tanh = work["):
        assert text in source, f"{text!r} missing from the generated source"
    assert source.startswith("# Generated by graphnn")


def test_every_kernel_is_commented_with_its_nodes(regression_model):
    source_comments = {line.strip() for line in regression_model.source.splitlines()
                       if line.strip().startswith("#")}
    for program in regression_model.programs.values():
        kprog = lower(program, "float64", contractions=CPUPrinter.contractions)
        for kernel in kprog.kernels:
            comments = kernel.comments if isinstance(kernel, Fused) else [kernel.comment]
            assert comments and all(comments), f"{program.name}: a kernel without a comment: {kernel}"
            for comment in comments:
                assert f"# {comment}" in source_comments, f"{program.name}: comment {comment!r} not printed"


def test_source_is_valid_python_that_imports_only_numpy_numba_math(regression_model):
    tree = ast.parse(regression_model.source)
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0])
    assert imported == {"math", "numpy", "numba"}
    assert "graphnn" not in re.sub(r"#.*", "", regression_model.source)


def shared_accumulations(source):
    """Lines that '+=' into an array element inside a prange loop whose index the element
    does not depend on: several threads would add into the same element (a race)."""
    races, loops = [], []          # loops: (indent, index, is prange)
    for line in source.splitlines():
        if not line.strip() or line.strip().startswith("#"):
            continue
        indent = len(line) - len(line.lstrip())
        while loops and loops[-1][0] >= indent:
            loops.pop()
        loop = re.match(r"\s*for (\w+) in (prange|range)\(", line)
        if loop:
            loops.append((indent, loop.group(1), loop.group(2) == "prange"))
            continue
        update = re.match(r"\s*\w+\[([^\]]*)\] \+= ", line)
        if update:
            indices = {i.strip() for i in update.group(1).split(",")}
            if any(parallel and index not in indices for _, index, parallel in loops):
                races.append(line.strip())
    return races


def test_the_race_check_can_fail():
    racy = "for i0 in prange(N):\n    for r0 in range(4):\n        out[r0] += x[i0, r0]\n"
    safe = "for i0 in prange(4):\n    for r0 in range(N):\n        out[i0] += x[r0, i0]\n"
    serial = "for r0 in range(N):\n    for i0 in range(4):\n        out[i0] += x[r0, i0]\n"
    assert shared_accumulations(racy) == ["out[r0] += x[i0, r0]"]
    assert shared_accumulations(safe) == shared_accumulations(serial) == []


def test_parallel_loops_never_accumulate_into_shared_elements():
    sources = [index_models(which, "float64")[1].backend.source_of(parallel=True) for which in sorted(INDEX_GRAPHS)]
    sources.append(lecture_models("softmax_classifier", "Momentum", "float64")[0].backend.source_of(parallel=True))
    for source in sources:
        assert "def gradients_parallel(" in source
        races = shared_accumulations(source)
        assert not races, "prange loops adding into shared elements:\n" + "\n".join(races)


# -- the exported module runs with numpy and numba only ------------------------------------------
EXPORT_CHILD = r"""
import importlib, json, sys
sys.modules["graphnn"] = None            # importing graphnn now fails, even if it is installed
sys.path.insert(0, sys.argv[1])
import numpy as np
module = importlib.import_module("exported_regression")
data = np.load(sys.argv[2])
meta = module._META["step"]
N = data["x"].shape[0]
dtype = np.dtype(data["dtype"].item())
named = {"params": {}, "state": {}, "hyper": {}}
for buffer, (array, (offset, _), (size, _), shape) in meta["slots"].items():
    if array in named:
        named[array][buffer] = (offset, size)
flat = {}
for array, slots in named.items():
    flat[array] = np.zeros(max([o + s for o, s in slots.values()] + [1]), dtype=dtype)
    for buffer, (offset, size) in slots.items():
        flat[array][offset:offset + size] = data[f"{array}:{buffer}"].ravel()
const, per_n = meta["work"]
work = np.zeros(const + per_n * N, dtype=dtype)
feeds = [np.ascontiguousarray(data[f], dtype=dtype) for f in meta["feeds"]]
module.step_serial(*feeds, flat["params"], flat["state"], flat["hyper"], work, N)
array, (c, n), (size, _), shape = meta["outputs"]["loss"]
loss = float({"work": work, **flat}[array][c + n * N])
params = {b: flat["params"][o:o + s].tolist() for b, (o, s) in named["params"].items()}
print(json.dumps({"loss": loss, "params": params, "graphnn_loaded": "graphnn" in sys.modules
                  and sys.modules["graphnn"] is not None}))
"""


def _buffer(name):
    return re.sub(r"\W+", "_", name).strip("_")


@pytest.mark.parametrize("optimizer,dtype", [("SGD", "float64"), ("Adam", "float32")])
def test_exported_module_runs_without_graphnn(tmp_path, optimizer, dtype):
    model, _ = lecture_models("regression_net", optimizer, dtype)
    export_dir = tmp_path / "export"
    export_dir.mkdir()
    path = model.export(export_dir / "exported_regression.py")
    assert path.read_text() == model.backend.source_of(export=True)
    feeds = lecture_data("regression_net")
    # every buffer by its name in the generated code; the step about to run is step 1
    arrays = {"x": feeds["x"], "y": feeds["y"], "dtype": np.array(dtype)}
    arrays.update({f"params:{_buffer(k)}": v for k, v in model.params.items()})
    arrays.update({f"state:{_buffer(k)}": v for k, v in model.state.items()})
    hyper = {**model.optimizer.hyper, "t": model.step_count + 1.0}
    arrays.update({f"hyper:optimizer_{k}": np.array(v) for k, v in hyper.items()})
    np.savez(tmp_path / "inputs.npz", **arrays)
    expected_loss = model.step(feeds)
    child = subprocess.run([PYTHON, "-I", "-c", EXPORT_CHILD, str(export_dir), str(tmp_path / "inputs.npz")],
                           capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert child.returncode == 0, child.stderr[-3000:]
    report = json.loads(child.stdout.strip().splitlines()[-1])
    assert report["graphnn_loaded"] is False
    assert_close(report["loss"], expected_loss, dtype, "exported step loss")
    assert set(report["params"]) == {_buffer(k) for k in model.params}
    for name, value in model.params.items():
        assert_close(np.array(report["params"][_buffer(name)]).reshape(value.shape), value, dtype,
                     f"{name} after the exported step")
