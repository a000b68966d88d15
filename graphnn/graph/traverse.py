"""Walking the DAG without recursion (deep nets must not hit the recursion limit)."""
from collections.abc import Mapping

from ..errors import ArgumentError, GraphCycleError, GraphMixError, ShapeError


def check_one_graph(nodes, graph, what):
    """Every node of ``nodes`` belongs to ``graph``, or a GraphMixError naming both graphs:
    a node of another graph would read that graph's parameters under this graph's names."""
    for n in nodes:
        if n.graph is not graph:
            raise GraphMixError(f"{what}: node {n.name!r} belongs to graph {n.graph.name!r}, not to graph "
                                f"{graph.name!r}; build it in one graph, or reuse a network in another "
                                f"with gn.as_layer")


def _nodes(outputs, what):
    """``outputs`` as a list of nodes, or an ArgumentError naming ``what``."""
    from .node import Node, describe
    if isinstance(outputs, (Node, str, bytes, Mapping)) or not hasattr(outputs, "__iter__"):
        hint = "; wrap one node in a list: [node]" if isinstance(outputs, Node) else ""
        raise ArgumentError(f"{what}: outputs {describe(outputs)} must be a list of graph nodes{hint}")
    outputs = list(outputs)
    for position, node in enumerate(outputs):
        if not isinstance(node, Node):
            raise ArgumentError(f"{what}: outputs[{position}] is {describe(node)}, not a graph node")
    return outputs


def topological(outputs):
    """Nodes reachable from ``outputs``, each after all of its inputs."""
    order, state = [], {}
    for root in _nodes(outputs, "topological"):
        if id(root) in state:
            continue
        stack = [(root, False)]
        while stack:
            node, expanded = stack.pop()
            if expanded:
                state[id(node)] = 2
                order.append(node)
                continue
            if state.get(id(node)) == 2:
                continue
            if state.get(id(node)) == 1:
                # pushed twice before it finished: only legal if it finished meanwhile
                continue
            state[id(node)] = 1
            stack.append((node, True))
            for parent in reversed(node.inputs):
                if state.get(id(parent)) != 2:
                    stack.append((parent, False))
    return order


def consumers(nodes):
    """node -> list of (consumer, input position) among ``nodes``."""
    users = {id(n): [] for n in nodes}
    for node in nodes:
        for pos, parent in enumerate(node.inputs):
            users.setdefault(id(parent), []).append((node, pos))
    return users


def depends_on(node, target):
    """True if ``target`` is ``node`` or one of its ancestors."""
    return any(n is target for n in topological([node]))


def substitute(outputs, mapping):
    """Rebuild ``outputs`` with nodes replaced as ``mapping`` {old: new} says.

    This is how graphs are merged (a network's inputs bound to another
    network's nodes). A replacement that depends on the node it replaces
    would make the merged graph cyclic and is refused.
    """
    from .node import Node, describe, format_shape
    outputs = _nodes(outputs, "substitute")
    if not isinstance(mapping, Mapping):
        raise ArgumentError(f"substitute: mapping {describe(mapping)} must be a dict {{old node: new node}}")
    for old, new in mapping.items():
        for role, node in (("key", old), ("value", new)):
            if not isinstance(node, Node):
                raise ArgumentError(f"substitute: mapping {role} {describe(node)} is not a graph node; "
                                    f"the mapping is {{old node: new node}}")
        if old.shape != new.shape:
            raise ShapeError(f"substitute: {old.name!r} has shape {format_shape(old.shape)} and its "
                             f"replacement {new.name!r} has {format_shape(new.shape)}; they must be equal")
        if depends_on(new, old):
            path = " -> ".join(n.name for n in _path(new, old))
            raise GraphCycleError(
                f"binding {old.name!r} to {new.name!r} makes a cycle: {new.name!r} "
                f"already depends on {old.name!r} ({path})")
    done = {id(k): v for k, v in mapping.items()}
    for node in topological(outputs):
        if id(node) in done:
            continue
        new_inputs = tuple(done.get(id(p), p) for p in node.inputs)
        if all(a is b for a, b in zip(new_inputs, node.inputs)):
            done[id(node)] = node
        else:
            done[id(node)] = Node(node.kind, node.op, new_inputs, node.attrs, node.shape,
                                  node.dtype, node.name, node.graph, node.scope, node.role)
    return [done[id(o)] for o in outputs]


def _path(start, target):
    """One chain of inputs from ``start`` down to ``target``."""
    parent = {id(start): None}
    stack = [start]
    while stack:
        node = stack.pop()
        if node is target:
            chain = [node]
            while parent[id(chain[-1])] is not None:
                chain.append(parent[id(chain[-1])])
            return chain
        for p in node.inputs:
            if id(p) not in parent:
                parent[id(p)] = node
                stack.append(p)
    return [start, target]
