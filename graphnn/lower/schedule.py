"""Lowering passes: program (nodes) -> KernelProgram.

1. **plan**: each op node becomes pointwise / contract / reduce (:mod:`.pointwise`).
2. **schedule + fuse**: list scheduling that keeps adding ready pointwise nodes
   of the current loop shape to one fused loop, so elementwise chains --
   forward, their derived backward expressions and optimizer updates -- run
   as single loops. An update of a parameter waits for every reader of it.
3. **buffers**: a node gets a buffer only if something outside its loop
   reads it (or it is an output); loop-local values stay scalars.
4. **CSE** over each fused body.
"""
import keyword
import re

import sympy as sp

from ..graph.node import format_shape
from .ir import Buffer, Contract, Fused, KernelProgram, Reduce
from .pointwise import Access, plan_node

# names the printers use themselves: module globals, helpers, kernel locals
RESERVED = {"np", "math", "N", "prange", "njit", "cuda", "params", "state", "work", "hyper",
            "numba", "range", "min", "max", "abs", "sum", "int", "float", "b", "t",
            "sigmoid", "softplus", "clamped_log", "clamped_reciprocal", "stop_gradient",
            "fast_tanh", "fast_erf", "fast_exp", "_EXP2", "sa", "sb", "tx", "ty", "tid", "row0", "col0", "M", "P", "K", "e", "r",
            "c", "k0", "kk", "k_lo", "k_hi", "chunk", "split", "THREADS", "USE_CUBLAS"}
# loop indices, temporaries and accumulators: i0, r1, c2, _l3, _acc0, a0, b1, acc01 ...
GENERATED = re.compile(r"^(v_.*|(i|r|c|a|b|k|v|acc|_\w*)\d*)$")


class _Names:
    def __init__(self, reserved=None):
        self.used = set(RESERVED if reserved is None else reserved)

    def make(self, raw):
        base = re.sub(r"\W+", "_", raw).strip("_") or "v"
        if base[0].isdigit() or keyword.iskeyword(base):
            base = "t_" + base
        if GENERATED.match(base):
            base = "t_" + base
        name, k = base, 1
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name


def _leaf_role(node):
    if node.kind == "parameter":
        return "param"
    if node.kind == "constant":
        return "const"
    if node.role == "optimizer":  # hyper-parameters are "optimizer::lr", slots "param::m"
        return "hyper" if node.name.startswith("optimizer::") else "state"
    return "feed"


def _consumers(nodes):
    users = {id(n): [] for n in nodes}
    for n in nodes:
        for p in n.inputs:
            users[id(p)].append(n)
    return users


def _schedule(nodes, plans, users):
    """Order op nodes and cut them into groups (lists); non-pointwise nodes stand alone."""
    order = {id(n): k for k, n in enumerate(nodes)}
    ops = [n for n in nodes if n.kind == "op"]
    deps = {id(n): {id(p) for p in n.inputs if p.kind == "op"} for n in ops}
    targets = _update_bundles(nodes, ops, users, deps)
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
        if getattr(plan, "pre", None) is not None and not after_product:
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

    while ready:
        ready.sort(key=lambda n: order[id(n)])
        pick = next((n for n in ready if joinable(n)), None)
        if pick is not None:
            ready.remove(pick)
            current.append(pick)
            members.add(id(pick))
            done(pick)
            continue
        pick = ready[0]
        pre = getattr(plans[id(pick)], "pre", None)
        if pre is not None:
            # a matrix product with a pointwise epilogue: the product runs first, then the
            # epilogue (bias add) may join the open loop unless the product reads that loop
            ready.pop(0)
            if current and any(id(x) in members for x in plans[id(pick)].contract[:2]):
                groups.append(current)
                current, members = None, set()
            groups.append(("pre", pick))
            if joinable(pick, after_product=True):
                current.append(pick)
                members.add(id(pick))
            else:
                if current:
                    groups.append(current)
                current, members = [pick], {id(pick)}
            done(pick)
            continue
        if current:
            groups.append(current)
            current, members = None, set()
        pick = ready.pop(0)
        if plans[id(pick)].kind == "pointwise":
            current, members = [pick], {id(pick)}
        else:
            groups.append([pick])
        done(pick)
    if current:
        groups.append(current)
    return groups


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
            bundles.setdefault(target.name.split("::")[0], []).append((n, target))
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


def lower(program, dtype="float32", reserved=None):
    """Lower a :class:`~graphnn.runtime.program.Program` to a :class:`KernelProgram`.

    ``reserved``: identifiers the target's printer uses itself (default: every
    name any printer uses); buffers named after nodes avoid them."""
    nodes = program.nodes
    users = _consumers(nodes)
    names = _Names(reserved)
    buffers, buffer_of = {}, {}

    def add_buffer(node, role, raw=None):
        name = names.make(raw or node.name)
        buffers[name] = Buffer(name, node.shape if node is not None else (), role, node,
                               node.attr("value") if node is not None and role == "const" else None)
        if node is not None:
            buffer_of[id(node)] = name
        return name

    for n in nodes:
        if n.kind != "op" and not (n.kind == "constant" and n.shape == ()):
            add_buffer(n, _leaf_role(n))
    plans = {id(n): plan_node(n) for n in nodes if n.kind == "op"}
    for n in nodes:  # split products with an epilogue: product kernel + pointwise epilogue
        plan = plans.get(id(n))
        if plan is not None and plan.kind == "contract" and plan.expr != 0:
            scratch = names.make(n.name + "_product")
            buffers[scratch] = Buffer(scratch, n.shape, "work")
            product = sp.Symbol("_product", real=True)
            plan.loads[product] = Access(scratch, plan.indices)
            plan.expr = plan.expr + product
            plan.kind = "pointwise"
            plan.pre = scratch
    groups = _schedule(nodes, plans, users)
    group_of = {id(n): g for g, members in enumerate(groups) if not isinstance(members, tuple)
                for n in members}
    outputs = {id(n) for n in program.outputs.values()}
    update_target = {id(node): target for target, node in program.updates.items()}

    def needs_buffer(n):
        if id(n) in outputs:
            return True
        plan = plans[id(n)]
        if plan.kind != "pointwise":
            return True
        for u in users[id(n)]:
            if u.kind != "op" or group_of.get(id(u)) != group_of[id(n)]:
                return True
            for acc in plans[id(u)].loads.values():
                if acc.node is n and acc.index != plans[id(u)].indices:
                    return True
        return False

    for n in nodes:
        if n.kind == "op" and id(n) not in update_target and needs_buffer(n):
            add_buffer(n, "work")
        if id(n) in update_target:
            target = program.updates and update_target[id(n)]
            buffer_of[id(n)] = next(b.name for b in buffers.values()
                                    if b.node is not None and b.node.kind != "op"
                                    and b.node.name == target)
    for n in nodes:  # a scalar constant that is itself an output
        if n.kind == "constant" and n.shape == () and id(n) in outputs:
            add_buffer(n, "const")

    kernels = []
    for members in groups:
        if isinstance(members, tuple):  # ("pre", node): the product before an epilogue
            n = members[1]
            plan = plans[id(n)]
            a, b, ta, tb, scale = plan.contract
            kernels.append(Contract(plan.pre, buffer_of[id(a)], buffer_of[id(b)], ta, tb, scale,
                                    comment=_comment(n) + "  (matrix product)"))
            continue
        first = plans[id(members[0])]
        if first.kind == "pointwise":
            kernels.append(_fused(members, plans, buffer_of, names))
            continue
        n = members[0]
        out = buffer_of[id(n)]
        if first.kind == "contract":
            a, b, ta, tb, scale = first.contract
            kernels.append(Contract(out, buffer_of[id(a)], buffer_of[id(b)], ta, tb, scale,
                                    comment=_comment(n)))
        else:
            kernels.append(_reduce(n, first, buffer_of, out))
    out_map = {k: buffer_of[id(n)] for k, n in program.outputs.items()}
    upd_map = {k: buffer_of[id(n)] for k, n in program.updates.items()}
    return KernelProgram(program.name, buffers, kernels, out_map, upd_map, dtype)


def _comment(n):
    from ..graph.text import node_line
    # node names and attributes are user text: one line, control characters escaped
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in node_line(n))


def _load(acc, buffer_of):
    name = acc.node if isinstance(acc.node, str) else buffer_of[id(acc.node)]
    return sp.IndexedBase(name)[acc.index] if acc.index else sp.IndexedBase(name)[sp.Integer(0)]


def _fused(members, plans, buffer_of, names):
    idx = plans[id(members[0])].indices
    local = {}
    assigns, stores, comments = [], [], []
    in_group = {id(n) for n in members}
    for n in members:
        plan = plans[id(n)]
        subs = {}
        for s, acc in plan.loads.items():
            if not isinstance(acc.node, str) and id(acc.node) in in_group and acc.index == idx:
                subs[s] = local[id(acc.node)]
            else:
                subs[s] = _load(acc, buffer_of)
        sym = sp.Symbol("v_" + names.make(n.name), real=True)
        local[id(n)] = sym
        assigns.append((sym, plan.expr.xreplace(subs)))
        comments.append(_comment(n) + f"   [{n.op.name}: {_formula(n)}]")
        if id(n) in buffer_of:
            stores.append((buffer_of[id(n)], sym))
    return Fused(members[0].shape, _cse(assigns), stores, comments, idx)


def _reduce(n, plan, buffer_of, out):
    from .ir import Term
    terms = []
    for expr, red, combiner, guard in plan.terms:
        subs = {s: _load(acc, buffer_of) for s, acc in plan.loads.items()}
        terms.append(Term(expr.xreplace(subs), red, combiner, guard))
    body = n.op.node_body(n)
    return Reduce(out, plan.indices, n.shape, terms, comment=_comment(n) + f"   [{body}]")


def _formula(n):
    try:
        return str(n.op.expr(n.attr_dict))
    except AttributeError:
        return str(n.op.node_body(n))


def _cse(assigns):
    """Common subexpressions across a fused body become shared temporaries."""
    exprs = [e for _, e in assigns]
    replacements, reduced = sp.cse(exprs, symbols=sp.numbered_symbols("c", real=True),
                                   order="none")
    if not replacements:
        return assigns
    # place each temporary just before the first statement that needs it: a temporary
    # may read values assigned earlier in the body, so it cannot simply go first
    pending = dict(replacements)
    out, emitted = [], set()

    def need(expr):
        for sym in sorted(expr.free_symbols & set(pending), key=lambda s: s.name):
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
        else:
            lines.append(f"reduce {k.out}{format_shape(k.out_shape)}")
    return "\n".join(lines)
