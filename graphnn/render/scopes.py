"""What a picture shows: scopes as clusters, and composite ops and scopes deeper than ``depth`` as one box.

A node's ``scope`` ('hidden', 'block3/layer0', 'log_softmax') says which layer
or composite op built it; the graph's ``composite_scopes`` says which of them a
composite op (``softmax_cross_entropy``, ``mse``, ...) opened. Layer scopes up to
``depth`` levels deep are drawn as clusters around their nodes; the first scope
below that, any named in ``collapse``, and every composite op not named in
``expand`` become a single box standing for every node inside it, so a
thousand-node network reads as a few dozen boxes.
"""
import numpy as np

from ..errors import ArgumentError


def prefixes(scope):
    """'a/b/c' -> ['a', 'a/b', 'a/b/c']."""
    parts = scope.split("/") if scope else []
    return ["/".join(parts[:k + 1]) for k in range(len(parts))]


def parent_scope(prefix):
    return prefix.rsplit("/", 1)[0] if "/" in prefix else ""


def short_name(node):
    """The node's name within its own scope: 'hidden/z' -> 'z'."""
    if node.scope and node.name.startswith(node.scope + "/"):
        return node.name[len(node.scope) + 1:]
    return node.name


def is_buffer(node):
    """A parameter that training steps write (BatchNorm's running statistics): not a weight."""
    return node.kind == "parameter" and node.name in getattr(node.graph, "updates", {})


def weights(node):
    return int(np.prod(node.shape, dtype=np.int64)) if node.kind == "parameter" and not is_buffer(node) else 0


def names(value, what):
    """Scope names given as one string or an iterable of strings, as a list."""
    if isinstance(value, str):
        return [value]
    try:
        value = list(value)
    except TypeError:
        value = None
    if value is None or not all(isinstance(v, str) for v in value):
        raise ArgumentError(f"render: {what} must be a scope name or a list of scope names"
                            + (", or True for every composite op" if what == "expand" else ""))
    return value


def _named(prefix, chosen):
    """Whether the scope ``prefix`` is in ``chosen`` by its path or by its own name."""
    return prefix in chosen or prefix.rsplit("/", 1)[-1] in chosen


def _composite(node, prefix):
    """Whether a composite op (not a layer) opened the scope ``prefix`` of ``node``'s graph."""
    return prefix in node.graph.composite_scopes


class Box:
    """A collapsed scope: one box standing for all of its nodes."""

    def __init__(self, prefix, index, composite=False):
        self.prefix, self.id, self.nodes, self.composite = prefix, f"s{index}", [], composite

    @property
    def name(self):
        return self.prefix.rsplit("/", 1)[-1]

    @property
    def weights(self):
        return sum(weights(n) for n in self.nodes)

    def op_summary(self, limit=3):
        ops = [n.op.name for n in self.nodes if n.kind == "op"]
        if len(ops) <= limit:
            return " → ".join(ops)
        return f"{len(ops)} ops"


class Layout:
    """Placement of forward ``nodes`` (topological order) into clusters and boxes.

    ``vid(node)`` is the DOT id that stands for a node (its own or its box's);
    ``members[prefix]`` lists what a cluster holds directly: nodes, boxes and
    child clusters ('' is the top level).
    """

    def __init__(self, nodes, depth=None, collapse=(), expand=False):
        self.nodes, self.depth = list(nodes), depth
        self.collapse = set(names(collapse, "collapse"))
        self.expand = expand if isinstance(expand, bool) or expand is None else set(names(expand, "expand"))
        self.opened = self._opened()
        self.index = {id(n): k for k, n in enumerate(self.nodes)}
        self.boxes, self.clusters = {}, {"": []}
        self.members = {"": {"nodes": [], "boxes": [], "clusters": []}}
        self._owner = {}
        for node in self.nodes:
            self._place(node)

    def _opened(self):
        """The composite scopes ``expand`` names, with the composites around them (opening
        'softmax_ce/nll' opens 'softmax_ce' too). A name must name a composite op in the picture:
        a typo would otherwise change nothing, silently."""
        if not isinstance(self.expand, set):
            return set()
        composites = {p for n in self.nodes for p in prefixes(n.scope) if _composite(n, p)}
        known = composites | {p.rsplit("/", 1)[-1] for p in composites}
        unknown = sorted(self.expand - known)
        if unknown:
            raise ArgumentError(f"render: expand={unknown[0]!r} names no composite op in this picture; "
                                f"its composite ops are {sorted(composites) or 'none'} (layers are "
                                f"expanded already; expand=True, or --expand alone, expands every "
                                f"composite op)")
        named = [p for p in composites if _named(p, self.expand)]
        return {p for n in named for p in prefixes(n) if p in composites}

    def _collapsed_prefix(self, node):
        for level, prefix in enumerate(prefixes(node.scope), 1):
            too_deep = self.depth is not None and level > self.depth
            if too_deep or _named(prefix, self.collapse) or self._closed_composite(node, prefix):
                return prefix
        return None

    def _closed_composite(self, node, prefix):
        return self.expand is not True and _composite(node, prefix) and prefix not in self.opened

    def _cluster(self, prefix):
        """Register an expanded cluster and its ancestors."""
        if prefix in self.members:
            return self.members[prefix]
        parent = self._cluster(parent_scope(prefix))
        parent["clusters"].append(prefix)
        self.members[prefix] = {"nodes": [], "boxes": [], "clusters": []}
        return self.members[prefix]

    def _place(self, node):
        prefix = self._collapsed_prefix(node)
        if prefix is None:
            self._cluster(node.scope)["nodes"].append(node)
            self._owner[id(node)] = None
            return
        box = self.boxes.get(prefix)
        if box is None:
            box = self.boxes[prefix] = Box(prefix, len(self.boxes), _composite(node, prefix))
            self._cluster(parent_scope(prefix))["boxes"].append(box)
        box.nodes.append(node)
        self._owner[id(node)] = box

    # -- queries ------------------------------------------------------------
    def box_of(self, node):
        """The collapsed box a node is drawn inside, or None if it has its own."""
        return self._owner[id(node)]

    def vid(self, node):
        box = self._owner[id(node)]
        return box.id if box is not None else f"n{self.index[id(node)]}"

    def cluster_weights(self, prefix):
        return sum(weights(n) for n in self.nodes
                   if n.scope == prefix or n.scope.startswith(prefix + "/"))

    def edges(self):
        """Visible edges {(tail vid, head vid): [(parent, node, position), ...]}, in order."""
        out = {}
        for node in self.nodes:
            for pos, parent in enumerate(node.inputs):
                if id(parent) not in self.index:
                    continue
                key = (self.vid(parent), self.vid(node))
                if key[0] != key[1]:
                    out.setdefault(key, []).append((parent, node, pos))
        return out
