"""The lecture's classification network: 2 inputs, 2 tanh hidden units, 1 sigmoid output, 9 weights.

    python examples/classification_net.py [--fast] [--out FOLDER]

Lecture section: "Example: a classification network" (input 2-D, output class 0 or 1,
hidden layer of 2, 9 weights, cross-entropy loss; the probabilistic view of line fitting).
The net from ``gn.lecture.classifier_net`` is compiled for the CPU and trained with Adam on
two Gaussian blobs. Picture: the decision boundary p = 0.5 over the probability the net
gives, with the training and test points.
"""
import numpy as np

import graphnn as gn
from _common import figure, parse, save


def accuracy(model, x, labels):
    return float(((model.predict({"x": x}) > 0.5) == (labels > 0.5)).mean())


def main(argv=None):
    args, out = parse(__doc__.splitlines()[0], argv)
    epochs = 30 if args.fast else 200
    net = gn.lecture.classifier_net(seed=0)
    x_train, y_train = gn.lecture.two_blobs(200, seed=2)
    x_test, y_test = gn.lecture.two_blobs(1000, seed=3)
    print(f"classification net 2-2-1: {net.graph.num_parameters} weights, binary cross-entropy")
    report = gn.check_grad(net.loss, {"x": x_train[:16], "y": y_train[:16]})
    print(f"derived gradients vs central differences: {'ok' if report.ok else 'FAILED'} "
          f"(max relative error {report.max_error:.1e})")

    model = gn.compile(net.graph, net.loss, optimizer=gn.Adam(lr=0.05), target="cpu")
    history = model.fit({"x": x_train, "y": y_train}, epochs=epochs, batch_size=32, verbose=False,
                        seed=0, metrics=["binary_accuracy"])
    loss = history.history["loss"]
    train_acc, test_acc = accuracy(model, x_train, y_train), accuracy(model, x_test, y_test)
    print(f"trained {epochs} epochs: cross-entropy {loss[0]:.3f} -> {loss[-1]:.3f}, "
          f"train accuracy {train_acc:.1%}, test accuracy {test_acc:.1%} ({len(x_test)} points)")

    fig, axes = figure(1, 1, size=(5.6, 4.6))
    ax = axes[0, 0]
    lo, hi = np.minimum(x_train.min(0), x_test.min(0)) - 0.5, np.maximum(x_train.max(0), x_test.max(0)) + 0.5
    u, v = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    p = model.predict({"x": np.stack([u.ravel(), v.ravel()], axis=1)})[:, 0].reshape(u.shape)
    shade = ax.contourf(u, v, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.55)
    ax.contour(u, v, p, levels=[0.5], colors="k", linewidths=2)
    for label, colour, marker in ((0, "tab:blue", "o"), (1, "tab:red", "s")):
        pick = y_train[:, 0] == label
        ax.scatter(x_train[pick, 0], x_train[pick, 1], c=colour, marker=marker, s=18,
                   edgecolors="k", linewidths=0.4, label=f"class {label} (training)")
    ax.plot([], [], "k", lw=2, label="decision boundary p = 0.5")
    fig.colorbar(shade, ax=ax, label="p(class 1 | x)")
    ax.set(xlabel="$x_1$", ylabel="$x_2$",
           title=f"2-2-1 classifier (9 weights): test accuracy {test_acc:.1%}")
    ax.legend(loc="upper left", framealpha=0.9)
    files = [save(fig, out, "classification_net_boundary.png")]
    return {"weights": net.graph.num_parameters, "gradient_check": report.ok, "first_loss": loss[0],
            "final_loss": loss[-1], "train_accuracy": train_acc, "test_accuracy": test_acc, "files": files}


if __name__ == "__main__":
    main()
