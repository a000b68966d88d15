"""Lowering to the kernel IR: matrix products become Contract kernels, elementwise chains fuse,
values stay in registers unless something outside their loop reads them, updates are in place.

These tests lower programs without compiling anything (the reference target builds the same
programs). That the in-place updates compute the right parameters is checked against the
reference executor in test_compile_cpu.test_lecture_net_matches_reference.
"""
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
