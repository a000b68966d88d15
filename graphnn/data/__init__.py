"""Toy data and augmentation: the lecture's two problems, the 8x8 digits, image augmentation.

>>> import graphnn as gn
>>> X, Y = gn.data.load_digits(layout="nchw")
>>> X.shape
(1797, 1, 8, 8)
"""
from ..lecture import noisy_sine, two_blobs
from .augment import Augment, add_noise, random_flip, random_shift, shift
from .digits import load_digits, one_hot, train_test_split

__all__ = ["noisy_sine", "two_blobs", "load_digits", "one_hot", "train_test_split", "Augment",
           "add_noise", "random_flip", "random_shift", "shift"]
