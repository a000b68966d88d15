"""Convolution, pooling and flatten in index notation (NCHW layout).

Like every index op their gradients come from the generic rule in
:mod:`graphnn.derive.vjp`: the strided, shifted accesses below are inverted
into gathers with divisibility and range guards. Padding is a guard: a term
leaves out the window positions that fall outside the input (0 in a sum,
skipped by a maximum), so no padded copy of the input is ever made.

>>> import graphnn as gn
>>> print(gn.conv2d.body([(None, 1, 8, 8), (4, 1, 3, 3), (4,)], {"stride": 2, "padding": 0}))
out[n, o, h, w] = Sum[c, kh, kw](K[o, c, kh, kw]*x[n, c, 2*h + kh, kw + 2*w]) + b[o]
"""
import sympy as sp

from ..errors import ShapeError
from .functions import IndexMaxFirst, IndexSum
from .index_body import guarded, in_range, indices
from .registry import Ints, index_op

POSITIVE, NON_NEGATIVE = Ints(low=1, length=2), Ints(low=0, length=2)   # an int or (rows, columns)


def pair(value, what):
    """An int or a pair of ints -> (rows, columns)."""
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) for v in value):
        raise ShapeError(f"{what} must be an int or a pair of ints, got {value!r}")
    return value


def output_size(size, window, stride, padding, what):
    """Positions of a window sliding over ``size`` (floor mode, like PyTorch)."""
    out = (size + 2 * padding - window) // stride + 1
    if out < 1:
        raise ShapeError(f"{what}: a window of {window} with padding {padding} does not fit in {size}")
    return out


def _window(x, kernel, stride, padding, what):
    """Index symbols and the input rows/columns read by output (h, w) at offset (kh, kw)."""
    if x.ndim != 4:
        raise ShapeError(f"{what} takes x of shape (N, C, H, W), got {x.shape}")
    (kh_size, kw_size), (sh, sw), (ph, pw) = kernel, pair(stride, "stride"), pair(padding, "padding")
    if min(sh, sw) < 1 or min(ph, pw) < 0:
        raise ShapeError(f"{what}: stride must be >= 1 and padding >= 0, got {stride}, {padding}")
    H, W = x.shape[2], x.shape[3]
    out_h = output_size(H, kh_size, sh, ph, what)
    out_w = output_size(W, kw_size, sw, pw, what)
    n, c, h, w, kh, kw = indices("n c h w kh kw")
    row, col = h * sh + kh - ph, w * sw + kw - pw
    inside = in_range(row, H) & in_range(col, W) if (ph or pw) else sp.true
    return (n, c, h, w, kh, kw), (row, col), (out_h, out_w), inside


@index_op(examples=[{"x": (None, 2, 5, 5), "K": (3, 2, 3, 3), "b": (3,)},
                    {"x": (None, 1, 6, 5), "K": (2, 1, 3, 2), "b": (2,), "stride": 2, "padding": 1}])
def conv2d(x, K, b, stride: POSITIVE = 1, padding: NON_NEGATIVE = 0):
    """out[n, o, h, w] = sum_{c, kh, kw} x[n, c, h*s + kh - p, w*s + kw - p] * K[o, c, kh, kw] + b[o]

    Cross-correlation, as PyTorch's ``conv2d``: x (N, C, H, W), K (O, C, KH, KW), b (O,);
    ``stride`` and ``padding`` are ints or (rows, columns) pairs; zero padding.
    """
    if K.ndim != 4 or b.ndim != 1:
        raise ShapeError(f"conv2d takes K (O, C, KH, KW) and b (O,), got {K.shape} and {b.shape}")
    if x.ndim == 4 and x.shape[1] != K.shape[1]:
        raise ShapeError(f"conv2d: x has {x.shape[1]} channels but K {K.shape} expects {K.shape[1]}")
    if K.shape[0] != b.shape[0]:
        raise ShapeError(f"conv2d: K {K.shape} has {K.shape[0]} filters but b has {b.shape[0]}")
    (n, c, h, w, kh, kw), (row, col), (out_h, out_w), inside = _window(
        x, K.shape[2:], stride, padding, "conv2d")
    o = indices("o")
    body = x[n, c, row, col] * K[o, c, kh, kw]
    if inside is not sp.true:
        body = guarded(body, inside)
    return (n, o, (h, out_h), (w, out_w)), IndexSum(body, c, kh, kw) + b[o]


def _pool_window(x, size, stride, padding, what):
    size = pair(size, "pool size")
    stride = size if stride is None else pair(stride, "stride")
    return _window(x, size, stride, padding, what) + (size,)


@index_op(examples=[{"x": (None, 2, 4, 4)}, {"x": (None, 1, 5, 5), "size": 3, "stride": 2, "padding": 1}])
def max_pool2d(x, size: POSITIVE = 2, stride: Ints(low=1, length=2, optional=True) = None,
               padding: NON_NEGATIVE = 0):
    """out[n, c, h, w] = max_{kh, kw} x[n, c, h*s + kh - p, w*s + kw - p]

    ``stride`` defaults to ``size``; padded positions are skipped (as PyTorch's -inf padding).
    ``padding`` is at most half the window (as PyTorch asks), so no window is padding alone.
    At ties the gradient goes to the first maximum of the window in row-major order, as in
    PyTorch's ``max_pool2d`` (:class:`~.functions.IndexMaxFirst`).
    """
    (n, c, h, w, kh, kw), (row, col), (out_h, out_w), inside, (k_h, k_w) = _pool_window(
        x, size, stride, padding, "max_pool2d")
    (p_h, p_w) = pair(padding, "padding")
    if p_h > k_h // 2 or p_w > k_w // 2:
        raise ShapeError(f"max_pool2d: padding {padding} is more than half the window {size}: a window "
                         f"could hold padding alone and have no maximum (-inf); use padding <= "
                         f"{k_h // 2 if k_h == k_w else (k_h // 2, k_w // 2)}")
    body = x[n, c, row, col]
    if inside is not sp.true:
        body = guarded(body, inside)
    return (n, c, (h, out_h), (w, out_w)), IndexMaxFirst(body, (kh, k_h), (kw, k_w))


@index_op(examples=[{"x": (None, 2, 4, 4)}, {"x": (None, 1, 5, 5), "size": 3, "stride": 2, "padding": 1}])
def avg_pool2d(x, size: POSITIVE = 2, stride: Ints(low=1, length=2, optional=True) = None,
               padding: NON_NEGATIVE = 0):
    """out[n, c, h, w] = sum_{kh, kw} x[n, c, h*s + kh - p, w*s + kw - p] / (KH * KW)

    ``stride`` defaults to ``size``; padded positions count as zeros (PyTorch's default).
    """
    (n, c, h, w, kh, kw), (row, col), (out_h, out_w), inside, (k_h, k_w) = _pool_window(
        x, size, stride, padding, "avg_pool2d")
    body = x[n, c, row, col]
    if inside is not sp.true:
        body = guarded(body, inside)
    return (n, c, (h, out_h), (w, out_w)), IndexSum(body, (kh, k_h), (kw, k_w)) / (k_h * k_w)


@index_op(examples=[{"x": (None, 2, 3, 2)}, {"x": (None, 5)}])
def flatten(x):
    """out[n, j] = x[n, j // (D1*...), ..., j % Dk]: all axes after the batch axis in one,
    row-major (the order of ``numpy.reshape``)."""
    if x.ndim < 2:
        raise ShapeError(f"flatten takes a tensor with a batch axis and at least one more, got {x.shape}")
    dims = x.shape[1:]
    total = 1
    for d in dims:
        total *= d
    n, j = indices("n j")
    digits, stride = [], 1
    for axis, d in reversed(list(enumerate(dims))):
        q = sp.floor(j / stride) if stride != 1 else j
        digits.append(q if axis == 0 else sp.Mod(q, d))
        stride *= d
    return (n, (j, total)), x[(n, *reversed(digits))]
