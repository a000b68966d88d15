"""``graphnn render MODULE:FUNCTION --out FILE``: draw what a Python function builds."""
import importlib
import os
import sys

from ..errors import FeedError, GraphnnError


def load(spec):
    """Call ``FUNCTION`` from ``MODULE`` (a module name or a .py file) with no arguments."""
    if ":" not in spec:
        raise GraphnnError(f"expected MODULE:FUNCTION (e.g. graphnn.lecture:regression_net), got {spec!r}")
    module_name, function_name = spec.rsplit(":", 1)
    if module_name.endswith(".py") or os.sep in module_name:
        folder, file = os.path.split(os.path.abspath(module_name))
        sys.path.insert(0, folder)
        module_name = os.path.splitext(file)[0]
    elif os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like `python -m`: modules next to the caller are found
    module = importlib.import_module(module_name)
    try:
        function = getattr(module, function_name)
    except AttributeError:
        raise GraphnnError(f"module {module.__name__!r} has no function {function_name!r}") from None
    return function()


def load_feed(path):
    """The arrays of an ``.npz`` file (``np.savez``), by name: the feed of ``--feed``."""
    import zipfile

    import numpy as np
    try:
        data = np.load(path, allow_pickle=False)
        if not hasattr(data, "files"):
            raise ValueError("it holds one array, not arrays by input name")
        with data:
            return {name: data[name] for name in data.files}
    except OSError as e:
        raise FeedError(f"--feed {path!r}: cannot read it ({e.strerror or e})") from None
    except (ValueError, zipfile.BadZipFile) as e:
        raise FeedError(f"--feed {path!r} is not an .npz file of arrays by input name ({e}); write one "
                        f"with np.savez(path, x=X, y=Y)") from None


def check_format(out):
    """Refuse at once an ``out`` whose format this machine cannot make (PNG/PDF without ``dot``)."""
    from . import backend
    fmt = backend.format_for_path(out)
    if fmt not in backend.IN_PROCESS_FORMATS and not backend.system_dot():
        raise backend.RenderFormatError(
            f"--out {out!r}: {fmt.upper()} needs the system Graphviz `dot` program, which is not on "
            f"PATH; {backend.INSTALL_HINT}")
    return fmt


def run(spec, out, deltas=False, depth=None, collapse=(), feed=None, expand=False):
    """Render the graph ``spec`` builds to ``out``; returns the path written.

    The function may return a Graph, an output or loss node, or an object with
    ``.loss`` and ``.graph`` (a ``feed`` attribute, if present, annotates the
    delta flow with values). ``feed``: a path to an ``.npz`` file of input
    arrays by name, which wins over the object's ``feed``: δ norms with
    ``deltas``, value norms without. The output format is checked first,
    before the function runs.
    """
    from . import render
    check_format(out)
    feed = load_feed(feed) if feed is not None else None
    target = load(spec)
    if feed is None and deltas:
        feed = getattr(target, "feed", None)
    picture = render(target, deltas=deltas, feed=feed, depth=depth, collapse=collapse, expand=expand)
    return picture.save(out)


def main(args):
    """Entry point of the ``render`` subcommand (argparse namespace in, exit status out)."""
    try:
        expand = args.expand or ()  # --expand alone: [True]; --expand NAME: [NAME]
        path = run(args.target, args.out, deltas=args.deltas, depth=args.depth,
                   collapse=args.collapse or (), feed=args.feed, expand=True in expand or list(expand))
    except (GraphnnError, ImportError, TypeError) as e:
        print(f"graphnn render: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0
