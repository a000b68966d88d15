"""The 8x8 handwritten digits, shipped with graphnn.

1797 images of 8x8 pixels with values 0..16 and labels 0..9: the UCI "Optical
Recognition of Handwritten Digits" test set (E. Alpaydin, C. Kaynak, 1998;
CC BY 4.0), the same array scikit-learn's ``load_digits`` returns. Stored in
``graphnn/data/digits.npz`` (45 KB), so no extra package is needed.
"""
import os

import numpy as np

from ..errors import ArgumentError

PATH = os.path.join(os.path.dirname(__file__), "digits.npz")


def one_hot(labels, classes=None):
    """Integer labels (N,) -> one-hot rows (N, classes) of float64."""
    labels = np.asarray(labels).astype(np.int64).ravel()
    classes = int(labels.max()) + 1 if classes is None else classes
    out = np.zeros((len(labels), classes))
    out[np.arange(len(labels)), labels] = 1.0
    return out


def load_digits(layout="flat", normalize=True, one_hot_labels=True):
    """(X, Y): the 1797 digits.

    ``layout``: "flat" (N, 64), "nchw" (N, 1, 8, 8) or "images" (N, 8, 8).
    ``normalize`` divides the pixels by 16 (values in [0, 1]).
    ``one_hot_labels``: Y as (N, 10) one-hot rows, else integer labels (N,).

    >>> X, Y = load_digits()
    >>> X.shape, Y.shape, Y[0].argmax()
    ((1797, 64), (1797, 10), np.int64(0))
    """
    with np.load(PATH) as data:
        images, labels = data["images"].astype(np.float64), data["labels"].astype(np.int64)
    if normalize:
        images /= 16.0
    shapes = {"flat": (-1, 64), "nchw": (-1, 1, 8, 8), "images": (-1, 8, 8)}
    if layout not in shapes:
        raise ArgumentError(f"layout must be one of {sorted(shapes)}, got {layout!r}")
    X = images.reshape(shapes[layout])
    return X, (one_hot(labels, 10) if one_hot_labels else labels)


def train_test_split(*arrays, test_fraction=0.2, seed=0, stratify=None):
    """Shuffle rows with ``seed`` and split every array the same way:
    returns (a_train, a_test, b_train, b_test, ...). ``stratify`` (labels, or
    one-hot rows) keeps each class's share equal in both parts."""
    n = len(arrays[0])
    rng = np.random.default_rng(seed)
    if stratify is None:
        order = rng.permutation(n)
        cut = n - int(round(n * test_fraction))
        train, test = order[:cut], order[cut:]
    else:
        labels = np.asarray(stratify)
        labels = labels.argmax(axis=1) if labels.ndim == 2 else labels
        train, test = [], []
        for c in np.unique(labels):
            rows = rng.permutation(np.flatnonzero(labels == c))
            k = int(round(len(rows) * test_fraction))
            test.append(rows[:k])
            train.append(rows[k:])
        train, test = rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
    out = []
    for a in arrays:
        a = np.asarray(a)
        out += [a[train], a[test]]
    return tuple(out)
