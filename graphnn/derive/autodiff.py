"""The backward pass as a graph -> graph transform with explicit delta nodes.

For every node z^l the loss depends on (through a parameter or an input), it
adds a node delta(z^l) = sum over consumers k of delta(z^{l+1}_k) * dz^{l+1}_k/dz^l,
the lecture's recursion. Contributions of several consumers (fan-out) are
accumulated by one sum node. Delta nodes are ordinary nodes (role "delta"):
the reference executor evaluates them, the compiler lowers them, the renderer
draws them.
"""
import sympy as sp

from ..errors import ArgumentError, ShapeError
from ..graph.node import Node, check_node, describe, format_shape
from ..graph.traverse import topological
from ..ops.registry import ElementwiseOp, IndexOp
from ..ops import index_ops
from .vjp import elementwise_vjp_expr, index_vjp_body, tie_bodies


class Backward:
    """The derived backward graph of ``loss``.

    ``delta(node)`` is the delta node of a forward node; ``gradients`` maps
    parameter names to their gradient nodes (the deltas of the parameters).
    """

    def __init__(self, loss, forward, deltas, seed):
        self.loss = loss
        self.forward = forward
        self._deltas = deltas
        self.seed = seed
        self.gradients = {n.name: deltas[id(n)] for n in forward
                          if n.kind == "parameter" and id(n) in deltas}

    def delta(self, node):
        try:
            return self._deltas[id(node)]
        except KeyError:
            raise KeyError(f"node {node.name!r} has no delta: the loss {self.loss.name!r} "
                           f"does not depend on it through a parameter or input") from None

    def has_delta(self, node):
        return id(node) in self._deltas

    @property
    def delta_items(self):
        """(forward node, delta node) pairs, loss first."""
        return [(n, self._deltas[id(n)]) for n in reversed(self.forward) if id(n) in self._deltas]

    @property
    def nodes(self):
        """Every node of the backward graph (topological), forward nodes it reads included."""
        return topological([self.seed, *self.gradients.values(),
                            *(d for _, d in self.delta_items)])

    def __repr__(self):
        return f"<Backward of {self.loss.name}: {len(self.delta_items)} deltas, {len(self.gradients)} gradients>"

    def _repr_svg_(self):
        """Jupyter shows the backward graph as the delta-flow picture of its loss."""
        from ..render import render
        return render(self.loss, deltas=True).svg()


_names_in_use = {}  # per derive() call: delta names are deterministic, not graph-global
_tie_nodes = {}     # per derive() call: (id of a forward node, name) -> its auxiliary node


def _local_name(name):
    n = _names_in_use.get(name, 0)
    _names_in_use[name] = n + 1
    return name if n == 0 else f"{name}#{n + 1}"


def _delta_node(op, inputs, shape, forward, name, graph, attrs=None):
    return Node("op", op, inputs, {"delta_of": forward.name, **(attrs or {})}, shape, forward.dtype,
                _local_name(name), graph, forward.scope, role="delta")


def _elementwise_contribution(node, position, delta, graph, recompute=False):
    op = node.op
    made = elementwise_vjp_expr(op, position, node.attr_dict, recompute)
    if made is None:
        return None
    expr, symbols = made
    target = node.inputs[position]
    if expr == symbols[0] and target.shape == node.shape:
        return delta  # d body / d x == 1: the delta passes through unchanged
    arg = op.arg_names[position]
    vjp_op = ElementwiseOp(f"vjp_{op.name}_{arg}", arg_names=[s.name for s in symbols], expr=expr)
    by_symbol = dict(zip(op.symbols, node.inputs))
    by_symbol[sp.Symbol("out", real=True)] = node  # the kept forward value
    inputs = [delta] + [by_symbol[s] for s in symbols[1:]]
    out = _delta_node(vjp_op, inputs, node.shape, target, f"delta[{target.name}<-{node.name}]", graph)
    if target.shape != node.shape:
        out = _delta_node(index_ops.sum_to, [out], target.shape, target,
                          f"delta[{target.name}<-{node.name}]/sum_to", graph, {"shape": target.shape})
    return out


def _index_contribution(node, position, delta, graph, recompute=False):
    body = node.op.node_body(node)
    shapes = [p.shape for p in node.inputs]
    vjp_body = index_vjp_body(body, position, shapes)
    if vjp_body is None:
        return None
    target = node.inputs[position]
    by_name = dict(zip(body.arg_names, node.inputs))
    by_name["delta"], by_name["out"] = delta, node
    inputs = [by_name[a] if a in by_name else _tie_node(node, a, by_name, graph)
              for a in vjp_body.arg_names]
    vjp_op = IndexOp(f"vjp_{node.op.name}_{body.arg_names[position]}", body=vjp_body)
    return _delta_node(vjp_op, inputs, target.shape, target,
                       f"delta[{target.name}<-{node.name}]", graph)


def _tie_node(node, name, by_name, graph):
    """The auxiliary node ``name`` of :func:`~.vjp.tie_bodies` for a forward node with max
    terms (a tie count, a first maximum's position), made once per derive() call."""
    key = (id(node), name)
    if key not in _tie_nodes:
        body = tie_bodies(node.op.node_body(node))[name]
        inputs = [by_name[a] if a in by_name else _tie_node(node, a, by_name, graph)
                  for a in body.arg_names]
        op = IndexOp(f"{name}_{node.op.name}", body=body)
        _tie_nodes[key] = Node("op", op, inputs, {"ties_of": node.name}, node.shape, node.dtype,
                               _local_name(f"{name}[{node.name}]"), graph, node.scope, role="delta")
    return _tie_nodes[key]


def _accumulate(node, contributions, graph):
    if len(contributions) == 1:
        return contributions[0]
    names = [f"d{k}" for k in range(len(contributions))]
    op = ElementwiseOp(f"accumulate{len(names)}", arg_names=names,
                       expr=sp.Add(*(sp.Symbol(n, real=True) for n in names)))
    return _delta_node(op, contributions, node.shape, node, f"delta[{node.name}]", graph)


def check_loss(loss, what):
    """``loss`` must be a scalar graph node (an ArgumentError or ShapeError naming ``what``)."""
    check_node(loss, what, "loss")
    if loss.shape != ():
        raise ShapeError(f"{what}: loss {loss.name!r} has shape {format_shape(loss.shape)}; "
                         f"reduce it to a scalar first (gn.mean or gn.sum)")
    return loss


def derive(loss, wrt=None, recompute=False):
    """Build the backward graph of a scalar ``loss``.

    ``wrt`` limits which leaves get deltas (default: every parameter and input).
    ``recompute=False`` writes a derivative that contains the op's own body in
    terms of the op's output (tanh' = 1 - out**2): the forward value is kept;
    ``recompute=True`` recomputes it from the op's inputs.

    >>> import graphnn as gn
    >>> g = gn.Graph(); x = g.input("x", (None, 1))
    >>> loss = gn.mean(gn.tanh(x))
    >>> back = gn.derive(loss)
    >>> back.delta(x).op.name
    'vjp_tanh_x'
    """
    check_loss(loss, "derive")
    if wrt is not None:
        if isinstance(wrt, (Node, str)) or not hasattr(wrt, "__iter__"):
            raise ArgumentError(f"derive: wrt={describe(wrt)} must be a list of nodes (or None)")
        wrt = list(wrt)
        for position, node in enumerate(wrt):
            check_node(node, "derive", f"wrt[{position}]")
    graph = loss.graph
    _names_in_use.clear()
    _tie_nodes.clear()
    forward = topological([loss])
    leaves = None if wrt is None else {id(n) for n in wrt}
    needs = {}
    for n in forward:
        if n.kind in ("parameter", "input"):
            needs[id(n)] = leaves is None or id(n) in leaves
        else:
            needs[id(n)] = any(needs[id(p)] for p in n.inputs)
    seed = Node("constant", None, (), {"value": __import__("numpy").array(1.0)}, (), loss.dtype,
                _local_name(f"delta[{loss.name}]"), graph, loss.scope, role="delta")
    pending = {id(loss): [seed]}
    deltas = {}
    for node in reversed(forward):
        contributions = pending.pop(id(node), [])
        if not needs[id(node)] or not contributions:
            continue
        delta = _accumulate(node, contributions, graph)
        deltas[id(node)] = delta
        if node.kind != "op":
            continue
        make = _elementwise_contribution if node.op.kind == "elementwise" else _index_contribution
        for position, parent in enumerate(node.inputs):
            if not needs[id(parent)]:
                continue
            c = make(node, position, delta, graph, recompute)
            if c is not None:
                pending.setdefault(id(parent), []).append(c)
    return Backward(loss, forward, deltas, seed)
