"""A network used as a layer of another network (the lecture's recursion).

:func:`as_layer` wraps a graph (or a trained :class:`~graphnn.Model`) so that
calling it on nodes of another graph rebuilds the wrapped network there,
inside a scope named after the layer -- renderers draw it as one cluster.
What happens to its parameters is a choice:

* ``"share"``  every call of this layer in a host graph uses one set of
  parameters (weight tying, siamese nets), trained with the host;
* ``"copy"``   every call gets its own parameters, starting from the wrapped values;
* ``"freeze"`` one shared set that the optimizer never updates (a
  pre-trained feature extractor): ``graph.trainable`` is False for them.

>>> import numpy as np
>>> import graphnn as gn
>>> inner = gn.lecture.regression_net().graph            # x (None, 1) -> y_hat (None, 1)
>>> features = gn.as_layer(inner, params="freeze", name="pretrained")
>>> host = gn.Graph("host"); x = host.input("x", (None, 1))
>>> out = gn.dense(features(x), 3, name="head")
>>> sorted(n for n, t in host.trainable.items() if not t)
['pretrained/hidden/W', 'pretrained/hidden/b', 'pretrained/output/W', 'pretrained/output/b']
"""
import contextlib

import numpy as np

from ..errors import GraphnnError
from ..graph.node import Node
from ..graph.traverse import topological

MODES = ("share", "copy", "freeze")


def _relative(node):
    """A node's name inside its own scope."""
    if node.scope and node.name.startswith(node.scope + "/"):
        return node.name[len(node.scope) + 1:]
    return node.name.split("/")[-1]


class GraphLayer:
    """A graph wrapped as a layer; build with :func:`as_layer`."""

    def __init__(self, graph, outputs, values, params="share", name=None):
        if params not in MODES:
            raise GraphnnError(f"as_layer: params must be one of {MODES}, got {params!r}")
        self.graph, self.mode = graph, params
        self.name = name or graph.name
        self.outputs = outputs                   # {name: node of the wrapped graph}
        self.values = values                     # {parameter name: float64 array}
        nodes = topological(list(outputs.values()))
        used = {n.name for n in nodes if n.kind == "input" and n.role != "random"}
        self.inputs = [n for name, n in graph.inputs.items() if name in used]
        self._nodes = nodes
        self._shared = {}                        # id(host graph) -> {wrapped param name: host node}

    def __call__(self, *args, **kwargs):
        """Rebuild the network on ``args`` (in the order of ``self.inputs``) or on
        keyword arguments named after its inputs. Returns the output node, or a
        dict of nodes when the network has several outputs."""
        bound = self._bind(args, kwargs)
        host = next(iter(bound.values())).graph
        shared = self._shared.setdefault(id(host), {}) if self.mode != "copy" else {}
        made = {id(n): bound[n.name] for n in self.inputs}
        with host.scope(host.unique_name(self.name).split("/")[-1]) as path:
            for node in self._nodes:
                if id(node) not in made:
                    made[id(node)] = self._rebuild(node, host, made, shared)
            self._rebuild_updates(host, made, shared)
            host.composite_scopes.update(f"{path}/{p}" for p in self.graph.composite_scopes)
        out = {k: made[id(n)] for k, n in self.outputs.items()}
        return next(iter(out.values())) if len(out) == 1 else out

    def _rebuild_updates(self, host, made, shared):
        """The updates of the wrapped buffers this call uses (BatchNorm's running statistics),
        unless frozen; a buffer shared with an earlier call keeps that call's update."""
        if self.mode == "freeze":
            return
        for node in self._nodes:
            value = self.graph.updates.get(node.name) if node.kind == "parameter" else None
            if value is None or made[id(node)].name in host.updates:
                continue
            for part in topological([value]):
                if id(part) not in made:
                    made[id(part)] = self._rebuild(part, host, made, shared)
            host.update(made[id(node)], made[id(value)])

    def _bind(self, args, kwargs):
        names = [n.name for n in self.inputs]
        if len(args) > len(names):
            raise GraphnnError(f"layer {self.name!r} takes {len(names)} input(s) {names}, got {len(args)}")
        bound = dict(zip(names, args))
        for k, v in kwargs.items():
            if k not in names or k in bound:
                raise GraphnnError(f"layer {self.name!r}: unexpected or repeated input {k!r}; it takes {names}")
            bound[k] = v
        missing = [n for n in names if n not in bound]
        if missing:
            raise GraphnnError(f"layer {self.name!r}: missing input(s) {missing}")
        for node in self.inputs:
            given = bound[node.name]
            if not isinstance(given, Node):
                raise GraphnnError(f"layer {self.name!r}: input {node.name!r} must be a node")
            if len(given.shape) != len(node.shape) or any(
                    a is not None and b is not None and a != b for a, b in zip(given.shape, node.shape)):
                raise GraphnnError(f"layer {self.name!r}: input {node.name!r} expects shape {node.shape}, "
                                   f"got {given.name!r} with shape {given.shape}")
        return bound

    def _rebuild(self, node, host, made, shared):
        with contextlib.ExitStack() as stack:
            for part in filter(None, node.scope.split("/")):
                stack.enter_context(host.scope(part))
            base = _relative(node)
            if node.kind == "parameter":
                if node.name in shared:
                    return shared[node.name]
                trainable = self.mode != "freeze" and self.graph.trainable.get(node.name, True)
                param = host.parameter(base, node.shape, value=np.array(self.values[node.name]),
                                       trainable=trainable, dtype=node.dtype)
                shared[node.name] = param
                return param
            if node.kind == "constant":
                return host.constant(node.attr("value"), name=base)
            if node.kind == "input":  # a random input (dropout mask, noise)
                attrs = node.attr_dict
                distribution, eval_value = attrs.pop("distribution"), attrs.pop("eval")
                return host.random(base, node.shape, distribution, eval=eval_value,
                                   dtype=node.dtype, **attrs)
            inputs = [made[id(p)] for p in node.inputs]
            attrs = node.attr_dict
            if set(attrs) <= set(node.op.attr_defaults):
                return node.op(*inputs, name=base, **attrs)   # re-checks shapes
            return Node("op", node.op, inputs, attrs, node.shape, node.dtype,
                        host.unique_name(base), host, host.current_scope, node.role)

    def __repr__(self):
        return (f"<GraphLayer {self.name!r} ({self.mode}): inputs {[n.name for n in self.inputs]}, "
                f"outputs {list(self.outputs)}>")


def as_layer(source, outputs=None, params="share", name=None, values=None):
    """Wrap a graph or a trained model as a layer of other networks.

    ``source``: a :class:`~graphnn.Graph` (its named outputs) or a
    :class:`~graphnn.Model` (its outputs and its *trained* parameters).
    ``outputs``: output names or nodes to expose (default: all named outputs).
    ``params``: "share", "copy" or "freeze" (see the module docs).
    ``values``: parameter values to start from (default: the graph's or model's).
    """
    if hasattr(source, "output_nodes") and hasattr(source, "get_params"):   # a Model
        graph, available = source.graph, dict(source.output_nodes)
        start = {**source.graph.values, **source.get_params()}
    else:
        graph, available, start = source, dict(source.outputs), dict(source.values)
    if outputs is None:
        chosen = available
    else:
        chosen = {}
        for o in ([outputs] if isinstance(outputs, (str, Node)) else outputs):
            if isinstance(o, Node):
                chosen[o.name] = o
            elif o in available:
                chosen[o] = available[o]
            else:
                raise GraphnnError(f"as_layer: {o!r} is not an output; outputs are {sorted(available)}")
    if not chosen:
        raise GraphnnError(f"as_layer: graph {graph.name!r} has no outputs; name one with graph.output()")
    start.update(values or {})
    start = {k: np.array(v, dtype=np.float64) for k, v in start.items()}
    return GraphLayer(graph, chosen, start, params=params, name=name)
