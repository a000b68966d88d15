"""Programs: the target-neutral description of what a compiled model runs.

A :class:`Program` is a list of nodes in topological order with named
outputs (returned arrays) and updates (buffers written in place: parameters
and optimizer slots). Its leaves are fed inputs, parameters, optimizer slots
and scalar hyper-parameters -- all passed as arguments, never baked in.

A model has up to three programs: ``forward`` (the outputs), ``gradients``
(loss and parameter gradients) and ``step`` (forward + backward + update).
"""
from dataclasses import dataclass, field

from ..derive import derive
from ..graph.node import Node
from ..graph.traverse import topological


@dataclass
class Program:
    name: str
    outputs: dict                 # output name -> node
    updates: dict = field(default_factory=dict)   # buffer name -> node
    nodes: list = field(default_factory=list)

    def __post_init__(self):
        self.nodes = topological([*self.outputs.values(), *self.updates.values()])

    @property
    def inputs(self):
        return [n for n in self.nodes if n.kind == "input"]

    @property
    def parameters(self):
        return [n for n in self.nodes if n.kind == "parameter"]


def program_signature(program):
    """What a program computes, for cache keys (delta names excluded)."""
    from ..graph.text import node_line
    rows = []
    for n in program.nodes:
        # n.key hashes each op's declaration (its body for this node), so a redeclared op with
        # the same name does not find the old compiled program
        label = node_line(n) if n.role in ("forward", "optimizer") else n.op_name
        rows.append((n.key, label))
    # which node each output and update is: two graphs of the same nodes may name them differently
    position = {id(n): k for k, n in enumerate(program.nodes)}
    return (rows, sorted((k, position[id(n)]) for k, n in program.outputs.items()),
            sorted((k, position[id(n)]) for k, n in program.updates.items()))


def slot_name(param, slot):
    return f"{param}::{slot}"


def hyper_name(name):
    return f"optimizer::{name}"


def _leaf(graph, name, shape, feeds):
    # optimizer slots ("state") and hyper-parameters ("hyper") are inputs the model feeds
    # itself; they are not registered in graph.inputs so the user never sees them
    return Node("input", None, (), {"feeds": feeds}, shape, None, name, graph, "optimizer", role="optimizer")


def build_programs(graph, loss, outputs, optimizer, trainable):
    """The forward, gradients and step programs of a model."""
    programs = {"forward": Program("forward", dict(outputs))}
    if loss is None:
        return programs
    params = {n.name: n for n in topological([loss]) if n.kind == "parameter"}
    wrt = [params[name] for name in trainable if name in params]
    backward = derive(loss, wrt=wrt)
    grads = {name: backward.gradients[name] for name in trainable if name in backward.gradients}
    programs["gradients"] = Program("gradients", {"loss": loss, **{f"grad::{k}": v for k, v in grads.items()}})
    if optimizer is None:
        return programs
    updates = _optimizer_updates(graph, optimizer, params, grads)
    updates.update(_buffer_updates(graph, params, trainable))
    programs["step"] = Program("step", {"loss": loss}, updates)
    programs["step"].backward = backward
    return programs


def _optimizer_updates(graph, optimizer, params, grads):
    """{buffer name: update node}: the optimizer's rules applied to each {parameter name:
    gradient node} of ``grads``."""
    hyper = {h: _leaf(graph, hyper_name(h), (), "hyper") for h in (*optimizer.hyper, "t")}
    updates = {}
    rule_ops = optimizer.ops()
    for name, grad in grads.items():
        param = params[name]
        leaves = {"p": param, "g": grad, **{h: hyper[h] for h in hyper}}
        for slot in optimizer.slots:
            leaves[slot] = _leaf(graph, slot_name(name, slot), param.shape, "state")
        for buffer, op in rule_ops.items():
            target = name if buffer == "param" else slot_name(name, buffer)
            node = Node("op", op, [leaves[a] for a in op.arg_names], {"update_of": target, "parameter": name},
                        param.shape, param.dtype, f"update[{target}]", graph, param.scope, role="update")
            updates[target] = node
    return updates


def build_apply(graph, optimizer, params, trainable):
    """The ``apply`` program: the optimizer update of the step program with the gradients as
    inputs (``grad::<parameter>``, fed like any input) instead of computed from a batch.

    Data-parallel training (:mod:`graphnn.distributed`) runs the gradients program on each
    process's rows, sums the gradients across processes, then this program. It is built on
    first use, not by :func:`build_programs`: other models would otherwise print and export it.
    ``params``: {name: parameter node}. Buffers written by the step (``graph.update``, e.g.
    BatchNorm's running statistics) need the forward pass and are not part of it."""
    grads = {name: Node("input", None, (), {}, params[name].shape, params[name].dtype, f"grad::{name}",
                        graph, params[name].scope, role="gradient")
             for name in trainable if name in params}
    return Program("apply", {}, _optimizer_updates(graph, optimizer, params, grads))


def _buffer_updates(graph, params, trainable):
    """The step's writes of the buffers the loss reads (``graph.update``): the new value through
    an identity node with the role "update", as an optimizer rule writes a parameter, so the
    lowering orders it after every read of the old value."""
    from ..errors import ArgumentError
    from ..ops.elementwise import identity
    updates = {}
    for name, value in getattr(graph, "updates", {}).items():
        if name not in params:
            continue
        if name in trainable:
            raise ArgumentError(f"buffer {name!r} is trainable, but training steps write it with its "
                               f"update; set graph.trainable[{name!r}] = False")
        buffer = params[name]
        updates[name] = Node("op", identity, [value], {"update_of": name, "parameter": name},
                             buffer.shape, buffer.dtype, f"update[{name}]", graph, buffer.scope, role="update")
    return updates
