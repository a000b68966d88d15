"""Stage 2: autodiff -- the backward graph of delta nodes, and local derivatives."""
from .autodiff import Backward, derive
from .local import LocalDerivative, local_derivative

__all__ = ["Backward", "derive", "LocalDerivative", "local_derivative"]
