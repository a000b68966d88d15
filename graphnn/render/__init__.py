"""Stage: render -- Graphviz pictures of the graph and of the delta flow.

``render(...)`` reads the forward graph (and, for ``deltas=True``, the
backward graph :func:`graphnn.derive` builds) and returns a
:class:`Rendering`: DOT source always, SVG with or without system Graphviz,
PNG/PDF with it.
"""
import numpy as np

from ..errors import ArgumentError, GraphnnError
from ..graph.node import Graph, Node
from ..graph.traverse import topological
from . import backend
from .backend import RenderFormatError, backend_name, system_dot
from .deltas import DeltaFlow
from .dot import Picture
from .rendering import Rendering
from .scopes import Layout, weights

__all__ = ["render", "Rendering", "RenderFormatError", "backend_name", "system_dot"]


def render(target, deltas=False, feed=None, depth=None, collapse=(), expand=False, params=None,
           layers=None, title=None, input_deltas=False):
    """Draw a network, or its backward pass with ``deltas=True``.

    ``target``: a :class:`Graph` (its named outputs are drawn), an output or
    loss node, a list of nodes, a compiled :class:`graphnn.Model`, or an
    object with ``.loss`` (and ``.graph``, ``.layers``) such as the networks
    in :mod:`graphnn.lecture`.
    Composite ops (``softmax_cross_entropy``, ``mse``, ``log_softmax``, ...) are
    drawn as one box each unless ``expand`` opens them: ``expand=True`` opens
    every one, ``expand="softmax_ce"`` (or a list of names or scope paths) those
    named; composites nested in an opened one stay boxes unless named too.
    ``depth``: scopes nested up to ``depth`` levels are drawn as clusters,
    deeper ones as one box each; 0 collapses every scope (expanded composites
    too), None (the default) expands every layer. ``collapse``: scope names to
    draw as one box anyway (it wins over ``expand``).
    ``feed``: input arrays; with ``deltas=True`` the picture shows δ norms,
    gradient norms and colours δ edges by magnitude (without deltas it shows
    value norms). ``params`` overrides parameter values; given params (a compiled
    model passes its current ones), parameter boxes show their value or norm. ``layers``: {tag: node}
    names shown on nodes (e.g. the lecture's z1..z4). ``input_deltas``: also
    draw the deltas of inputs (default: only what parameters need).

    >>> import graphnn as gn
    >>> from graphnn import lecture
    >>> net = lecture.regression_net()
    >>> picture = gn.render(net, deltas=True)
    >>> "1 - tanh(z)**2" in picture.source
    True
    >>> svg = picture.svg()              # works without system Graphviz
    """
    name, outputs, loss, tags = _resolve(target, layers)
    if params is None and callable(getattr(target, "get_params", None)):
        params = target.get_params()  # a compiled model draws its trained values
    elif params is None and isinstance(getattr(target, "params", None), dict):
        params = target.params
    if deltas and loss is None:
        raise GraphnnError(f"render(deltas=True) needs a scalar loss; {name!r} has none among "
                           f"{[o.name for o in outputs]} -- pass the loss node or an object with .loss")
    layout = Layout(topological(outputs), depth=depth, collapse=collapse, expand=expand)
    picture = Picture(layout, name, title or f"{name} · {_weights(layout.nodes)} weights", loss=loss,
                      tags=tags, faded_forward=deltas)
    picture.add_forward()
    derivatives, loss_value = {}, None
    if deltas:
        from ..derive import derive
        trainable = [n for n in layout.nodes if n.kind == "parameter"
                     and n.graph.trainable.get(n.name, True)]
        back = derive(loss, wrt=None if input_deltas or not trainable else trainable)
        flow = DeltaFlow(picture, back, feed=feed, params=params)
        flow.add()
        derivatives, loss_value = flow.derivatives, flow.loss_value
        picture.title = title or _delta_title(name, flow)
        if loss_value is not None:
            picture.values[loss.name] = np.asarray(loss_value)
    elif feed is not None:
        from ..reference import evaluate
        picture.values = evaluate(layout.nodes, feed, params=params)
    for node in layout.nodes:  # parameter values (a trained model's differ from an untrained one's)
        if node.kind == "parameter" and params and node.name in params:
            picture.values.setdefault(node.name, np.asarray(params[node.name], dtype=np.float64))
    picture.settle_columns(backend.pipe)
    return Rendering(picture.digraph().source, picture.title, derivatives, loss_value)


def _delta_title(name, flow):
    parts = [f"{name} · delta flow"]
    if flow.loss_value is not None:
        if flow.batch:
            parts.append(f"batch {flow.batch}")
        parts.append(f"loss {flow.loss_value:.3g}")
    return " · ".join(parts)


def _weights(nodes):
    return sum(weights(n) for n in nodes)     # buffers (running statistics) are not weights


def _resolve(target, layers):
    """(name, output nodes, loss node or None, {id(node): tag}) for what the user passed."""
    tags = {}
    if isinstance(target, Graph):
        outputs = list(target.outputs.values())
        if not outputs:
            raise GraphnnError(f"graph {target.name!r} has no named outputs to draw: pass the loss or "
                               f"output node (gn.render(loss)), or name one with graph.output(name, node)")
        name = target.name
    elif isinstance(target, Node):
        outputs, name = [target], target.graph.name
    elif isinstance(getattr(target, "loss_node", None), Node) or hasattr(target, "output_nodes"):
        # a compiled graphnn.Model: its loss, its outputs, and (below) its trained parameters
        loss = target.loss_node
        outputs = [o for o in [loss, *dict(target.output_nodes).values()] if o is not None]
        outputs = list({id(o): o for o in outputs}.values())
        name = target.graph.name
    elif hasattr(target, "loss") and isinstance(target.loss, Node):
        graph = getattr(target, "graph", None) or target.loss.graph
        outputs = [target.loss, *[o for o in graph.outputs.values() if o is not target.loss]]
        name = graph.name
        if layers is None and isinstance(getattr(target, "layers", None), dict):
            layers = target.layers
    elif isinstance(target, (list, tuple)) and target and all(isinstance(t, Node) for t in target):
        outputs, name = list(target), target[0].graph.name
    else:
        raise ArgumentError(f"render: cannot draw a {type(target).__name__}; pass a Graph, a node, a list "
                        f"of nodes, or an object with .loss and .graph")
    loss = getattr(target, "loss_node", None) or getattr(target, "loss", None)
    if not isinstance(loss, Node):
        scalars = [o for o in outputs if o.shape == ()]
        loss = scalars[0] if len(scalars) == 1 else None
    for tag, node in (layers or {}).items():
        if isinstance(node, Node) and tag not in (node.name, node.name.rsplit("/", 1)[-1],
                                                  node.scope.rsplit("/", 1)[-1]):
            tags[id(node)] = tag
    return name, outputs, loss, tags
