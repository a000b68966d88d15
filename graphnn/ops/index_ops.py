"""Contractions and reductions in index notation.

Their backward passes come from the generic rule in
:mod:`graphnn.derive.vjp`, never from code here.
"""
import sympy as sp

from ..errors import ShapeError
from .functions import IndexMax, IndexSum
from .index_body import BATCH_SIZE, indices
from .registry import SHAPE, Ints, index_op


@index_op(examples=[{"a": (None, 3), "b": (3, 4)}, {"a": (2, 5), "b": (5, 1)}])
def matmul(a, b):
    """out[m, n] = sum_k a[m, k] * b[k, n]"""
    if a.ndim != 2 or b.ndim != 2:
        raise ShapeError(f"matmul takes 2-D operands, got shapes {a.shape} and {b.shape}")
    if a.shape[1] != b.shape[0]:
        raise ShapeError(f"matmul: inner dimensions differ: {a.shape} @ {b.shape}")
    m, n, k = indices("m n k")
    return (m, n), IndexSum(a[m, k] * b[k, n], k)


@index_op(examples=[{"x": (None, 3), "W": (3, 4), "b": (4,)}])
def linear(x, W, b):
    """out[n, j] = sum_i x[n, i] * W[i, j] + b[j]  (a dense layer before its activation)"""
    if x.ndim != 2 or W.ndim != 2 or b.ndim != 1:
        raise ShapeError(f"linear takes x (N, in), W (in, out), b (out,); got {x.shape}, {W.shape}, {b.shape}")
    if x.shape[1] != W.shape[0] or W.shape[1] != b.shape[0]:
        raise ShapeError(f"linear: x {x.shape}, W {W.shape} and b {b.shape} do not fit "
                         f"(need x[:, i], W[i, j], b[j])")
    n, j, i = indices("n j i")
    return (n, j), IndexSum(x[n, i] * W[i, j], i) + b[j]


def _axes(axis, ndim, what):
    if axis is None:
        return tuple(range(ndim))
    axes = axis if isinstance(axis, tuple) else (axis,)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ShapeError(f"{what}: axis {a} is out of range for a {ndim}-d tensor")
        out.append(a % ndim)
    return tuple(sorted(set(out)))


def _reduction(x, axis, keepdims, combiner, what):
    axes = _axes(axis, x.ndim, what)
    idx = indices(" ".join(f"i{d}" for d in range(x.ndim))) if x.ndim > 1 else (
        (indices("i0"),) if x.ndim == 1 else ())
    out = []
    for d, i in enumerate(idx):
        if d not in axes:
            out.append(i)
        elif keepdims:
            out.append((indices(f"k{d}"), 1))
    reduced = [idx[d] for d in axes]
    body = x[tuple(idx)]
    if not reduced:
        return tuple(out), body
    return tuple(out), combiner(body, *reduced)


@index_op(name="sum", examples=[{"x": (None, 4)}, {"x": (None, 3, 4), "axis": 1},
                                   {"x": (None, 2, 3), "axis": (0, 2), "keepdims": True}])
def sum_(x, axis: Ints(optional=True) = None, keepdims: bool = False):
    """Sum over ``axis`` (all axes when None)."""
    return _reduction(x, axis, keepdims, IndexSum, "sum")


@index_op(examples=[{"x": (None, 4)}, {"x": (None, 3, 4), "axis": 0},
                    {"x": (None, 2, 3), "axis": -1, "keepdims": True}])
def mean(x, axis: Ints(optional=True) = None, keepdims: bool = False):
    """Mean over ``axis``; the batch axis counts as its size at run time."""
    out, body = _reduction(x, axis, keepdims, IndexSum, "mean")
    count = sp.Integer(1)
    for a in _axes(axis, x.ndim, "mean"):
        count *= BATCH_SIZE if x.shape[a] is None else x.shape[a]
    return out, body / count


@index_op(name="max", examples=[{"x": (None, 4)}, {"x": (None, 3, 4), "axis": 1},
                                   {"x": (None, 2, 3), "axis": 0, "keepdims": True}])
def max_(x, axis: Ints(optional=True) = None, keepdims: bool = False):
    """Maximum over ``axis``; at ties the gradient is split evenly among the elements equal to
    it (PyTorch's ``amax``)."""
    return _reduction(x, axis, keepdims, IndexMax, "max")


@index_op(examples=[{"x": (None, 3, 4), "shape": (3, 1)}, {"x": (None, 3), "shape": (1,)},
                    {"x": (None, 2, 3), "shape": (3,)}])
def sum_to(x, shape: SHAPE = ()):
    """Sum ``x`` down to ``shape`` (undoes broadcasting; the backward of elementwise ops)."""
    shape = tuple(shape)
    if len(shape) > x.ndim:
        raise ShapeError(f"sum_to: cannot sum {x.shape} to the larger rank {shape}")
    idx = indices(" ".join(f"i{d}" for d in range(x.ndim))) if x.ndim > 1 else indices("i0") if x.ndim else ()
    idx = tuple(idx) if isinstance(idx, (tuple, list)) else (idx,)
    offset = x.ndim - len(shape)
    out, reduced = [], list(idx[:offset])
    for d, target in enumerate(shape):
        i, have = idx[offset + d], x.shape[offset + d]
        if target == have:
            out.append(i)
        elif target == 1:
            out.append((indices(f"k{d}"), 1))
            reduced.append(i)
        else:
            raise ShapeError(f"sum_to: axis {offset + d} of {x.shape} cannot sum to {target}")
    body = x[tuple(idx)]
    return tuple(out), (IndexSum(body, *reduced) if reduced else body)


@index_op(examples=[{"x": (None, 4)}, {"x": (None, 3, 2, 2), "axis": (0, 2, 3), "correction": 1},
                    {"x": (None, 2, 3), "axis": (1, 2), "keepdims": True}])
def mean_square(x, axis: Ints(optional=True) = None, keepdims: bool = False, correction: int = 0):
    """Sum of x**2 over ``axis`` divided by (count - ``correction``): the variance of values
    already centred on their mean, biased (0) or Bessel-corrected (1). Where the count is not
    above ``correction`` (one row, correction 1) it divides by 1."""
    out, body = _reduction(x, axis, keepdims, lambda e, *r: IndexSum(e ** 2, *r), "mean_square")
    if x.ndim == 0:     # nothing to reduce: _reduction returned x itself
        body = body ** 2
    count = sp.Integer(1)
    for a in _axes(axis, x.ndim, "mean_square"):
        count *= BATCH_SIZE if x.shape[a] is None else x.shape[a]
    return out, body / sp.Piecewise((count - correction, count > correction), (1, True))


@index_op(examples=[{"x": (3,), "count": 2}, {"x": (None, 2), "count": 1}])
def append_axes(x, count: int = 1):
    """``x`` with ``count`` axes of size 1 appended: a per-channel vector (C,) as (C, 1, 1)
    broadcasts against (N, C, H, W)."""
    idx = indices(" ".join(f"i{d}" for d in range(x.ndim))) if x.ndim > 1 else (
        (indices("i0"),) if x.ndim == 1 else ())
    ones = tuple((indices(f"k{d}"), 1) for d in range(count))
    return (*idx, *ones), x[tuple(idx)]
