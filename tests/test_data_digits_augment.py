"""Toy data (digits shipped with the package, the lecture's problems) and image augmentation."""
import numpy as np
import pytest

import graphnn as gn
from graphnn import data


def test_digits_are_the_1797_uci_images():
    X, labels = data.load_digits(layout="images", normalize=False, one_hot_labels=False)
    assert X.shape == (1797, 8, 8) and labels.shape == (1797,)
    assert X.min() == 0 and X.max() == 16 and np.all(X == np.round(X))
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    flat, Y = data.load_digits()
    assert flat.shape == (1797, 64) and flat.max() == 1.0 and Y.shape == (1797, 10)
    np.testing.assert_array_equal(Y.argmax(1), labels)
    nchw, _ = data.load_digits(layout="nchw")
    np.testing.assert_array_equal(nchw.reshape(1797, 64), flat)
    with pytest.raises(ValueError, match="layout"):
        data.load_digits(layout="nhwc")


def test_stratified_split_keeps_class_shares_and_is_seeded():
    X, Y = data.load_digits()
    a = data.train_test_split(X, Y, test_fraction=0.25, seed=0, stratify=Y)
    b = data.train_test_split(X, Y, test_fraction=0.25, seed=0, stratify=Y)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    Xtr, Xte, Ytr, Yte = a
    assert len(Xtr) + len(Xte) == 1797 and abs(len(Xte) - 449) <= 5
    assert np.all(np.abs(Yte.sum(0) - Y.sum(0) * 0.25) <= 1)
    assert len({tuple(r) for r in np.hstack([Xtr, Ytr])}) > 1000


def test_lecture_problems_are_reexported():
    assert data.noisy_sine is gn.lecture.noisy_sine and data.two_blobs is gn.lecture.two_blobs
    x, y = data.two_blobs(n=10)
    assert x.shape == (10, 2) and set(np.unique(y)) <= {0.0, 1.0}


def test_shift_moves_pixels_and_fills():
    img = np.arange(9.0).reshape(1, 3, 3)
    np.testing.assert_array_equal(data.shift(img, 1, 0)[0], [[0, 0, 0], [0, 1, 2], [3, 4, 5]])
    np.testing.assert_array_equal(data.shift(img, 0, -1, fill=-1)[0], [[1, 2, -1], [4, 5, -1], [7, 8, -1]])
    np.testing.assert_array_equal(data.shift(img, 0, 0), img)


def test_random_shift_flip_noise_and_augment_chain():
    rng = np.random.default_rng(0)
    imgs = rng.uniform(size=(50, 1, 8, 8))
    shifted = data.random_shift(imgs, 2, np.random.default_rng(1))
    assert shifted.shape == imgs.shape and not np.array_equal(shifted, imgs)
    assert np.array_equal(shifted, data.random_shift(imgs, 2, np.random.default_rng(1)))
    flipped = data.random_flip(imgs, p=1.0, rng=rng)
    np.testing.assert_array_equal(flipped, imgs[..., ::-1])
    noisy = data.add_noise(np.zeros((200, 8, 8)), 0.1, rng, clip=(0, 1))
    assert noisy.min() == 0 and 0.02 < noisy.mean() < 0.06
    aug = data.Augment(shift=1, noise=0.01, image_shape=(8, 8))
    flat = imgs.reshape(50, 64)
    out = aug(flat, np.random.default_rng(2))
    assert out.shape == (50, 64) and not np.array_equal(out, flat)
    np.testing.assert_array_equal(flat, imgs.reshape(50, 64))


def test_random_shift_of_no_images_is_no_images():
    from graphnn.data import augment
    empty = np.zeros((0, 8, 8))
    out = augment.random_shift(empty, 1, rng=0)
    assert out.shape == (0, 8, 8) and out.dtype == np.float64
