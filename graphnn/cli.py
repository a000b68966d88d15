"""The ``graphnn`` command: ``graphnn demo`` and friends."""
import argparse
import sys


def demo(args):
    """Build the lecture's networks, derive and check their gradients, print a summary."""
    import numpy as np

    from . import check_grad, derive, lecture

    print("graphnn demo: the lecture's networks\n")
    cases = [
        ("regression 1-2-1 tanh, MSE", lecture.regression_net(), lecture.noisy_sine(16)),
        ("classifier 2-2-1 sigmoid, BCE", lecture.classifier_net(), lecture.two_blobs(16)),
    ]
    x2, labels = lecture.two_blobs(16)
    onehot = np.eye(2)[labels[:, 0].astype(int)]
    cases.append(("two-class softmax classifier", lecture.softmax_classifier(), (x2, onehot)))
    ok = True
    for title, net, (x, y) in cases:
        feeds = {"x": x, "y": y}
        back = derive(net.loss)
        report = check_grad(net.loss, feeds)
        ok &= report.ok
        print(f"== {title}: {net.graph.num_parameters} weights, "
              f"{len(back.forward)} forward nodes, {len(back.delta_items)} delta nodes")
        print(f"   gradient check: {'ok' if report.ok else 'FAILED'} "
              f"(max relative error {report.max_error:.1e})")
    net = lecture.regression_net()
    hidden = net.layers["hidden"]
    print("\nlocal derivative of the hidden activation:", net.graph.local_derivative(hidden, 0))
    from .render.gallery import lecture_pictures
    print("\npictures of the graphs and delta flows:")
    for path in lecture_pictures(args.out):
        print("  ", path)
    return 0 if ok else 1


def render_command(args):
    """Draw the graph (or delta flow) that MODULE:FUNCTION builds into --out."""
    from .render.command import main as render_main
    return render_main(args)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="graphnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="build, derive, check, compile and train the lecture's networks")
    p.add_argument("--out", default="graphnn-demo", help="folder for the demo's pictures and source")
    p.set_defaults(func=demo)
    p = sub.add_parser("render", help="draw a network a Python function builds (SVG, DOT; PNG/PDF with Graphviz)")
    p.add_argument("target", metavar="MODULE:FUNCTION",
                   help="function returning a Graph, a loss/output node, or an object with .loss and .graph")
    p.add_argument("--out", required=True, help="output file; the extension picks the format (.svg .dot .png .pdf)")
    p.add_argument("--deltas", action="store_true", help="draw the delta flow (backward pass)")
    p.add_argument("--depth", type=int, default=None, help="expand scopes to this depth (0: one box per layer)")
    p.add_argument("--collapse", action="append", metavar="SCOPE", help="draw this scope as one box")
    p.set_defaults(func=render_command)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
