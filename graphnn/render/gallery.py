"""Pictures of the lecture's networks: graph and delta flow (used by ``graphnn demo`` and the docs)."""
import os

import numpy as np


def lecture_cases(batch=8):
    """(file stem, lecture net, feed) for the regression net, the classifier and the softmax classifier."""
    from .. import lecture
    x, y = lecture.noisy_sine(batch)
    x2, labels = lecture.two_blobs(batch)
    onehot = np.eye(2)[labels[:, 0].astype(int)]
    return [
        ("regression", lecture.regression_net(), {"x": x, "y": y}),
        ("classifier", lecture.classifier_net(), {"x": x2, "y": labels}),
        ("softmax_classifier", lecture.softmax_classifier(), {"x": x2, "y": onehot}),
    ]


def lecture_pictures(folder, formats=("svg",), batch=8):
    """Write ``<net>.<fmt>`` and ``<net>-deltas.<fmt>`` for each lecture net; returns the paths."""
    from . import render
    os.makedirs(folder, exist_ok=True)
    paths = []
    for stem, net, feed in lecture_cases(batch):
        pictures = {stem: render(net), f"{stem}-deltas": render(net, deltas=True, feed=feed)}
        for name, picture in pictures.items():
            for fmt in formats:
                paths.append(picture.save(os.path.join(folder, f"{name}.{fmt}")))
    return paths
