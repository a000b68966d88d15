"""Save and load graphs and models: a versioned JSON spec plus an ``.npz`` of arrays.

``save(model, "run/digits")`` writes two files:

* ``run/digits.npz`` -- parameter values (``param/<name>``) and, for a model,
  optimizer state (``state/<buffer>``), float64;
* ``run/digits.json`` -- the graph (nodes in topological order, ops by their
  registry name and attributes, constants, shapes, scopes), the named
  outputs, the loss, the model's dtype, target, optimizer, step count and
  random-input generator state, and the SHA-256 of the ``.npz``.

A save is all-or-nothing: each file is written to a temporary file and moved
into place with ``os.replace``, and the JSON, moved last, is the commit point
(see :func:`save`); after a crash at any moment the previous save or the new
one loads. A loader checks everything it reads and refuses a malformed file
with a :class:`~graphnn.errors.FileFormatError` naming the file and the field.
The format is documented in ``docs/file-format.md``. A loaded model computes
bit-identical outputs.

>>> import os, tempfile, numpy as np
>>> import graphnn as gn
>>> net = gn.lecture.regression_net()
>>> model = gn.compile(net.graph, net.loss, target="reference")
>>> path = os.path.join(tempfile.mkdtemp(), "sine")
>>> gn.save(model, path)
>>> again = gn.load(path)
>>> x = {"x": np.linspace(-1, 1, 5)[:, None]}
>>> np.array_equal(model.predict(x), again.predict(x))
True
"""
import dataclasses
import hashlib
import io as _io
import json
import os
import re
import secrets
import stat

import numpy as np

from .errors import ArgumentError, FileFormatError, GraphnnError
from .graph.node import FLOAT_DTYPES, Graph, Node, join_dtypes
from .graph.traverse import check_one_graph, topological
from .version import __version__

FORMAT = "graphnn-model"
FORMAT_VERSION = 1


# -- the spec ------------------------------------------------------------------

def _encode_attr(value, where):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, (tuple, list)):
        return [_encode_attr(v, where) for v in value]
    raise FileFormatError(f"{where}: attribute value {value!r} ({type(value).__name__}) cannot be saved")


def _op_hash(node):
    """Fingerprint of an op's declaration as this node uses it (the content hash that keys
    nodes and compiled programs), so a file is not loaded against a changed op."""
    return node.op.node_key(node)[:16]


def _legacy_op_hash(node):
    """The fingerprint files saved before ops were keyed by content recorded (same format
    version): the op's name and body text, so such files still load."""
    import sympy as sp

    def body_text(body):
        return repr((body.out_indices, body.out_shape, body.arg_names,
                     [(sp.srepr(t.expr), t.reduce, t.combiner, sp.srepr(t.guard)) for t in body.terms]))
    op = node.op
    if op.kind == "index":
        fixed = getattr(op, "fixed_body", None)
        parts = [repr(("index", op.name, body_text(fixed) if fixed is not None else None)),
                 body_text(op.node_body(node))]
    else:
        parts = [repr(("elementwise", op.name, sp.srepr(op.symbolic_expr)))]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _op_hash_before_tie_rules(node):
    """The fingerprint files saved before a maximum carried its tie rule recorded (every
    maximum keyed as a plain one): the forward is the same, so such files still load and the
    op's rule now applies (max_pool2d: the gradient at ties goes to the first maximum)."""
    if node.op.kind != "index":
        return None
    from .ops.registry import _digest
    op, body = node.op, node.op.node_body(node)
    if all(t.ties == "split" for t in body.terms):
        return None
    plain = dataclasses.replace(body, terms=tuple(dataclasses.replace(t, ties="split") for t in body.terms))
    return _digest("index", op.name, op.arg_names, sorted(op.attr_defaults), plain.key)[:16]


def _node_spec(node, ids):
    spec = {"id": ids[id(node)], "name": node.name, "kind": node.kind,
            "shape": list(node.shape), "dtype": node.dtype, "scope": node.scope, "role": node.role}
    where = f"node {node.name!r}"
    if node.kind == "constant":
        value = np.asarray(node.attr("value"), dtype=np.float64)
        spec["value"] = {"shape": list(value.shape), "data": value.ravel().tolist()}
    elif node.kind == "parameter":
        spec["trainable"] = bool(node.graph.trainable.get(node.name, True))
    elif node.kind == "input" and node.attrs:
        spec["attrs"] = {k: _encode_attr(v, where) for k, v in node.attrs}
    elif node.kind == "op":
        from .ops.registry import REGISTRY
        if REGISTRY.get(node.op.name) is not node.op:
            raise FileFormatError(
                f"{where}: op {node.op.name!r} is not the registered op of that name, so a loader "
                f"could not find it; declare it with @gn.elementwise or @gn.index_op")
        spec["op"] = node.op.name
        spec["op_hash"] = _op_hash(node)
        spec["inputs"] = [ids[id(p)] for p in node.inputs]
        spec["attrs"] = {k: _encode_attr(v, where) for k, v in node.attrs}
    return spec


def graph_spec(graph, outputs=None, loss=None):
    """The JSON-able description of ``graph`` (every input and parameter, the nodes
    ``outputs`` and ``loss`` depend on)."""
    outputs = dict(graph.outputs if outputs is None else outputs)
    roots = [*graph.inputs.values(), *graph.parameters.values(), *outputs.values(),
             *graph.outputs.values(), *graph.updates.values()]
    if loss is not None:
        roots.append(loss)
    nodes = topological(roots)
    check_one_graph(nodes, graph, f"save of graph {graph.name!r}")
    ids = {id(n): k for k, n in enumerate(nodes)}
    return {
        "graph": {"name": graph.name, "seed": graph.seed,
                  **({"composite_scopes": sorted(graph.composite_scopes)} if graph.composite_scopes else {})},
        "nodes": [_node_spec(n, ids) for n in nodes],
        "inputs": [ids[id(n)] for n in graph.inputs.values()],
        "outputs": {k: ids[id(n)] for k, n in outputs.items()},
        "graph_outputs": {k: ids[id(n)] for k, n in graph.outputs.items() if id(n) in ids},
        "loss": None if loss is None else ids[id(loss)],
        **({"updates": {k: ids[id(n)] for k, n in graph.updates.items()}} if graph.updates else {}),
    }


# -- reading the spec: every field is checked, a bad one is a FileFormatError naming it --------

_MISSING = object()
_MAX_DIM = 2 ** 31 - 1       # one axis of a shape
_MAX_SIZE = 2 ** 40          # elements per example of one node
_MAX_INT = 2 ** 63           # attribute values, step counts


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _show(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _get(obj, key, where, ok, what, default=_MISSING):
    """``obj[key]`` if ``ok`` accepts it; a missing key is ``default`` or an error."""
    if not isinstance(obj, dict):
        raise FileFormatError(f"{where} should be a JSON object, not {_show(obj)}")
    if key not in obj:
        if default is _MISSING:
            raise FileFormatError(f"{where}: key {key!r} is missing")
        return default
    value = obj[key]
    if not ok(value):
        raise FileFormatError(f"{where}: {key!r} should be {what}, not {_show(value)}")
    return value


def _decode_attr(value, where):
    """An attribute read back: lists become tuples; numbers, strings, booleans and null only."""
    if isinstance(value, list):
        return tuple(_decode_attr(v, where) for v in value)
    if value is None or isinstance(value, (bool, str, float)) or (_is_int(value) and abs(value) < _MAX_INT):
        return value
    raise FileFormatError(f"{where}: {_show(value)} is not an attribute value graphnn writes")


def _shape(entry, where, batch=True, zero=False):
    shape = _get(entry, "shape", where, lambda v: isinstance(v, list), "a list")
    low = 0 if zero else 1
    for axis, d in enumerate(shape):
        if d is None and axis == 0 and batch:
            continue
        if not _is_int(d) or not low <= d <= _MAX_DIM:
            raise FileFormatError(
                f"{where}: shape {_show(shape)} is not valid; its entries are integers from {low} to "
                f"{_MAX_DIM}{', and null first for the batch axis' if batch else ''}")
    size = 1
    for d in shape:
        size *= 1 if d is None else d
    if size > _MAX_SIZE:
        raise FileFormatError(f"{where}: shape {_show(shape)} is too large ({size} elements)")
    return tuple(shape)


def _random_attrs(attrs, where):
    from .graph.random import DISTRIBUTIONS, random_attrs
    _get(attrs, "distribution", where, lambda v: isinstance(v, str) and v in DISTRIBUTIONS,
         f"one of {sorted(DISTRIBUTIONS)}")
    for k, v in attrs.items():
        if k != "distribution" and not _is_number(v):
            raise FileFormatError(f"{where}: attribute {k!r} should be a number, not {_show(v)}")
    params = {k: v for k, v in attrs.items() if k not in ("distribution", "eval")}
    try:
        return random_attrs(attrs["distribution"], attrs.get("eval", 0.0), params)
    except GraphnnError as error:
        raise FileFormatError(f"{where}: {error}") from None


def _build_op(entry, where, graph, nodes, shape, common):
    from .ops.registry import REGISTRY, ElementwiseOp
    name = _get(entry, "op", where, lambda v: isinstance(v, str), "a string")
    op = REGISTRY.get(name)
    if op is None:
        raise FileFormatError(f"{where} uses op {name!r}, which is not registered; "
                              f"import the module that declares it before loading")
    ids = _get(entry, "inputs", where, lambda v: isinstance(v, list), "a list of node ids")
    if len(ids) != len(op.arg_names):
        raise FileFormatError(f"{where}: op {op.name!r} takes {len(op.arg_names)} inputs, "
                              f"the file lists {len(ids)}")
    for i in ids:
        if not _is_int(i) or not 0 <= i < len(nodes):
            raise FileFormatError(f"{where}: input {_show(i)} is not the id of an earlier node")
    inputs = [nodes[i] for i in ids]
    raw = _get(entry, "attrs", where, lambda v: isinstance(v, dict), "an object", {})
    attrs = {k: _decode_attr(v, f"{where}: attribute {k!r}") for k, v in raw.items()}
    missing = sorted(set(op.attr_defaults) - set(attrs))
    if missing:
        raise FileFormatError(f"{where}: attribute(s) {missing} of op {op.name!r} are missing")
    unknown = sorted(set(attrs) - set(op.attr_defaults))
    if unknown:
        raise FileFormatError(f"{where}: op {op.name!r} has no attribute(s) {unknown}; it takes "
                              f"{sorted(op.attr_defaults) or 'none'}")
    own = {k: attrs[k] for k in op.attr_defaults}
    if isinstance(op, ElementwiseOp):
        for k, v in own.items():
            if not isinstance(v, (bool, int, float)):
                raise FileFormatError(f"{where}: attribute {k!r} of op {op.name!r} should be a number, "
                                      f"not {_show(v)}")
    node = Node("op", op, inputs, attrs, shape, **common)
    try:
        dtype = join_dtypes(inputs, f"op {op.name!r}")
        inferred = tuple(op.infer_shape(inputs, own))
        if isinstance(op, ElementwiseOp):
            op.expr(own)
        digest = _op_hash(node)
    except Exception as error:   # an op's own code, run on what the file says
        detail = error if isinstance(error, GraphnnError) else f"{type(error).__name__}: {error}"
        raise FileFormatError(f"{where}: op {op.name!r} cannot be built from the file's inputs and "
                              f"attributes {_show(raw)} ({detail})") from None
    if dtype != common["dtype"]:
        raise FileFormatError(f"{where}: dtype {common['dtype']!r} is not {dtype!r}, the dtype of its inputs")
    if inferred != shape:
        raise FileFormatError(f"{where}: op {op.name!r} gives shape {inferred}, the file says {shape}")
    recorded = _get(entry, "op_hash", where, lambda v: v is None or isinstance(v, str), "a string", None)
    if (recorded and digest != recorded and _legacy_op_hash(node) != recorded
            and _op_hash_before_tie_rules(node) != recorded):
        raise FileFormatError(f"{where}: op {op.name!r} is declared differently from when "
                              f"the file was written; its body changed")
    return node


def _build_node(entry, position, graph, nodes, values, source):
    where = f"{source}: nodes[{position}]"
    node_id = _get(entry, "id", where, _is_int, "an integer")
    if node_id != position:
        raise FileFormatError(f"{where}: id {node_id} should be its position {position} in the list")
    name = _get(entry, "name", where, lambda v: isinstance(v, str) and v != "", "a non-empty string")
    where = f"{source}: node {name!r}"
    if name in graph._names:
        raise FileFormatError(f"{where}: two nodes have this name")
    kind = _get(entry, "kind", where, lambda v: v in ("input", "parameter", "constant", "op"),
                'one of "input", "parameter", "constant", "op"')
    role = _get(entry, "role", where, lambda v: v in ("forward", "random"), '"forward" or "random"',
                "forward")
    if role == "random" and kind != "input":
        raise FileFormatError(f"{where}: only an input can have role \"random\"")
    common = dict(
        dtype=_get(entry, "dtype", where, lambda v: v is None or v in FLOAT_DTYPES,
                   f"one of {list(FLOAT_DTYPES)} or null", None),
        name=name, graph=graph, role=role,
        scope=_get(entry, "scope", where, lambda v: isinstance(v, str), "a string", ""))
    if kind == "input":
        shape = _shape(entry, where)
        attrs = _get(entry, "attrs", where, lambda v: isinstance(v, dict), "an object", {})
        if role == "random":
            attrs = _random_attrs(attrs, f"{where}: attrs")
        else:
            attrs = {k: _decode_attr(v, f"{where}: attribute {k!r}") for k, v in attrs.items()}
        node = Node("input", None, (), attrs, shape, **common)
        (graph.random_inputs if role == "random" else graph.inputs)[name] = node
    elif kind == "parameter":
        shape = _shape(entry, where, batch=False)
        trainable = _get(entry, "trainable", where, lambda v: isinstance(v, bool), "true or false", True)
        if name not in values:
            raise FileFormatError(f"{where}: the arrays file has no array 'param/{name}' for this parameter")
        value = np.asarray(values[name])
        if value.dtype.kind != "f":
            raise FileFormatError(f"{where}: array 'param/{name}' has dtype {value.dtype}; "
                                  f"parameters are floating point")
        if value.shape != shape:
            raise FileFormatError(f"{where}: array 'param/{name}' has shape {value.shape}, "
                                  f"the graph says {shape}")
        node = Node("parameter", None, (), {}, shape, **common)
        graph.parameters[name], graph.values[name] = node, np.array(value, dtype=np.float64)
        graph.trainable[name] = trainable
    elif kind == "constant":
        spec = _get(entry, "value", where, lambda v: isinstance(v, dict), "an object")
        shape = _shape(spec, f"{where}: value", batch=False, zero=True)
        data = _get(spec, "data", f"{where}: value", lambda v: isinstance(v, list) and all(map(_is_number, v)),
                    "a list of numbers")
        try:
            value = np.array(data, dtype=np.float64).reshape(shape)
        except (OverflowError, ValueError):
            raise FileFormatError(f"{where}: value has {len(data)} numbers for shape {shape}, or a number "
                                  f"too large for float64") from None
        if _shape(entry, where, batch=False, zero=True) != shape:
            raise FileFormatError(f"{where}: shape {entry['shape']} is not the shape of its value {shape}")
        node = Node("constant", None, (), {"value": value}, shape, **common)
    else:
        node = _build_op(entry, where, graph, nodes, _shape(entry, where), common)
    graph._names.add(name)
    return node


def graph_from_spec(spec, values, source="the graph description"):
    """(graph, outputs, loss) rebuilt from :func:`graph_spec` output and parameter arrays.

    Everything is checked; anything malformed raises :class:`FileFormatError` naming
    ``source`` (the file) and the field.
    """
    info = _get(spec, "graph", source, lambda v: isinstance(v, dict), "an object")
    graph = Graph(_get(info, "name", f"{source}: graph", lambda v: isinstance(v, str), "a string"),
                  seed=_get(info, "seed", f"{source}: graph", lambda v: _is_int(v) and 0 <= v < _MAX_INT,
                            "a non-negative integer", 0))
    graph.composite_scopes = set(_get(info, "composite_scopes", f"{source}: graph",  # drawn as one box
                                      lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v),
                                      "a list of scope names", []))
    nodes = []
    entries = _get(spec, "nodes", source, lambda v: isinstance(v, list), "a list")
    for position, entry in enumerate(entries):
        nodes.append(_build_node(entry, position, graph, nodes, values, source))

    def node(i, where):
        if not _is_int(i) or not 0 <= i < len(nodes):
            raise FileFormatError(f"{source}: {where} should be a node id, not {_show(i)}")
        return nodes[i]

    fed = [node(i, f"inputs[{k}]") for k, i in enumerate(
        _get(spec, "inputs", source, lambda v: isinstance(v, list), "a list of node ids"))]
    declared = [n for n in nodes if n.kind == "input" and n.role != "random"]
    if len({id(n) for n in fed}) != len(fed) or {id(n) for n in fed} != {id(n) for n in declared}:
        raise FileFormatError(f"{source}: \"inputs\" should list each fed input once: "
                              f"{sorted(n.name for n in declared)}")
    graph.inputs = {n.name: n for n in fed}

    def named(key, default=_MISSING):
        table = _get(spec, key, source, lambda v: isinstance(v, dict), "an object", default)
        return {k: node(i, f"{key}[{k!r}]") for k, i in table.items()}

    graph.outputs = named("graph_outputs", {})
    outputs = named("outputs")
    loss = spec.get("loss")
    loss = None if loss is None else node(loss, "loss")
    if loss is not None and loss.shape != ():
        raise FileFormatError(f"{source}: the loss {loss.name!r} has shape {loss.shape}; a loss is a scalar")
    if not outputs and loss is None:
        raise FileFormatError(f"{source}: the file names no outputs and no loss")
    for name, value in named("updates", {}).items():     # buffers a training step rewrites
        buffer = graph.parameters.get(name)
        try:
            if buffer is None:
                raise GraphnnError(f"{name!r} is not a parameter of the graph")
            graph.update(buffer, value)
        except GraphnnError as error:
            raise FileFormatError(f"{source}: updates[{name!r}]: {error}") from None
    unknown = sorted(set(values) - set(graph.parameters))
    if unknown:
        raise FileFormatError(f"{source}: the arrays file has arrays for no parameter of the graph: "
                              f"{['param/' + k for k in unknown]}")
    return graph, outputs, loss


# -- files -----------------------------------------------------------------------
#
# A save is all-or-nothing, and the JSON is its commit point. ``save`` takes five steps:
#   1. the new arrays go to a hidden temporary file, flushed to disk;
#   2. the arrays the current JSON records are renamed ``.prev-<sha>-<name>.npz``;
#   3. the temporary arrays are renamed ``<name>.npz``;
#   4. the new JSON goes to a temporary file and is renamed ``<name>.json``: the commit;
#   5. the ``.prev-`` file is removed.
# The loader reads the arrays whose SHA-256 the JSON records: the ``.prev-`` file of that
# checksum if there is one, else ``<name>.npz``. So a crash before step 4 leaves the old JSON
# and its arrays (``<name>.npz`` before step 2, the ``.prev-`` file after it), a crash after it
# the new pair. The next save to the path removes what a killed save left behind.

def _paths(path):
    if not isinstance(path, (str, os.PathLike)):
        raise ArgumentError(f"the path of a saved model is a str or a path, not {_show(path)}")
    path = os.fspath(path)
    if isinstance(path, bytes):
        raise ArgumentError(f"the path of a saved model is a str or a path, not {_show(path)}")
    if not os.path.basename(path):
        raise ArgumentError(f"{path!r} is a folder; a model is saved as <path>.json and <path>.npz: "
                            f"give a file name, e.g. {os.path.join(path, 'model')!r}")
    for suffix in (".json", ".npz"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    return path + ".json", path + ".npz"


def _kept_path(npz_path, sha):
    """Where step 2 keeps the arrays with checksum ``sha`` until the new JSON is in place."""
    folder, name = os.path.split(npz_path)
    return os.path.join(folder, f".prev-{sha[:16]}-{name}")


def _leftovers(json_path, npz_path):
    """Paths of the hidden files that saves to this path make (temporaries, kept arrays)."""
    folder, json_name = os.path.split(json_path)
    npz_name = os.path.basename(npz_path)
    pattern = re.compile(r"\.tmp-[a-z0-9_]{8}(%s|%s)|\.prev-[0-9a-f]{16}-%s"
                         % (re.escape(json_name), re.escape(npz_name), re.escape(npz_name)))
    return [os.path.join(folder, name) for name in os.listdir(folder) if pattern.fullmatch(name)]


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _sync_folder(folder):
    """Make renames in ``folder`` durable (where the OS can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_temporary(path, data):
    """``data`` in a new hidden file next to ``path``, flushed to disk. It gets the mode
    ``open(path, "w")`` would give: that of ``path`` if it exists, else 0o666 less the umask."""
    folder, name = os.path.split(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(folder, f".tmp-{secrets.token_hex(4)}{name}")
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            if os.path.exists(path):
                os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        _remove(tmp)
        raise
    return tmp


def _committed_sha(json_path):
    """The arrays checksum the JSON at ``json_path`` records, or None."""
    try:
        with open(json_path, "rb") as f:
            sha = json.loads(f.read().decode("utf-8"))["arrays"]["sha256"]
    except Exception:   # no JSON or a broken one: no save to keep
        return None
    return sha if isinstance(sha, str) and re.fullmatch("[0-9a-f]{64}", sha) else None


def _model_parts(obj, loss, outputs):
    """(graph, outputs, loss, parameter values, model section, extra arrays)."""
    if hasattr(obj, "programs") and hasattr(obj, "get_params"):   # a Model
        sync = getattr(obj.backend, "sync_to_host", None)
        if sync is not None:     # CUDA: parameters and state live on the device
            sync()
        values = {**obj.graph.values, **obj.get_params()}
        state = {f"state/{k}": np.array(v, dtype=np.float64) for k, v in obj.state.items()}
        section = {
            "dtype": obj.dtype.name, "target": obj.target, "step_count": int(obj.step_count),
            "optimizer": obj.optimizer.config() if obj.optimizer is not None else None,
            "rng_state": obj.rng.bit_generator.state,
        }
        return obj.graph, dict(obj.output_nodes), obj.loss_node, values, section, state
    if isinstance(obj, Graph):
        return obj, outputs, loss, dict(obj.values), None, {}
    raise ArgumentError(f"save takes a Model or a Graph, got {type(obj).__name__}")


def _dumps(document):
    """Indented JSON with one line per node (diffable, and short enough to read)."""
    nodes = document["nodes"]
    text = json.dumps({**document, "nodes": "@nodes@"}, indent=1)
    lines = ",\n  ".join(json.dumps(n) for n in nodes)
    return text.replace('"@nodes@"', "[\n  " + lines + "\n ]", 1)


def save(obj, path, loss=None, outputs=None):
    """Write a model (or a graph with its ``loss``/``outputs``) to ``path``.json and ``path``.npz.

    All or nothing: if the process dies at any moment, ``load`` gives the previous save or
    this one (the steps are described above ``_paths`` in ``graphnn/io.py``).
    """
    json_path, npz_path = map(os.path.abspath, _paths(path))
    for target in (json_path, npz_path):
        if os.path.isdir(target):
            raise ArgumentError(f"save: {target!r} is a folder; remove it or save under another name")
    graph, outputs, loss, values, section, extra = _model_parts(obj, loss, outputs)
    spec = graph_spec(graph, outputs, loss)
    arrays = {f"param/{k}": np.asarray(v, dtype=np.float64) for k, v in values.items()
              if k in graph.parameters}
    arrays.update(extra)
    arrays, renamed = _zip_safe(arrays)
    buffer = _io.BytesIO()
    np.savez(buffer, **arrays)
    blob = buffer.getvalue()
    sha = hashlib.sha256(blob).hexdigest()
    document = {
        "format": FORMAT, "version": FORMAT_VERSION, "graphnn_version": __version__,
        **spec,
        "arrays": {"file": os.path.basename(npz_path), "sha256": sha,
                   **({"renamed": renamed} if renamed else {})},
        "model": section,
    }
    text = _dumps(document)
    folder = os.path.dirname(json_path)
    os.makedirs(folder, exist_ok=True)
    committed = _committed_sha(json_path)
    keep = None if committed is None else _kept_path(npz_path, committed)
    for leftover in _leftovers(json_path, npz_path):   # of saves killed before
        if leftover != keep:
            _remove(leftover)
    tmp = _write_temporary(npz_path, blob)                       # 1
    if keep is not None and not os.path.exists(keep) and os.path.exists(npz_path):
        os.replace(npz_path, keep)                               # 2
        _sync_folder(folder)
    os.replace(tmp, npz_path)                                    # 3
    _sync_folder(folder)
    os.replace(_write_temporary(json_path, text.encode()), json_path)   # 4
    _sync_folder(folder)
    for leftover in _leftovers(json_path, npz_path):              # 5
        _remove(leftover)


def _read_document(json_path):
    try:
        with open(json_path, "rb") as f:
            document = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise
    except IsADirectoryError:
        raise FileFormatError(f"{json_path} is a folder, not a saved model") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise FileFormatError(f"{json_path} is not a valid graphnn file (corrupted or truncated JSON: "
                              f"{error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise FileFormatError(f"{json_path} is not a graphnn model file (no \"format\": \"{FORMAT}\")")
    version = document.get("version")
    if not _is_int(version) or version < 1:
        raise FileFormatError(f"{json_path}: format version {_show(version)} is not valid")
    if version > FORMAT_VERSION:
        raise FileFormatError(
            f"{json_path} was written in graphnn file format version {version} "
            f"(graphnn {_show(document.get('graphnn_version', '?'))}); this graphnn ({__version__}) "
            f"reads versions up to {FORMAT_VERSION}. Upgrade graphnn to load it.")
    return document


def _zip_safe(arrays):
    """Arrays keyed by names a zip file keeps as they are, and {stored key: name} for the rest.

    Parameter names are user text; in a zip entry a NUL ends the name and a lone surrogate
    cannot be encoded, so such an array is stored as ``param/#<n>`` (or ``state/#<n>``) and
    the JSON's ``arrays.renamed`` maps it back."""
    safe, renamed = {}, {}
    for k, v in arrays.items():
        try:
            k.encode("utf-8")
            ok = "\x00" not in k
        except UnicodeEncodeError:
            ok = False
        if ok and not k.split("/", 1)[-1].startswith("#"):
            safe[k] = v
        else:
            stored = f"{k.split('/', 1)[0]}/#{len(renamed)}"
            safe[stored], renamed[stored] = v, k
    return safe, renamed


def _read_arrays(document, json_path, npz_path):
    info = _get(document, "arrays", json_path, lambda v: isinstance(v, dict), "an object")
    sha = _get(info, "sha256", f"{json_path}: arrays",
               lambda v: isinstance(v, str) and re.fullmatch("[0-9a-f]{64}", v), "a SHA-256 hex digest")
    blob, found = None, False
    # the arrays of an interrupted save's predecessor first (see the steps above _paths)
    for candidate in (_kept_path(npz_path, sha), npz_path):
        try:
            with open(candidate, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        found = True
        if hashlib.sha256(data).hexdigest() == sha:
            blob = data
            break
    if not found:
        raise FileFormatError(f"{json_path} needs its arrays file {npz_path}, which is missing")
    if blob is None:
        raise FileFormatError(f"{npz_path} does not match the checksum recorded in {json_path}: the arrays "
                              f"file is corrupted or belongs to another save")
    try:
        with np.load(_io.BytesIO(blob), allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except Exception as error:   # numpy parsing bytes: BadZipFile, ValueError, EOFError, MemoryError...
        raise FileFormatError(f"{npz_path} cannot be read ({type(error).__name__}: {error})") from None
    renamed = _get(info, "renamed", f"{json_path}: arrays",
                   lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in (*v, *v.values())),
                   "an object of strings", {})
    for stored, name in renamed.items():
        if stored not in arrays or name in arrays or stored.split("/", 1)[0] != name.split("/", 1)[0]:
            raise FileFormatError(f"{json_path}: arrays.renamed maps {stored!r} to {name!r}, which does not "
                                  f"fit the arrays file")
        arrays[name] = arrays.pop(stored)
    for k, v in arrays.items():
        if not k.startswith(("param/", "state/")):
            raise FileFormatError(f"{npz_path}: array {k!r} is not a parameter (param/...) or "
                                  f"optimizer state (state/...)")
        if not isinstance(v, np.ndarray) or v.dtype.kind != "f":
            raise FileFormatError(f"{npz_path}: array {k!r} has dtype "
                                  f"{getattr(v, 'dtype', type(v).__name__)}; graphnn saves floats")
    return arrays


def _rng_state(state, where):
    """The random-input generator's state, checked on a fresh generator of the model's kind."""
    def plain(value, key=None):
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v, k) for k, v in value.items())
        return isinstance(value, str) if key == "bit_generator" else _is_int(value)
    generator = np.random.default_rng().bit_generator
    try:
        if not plain(state):
            raise TypeError("its values should be integers")
        generator.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as error:
        raise FileFormatError(f"{where}: \"rng_state\" is not a {type(generator).__name__} generator "
                              f"state ({error})") from None
    return state


def _model_section(document, json_path):
    section = _get(document, "model", json_path, lambda v: v is None or isinstance(v, dict),
                   "an object or null", None)
    if section is None:
        return None
    where = f"{json_path}: model"
    return {
        **section,
        "dtype": _get(section, "dtype", where, lambda v: v in FLOAT_DTYPES, f"one of {list(FLOAT_DTYPES)}",
                      "float32"),
        "target": _get(section, "target", where, lambda v: v in ("cpu", "cuda", "reference"),
                       '"cpu", "cuda" or "reference"', "cpu"),
        "step_count": _get(section, "step_count", where, lambda v: _is_int(v) and 0 <= v < _MAX_INT,
                           "a non-negative integer", 0),
        "optimizer": _get(section, "optimizer", where, lambda v: v is None or isinstance(v, dict),
                          "an object or null", None),
        "rng_state": None if section.get("rng_state") is None else _rng_state(section["rng_state"], where),
    }


def load_graph(path):
    """(graph, outputs, loss, model section) from a saved file.

    The model section (None for a saved graph) holds ``dtype``, ``target``, ``step_count``,
    ``optimizer`` (its config), ``rng_state`` and ``state``, the optimizer state arrays.
    """
    json_path, npz_path = _paths(path)
    document = _read_document(json_path)
    arrays = _read_arrays(document, json_path, npz_path)
    values = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    graph, outputs, loss = graph_from_spec(document, values, source=json_path)
    section = _model_section(document, json_path)
    state = {k[len("state/"):]: v for k, v in arrays.items() if k.startswith("state/")}
    for key, value in state.items():
        param = graph.parameters.get(key.rpartition("::")[0])
        if param is None:
            raise FileFormatError(f"{npz_path}: optimizer state 'state/{key}' belongs to no parameter "
                                  f"of the graph")
        if value.shape != param.shape:
            raise FileFormatError(f"{npz_path}: optimizer state 'state/{key}' has shape {value.shape}, "
                                  f"its parameter {param.name!r} has shape {param.shape}")
    if state and section is None:
        raise FileFormatError(f"{npz_path} has optimizer state but {json_path} no model section")
    if section is not None:
        section["state"] = state
    return graph, outputs, loss, section


def _optimizer_from(config, json_path):
    from .train.optimizers import from_config
    try:
        return from_config(config)
    except GraphnnError as error:   # FileFormatError, or a hyper-parameter out of its range
        raise FileFormatError(f"{json_path}: model.optimizer: {error}; pass optimizer= to gn.load "
                              f"to train with another") from None


def load(path, target=None, dtype=None, optimizer=None, **options):
    """A :class:`~graphnn.Model` from a saved file, ready to predict or go on training.

    ``target``/``dtype``/``optimizer`` default to the saved ones (a saved graph without a
    model section compiles for "cpu", float32). Optimizer state, the step count and the
    random-input generator are restored, so training resumes where it stopped; an
    ``optimizer`` of another type than the saved one starts with fresh state.
    """
    from .runtime import compile as compile_model
    json_path, npz_path = _paths(path)
    graph, outputs, loss, section = load_graph(path)
    section = section or {}
    saved = section.get("optimizer")
    if optimizer is None and saved is not None:
        optimizer = _optimizer_from(saved, json_path)
    state = section.get("state", {})
    if optimizer is not None and saved is not None and saved.get("type") != type(optimizer).__name__:
        state = {}   # another optimizer: the saved slots mean nothing to it
    model = compile_model(graph, loss, outputs=outputs, optimizer=optimizer,
                          target=target or section.get("target", "cpu"),
                          dtype=dtype or section.get("dtype", "float32"), **options)
    if state:   # all of it or none (a model saved before any slot existed)
        missing, unknown = sorted(set(model.state) - set(state)), sorted(set(state) - set(model.state))
        if missing or unknown:
            raise FileFormatError(
                f"{npz_path}: the optimizer state does not fit the model: "
                + "; ".join(f"{what} {['state/' + k for k in keys]}" for what, keys in
                            (("missing", missing), ("unknown", unknown)) if keys))
        for k, v in state.items():
            model.state[k] = v       # through the model: on CUDA this writes the device copy
    model.step_count = section.get("step_count", 0)
    if section.get("rng_state"):
        model.rng.bit_generator.state = section["rng_state"]
    return model
