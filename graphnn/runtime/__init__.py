"""Stage 5: compile and run -- models, backends, the on-disk cache."""
from .model import Model


def compile(graph_or_loss, loss=None, outputs=None, optimizer=None, target="cpu", dtype="float32",
            **options):
    """Compile a graph (and its loss) into a :class:`Model`.

    ``target``: "cpu" (generated Numba), "cuda" (generated numba.cuda) or
    "reference" (the NumPy executor). ``optimizer`` defaults to SGD(0.01)
    when there is a loss.

    >>> import graphnn as gn, numpy as np
    >>> net = gn.lecture.regression_net()
    >>> model = gn.compile(net.graph, net.loss, target="reference", optimizer=gn.SGD(lr=0.1))
    >>> feeds = {"x": np.zeros((4, 1)), "y": np.ones((4, 1))}
    >>> model.step(feeds) > model.evaluate_loss(feeds)
    True
    """
    return Model(graph_or_loss, loss=loss, outputs=outputs, optimizer=optimizer, target=target,
                 dtype=dtype, **options)


__all__ = ["Model", "compile"]
