"""Text and networkx views of a graph."""
import networkx as nx

from .node import format_shape


def one_line(text):
    """``text`` safe for one line of generated code's comments: control characters (a newline
    would end a comment and start code) are written as escapes."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def node_line(node):
    ins = ", ".join(p.name for p in node.inputs)
    attrs = {k: v for k, v in node.attrs if k != "value"}
    extra = " " + " ".join(f"{k}={v}" for k, v in attrs.items()) if attrs else ""
    dtype = f" {node.dtype}" if node.dtype else ""
    return f"{node.name} = {node.op_name}({ins}){extra} : {format_shape(node.shape)}{dtype}"


def graph_text(nodes):
    """One line per node: ``name = op(inputs) attrs : shape``."""
    return "\n".join(node_line(n) for n in nodes)


def to_networkx(nodes):
    g = nx.DiGraph()
    for n in nodes:
        g.add_node(n.name, op=n.op_name, kind=n.kind, shape=n.shape, role=n.role,
                   scope=n.scope, node=n)
    for n in nodes:
        for pos, p in enumerate(n.inputs):
            g.add_edge(p.name, n.name, position=pos)
    return g
