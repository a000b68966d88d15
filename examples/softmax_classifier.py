"""The lecture's two-class softmax classifier, drawn as layers, and the chain rule that trains it.

Lecture sections "Example: Two-class softmax classifier", "Chain rule", "Backward pass" and
"Backpropagation": z^1 = x, z^2 = linear, z^3 = log-softmax, z^4 = negative log-likelihood.

    python examples/softmax_classifier.py [--fast] [--out FOLDER]

It prints ``gn.explain`` for the weight matrix on a batch of 4 examples (dz^4/dtheta as a sum
over the paths through z^3_1 and z^3_2, the delta recursion, and their numbers), checks that
the sum over the paths is the gradient, trains the classifier on ``gn.lecture.two_blobs``
(compiled for the CPU), and writes

* ``softmax_boundary.png``: the decision boundary with the training and test points;
* ``softmax_layers.svg``: the layered view with the delta values, as the lecture draws it.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import graphnn as gn  # noqa: E402


def one_hot(labels):
    return np.eye(2)[labels[:, 0].astype(int)]


def plot_boundary(model, x, labels, x_test, labels_test, accuracy, out):
    fig, axes = _common.figure(size=(5.6, 4.2))
    ax = axes[0, 0]
    lo, hi = np.minimum(x.min(0), x_test.min(0)) - 0.5, np.maximum(x.max(0), x_test.max(0)) + 0.5
    g0, g1 = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    grid = np.column_stack([g0.ravel(), g1.ravel()])
    p1 = np.exp(model.forward({"x": grid})["log_probs"][:, 1]).reshape(g0.shape)
    filled = ax.contourf(g0, g1, p1, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.6)
    ax.contour(g0, g1, p1, levels=[0.5], colors="k", linewidths=1.5)
    for cls, color in ((0, "tab:blue"), (1, "tab:red")):
        ax.scatter(*x[labels[:, 0] == cls].T, s=14, c=color, edgecolors="k", linewidths=0.3,
                   label=f"class {cls} (train)")
        ax.scatter(*x_test[labels_test[:, 0] == cls].T, s=22, c=color, marker="^", edgecolors="k",
                   linewidths=0.3, label=f"class {cls} (test)")
    fig.colorbar(filled, ax=ax, label="p(class 1)")
    ax.set(xlabel="$x_1$", ylabel="$x_2$",
           title=f"Two-class softmax classifier\n(black line: p = 0.5; test accuracy {accuracy:.1%})")
    ax.legend(loc="lower right", ncol=2, fontsize=8, framealpha=0.85)
    return _common.save(fig, out, "softmax_boundary.png")


def main(argv=None):
    args, out = _common.parse(__doc__.splitlines()[0], argv)
    net = gn.lecture.softmax_classifier(seed=0)
    W = net.graph.parameters["linear/W"]

    # the chain rule on a small batch, before training (float64, the NumPy reference)
    x, labels = gn.lecture.two_blobs(n=200 if not args.fast else 100, seed=0)
    small = {"x": x[:4], "y": one_hot(labels[:4])}
    explanation = gn.explain(net.loss, wrt=W, feed=small)
    print(explanation)
    _, grads = gn.loss_and_gradients(net.loss, small)
    agree = np.allclose(explanation.path_sum, grads[W.name], rtol=1e-12, atol=1e-12)
    print(f"sum over the paths == gn.loss_and_gradients: {agree}")

    # the layered view with delta values, as the lecture draws it
    picture = gn.render(net, deltas=True, feed=small, collapse=["log_softmax", "nll"],
                        title="two-class softmax classifier: z1 -> linear -> log-softmax -> NLL")
    _common.save_picture(picture, out, "softmax_layers.svg")

    # train it, compiled for the CPU
    x_test, labels_test = gn.lecture.two_blobs(n=200, seed=1)
    model = gn.compile(net.graph, net.loss, optimizer=gn.Adam(lr=0.05))
    epochs = 5 if args.fast else 30
    history = model.fit({"x": x, "y": one_hot(labels)}, epochs=epochs, batch_size=16, verbose=False)
    predicted = np.argmax(model.forward({"x": x_test})["log_probs"], axis=1)
    accuracy = float(np.mean(predicted == labels_test[:, 0]))
    print(f"trained {epochs} epochs: loss {history.history['loss'][0]:.3f} -> "
          f"{history.history['loss'][-1]:.3f}, test accuracy {accuracy:.1%}")
    plot_boundary(model, x, labels, x_test, labels_test, accuracy, out)
    return {"accuracy": accuracy, "explain_sum": explanation.path_sum, "gradient": grads[W.name],
            "explanation": explanation}


if __name__ == "__main__":
    main()
