"""The chain rule as the lecture writes it: :func:`explain`.

``gn.explain(loss, wrt=node, feed=None)`` looks at the graph as layers z^1 ... z^L (every op
outside a scope is a layer, a scope -- ``gn.dense``, ``gn.log_softmax`` -- is one layer, its
output is z^l) and writes

* dz^L/d wrt as a sum over the paths from ``wrt`` to the loss, one product of local
  derivatives per path, element by element where the layers are small (the lecture's
  dz^4/dtheta = sum_k dz^4/dz^3_k sum_i dz^3_k/dz^2_i dz^2_i/dtheta);
* each layer's local derivative dz^{l+1}/dz^l as the sum over the graph's paths through the
  layer of products of :func:`graphnn.local_derivative` (indexed forms for index ops);
* the delta recursion delta^L = 1, delta^l_i = sum_k delta^{l+1}_k dz^{l+1}_k/dz^l_i.

Given a feed, every factor (per example), every path's product (summed over the batch)
and every delta is a number (float64, the NumPy reference executor). The products come
from graphnn's own backward rules (:mod:`graphnn.derive`), so the sum over the paths is
the gradient, and the deltas are the values of :func:`graphnn.derive`'s delta nodes.
"""
import itertools

import numpy as np

from .derive.autodiff import (_accumulate, _elementwise_contribution, _index_contribution, _tie_nodes,
                              check_loss, derive)
from .derive.local import local_derivative
from .errors import ArgumentError, FeedError, GraphMixError
from .graph.node import Node, check_node, format_shape
from .graph.traverse import topological
from .reference import check_feeds, evaluate

MAX_PATHS = 64          # element paths listed; beyond, the paths are written per tensor
MAX_INNER_PATHS = 16    # graph paths through one layer written out
MAX_ROWS = 16           # examples for which a factor into a parameter is computed per example
_SEED = "explain:delta"


def _top(node):
    return node.scope.split("/")[0]


def _size(node):
    return int(np.prod([d for d in node.shape if d is not None], dtype=np.int64))


class Term:
    """One path from ``wrt`` to the loss: ``steps`` is [(layer node, element)], the loss first
    and ``wrt`` last (element None: the whole tensor). ``factors`` (given a feed) holds the
    value of each factor d step[j] / d step[j+1] per example; ``value`` the path's product."""

    def __init__(self, steps, factors=None, value=None):
        self.steps, self.factors, self.value = steps, factors, value


class Explanation:
    """What :func:`explain` returns: ``str()`` text, ``.latex`` (and ``_repr_latex_`` for
    Jupyter), ``.table()`` rows. Numbers (given a feed): ``.paths`` (their ``.value``),
    ``.path_sum`` (their sum), ``.gradient`` (graphnn's own, from :func:`graphnn.derive`),
    ``.deltas`` {layer node name: delta value}."""

    def __init__(self, loss, wrt, layers, labels, edges, paths, elementwise, deltas, gradient):
        self.loss, self.wrt = loss, wrt
        self.layers, self.labels = layers, labels        # layer nodes (loss first), node name -> label
        self.edges = edges                               # (layer node, its layer input) -> inner paths
        self.paths, self.elementwise = paths, elementwise
        self.deltas, self.gradient = deltas, gradient
        self.path_sum = (None if gradient is None
                         else sum((p.value for p in paths), np.zeros_like(gradient)))

    # -- names of things ------------------------------------------------------------
    def _label(self, node, element=None, tex=False):
        label = self.labels[node.name]
        if tex:
            head, _, depth = label.partition("^")
            label = rf"{head}^{{{depth}}}" if depth else r"\mathrm{%s}" % label.replace("_", r"\_")
        elif "^" not in label and not label.isidentifier():
            label = f"({label})"     # d(linear/W), not dlinear/W
        if element is None or _size(node) == 1:
            return label
        return rf"{label}_{{{element + 1}}}" if tex else f"{label}_{element + 1}"

    def _factor(self, upper, lower, tex=False):
        (b, k), (a, i) = upper, lower
        if tex:
            return rf"\frac{{\partial {self._label(b, k, True)}}}{{\partial {self._label(a, i, True)}}}"
        return f"d{self._label(b, k)}/d{self._label(a, i)}"

    def _delta(self, node, element=None, tex=False):
        if node is self.wrt:
            return (rf"\frac{{\partial {self._label(self.loss, None, True)}}}{{\partial "
                    rf"{self._label(node, None, True)}}}" if tex
                    else f"d{self._label(self.loss)}/d{self._label(node)}")
        label = self._label(node, element, tex)
        head, _, rest = label.partition("^")
        return (r"\delta^" if tex else "delta^") + rest

    # -- the sum over paths, grouped as the lecture writes it -------------------------
    def _grouped(self, paths, depth, tex):
        """sum_k dz^L/dz^{L-1}_k (...) over ``paths`` that share their first ``depth`` steps."""
        times = " " if tex else " * "
        groups = {}
        for p in paths:
            groups.setdefault(p.steps[depth + 1], []).append(p)
        terms = []
        for step, members in groups.items():
            factor = self._factor(members[0].steps[depth], step, tex)
            if step[0] is self.wrt:
                terms.append(factor)
                continue
            inner = self._grouped(members, depth + 1, tex)
            terms.append(factor + times + (f"\\left({inner}\\right)" if tex else f"({inner})")
                         if len(members) > 1 else factor + times + inner)
        return " + ".join(terms)

    def _elements(self, node):
        return range(_size(node)) if self.elementwise and _size(node) > 1 and node is not self.wrt else [None]

    def _recursion(self, tex=False):
        """[(node, element, its delta, the recursion for it)]: the loss first, wrt last."""
        lines, times = [], (" " if tex else " * ")
        for node in self.layers:
            for i in self._elements(node):
                parts = [self._delta(b, k, tex) + times + self._factor((b, k), (node, i), tex)
                         for b in self.layers if (b, node) in self.edges for k in self._elements(b)]
                lines.append((node, i, self._delta(node, i, tex), " + ".join(parts) or "1"))
        return lines

    def _inner(self, tex=False):
        """[(layer factor, [product of local derivatives per graph path])] per layer edge."""
        out = []
        for (b, a), paths in self.edges.items():
            products = []
            zero = [path for path in paths if any(d.expr == 0 for d in path)]
            for path in paths:
                if any(d.expr == 0 for d in path):
                    continue      # a factor 0 (stop_gradient): the path adds nothing
                if tex:
                    products.append(r" \cdot ".join(r"\left(%s\right)" % d.latex for d in path))
                else:
                    products.append(" * ".join(f"[{d}]" for d in path))
            if zero:
                note = f"{len(zero)} path(s) through a zero factor (stop_gradient) left out"
                products.append(r"\text{(%s)}" % note if tex else f"({note})")
            out.append((self._factor((b, None), (a, None), tex), products))
        return out

    # -- output -----------------------------------------------------------------------
    def __str__(self):
        fmt = _fmt
        lines = [f"explain: {self._delta(self.wrt)}, the chain rule "
                 f"over {len(self.paths)} path(s)", "layers:"]
        for node in reversed(self.layers):
            lines.append(f"  {self.labels[node.name]:>6} = {node.name}  {node.op_name} {format_shape(node.shape)}")
        lines.append(f"{self._delta(self.wrt)} = {self._grouped(self.paths, 0, False)}")
        lines.append("local derivatives (a sum over the graph's paths through each layer):")
        for factor, products in self._inner():
            lines.append(f"  {factor} =")
            lines.extend(f"      {'+ ' if j else '  '}{p}" for j, p in enumerate(products))
        lines.append("delta recursion:")
        lines.extend(f"  {d} = {r}" for _, _, d, r in self._recursion())
        if self.gradient is not None:
            lines.append("numbers (factors per example, products summed over the batch):")
            for p in self.paths:
                names = [self._factor(u, v) for u, v in zip(p.steps, p.steps[1:])]
                lines.append("  " + " * ".join(names) + f" = {fmt(p.value)}")
                for name, value in zip(names, p.factors):
                    lines.append(f"      {name} = {fmt(value)}")
            for node in self.layers:
                lines.append(f"  {self._delta(node)} = {fmt(self.deltas[node.name])}")
            lines.append(f"  sum over paths = {fmt(self.path_sum)}")
            lines.append(f"  gradient (gn.derive) = {fmt(self.gradient)}")
        return "\n".join(lines)

    @property
    def latex(self):
        rows = [r"%s &= %s" % (self._delta(self.wrt, tex=True), self._grouped(self.paths, 0, True))]
        rows += [r"%s &= %s" % (d, r) for _, _, d, r in self._recursion(tex=True)]
        for factor, products in self._inner(tex=True):
            rows.append(r"%s &= %s" % (factor, r" \\ &\quad + ".join(products)))
        return "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}"

    def _repr_latex_(self):
        return f"$${self.latex}$$"

    def __repr__(self):
        return f"<Explanation d{self.loss.name}/d{self.wrt.name}: {len(self.paths)} paths>"

    def table(self):
        """The paths and the deltas as rows (dicts: ``what``, ``term``, ``formula``, ``value``);
        ``str()`` of the returned list is a text table."""
        rows = Table()
        for p in self.paths:
            names = [self._factor(u, v) for u, v in zip(p.steps, p.steps[1:])]
            rows.append({"what": "path", "term": " * ".join(names),
                         "formula": " * ".join(_fmt(f) for f in p.factors) if p.factors else "",
                         "value": p.value})
        for node, i, d, r in self._recursion():
            value = None if self.deltas is None else _pick(self.deltas[node.name], node, i)
            rows.append({"what": "delta", "term": d, "formula": r, "value": value})
        if self.gradient is not None:
            rows.append({"what": "sum", "term": "sum over paths", "formula": "", "value": self.path_sum})
            rows.append({"what": "gradient", "term": "gn.derive", "formula": "", "value": self.gradient})
        return rows


class Table(list):
    """A plain list of row dicts whose ``str()`` is a text table."""

    def __str__(self):
        cells = [[r["what"], r["term"], r["formula"], _fmt(r["value"])] for r in self]
        widths = [max([len(h)] + [len(c[j]) for c in cells]) for j, h in enumerate(_COLUMNS)]
        line = lambda c: "  ".join(s.ljust(w) for s, w in zip(c, widths)).rstrip()  # noqa: E731
        return "\n".join([line(_COLUMNS), line(["-" * w for w in widths])] + [line(c) for c in cells])


_COLUMNS = ["what", "term", "formula", "value"]


def _fmt(value):
    if value is None:
        return ""
    return np.array2string(np.asarray(value), precision=4, suppress_small=True, max_line_width=200,
                           separator=", ").replace("\n", "")


# -- the graph as layers --------------------------------------------------------------------
def _layers(loss, wrt, forward):
    """(layer nodes on the paths from wrt to the loss, loss first; their labels; the edges
    (node, position) on those paths)."""
    consumers = {}
    for n in forward:
        for p in n.inputs:
            consumers.setdefault(id(p), []).append(n)
    on = {}
    for n in forward:
        on[id(n)] = n is wrt or any(on[id(p)] for p in n.inputs)
    is_layer = {id(n): n is loss or n is wrt or n.kind != "op" or _top(n) == ""
                or any(_top(c) != _top(n) for c in consumers.get(id(n), ())) for n in forward}
    depth, reach = {}, {}
    for n in forward:
        reach[id(n)] = max([depth[id(p)] if is_layer[id(p)] else reach[id(p)] for p in n.inputs], default=0)
        depth[id(n)] = reach[id(n)] + 1
    layers = [n for n in reversed(forward) if on[id(n)] and is_layer[id(n)]]
    labels, counts = {}, {}
    for n in layers:
        counts[depth[id(n)]] = counts.get(depth[id(n)], 0) + 1
    for n in layers:
        d = depth[id(n)]
        labels[n.name] = n.name if n is wrt else (f"z^{d}" if counts[d] == 1 else f"z^{d}[{n.name}]")
    edges = {(id(n), pos) for n in forward if on[id(n)] for pos, p in enumerate(n.inputs) if on[id(p)]}
    return layers, labels, edges, is_layer


def _inner_paths(top, bottom, edges, is_layer):
    """The graph's paths bottom -> top (lists of (node, position)), through non-layer nodes."""
    found = []

    def walk(node, suffix):
        for pos, p in enumerate(node.inputs):
            if (id(node), pos) not in edges or len(found) >= MAX_INNER_PATHS:
                continue
            if p is bottom:
                found.append([(node, pos)] + suffix)
            elif not is_layer[id(p)]:
                walk(p, [(node, pos)] + suffix)
    walk(top, [])
    return found


class _Backprop:
    """delta(bottom) from a delta fed at layer node ``top``, through the graph's edges inside
    the layer: graphnn's own backward rules (:mod:`graphnn.derive.autodiff`), built once."""

    def __init__(self, top, bottom, forward, edges, is_layer):
        _tie_nodes.clear()
        self.seed = Node("input", None, (), {}, top.shape, top.dtype, _SEED, top.graph, top.scope, role="delta")
        inside = {id(top)}
        for n in reversed(forward):
            if id(n) in inside:
                inside.update(id(p) for pos, p in enumerate(n.inputs)
                              if (id(n), pos) in edges and not is_layer[id(p)])
        pending, self.delta = {id(top): [self.seed]}, None
        for n in reversed(forward):
            contributions = pending.pop(id(n), [])
            if not contributions:
                continue
            delta = _accumulate(n, contributions, top.graph)
            if n is bottom:
                self.delta = delta
                break
            if id(n) not in inside or n.kind != "op":
                continue
            make = _elementwise_contribution if n.op.kind == "elementwise" else _index_contribution
            for pos, p in enumerate(n.inputs):
                if (id(n), pos) in edges and (p is bottom or id(p) in inside):
                    c = make(n, pos, delta, top.graph)
                    if c is not None:
                        pending.setdefault(id(p), []).append(c)
        self.bottom = bottom

    def __call__(self, cotangent, feed, batch):
        if self.delta is None:
            return np.zeros(tuple(batch if d is None else d for d in self.bottom.shape))
        value = evaluate([self.delta], {**feed, _SEED: cotangent})[self.delta.name]
        return np.broadcast_to(value, tuple(batch if d is None else d for d in self.bottom.shape)).copy()


def _only(value, node, element):
    """``value`` (shaped like ``node``) with every element but ``element`` set to 0."""
    if element is None:
        return value
    out = np.zeros_like(value)
    flat_in, flat_out = (value.reshape(value.shape[0], -1), out.reshape(out.shape[0], -1)) if node.batched \
        else (value.reshape(1, -1), out.reshape(1, -1))
    flat_out[:, element] = flat_in[:, element]
    return out


def _pick(value, node, element):
    if element is None or _size(node) == 1:
        return value
    return value.reshape(value.shape[0], -1)[:, element] if node.batched else value.reshape(-1)[element]


def explain(loss, wrt, feed=None):
    """The chain rule for d``loss``/d``wrt``, as the lecture writes it (see the module docs).

    >>> import graphnn as gn, numpy as np
    >>> g = gn.Graph(); x = g.input("x", (None, 1))
    >>> w = g.parameter("w", (1, 1), value=[[2.0]])
    >>> loss = gn.sum(gn.tanh(gn.matmul(x, w)))
    >>> e = gn.explain(loss, wrt=w, feed={"x": np.array([[0.5]])})
    >>> print(str(e).splitlines()[6])
    dz^4/dw = dz^4/dz^3 * dz^3/dz^2 * dz^2/dw
    >>> bool(np.allclose(e.path_sum, e.gradient))
    True
    """
    check_loss(loss, "explain")
    check_node(wrt, "explain", "wrt")
    if wrt.graph is not loss.graph:
        raise GraphMixError(f"explain: wrt {wrt.name!r} belongs to graph {wrt.graph.name!r}, the loss "
                            f"{loss.name!r} to graph {loss.graph.name!r}; pick a node of the loss's graph")
    forward = topological([loss])
    if wrt is loss or all(n is not wrt for n in forward):
        raise ArgumentError(f"explain: the loss {loss.name!r} does not depend on wrt {wrt.name!r}"
                            + (" (it is the loss itself)" if wrt is loss else "")
                            + "; pick a parameter, input or node the loss is computed from")
    back = derive(loss)
    if not back.has_delta(wrt):
        raise ArgumentError(f"explain: the loss {loss.name!r} has no gradient with respect to wrt "
                            f"{wrt.name!r} (it reads it only through stop_gradient or a constant)")
    layers, labels, edges, is_layer = _layers(loss, wrt, forward)
    layer_edges = {}
    for b in layers:
        for a in layers:
            paths = _inner_paths(b, a, edges, is_layer) if b is not a else []
            if paths:
                layer_edges[(b, a)] = [[local_derivative(n, pos) for n, pos in path] for path in paths]
    steps = _layer_paths(loss, wrt, layers, layer_edges)
    elementwise = sum(int(np.prod([_size(n) for n, _ in path[1:-1]])) for path in steps) <= MAX_PATHS
    terms = [Term(list(zip([n for n, _ in path], elems)))
             for path in steps
             for elems in itertools.product(*[[None]] + [range(_size(n)) if elementwise else [None]
                                                         for n, _ in path[1:-1]] + [[None]])]
    deltas = gradient = None
    if feed is not None:
        try:
            _, batch = check_feeds(forward, feed)
        except FeedError as exc:
            raise FeedError(f"explain: {exc}") from None
        props = {(b, a): _Backprop(b, a, forward, edges, is_layer) for b, a in layer_edges}
        deltas = _numbers(loss, wrt, layers, layer_edges, props, terms, feed, batch)
        gradient = evaluate([back.delta(wrt)], feed)[back.delta(wrt).name]
    return Explanation(loss, wrt, layers, labels, layer_edges,
                       terms, elementwise, deltas, gradient)


def _layer_paths(loss, wrt, layers, layer_edges):
    """The paths loss -> ... -> wrt over the layer nodes, as lists of (node, None)."""
    out = []

    def walk(node, prefix):
        if node is wrt:
            out.append(prefix)
            return
        for a in layers:
            if (node, a) in layer_edges:
                walk(a, prefix + [(a, None)])
    walk(loss, [(loss, None)])
    return out


def _numbers(loss, wrt, layers, layer_edges, props, terms, feed, batch):
    """Fill each term's factors and product; return the delta recursion's values."""
    full = lambda n: tuple(batch if d is None else d for d in n.shape)  # noqa: E731
    deltas = {loss.name: np.ones(full(loss))}
    for a in layers[1:]:    # loss first: every consumer's delta is known before its inputs'
        deltas[a.name] = sum(props[(b, a)](deltas[b.name], feed, batch)
                             for b in layers if (b, a) in layer_edges)
    factors = {}
    for t in terms:
        value, t.factors = np.ones(full(loss)), []
        for (b, k), (a, i) in zip(t.steps, t.steps[1:]):
            value = _only(props[(b, a)](value, feed, batch), a, i)
            key = (b.name, k, a.name, i)
            if key not in factors:
                factors[key] = _factor_value(props[(b, a)], b, k, a, i, feed, batch, full)
            t.factors.append(factors[key])
        t.value = value
    return deltas


def _factor_value(prop, b, k, a, i, feed, batch, full):
    """dz_b[k]/dz_a[i] per example (for a parameter ``a``: an array per example); None when the
    batch is too large to list."""
    def seed(row=None):
        s = np.zeros(full(b))
        flat = s.reshape(s.shape[0], -1) if b.batched else s.reshape(1, -1)
        flat[slice(None) if row is None else row, slice(None) if k is None else k] = 1.0
        return s
    if b.batched and not a.batched:
        if batch > MAX_ROWS:
            return None
        return np.stack([prop(seed(n), feed, batch) for n in range(batch)])
    return _pick(prop(seed(), feed, batch), a, i)
