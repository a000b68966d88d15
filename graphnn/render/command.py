"""``graphnn render MODULE:FUNCTION --out FILE``: draw what a Python function builds."""
import importlib
import os
import sys

from ..errors import GraphnnError


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


def run(spec, out, deltas=False, depth=None, collapse=()):
    """Render the graph ``spec`` builds to ``out``; returns the path written.

    The function may return a Graph, an output or loss node, or an object with
    ``.loss`` and ``.graph`` (a ``feed`` attribute, if present, annotates the
    delta flow with values).
    """
    from . import render
    target = load(spec)
    feed = getattr(target, "feed", None) if deltas else None
    picture = render(target, deltas=deltas, feed=feed, depth=depth, collapse=collapse)
    return picture.save(out)


def main(args):
    """Entry point of the ``render`` subcommand (argparse namespace in, exit status out)."""
    try:
        path = run(args.target, args.out, deltas=args.deltas, depth=args.depth,
                   collapse=args.collapse or ())
    except (GraphnnError, ImportError, TypeError) as e:
        print(f"graphnn render: {e}", file=sys.stderr)
        return 2
    print(path)
    return 0
