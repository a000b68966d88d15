"""Errors raised by graphnn. Each names the node, shape or argument at fault."""


class GraphnnError(Exception):
    """Base class for every error graphnn raises on purpose."""


class ShapeError(GraphnnError, ValueError):
    """Two shapes that an op combines do not fit together."""


class DtypeError(GraphnnError, TypeError):
    """Two nodes with different explicit dtypes meet in one op."""


class GraphCycleError(GraphnnError, ValueError):
    """Merging or substituting graphs would make a node depend on itself."""


class FeedError(GraphnnError, KeyError):
    """A feed is missing, unknown, or has the wrong shape or dtype."""

    def __str__(self):  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class OpDeclarationError(GraphnnError, ValueError):
    """An op's declaration cannot be computed: its body is not a real, finite SymPy
    expression, a reduction is misplaced, or an attribute default has the wrong type."""


class UnknownFunctionError(OpDeclarationError):
    """An op body uses a SymPy function graphnn cannot translate to code."""


class TargetError(GraphnnError, RuntimeError):
    """A compile target cannot run on this machine."""


class CacheError(GraphnnError, RuntimeError):
    """A compile-cache entry is unreadable."""


class FileFormatError(GraphnnError, ValueError):
    """A saved graph or model file is corrupted, incomplete, or from a newer format version."""


class GraphMixError(GraphnnError, ValueError):
    """Nodes of two different graphs meet in one op or one compiled model."""


class DistributedError(GraphnnError, RuntimeError):
    """Data-parallel training over MPI cannot start or go on: mpi4py is missing, the ranks built
    different graphs, or a rank failed (see docs/distributed.md)."""


class ArgumentError(GraphnnError, TypeError, ValueError):
    """An argument of a graphnn function has the wrong type or value (so it is both a
    ``TypeError`` and a ``ValueError``: code that caught either keeps working)."""


class NumericsWarning(UserWarning):
    """An op's value or derivative loses accuracy, overflows or gives NaN where the exact value
    is a finite number (see :func:`graphnn.lint`). A warning, not an error: the op works."""
