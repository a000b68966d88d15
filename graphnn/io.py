"""Save and load graphs and models: a versioned JSON spec plus an ``.npz`` of arrays.

``save(model, "run/digits")`` writes two files:

* ``run/digits.npz`` -- parameter values (``param/<name>``) and, for a model,
  optimizer state (``state/<buffer>``), float64;
* ``run/digits.json`` -- the graph (nodes in topological order, ops by their
  registry name and attributes, constants, shapes, scopes), the named
  outputs, the loss, the model's dtype, target, optimizer, step count and
  random-input generator state, and the SHA-256 of the ``.npz``.

Each file is written to a temporary file and moved into place with
``os.replace``; the JSON goes last and names the checksum of the arrays, so a
reader never sees a half-written pair unnoticed. The format is documented in
``docs/file-format.md``. A loaded model computes bit-identical outputs.

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
import hashlib
import io as _io
import json
import os
import tempfile
import zipfile

import numpy as np

from .errors import FileFormatError
from .graph.node import Graph, Node
from .graph.traverse import topological
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


def _decode_attr(value):
    return tuple(_decode_attr(v) for v in value) if isinstance(value, list) else value


def _op_hash(node):
    """Fingerprint of an op's body, so a file is not loaded against a changed op."""
    parts = [repr(node.op.key)]
    if node.op.kind == "index":
        parts.append(node.op.node_body(node).key)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


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
             *graph.outputs.values()]
    if loss is not None:
        roots.append(loss)
    nodes = topological(roots)
    ids = {id(n): k for k, n in enumerate(nodes)}
    return {
        "graph": {"name": graph.name, "seed": graph.seed},
        "nodes": [_node_spec(n, ids) for n in nodes],
        "inputs": [ids[id(n)] for n in graph.inputs.values()],
        "outputs": {k: ids[id(n)] for k, n in outputs.items()},
        "graph_outputs": {k: ids[id(n)] for k, n in graph.outputs.items() if id(n) in ids},
        "loss": None if loss is None else ids[id(loss)],
    }


def _register(graph, node):
    graph._names.add(node.name)
    return node


def _build_node(spec, graph, made, values):
    kind, name = spec["kind"], spec["name"]
    shape = tuple(spec["shape"])
    common = dict(dtype=spec.get("dtype"), name=name, graph=graph, scope=spec.get("scope", ""))
    role = spec.get("role", "forward")
    if kind == "input":
        attrs = {k: _decode_attr(v) for k, v in spec.get("attrs", {}).items()}
        node = Node("input", None, (), attrs, shape, role=role, **common)
        (graph.random_inputs if role == "random" else graph.inputs)[name] = node
    elif kind == "parameter":
        if name not in values:
            raise FileFormatError(f"parameter {name!r} has no array in the parameter file")
        value = np.array(values[name], dtype=np.float64)
        if value.shape != shape:
            raise FileFormatError(f"parameter {name!r}: array has shape {value.shape}, the graph says {shape}")
        node = Node("parameter", None, (), {}, shape, role=role, **common)
        graph.parameters[name], graph.values[name] = node, value
        graph.trainable[name] = bool(spec.get("trainable", True))
    elif kind == "constant":
        v = spec["value"]
        value = np.array(v["data"], dtype=np.float64).reshape(v["shape"])
        node = Node("constant", None, (), {"value": value}, value.shape, role=role, **common)
    elif kind == "op":
        from .ops.registry import REGISTRY
        op = REGISTRY.get(spec["op"])
        if op is None:
            raise FileFormatError(f"node {name!r} uses op {spec['op']!r}, which is not registered; "
                                  f"import the module that declares it before loading")
        inputs = [made[i] for i in spec["inputs"]]
        attrs = {k: _decode_attr(v) for k, v in spec.get("attrs", {}).items()}
        node = Node("op", op, inputs, attrs, shape, role=role, **common)
        inferred = op.infer_shape(inputs, {k: v for k, v in attrs.items() if k in op.attr_defaults})
        if tuple(inferred) != shape:
            raise FileFormatError(f"node {name!r}: op {op.name!r} gives shape {inferred}, "
                                  f"the file says {shape}")
        if spec.get("op_hash") and _op_hash(node) != spec["op_hash"]:
            raise FileFormatError(f"node {name!r}: op {op.name!r} is declared differently from when "
                                  f"the file was written; its body changed")
    else:
        raise FileFormatError(f"node {name!r} has unknown kind {kind!r}")
    return _register(graph, node)


def graph_from_spec(spec, values):
    """(graph, outputs, loss) rebuilt from :func:`graph_spec` output and parameter arrays."""
    try:
        info = spec["graph"]
        graph = Graph(info["name"], seed=info.get("seed", 0))
        made = {}
        for entry in spec["nodes"]:
            made[entry["id"]] = _build_node(entry, graph, made, values)
        graph.inputs = {made[i].name: made[i] for i in spec["inputs"]}
        graph.outputs = {k: made[i] for k, i in spec.get("graph_outputs", {}).items()}
        outputs = {k: made[i] for k, i in spec["outputs"].items()}
        loss = None if spec.get("loss") is None else made[spec["loss"]]
    except FileFormatError:
        raise
    except (KeyError, TypeError, ValueError, IndexError) as error:
        raise FileFormatError(f"the graph description is incomplete or malformed "
                              f"({type(error).__name__}: {error})") from None
    return graph, outputs, loss


# -- files -----------------------------------------------------------------------

def _paths(path):
    path = os.fspath(path)
    for suffix in (".json", ".npz"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    return path + ".json", path + ".npz"


def _write_atomic(path, data):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _model_parts(obj, loss, outputs):
    """(graph, outputs, loss, parameter values, model section, extra arrays)."""
    if hasattr(obj, "programs") and hasattr(obj, "get_params"):   # a Model
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
    raise TypeError(f"save takes a Model or a Graph, got {type(obj).__name__}")


def _dumps(document):
    """Indented JSON with one line per node (diffable, and short enough to read)."""
    nodes = document["nodes"]
    text = json.dumps({**document, "nodes": "@nodes@"}, indent=1)
    lines = ",\n  ".join(json.dumps(n) for n in nodes)
    return text.replace('"@nodes@"', "[\n  " + lines + "\n ]", 1)


def save(obj, path, loss=None, outputs=None):
    """Write a model (or a graph with its ``loss``/``outputs``) to ``path``.json and ``path``.npz."""
    json_path, npz_path = _paths(path)
    graph, outputs, loss, values, section, extra = _model_parts(obj, loss, outputs)
    spec = graph_spec(graph, outputs, loss)
    arrays = {f"param/{k}": np.asarray(v, dtype=np.float64) for k, v in values.items()
              if k in graph.parameters}
    arrays.update(extra)
    buffer = _io.BytesIO()
    np.savez(buffer, **arrays)
    blob = buffer.getvalue()
    document = {
        "format": FORMAT, "version": FORMAT_VERSION, "graphnn_version": __version__,
        **spec,
        "arrays": {"file": os.path.basename(npz_path), "sha256": hashlib.sha256(blob).hexdigest()},
        "model": section,
    }
    text = _dumps(document)
    _write_atomic(npz_path, blob)
    _write_atomic(json_path, text.encode())


def _read_document(json_path):
    try:
        with open(json_path, "rb") as f:
            document = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        raise
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise FileFormatError(f"{json_path} is not a valid graphnn file (corrupted or truncated JSON: "
                              f"{error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise FileFormatError(f"{json_path} is not a graphnn model file (no \"format\": \"{FORMAT}\")")
    version = document.get("version")
    if not isinstance(version, int) or version < 1:
        raise FileFormatError(f"{json_path}: format version {version!r} is not valid")
    if version > FORMAT_VERSION:
        raise FileFormatError(
            f"{json_path} was written in graphnn file format version {version} "
            f"(graphnn {document.get('graphnn_version', '?')}); this graphnn ({__version__}) reads "
            f"versions up to {FORMAT_VERSION}. Upgrade graphnn to load it.")
    return document


def _read_arrays(document, json_path, npz_path):
    try:
        with open(npz_path, "rb") as f:
            blob = f.read()
    except FileNotFoundError:
        raise FileFormatError(f"{json_path} needs its arrays file {npz_path}, which is missing") from None
    expected = document.get("arrays", {}).get("sha256")
    if expected != hashlib.sha256(blob).hexdigest():
        raise FileFormatError(f"{npz_path} does not match the checksum recorded in {json_path}: the arrays "
                              f"file is corrupted or belongs to another save")
    try:
        with np.load(_io.BytesIO(blob), allow_pickle=False) as data:
            return {k: np.array(data[k]) for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise FileFormatError(f"{npz_path} cannot be read ({error})") from None


def load_graph(path):
    """(graph, outputs, loss, model section) from a saved file."""
    json_path, npz_path = _paths(path)
    document = _read_document(json_path)
    arrays = _read_arrays(document, json_path, npz_path)
    values = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    graph, outputs, loss = graph_from_spec(document, values)
    section = document.get("model") or None
    if section is not None:
        section = {**section, "state": {k[len("state/"):]: v for k, v in arrays.items()
                                        if k.startswith("state/")}}
    return graph, outputs, loss, section


def load(path, target=None, dtype=None, optimizer=None, **options):
    """A :class:`~graphnn.Model` from a saved file, ready to predict or go on training.

    ``target``/``dtype``/``optimizer`` default to the saved ones (a saved graph without a
    model section compiles for "cpu", float32). Optimizer state, the step count and the
    random-input generator are restored, so training resumes where it stopped.
    """
    from .runtime import compile as compile_model
    from .train.optimizers import from_config
    graph, outputs, loss, section = load_graph(path)
    section = section or {}
    if optimizer is None and section.get("optimizer"):
        optimizer = from_config(section["optimizer"])
    model = compile_model(graph, loss, outputs=outputs, optimizer=optimizer,
                          target=target or section.get("target", "cpu"),
                          dtype=dtype or section.get("dtype", "float32"), **options)
    state = section.get("state", {})
    if state and optimizer is not None and set(state) == set(model.state):
        for k, v in state.items():
            model.state[k][...] = v
    model.step_count = int(section.get("step_count", 0))
    if section.get("rng_state"):
        model.rng.bit_generator.state = section["rng_state"]
    return model
