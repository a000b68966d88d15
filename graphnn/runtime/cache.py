"""The on-disk cache of generated modules.

A module is stored as ``<cache>/graphnn_<key>.py`` where ``key`` hashes the
program's structure (node lines and structural keys), dtype, target, options,
and the versions of graphnn, numba and graphnn's own code-generation sources.
The file is imported with a ``sys.modules`` entry from the cache folder, so
Numba's own cache (``cache=True``) hits in a new process. Files are written
atomically (temp file + ``os.replace``) and carry a checksum line; a file
whose checksum does not match is rebuilt.
"""
import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

import numba

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


def make_key(*parts):
    global _DIGEST
    if _DIGEST is None:
        _DIGEST = _code_sources_digest()
    h = hashlib.sha256()
    for p in (__version__, numba.__version__, _DIGEST, *parts):
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


def lookup(key, directory=None):
    """The cached module file for ``key`` if present and intact, else None."""
    path = cache_dir(directory) / f"graphnn_{key}.py"
    return path if path.exists() and _valid(path) else None


def store(key, source, directory=None):
    """Write ``source`` under ``key`` (atomically) and return its path."""
    path = cache_dir(directory) / f"graphnn_{key}.py"
    write_atomic(path, f"{_CHECK}{_checksum(source)}\n{source}")
    return path


def import_module(path):
    """Import a cached module under a stable name so Numba's cache applies."""
    name = path.stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
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
