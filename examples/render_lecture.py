"""Draw the lecture's networks and their delta flows (the pictures in docs/rendering.md).

    python examples/render_lecture.py [FOLDER]      # default: docs/images

SVG always; PNG too when the system Graphviz `dot` is on PATH.
"""
import os
import sys

import numpy as np

import graphnn as gn
from graphnn.render import system_dot
from graphnn.render.gallery import lecture_cases, lecture_pictures


def deep_net(blocks=3, layers=2, width=8):
    """A deeper tanh MLP in named blocks, to show collapsing and gradient decay."""
    g = gn.Graph("deep_tanh")
    x, y = g.input("x", (None, width)), g.input("y", (None, 1))
    h = x
    for k in range(blocks):
        with g.scope(f"block{k}"):
            for j in range(layers):
                h = gn.dense(h, width, activation="tanh", name=f"layer{j}")
    loss = gn.mse(gn.dense(h, 1, name="head"), y)
    rng = np.random.default_rng(0)
    return loss, {"x": rng.normal(size=(16, width)), "y": rng.normal(size=(16, 1))}


def main(folder="docs/images"):
    formats = ("svg", "png") if system_dot() else ("svg",)
    paths = lecture_pictures(folder, formats)
    _, softmax, feed = lecture_cases()[2]
    expanded = gn.render(softmax, deltas=True, feed=feed, expand=True)   # composite ops op by op
    loss, deep_feed = deep_net()
    deep = gn.render(loss, deltas=True, feed=deep_feed, depth=1)
    for name, picture in (("softmax_classifier-expanded", expanded), ("deep_tanh-deltas-depth1", deep)):
        for fmt in formats:
            paths.append(picture.save(os.path.join(folder, f"{name}.{fmt}")))
    for path in paths:
        print(f"{os.path.getsize(path) / 1024:6.0f} KB  {path}")


if __name__ == "__main__":
    main(*sys.argv[1:])
