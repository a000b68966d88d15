"""How each node is computed, before scheduling.

Every op node becomes one of:

* *pointwise* -- its value at an output index is a SymPy expression of
  accesses ``(input node, index tuple)``: elementwise ops (broadcast index
  maps), index ops with no reduction, and the bias epilogue of a contraction;
* *contract* -- a matrix product (followed by a pointwise epilogue);
* *reduce* -- anything else in index notation (sums/maxima over loop indices).

This is read off the op bodies; no op is named here.
"""
from dataclasses import dataclass, field

import sympy as sp

from ..ops.index_body import BATCH_SIZE, access_indices, access_name, accesses
from .ir import BATCH


@dataclass
class Access:
    node: object
    index: tuple            # SymPy index expressions over the loop indices


@dataclass
class Plan:
    node: object
    kind: str                       # pointwise | contract | reduce
    indices: tuple = ()             # loop index symbols (one per output axis)
    expr: object = None             # pointwise: SymPy over access symbols
    loads: dict = field(default_factory=dict)     # access symbol -> Access
    contract: object = None         # (a node, b node, trans_a, trans_b, scale)
    terms: list = field(default_factory=list)     # reduce: body terms over access symbols
    product: str = None             # after split_epilogues: the scratch buffer of its matrix product


@dataclass(frozen=True)
class Contractions:
    """How a target wants small contractions lowered (the default keeps every product).

    * ``unroll_sum``: a sum over at most this many fixed-extent terms (a product with a
      small inner size, e.g. the 1-2-1 net's ``x @ W`` with 1 and 2 terms) is written out
      as a pointwise expression and joins the elementwise loop around it: no product
      buffer, no BLAS call;
    * ``small_product_out``: a matrix product summed over the batch into an output of at
      most this many elements (the weight gradient of a tiny layer) is a reduction, not a
      BLAS call.
    """
    unroll_sum: int = 0
    small_product_out: int = 0


KEEP_PRODUCTS = Contractions()


def loop_indices(rank):
    return tuple(sp.Symbol(f"i{d}", integer=True) for d in range(rank))


class _Loads:
    """Allocates one symbol per distinct access."""

    def __init__(self):
        self.by_key, self.loads = {}, {}

    def symbol(self, node, index):
        key = (id(node), tuple(index))
        if key not in self.by_key:
            s = sp.Symbol(f"_v{len(self.by_key)}", real=True)
            self.by_key[key] = s
            self.loads[s] = Access(node, tuple(index))
        return self.by_key[key]


def _folded(node):
    """Scalar constants are folded into expressions as numbers."""
    if node.kind == "constant" and node.shape == ():
        return sp.Float(float(node.attr("value")))
    return None


def _elementwise_plan(node, out_shape):
    idx = loop_indices(len(out_shape))
    loads = _Loads()
    subs = {}
    for sym, parent in zip(node.op.symbols, node.inputs):
        number = _folded(parent)
        if number is not None:
            subs[sym] = number
            continue
        offset = len(idx) - len(parent.shape)
        index = tuple(sp.Integer(0) if d == 1 and out_shape[offset + k] != 1 else idx[offset + k]
                      for k, d in enumerate(parent.shape))
        subs[sym] = loads.symbol(parent, index)
    expr = node.op.expr(node.attr_dict).xreplace(subs)
    return Plan(node, "pointwise", idx, expr, loads.loads)


def _rename_term(expr, args, out_map, loads):
    """Replace body accesses by load symbols (and the batch-size symbol by N, and loop
    indices used as values by the kernel's names for them)."""
    subs = {}
    for acc in accesses(expr, set(args)):
        parent = args[access_name(acc)]
        number = _folded(parent)
        if number is not None:
            subs[acc] = number
            continue
        index = tuple(sp.sympify(i).xreplace(out_map) for i in access_indices(acc))
        subs[acc] = loads.symbol(parent, index)
    return expr.xreplace(subs).xreplace({BATCH_SIZE: BATCH, **out_map})


def _matmul(term, out_indices, args):
    """(a, b, trans_a, trans_b, scale) if ``term`` is a 2-D matrix product."""
    if term.combiner != "sum" or term.guard is not sp.true or len(term.reduce) != 1 or len(out_indices) != 2:
        return None
    k = term.reduce[0][0]
    scale, factors = sp.Integer(1), []
    for f in sp.Mul.make_args(term.expr):
        if isinstance(f, sp.Indexed):
            factors.append(f)
        elif f.free_symbols <= {BATCH_SIZE}:
            scale *= f
        else:
            return None
    if len(factors) != 2:
        return None
    m, n = out_indices
    by_side = {}
    for f in factors:
        idx = access_indices(f)
        if len(idx) != 2 or set(idx) not in ({m, k}, {n, k}) or idx[0] == idx[1]:
            return None
        side = m if m in idx else n
        if side in by_side:
            return None
        by_side[side] = f
    if set(by_side) != {m, n}:
        return None
    a, b = by_side[m], by_side[n]
    trans_a = access_indices(a) != (m, k)
    trans_b = access_indices(b) != (k, n)
    return (args[access_name(a)], args[access_name(b)], trans_a, trans_b,
            scale.xreplace({BATCH_SIZE: BATCH}))


def _index_plan(node, choice):
    body = node.op.node_body(node)
    args = dict(zip(body.arg_names, node.inputs))
    idx = loop_indices(len(body.out_indices))
    out_map = dict(zip(body.out_indices, idx))
    loads = _Loads()
    reducing = [t for t in body.terms if t.reduce or t.guard is not sp.true]
    plain = [t for t in body.terms if t not in reducing]
    if reducing and all(_small_sum(t, choice.unroll_sum) for t in reducing):
        plain, reducing = plain + [_written_out(t) for t in reducing], []
    if len(reducing) == 1 and all(args[access_name(a)].kind != "constant"
                                  for a in accesses(reducing[0].expr, set(args))):
        mm = _matmul(reducing[0], body.out_indices, args)
        if mm is not None and not _small_batch_product(reducing[0], node, choice.small_product_out):
            epilogue = sum((_rename_term(t.expr, args, out_map, loads) for t in plain), sp.Integer(0))
            return Plan(node, "contract", idx, epilogue, loads.loads, contract=mm)
    if not reducing:
        expr = sum((_rename_term(t.expr, args, out_map, loads) for t in plain), sp.Integer(0))
        return Plan(node, "pointwise", idx, expr, loads.loads)
    terms = []
    for t in body.terms:
        # reduction indices get names of their own (r0, r1...) so they never shadow loop indices
        red_map = {r: sp.Symbol(f"r{k}", integer=True) for k, (r, _) in enumerate(t.reduce)}
        index_map = {**out_map, **red_map}
        red = tuple((red_map[r], e) for r, e in t.reduce)
        expr = _rename_term(t.expr, args, index_map, loads)
        guard = t.guard.xreplace(index_map) if t.guard is not sp.true else sp.true
        terms.append((expr, red, t.combiner, guard))
    return Plan(node, "reduce", idx, None, loads.loads, terms=terms)


def _small_sum(term, limit):
    """A sum over few fixed-extent terms, with no guard."""
    if term.combiner != "sum" or term.guard is not sp.true or not term.reduce:
        return False
    if any(not isinstance(e, int) for _, e in term.reduce):
        return False
    count = 1
    for _, e in term.reduce:
        count *= e
    return count <= limit


def _written_out(term):
    """The sum of ``term`` as one expression: its reduction indices replaced by each value."""
    import itertools
    from ..ops.index_body import Term
    indices = [r for r, _ in term.reduce]
    total = sp.Integer(0)
    for values in itertools.product(*(range(e) for _, e in term.reduce)):
        total += term.expr.xreplace({r: sp.Integer(v) for r, v in zip(indices, values)})
    return Term(total, (), term.combiner, sp.true)


def _small_batch_product(term, node, limit):
    """A product summed over the batch into a small output: a reduction pays more than BLAS."""
    (r, extent), = term.reduce
    size = 1
    for d in node.shape:
        size *= 1 if d is None else d
    return extent is None and None not in node.shape and size <= limit


def plan_node(node, contractions=KEEP_PRODUCTS):
    """The :class:`Plan` of an op node."""
    if node.op.kind == "elementwise":
        return _elementwise_plan(node, node.shape)
    return _index_plan(node, contractions)
