"""MkDocs hook: show the Sphinx roles in graphnn's docstrings (:class:`Model`) as code.

The docstrings are written for reading in the source and with ``help()``; mkdocstrings prints a
role as it is (":class:`Model`"). This turns each into the name in code, linked to its API entry
when the name is fully qualified (``graphnn.…``) and on the site.
"""
import re

ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):<code>([^<]+)</code>")


def _name(match):
    text = match.group(1)
    name = text.lstrip("~")
    title = name.rsplit(".", 1)[-1] if text.startswith("~") else name.lstrip(".")
    code = f"<code>{title}</code>"
    if name.startswith("graphnn."):
        return f'<autoref identifier="{name}" optional>{code}</autoref>'
    return code


def on_page_content(html, **kwargs):
    return ROLE.sub(_name, html)
