"""How pictures look: colours by node kind, HTML-like labels, and the gradient-magnitude scale."""
import math

FONT = "Helvetica"

# The title is regular Helvetica, not Helvetica-Bold: the in-process (WebAssembly) Graphviz has no
# fonts and estimates text widths from built-in metrics, which know "Helvetica" but not "Helvetica-Bold"
# (it falls back to narrower Times and the picture comes out too narrow for the title).
GRAPH = {"rankdir": "LR", "fontname": FONT, "fontsize": "15", "nodesep": "0.22", "ranksep": "0.45",
         "newrank": "true", "labelloc": "t", "labeljust": "l", "pad": "0.15", "bgcolor": "white"}
NODE = {"fontname": FONT, "fontsize": "10", "margin": "0.08,0.03", "height": "0.3", "penwidth": "1.2"}
EDGE = {"fontname": FONT, "fontsize": "9", "arrowsize": "0.6", "color": "#475569"}
# a 3-D box draws its depth inside its width: more margin keeps the label off its edges
BOX_MARGIN = "0.16,0.05"

KIND = {
    "input": {"shape": "ellipse", "style": "filled", "fillcolor": "#dbeafe", "color": "#1d4ed8"},
    "parameter": {"shape": "box", "style": "filled", "fillcolor": "#fef3c7", "color": "#b45309"},
    "constant": {"shape": "box", "style": "dashed", "color": "#94a3b8", "fontcolor": "#475569"},
    "op": {"shape": "box", "style": "rounded,filled", "fillcolor": "#f8fafc", "color": "#475569"},
    "loss": {"shape": "box", "style": "rounded,filled,bold", "fillcolor": "#fee2e2", "color": "#b91c1c"},
    "scope": {"shape": "box3d", "style": "filled", "fillcolor": "#e0e7ff", "color": "#4338ca",
              "margin": BOX_MARGIN},
    "loss_scope": {"shape": "box3d", "style": "filled", "fillcolor": "#fee2e2", "color": "#b91c1c",
                   "margin": BOX_MARGIN},
    "delta": {"shape": "box", "style": "rounded,filled", "fillcolor": "#f3e8ff", "color": "#7e22ce"},
    "gradient": {"shape": "box", "style": "filled,bold", "fillcolor": "#ffedd5", "color": "#c2410c"},
    "delta_scope": {"shape": "box3d", "style": "filled", "fillcolor": "#f3e8ff", "color": "#7e22ce",
                    "margin": BOX_MARGIN},
}

CLUSTER = {"style": "rounded,filled", "color": "#94a3b8", "fontname": FONT, "fontsize": "11",
           "labeljust": "l", "fontcolor": "#334155", "penwidth": "1"}
CLUSTER_FILLS = ("#f1f5f9", "#e2e8f0", "#cbd5e1")
LOSS_CLUSTER = {"fillcolor": "#fef2f2", "color": "#fca5a5"}

FORWARD_EDGE_FADED = {"color": "#cbd5e1", "arrowsize": "0.5"}
DELTA_EDGE = {"color": "#7e22ce", "fontcolor": "#6b21a8", "dir": "back", "arrowtail": "normal"}
PAIR_EDGE = {"style": "dotted", "arrowhead": "none", "color": "#c4b5fd"}

# (upper bound of the norm, colour, name) -- vanishing in blue, healthy in grey-green, exploding in red
MAGNITUDE_BANDS = (
    (1e-6, "#1d4ed8", "vanishing < 1e-6"),
    (1e-3, "#60a5fa", "small < 1e-3"),
    (1e2, "#16a34a", "healthy < 100"),
    (1e4, "#ea580c", "large < 1e4"),
    (math.inf, "#dc2626", "exploding >= 1e4"),
)
ZERO_COLOR, NONFINITE_COLOR = "#94a3b8", "#c026d3"


def number(value):
    """A short readable number: 0.31, 2.5e-05, 1.2e+03."""
    if not math.isfinite(value):
        return str(value)
    return f"{value:.2g}"


def value(array, few=3):
    """A node's value in one line: '= 0.31', '= [0.31, -1.2]' for a few numbers, else its norm."""
    flat = [float(v) for v in array.reshape(-1)[:few + 1]]
    if array.size == 1:     # three digits, as the title gives the loss: the loss node agrees
        return f"= {flat[0]:.3g}" if math.isfinite(flat[0]) else f"= {flat[0]}"
    if array.size <= few:
        return f"= [{', '.join(number(v) for v in flat)}]"
    return f"‖·‖ = {number(float((array ** 2).sum() ** 0.5))}"


def magnitude(norm):
    """Edge attributes for a gradient of this norm: colour band and pen width."""
    if not math.isfinite(norm):
        return {"color": NONFINITE_COLOR, "penwidth": "3", "style": "bold"}
    if norm == 0:
        return {"color": ZERO_COLOR, "penwidth": "1", "style": "dashed"}
    color = next(c for bound, c, _ in MAGNITUDE_BANDS if norm < bound)
    width = 0.8 + 0.45 * min(max(math.log10(norm) + 4, 0), 8)
    return {"color": color, "penwidth": f"{width:.2f}"}


def text(value):
    """A string as a DOT label shows it: control characters written as escapes (a NUL or a
    newline in a node name), then backslashes doubled (they would start DOT escapes like \\n)."""
    from ..graph.text import one_line
    return one_line(value).replace("\\", "\\\\")


def quoted(attrs):
    """``attrs`` with every string value quoted as plain text: the graphviz library would pass a
    value that looks like ``<...>`` through unquoted, as an HTML-like label, and a node name
    can look like that (and inject DOT statements)."""
    import graphviz
    return {k: graphviz.nohtml(v) if isinstance(v, str) else v for k, v in attrs.items()}


def label(title, *details):
    """A plain multi-line label: the title, then the detail lines.

    Plain rather than HTML-like labels: the in-process WebAssembly Graphviz
    is built without the XML parser that HTML-like labels need and would draw
    the node's id instead.
    """
    return "\\n".join(text(line) for line in (title, *details) if line)


def left(line):
    """A one-line label drawn left-aligned: DOT's ``\\l`` line end makes the SVG anchor the text at its
    left edge, so a renderer whose font is wider than Graphviz's estimate spills it to the right only,
    never off the left of the picture (labeljust=l alone keeps the text centred on the estimate)."""
    return text(line) + "\\l"


def shorten(text, limit=44):
    return text if len(text) <= limit else text[:limit - 1] + "…"
