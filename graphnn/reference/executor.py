"""The NumPy reference executor: the oracle for every compiled target.

It evaluates op bodies directly -- elementwise bodies through
``sympy.lambdify`` with NumPy, index bodies by gathering every access over a
broadcast grid of loop indices (``np.einsum`` when a term is a plain product
of accesses) -- and shares nothing with code generation.
"""
import functools
from collections.abc import Mapping

import numpy as np
import sympy as sp
from sympy.printing.numpy import SciPyPrinter

from ..errors import ArgumentError, FeedError
from ..graph.node import Node, format_shape
from ..graph.random import fill, is_random
from ..graph.traverse import _nodes, topological
from ..ops.index_body import BATCH_SIZE, access_indices, access_name, accesses
from ..ops.primitives import PRIMITIVES, Primitive


class _ReferencePrinter(SciPyPrinter):
    """NumPy printing with elementwise Max/Min (lambdify's default stacks arrays)."""

    def _print_Function(self, expr):
        if isinstance(expr, Primitive):  # resolved through the lambdify namespace
            return f"{type(expr).__name__}({', '.join(self._print(a) for a in expr.args)})"
        return super()._print_Function(expr)

    def _print_Max(self, expr):
        return self._nested("numpy.maximum", expr.args)

    def _print_Min(self, expr):
        return self._nested("numpy.minimum", expr.args)

    def _nested(self, fn, args):
        out = self._print(args[0])
        for a in args[1:]:
            out = f"{fn}({out}, {self._print(a)})"
        return out


_NAMESPACE = {p.__name__: p.numpy_impl for p in PRIMITIVES}


class _IndexPrinter(SciPyPrinter):
    """Index expressions and guards in exact integer arithmetic: ``floor(p/q)`` is
    ``p // q`` (a float division could land just below an integer)."""

    def _print_floor(self, expr):
        num, den = sp.fraction(sp.together(expr.args[0]))
        if den.is_Integer:
            return f"(({self._print(num)}) // {self._print(den)})"
        return super()._print_floor(expr)

    # conditions on different loop indices have different broadcast shapes;
    # ``logical_and.reduce`` of a tuple cannot take them, nested calls can
    def _print_And(self, expr):
        return _ReferencePrinter._nested(self, "numpy.logical_and", expr.args)

    def _print_Or(self, expr):
        return _ReferencePrinter._nested(self, "numpy.logical_or", expr.args)


@functools.lru_cache(maxsize=4096)
def _lambdify_index(symbols, expr):
    return sp.lambdify(symbols, expr, modules="numpy", printer=_IndexPrinter)


@functools.lru_cache(maxsize=4096)
def _lambdify(symbols, expr):
    # SciPy only where the printed code uses it (erf, constants): importing it costs 0.35 s
    needs_scipy = "scipy" in _ReferencePrinter().doprint(expr)
    modules = [_NAMESPACE, "numpy", "scipy"] if needs_scipy else [_NAMESPACE, "numpy"]
    return sp.lambdify(symbols, expr, modules=modules, printer=_ReferencePrinter)


_DTYPE_HINTS = {
    "c": "complex values are not supported: feed the real part (value.real), or the real and "
         "imaginary parts as two inputs",
    "O": "an array of Python objects: convert it with np.asarray(value, dtype=float)",
    "U": "strings are not numbers", "S": "bytes are not numbers",
}


def feed_array(name, value, what="feed"):
    """``value`` as an array of numbers (a device array stays as it is), or a FeedError naming
    the feed: a masked array with masked entries, a ragged list, strings, objects, complex
    values. Bools are numbers (0 and 1); NaN and infinity are values like any other."""
    if hasattr(value, "__cuda_array_interface__"):
        array = value
    else:
        if isinstance(value, np.ma.MaskedArray):
            if np.ma.getmaskarray(value).any():
                raise FeedError(f"{what} {name!r} is a masked array with masked entries, and graphnn "
                                f"would read the values under the mask; fill them first, e.g. "
                                f"value.filled(0.0)")
            value = np.ma.getdata(value)
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise FeedError(f"{what} {name!r} is not a rectangular array of numbers (a list of rows "
                            f"of different lengths?): {exc}") from None
    kind = np.dtype(array.dtype).kind
    if kind not in "fiub":
        if kind == "O" and array.ndim == 0:
            raise FeedError(f"{what} {name!r} is a {type(value).__name__}, not a number or an array "
                            f"of numbers")
        hint = _DTYPE_HINTS.get(kind, "convert it to numbers first")
        raise FeedError(f"{what} {name!r} has dtype {array.dtype}; it must be numeric ({hint})")
    return array


def check_feeds(nodes, feeds):
    """Validate feeds against the inputs of the graph(s) of ``nodes``; returns (arrays, batch size).

    ``arrays`` holds the feeds of the inputs among ``nodes``. A feed for another input of the
    same graph (``y`` when only predicting) is checked and then left out; it still tells the
    batch size, which a delta node that reads no batched input needs (the delta of a mean).
    """
    if not isinstance(feeds, Mapping):
        raise FeedError(f"feeds must be a dict {{input name: array}}; got a {type(feeds).__name__}")
    needed = {n.name: n for n in nodes if n.kind == "input"}
    graphs = {id(n.graph): n.graph for n in nodes if n.graph is not None}
    inputs = {}
    for graph in graphs.values():
        inputs.update(graph.inputs)
    inputs.update(needed)
    not_names = sorted((k for k in feeds if not isinstance(k, str)), key=repr)
    if not_names:
        node = next((k for k in not_names if isinstance(k, Node)), None)
        hint = f" (feed a node by its name: {node.name!r})" if node is not None else ""
        raise FeedError(f"feed key(s) {not_names} are not strings{hint}: feeds are {{input name: array}}; "
                        f"this computation takes {sorted(needed)}")
    unknown = sorted(set(feeds) - set(inputs))
    if unknown:
        raise FeedError(f"unknown feed(s) {unknown}: no input has that name; "
                        f"this computation takes {sorted(needed)}")
    # random inputs (dropout masks, noise) not fed take their evaluation value
    randoms = [n for n in needed.values() if is_random(n) and n.name not in feeds]
    missing = sorted(set(needed) - set(feeds) - {n.name for n in randoms})
    if missing:
        raise FeedError(f"missing feed(s) {missing}: input(s) the outputs depend on")
    batch, arrays = None, {}
    for name in sorted(feeds, key=lambda k: k not in needed):  # needed ones first
        node = inputs[name]
        value = feed_array(name, feeds[name])    # device arrays stay where they are
        shape = node.shape
        ok = len(value.shape) == len(shape) and all(
            d is None or d == v for d, v in zip(shape, value.shape))
        if not ok:
            raise FeedError(f"feed {name!r} has shape {value.shape}; input {name!r} "
                            f"expects {format_shape(shape)}")
        if shape and shape[0] is None:
            if batch is not None and value.shape[0] != batch[1]:
                raise FeedError(f"feeds disagree on the batch size: {batch[0]!r} has "
                                f"{batch[1]} rows, {name!r} has {value.shape[0]}")
            batch = (name, value.shape[0])
        if name in needed:
            arrays[name] = value
    if batch is None:
        batched = next((n for n in nodes if n.batched), None)
        if batched is not None:
            takes = sorted(k for k, n in inputs.items() if n.batched)
            raise FeedError(f"the batch size is unknown: {batched.name!r} has shape "
                            f"{format_shape(batched.shape)} but no batched input is fed "
                            f"(feed one of {takes})")
    batch = batch[1] if batch else 1
    arrays.update(fill(randoms, {}, batch))
    return arrays, batch


def _batch_size(batch):
    """The value of the batch-size symbol: a mean over 0 rows is 0/0, NaN as in NumPy
    (SymPy's 1/0 is complex infinity, which NumPy cannot take)."""
    return sp.Integer(batch) if batch else sp.nan


def _full_shape(shape, batch):
    return tuple(batch if d is None else d for d in shape)


def _elementwise(node, values, dtype):
    expr = node.op.expr(node.attr_dict)
    fn = _lambdify(node.op.symbols, expr)
    if len(values) > 1:     # a condition on one input and a value of another must line up
        values = np.broadcast_arrays(*values)
    with np.errstate(all="ignore"):
        out = fn(*values)
    return np.asarray(out, dtype=dtype)


def _einsum_term(term, args, ext, out_indices, batch):
    """Fast path: coefficient * product of plain accesses -> one einsum."""
    if term.combiner != "sum" or term.guard is not sp.true:
        return None
    coeff, factors = sp.Integer(1), []
    for f in sp.Mul.make_args(term.expr):
        if f.free_symbols <= {BATCH_SIZE}:
            coeff *= f
            continue
        base, power = (f.base, f.exp) if f.is_Pow else (f, 1)
        if power not in (1, 2) or not accesses(base, args):
            return None
        if accesses(base, args) != [base]:
            return None
        idx = access_indices(base)
        if not all(isinstance(i, sp.Symbol) for i in idx) or len(set(idx)) != len(idx):
            return None
        factors += [base] * int(power)
    letters = {}
    def letter(i):
        return letters.setdefault(i, "abcdefghijklmnopqrstuvwxyz"[len(letters)])
    operands, specs = [], []
    for f in factors:
        operands.append(args[access_name(f)])
        specs.append("".join(letter(i) for i in access_indices(f)))
    if not operands:
        return None
    present = [i for i in out_indices if i in letters]
    out_spec = "".join(letters[i] for i in present)
    c = float(coeff.subs(BATCH_SIZE, _batch_size(batch)))
    res = np.einsum(",".join(specs) + "->" + out_spec, *operands, optimize=True) * c
    res = res.reshape([ext[i] if i in letters else 1 for i in out_indices])
    return np.broadcast_to(res, tuple(ext[i] for i in out_indices))


def _grid_term(term, args, ext, out_indices, batch, dtype):
    """General path: evaluate every access on a broadcast grid of loop indices."""
    loop = list(out_indices) + list(term.reduce_indices)
    grids = {}
    for pos, i in enumerate(loop):
        shape = [1] * len(loop)
        shape[pos] = ext[i]
        grids[i] = np.arange(ext[i]).reshape(shape)
    valid = np.ones([1] * len(loop), dtype=bool)
    if term.guard is not sp.true:
        guard = _lambdify_index(tuple(loop), term.guard)(*[grids[i] for i in loop])
        valid = valid & np.asarray(guard, dtype=bool)
    symbols, gathered = [], []
    for k, acc in enumerate(accesses(term.expr, args)):
        array = args[access_name(acc)]
        idx_values = []
        inside = np.ones([1] * len(loop), dtype=bool)
        for axis, ix in enumerate(access_indices(acc)):
            v = _lambdify_index(tuple(loop), ix)(*[grids[i] for i in loop])
            v = np.asarray(v) + np.zeros([1] * len(loop), dtype=np.int64)
            inside = inside & (v >= 0) & (v < array.shape[axis])
            idx_values.append(np.clip(v, 0, array.shape[axis] - 1))
        gathered.append(array[tuple(idx_values)] if idx_values else array)
        valid = valid & inside
        symbols.append((acc, sp.Symbol(f"_acc{k}", real=True)))
    expr = term.expr.xreplace(dict(symbols)).subs(BATCH_SIZE, _batch_size(batch))
    numbers = [i for i in loop if i in expr.free_symbols]   # loop indices used as values
    fn = _lambdify((*(s for _, s in symbols), *numbers), expr)
    with np.errstate(all="ignore"):
        val = (np.asarray(fn(*gathered, *(grids[i] for i in numbers)), dtype=dtype)
               + np.zeros(valid.shape, dtype=dtype))
    full = tuple(ext[i] for i in loop)
    val = np.broadcast_to(val, full)
    valid = np.broadcast_to(valid, full)
    axes = tuple(range(len(out_indices), len(loop)))
    if axes and 0 in full[len(out_indices):]:     # a reduction over no elements (0 rows)
        return np.full(full[:len(out_indices)], _empty_reduction(term, batch), dtype=dtype)
    if term.combiner == "max":
        return np.where(valid, val, -np.inf).max(axis=axes) if axes else val
    masked = np.where(valid, val, 0)
    return masked.sum(axis=axes) if axes else masked


def _empty_reduction(term, batch):
    """A reduction over no elements (a batch of 0 rows), alike on every target: a sum is 0, a
    mean 0/0 = NaN (its 1/N at N = 0, as the einsum path gives), a max NaN (no element is the
    largest; PyTorch raises)."""
    if term.combiner == "max":
        return np.nan
    coeff = sp.Mul(*[f for f in sp.Mul.make_args(term.expr) if f.free_symbols <= {BATCH_SIZE}])
    return 0.0 * float(coeff.subs(BATCH_SIZE, _batch_size(batch)))


def _index(node, values, batch, dtype):
    body = node.op.node_body(node)
    args = dict(zip(body.arg_names, values))
    ext = {i: (batch if e is None else e) for i, e in body.extents().items()}
    out = np.zeros(_full_shape(body.out_shape, batch), dtype=dtype)
    for term in body.terms:
        res = _einsum_term(term, args, ext, body.out_indices, batch)
        if res is None:
            res = _grid_term(term, args, ext, body.out_indices, batch, dtype)
        out = out + res
    return out.astype(dtype, copy=False)


def evaluate(outputs, feeds, params=None, dtype="float64"):
    """Evaluate ``outputs`` (nodes) with NumPy; returns {node name: array}.

    ``params`` overrides parameter values (default: the graph's own values).

    >>> import graphnn as gn, numpy as np
    >>> g = gn.Graph(); x = g.input("x", (None, 2))
    >>> y = gn.relu(x)
    >>> gn.evaluate([y], {"x": np.array([[-1.0, 2.0]])})[y.name]
    array([[0., 2.]])
    """
    outputs = _nodes(outputs, "evaluate")
    nodes = topological(outputs)
    # nodes of two graphs may meet here (gn.substitute merges graphs; each parameter is read
    # from its own graph), but the result is keyed by name: two outputs of one name would be one
    named = {}
    for o in outputs:
        if named.setdefault(o.name, o) is not o:
            raise ArgumentError(f"evaluate: two different output nodes are named {o.name!r} (of graphs "
                                f"{named[o.name].graph.name!r} and {o.graph.name!r}); the result is keyed "
                                f"by name, so evaluate them in two calls")
    arrays, batch = check_feeds(nodes, feeds)
    dtype = np.dtype(dtype)
    values = {}
    for node in nodes:
        if node.kind == "input":
            v = np.asarray(arrays[node.name], dtype=dtype)
        elif node.kind == "parameter":
            source = params if params is not None and node.name in params else node.graph.values
            v = np.asarray(source[node.name], dtype=dtype)
        elif node.kind == "constant":
            v = np.asarray(node.attr("value"), dtype=dtype)
        elif node.op.kind == "elementwise":
            v = _elementwise(node, [values[id(p)] for p in node.inputs], dtype)
            v = np.broadcast_to(v, _full_shape(node.shape, batch)).astype(dtype)
        else:
            v = _index(node, [values[id(p)] for p in node.inputs], batch, dtype)
        values[id(node)] = v
    return {o.name: values[id(o)] for o in outputs}
