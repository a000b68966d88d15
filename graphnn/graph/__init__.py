"""Stage 1 of the pipeline: the explicit DAG (nodes, graphs, traversal, views)."""
from . import init
from .node import Graph, Node, format_shape
from .traverse import consumers, substitute, topological

__all__ = ["Graph", "Node", "format_shape", "consumers", "substitute", "topological", "init"]
