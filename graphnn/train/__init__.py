"""Training: optimizers (SymPy update rules), fit, metrics."""
from . import metrics
from .fit import History, evaluate, fit
from .optimizers import SGD, Adam, Momentum, Optimizer

__all__ = ["SGD", "Adam", "Momentum", "Optimizer", "fit", "evaluate", "History", "metrics"]
