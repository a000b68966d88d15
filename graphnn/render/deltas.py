"""The delta flow: the backward pass drawn against the forward graph.

Every forward node z^l that has a delta gets a δ node beside it (same rank,
so z and δz line up), and every forward edge z^l -> z^{l+1} gets a δ edge
pointing back, δ^{l+1} -> δ^l, labelled with its local derivative
∂z^{l+1}/∂z^l -- the lecture's δ^l_i = Σ_k δ^{l+1}_k ∂z^{l+1}_k/∂z^l_i.
The deltas of parameters are their gradients (∂L/∂W). Given a feed, the
reference executor evaluates the delta nodes: δ nodes show shapes and norms,
δ edges are coloured by the norm of the contribution they carry, so vanishing
(blue) and exploding (red) gradients stand out.
"""
import numpy as np

from ..graph.node import format_shape
from ..reference import evaluate
from . import style
from .derivatives import EdgeDerivative
from .scopes import parent_scope, short_name


def contribution(back, parent, node):
    """The delta node carrying ``node``'s share of δ(parent) (fan-out sums several)."""
    total = back.delta(parent)
    if not (total.kind == "op" and total.op.name.startswith("accumulate")):
        return total
    own = f"delta[{parent.name}<-{node.name}]"
    passed = back.delta(node) if back.has_delta(node) else None
    for part in total.inputs:
        if part.name == own or part.name.startswith((own + "/", own + "_")):
            return part
    return next((part for part in total.inputs if part is passed), total)


def _norm(value):
    return float(np.sqrt(np.sum(np.square(value, dtype=np.float64))))


class DeltaFlow:
    """Adds δ nodes and δ edges of ``back`` (a :class:`graphnn.Backward`) to a Picture."""

    def __init__(self, picture, back, feed=None, params=None):
        self.picture, self.back = picture, back
        self.layout = picture.layout
        self.derivatives = {}          # (consumer name, position) -> EdgeDerivative
        self.norms = None              # delta node name -> norm (given a feed)
        self.loss_value = None
        self.batch = None
        self.colors_used = set()
        if feed is not None:
            self._evaluate(feed, params)

    def _evaluate(self, feed, params):
        back, layout = self.back, self.layout
        targets = {id(back.loss): back.loss}
        for node in layout.nodes:
            if back.has_delta(node):
                d = back.delta(node)
                targets[id(d)] = d
                for parent in node.inputs:
                    if back.has_delta(parent):
                        c = contribution(back, parent, node)
                        targets[id(c)] = c
        values = evaluate(list(targets.values()), feed, params=params)
        self.loss_value = float(values.pop(back.loss.name))
        self.norms = {name: _norm(v) for name, v in values.items()}
        self.batch = next((len(np.asarray(v)) for v in feed.values() if np.ndim(v) > 0), None)

    # -- δ nodes ------------------------------------------------------------
    def dvid(self, node):
        box = self.layout.box_of(node)
        return "d" + (box.id if box is not None else self.layout.vid(node)[1:])

    def add(self):
        boxes_done = set()
        for node in self.layout.nodes:
            if not self.back.has_delta(node):
                continue
            box = self.layout.box_of(node)
            if box is None:
                self._add_delta_node(node)
            elif box.id not in boxes_done:
                boxes_done.add(box.id)
                self._add_delta_box(box)
        self._add_edges()
        if self.norms is not None:
            self.picture.legend = legend(self.colors_used)

    def _add_delta_node(self, node):
        picture, back = self.picture, self.back
        delta = back.delta(node)
        gradient = node.kind == "parameter"
        tag = picture.tags.get(id(node))
        name = tag or short_name(node)
        title = f"∂L/∂{name}" if gradient else f"δ {name}"
        details = [format_shape(delta.shape)]
        if delta is back.seed:
            details = ["= 1 (seed)"]
        elif self.norms is not None:
            details.append(f"‖{'g' if gradient else 'δ'}‖ = {style.number(self.norms[delta.name])}")
        attrs = dict(style.KIND["gradient" if gradient else "delta"])
        attrs.update(label=style.label(title, " · ".join(details)), tooltip=style.text(delta.name))
        picture.add_node(node.scope, self.dvid(node), attrs)
        self._pair(node.scope, self.layout.vid(node), self.dvid(node), line=not gradient)

    def _add_delta_box(self, box):
        """The δ box of a collapsed scope: the δ into it (that of its output, the last of its nodes)
        and, given a feed, the norm of its parameters' gradients."""
        back = self.back
        inside = [n for n in box.nodes if back.has_delta(n)]
        last = box.nodes[-1]
        details = []
        if back.has_delta(last):
            delta = back.delta(last)
            if delta is back.seed:
                details.append("δ in = 1 (seed)")
            else:
                norm = "" if self.norms is None else f" · ‖δ‖ = {style.number(self.norms[delta.name])}"
                details.append(f"δ in {format_shape(delta.shape)}{norm}")
        params = [n for n in inside if n.kind == "parameter"]
        if self.norms is not None and params:
            g = np.sqrt(sum(self.norms[back.delta(n).name] ** 2 for n in params))
            details.append(f"‖∂L/∂θ‖ = {style.number(g)}")
        attrs = dict(style.KIND["delta_scope"])
        tags = [self.picture.tags[id(n)] for n in box.nodes if id(n) in self.picture.tags]
        title = f"δ {tags[-1]}" if tags else f"δ {box.name}"
        count = f"{len(inside)} delta" + ("" if len(inside) == 1 else "s")
        attrs.update(label=style.label(title, *details), tooltip=style.text(f"{count} inside {box.prefix}"))
        prefix = parent_scope(box.prefix)
        self.picture.add_node(prefix, self.dvid(box.nodes[0]), attrs)
        self._pair(prefix, box.id, self.dvid(box.nodes[0]))

    def _pair(self, prefix, forward_id, delta_id, line=True):
        """Put δz on z's rank; a dotted line joins them (not for W and ∂L/∂W, where it loops)."""
        self.picture.same_rank(prefix, forward_id, delta_id)
        if line:
            self.picture.column_edge(prefix, forward_id, delta_id, style.PAIR_EDGE, arrow=None,
                                     group="pair")

    # -- δ edges ------------------------------------------------------------
    def _add_edges(self):
        back, groups = self.back, {}
        for node in self.layout.nodes:
            if not back.has_delta(node):
                continue
            for pos, parent in enumerate(node.inputs):
                if back.has_delta(parent) and id(parent) in self.layout.index:
                    key = (self.dvid(parent), self.dvid(node))
                    if key[0] != key[1]:
                        groups.setdefault(key, []).append((parent, node, pos))
        for (tail, head), uses in groups.items():
            parent, node, _ = uses[0]
            column = self.picture.beside.get((self.layout.vid(parent), self.layout.vid(node)))
            if column is not None:  # δz -> ∂L/∂W within one column: ∂L/∂W goes below δz
                self.picture.column_edge(column, head, tail, self._edge_attrs(uses), arrow="lower",
                                         group="gradient")
            else:
                self.picture.edges.append((tail, head, self._edge_attrs(uses)))

    def _edge_attrs(self, uses):
        attrs = dict(style.DELTA_EDGE)
        single = len(uses) == 1
        parent, node, pos = uses[0]
        # inside a box the derivative would be of a hidden inner node: label only node-to-node edges
        boxed = self.layout.box_of(parent) is not None or self.layout.box_of(node) is not None
        tooltip = []
        if single and not boxed:
            d = EdgeDerivative(node, pos)
            self.derivatives[(node.name, pos)] = d
            attrs["label"] = d.text
            tooltip += [d.full, f"LaTeX: {d.latex}"]
        else:
            tooltip.append(f"{len(uses)} edges")
        if self.norms is not None:
            norm = max(self.norms[contribution(self.back, p, n).name] for p, n, _ in uses)
            attrs.update(style.magnitude(norm))
            self.colors_used.add(attrs["color"])
            tooltip.append(f"‖δ‖ = {style.number(norm)}")
            if "label" not in attrs:
                attrs["label"] = f"‖δ‖ {style.number(norm)}"
        attrs["tooltip"] = "\\n".join(style.text(line) for line in tooltip)
        return attrs


def legend(colors_used=None):
    """(text, colour) of the δ edge colours (those in ``colors_used`` if given), for the legend."""
    entries = ([(name, color) for _, color, name in style.MAGNITUDE_BANDS]
               + [("zero (dashed)", style.ZERO_COLOR), ("nan/inf", style.NONFINITE_COLOR)])
    return [e for e in entries if colors_used is None or e[1] in colors_used]
