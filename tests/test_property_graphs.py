"""Properties of random graphs, checked with hypothesis.

* the CPU target (float64) computes what the NumPy reference computes, forward and gradients;
* the reference's derived gradients agree with central finite differences;
* bad feeds and bad graph-building calls either work or raise a ``gn.GraphnnError`` with a message;
* node names made of hostile text (quotes, newlines, NUL, ``ﬁ`` next to ``fi``) compile and keep
  their values apart.

A random graph is written as Python source, one line per node or layer, and built by running
that source: a failing example prints a program that rebuilds it. The ops come from
``gn.REGISTRY`` (every elementwise op; each index op through a writer below); an elementwise
op's input domain is found by probing its body and its kinks are read off its SymPy body.

Each distinct graph compiled for the CPU costs Numba one to several seconds, so the compiled
properties run a fraction of the profile's examples. The profiles are in conftest.py;
``python3 -m pytest --hypothesis-profile=long tests/test_property_graphs.py`` runs many more.
"""
import functools
import importlib.util
import tempfile
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from hypothesis import Phase, assume, event, find, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import graphnn as gn
from compile_support import assert_close, compile_cpu, compile_reference
from support import forward_and_derivatives


def scaled(fraction):
    """The loaded profile's settings with ``fraction`` of its examples (at least 2)."""
    return settings(max_examples=max(2, int(settings.default.max_examples * fraction)))


# -- what the registry declares ------------------------------------------------------------------
ELEMENTWISE = sorted(name for name, op in gn.REGISTRY.items() if op.kind == "elementwise")
INDEX_OPS = sorted(name for name, op in gn.REGISTRY.items() if op.kind == "index")

# an operand is mapped into an op's domain by a smooth adapter; "real" takes it as it is
DOMAINS = {
    "real": (-2.0, 2.0, "{}"),
    "positive": (0.3, 3.0, "(gn.sigmoid({}) * 2.7 + 0.3)"),
    "unit": (0.05, 0.95, "(gn.sigmoid({}) * 0.9 + 0.05)"),
}
KINK_MARGIN = 1e-3      # finite differences step 1e-6: inputs this close to a kink are rejected
LARGEST = 1e4           # and so are graphs whose values grow past this (exp of exp of ...)


@functools.lru_cache(maxsize=None)
def domains(op_name, attrs=()):
    """For each input of an elementwise op, the first domain of DOMAINS on which its value and
    derivatives are finite and moderate (the other inputs at 0.5, which is in every domain):
    a clamp, like BCE's log clamped at -100, is finite but not where gradients are checked."""
    op = gn.REGISTRY[op_name]
    chosen = []
    for position in range(len(op.arg_names)):
        for name, (low, high, _) in DOMAINS.items():
            args = [np.full(41, 0.5) for _ in op.arg_names]
            args[position] = np.linspace(low, high, 41)
            with np.errstate(all="ignore"):
                value, derivatives = forward_and_derivatives(op, args, dict(attrs))
            if all(np.all(np.abs(a) < 1e3) for a in [value, *derivatives]):
                chosen.append(name)
                break
        else:
            raise AssertionError(f"op {op_name!r}: input {position} is finite on none of {list(DOMAINS)}")
    return tuple(chosen)


@functools.lru_cache(maxsize=None)
def kinks(op_name, attrs=()):
    """{input position: points} where an elementwise op's derivative jumps: the roots of its
    Piecewise conditions and of the arguments of Abs, sign, Max and Min."""
    op = gn.REGISTRY[op_name]
    expr = op.expr(dict(attrs))
    edges = [r.lhs - r.rhs for r in expr.atoms(sp.Rel)]
    edges += [f.args[0] for f in expr.atoms(sp.Abs, sp.sign)]
    edges += [f.args[0] - f.args[1] for f in expr.atoms(sp.Max, sp.Min) if len(f.args) == 2]
    points = {}
    for edge in edges:
        free = edge.free_symbols & set(op.symbols)
        if len(free) == 1:
            symbol = free.pop()
            roots = [float(r) for r in sp.solve(edge, symbol) if r.is_real]
            points.setdefault(op.symbols.index(symbol), set()).update(roots)
    return {k: tuple(sorted(v)) for k, v in points.items()}


def blocks_gradient(op_name):
    """True for ops whose derived gradient differs from the true one on purpose (stop_gradient)."""
    return gn.REGISTRY[op_name].symbolic_expr.has(gn.StopGradient)


def attr_variants(op_name):
    """Attribute settings to draw from: the defaults, and each float default halved and doubled."""
    defaults = gn.REGISTRY[op_name].attr_defaults
    variants = [{}]
    for key, value in defaults.items():
        if isinstance(value, float):
            variants += [{key: value * 0.5}, {key: value * 2.0}]
    return variants


PINNED_NAMES = ("\ufb01", "fi")     # the ligature "ﬁ" and "fi"
HOSTILE = ["'", '"', '"""', "'''", "\\", "\n", "\r", "\x00", "#", "{", "}", "%s", " ", "\t", "\u2028",
           "\ufb01", "fi", "\u00b2", "2", "\U0001f600", "\u00e9", "e\u0301", "\u212b", "\u00c5",
           "\uff41", "a", "_", "$", ":", "-", "("]
hostile_names = st.lists(st.sampled_from(HOSTILE), min_size=1, max_size=4).map("".join)

LOSSES = ["mse", "bce", "bce_with_logits", "nll", "softmax_cross_entropy"]
COMPOSITES = ["dense", "softmax", "log_softmax"]


# -- random graphs, written as source ------------------------------------------------------------
class Case:
    """A random graph: the source that builds it, and what running that source made."""

    def __init__(self, lines, namespace):
        self.lines = lines
        self.graph, self.loss, self.feeds = namespace["g"], namespace["loss"], namespace["feeds"]

    @property
    def nodes(self):
        return gn.topological([self.loss, *self.graph.outputs.values()])

    def __repr__(self):  # falsifying examples print the program
        return "\n" + "\n".join(self.lines) + "\n"


class Writer:
    """Writes (and runs) the source of a random graph, one step at a time."""

    def __init__(self, draw, width, batch, seed, names):
        self.draw, self.width, self.batch, self.names = draw, width, batch, names
        self.lines, self.namespace = ["import numpy as np", "import graphnn as gn"], {"gn": gn, "np": np}
        self.acts = []          # variables usable as operands (inputs and op outputs)
        self.params = {}        # shape -> variables of parameters of that shape
        self.feeds = []         # (variable, source of its value)
        self.used_names = set()
        self.counter = 0
        self.emit(f"rng = np.random.default_rng({seed})")
        self.emit(f"g = gn.Graph('random', seed={seed})")

    def emit(self, line):
        exec(line, self.namespace)  # noqa: S102 - our own generated source
        self.lines.append(line)

    def var(self, prefix):
        self.counter += 1
        return f"{prefix}{self.counter}"

    def shape(self, var):
        return self.namespace[var].shape

    def node_name(self, default):
        """The source of a name: ``default`` (``None``: the op's own) or one drawn from ``names``."""
        if self.names is None:
            return None if default is None else repr(default)
        return repr(self.draw(self.names))

    def leaf(self, template, var):
        """Emit ``template`` (with ``{name}``) under a drawn name; a name already taken
        gets a "~" appended (leaf names are unique in a graph)."""
        name = self.node_name(var)
        while True:
            try:
                return self.emit(template.format(name=name))
            except gn.GraphnnError:
                name = repr(eval(name) + "~")  # noqa: S307 - the repr of a str

    def name_kw(self):
        name = self.node_name(None)
        return "" if name is None else f", name={name}"

    # leaves
    def input(self, shape, values):
        var = self.var("x")
        self.leaf(f"{var} = g.input({{name}}, {shape!r})", var)
        self.feeds.append((var, values))
        return var

    def parameter(self, shape):
        """An existing parameter of ``shape`` (shared) or a new one."""
        have = self.params.setdefault(tuple(shape), [])
        k = self.draw(st.integers(0, len(have)))
        if k < len(have):
            return have[k]
        var = self.var("p")
        self.leaf(f"{var} = g.parameter({{name}}, {tuple(shape)!r}, value=rng.uniform(-1, 1, {tuple(shape)!r}))",
                  var)
        have.append(var)
        return var

    def operand(self, rank=None):
        """An activation (any earlier one: fan-out and skip connections) or a parameter."""
        if rank is None and self.draw(st.integers(0, 4)) == 0:
            return self.parameter((self.width,))
        return self.draw(st.sampled_from([v for v in self.acts if rank in (None, len(self.shape(v)))]))

    def op(self, source, operand=True):
        var = self.var("h")
        self.emit(f"{var} = {source}")
        if operand:  # its shape broadcasts with every other operand's
            self.acts.append(var)
        return var

    # steps: one per elementwise op, one writer per index op, the composites
    def elementwise(self, name):
        attrs = self.draw(st.sampled_from(attr_variants(name)))
        operands = []
        for domain in domains(name, tuple(sorted(attrs.items()))):
            operands.append(DOMAINS[domain][2].format(self.operand()))
        attr_src = "".join(f", {k}={v!r}" for k, v in attrs.items())
        return self.op(f"gn.REGISTRY[{name!r}]({', '.join(operands)}{attr_src}{self.name_kw()})")

    def matmul(self, name):
        a = self.operand(rank=2)
        M = self.parameter((self.shape(a)[-1], self.width))
        return self.op(f"gn.matmul({a}, {M}{self.name_kw()})")

    def linear(self, name):
        a = self.operand(rank=2)
        W, b = self.parameter((self.shape(a)[-1], self.width)), self.parameter((self.width,))
        return self.op(f"gn.linear({a}, {W}, {b}{self.name_kw()})")

    def reduction(self, name):
        a = self.operand()
        shape = self.shape(a)
        options = [(None, False)]                        # (axis, keepdims)
        if shape:
            options += [(0, True), (0, False), (-1, True)]
        if len(shape) == 2 and shape[0] is not None:     # never a (N,) shape: it cannot broadcast
            options.append((-1, False))
        axis, keep = self.draw(st.sampled_from(options))
        return self.op(f"gn.REGISTRY[{name!r}]({a}, axis={axis}, keepdims={keep}{self.name_kw()})")

    def sum_to(self, name):
        a = self.operand()
        shape = self.shape(a)
        k = self.draw(st.integers(0, len(shape) - (shape[:1] == (None,))))
        tail = shape[len(shape) - k:]
        target = tuple(1 if self.draw(st.booleans()) else d for d in tail)
        return self.op(f"gn.sum_to({a}, shape={target!r}{self.name_kw()})")

    def label_one_hot(self, name):
        """Integer class labels, fed to an input (N, 1), as one-hot rows (N, width)."""
        labels = self.input((None, 1), f"rng.integers(0, {self.width}, ({self.batch}, 1))")
        return self.op(f"gn.REGISTRY['label_one_hot']({labels}, classes={self.width}{self.name_kw()})")

    def append_axes(self, name):
        """Trailing axes of size 1, summed away again so the result broadcasts as its operand."""
        a = self.operand()
        k = self.draw(st.integers(1, 2))
        return self.op(f"gn.sum(gn.REGISTRY['append_axes']({a}, count={k}{self.name_kw()}), "
                       f"axis={tuple(range(-k, 0))!r})")

    def image(self, name):
        """conv2d -> a pooling -> flatten -> matmul: an image branch joining the graph."""
        channels, stride, padding = (self.draw(st.integers(1, 2)), self.draw(st.integers(1, 2)),
                                     self.draw(st.integers(0, 1)))
        img = self.input((None, 1, 4, 4), f"rng.uniform(-1, 1, ({self.batch}, 1, 4, 4))")
        K, kb = self.parameter((channels, 1, 3, 3)), self.parameter((channels,))
        conv = self.op(f"gn.conv2d({img}, {K}, {kb}, stride={stride}, padding={padding}{self.name_kw()})",
                       operand=False)
        pool = self.draw(st.sampled_from(["max_pool2d", "avg_pool2d"]))
        size = self.draw(st.integers(1, self.shape(conv)[-1]))
        pooled = self.op(f"gn.{pool}({conv}, size={size}{self.name_kw()})", operand=False)
        flat = self.op(f"gn.flatten({pooled}{self.name_kw()})", operand=False)
        M = self.parameter((self.shape(flat)[-1], self.width))
        return self.op(f"gn.matmul({flat}, {M}{self.name_kw()})")

    def dense(self, name):
        a = self.operand(rank=2)
        activation = self.draw(st.sampled_from((None,) + tuple(gn.ACTIVATIONS)))
        return self.op(f"gn.dense({a}, {self.width}, activation={activation!r}, "
                       f"name={self.node_name('dense') or repr('dense')})")

    def softmax(self, name):
        a = self.operand()
        if not self.shape(a):
            return None
        return self.op(f"gn.{name}({a}, axis=-1{self.name_kw()})")

    log_softmax = softmax

    def step(self, kind):
        if kind in ELEMENTWISE:
            return self.elementwise(kind)
        writer = {"matmul": self.matmul, "linear": self.linear, "sum": self.reduction,
                  "mean": self.reduction, "max": self.reduction, "mean_square": self.reduction,
                  "sum_to": self.sum_to,
                  "conv2d": self.image, "max_pool2d": self.image, "avg_pool2d": self.image,
                  "flatten": self.image}.get(kind) or getattr(self, kind)
        return writer(kind)


INDEX_WRITTEN = {"matmul", "linear", "sum", "mean", "max", "sum_to", "conv2d", "max_pool2d",
                 "avg_pool2d", "flatten", "label_one_hot", "mean_square", "append_axes"}


def step_kinds(finite_differences):
    ops = [n for n in ELEMENTWISE if not (finite_differences and blocks_gradient(n))]
    return ops + INDEX_OPS + COMPOSITES


@st.composite
def random_graphs(draw, min_nodes=3, max_nodes=40, names=None, finite_differences=False):
    """A random graph of ``min_nodes``..``max_nodes`` nodes (a layer may add a few more) before
    its prediction and loss, as a :class:`Case`.

    Operands are any earlier activation or a parameter (new or shared), so fan-out, shared
    parameters and skip connections all occur; the activations nobody consumes are added up
    into the prediction, and a loss (plus, sometimes, a penalty on a parameter) ends it."""
    width, batch, seed = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(0, 2 ** 16))
    w = Writer(draw, width, batch, seed, names)
    pinned = []
    if names is not None:  # two parameters whose names are one Python identifier after NFKC
        for name in PINNED_NAMES:
            var = w.var("p")
            w.emit(f"{var} = g.parameter({name!r}, ({width},), value=rng.uniform(-1, 1, ({width},)))")
            w.params.setdefault((width,), []).append(var)
            pinned.append(var)
    w.acts.append(w.input((None, width), f"rng.uniform(-1.5, 1.5, ({batch}, {width}))"))
    if draw(st.booleans()):
        w.acts.append(w.input((None, width), f"rng.uniform(-1.5, 1.5, ({batch}, {width}))"))
    size = draw(st.integers(min_nodes, max_nodes))
    kinds = step_kinds(finite_differences)
    while len(gn.topological([w.namespace[v] for v in w.acts])) < size:
        kind = draw(st.sampled_from(kinds))
        if w.step(kind) is not None:
            event(f"step {kind}")
    # the prediction: every activation nobody consumes, added up, made (batch, width)
    ns = w.namespace
    consumed = {id(i) for n in gn.topological([ns[v] for v in w.acts]) for i in n.inputs}
    loose = [v for v in w.acts if id(ns[v]) not in consumed]
    full = [v for v in w.acts if w.shape(v) == (None, width)]
    if w.shape(loose[-1]) != (None, width):
        loose.append(full[-1])
    w.emit(f"pred = {' + '.join(reversed(loose))}")
    if pinned:
        w.emit(f"pred = pred * {pinned[0]} + {pinned[1]}")
    outputs, used = draw(st.lists(st.sampled_from(w.acts), max_size=2, unique=True)), set()
    for k, v in enumerate(["pred", *outputs]):
        name = eval(w.node_name(f"out{k}"))  # noqa: S307 - the repr of a str
        while name in used:
            name += "~"
        used.add(name)
        w.emit(f"g.output({name!r}, {v})")
    # the loss and its target
    loss = draw(st.sampled_from(LOSSES))
    reduction = draw(st.sampled_from(["mean", "sum"]))
    shape = f"({batch}, {width})"
    target = {"mse": f"rng.normal(size={shape})", "bce": f"rng.uniform(0, 1, {shape})",
              "bce_with_logits": f"rng.uniform(0, 1, {shape})",
              "nll": f"np.eye({width})[rng.integers(0, {width}, {batch})]",
              "softmax_cross_entropy": f"rng.dirichlet(np.ones({width}), {batch})"}[loss]
    y = w.input((None, width), target)
    p = DOMAINS["unit"][2].format("pred") if loss == "bce" else "pred"
    w.emit(f"loss = gn.{loss}({p}, {y}, reduction={reduction!r})")
    reached = [n for n in gn.topological([ns["loss"]]) if n.kind == "parameter"]
    if not reached or draw(st.booleans()):  # a penalty on some parameter (a shared one, often)
        penalty = draw(st.sampled_from(["l1_penalty", "l2_penalty"]))
        shapes = sorted(w.params, key=repr)
        P = w.parameter(draw(st.sampled_from(shapes)) if shapes else (width,))
        w.emit(f"loss = loss + gn.{penalty}({P}, lam={draw(st.sampled_from([0.01, 0.5]))})")
    w.emit("feeds = {" + ", ".join(f"{v}.name: {src}" for v, src in w.feeds) + "}")
    case = Case(w.lines, w.namespace)
    event(f"nodes: {len(case.nodes) // 10 * 10}+")
    return case


def reference_values(case):
    """Every node's reference value; rejects examples whose values are not finite or too large."""
    values = gn.evaluate(case.nodes, case.feeds)
    for v in values.values():
        assume(np.all(np.isfinite(v)) and np.max(np.abs(v), initial=0.0) < LARGEST)
    return values


def reject_kinks(case, values):
    """Reject examples where finite differences would step across a kink or a tie of ``max``.

    An input exactly on a kink is kept: it is there by construction (a saturated relu feeding
    another), and then it and everything that reaches it through the flat side have gradient 0."""
    for node in case.nodes:
        if node.kind != "op":
            continue
        if node.op.kind == "elementwise":
            for position, points in kinks(node.op.name, node.attrs).items():
                v = values[node.inputs[position].name]
                for p in points:
                    d = np.abs(v - p)
                    assume(not np.any((d > 0) & (d < KINK_MARGIN)))
        elif node.op.name == "max":
            v, axis = values[node.inputs[0].name], node.attr("axis")
            v = v.reshape(-1) if axis is None else np.moveaxis(v, axis, -1)
            if v.shape[-1] > 1:
                top = np.sort(v, axis=-1)
                gap = top[..., -1] - top[..., -2]
                assume(not np.any((gap > 0) & (gap < KINK_MARGIN)))


# -- the properties ------------------------------------------------------------------------------
@pytest.fixture(scope="module", autouse=True)
def op_tables():
    """Probe every op's domains and kinks once, before hypothesis times the first example."""
    for name in ELEMENTWISE:
        for attrs in attr_variants(name):
            domains(name, tuple(sorted(attrs.items())))
            kinks(name, tuple(sorted(attrs.items())))


def test_every_registered_op_has_a_step():
    assert set(INDEX_OPS) <= INDEX_WRITTEN, f"index ops with no writer: {sorted(set(INDEX_OPS) - INDEX_WRITTEN)}"
    assert {"relu", "tanh", "exp", "log", "div", "matmul", "sum", "conv2d"} <= set(ELEMENTWISE + INDEX_OPS)


def test_domains_and_kinks_are_read_off_the_bodies():
    assert domains("log") == ("positive",) and domains("div") == ("real", "positive")
    assert domains("bce_elementwise") == ("unit", "real") and domains("tanh") == ("real",)
    assert kinks("relu") == {0: (0.0,)} and kinks("relu6") == {0: (0.0, 6.0)}
    assert kinks("hardswish") == {0: (-3.0, 3.0)} and kinks("abs") == {0: (0.0,)}
    assert kinks("tanh") == {} and blocks_gradient("stop_gradient") and not blocks_gradient("relu")


FEATURES = {
    "fan-out": lambda c: any(sum(i is n for m in c.nodes for i in m.inputs) > 1 for n in c.nodes
                             if n.kind == "op"),
    "shared parameter": lambda c: any(sum(i is n for m in c.nodes if m.kind == "op" for i in m.inputs) > 1
                                      for n in c.nodes if n.kind == "parameter"),
    "skip connection": lambda c: any(m.op_name == "add" and len({i.name for i in m.inputs}) == 2
                                     and m.inputs[1] in gn.topological([m.inputs[0]]) for m in c.nodes),
    "40 nodes": lambda c: len(c.nodes) >= 40,
}


@pytest.mark.parametrize("what", [f"op {name}" for name in ELEMENTWISE + INDEX_OPS + COMPOSITES + LOSSES]
                         + list(FEATURES))
def test_the_generator_reaches(what):
    """Every op, loss and graph feature is drawn by some example (found by a search)."""
    def has(case):
        if what in FEATURES:
            return FEATURES[what](case)
        name = what[len("op "):]
        return (any(n.op_name == name for n in case.nodes)
                or any(f"gn.{name}(" in line for line in case.lines))
    find(random_graphs(), has, settings=settings(max_examples=1000, database=None, derandomize=True,
                                                 phases=[Phase.generate]))


@scaled(2.0)
@given(case=random_graphs(finite_differences=True))
def test_reference_gradients_match_finite_differences(case):
    values = reference_values(case)
    reject_kinks(case, values)
    wrt = [n.name for n in gn.topological([case.loss]) if n.kind in ("input", "parameter")]
    report = gn.check_grad(case.loss, case.feeds, wrt=wrt, eps=1e-6, tolerance=1e-5, directions=1)
    assert report.ok, str(report)


def assert_cpu_matches_reference(case):
    """Forward outputs, loss and gradients of the CPU target (float64) equal the reference's."""
    compiled = compile_cpu(case.graph, case.loss, dtype="float64")
    reference = compile_reference(case.graph, case.loss, dtype="float64")
    got, want = compiled.forward(case.feeds), reference.forward(case.feeds)
    assert set(got) == set(want) == set(case.graph.outputs)
    for name in want:
        assert_close(got[name], want[name], "float64", f"forward {name!r}")
    loss, grads = compiled.loss_and_gradients(case.feeds)
    ref_loss, ref_grads = reference.loss_and_gradients(case.feeds)
    assert_close(loss, ref_loss, "float64", "loss")
    assert set(grads) == set(ref_grads)
    for name in ref_grads:
        assert_close(grads[name], ref_grads[name], "float64", f"d loss / d {name!r}")
    return compiled, grads


@scaled(0.15)
@given(case=random_graphs())
def test_compiled_cpu_matches_the_reference(case):
    reference_values(case)
    assert_cpu_matches_reference(case)


@scaled(0.1)
@given(case=random_graphs(max_nodes=12, names=hostile_names))
def test_hostile_names_compile_and_keep_their_values_apart(case):
    """Quotes, backslashes, newlines, NUL, '#', non-ASCII names: and "ﬁ" next to "fi", which
    Python reads as one identifier (NFKC), each keep their own gradient."""
    reference_values(case)
    compiled, grads = assert_cpu_matches_reference(case)
    assert set(PINNED_NAMES) <= set(grads)
    # the exported module is valid Python and its _META names the feeds and outputs exactly
    with tempfile.TemporaryDirectory() as folder:
        path = compiled.export(Path(folder) / "kernels.py")
        spec = importlib.util.spec_from_file_location("graphnn_exported_kernels", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    forward = module._META["forward"]
    assert set(forward["outputs"]) == set(case.graph.outputs)
    assert set(forward["feeds"]) <= set(case.feeds)
    assert {f"grad::{name}" for name in PINNED_NAMES} <= set(module._META["gradients"]["outputs"])


# -- bad feeds: work, or a FeedError (a GraphnnError) with a message, the same on both targets ----
def outcome(call):
    """"works", or the name of the GraphnnError ``call`` raised (with a non-empty message).
    Any other exception propagates: that is the failure these properties look for."""
    try:
        call()
    except gn.GraphnnError as error:
        assert str(error).strip(), f"{type(error).__name__} with an empty message"
        return type(error).__name__
    return "works"


FEED_SHAPES = {"x": (None, 3), "y": (None, 2), "u": (2,)}


@functools.lru_cache(maxsize=None)
def feed_models():
    """One small net, compiled once for each target: x (N, 3), y (N, 2) and an unbatched u (2,)."""
    g = gn.Graph("feeds", seed=1)
    x, y, u = (g.input(k, s) for k, s in FEED_SHAPES.items())
    out = g.output("out", gn.dense(x, 2, activation="tanh", name="hidden") * u)
    loss = gn.mse(out, y)
    return {"reference": compile_reference(g, loss, dtype="float64"),
            "cpu": compile_cpu(g, loss, dtype="float64")}


def valid_feed(name, batch):
    shape = tuple(batch if d is None else d for d in FEED_SHAPES[name])
    return np.random.default_rng(len(name)).uniform(-1, 1, shape)


JUNK_VALUES = st.one_of(
    st.sampled_from([None, "x", "", b"\x00", [], [[1.0, 2.0, 3.0], [4.0]], [[1, 2, 3], [4, 5, 6]],
                     {"x": 1.0}, {1, 2}, (), 3, 2.5, True, float("nan"), np.float64(1.0), 1j,
                     np.array(["a", "b", "c"]), np.array([None, 1.0], dtype=object),
                     np.array(1.0), np.datetime64("2020-01-01"), np.ones((2, 3), dtype=np.float16)]),
    hnp.arrays(dtype=st.sampled_from(["float64", "float32", "int64", "int8", "uint8", "bool", "complex128",
                                      "U2", "M8[s]"]),
               shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4)),
)


@st.composite
def near_values(draw, name, batch):
    """A valid feed changed a little: wrong batch or width, a dimension more or less, empty,
    or the same numbers as a list, transposed, strided or read-only (these must work)."""
    v = valid_feed(name, batch)
    return draw(st.sampled_from([
        valid_feed(name, batch + 1), valid_feed(name, 0), v[..., :-1], v[None], v[..., None],
        v.reshape(-1), v.T, v.tolist(), tuple(map(tuple, v)) if v.ndim == 2 else tuple(v),
        np.asfortranarray(v), np.repeat(v, 2, axis=-1)[..., ::2], v.astype(np.float32),
        v.astype(np.int64), np.full_like(v, np.nan), np.full_like(v, np.inf), v[:, None] if v.ndim == 2 else v,
        np.lib.stride_tricks.as_strided(v, writeable=False)]))


@st.composite
def bad_feeds(draw):
    """Valid feeds with one to three things broken: a value replaced, a feed dropped, an extra
    or renamed feed; or no dict at all."""
    batch = draw(st.integers(1, 3))
    feeds = {name: valid_feed(name, batch) for name in FEED_SHAPES}
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(["junk", "near", "drop", "extra", "rename"]))
        name = draw(st.sampled_from(sorted(FEED_SHAPES)))
        if action == "junk":
            feeds[name] = draw(JUNK_VALUES)
        elif action == "near":
            feeds[name] = draw(near_values(name, batch))
        elif action == "drop":
            feeds.pop(name, None)
        else:
            key = draw(st.one_of(hostile_names, st.sampled_from(["X", "x ", "", 0, None, b"x", ("x",)])))
            value = feeds.pop(name, None) if action == "rename" else valid_feed("x", batch)
            feeds[key] = value
    if draw(st.integers(0, 9)) == 0:
        feeds = draw(st.sampled_from([None, [], "x", 3, list(feeds.items())]))
    return feeds


SIZES = st.one_of(st.integers(-1, 5), st.sampled_from([None, 2.5, "2", True, 10 ** 6]))
FEED_CALLS = {
    "forward": lambda m, f, size: m.forward(f),
    "predict": lambda m, f, size: m.predict(f),
    "loss_and_gradients": lambda m, f, size: m.loss_and_gradients(f),
    "evaluate_loss": lambda m, f, size: m.evaluate_loss(f),
    "step": lambda m, f, size: m.step(f),
    "train_steps": lambda m, f, size: m.train_steps(f, batch_size=size, steps=1),
    "fit": lambda m, f, size: m.fit(f, epochs=1, batch_size=size, verbose=False),
    "evaluate": lambda m, f, size: gn.evaluate([m.loss_node], f),
}


@scaled(2.0)
@given(feeds=bad_feeds(), call=st.sampled_from(sorted(FEED_CALLS)), size=SIZES)
def test_bad_feeds_work_or_raise_a_graphnn_error(feeds, call, size):
    outcomes = {target: outcome(lambda: FEED_CALLS[call](model, feeds, size))
                for target, model in feed_models().items()}
    event(f"{call}: {outcomes['reference']}")
    assert outcomes["cpu"] == outcomes["reference"], f"{call}: the targets disagree: {outcomes}"


# -- bad graph-building calls: work, or a GraphnnError with a message; what works evaluates ------
CALL_SETUP = ["g = gn.Graph('calls', seed=0)", "x = g.input('x', (None, 3))", "v = g.parameter('v', (3,))",
              "m = g.parameter('m', (3, 3))", "img = g.input('img', (None, 1, 4, 4))",
              "k = g.parameter('k', (2, 1, 3, 3))", "kb = g.parameter('kb', (2,))"]
NODES = ["x", "v", "m", "img", "k", "kb"]


def float_source(value):
    return f"float({str(value)!r})" if not np.isfinite(value) else repr(value)


JUNK = st.one_of(
    st.sampled_from(["None", "True", "False", "0", "-1", "1", "2", "3", "1.5", "-0.5", "float('nan')",
                     "float('inf')", "1e300", "10**30", "''", "'x'", "'relu'", "'mean'", "'\\x00'", "b'x'",
                     "[]", "[1, 2]", "(3,)", "(None, 3)", "(0, 0)", "{}", "object()", "np.int64(2)",
                     "np.float32(0.5)", "np.array([1.0, 2.0])", "np.ones((2, 2))", "np.array('a')", "1j",
                     "(lambda *a: 1)", "gn.relu", "sp.Symbol('z')", "g", *NODES]),
    st.integers(-3, 5).map(repr), st.floats().map(float_source), st.text(max_size=3).map(repr))
SLOTS = {
    "J": JUNK,
    "X": st.sampled_from(NODES),                                        # a node
    "O": st.one_of(st.sampled_from(NODES), JUNK),                      # an operand
    "N": st.one_of(hostile_names.map(repr), JUNK),                      # a name
    "S": st.one_of(st.sampled_from(["(None, 3)", "(3,)", "()", "(0,)", "(-1,)", "(3, None)", "(None, None)",
                                    "(1.5,)", "('a',)", "(True, 2)", "(np.int64(2),)", "[None, 2]",
                                    "(2, 2, 2, 2, 2)", "(10**30,)"]), JUNK),      # a shape
    "D": st.one_of(st.sampled_from(["None", "'float32'", "'float64'", "'int32'", "'float16'", "'abc'", "int",
                                    "np.float64", "np.dtype('f8')", "'f8'"]), JUNK),  # a dtype
    "I": st.one_of(st.sampled_from(["'normal'", "'zeros'", "'nope'", "(lambda rng, shape: np.ones(3))",
                                    "(lambda rng, shape: 'x')", "gn.init.uniform(0.5)"]), JUNK),  # an init
}
BUILD_CALLS = [
    "gn.Graph({N}, seed={J})", "g.input({N}, {S}, dtype={D})", "g.constant({J})", "g.output({N}, {O})",
    "g.parameter({N}, {S}, init={I}, value={J}, trainable={J}, dtype={D})", "g.random({N}, {S}, {J}, eval={J})",
    "gn.dense({O}, {J}, activation={J}, name={N})", "gn.dense({O}, 2, init={I}, use_bias={J})",
    "gn.softmax({O}, axis={J})", "gn.log_softmax({O}, axis={J})", "gn.l1_penalty({O}, lam={J})",
    "gn.l2_penalty({O}, lam={J})", "gn.derive({O})", "gn.substitute([{O}], dict([({X}, {O})]))",
    "{X} + {J}", "{J} * {X}", "{X} ** {J}", "{J} - {X}", "{X} @ {J}", "{J} / {X}", "-{X}",
    *[f"gn.{loss}({{O}}, {{O}}, reduction={{J}})" for loss in LOSSES],
]


@st.composite
def build_calls(draw):
    """Source for one graph-building call with random (mostly bad) arguments: a template above,
    or any registry op with its inputs, a name and some of its attributes."""
    template = draw(st.sampled_from(BUILD_CALLS + sorted(gn.REGISTRY)))
    if template in gn.REGISTRY:
        op = gn.REGISTRY[template]
        inputs = len(op.arg_names) + draw(st.sampled_from([0, 0, 0, 1, -1]))    # sometimes one off
        attrs = draw(st.lists(st.sampled_from(sorted(op.attr_defaults) or [""]), unique=True))
        attrs += draw(st.sampled_from([[], [], ["bogus"]]))                     # an unknown attribute
        template = (f"gn.REGISTRY[{template!r}]({'{O}, ' * inputs}name={{N}}"
                    + "".join(f", {a}={{J}}" for a in attrs if a) + ")")
    parts = template.split("{")
    source = parts[0]
    for part in parts[1:]:
        slot, rest = part.split("}", 1)
        source += f"({draw(SLOTS[slot])})" + rest
    return source


def fitting_feeds(graph):
    """Values for every input of ``graph`` (batch 2), or None when a shape is too large to feed."""
    shapes = {name: tuple(2 if d is None else d for d in n.shape) for name, n in graph.inputs.items()}
    if any(np.prod(s, dtype=float) > 1e4 for s in shapes.values()):
        return None
    return {name: np.random.default_rng(0).uniform(0.1, 1.0, s) for name, s in shapes.items()}


@scaled(3.0)
@given(call=build_calls())
def test_bad_graph_building_calls_work_or_raise_a_graphnn_error(call):
    """Bad shapes, attributes, names and operands: the call works or raises a GraphnnError; a node
    it builds then evaluates, with its gradient, or raises a GraphnnError (never a raw one)."""
    namespace = {"gn": gn, "np": np, "sp": sp}
    exec("\n".join(CALL_SETUP), namespace)  # noqa: S102
    note("\n".join(CALL_SETUP + [f"out = {call}"]))
    result = outcome(lambda: exec(f"out = {call}", namespace))  # noqa: S102
    event(f"{call.split('(')[0] or 'an operator'}: {result}")
    out = namespace.get("out")
    if result != "works" or not isinstance(out, gn.Node):
        return
    feeds = fitting_feeds(out.graph)
    if feeds is None:
        return
    outcome(lambda: gn.evaluate([out], feeds))
    outcome(lambda: gn.loss_and_gradients(gn.sum(out), feeds))
