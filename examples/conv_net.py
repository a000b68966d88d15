"""A convolutional network on the 8x8 digits: conv + pooling layers, a fully connected head.

Lecture section "Summary / Deep learning": convolutional layers for image processing, fully
connected layers at the end for classification. Two conv (3x3, ReLU) + max-pool stages turn
an 8x8 image into 32 maps of 2x2; a dense ReLU layer and a dense output layer classify it.
Every layer is an index-notation op (``gn.conv2d``, ``gn.max_pool2d``, ``gn.flatten``) with a
derived backward pass, compiled for the CPU.

    PYTHONPATH=. python3 examples/conv_net.py [--fast] [--out FOLDER]

Writes ``conv_net_training.png`` (loss and accuracy per epoch, the learnt first-layer
filters) and ``conv_net_graph.svg`` (the network rendered at depth 1: each layer a cluster).
"""
import numpy as np

import graphnn as gn
from _common import figure, parse, save, save_picture


def conv_net(seed=0):
    """(graph, loss, Sequential): 1x8x8 -> conv 16 -> pool -> conv 32 -> pool -> dense 64 -> 10."""
    g = gn.Graph("digits_cnn", seed=seed)
    x, y = g.input("x", (None, 1, 8, 8)), g.input("y", (None, 10))
    net = gn.Sequential([
        gn.Conv2D(16, 3, padding="same", activation="relu"), gn.MaxPool2D(2),     # 16 x 4 x 4
        gn.Conv2D(32, 3, padding="same", activation="relu"), gn.MaxPool2D(2),     # 32 x 2 x 2
        gn.Flatten(), gn.Dense(64, activation="relu"), gn.Dense(10)])
    logits = g.output("logits", net(x))
    return g, gn.softmax_cross_entropy(logits, y), net


def main(argv=None):
    args, out = parse(__doc__.splitlines()[0], argv)
    epochs = 3 if args.fast else 20
    X, Y = gn.data.load_digits(layout="nchw")
    Xtr, Xte, Ytr, Yte = gn.data.train_test_split(X, Y, test_fraction=0.25, seed=0, stratify=Y)
    g, loss, net = conv_net()
    print(f"CNN on the 8x8 digits: {g.num_parameters} weights, {len(Xtr)} training / {len(Xte)} test images")
    for layer in net.layers:
        print(f"  {type(layer).__name__:10s}", {k: v.shape for k, v in getattr(layer, "params", {}).items()})
    model = gn.compile(g, loss, optimizer=gn.Adam(lr=3e-3), target="cpu", wait=True)
    history = model.fit({"x": Xtr, "y": Ytr}, epochs=epochs, batch_size=32, metrics=["accuracy"],
                        validation_data={"x": Xte, "y": Yte}, verbose=False, seed=0)
    test = gn.train.evaluate(model, {"x": Xte, "y": Yte}, metrics=["accuracy"])["accuracy"]
    print(f"after {epochs} epochs (Adam lr=3e-3, batch 32): training accuracy "
          f"{100 * history['accuracy'][-1]:.1f} %, test accuracy {100 * test:.1f} %")

    fig, axes = figure(3, 1, size=(3.8, 3.4))
    at = np.arange(1, epochs + 1)
    axes[0, 0].plot(at, history["loss"], label="training")
    axes[0, 0].plot(at, history["val_loss"], label="test")
    axes[0, 0].set(xlabel="epoch", ylabel="cross-entropy", title="Loss", yscale="log")
    axes[0, 1].plot(at, 100 * np.asarray(history["accuracy"]), label="training")
    axes[0, 1].plot(at, 100 * np.asarray(history["val_accuracy"]), label="test")
    axes[0, 1].set(xlabel="epoch", ylabel="accuracy (%)", title=f"Accuracy (test {100 * test:.1f} %)")
    for ax in axes[0, :2]:
        ax.legend()
    kernels = model.get_params()["conv/K"][:, 0]                       # (16, 3, 3)
    tiles = np.ones((4 * 4, 4 * 4)) * np.nan
    for k, kernel in enumerate(kernels):
        r, c = divmod(k, 4)
        tiles[4 * r:4 * r + 3, 4 * c:4 * c + 3] = kernel / np.abs(kernel).max()
    axes[0, 2].imshow(tiles, cmap="RdBu_r", vmin=-1, vmax=1)
    axes[0, 2].set_title("16 learnt 3×3 filters (conv 1)")
    axes[0, 2].axis("off")
    save(fig, out, "conv_net_training.png")
    save_picture(gn.render(loss, depth=1, title=f"digits CNN · {g.num_parameters} weights (depth 1)"),
                 out, "conv_net_graph.svg")
    return {"epochs": epochs, "num_parameters": g.num_parameters, "test_accuracy": test,
            "train_accuracy": history["accuracy"][-1]}


if __name__ == "__main__":
    main()
