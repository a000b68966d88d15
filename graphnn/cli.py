"""The ``graphnn`` command: ``graphnn demo`` and friends."""
import argparse
import sys


def demo(args):
    """The lecture end to end: build, derive, check, compile, train, draw."""
    import os

    import numpy as np

    from . import check_grad, compile, derive, lecture
    from .train.optimizers import Adam, SGD

    os.makedirs(args.out, exist_ok=True)
    print("graphnn demo: the lecture's networks\n")
    x1, y1 = lecture.noisy_sine(200, seed=1)
    x2, labels = lecture.two_blobs(200, seed=2)
    onehot = np.eye(2)[labels[:, 0].astype(int)]
    # how each loss reduces the batch: the lecture's softmax classifier sums its NLL
    cases = [
        ("regression 1-2-1 tanh, MSE", lecture.regression_net(), (x1, y1), Adam(lr=0.05), "mse",
         "mean over the batch"),
        ("classifier 2-2-1 sigmoid, BCE", lecture.classifier_net(), (x2, labels), Adam(lr=0.05),
         "binary_accuracy", "mean over the batch"),
        ("two-class softmax classifier", lecture.softmax_classifier(), (x2, onehot), SGD(lr=0.01),
         "accuracy", "summed over each batch of 32, not a mean"),
    ]
    ok = True
    for title, net, (x, y), optimizer, metric, reduction in cases:
        feeds = {"x": x, "y": y}
        back = derive(net.loss)
        report = check_grad(net.loss, {"x": x[:16], "y": y[:16]})
        ok &= report.ok
        print(f"== {title}: {net.graph.num_parameters} weights, {len(back.forward)} forward nodes, "
              f"{len(back.delta_items)} delta nodes")
        print(f"   gradient check (central differences, float64): {'ok' if report.ok else 'FAILED'}, "
              f"max relative error {report.max_error:.1e}")
        reference = compile(net.graph, net.loss, target="reference", dtype="float32")
        model = compile(net.graph, net.loss, target="cpu", dtype="float32", optimizer=optimizer,
                        wait=True)   # the comparison below is of the compiled kernels
        (l_ref, g_ref), (l_cpu, g_cpu) = reference.loss_and_gradients(feeds), model.loss_and_gradients(feeds)
        # relative to the size of each value: float32 sums of many rows differ in the last bits
        # with the order of the additions (the lecture's softmax loss is a sum, about 338)
        diff = max([abs(l_ref - l_cpu) / max(1.0, abs(l_ref))]
                   + [float(np.abs(g_ref[k] - g_cpu[k]).max() / max(1.0, np.abs(g_ref[k]).max())) for k in g_ref])
        ok &= diff < 1e-5
        print(f"   compiled CPU kernels vs NumPy reference: max relative difference {diff:.1e}")
        history = model.fit(feeds, epochs=60, batch_size=32, metrics=[metric], verbose=False, seed=0)
        last = {k: v[-1] for k, v in history.history.items()}
        shown = ", ".join(f"{k} {v:.3f}" + (f" ({reduction})" if k == "loss" else "")
                          for k, v in last.items())
        print(f"   trained 60 epochs ({model.step_count} steps): {shown}")
        path = os.path.join(args.out, f"{net.graph.name}_kernels.py")
        model.export(path)
        print(f"   generated Numba source: {path}")

    # the lecture's autodiff-vs-analytic sigmoid figure, as numbers
    from .graph import Graph
    from .ops import sigmoid, sum_
    from .reference import evaluate
    g = Graph("sigmoid")
    x = g.input("x", (None,))
    s = sigmoid(x)
    back = derive(sum_(s), recompute=True)    # differentiate sigmoid's body, keep nothing
    grid = np.linspace(-10, 10, 100)
    derived = evaluate([back.delta(x)], {"x": grid})[back.delta(x).name]
    exact = 1 / (1 + np.exp(-grid))
    h = 1e-6
    numeric = (1 / (1 + np.exp(-(grid + h))) - 1 / (1 + np.exp(-(grid - h)))) / (2 * h)
    print(f"\nsigmoid on 100 points in [-10, 10] (the lecture's autodiff-vs-analytic figure): "
          f"derived vs analytic S(1-S) max difference {np.abs(derived - exact * (1 - exact)).max():.1e}, "
          f"vs central differences {np.abs(derived - numeric).max():.1e}")
    net = lecture.regression_net()
    print("local derivative of the hidden activation:",
          net.graph.local_derivative(net.layers["hidden"], 0))
    from .render.gallery import lecture_pictures
    print("\npictures of the graphs and delta flows:")
    for path in lecture_pictures(args.out):
        print("  ", path)
    print("\nthe lecture section by section, one example each (from a checkout of graphnn;\n"
          "pictures go to examples/out, --fast trains less):")
    for name, what in EXAMPLES:
        print(f"  python3 examples/{name}.py   # {what}")
    print("\n" + ("all checks passed" if ok else "SOME CHECKS FAILED"))
    return 0 if ok else 1


EXAMPLES = [   # (script in examples/, what it shows), in the lecture's order
    ("activations", "every activation beside its derived derivative"),
    ("linear_collapse", "identity activations collapse to one affine map; tanh does not"),
    ("regression_net", "the 1-2-1 net, 7 weights, MSE: fit, loss curve, delta flow"),
    ("classification_net", "the 2-2-1 classifier, 9 weights, cross-entropy: decision boundary"),
    ("softmax_classifier", "the two-class softmax classifier as layers; gn.explain's chain rule"),
    ("deep_network", "a deeper MLP on digits: vanishing and healthy deltas per layer"),
    ("network_as_layer", "a pre-trained network reused shared, copied and frozen"),
    ("autodiff_sigmoid", "sigmoid: analytic, derived and compiled derivatives agree"),
    ("custom_layer", "a layer from one SymPy expression (Swish with a trainable beta)"),
    ("regularization", "the lecture's regularizers on digits with a small training set"),
    ("conv_net", "conv + pooling + dense head on digits"),
    ("gpu", "the same graph on CUDA (the simulator when there is no GPU)"),
]


def render_command(args):
    """Draw the graph (or delta flow) that MODULE:FUNCTION builds into --out."""
    from .render.command import main as render_main
    return render_main(args)


DESCRIPTION = """\
graphnn: a symbolic computational-graph compiler for neural networks (SymPy op bodies,
delta-node autodiff, generated Numba kernels for CPU and CUDA).

examples:
  graphnn demo                                   the lecture's networks end to end
  graphnn render graphnn.lecture:regression_net --out net.svg --deltas
  graphnn COMMAND --help                         a command's options"""

DEMO_DESCRIPTION = """\
The lecture end to end: build the 1-2-1 regression net, the 2-2-1 classifier and the
two-class softmax classifier; derive their backward passes; check the gradients against
central differences; compile them to Numba kernels and compare with the NumPy reference;
train each for 60 epochs; write the generated source and pictures of every graph and
delta flow to --out."""

RENDER_DESCRIPTION = """\
Draw the network that FUNCTION in MODULE (a module name or a .py file) builds when called
with no arguments. --feed data.npz (np.savez(path, x=X, y=Y), arrays by input name)
evaluates the graph: with --deltas the picture shows the norm of every delta and gradient
and colours the delta edges by it, without it the norm of every value. PNG and PDF need
the system Graphviz `dot`; SVG and DOT work without it."""


def main(argv=None):
    from .version import __version__
    parser = argparse.ArgumentParser(prog="graphnn", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"graphnn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("demo", help="build, derive, check, compile and train the lecture's networks",
                       description=DEMO_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="graphnn-demo", metavar="FOLDER",
                   help="folder for the demo's pictures and generated source (default: %(default)s)")
    p.set_defaults(func=demo)
    p = sub.add_parser("render", help="draw a network a Python function builds (SVG, DOT; PNG/PDF with Graphviz)",
                       description=RENDER_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", metavar="MODULE:FUNCTION",
                   help="function returning a Graph, a loss/output node, or an object with .loss and .graph")
    p.add_argument("--out", required=True, help="output file; the extension picks the format (.svg .dot .png .pdf)")
    p.add_argument("--deltas", action="store_true",
                   help="draw the delta flow (backward pass); its values come from --feed, or from "
                        "the returned object's .feed")
    p.add_argument("--feed", metavar="DATA.npz",
                   help="input arrays by name (np.savez) to evaluate the graph on: norms of deltas "
                        "and gradients with --deltas, of values without")
    p.add_argument("--depth", type=int, default=None,
                   help="draw scopes nested up to this depth as clusters, deeper ones as one box each "
                        "(0: one box per layer; default: every layer expanded)")
    p.add_argument("--collapse", action="append", metavar="SCOPE", help="draw this scope as one box")
    p.add_argument("--expand", action="append", nargs="?", const=True, metavar="SCOPE",
                   help="draw composite ops (softmax_cross_entropy, mse, ...) op by op: all of them, "
                        "or the one named (repeatable); by default each is one box")
    p.set_defaults(func=render_command)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
