"""The on-disk cache of generated modules.

Three kinds of module live in the cache folder, each named by a hash:

* ``graphnn_h_<key>.py`` -- the scalar helpers of one dtype and math mode;
* ``graphnn_k_<hash>.py`` -- one kernel, named by the hash of its canonical
  text: every graph and process that needs that loop nest imports this file
  and Numba's cache next to it, so it is compiled once;
* ``graphnn_p_<key>.py`` -- one program's driver, keyed by the program's
  structure (node lines and structural keys), dtype, options, layout, and the
  versions of graphnn, numba and graphnn's own code-generation sources.

(The CUDA target stores one module per model, ``graphnn_<key>.py``.) The
folder is put on ``sys.path`` and every module imported with a
``sys.modules`` entry, so Numba's own cache (``cache=True``) hits in a new
process. Files are written atomically (temp file + ``os.replace``) and carry
a checksum line; a file whose checksum does not match is rebuilt.
"""
import hashlib
import importlib.util
import os
import re
import sys
import tempfile
from pathlib import Path

from ..errors import CacheError
from ..version import __version__

_CHECK = "# graphnn-checksum: "


def cache_dir(explicit=None):
    path = Path(explicit or os.environ.get("GRAPHNN_CACHE_DIR")
                or Path.home() / ".cache" / "graphnn")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _code_sources_digest():
    """Hash of graphnn's lowering/codegen/runtime sources: Numba does not see changes in them."""
    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for sub in ("lower", "codegen", "ops", "derive", "runtime"):
        for f in sorted((root / sub).glob("*.py")):
            h.update(f.read_bytes())
    return h.hexdigest()


_DIGEST = None


def _numba_version():
    # from the package metadata: importing numba (0.3 s) can wait until something compiles
    from importlib.metadata import version
    return version("numba")


def make_key(*parts):
    global _DIGEST
    if _DIGEST is None:
        _DIGEST = _code_sources_digest()
    h = hashlib.sha256()
    for p in (__version__, _numba_version(), _DIGEST, *parts):
        h.update(repr(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def _checksum(body):
    return hashlib.sha256(body.encode()).hexdigest()


def _valid(path):
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return False
    first, _, body = text.partition("\n")
    return first.startswith(_CHECK) and first[len(_CHECK):].strip() == _checksum(body)


def write_atomic(path, text):
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def lookup(key, directory=None, prefix="graphnn_"):
    """The cached module file for ``key`` if present and intact, else None."""
    path = cache_dir(directory) / f"{prefix}{key}.py"
    return path if path.exists() and _valid(path) else None


def store(key, source, directory=None, prefix="graphnn_"):
    """Write ``source`` under ``key`` (atomically) and return its path."""
    path = cache_dir(directory) / f"{prefix}{key}.py"
    write_atomic(path, f"{_CHECK}{_checksum(source)}\n{source}")
    return path


def store_module(name, source, directory=None):
    """Write module ``name`` unless an intact copy is there; returns True if it wrote."""
    path = cache_dir(directory) / f"{name}.py"
    if path.exists() and _valid(path):
        return False
    write_atomic(path, f"{_CHECK}{_checksum(source)}\n{source}")
    return True


def on_import_path(directory=None):
    """Put the cache folder on ``sys.path``: drivers import their kernels by module name."""
    folder = str(cache_dir(directory))
    if folder not in sys.path:
        sys.path.append(folder)
    importlib.invalidate_caches()   # files written since the last import must be seen


def imported_modules(path):
    """Names of the cached modules that the module at ``path`` imports (its kernels, helpers)."""
    return re.findall(r"^from (graphnn_[hk]_\w+) import", read_source(path), flags=re.MULTILINE)


def import_module(path, rewritten=()):
    """Import a cached module under a stable name so Numba's cache applies.

    ``rewritten``: names of modules just written again (a damaged file replaced);
    this process drops its copies of them and of ``path`` and imports them anew."""
    name = path.stem
    for stale in rewritten:
        sys.modules.pop(stale, None)
    if not rewritten and name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise CacheError(f"generated module {path} failed to import: {exc}") from exc
    return module


def read_source(path):
    """The generated source without the checksum line."""
    return path.read_text().partition("\n")[2]
