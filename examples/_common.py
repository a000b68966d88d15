"""What every lecture example shares: its command line, its output folder, its figures.

Each example is ``python examples/NAME.py [--fast] [--out FOLDER]``: ``--fast`` trains for fewer
epochs (how the tests run them, a few seconds each); pictures go to ``FOLDER`` (default
``examples/out``). Every example has ``main(argv=None)`` so tests can run it in-process.
"""
import argparse
import os

import matplotlib

matplotlib.use("Agg")     # files only, no window: runs on a server and in CI
import matplotlib.pyplot as plt  # noqa: E402

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")


def parse(description, argv=None):
    """(args, out folder) for an example: ``--fast`` and ``--out FOLDER``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--fast", action="store_true", help="fewer epochs (as the tests run it)")
    parser.add_argument("--out", default=DEFAULT_OUT, help="folder for the pictures (default %(default)s)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    return args, args.out


def figure(cols=1, rows=1, size=(5.0, 3.6)):
    """A matplotlib figure with readable text at the size the docs show it."""
    plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
                         "legend.fontsize": 9})
    fig, axes = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False)
    return fig, axes


def save(fig, out, name):
    """Save ``fig`` as ``out/name`` (PNG at 120 dpi), close it, print and return the path."""
    path = os.path.join(out, name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"wrote {path}")
    return path


def save_picture(picture, out, name):
    """Save a graphnn picture (``gn.render``) as ``out/name`` (SVG, in-process), print the path."""
    path = picture.save(os.path.join(out, name))
    print(f"wrote {path}")
    return path
