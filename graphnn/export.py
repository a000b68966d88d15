"""The arrays an exported module runs with (:meth:`graphnn.Model.export`).

An exported module's functions take a model's values as three flat arrays --
``params``, ``state`` (the optimizer's slots) and ``hyper`` (its
hyper-parameters and the step counter) -- each value at its offset in the
model's order, taking ``max(size, 1)`` elements. :func:`exported_arrays` packs
them from a model, with their names, ready for ``np.savez``.
"""
import numpy as np

from .errors import ArgumentError
from .lower.program import hyper_name


def exported_arrays(model):
    """The arrays an exported module's ``forward``/``step``/``run`` take, from ``model``'s values.

    Returns a dict: ``params``, ``state`` and ``hyper`` (flat arrays in the model's dtype, its
    trained values; ``hyper`` holds the optimizer's settings and the step counter ``t`` of the
    next step) and ``param_names``, ``state_names``, ``hyper_names`` (the graph's names, in
    packing order). ``np.savez(path, **arrays)`` saves it; the module's ``load_arrays(path)``
    reads it back without graphnn."""
    from .runtime.model import Model
    if not isinstance(model, Model):
        raise ArgumentError(f"exported_arrays: expected a compiled model (gn.compile(...)), "
                            f"not {type(model).__name__}")
    params = model.get_params()
    state = {k: np.asarray(_read_state(model, k), dtype=np.float64) for k in model.state}
    hyper = {}
    if model.optimizer is not None:
        hyper.update({hyper_name(h): float(v) for h, v in model.optimizer.hyper.items()})
    hyper[hyper_name("t")] = float(model.step_count + 1)
    out = {}
    for kind, names, values in (("params", "param_names", params), ("state", "state_names", state),
                                ("hyper", "hyper_names", hyper)):
        out[kind] = _pack(values, model.dtype)
        out[names] = np.array(list(values), dtype=str)
    return out


def _read_state(model, name):
    read = getattr(model.backend, "read_state", None)   # a backend keeping its own copy (CUDA)
    return read(name) if read is not None else model.state[name]


def _pack(values, dtype):
    """The values one after the other, each in max(size, 1) elements (as the CPU backend
    lays them out: see graphnn/runtime/cpu.py, ``_flat``)."""
    flat = np.zeros(max(sum(max(np.size(v), 1) for v in values.values()), 1), dtype=dtype)
    offset = 0
    for v in values.values():
        flat[offset:offset + np.size(v)] = np.ravel(v)
        offset += max(np.size(v), 1)
    return flat
