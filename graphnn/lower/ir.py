"""The kernel IR: small and target-neutral.

A :class:`KernelProgram` is a list of buffers and a list of kernels:

* :class:`Fused` -- one loop nest over a shape whose body is a list of
  scalar SymPy assignments (a fused chain of elementwise nodes). Loads are
  ``sp.Indexed`` of buffer names (broadcast axes index 0); stores write named
  values to buffers. Every iteration is independent: any axis may run in
  parallel.
* :class:`Contract` -- ``out = scale * op(a) @ op(b)`` (a matrix product;
  targets print BLAS or a tiled kernel), optionally followed by a pointwise
  epilogue over its elements (the bias and the activation).
* :class:`Reduce` -- ``out[o] = sum/max over r of terms`` in index notation
  (gathers: each output element is computed by one iteration, so the output
  axes may run in parallel, never the reduction axes).
* :class:`Rows` -- one pass over the batch rows for a small net: per row, scalar
  statements with the small inner axes written out, stores of the row values
  that other kernels read, and sums over the rows (weight gradients, the loss)
  kept as scalars until the pass ends. Made by a target pass
  (:func:`graphnn.lower.target.fuse_rows`) from fused loops and batch sums.

Extents are ints or ``None`` (the batch size, an argument at run time).
Nothing here names a target.
"""
from dataclasses import dataclass, field
from enum import Enum

import sympy as sp

BATCH = sp.Symbol("N", integer=True, positive=True)


class NanMax(sp.Function):
    """The larger of two values, NaN when either is (as every maximum reduction keeps NaN):
    what a target pass writes for a maximum it unrolls (a softmax's row maximum in a row
    pass). Printed as the scalar helper ``nan_max``."""

    nargs = 2
    is_real = True
    helper_name = "nan_max"
    scalar_source = (
        "def nan_max(a, b):\n"
        "    # b replaces a when larger, or when NaN; a NaN a stays (no comparison with it holds)\n"
        "    return b if b > a or b != b else a\n"
    )


# scalar helpers the IR itself may use, printed by every target like the stable primitives
IR_HELPERS = (NanMax,)


@dataclass
class Buffer:
    name: str
    shape: tuple            # ints and None (batch)
    role: str               # feed | param | state | hyper | work | const
    node: object = None     # the graph node it holds (None for scratch)
    value: object = None    # constants: the array

    @property
    def rank(self):
        return len(self.shape)


@dataclass
class Fused:
    shape: tuple
    assigns: list           # [(sp.Symbol, expr)] in order
    stores: list            # [(buffer name, sp.Symbol or expr)]
    comments: list = field(default_factory=list)   # one per node fused in
    indices: tuple = ()     # loop index symbols, one per axis of shape
    flat: tuple = None      # set by flatten_loops: buffers walked as one flat loop


@dataclass
class Contract:
    out: str
    a: str
    b: str
    trans_a: bool
    trans_b: bool
    scale: object = 1       # SymPy number (may involve BATCH)
    accumulate: bool = False
    comment: str = ""
    epilogue: object = None  # set by fuse_epilogues (CUDA): a Fused loop over ``out``'s elements
                             # that reads the product only at its own element; a target runs
                             # it on the product in registers (``out`` is then scratch)


@dataclass
class Term:
    expr: object            # SymPy; loads are Indexed of buffer names
    reduce: tuple           # ((index, extent), ...)
    combiner: str = "sum"
    guard: object = sp.true


class ReduceOrder(Enum):
    """How a reduction's loops are arranged (chosen by a target pass, see :mod:`.target`)."""
    GATHER = "gather"            # one output element per (parallel) iteration, reduced axes inside
    ROWS_OUTER = "rows_outer"    # batch rows outside, small output inside: contiguous, serial
    SPLIT_ATOMIC = "split"       # batch rows split over threads, partial sums added atomically


@dataclass
class Reduce:
    out: str
    out_indices: tuple
    out_shape: tuple
    terms: list
    comment: str = ""
    order: ReduceOrder = ReduceOrder.GATHER


@dataclass
class Rows:
    assigns: list           # [(sp.Symbol, expr)] per row; loads index row ``row`` of batch buffers
    stores: list            # [(sp.Indexed target, sp.Symbol)] row values other kernels read
    sums: list              # [(sp.Indexed target without the batch axis, expr)] added over the rows
    row: object = None      # the row index symbol
    comments: list = field(default_factory=list)   # one per node fused in
    flat: tuple = ()        # batch buffers, passed as flat 1-D arrays: their accesses are
                            # ``a[W*row + c]`` with the row width W a constant


@dataclass
class KernelProgram:
    name: str
    buffers: dict           # name -> Buffer
    kernels: list
    outputs: dict           # output name -> buffer name
    updates: dict           # buffer to update in place -> buffer name holding the new value
    dtype: str = "float32"
