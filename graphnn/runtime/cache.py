"""The on-disk cache of generated modules.

Three kinds of module live in the cache folder, each named by a hash:

* ``graphnn_h_<key>.py`` -- the scalar helpers of one dtype and math mode;
* ``graphnn_k_<hash>.py`` -- one kernel, named by the hash of its canonical
  text: every graph and process that needs that loop nest imports this file
  and Numba's cache next to it, so it is compiled once;
* ``graphnn_p_<key>.py`` -- one program's driver, keyed by the program's
  structure (node lines and structural keys), dtype, options, layout, and the
  versions of graphnn, numba and graphnn's own code-generation sources.

(The CUDA target stores one module per model, ``graphnn_<key>.py``; numba-cuda
caches its compiled kernels, per GPU architecture, beside it in the same way.) The
folder is put on ``sys.path`` and every module imported with a
``sys.modules`` entry, so Numba's own cache (``cache=True``) hits in a new
process. Files are written atomically (temp file + ``os.replace``) and carry
a checksum line; a file whose checksum does not match is rebuilt.

The folder is checked once per process (:func:`cache_dir`): made with mode
0o700 when graphnn makes it, a warning when others can write to it (Numba's
cache files are pickles: whoever writes them runs code as you), and when it
is not writable the process compiles into a private temporary folder,
removed at exit, with one warning. Numba's cache of the generated modules
always lives in the folder's ``__pycache__`` (:func:`_numba_locator`), and a
damaged Numba cache file is moved aside and its function compiled again
(:func:`repairing_numba_cache`).
"""
import atexit
import hashlib
import importlib.util
import os
import re
import shutil
import stat
import sys
import tempfile
import threading
import uuid
import warnings
from pathlib import Path

from ..errors import CacheError
from ..version import __version__

_CHECK = "# graphnn-checksum: "

_FOLDERS = {}           # the folder asked for -> the folder used (itself, or the private one)
_NUMBA_FOLDERS = set()  # folders whose modules keep Numba's cache in their own __pycache__
_PRIVATE = []           # this process's private folder, once one was needed
_LOCK = threading.RLock()


def cache_dir(explicit=None):
    """The cache folder: ``explicit``, else ``$GRAPHNN_CACHE_DIR``, else ``~/.cache/graphnn``.

    Checked on its first use in a process (:func:`_prepare`); a folder that
    cannot be written gives way to a private temporary one."""
    asked = _asked(explicit)
    used = _FOLDERS.get(asked)
    if used is None:
        with _LOCK:
            used = _FOLDERS.get(asked)
            if used is None:
                used = _FOLDERS[asked] = _prepare(asked)
    return used


def _asked(explicit):
    if explicit is not None and (not isinstance(explicit, (str, os.PathLike)) or isinstance(explicit, bytes)):
        from ..errors import ArgumentError
        raise ArgumentError(f"cache_dir must be a folder path (a str or a Path), not {explicit!r}")
    path = explicit or os.environ.get("GRAPHNN_CACHE_DIR") or Path.home() / ".cache" / "graphnn"
    return Path(os.path.abspath(Path(path).expanduser()))


def _prepare(path):
    """Make or check the cache folder ``path``; returns the folder to use."""
    if path.exists() and not path.is_dir():
        raise CacheError(f"the graphnn cache path {path} is a file, not a directory: move the file "
                         f"away, or point GRAPHNN_CACHE_DIR (or compile's cache_dir=) at a directory")
    existed = path.is_dir()
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)   # private: see _warn_if_shared
    except (FileExistsError, NotADirectoryError):
        raise CacheError(f"the graphnn cache path {path} cannot be a directory: one of its parent "
                         f"folders is a file. Point GRAPHNN_CACHE_DIR (or compile's cache_dir=) at a "
                         f"directory") from None
    except OSError as exc:
        return _unwritable(path, exc)
    if existed:
        _warn_if_shared(path)
    try:
        _probe(path)
    except OSError as exc:
        return _unwritable(path, exc)
    _NUMBA_FOLDERS.add(str(path))
    return path


def _probe(folder):
    """Raise OSError unless files can be made in ``folder`` and in its ``__pycache__``, where
    Numba keeps its cache of the modules (Numba makes that folder when it is not there)."""
    numba_folder = folder / "__pycache__"
    for where in (folder, numba_folder) if numba_folder.exists() else (folder,):
        probe = where / f".graphnn-probe-{uuid.uuid4().hex[:12]}"
        os.close(_create(probe))
        os.unlink(probe)


def _warn_if_shared(folder):
    """Warn when users other than the owner can write ``folder`` (or its ``__pycache__``)."""
    if not hasattr(os, "getuid"):       # Windows: st_mode does not say who can write
        return
    for where in (folder, folder / "__pycache__"):
        try:
            st = os.stat(where)
        except OSError:
            continue
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022 and (st.st_uid != os.getuid() or mode & 0o002):
            warnings.warn(f"the graphnn cache folder {where} can be written by other users (mode "
                          f"{mode:04o}); graphnn imports the modules there and Numba loads the pickles "
                          f"there, so whoever writes them can run code as you. Make it private "
                          f"(chmod 700 {where}) or point GRAPHNN_CACHE_DIR at a folder of your own",
                          RuntimeWarning, stacklevel=4)


def _unwritable(path, exc):
    """``path`` cannot be written: say so once, and use the private folder."""
    private = _private_folder()
    warnings.warn(f"the graphnn cache folder {path} is not writable ({exc.strerror or exc}); this "
                  f"process compiles without a lasting cache, in the private folder {private} "
                  f"(removed at exit). Make {path} writable, or point GRAPHNN_CACHE_DIR (or "
                  f"compile's cache_dir=) at a writable folder", RuntimeWarning, stacklevel=4)
    return private


def _private_folder():
    with _LOCK:
        if not _PRIVATE:
            try:
                folder = Path(tempfile.mkdtemp(prefix="graphnn-cache-"))     # mode 0o700
            except OSError as exc:
                raise CacheError(f"no folder to compile into: the graphnn cache folder is not "
                                 f"writable, nor is the temporary folder ({exc}). Point "
                                 f"GRAPHNN_CACHE_DIR at a writable folder") from exc
            _PRIVATE.append(folder)
            _NUMBA_FOLDERS.add(str(folder))
        return _PRIVATE[0]


@atexit.register        # registered on import, before the compile worker's: runs after it
def _remove_private_folder():
    for folder in _PRIVATE:
        shutil.rmtree(folder, ignore_errors=True)


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
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    first, _, body = text.partition("\n")
    return first.startswith(_CHECK) and first[len(_CHECK):].strip() == _checksum(body)


def _create(path, mode=0o600):
    """Make the new file ``path`` (it must not exist) and open it for writing; every file the
    cache writes is made here. ``mode`` less the umask, as ``open()`` does."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), mode)


def write_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``: a reader sees the
    old file or the new one, never part of one. A new file gets mode 0o666 less the umask, as
    ``open()`` gives it; a file replaced keeps its mode."""
    path = Path(path)
    tmp = path.parent / f"{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    fd = _create(tmp, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            try:
                os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
            except FileNotFoundError:
                pass
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _write_entry(directory, name, text):
    """Write cache file ``name`` in the cache folder. Where that fails (a folder made read-only,
    a full disk), the process goes on in the private folder, with a warning; a folder removed
    while in use is made again."""
    folder = cache_dir(directory)
    try:
        write_atomic(folder / name, text)
    except OSError as exc:
        asked = _asked(directory)
        with _LOCK:
            if folder.is_dir() and folder not in _PRIVATE:
                _FOLDERS[asked] = _unwritable(asked, exc)
            else:
                _FOLDERS.pop(asked, None)
        folder = cache_dir(directory)
        try:
            write_atomic(folder / name, text)
        except OSError as again:
            raise CacheError(f"cannot write the graphnn cache file {folder / name}: {again}. Point "
                             f"GRAPHNN_CACHE_DIR (or compile's cache_dir=) at a writable folder") from again
    return folder / name


def lookup(key, directory=None, prefix="graphnn_"):
    """The cached module file for ``key`` if present and intact, else None."""
    path = cache_dir(directory) / f"{prefix}{key}.py"
    return path if path.exists() and _valid(path) else None


def store(key, source, directory=None, prefix="graphnn_"):
    """Write ``source`` under ``key`` (atomically) and return its path."""
    return _write_entry(directory, f"{prefix}{key}.py", f"{_CHECK}{_checksum(source)}\n{source}")


def store_module(name, source, directory=None):
    """Write module ``name`` unless an intact copy is there; returns True if it wrote."""
    path = cache_dir(directory) / f"{name}.py"
    if path.exists() and _valid(path):
        return False
    _write_entry(directory, f"{name}.py", f"{_CHECK}{_checksum(source)}\n{source}")
    return True


def on_import_path(directory=None):
    """Put the cache folder on ``sys.path``: drivers import their kernels by module name."""
    folder = str(cache_dir(directory))
    _numba_locator()
    if folder not in sys.path:
        sys.path.append(folder)
    importlib.invalidate_caches()   # files written since the last import must be seen


def imported_modules(path):
    """Names of the cached modules that the module at ``path`` imports (its kernels, helpers)."""
    return re.findall(r"^from (graphnn_[hk]_\w+) import", read_source(path), flags=re.MULTILINE)


def import_module(path, rewritten=(), cuda=False):
    """Import a cached module under a stable name so Numba's cache applies.

    ``rewritten``: names of modules just written again (a damaged file replaced);
    this process drops its copies of them and of ``path`` and imports them anew.
    ``cuda``: the module holds CUDA kernels (numba-cuda's cache, :func:`_numba_locator`)."""
    name = path.stem
    for stale in rewritten:
        sys.modules.pop(stale, None)
    if not rewritten and name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(path):
        return sys.modules[name]
    _numba_locator(cuda)
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
    return path.read_text(encoding="utf-8").partition("\n")[2]


# -- Numba's cache of the generated modules ----------------------------------------------------
_LOCATOR = []           # the caching modules (numba's, numba-cuda's) given graphnn's locator
# Numba's caching code (the CPU's, and numba-cuda's copy of it for CUDA kernels): where a load
# of one of their files fails, :func:`_damaged_numba_files` finds the file in their frames
_CACHING_MODULES = {"numba.core.caching": os.path.join("numba", "core", "caching.py"),
                    "numba.cuda.core.caching": os.path.join("numba", "cuda", "core", "caching.py")}
_NUMBA_CACHING = tuple(_CACHING_MODULES.values())


def _numba_locator(cuda=False):
    """Make Numba keep the cache of every generated module in its cache folder's ``__pycache__``.

    Numba tries its cache locators in order (numba/core/caching.py): ``$NUMBA_CACHE_DIR``
    first, then the module's ``__pycache__`` if it can write there, then ``~/.cache/numba``.
    The locator added in front takes the modules of graphnn's cache folders only -- found
    writable by :func:`_probe` -- and leaves every other function to Numba's own. With
    ``cuda``, numba-cuda's cache of CUDA kernels (its own copy of that code) gets one too."""
    for name in list(_CACHING_MODULES)[:2 if cuda else 1]:
        if name not in _LOCATOR:
            with _LOCK:
                if name not in _LOCATOR:
                    try:
                        caching = importlib.import_module(name)
                    except ImportError:     # numba's own numba.cuda (no numba-cuda): Numba's list serves
                        caching = None
                    if caching is not None:
                        _add_locator(caching)
                    _LOCATOR.append(name)


def _add_locator(caching):
    in_tree = getattr(caching, "InTreeCacheLocator", None) or caching._InTreeCacheLocator

    class GraphnnCacheLocator(in_tree):
        @classmethod
        def from_function(cls, py_func, py_file):
            if os.path.dirname(os.path.abspath(py_file)) not in _NUMBA_FOLDERS:
                return None
            return super().from_function(py_func, py_file)

    caching.CacheImpl._locator_classes.insert(0, GraphnnCacheLocator)


def repairing_numba_cache(run):
    """``run()``, where Numba's cache of a generated module fails it:

    * Numba could not load one of its cache files (``*.nbi``, ``*.nbc``) -- truncated,
      overwritten, from a crashed disk: that file is moved aside (to ``<name>.corrupt``), a
      warning names it, and ``run()`` is called again; Numba compiles that function anew and
      writes its cache again;
    * Numba could not write one (a full disk, a folder made read-only since, a compiled
      function it cannot pickle): that function's cache is turned off for this process, a
      warning says why, and ``run()`` is called again; the function is compiled and used,
      only not kept for the next process.

    ``run`` must be safe to call again after such a failure (it failed before it ran the
    function: a scratch call, one launch)."""
    repaired, turned_off = set(), set()
    while True:
        try:
            return run()
        except Exception as exc:
            damaged = [(f, cause) for f, cause in _damaged_numba_files(exc) if f not in repaired]
            unsaved = [c for c in _unsaved_caches(exc) if id(c) not in turned_off]
            if not damaged and not unsaved:
                raise
            for f, cause in damaged:
                repaired.add(f)
                _set_aside(f, cause)
            for cache in unsaved:
                turned_off.add(id(cache))
                cache.disable()
                warnings.warn(f"graphnn: Numba could not write its cache of {cache._name} in "
                              f"{cache._cache_path} ({type(exc).__name__}: {str(exc)[:200]}); that "
                              f"function is compiled in this process without being kept",
                              RuntimeWarning, stacklevel=2)


def _unsaved_caches(exc):
    """Numba's caches (of graphnn's modules) that were writing when ``exc``, or an exception it
    chains, was raised."""
    found, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        tb = exc.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            if code.co_filename.endswith(_NUMBA_CACHING) and code.co_name == "_save_overload":
                cache = tb.tb_frame.f_locals.get("self")
                path = getattr(cache, "_cache_path", None)
                if path and os.path.dirname(os.path.abspath(path)) in _NUMBA_FOLDERS and cache not in found:
                    found.append(cache)
            tb = tb.tb_next
        exc = exc.__cause__ or exc.__context__
    return found


def _damaged_numba_files(exc):
    """[(file, exception)]: the cache files of graphnn's modules that Numba was loading when
    ``exc``, or an exception it chains, was raised."""
    found, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        culprit, tb = None, exc.__traceback__
        while tb is not None:           # outermost first: the innermost load names the file
            code = tb.tb_frame.f_code
            if code.co_filename.endswith(_NUMBA_CACHING):
                local = tb.tb_frame.f_locals
                if code.co_name == "_load_data":
                    culprit = local.get("path", culprit)
                elif code.co_name == "_load_index":
                    culprit = getattr(local.get("self"), "_index_path", culprit)
                elif code.co_name == "_load_overload":      # the data loaded, but not rebuilt
                    culprit = getattr(getattr(local.get("self"), "_cache_file", None), "_index_path",
                                      culprit)
            tb = tb.tb_next
        if culprit is not None and os.path.dirname(os.path.dirname(os.path.abspath(culprit))) \
                in _NUMBA_FOLDERS:
            found.append((culprit, exc))
        exc = exc.__cause__ or exc.__context__
    return found


def _set_aside(path, exc):
    try:
        os.replace(path, f"{path}.corrupt")
    except FileNotFoundError:
        pass                            # another process set it aside first
    except OSError:
        try:
            os.unlink(path)
        except OSError:
            pass
    warnings.warn(f"graphnn: Numba's cache file {path} is damaged ({type(exc).__name__}: "
                  f"{str(exc)[:200]}); "
                  f"it was moved aside to {os.path.basename(path)}.corrupt and the function "
                  f"compiled again", RuntimeWarning, stacklevel=3)
