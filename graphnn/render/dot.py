"""DOT for the forward graph: nodes styled by kind, scopes as clusters or collapsed boxes.

:class:`Picture` collects what goes into each cluster (the forward nodes, the
collapsed boxes, and whatever the delta view adds next to them) and then
writes the nested DOT subgraphs with the ``graphviz`` package. Ids are short
(``n12``, ``s3``, ``d12``); the full node names go into tooltips.
"""
import json
from collections import namedtuple

import graphviz

from ..graph.node import format_shape
from . import style
from .scopes import is_buffer, short_name, weights

_Column = namedtuple("_Column", "prefix upper lower attrs arrow group")


class Picture:
    """One DOT graph being assembled over a :class:`~graphnn.render.scopes.Layout`."""

    def __init__(self, layout, name, title, loss=None, tags=None, faded_forward=False):
        self.layout, self.name, self.title, self.loss = layout, name, title, loss
        self.tags = tags or {}
        self.faded_forward = faded_forward
        self.values = {}                # forward node name -> array (given a feed)
        self.extra = {}                 # cluster prefix -> [(id, attrs)] added by the delta view
        self.ranks = {}                 # cluster prefix -> [tuple of ids on one rank]
        self.edges = []                 # (tail, head, attrs)
        self.flipped_groups = set()     # column-edge groups turned round (see settle_columns)
        self.beside = {}                # (parameter id, op id) drawn in one column -> prefix
        self.legend = None              # [(text, colour)] drawn as a row of coloured words
        self.loss_scopes = set()
        if loss is not None and loss.scope:
            parts = loss.scope.split("/")
            self.loss_scopes = {"/".join(parts[:k + 1]) for k in range(len(parts))}

    # -- labels -------------------------------------------------------------
    def kind_of(self, node):
        return "loss" if node is self.loss else node.kind

    def node_title(self, node):
        short = short_name(node)
        tag = self.tags.get(id(node))
        return f"{tag}: {short}" if tag else short

    def node_label(self, node):
        shape = format_shape(node.shape)
        details = []
        if is_buffer(node):
            details.append(f"{shape} · buffer")
        elif node.kind == "parameter":
            n = weights(node)
            details.append(f"{shape} · {n} weight{'s' if n != 1 else ''}")
        elif node.kind == "constant":
            value = node.attr("value")
            details.append(f"= {style.number(float(value.item()))}" if value is not None and value.size == 1
                           else shape)
        elif node.kind == "op":
            op = node.op.name
            details.append(shape if op == short_name(node) else f"{op} {shape}")
        else:
            details.append(shape)
        value = self.values.get(node.name)
        if value is not None:
            details.append(style.value(value))
        return style.label(self.node_title(node), *details)

    def box_label(self, box):
        """'softmax_ce', '10 ops · scalar', '= 1.36': name, ops, weights and output shape, value."""
        w, last = box.weights, box.nodes[-1]
        shape = "scalar" if last.shape == () else format_shape(last.shape)
        ops = box.op_summary()
        details = [ops, f"{w} weights · {shape}"] if w else [" · ".join(t for t in (ops, shape) if t)]
        value = self.values.get(last.name)
        if value is not None:
            details.append(style.value(value))
        tags = [self.tags[id(n)] for n in box.nodes if id(n) in self.tags]
        title = f"{tags[-1]}: {box.name}" if tags else box.name
        return style.label(title, *details)

    def cluster_label(self, prefix):
        name = prefix.rsplit("/", 1)[-1]
        w = self.layout.cluster_weights(prefix)
        return f"{name} · {w} weights" if w else name

    # -- content ------------------------------------------------------------
    def add_forward(self):
        layout = self.layout
        self.beside = self._parameters_beside_consumers()
        for (tail, head), uses in layout.edges().items():
            attrs = dict(style.FORWARD_EDGE_FADED) if self.faded_forward else {}
            if all(parent.kind == "op" for parent, _, _ in uses):
                attrs["weight"] = "4"  # keep the main chain z1 -> z2 -> ... straight
            if len(uses) > 1:
                attrs["tooltip"] = f"{len(uses)} edges"
            if (tail, head) in self.beside:
                self.column_edge(self.beside[tail, head], tail, head, attrs, arrow="lower")
            else:
                self.edges.append((tail, head, attrs))

    def _parameters_beside_consumers(self):
        """Put W and b in the column of the op that reads them, like the lecture's layers.

        Left to themselves they take the column before it, which makes
        neighbouring layer clusters share a column and stack diagonally.
        Returns {(parameter id, op id): cluster prefix} for the pairs placed so.
        """
        layout, readers, pairs = self.layout, {}, {}
        for node in layout.nodes:
            for parent in node.inputs:
                if parent.kind == "parameter":
                    readers.setdefault(id(parent), []).append(node)
        for node in layout.nodes:
            users = readers.get(id(node), [])
            if (node.kind == "parameter" and len(users) == 1 and users[0].scope == node.scope
                    and layout.box_of(node) is None and layout.box_of(users[0]) is None):
                pair = (layout.vid(node), layout.vid(users[0]))
                self.same_rank(node.scope, *pair)
                pairs[pair] = node.scope
        return pairs

    def column_edge(self, prefix, upper, lower, attrs, arrow="lower", group="parameter"):
        """An edge between two nodes of one column (rank=same), ``upper`` to be drawn above ``lower``.

        dot orders such nodes by the edge's direction, but which direction
        means 'above' differs between clusters and the top level (with
        rankdir=LR) and, in some graphs, for a whole ``group`` of such edges:
        :meth:`settle_columns` checks the layout and turns groups round where
        needed. ``arrow`` says which end ('upper', 'lower' or None) gets the arrowhead.
        """
        self.edges.append(_Column(prefix, upper, lower, dict(attrs), arrow, group))

    def _column_edge(self, column):
        inside = bool(column.prefix) != (column.group in self.flipped_groups)
        tail, head = (column.lower, column.upper) if inside else (column.upper, column.lower)
        attrs = dict(column.attrs)
        if column.arrow is None:
            attrs["dir"] = "none"
        else:
            attrs["dir"] = "forward" if (head == column.lower) == (column.arrow == "lower") else "back"
            attrs.setdefault("arrowtail", "normal")
        return tail, head, attrs

    def settle_columns(self, pipe, limit=600):
        """Lay the picture out and turn round each group of column edges that came out upside down."""
        columns = [e for e in self.edges if isinstance(e, _Column)]
        drawn = sum(len(m["nodes"]) + len(m["boxes"]) for m in self.layout.members.values())
        drawn += sum(len(extra) for extra in self.extra.values())
        if not columns or drawn > limit:  # big pictures: not worth a second layout
            return
        for _ in range(2):
            wrong = self._upside_down(pipe, columns)
            if not wrong:
                return
            total = {}
            for c in columns:
                total[c.group] = total.get(c.group, 0) + 1
            turn = {g for g, n in wrong.items() if n > total[g] / 2}
            if not turn:
                return
            before = sum(wrong.values())
            self.flipped_groups ^= turn
            after = self._upside_down(pipe, columns)
            if after is None or sum(after.values()) >= before:
                self.flipped_groups ^= turn
                return

    def _upside_down(self, pipe, columns):
        """{group: number of its column edges drawn upside down}, or None if layout fails."""
        try:
            layout = json.loads(pipe(self.digraph().source, "json"))
        except Exception:  # a check of looks only: never let it stop the picture
            return None
        y = {o["name"]: float(o["pos"].split(",")[1]) for o in layout.get("objects", []) if "pos" in o}
        wrong = {}
        for c in columns:
            if c.upper in y and c.lower in y and y[c.upper] < y[c.lower]:
                wrong[c.group] = wrong.get(c.group, 0) + 1
        return wrong

    def add_node(self, prefix, node_id, attrs):
        self.extra.setdefault(prefix, []).append((node_id, attrs))

    def same_rank(self, prefix, *ids):
        self.ranks.setdefault(prefix, []).append(ids)

    def _forward_node_attrs(self, node):
        attrs = dict(style.KIND[self.kind_of(node)])
        attrs.update(label=self.node_label(node), tooltip=style.text(node.name))
        return attrs

    def _box_attrs(self, box):
        kind = "loss_scope" if self.loss is not None and self.loss in box.nodes else "scope"
        attrs = dict(style.KIND[kind])
        what = "composite op" if box.composite else "scope"
        attrs.update(label=self.box_label(box),
                     tooltip=style.text(f"{what} {box.prefix}: {len(box.nodes)} nodes"))
        return attrs

    # -- output -------------------------------------------------------------
    def digraph(self):
        g = graphviz.Digraph(self.name, graph_attr=style.GRAPH,
                             node_attr=style.NODE, edge_attr=style.EDGE)
        g.attr(**style.quoted({"label": style.left(self.title)}))
        self._cluster_ids = {prefix: k for k, prefix in enumerate(self.layout.members)}
        self._emit(g, "", 0)
        for edge in self.edges:
            tail, head, attrs = self._column_edge(edge) if isinstance(edge, _Column) else edge
            g.edge(tail, head, **style.quoted(attrs))
        if self.legend:  # last: dot's first ordering starts from the nodes declared first
            self._emit_legend(g)
        return g

    def _emit_legend(self, g):
        """The δ edge colours as a column of coloured words in a box of their own."""
        with g.subgraph(name="cluster_legend") as legend:
            legend.attr(label="‖δ‖ on δ edges", style="rounded", color="#cbd5e1", fontname=style.FONT,
                        fontsize="10", fontcolor="#334155")
            ids = [f"legend{k}" for k in range(len(self.legend))]
            for node_id, (text, color) in zip(ids, self.legend):
                legend.node(node_id, label=style.text(f"━━ {text}"), shape="plaintext",
                            fontcolor=color, fontsize="9", height="0.2")
            with legend.subgraph() as column:
                column.attr(rank="same")
                for node_id in ids:
                    column.node(node_id)
            for upper, lower in zip(ids, ids[1:]):  # keeps the order: in a cluster the tail goes lower
                legend.edge(lower, upper, style="invis")

    def _emit(self, target, prefix, level):
        layout = self.layout
        members = layout.members[prefix]
        statements = [(layout.vid(node), self._forward_node_attrs(node)) for node in members["nodes"]]
        statements += [(box.id, self._box_attrs(box)) for box in members["boxes"]]
        extra = self.extra.get(prefix, [])
        for node_id, attrs in statements + extra:
            target.node(node_id, **style.quoted(attrs))
        for ids in self.ranks.get(prefix, []):
            with target.subgraph() as same:
                same.attr(rank="same")
                for node_id in ids:
                    same.node(node_id)
        for child in members["clusters"]:
            with target.subgraph(name=f"cluster_{self._cluster_ids[child]}") as sub:
                attrs = dict(style.CLUSTER)
                attrs["fillcolor"] = style.CLUSTER_FILLS[min(level, len(style.CLUSTER_FILLS) - 1)]
                if child in self.loss_scopes:
                    attrs.update(style.LOSS_CLUSTER)
                sub.attr(**style.quoted({"label": style.left(self.cluster_label(child)),
                                         "tooltip": style.text(child), **attrs}))
                self._emit(sub, child, level + 1)

