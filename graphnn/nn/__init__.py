"""Layers built from ops (graph builders)."""
from .layers import dense

__all__ = ["dense"]
