"""The NumPy reference executor (the oracle for compiled targets)."""
from .executor import check_feeds, evaluate


def loss_and_gradients(loss, feeds, params=None, dtype="float64", backward=None):
    """(loss value, {parameter name: gradient}) with the reference executor."""
    from ..derive.autodiff import check_loss, derive
    backward = backward or derive(check_loss(loss, "loss_and_gradients"))
    names = list(backward.gradients)
    grads = [backward.gradients[n] for n in names]
    values = evaluate([loss, *grads], feeds, params=params, dtype=dtype)
    return float(values[loss.name]), {n: values[g.name] for n, g in zip(names, grads)}


__all__ = ["evaluate", "check_feeds", "loss_and_gradients"]
