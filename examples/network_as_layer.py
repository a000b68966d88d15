"""A network as a layer of another network: pre-train, then reuse shared, copied or frozen.

Lecture section "Layered architectures": a neural network can itself be treated as a layer
within another network (recursion); where possible, compose new networks from existing ones.

A feature network (64 pixels -> 32 ReLU features -> 10 digit logits) is pre-trained on the
digits. Its feature layer is then reused, with ``gn.as_layer``, twice inside a second network
that answers a new question from a few hundred examples: "are these two images the same
digit?" (a siamese net: features of both images -> |difference| -> a small head). The two
copies of the feature layer are

* shared  -- one set of pre-trained parameters used by both branches, trained further (tied);
* copied  -- each branch its own copy of the pre-trained parameters, trained further;
* frozen  -- one set that the optimizer never updates (only the head learns);
* scratch -- the same architecture, shared, from a fresh random initialisation.

    PYTHONPATH=. python3 examples/network_as_layer.py [--fast] [--out FOLDER]

Writes ``network_as_layer_curves.png`` (training curves of the four) and the host network as
``network_as_layer_collapsed.svg`` (``gn.render(..., depth=0)``: each reused network one box),
``network_as_layer_shared.svg`` and ``network_as_layer_copied.svg`` (``depth=2``: each reused
network a cluster; shared, both read one W; copied, each its own).
"""
import numpy as np

import graphnn as gn
from _common import figure, parse, save, save_picture

MODES = {"shared": "share", "copied": "copy", "frozen": "freeze", "scratch": "share"}
COLOURS = {"shared": "tab:blue", "copied": "tab:green", "frozen": "tab:purple", "scratch": "tab:gray"}


def digits():
    X, Y = gn.data.load_digits()
    Xtr, Xte, Ytr, Yte = gn.data.train_test_split(X, Y, test_fraction=0.25, seed=0, stratify=Y)
    mean, scale = Xtr.mean(0), Xtr.std(0) + 0.1
    return (Xtr - mean) / scale, (Xte - mean) / scale, Ytr, Yte


def feature_network():
    """The network to pre-train: x -> features (32 ReLU) -> 10 logits; (graph, loss, features node)."""
    g = gn.Graph("feature_net", seed=0)
    x, y = g.input("x", (None, 64)), g.input("y", (None, 10))
    features = gn.dense(x, 32, activation="relu", init="he_normal", name="hidden")
    logits = g.output("logits", gn.dense(features, 10, name="out"))
    g.output("features", features)
    return g, gn.softmax_cross_entropy(logits, y), features


def pairs(X, Y, n, seed):
    """``n`` pairs of images, half of them the same digit: (xa, xb, same (n, 1))."""
    rng = np.random.default_rng(seed)
    labels = Y.argmax(1)
    by_class = [np.flatnonzero(labels == c) for c in range(10)]
    a = rng.integers(0, len(X), n)
    same = rng.random(n) < 0.5
    b = np.array([rng.choice(by_class[labels[i]]) if s else
                  rng.choice(np.flatnonzero(labels != labels[i])) for i, s in zip(a, same)])
    return X[a], X[b], same[:, None].astype(np.float64)


def siamese(features, name):
    """The host network: the reused feature layer on both images, |fa - fb| -> 16 ReLU -> one logit."""
    g = gn.Graph(f"same_digit_{name}", seed=1)
    xa, xb, y = g.input("xa", (None, 64)), g.input("xb", (None, 64)), g.input("y", (None, 1))
    distance = gn.abs(features(xa) - features(xb))
    mixed = gn.dense(distance, 16, activation="relu", name="mix")
    logit = g.output("logit", gn.dense(mixed, 1, name="head"))
    return g, gn.bce_with_logits(logit, y)


def main(argv=None):
    args, out = parse(__doc__.splitlines()[0], argv)
    pre_epochs, epochs, n_pairs = (3, 4, 300) if args.fast else (20, 40, 300)
    Xtr, Xte, Ytr, Yte = digits()

    g, loss, features = feature_network()
    untrained = {k: np.array(v) for k, v in g.values.items()}
    pre = gn.compile(g, loss, optimizer=gn.Adam(lr=3e-3), target="cpu", wait=True)
    pre.fit({"x": Xtr, "y": Ytr}, epochs=pre_epochs, batch_size=32, verbose=False, seed=0)
    pre_accuracy = gn.train.evaluate(pre, {"x": Xte, "y": Yte}, metrics=["accuracy"])["accuracy"]
    print(f"pre-trained feature network 64-32-10 on the digits: test accuracy {100 * pre_accuracy:.1f} %")

    train = dict(zip(("xa", "xb", "y"), pairs(Xtr, Ytr, n_pairs, seed=1)))
    test = dict(zip(("xa", "xb", "y"), pairs(Xte, Yte, 1000, seed=2)))
    print(f"new task: same digit or not, {n_pairs} training pairs, {len(test['y'])} test pairs")
    histories, results, hosts = {}, {}, {}
    for name, mode in MODES.items():
        layer = gn.as_layer(pre, outputs=["features"], params=mode, name="features",
                            values=untrained if name == "scratch" else None)
        host, host_loss = siamese(layer, name)
        hosts[name] = host_loss
        trainable = sum(int(np.prod(p.shape)) for k, p in host.parameters.items() if host.trainable[k])
        model = gn.compile(host, host_loss, optimizer=gn.Adam(lr=3e-3), target="cpu", wait=True)
        before = model.get_params()
        history = model.fit(train, epochs=epochs, batch_size=32, metrics=["logit_accuracy"],
                            validation_data=test, verbose=False, seed=0)
        after = model.get_params()
        changed = sorted({k.split("/")[0] for k in after if not np.array_equal(after[k], before[k])})
        histories[name] = history
        results[name] = {"trainable": trainable, "test_accuracy": history["val_logit_accuracy"][-1],
                         "updated": changed}
        print(f"  {name:8s} params={mode:6s} {len(host.parameters):2d} parameter arrays, {trainable:5d} "
              f"trainable weights, updated scopes {changed}: "
              f"test accuracy {100 * results[name]['test_accuracy']:.1f} %")

    fig, axes = figure(2, 1, size=(5.0, 3.8))
    for name, history in histories.items():
        epochs_axis = np.arange(1, len(history["loss"]) + 1)
        axes[0, 0].plot(epochs_axis, history["loss"], color=COLOURS[name], label=name)
        axes[0, 1].plot(epochs_axis, 100 * np.asarray(history["val_logit_accuracy"]), color=COLOURS[name],
                        label=name)
    axes[0, 0].set(xlabel="epoch", ylabel="training loss (BCE)", title="Same digit? Training loss")
    axes[0, 1].set(xlabel="epoch", ylabel="test accuracy (%)", title="Same digit? Test accuracy")
    for ax in axes[0]:
        ax.legend()
    save(fig, out, "network_as_layer_curves.png")
    save_picture(gn.render(hosts["shared"], depth=0, title="same digit? reused networks collapsed (depth=0)"),
                 out, "network_as_layer_collapsed.svg")
    for name in ("shared", "copied"):
        save_picture(gn.render(hosts[name], depth=2, title=f"same digit? features {name} (depth=2)"),
                     out, f"network_as_layer_{name}.svg")
    return {"pretrained_accuracy": pre_accuracy, **{
        f"{name}_{k}": v for name, r in results.items() for k, v in r.items()}}


if __name__ == "__main__":
    main()
