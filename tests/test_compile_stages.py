"""How a CPU model gets compiled: shared kernels, lazy programs, the non-blocking start, the driver."""
import numpy as np

import graphnn as gn
from compile_support import assert_close, compile_reference, lecture_data, lecture_net, make_optimizer


def _mlp(name, prefix, hidden_layers, width=24):  # wider than a row pass takes
    g = gn.Graph(name, seed=len(name))
    x, y = g.input("x", (None, 3)), g.input("y", (None, 2))
    h = x
    for k in range(hidden_layers):
        h = gn.dense(h, width, activation="tanh", name=f"{prefix}{k}")
    out = gn.dense(h, 2, name=f"{prefix}_out")
    g.output("out", out)
    return g, gn.mse(out, y)


def _feeds(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 3)), "y": rng.standard_normal((n, 2))}


def _kernel_files(folder):
    return set(folder.glob("graphnn_k_*.py"))


def test_a_graph_of_known_kernel_kinds_compiles_no_new_kernel(tmp_path):
    first = gn.compile(*_mlp("first", "layer", 2), optimizer=gn.SGD(0.1), dtype="float64",
                       cache_dir=tmp_path, wait=True)
    first.step(_feeds())
    kernels = _kernel_files(tmp_path)
    assert kernels and first.backend.build("step").new_kernels == len(kernels)
    # another graph: other names, the same layer kinds and widths
    graph, loss = _mlp("second", "block", 2)
    second = gn.compile(graph, loss, optimizer=gn.SGD(0.1), dtype="float64", cache_dir=tmp_path, wait=True)
    reference = gn.compile(graph, loss, optimizer=gn.SGD(0.1), dtype="float64", target="reference")
    for step in range(3):
        feeds = _feeds(seed=step)
        assert_close(second.step(feeds), reference.step(feeds), "float64", f"loss of step {step}")
    assert _kernel_files(tmp_path) == kernels, "a graph of known kernel kinds added kernels to the cache"
    assert second.backend.build("step").new_kernels == 0
    for name, value in reference.get_params().items():
        assert_close(second.get_params()[name], value, "float64", name)
    # twice as deep: its middle layers are kinds the first graph compiled (a fused loop at the
    # junction of two layers may be new)
    third = gn.compile(*_mlp("third", "block", 4), optimizer=gn.SGD(0.1), dtype="float64",
                       cache_dir=tmp_path, wait=True)
    third.step(_feeds())
    build = third.backend.build("step")
    assert build.new_kernels <= 2 < len({kernel for kernel, _, _ in build.meta["calls"]})


def test_layers_of_one_graph_share_their_kernels(tmp_path):
    model = gn.compile(*_mlp("deep", "layer", 6), dtype="float64", cache_dir=tmp_path, wait=True)
    model.forward(_feeds())
    calls = model.backend.build("forward").meta["calls"]
    assert len(calls) > len({kernel for kernel, _, _ in calls}) + 8, "six identical layers should share kernels"


def test_only_the_programs_that_run_are_compiled(tmp_path):
    model = gn.compile(*_mlp("lazy", "layer", 1), dtype="float64", cache_dir=tmp_path, wait=True)
    assert model.compile_status() == {}
    assert not list(tmp_path.glob("graphnn_*.py")), "gn.compile wrote modules before any call"
    model.forward({"x": _feeds()["x"]})
    assert set(model.compile_status()) == {"forward"}
    model.loss_and_gradients(_feeds())
    assert set(model.compile_status()) == {"forward", "gradients"}


def test_without_waiting_the_first_calls_run_at_once_and_match_the_reference(tmp_path):
    net = lecture_net("regression_net")
    model = gn.compile(net.graph, net.loss, optimizer=make_optimizer("Adam"), dtype="float64",
                       cache_dir=tmp_path, wait=False)
    reference = compile_reference(net.graph, net.loss, optimizer=make_optimizer("Adam"), dtype="float64")
    stages = []
    for step in range(4):
        feeds = lecture_data("regression_net", seed=step)
        assert_close(model.step(feeds), reference.step(feeds), "float64", f"loss of step {step}")
        stages.append(model.compile_status()["step"])
        if step == 1:
            model.wait_compiled()        # the next steps run compiled kernels
    assert stages[0] == "reference", "nothing was cached, yet the first step did not run on the reference"
    assert stages[-1] in ("kernels", "compiled")
    for name, value in reference.get_params().items():
        assert_close(model.get_params()[name], value, "float64", name)
    for name, value in reference.state.items():
        assert_close(model.state[name], value, "float64", name)


def test_the_compiled_driver_gives_the_kernel_loop_s_results_bit_for_bit(tmp_path):
    net = lecture_net("classifier_net")
    models = [gn.compile(net.graph, net.loss, optimizer=make_optimizer("Momentum"), dtype="float32",
                         cache_dir=tmp_path, wait=True) for _ in range(2)]
    looped, driven = models
    feeds = lecture_data("classifier_net")
    for model in models:
        model.step(feeds)
    driven.backend.build("step").compile_driver(background=False)
    assert driven.compile_status()["step"] == "compiled"
    for _ in range(3):
        looped.backend.build("step").stage = "kernels"   # keep this one on the loop
        assert looped.step(feeds) == driven.step(feeds)
    for name in looped.params:
        np.testing.assert_array_equal(looped.params[name], driven.params[name])


def test_a_node_name_cannot_inject_code(tmp_path):
    marker = tmp_path / "marker.txt"
    g = gn.Graph("hostile")
    x = g.input("x", (None, 2))
    evil = f'a\nimport os; open({str(marker)!r}, "w").write("x")\ndef _f():\n    pass #'
    out = g.output("out", gn.tanh(gn.dense(x, 2, name="d"), name=evil))
    model = gn.compile(g, outputs=out, dtype="float64", cache_dir=tmp_path, wait=True)
    got = model.predict({"x": np.ones((3, 2))})
    reference = gn.compile(g, outputs=out, dtype="float64", target="reference")
    assert_close(got, reference.predict({"x": np.ones((3, 2))}), "float64", "forward")
    assert not marker.exists(), "a node name ran as code"
    assert "\\nimport os" in model.source


def test_a_background_compile_leaves_the_main_thread_s_stdout_alone(tmp_path):
    import contextlib
    import io
    net = lecture_net("softmax_classifier")
    model = gn.compile(net.graph, net.loss, dtype="float64", cache_dir=tmp_path, wait=False)
    model.step(lecture_data("softmax_classifier"))       # starts compiling in the background
    build = model.backend.build("step")
    lost, rounds = 0, 0
    while not build.done.is_set() or rounds < 50:
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            print("line", rounds)
        lost += buffer.getvalue() != f"line {rounds}\n"
        rounds += 1
    model.wait_compiled()
    assert rounds > 50 and lost == 0, f"{lost} of {rounds} redirected prints were lost"


def test_a_kernel_s_cache_name_changes_with_the_helpers_it_imports():
    from graphnn.codegen.cpu import CPUPrinter
    from graphnn.lower import lower
    net = lecture_net("regression_net")
    program = gn.compile(net.graph, net.loss, target="reference").programs["forward"]
    kernel = next(k for k in lower(program).kernels if "tanh" in str(getattr(k, "assigns", "")))
    names = {CPUPrinter("float32", helpers_module=h).kernel(kernel)[0].module for h in ("graphnn_h_a", "graphnn_h_b")}
    assert len(names) == 2, "a kernel cached against old helpers would be reused with new ones"


def test_a_redeclared_index_op_is_compiled_again(tmp_path):
    feeds = {"x": np.array([[1.0, 2.0, 3.0]])}
    results = []
    for square in (False, True):
        @gn.index_op
        def rowop(x):
            n, i = gn.indices("n i")
            return (n,), gn.IndexSum(x[n, i] * x[n, i] if square else x[n, i], i)

        g = gn.Graph("redeclared")
        out = g.output("out", rowop(g.input("x", (None, 3))))
        compiled = gn.compile(g, outputs=out, dtype="float64", cache_dir=tmp_path, wait=True)
        reference = gn.compile(g, outputs=out, dtype="float64", target="reference")
        results.append(compiled.predict(feeds).tolist())
        assert results[-1] == reference.predict(feeds).tolist()
    assert results == [[6.0], [14.0]]
