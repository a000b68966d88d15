"""Backends run a model's programs: ``run(program, feeds, batch) -> outputs``.

``reference`` evaluates with the NumPy executor (the oracle); ``cpu`` runs
generated Numba code; ``cuda`` generated numba.cuda kernels.
"""
import inspect

import numpy as np

from ..errors import ArgumentError, TargetError
from ..reference.executor import evaluate


class ReferenceBackend:
    """Runs programs with the NumPy reference executor."""

    source = "# the reference target runs no generated code"

    def __init__(self, model):
        self.model = model

    def run(self, name, feeds, batch):
        model = self.model
        program = model.programs[name]
        feeds = dict(feeds)
        for node in program.inputs:
            if node.role == "optimizer" and node.name in model.state:
                feeds[node.name] = model.state[node.name]
        nodes = [*program.outputs.values(), *program.updates.values()]
        values = evaluate(nodes, feeds, params=model.params, dtype=model.dtype)
        for buffer, node in program.updates.items():  # noqa: B007
            target = model.params if buffer in model.params else model.state
            np.copyto(target[buffer], values[node.name])
        # copies: an output may be a parameter array that later steps update in place
        return {k: np.array(values[n.name]) for k, n in program.outputs.items()}

    def read_param(self, name):
        return self.model.params[name]

    def write_param(self, name, value):
        np.copyto(self.model.params[name], value)


def make_backend(target, model, **options):
    if target == "reference":
        cls = ReferenceBackend
    elif target == "cpu":
        from .cpu import CPUBackend as cls
    elif target == "cuda":
        from .cuda import CUDABackend as cls
    else:
        raise TargetError(f"unknown target {target!r}; use 'cpu', 'cuda' or 'reference'")
    takes = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model")]
    unknown = sorted(set(options) - set(takes))
    if unknown:
        raise ArgumentError(f"compile: target {target!r} takes no option(s) {unknown}; its options are "
                            f"{takes or 'none'} (and seed, wait, dtype, optimizer, outputs)")
    return cls(model, **options)
