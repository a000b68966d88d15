"""Deep neural networks: a deeper MLP on the 8x8 digits, and its deltas layer by layer.

Lecture section "Deep neural networks" (multi-layer networks, deeper than they are wide).
The same stack of hidden layers is built three times -- sigmoid, tanh, ReLU -- and
``gn.derive(loss)`` gives the lecture's delta node delta^l = dC/dz^l of every layer.
Evaluated on a batch at initialisation, their sizes show the gradient vanishing through a
deep sigmoid (sigmoid' <= 1/4 per layer) or tanh stack, and staying healthy with ReLU. Each
net is then trained with the same plain SGD, so the vanishing deltas show as slow learning.
Last, a deeper ReLU MLP (64-128-64-32-10) is trained with Adam for its test accuracy.

    PYTHONPATH=. python3 examples/deep_network.py [--fast] [--out FOLDER]

Writes ``deep_network_deltas.png`` (delta size per layer; test accuracy per epoch).
"""
import numpy as np

import graphnn as gn
from _common import figure, parse, save

ACTIVATIONS = {"sigmoid": "glorot_uniform", "tanh": "glorot_uniform", "relu": "he_normal"}
COLOURS = {"sigmoid": "tab:orange", "tanh": "tab:blue", "relu": "tab:green"}


def digits():
    """Standardised flat digits, split 75/25 as the acceptance tests do."""
    X, Y = gn.data.load_digits()
    Xtr, Xte, Ytr, Yte = gn.data.train_test_split(X, Y, test_fraction=0.25, seed=0, stratify=Y)
    mean, scale = Xtr.mean(0), Xtr.std(0) + 0.1
    return (Xtr - mean) / scale, (Xte - mean) / scale, Ytr, Yte


def deep_mlp(activation, depth, width, seed=0):
    """x (N, 64) -> ``depth`` hidden layers of ``width`` units -> 10 logits; (graph, loss, z nodes)."""
    g = gn.Graph(f"deep_{activation}", seed=seed)
    x, y = g.input("x", (None, 64)), g.input("y", (None, 10))
    h, zs = x, []
    for layer in range(1, depth + 1):
        h = gn.dense(h, width, activation=activation, init=ACTIVATIONS[activation], name=f"h{layer}")
        zs.append(h.inputs[0])                       # the layer's pre-activation z^l
    logits = g.output("logits", gn.dense(h, 10, name="out"))
    zs.append(logits)
    return g, gn.softmax_cross_entropy(logits, y), zs


def delta_sizes(loss, zs, feeds):
    """Mean over the batch of |delta^l| per example, for each layer's z^l (input side first).

    The loss is a batch mean, so each row of delta^l carries a factor 1/N: it is taken out."""
    back = gn.derive(loss)
    deltas = [back.delta(z) for z in zs]
    values = gn.evaluate(deltas, feeds)
    n = len(next(iter(feeds.values())))
    return [float(np.linalg.norm(values[d.name] * n, axis=1).mean()) for d in deltas]


def train_deep_mlp(Xtr, Xte, Ytr, Yte, epochs, widths=(128, 64, 32)):
    """The deeper MLP trained for accuracy: input noise, ReLU layers, He init, Adam."""
    g = gn.Graph("digits_deep_mlp", seed=0)
    x, y = g.input("x", (None, 64)), g.input("y", (None, 10))
    layers = [gn.GaussianNoise(0.3)] + [gn.Dense(w, activation="relu", init="he_normal") for w in widths]
    logits = g.output("logits", gn.Sequential(layers + [gn.Dense(10)])(x))
    model = gn.compile(g, gn.softmax_cross_entropy(logits, y), optimizer=gn.Adam(lr=1e-3),
                       target="cpu", wait=True)
    model.fit({"x": Xtr, "y": Ytr}, epochs=epochs, batch_size=32, verbose=False, seed=0)
    accuracy = gn.train.evaluate(model, {"x": Xte, "y": Yte}, metrics=["accuracy"])["accuracy"]
    shape = "-".join(str(k) for k in (64, *widths, 10))
    print(f"deeper MLP {shape} (ReLU, input noise 0.3, Adam lr=1e-3, {epochs} epochs): "
          f"test accuracy {100 * accuracy:.1f} %")
    return accuracy


def main(argv=None):
    args, out = parse(__doc__.splitlines()[0], argv)
    depth, width = 8, 32
    epochs = 4 if args.fast else 40
    Xtr, Xte, Ytr, Yte = digits()
    batch = {"x": Xtr[:256], "y": Ytr[:256]}
    print(f"{depth} hidden layers of {width} units on the 8x8 digits "
          f"({len(Xtr)} training, {len(Xte)} test images)")
    print("size of delta^l = dC/dz^l per example at initialisation (layer 1 = next to the input):")
    sizes, curves, results = {}, {}, {}
    for activation in ACTIVATIONS:
        g, loss, zs = deep_mlp(activation, depth, width)
        sizes[activation] = delta_sizes(loss, zs, batch)
        ratio = sizes[activation][0] / sizes[activation][-1]
        print(f"  {activation:8s}" + " ".join(f"{s:8.1e}" for s in sizes[activation])
              + f"   first/last = {ratio:.1e}")
        model = gn.compile(g, loss, optimizer=gn.SGD(lr=0.05), target="cpu", wait=True)
        history = model.fit({"x": Xtr, "y": Ytr}, epochs=epochs, batch_size=32, metrics=["accuracy"],
                            validation_data={"x": Xte, "y": Yte}, verbose=False, seed=0)
        curves[activation] = history["val_accuracy"]
        results[activation] = {"first_over_last": ratio, "test_accuracy": history["val_accuracy"][-1]}
    print(f"test accuracy after {epochs} epochs of SGD(lr=0.05), batch 32:")
    for activation, r in results.items():
        print(f"  {activation:8s}{100 * r['test_accuracy']:6.1f} %")
    mlp_accuracy = train_deep_mlp(Xtr, Xte, Ytr, Yte, epochs)

    fig, axes = figure(2, 1, size=(5.0, 3.8))
    layers = np.arange(1, depth + 2)
    ax = axes[0, 0]
    for activation, s in sizes.items():
        ax.semilogy(layers, s, "o-", color=COLOURS[activation], label=activation)
    ax.set_xticks(layers, [str(k) for k in range(1, depth + 1)] + ["out"])
    ax.set_xlabel("layer l (input side left)")
    ax.set_ylabel(r"mean $\|\delta^l\|$ per example")
    ax.set_title(f"Deltas at initialisation, {depth}×{width} MLP")
    ax.legend()
    ax = axes[0, 1]
    for activation, acc in curves.items():
        ax.plot(np.arange(1, len(acc) + 1), 100 * np.asarray(acc), color=COLOURS[activation],
                label=activation)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Same SGD, same depth")
    ax.legend(loc="lower right")
    save(fig, out, "deep_network_deltas.png")
    return {"depth": depth, "width": width, "epochs": epochs, "delta_sizes": sizes,
            "mlp_test_accuracy": mlp_accuracy, **{
        f"{a}_{k}": v for a, r in results.items() for k, v in r.items()}}


if __name__ == "__main__":
    main()
