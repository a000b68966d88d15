"""Lowering: a program of nodes to a :class:`KernelProgram`, as a list of named passes.

Each pass takes the :class:`Lowering` state and fills in one part of it:

1. :func:`plan_nodes` -- how each op node is computed: pointwise, a matrix
   product, or a reduction (:mod:`.pointwise`);
2. :func:`split_epilogues` -- a matrix product with a bias becomes the product
   into a scratch buffer plus a pointwise epilogue that can join a loop;
3. :func:`fuse` -- list scheduling into groups: ready pointwise nodes of the
   current loop shape join one loop, so elementwise chains -- forward, their
   derived backward expressions and optimizer updates -- run as single loops;
4. :func:`assign_buffers` -- a node gets a buffer only if something outside
   its loop reads it (or it is an output); loop-local values stay scalars;
5. :func:`emit_kernels` -- groups become ``Fused``, ``Contract`` and ``Reduce``
   kernels over buffer names;
6. :func:`eliminate_common_subexpressions` -- CSE over each fused body.

:data:`PASSES` lists them in order; :func:`lower` runs them. Target passes
(flattening, rows-outer sums, split reductions) follow in :mod:`.target`.
"""
import builtins
import keyword
import re
from dataclasses import dataclass, field
from enum import Enum

import sympy as sp

from ..graph.node import format_shape
from .ir import Buffer, Contract, Fused, KernelProgram, Reduce, Rows, Term
from .pointwise import KEEP_PRODUCTS, Access, plan_node

# every name any printer uses itself (module globals, helpers, kernel locals): the default
# for a lowering that does not say which printer it is for
RESERVED = {"np", "math", "N", "prange", "njit", "cuda", "params", "state", "work", "hyper",
            "numba", "range", "min", "max", "abs", "sum", "int", "float", "b", "t",
            "sigmoid", "softplus", "expm1", "clamped_log", "clamped_reciprocal", "stop_gradient",
            "fast_tanh", "fast_erf", "fast_exp", "_from_bits", "_types", "_intrinsic", "sa", "sb", "tx", "ty", "tid", "row0", "col0",
            "M", "P", "K", "e", "r", "c", "k0", "kk", "k_lo", "k_hi", "chunk", "split", "THREADS",
            "SPLIT_K", "SGEMM_TILE", "SGEMM_BK", "nan_max", "kn", "extra", "epilogue"}
# loop indices, temporaries and accumulators: i0, r1, c2, _l3, _acc0, a0, b1, acc01 ...; and
# the CUDA module's kernels (step_k3, step_k3_epilogue, step_k3_at, step_k3_finish): a program
# binds its buffers as locals and can launch another program's kernel (a shared loop nest)
GENERATED = re.compile(r"^(v_.*|(i|r|c|a|b|k|v|acc|_\w*)\d*|\w+_k\d+(_epilogue|_at|_row|_finish)*)$")


class GroupKind(Enum):
    LOOP = "loop"            # pointwise nodes fused into one loop nest
    PRODUCT = "product"      # the matrix product before a pointwise epilogue
    SINGLE = "single"        # a contraction or reduction on its own


@dataclass
class Group:
    kind: GroupKind
    nodes: list


class Names:
    """Buffer and temporary names made from node names: valid, unique, never a reserved word."""

    def __init__(self, reserved=None):
        self.used = set(RESERVED if reserved is None else reserved)

    def make(self, raw):
        # ASCII only: Python folds some non-ASCII identifiers together (NFKC: "\ufb01" is
        # "fi"), and node names are user text; the names stay as given in comments
        base = re.sub(r"[^0-9A-Za-z_]+", "_", str(raw)).strip("_") or "v"
        if base[0].isdigit() or keyword.iskeyword(base) or hasattr(builtins, base):
            base = "t_" + base
        if GENERATED.match(base):
            base = "t_" + base
        name, k = base, 1
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name


@dataclass
class Lowering:
    """What the passes read and write."""
    program: object
    dtype: str
    names: Names
    contractions: object = KEEP_PRODUCTS                # the target's choice for small products
    nodes: list = field(default_factory=list)
    users: dict = field(default_factory=dict)          # id(node) -> consumer nodes
    plans: dict = field(default_factory=dict)          # id(node) -> Plan
    buffers: dict = field(default_factory=dict)        # name -> Buffer
    buffer_of: dict = field(default_factory=dict)      # id(node) -> buffer name
    groups: list = field(default_factory=list)         # [Group]
    kernels: list = field(default_factory=list)

    def add_buffer(self, node, role, raw=None, shape=None):
        name = self.names.make(raw or node.name)
        value = node.attr("value") if node is not None and role == "const" else None
        self.buffers[name] = Buffer(name, node.shape if shape is None else shape, role, node, value)
        if node is not None and raw is None:
            self.buffer_of[id(node)] = name
        return name


def _leaf_role(node):
    if node.kind == "parameter":
        return "param"
    if node.kind == "constant":
        return "const"
    if node.role == "optimizer":   # hyper-parameters and optimizer slots, fed by the model
        return node.attr("feeds", "state")
    return "feed"


def plan_nodes(s):
    """Leaves get buffers; every op node gets a :class:`~.pointwise.Plan`."""
    s.nodes = s.program.nodes
    s.users = {id(n): [] for n in s.nodes}
    for n in s.nodes:
        for p in n.inputs:
            s.users[id(p)].append(n)
    for n in s.nodes:
        if n.kind != "op" and not (n.kind == "constant" and n.shape == ()):
            s.add_buffer(n, _leaf_role(n))
    s.plans = {id(n): plan_node(n, s.contractions) for n in s.nodes if n.kind == "op"}


def split_epilogues(s):
    """A matrix product with a pointwise epilogue (the bias) becomes product + epilogue.

    The product writes a scratch buffer; the epilogue is a pointwise plan that
    reads it, so it can join the loop of the activation that follows."""
    for n in s.nodes:
        plan = s.plans.get(id(n))
        if plan is not None and plan.kind == "contract" and plan.expr != 0:
            scratch = s.add_buffer(None, "work", raw=n.name + "_product", shape=n.shape)
            product = sp.Symbol("_product", real=True)
            plan.loads[product] = Access(scratch, plan.indices)
            plan.expr = plan.expr + product
            plan.kind = "pointwise"
            plan.product = scratch


def fuse(s):
    """Order the op nodes and cut them into :class:`Group` s (list scheduling).

    Among the ready nodes (all inputs computed), the first in program order that
    can join the open loop does; otherwise the loop closes and the first ready
    node starts the next group. A node joins a loop when it is pointwise of the
    loop's shape and reads no member at another index. An in-place update waits
    for every reader of what it overwrites, and must not race a read of another
    element of it in the same loop."""
    plans, nodes = s.plans, s.nodes
    order = {id(n): k for k, n in enumerate(nodes)}
    ops = [n for n in nodes if n.kind == "op"]
    deps = {id(n): {id(p) for p in n.inputs if p.kind == "op"} for n in ops}
    targets = _update_bundles(nodes, ops, s.users, deps)
    remaining = {id(n): len(deps[id(n)]) for n in ops}
    dependents = {id(n): [] for n in ops}
    for n in ops:
        for d in deps[id(n)]:
            dependents[d].append(n)
    ready = [n for n in ops if remaining[id(n)] == 0]
    groups, current, members = [], None, set()

    def joinable(n, after_product=False):
        plan = plans[id(n)]
        if current is None or plan.kind != "pointwise" or n.shape != current[0].shape:
            return False
        if plan.product is not None and not after_product:
            return False  # its matrix product must be emitted first (below)
        for acc in plan.loads.values():
            if id(acc.node) in members and acc.index != plan.indices:
                return False
        if n.role == "update":  # an in-place write must not race a read of another element
            written = targets[id(n)]
            for m in current:
                if any(id(acc.node) in written and acc.index != plans[id(m)].indices
                       for acc in plans[id(m)].loads.values()):
                    return False
        return True

    def done(n):
        for m in dependents[id(n)]:
            remaining[id(m)] -= 1
            if remaining[id(m)] == 0:
                ready.append(m)

    def close():
        nonlocal current, members
        if current:
            groups.append(Group(GroupKind.LOOP, current))
        current, members = None, set()

    while ready:
        ready.sort(key=lambda n: order[id(n)])
        pick = next((n for n in ready if joinable(n)), None)
        if pick is not None:
            ready.remove(pick)
            current.append(pick)
            members.add(id(pick))
            done(pick)
            continue
        pick = ready.pop(0)
        plan = plans[id(pick)]
        if plan.product is not None:
            # the product runs first; its epilogue may join the open loop unless the product
            # reads that loop's values
            if current and any(id(x) in members for x in plan.contract[:2]):
                close()
            groups.append(Group(GroupKind.PRODUCT, [pick]))
            if joinable(pick, after_product=True):
                current.append(pick)
                members.add(id(pick))
            else:
                close()
                current, members = [pick], {id(pick)}
        elif plan.kind == "pointwise":
            close()
            current, members = [pick], {id(pick)}
        else:
            close()
            groups.append(Group(GroupKind.SINGLE, [pick]))
        done(pick)
    close()
    s.groups = groups


def _update_bundles(nodes, ops, users, deps):
    """Order the in-place updates; returns update node id -> ids of the leaves its bundle writes.

    The updates of one parameter (the parameter and its optimizer slots) form a bundle:
    every rule reads the old values of all of them, so they get the same dependencies --
    everything else that reads any of them -- and run in the same loop, where every
    load comes before every store.
    """
    leaves = {n.name: n for n in nodes if n.kind in ("parameter", "input")}
    bundles = {}
    for n in ops:
        if n.role == "update":
            target = leaves[n.attr("update_of")]
            bundles.setdefault(n.attr("parameter"), []).append((n, target))
    written = {}
    for members in bundles.values():
        own = {id(n) for n, _ in members}
        shared = set()
        for n, target in members:
            shared |= deps[id(n)]
            shared |= {id(u) for u in users[id(target)] if id(u) not in own}
        leaf_ids = {id(target) for _, target in members}
        for n, _ in members:
            deps[id(n)] = set(shared)
            written[id(n)] = leaf_ids
    return written


def assign_buffers(s):
    """Work buffers for values read outside their loop; updates write their leaf's buffer."""
    group_of = {id(n): g for g, group in enumerate(s.groups) if group.kind is not GroupKind.PRODUCT
                for n in group.nodes}
    outputs = {id(n) for n in s.program.outputs.values()}
    update_target = {id(node): target for target, node in s.program.updates.items()}
    plans, users = s.plans, s.users

    def needs_buffer(n):
        if id(n) in outputs or plans[id(n)].kind != "pointwise":
            return True
        for u in users[id(n)]:
            if u.kind != "op" or group_of.get(id(u)) != group_of[id(n)]:
                return True
            if any(acc.node is n and acc.index != plans[id(u)].indices for acc in plans[id(u)].loads.values()):
                return True
        return False

    leaf_buffer = {b.node.name: name for name, b in s.buffers.items()
                   if b.node is not None and b.node.kind != "op"}
    for n in s.nodes:
        if id(n) in update_target:
            s.buffer_of[id(n)] = leaf_buffer[update_target[id(n)]]
        elif n.kind == "op" and needs_buffer(n):
            s.add_buffer(n, "work")
        elif n.kind == "constant" and n.shape == () and id(n) in outputs:   # a scalar constant output
            s.add_buffer(n, "const")


def emit_kernels(s):
    """Groups become kernels over buffer names."""
    for group in s.groups:
        n = group.nodes[0]
        plan = s.plans[id(n)]
        if group.kind is GroupKind.PRODUCT:
            a, b, ta, tb, scale = plan.contract
            s.kernels.append(Contract(plan.product, s.buffer_of[id(a)], s.buffer_of[id(b)], ta, tb, scale,
                                      comment=_comment(n) + "  (matrix product)"))
        elif group.kind is GroupKind.LOOP:
            s.kernels.append(_fused(group.nodes, s))
        elif plan.kind == "contract":
            a, b, ta, tb, scale = plan.contract
            s.kernels.append(Contract(s.buffer_of[id(n)], s.buffer_of[id(a)], s.buffer_of[id(b)], ta, tb, scale,
                                      comment=_comment(n)))
        else:
            s.kernels.append(_reduce(n, plan, s.buffer_of, s.buffer_of[id(n)]))


def eliminate_common_subexpressions(s):
    """Subexpressions shared within a fused body become temporaries computed once."""
    s.kernels = [_cse(k) if isinstance(k, Fused) else k for k in s.kernels]


PASSES = [plan_nodes, split_epilogues, fuse, assign_buffers, emit_kernels, eliminate_common_subexpressions]


def lower(program, dtype="float32", reserved=None, contractions=KEEP_PRODUCTS):
    """Lower a :class:`~graphnn.lower.program.Program` to a :class:`KernelProgram`.

    ``reserved``: identifiers the target's printer uses itself (default: every
    name any printer uses); buffers named after nodes avoid them.
    ``contractions``: the target's :class:`~.pointwise.Contractions` (default: every
    matrix product stays one)."""
    s = Lowering(program, dtype, Names(reserved), contractions)
    for run in PASSES:
        run(s)
    out_map = {k: s.buffer_of[id(n)] for k, n in program.outputs.items()}
    upd_map = {k: s.buffer_of[id(n)] for k, n in program.updates.items()}
    return KernelProgram(program.name, s.buffers, s.kernels, out_map, upd_map, dtype)


def _comment(n):
    from ..graph.text import node_line, one_line
    return one_line(node_line(n))     # node names and attributes are user text


def _load(acc, buffer_of):
    name = acc.node if isinstance(acc.node, str) else buffer_of[id(acc.node)]
    return sp.IndexedBase(name)[acc.index] if acc.index else sp.IndexedBase(name)[sp.Integer(0)]


def _fused(members, s):
    plans, buffer_of = s.plans, s.buffer_of
    idx = plans[id(members[0])].indices
    local = {}
    assigns, stores, comments = [], [], []
    in_group = {id(n) for n in members}
    for n in members:
        plan = plans[id(n)]
        subs = {}
        for sym, acc in plan.loads.items():
            if not isinstance(acc.node, str) and id(acc.node) in in_group and acc.index == idx:
                subs[sym] = local[id(acc.node)]
            else:
                subs[sym] = _load(acc, buffer_of)
        value = sp.Symbol("v_" + s.names.make(n.name), real=True)
        local[id(n)] = value
        assigns.append((value, plan.expr.xreplace(subs)))
        comments.append(_comment(n) + f"   [{n.op.name}: {_formula(n)}]")
        if id(n) in buffer_of:
            stores.append((buffer_of[id(n)], value))
    return Fused(members[0].shape, assigns, stores, comments, idx)


def _reduce(n, plan, buffer_of, out):
    terms = []
    for expr, red, combiner, guard in plan.terms:
        subs = {sym: _load(acc, buffer_of) for sym, acc in plan.loads.items()}
        terms.append(Term(expr.xreplace(subs), red, combiner, guard))
    body = n.op.node_body(n)
    return Reduce(out, plan.indices, n.shape, terms, comment=_comment(n) + f"   [{body}]")


def _formula(n):
    try:
        return str(n.op.expr(n.attr_dict))
    except AttributeError:
        return str(n.op.node_body(n))


_CSE_MEMO = {}


def _cse(kernel):
    """CSE of one fused body, done once per canonical form (repeated layers share it)."""
    from .canonical import canonical_kernel, structural_key
    canonical, args = canonical_kernel(kernel)
    key = structural_key(canonical)
    if key not in _CSE_MEMO:
        if len(_CSE_MEMO) > 4096:
            _CSE_MEMO.clear()
        _CSE_MEMO[key] = _cse_assigns(canonical.assigns)
    done = _CSE_MEMO[key]
    if done is None:
        return kernel
    # back to this kernel's names: buffers a0.. and temporaries v0..
    back = {sp.IndexedBase(f"a{n}"): sp.IndexedBase(name) for n, name in enumerate(args)}
    back.update({sp.Symbol(f"v{n}", real=True): sym for n, (sym, _) in enumerate(kernel.assigns)})
    kernel.assigns = [(back.get(sym, sym), e.xreplace(back)) for sym, e in done]
    return kernel


def _cse_assigns(assigns):
    """The assignments with shared subexpressions as temporaries c0.., or None if none are shared."""
    exprs = [e for _, e in assigns]
    replacements, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("c", real=True), order="none")
    if not replacements:
        return None
    # place each temporary just before the first statement that needs it: a temporary
    # may read values assigned earlier in the body, so it cannot simply go first
    pending = dict(replacements)
    out, emitted = [], set()

    def need(expr):
        for sym in sorted(expr.free_symbols & set(pending), key=lambda x: x.name):
            if sym not in emitted:
                need(pending[sym])
                emitted.add(sym)
                out.append((sym, pending[sym]))

    for (sym, _), expr in zip(assigns, reduced):
        need(expr)
        out.append((sym, expr))
    return out


def describe(kprog):
    """A one-line-per-kernel summary (for tests and debugging)."""
    lines = []
    for k in kprog.kernels:
        if isinstance(k, Fused):
            lines.append(f"fused {format_shape(k.shape)}: {len(k.comments)} nodes -> "
                         f"{', '.join(b for b, _ in k.stores)}")
        elif isinstance(k, Contract):
            lines.append(f"contract {k.out} = {k.a}{'^T' if k.trans_a else ''} @ {k.b}{'^T' if k.trans_b else ''}")
        elif isinstance(k, Rows):
            stored = f" -> {', '.join(dict.fromkeys(str(t.base.label) for t, _ in k.stores))}" if k.stores else ""
            lines.append(f"rows: {len(k.comments)} nodes, {len(k.sums)} sums{stored}")
        else:
            lines.append(f"reduce {k.out}{format_shape(k.out_shape)}")
    return "\n".join(lines)
