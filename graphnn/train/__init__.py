"""Training: optimizers (SymPy update rules) and fit."""
from .optimizers import SGD, Adam, Momentum, Optimizer

__all__ = ["SGD", "Adam", "Momentum", "Optimizer"]
