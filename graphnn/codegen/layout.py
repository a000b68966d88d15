"""Where every buffer lives: flat parameter, state, hyper and work arrays.

Parameters, optimizer state, hyper-parameters and scratch space are each one
flat array passed to the generated function (few arguments keep the call
cheap); buffers are views into them. Work offsets are affine in the batch
size N: ``offset = const + per_n * N``.
"""
from dataclasses import dataclass

import numpy as np

from ..graph.random import is_random


@dataclass
class Slot:
    name: str
    array: str            # params | state | hyper | work
    offset: tuple         # (const, per_n)
    size: tuple           # (const, per_n)
    shape: tuple          # ints and None

    def code_range(self):
        start = affine_code(*self.offset)
        stop = affine_code(self.offset[0] + self.size[0], self.offset[1] + self.size[1])
        return start, stop


def affine_code(const, per_n):
    """``const + per_n*N`` as code."""
    if per_n == 0:
        return str(const)
    term = "N" if per_n == 1 else f"{per_n}*N"
    return term if const == 0 else f"{const} + {term}"


def _size(shape):
    fixed = int(np.prod([d for d in shape if d is not None], dtype=np.int64))
    return (0, fixed) if None in shape else (max(fixed, 1), 0)


def make_layout(kprog, param_order, state_order, hyper_order):
    """{buffer name: Slot}, plus the sizes of the flat arrays."""
    slots = {}
    by_node = {b.node.name: b for b in kprog.buffers.values() if b.node is not None}
    for array, order, role in (("params", param_order, "param"), ("state", state_order, "state"),
                               ("hyper", hyper_order, "hyper")):
        offset = 0
        for node_name, shape in order:
            size = max(int(np.prod(shape, dtype=np.int64)), 1)
            b = by_node.get(node_name)
            if b is not None and b.role == role:
                slots[b.name] = Slot(b.name, array, (offset, 0), (size, 0), tuple(shape))
            offset += size
    const, per_n = 0, 0
    for b in kprog.buffers.values():
        if b.role != "work":
            continue
        size = _size(b.shape)
        # keep every buffer 16-element aligned so loads vectorise
        const = (const + 15) // 16 * 16
        slots[b.name] = Slot(b.name, "work", (const, per_n), size, b.shape)
        const, per_n = const + size[0], per_n + size[1]
    return slots, (const + 16, per_n)


def program_meta(kprog, slots, work):
    """Where each output, feed, slot and constant of a program lives: the ``_META`` literal
    of a generated module, read by the backends and by users of an exported module."""
    outs = {}
    for name, buf in kprog.outputs.items():
        s = slots.get(buf)
        b = kprog.buffers[buf]
        if s is None and b.role == "feed":    # an input returned as it is fed
            outs[name] = ("feed", b.node.name, None, b.shape)
        elif s is None:                       # a constant: its value, nested lists
            outs[name] = ("const", np.asarray(b.value, dtype=np.float64).tolist(), None, b.shape)
        else:
            outs[name] = (s.array, s.offset, s.size, s.shape)
    feed_bufs = {b.name: b.node.name for b in kprog.buffers.values() if b.role == "feed"}
    return {
        "feeds": list(feed_bufs.values()),
        "outputs": outs, "work": work,
        "slots": {k: (v.array, v.offset, v.size, v.shape) for k, v in slots.items()},
        "feed_buffers": feed_bufs,
        "feed_shapes": {b: kprog.buffers[b].shape for b in feed_bufs},
        "consts": [b.name for b in kprog.buffers.values() if b.role == "const"],
        # random inputs (dropout masks, noise): the value that stands for them outside training
        "defaults": {b.node.name: float(b.node.attr("eval")) for b in kprog.buffers.values()
                     if b.role == "feed" and is_random(b.node)},
    }
