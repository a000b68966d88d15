"""Griffe extension: the doctest examples in graphnn's docstrings as Python console code.

The docstrings carry ``>>>`` examples (they run as doctests). Markdown would read their ``>``
as quotes; this fences each example (the ``>>>``/``...`` lines and the output that follows, up to
a blank line) as a ``pycon`` code block before mkdocstrings renders it.
"""
import griffe


def fence_doctests(text):
    """``text`` with every run of doctest lines wrapped in a ```pycon fence."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        stripped = lines[i].lstrip()
        if not stripped.startswith(">>>"):
            out.append(lines[i])
            i += 1
            continue
        indent = lines[i][: len(lines[i]) - len(stripped)]
        out.append(indent + "```pycon")
        while i < len(lines) and lines[i].strip():
            out.append(lines[i])
            i += 1
        out.append(indent + "```")
    return "\n".join(out)


class DoctestFences(griffe.Extension):
    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None and ">>>" in obj.docstring.value:
            obj.docstring.value = fence_doctests(obj.docstring.value)
