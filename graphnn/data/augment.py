"""Data augmentation for image arrays: random shifts, flips and noise.

Every function takes images whose last two axes are (height, width) --
(N, H, W) or (N, C, H, W) -- and a ``numpy.random.Generator``, and returns a
new array; nothing is done in place. :class:`Augment` chains them and can
read flat rows (N, H*W) given ``image_shape``; pass one to ``fit(augment=...)``.

>>> import numpy as np
>>> from graphnn.data import shift
>>> img = np.zeros((1, 3, 3)); img[0, 1, 1] = 1
>>> shift(img, 1, 1)[0]                   # one pixel down, one right
array([[0., 0., 0.],
       [0., 0., 0.],
       [0., 0., 1.]])
"""
import numpy as np


def _rng(rng):
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def shift(images, dy, dx, fill=0.0):
    """Every image moved by (dy, dx) pixels (down, right); uncovered pixels get ``fill``."""
    images = np.asarray(images)
    out = np.full_like(images, fill, dtype=np.result_type(images, np.float64))
    H, W = images.shape[-2:]
    src_r = slice(max(0, -dy), min(H, H - dy))
    dst_r = slice(max(0, dy), min(H, H + dy))
    src_c = slice(max(0, -dx), min(W, W - dx))
    dst_c = slice(max(0, dx), min(W, W + dx))
    out[..., dst_r, dst_c] = images[..., src_r, src_c]
    return out


def random_shift(images, max_shift=1, rng=None, fill=0.0):
    """Each image moved by its own random (dy, dx), |dy|, |dx| <= ``max_shift``."""
    rng, images = _rng(rng), np.asarray(images)
    moves = rng.integers(-max_shift, max_shift + 1, size=(len(images), 2))
    if len(images) == 0:        # np.stack of nothing raises
        return np.array(images, dtype=np.result_type(images, np.float64))
    return np.stack([shift(img, int(dy), int(dx), fill) for img, (dy, dx) in zip(images, moves)])


def random_flip(images, horizontal=True, vertical=False, p=0.5, rng=None):
    """Each image mirrored left-right (and/or up-down) with probability ``p``.

    Not for digits (a mirrored 2 is no digit); fine for most natural images."""
    rng, out = _rng(rng), np.array(images, dtype=np.result_type(images, np.float64))
    if horizontal:
        pick = rng.random(len(out)) < p
        out[pick] = out[pick][..., ::-1]
    if vertical:
        pick = rng.random(len(out)) < p
        out[pick] = out[pick][..., ::-1, :]
    return out


def add_noise(images, std=0.05, rng=None, clip=None):
    """Gaussian pixel noise with standard deviation ``std``; ``clip=(lo, hi)`` bounds the result."""
    rng, images = _rng(rng), np.asarray(images, dtype=np.float64)
    out = images + rng.normal(0.0, std, size=images.shape)
    return np.clip(out, *clip) if clip is not None else out


class Augment:
    """A chain of augmentations: ``Augment(shift=1, flip=False, noise=0.05)(images, rng)``.

    ``image_shape=(H, W)`` or ``(C, H, W)`` lets it take flat rows (N, H*W*C) and
    return them flat again.
    """

    def __init__(self, shift=0, flip=False, noise=0.0, clip=None, image_shape=None):
        self.shift, self.flip, self.noise, self.clip = shift, flip, noise, clip
        self.image_shape = tuple(image_shape) if image_shape is not None else None

    def __call__(self, images, rng=None):
        rng, images = _rng(rng), np.asarray(images, dtype=np.float64)
        flat_shape = images.shape
        if self.image_shape is not None:
            images = images.reshape((len(images), *self.image_shape))
        if self.shift:
            images = random_shift(images, self.shift, rng)
        if self.flip:
            images = random_flip(images, rng=rng)
        if self.noise:
            images = add_noise(images, self.noise, rng, self.clip)
        return images.reshape(flat_shape)

    def __repr__(self):
        return (f"Augment(shift={self.shift}, flip={self.flip}, noise={self.noise}, "
                f"image_shape={self.image_shape})")
