"""The object :func:`graphnn.render` returns: DOT source, SVG, files, and Jupyter display."""
import os

from . import backend


class Rendering:
    """A rendered picture of a graph or of its delta flow.

    ``source`` is the DOT text; ``svg()`` renders it (system ``dot`` or
    in-process WebAssembly); ``save(path)`` picks the format from the file
    extension; in Jupyter the object displays itself as SVG.
    ``derivatives`` maps (consumer node name, input position) to the edge's
    local derivative (``.text``, ``.latex``) for delta-flow pictures.
    """

    def __init__(self, source, title="graph", derivatives=None, loss_value=None):
        self.source = source
        self.title = title
        self.derivatives = derivatives or {}
        self.loss_value = loss_value
        self._svg = None

    def pipe(self, format="svg"):
        """The picture as bytes in ``format`` ('svg', 'png', 'pdf', 'dot', 'json')."""
        return backend.pipe(self.source, format)

    def svg(self):
        """The picture as an SVG string (rendered once, then cached)."""
        if self._svg is None:
            self._svg = self.pipe("svg").decode("utf-8")
        return self._svg

    def save(self, path):
        """Write the picture to ``path``; .dot/.gv and .svg always work, .png/.pdf need system ``dot``.

        Returns the path written.
        """
        path = os.fspath(path)
        fmt = backend.format_for_path(path)
        if fmt == "dot":
            data = self.source.encode("utf-8")
        elif fmt == "svg":
            data = self.svg().encode("utf-8")
        else:
            data = self.pipe(fmt)
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path

    @property
    def graphviz(self):
        """A ``graphviz.Source`` of this picture that renders without system Graphviz too."""
        return backend.Diagram(self.source)

    def _repr_svg_(self):
        return self.svg()

    def _repr_mimebundle_(self, include=None, exclude=None, **_):
        return {"image/svg+xml": self.svg()}

    def __str__(self):
        return self.source

    def __repr__(self):
        lines = self.source.count("\n")
        return f"<Rendering {self.title!r}: {lines} lines of DOT; .svg(), .save(path)>"
