"""Regularization: the lecture's list of techniques on the digits with a small training set.

Lecture section "But what about model complexity?": parameter norm penalties, data
augmentation / fake data, noise injection (on inputs, on hidden layers' inputs, on the
weights) and dropout. An MLP 64-128-10 that can memorise its 200 training images is trained
once per technique, with everything else equal (Adam, same epochs, same seeds), and its
accuracy is measured on the 200 training images and on 450 held-out test images.

    PYTHONPATH=. python3 examples/regularization.py [--fast] [--out FOLDER]

Writes ``regularization_accuracy.png`` (train and test accuracy per technique) and prints
the table.
"""
import numpy as np

import graphnn as gn
from _common import figure, parse, save

HIDDEN = 128

# name -> what it does, and how: layers before / after the hidden layer (made fresh for each
# graph), options of both Dense layers, a weight penalty {l2, l1}, fake data for fit(augment=)
METHODS = {
    "none": {"what": "no regularization"},
    "L2": {"what": "weight penalty l2=3e-3 (lam/2 sum W^2)", "penalty": {"l2": 3e-3}},
    "L1": {"what": "weight penalty l1=1e-4 (lam sum |W|)", "penalty": {"l1": 1e-4}},
    "input noise": {"what": "Gaussian noise sd 0.2 on the pixels",
                    "before": lambda: [gn.GaussianNoise(0.2)]},
    "hidden noise": {"what": "Gaussian noise sd 0.5 on the hidden layer",
                     "after": lambda: [gn.GaussianNoise(0.5)]},
    "weight noise": {"what": "Gaussian noise sd 0.05 on both weight matrices",
                     "dense": {"weight_noise": 0.05}},
    "dropout": {"what": "dropout rate 0.3 on the hidden layer", "after": lambda: [gn.Dropout(0.3)]},
    "augmentation": {"what": "fake data: 30 % of each batch shifted by one pixel", "augment": True},
}


def shift_some(images, rng, share=0.3):
    """Fake data for ``fit(augment=...)``: ``share`` of the flat 8x8 images moved by up to one
    pixel (the digits are centred, so moving all of them teaches the wrong thing)."""
    out = np.array(images, dtype=np.float64)
    pick = np.flatnonzero(rng.random(len(out)) < share)
    if len(pick):                    # random_shift of no images fails (np.stack of nothing)
        out[pick] = gn.data.random_shift(out[pick].reshape(-1, 8, 8), 1, rng).reshape(-1, 64)
    return out


def test_cross_entropy(model, X, Y):
    """Mean cross-entropy of the model's logits on (X, Y), without any penalty term."""
    z = model.predict({"x": X})
    z = z - z.max(axis=1, keepdims=True)
    return float(-(Y * (z - np.log(np.exp(z).sum(axis=1, keepdims=True)))).sum(axis=1).mean())


def small_digits(n_train=200):
    """(Xtr, Xte, Ytr, Yte): ``n_train`` training images (20 per class), 450 test images, pixels in [0, 1]."""
    X, Y = gn.data.load_digits()
    Xtr, Xte, Ytr, Yte = gn.data.train_test_split(X, Y, test_fraction=0.25, seed=0, stratify=Y)
    keep = np.concatenate([np.flatnonzero(Ytr.argmax(1) == c)[:n_train // 10] for c in range(10)])
    return Xtr[keep], Xte, Ytr[keep], Yte


def build(method):
    """The MLP with one technique; returns (graph, loss)."""
    spec = METHODS[method]
    g = gn.Graph("digits_" + method.replace(" ", "_"), seed=0)
    x, y = g.input("x", (None, 64)), g.input("y", (None, 10))
    dense = spec.get("dense", {})
    layers = [*spec.get("before", list)(), gn.Dense(HIDDEN, activation="relu", **dense),
              *spec.get("after", list)(), gn.Dense(10, **dense)]
    logits = g.output("logits", gn.Sequential(layers)(x))
    loss = gn.softmax_cross_entropy(logits, y)
    if "penalty" in spec:
        loss = loss + gn.weight_penalty(g, **spec["penalty"])
    return g, loss


def main(argv=None):
    args, out = parse(__doc__.splitlines()[0], argv)
    epochs = 30 if args.fast else 200
    Xtr, Xte, Ytr, Yte = small_digits()
    train, test = {"x": Xtr, "y": Ytr}, {"x": Xte, "y": Yte}
    print(f"MLP 64-{HIDDEN}-10, {len(Xtr)} training images, {len(Xte)} test images, "
          f"Adam lr=1e-3, batch 32, {epochs} epochs")
    rows = {}
    for method, spec in METHODS.items():
        g, loss = build(method)
        model = gn.compile(g, loss, optimizer=gn.Adam(lr=1e-3), target="cpu", wait=True)
        model.fit(train, epochs=epochs, batch_size=32, augment=shift_some if spec.get("augment") else None,
                  verbose=False, seed=0)
        acc = {part: gn.train.evaluate(model, feeds, metrics=["accuracy"])["accuracy"]
               for part, feeds in (("train", train), ("test", test))}
        acc["test_loss"] = test_cross_entropy(model, Xte, Yte)
        rows[method] = acc
        print(f"  {method:13s} train {100 * acc['train']:5.1f} %  test {100 * acc['test']:5.1f} %  "
              f"test CE {acc['test_loss']:.3f}   ({spec['what']})")

    print("\n| technique | train accuracy | test accuracy | test cross-entropy |\n|---|---:|---:|---:|")
    for method, acc in rows.items():
        print(f"| {method} | {100 * acc['train']:.1f} % | {100 * acc['test']:.1f} % "
              f"| {acc['test_loss']:.3f} |")
    print(f"(one test image is {100 / len(Xte):.2f} % of the test accuracy)")

    fig, axes = figure(1, 1, size=(9.0, 3.8))
    ax = axes[0, 0]
    at = np.arange(len(rows))
    train_acc = np.array([100 * r["train"] for r in rows.values()])
    test_acc = np.array([100 * r["test"] for r in rows.values()])
    ax.bar(at - 0.2, train_acc, 0.4, label=f"train ({len(Xtr)} images)", color="tab:gray")
    bars = ax.bar(at + 0.2, test_acc, 0.4, label=f"test ({len(Xte)} images)", color="tab:blue")
    ax.bar_label(bars, [f"{a:.1f}" for a in test_acc], fontsize=8, padding=2)
    ax.axhline(test_acc[0], color="tab:blue", linestyle=":", linewidth=1)
    ax.set_xticks(at, list(rows), rotation=20)
    low = max(0.0, 10 * np.floor(min(test_acc.min(), train_acc.min()) / 10) - 10)
    ax.set_ylim(low, 103)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Regularization, {len(Xtr)} training images, {epochs} epochs "
                 f"(dotted: test accuracy with none)")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5))
    save(fig, out, "regularization_accuracy.png")
    return {"epochs": epochs, "n_train": len(Xtr), "n_test": len(Xte), "accuracy": rows}


if __name__ == "__main__":
    main()
