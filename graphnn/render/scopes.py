"""What a picture shows: scopes as clusters, and scopes deeper than ``depth`` collapsed to one box.

A node's ``scope`` ('hidden', 'block3/layer0', 'log_softmax') says which layer
or composite op built it. Scopes up to ``depth`` levels deep are drawn as
clusters around their nodes; the first scope below that (or any named in
``collapse``) becomes a single box standing for every node inside it, so a
thousand-node network reads as a few dozen boxes.
"""
import numpy as np


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


def weights(node):
    return int(np.prod(node.shape, dtype=np.int64)) if node.kind == "parameter" else 0


class Box:
    """A collapsed scope: one box standing for all of its nodes."""

    def __init__(self, prefix, index):
        self.prefix, self.id, self.nodes = prefix, f"s{index}", []

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

    def __init__(self, nodes, depth=None, collapse=()):
        self.nodes, self.depth, self.collapse = list(nodes), depth, set(collapse)
        self.index = {id(n): k for k, n in enumerate(self.nodes)}
        self.boxes, self.clusters = {}, {"": []}
        self.members = {"": {"nodes": [], "boxes": [], "clusters": []}}
        self._owner = {}
        for node in self.nodes:
            self._place(node)

    def _collapsed_prefix(self, node):
        for level, prefix in enumerate(prefixes(node.scope), 1):
            too_deep = self.depth is not None and level > self.depth
            if too_deep or prefix in self.collapse or prefix.rsplit("/", 1)[-1] in self.collapse:
                return prefix
        return None

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
            box = self.boxes[prefix] = Box(prefix, len(self.boxes))
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
