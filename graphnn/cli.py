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
    return 0 if ok else 1


def main(argv=None):
    parser = argparse.ArgumentParser(prog="graphnn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="build, derive, check, compile and train the lecture's networks")
    p.add_argument("--out", default="graphnn-demo", help="folder for the demo's pictures and source")
    p.set_defaults(func=demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
