"""Training: optimizers (SymPy update rules), fit, metrics."""
from . import metrics
from .fit import History, evaluate, fit
from .optimizers import SGD, Adam, Momentum, Optimizer
from .callbacks import Callback, LambdaCallback
from .schedules import Schedule, cosine, exponential_decay, step_decay, warmup

__all__ = ["SGD", "Adam", "Momentum", "Optimizer", "fit", "evaluate", "History", "metrics",
           "Callback", "LambdaCallback", "Schedule", "cosine", "exponential_decay", "step_decay", "warmup"]
