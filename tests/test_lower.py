"""Lowering to the kernel IR: matrix products become Contract kernels, elementwise chains fuse,
values stay in registers unless something outside their loop reads them, updates are in place.

These tests lower programs without compiling anything (the reference target builds the same
programs). That the in-place updates compute the right parameters is checked against the
reference executor in test_compile_cpu.test_lecture_net_matches_reference.
"""
import numpy as np
import pytest
import sympy as sp

import graphnn as gn
from compile_support import lecture_net, make_optimizer
from graphnn.lower import Contract, Fused, Reduce, describe, lower

MATRIX_PRODUCTS = {"linear", "matmul", "vjp_linear_x", "vjp_linear_W"}


@pytest.fixture(scope="module")
def regression_programs():
    net = gn.lecture.regression_net()
    model = gn.compile(net.graph, net.loss, target="reference",
                       optimizer=gn.Momentum(lr=0.1, nesterov=True))
    return model.programs


@pytest.fixture(scope="module")
def lowered(regression_programs):
    return {name: lower(program, "float32") for name, program in regression_programs.items()}


def _kinds(kprog, kind):
    return [k for k in kprog.kernels if isinstance(k, kind)]


def _loads(kernel):
    if isinstance(kernel, Contract):
        return {kernel.a, kernel.b}
    exprs = [e for _, e in kernel.assigns] if isinstance(kernel, Fused) else [t.expr for t in kernel.terms]
    return {str(a.base.label) for e in exprs for a in sp.sympify(e).atoms(sp.Indexed)}


def _stores(kernel):
    if isinstance(kernel, Fused):
        return {b for b, _ in kernel.stores}
    return {kernel.out}


def test_matrix_products_become_contract_kernels(regression_programs, lowered):
    for name, program in regression_programs.items():
        products = [n for n in program.nodes if n.kind == "op" and n.op_name in MATRIX_PRODUCTS]
        contracts = _kinds(lowered[name], Contract)
        assert len(contracts) == len(products), f"{name}:\n{describe(lowered[name])}"
        for node in products:
            assert any(c.comment.startswith(node.name + " = ") for c in contracts), f"{name}: {node.name}"
    assert [len(_kinds(lowered[p], Contract)) for p in ("forward", "gradients", "step")] == [2, 5, 5]
    assert "contract hidden_z_product = x @ hidden_W" in describe(lowered["forward"])
    assert "contract delta_hidden_tanh_output_z = delta_mse_sub_mse_square @ output_W^T" in \
        describe(lowered["gradients"])


def test_elementwise_chains_fuse_into_single_loops(regression_programs, lowered):
    for name, program in regression_programs.items():
        elementwise = {n.name for n in program.nodes if n.kind == "op" and n.op.kind == "elementwise"}
        fused = _kinds(lowered[name], Fused)
        in_loops = [c.split(" = ")[0] for k in fused for c in k.comments]
        assert elementwise <= set(in_loops), f"{name}: elementwise nodes outside fused loops"
        # pointwise work (elementwise nodes and the bias epilogues of products) shares loops
        assert len(fused) < len(in_loops), f"{name}: {len(fused)} loops for {len(in_loops)} nodes"
    comments = ["\n".join(k.comments) for k in _kinds(lowered["gradients"], Fused)]
    # bias add + tanh in one loop; the loss chain and its derived deltas in one loop
    assert any("hidden/z = linear" in c and "hidden/tanh = tanh" in c for c in comments), comments
    loss_loop = [c for c in comments if "mse/sub = sub" in c]
    assert len(loss_loop) == 1
    for part in ("mse/square = square", "delta[mse/square<-mse/mse]", "delta[mse/sub<-mse/square]"):
        assert part in loss_loop[0]


def test_values_get_buffers_only_when_read_outside_their_loop(lowered):
    # the pre-activation lives in a register; the backward pass reads a stored forward value
    assert "hidden_z" not in lowered["forward"].buffers
    for kprog in lowered.values():
        assert not any(b.startswith("mse_sub") for b in kprog.buffers), \
            f"{kprog.name}: mse/sub is used only inside its loop but got a buffer"
    tanh_delta = next(k for k in _kinds(lowered["gradients"], Fused)
                      if "delta_hidden_z_hidden_tanh" in _stores(k))
    assert _loads(tanh_delta) & {"hidden_tanh", "hidden_z"}, "tanh' recomputes its input"


def _programs_of(net_name, optimizer):
    net = lecture_net(net_name)
    model = gn.compile(net.graph, net.loss, target="reference", optimizer=make_optimizer(optimizer))
    return model.programs


@pytest.mark.parametrize("net_name,optimizer", [("regression_net", "Momentum"), ("classifier_net", "Adam"),
                                                ("softmax_classifier", "SGD"), ("mlp", "Adam")])
def test_every_work_buffer_is_written_before_it_is_read(net_name, optimizer):
    for program in _programs_of(net_name, optimizer).values():
        kprog = lower(program, "float64")
        written = set()
        for position, kernel in enumerate(kprog.kernels):
            for name in _loads(kernel):
                if kprog.buffers[name].role == "work":
                    assert name in written, (f"{net_name} {program.name}: kernel {position} reads {name} "
                                             f"before any kernel writes it\n{describe(kprog)}")
            written |= _stores(kernel)
        for output, buffer in kprog.outputs.items():
            role = kprog.buffers[buffer].role
            assert buffer in written or role != "work", f"{program.name}: output {output} never written"


def test_reductions_are_reduce_kernels(lowered):
    reduces = {k.out for k in _kinds(lowered["gradients"], Reduce)}
    assert reduces == {"mse_mse", "delta_hidden_b_hidden_z", "delta_output_b_output_z"}


def test_optimizer_updates_write_parameters_and_slots_in_place(lowered):
    kprog = lowered["step"]
    assert set(kprog.updates) == {f"{p}{s}" for p in ("hidden/W", "hidden/b", "output/W", "output/b")
                                  for s in ("", "::v")}
    for target, buffer in kprog.updates.items():
        role = kprog.buffers[buffer].role
        assert role == ("state" if "::" in target else "param"), f"{target} -> {buffer} ({role})"
        writers = [i for i, k in enumerate(kprog.kernels) if buffer in _stores(k)]
        assert len(writers) == 1, f"{buffer} written by kernels {writers}"
        readers = [i for i, k in enumerate(kprog.kernels) if buffer in _loads(k) and i != writers[0]]
        assert all(i < writers[0] for i in readers), \
            f"{buffer} is read by kernel(s) {readers} after its update (kernel {writers[0]})"
    # the momentum slot and the parameter it moves are updated in one loop
    for param in ("hidden_W", "output_b"):
        loop = next(k for k in _kinds(kprog, Fused) if param in _stores(k))
        assert _stores(loop) == {param, f"{param}_v"}


def test_the_ir_names_no_target(lowered):
    # the CUDA printer reads the same IR: nothing in it may be CPU (or CUDA) code
    for kprog in lowered.values():
        text = repr(kprog)
        for word in ("prange", "np.", "math.", "cuda", "numba", "njit", "_F("):
            assert word not in text, f"{kprog.name}: {word!r} in the kernel IR"
        for kernel in kprog.kernels:
            if isinstance(kernel, Fused):
                assert all(isinstance(e, sp.Basic) for _, e in kernel.assigns)


# -- the passes one by one -----------------------------------------------------------------------
from graphnn.lower import PASSES  # noqa: E402
from graphnn.lower.canonical import canonical_kernel  # noqa: E402
from graphnn.lower.ir import Buffer, KernelProgram, ReduceOrder, Term  # noqa: E402
from graphnn.lower.passes import GroupKind, Lowering, Names  # noqa: E402
from graphnn.lower.target import flatten_loops, order_batch_sums, split_batch_reductions  # noqa: E402

N = sp.Symbol("N", integer=True, positive=True)
I0, I1, R0 = (sp.Symbol(n, integer=True) for n in ("i0", "i1", "r0"))


def _state(program, upto):
    """The lowering state after the passes up to and including ``upto``."""
    s = Lowering(program, "float32", Names())
    for run in PASSES:
        run(s)
        if run.__name__ == upto:
            return s
    raise AssertionError(upto)


def test_the_passes_are_named_in_order_and_documented():
    assert [p.__name__ for p in PASSES] == ["plan_nodes", "split_epilogues", "fuse", "assign_buffers",
                                            "emit_kernels", "eliminate_common_subexpressions"]
    assert all(p.__doc__ for p in PASSES)


def test_plan_nodes_classifies_each_op(regression_programs):
    s = _state(regression_programs["forward"], "plan_nodes")
    kinds = {n.name: s.plans[id(n)].kind for n in s.nodes if n.kind == "op"}
    assert kinds == {"hidden/z": "contract", "hidden/tanh": "pointwise", "output/z": "contract"}
    assert {b.role for b in s.buffers.values()} == {"feed", "param"}


def test_split_epilogues_gives_products_a_scratch_buffer(regression_programs):
    s = _state(regression_programs["forward"], "split_epilogues")
    z = next(n for n in s.nodes if n.name == "hidden/z")
    assert s.plans[id(z)].kind == "pointwise" and s.plans[id(z)].product == "hidden_z_product"
    assert s.buffers["hidden_z_product"].role == "work"


def test_fuse_puts_the_bias_and_its_activation_in_one_loop(regression_programs):
    s = _state(regression_programs["forward"], "fuse")
    shape = [(g.kind, [n.name for n in g.nodes]) for g in s.groups]
    assert shape == [(GroupKind.PRODUCT, ["hidden/z"]), (GroupKind.LOOP, ["hidden/z", "hidden/tanh"]),
                     (GroupKind.PRODUCT, ["output/z"]), (GroupKind.LOOP, ["output/z"])]


def test_assign_buffers_keeps_loop_local_values_in_registers(regression_programs):
    s = _state(regression_programs["forward"], "assign_buffers")
    named = {n.name for n in s.nodes if id(n) in s.buffer_of}
    assert "hidden/tanh" in named and "output/z" in named     # read by a product / an output
    assert "hidden/z" not in named                            # read only inside its loop


def test_common_subexpressions_are_computed_once():
    @gn.elementwise
    def exp_twice(x):
        return x * sp.exp(x) + sp.exp(x)       # exp(x) appears twice in the body

    g = gn.Graph("cse")
    x = g.input("x", (None, 3))
    program = gn.compile(g, outputs=g.output("out", exp_twice(x)), target="reference").programs["forward"]
    before = _state(program, "emit_kernels").kernels[0]
    assert sum(str(e).count("exp(") for _, e in before.assigns) == 2
    after = _state(program, "eliminate_common_subexpressions").kernels[0]
    assert sum(str(e).count("exp(") for _, e in after.assigns) == 1
    assert len(after.assigns) == len(before.assigns) + 1      # one temporary holds exp(x)


def _fused(shape, assigns, stores, indices):
    from graphnn.lower.ir import Fused
    return Fused(shape, assigns, stores, ["node"], indices)


def test_flatten_loops_only_where_every_access_is_the_loop_index():
    x, y, b = (sp.IndexedBase(n) for n in ("x", "y", "b"))
    v = sp.Symbol("v", real=True)
    buffers = {n: Buffer(n, shape, "work") for n, shape in (("x", (None, 4)), ("y", (None, 4)), ("b", (4,)))}
    plain = _fused((None, 4), [(v, 2 * x[I0, I1])], [("y", v)], (I0, I1))
    broadcast = _fused((None, 4), [(v, x[I0, I1] + b[I1])], [("y", v)], (I0, I1))
    kprog = KernelProgram("p", buffers, [plain, broadcast], {}, {})
    flatten_loops(kprog)
    assert plain.flat == ("x", "y") and broadcast.flat is None


def _batch_sum(expr, out_shape=(4,)):
    return Reduce("out", (I0,), out_shape, [Term(expr, ((R0, None),))], "node")


def test_batch_sums_go_rows_outer_on_the_cpu_and_split_on_cuda():
    d = sp.IndexedBase("d")
    bias_grad = _batch_sum(d[R0, I0])
    transposed = _batch_sum(d[I0, R0])          # r does not lead the access: stays a gather
    for k in (bias_grad, transposed):
        assert k.order is ReduceOrder.GATHER
    cpu = KernelProgram("p", {}, [bias_grad, transposed], {}, {})
    order_batch_sums(cpu)
    assert bias_grad.order is ReduceOrder.ROWS_OUTER and transposed.order is ReduceOrder.GATHER
    gpu_sum = _batch_sum(d[R0, I0])
    split_batch_reductions(KernelProgram("p", {}, [gpu_sum], {}, {}))
    assert gpu_sum.order is ReduceOrder.SPLIT_ATOMIC


def test_canonical_kernels_of_two_layers_are_identical():
    g = gn.Graph("two")
    x = g.input("x", (None, 3))
    h = gn.dense(gn.dense(x, 3, activation="tanh", name="first"), 3, activation="tanh", name="second")
    program = gn.compile(g, outputs=g.output("h", h), target="reference").programs["forward"]
    loops = [k for k in lower(program).kernels if isinstance(k, Fused)]
    assert len(loops) == 2 and loops[0].stores != loops[1].stores
    (a, args_a), (b, args_b) = canonical_kernel(loops[0]), canonical_kernel(loops[1])
    assert a == b, "the same layer kind gave two canonical kernels"
    assert args_a != args_b and not a.comments
    assert {str(acc.base.label) for _, e in a.assigns for acc in e.atoms(sp.Indexed)} <= {"a0", "a1", "a2"}


def test_buffer_names_avoid_the_printers_reserved_names(tmp_path):
    g = gn.Graph("reserved")
    x, y = g.input("x", (None, 2)), g.input("y", (None, 2))
    W = g.parameter("fast_exp", (2, 2))
    b = g.parameter("fast_erf", (2,))
    out = gn.gelu(gn.linear(x, W, b, name="sigmoid"), name="_from_bits")
    loss = gn.mse(out, y)
    feeds = {"x": np.linspace(-1, 1, 8).reshape(4, 2), "y": np.ones((4, 2))}
    compiled = gn.compile(g, loss, dtype="float32", cache_dir=tmp_path, wait=True)
    reference = gn.compile(g, loss, dtype="float32", target="reference")
    got, expected = compiled.loss_and_gradients(feeds), reference.loss_and_gradients(feeds)
    assert abs(got[0] - expected[0]) < 1e-5
    for name in expected[1]:
        np.testing.assert_allclose(got[1][name], expected[1][name], rtol=1e-4, atol=1e-6)
