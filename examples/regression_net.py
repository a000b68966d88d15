"""The lecture's regression network: 1 input, 2 tanh hidden units, 1 output, 7 weights, MSE.

    python examples/regression_net.py [--fast] [--out FOLDER]

Lecture section: "Example: a regression network" (input 1-D, output 1-D, hidden layer of 2,
7 weights, MSE loss; the statistics connection is line fitting). The net from
``gn.lecture.regression_net`` is compiled for the CPU and trained with Adam on the noisy
sine. Pictures: the fit and the loss curve (PNG), the graph with the values of one batch
and the delta flow with its δ and gradient norms (SVG).
"""
import numpy as np

import graphnn as gn
from _common import figure, parse, save, save_picture


def main(argv=None):
    args, out = parse(__doc__.splitlines()[0], argv)
    epochs = 60 if args.fast else 300
    net = gn.lecture.regression_net(seed=0)
    x_train, y_train = gn.lecture.noisy_sine(200, seed=1)
    x_test, y_test = gn.lecture.noisy_sine(200, seed=2)
    feeds = {"x": x_train, "y": y_train}
    print(f"regression net 1-2-1: {net.graph.num_parameters} weights")
    print(net.graph.text(net.loss))
    report = gn.check_grad(net.loss, {"x": x_train[:16], "y": y_train[:16]})
    print(f"derived gradients vs central differences: {'ok' if report.ok else 'FAILED'} "
          f"(max relative error {report.max_error:.1e})")

    model = gn.compile(net.graph, net.loss, optimizer=gn.Adam(lr=0.05), target="cpu")
    history = model.fit(feeds, epochs=epochs, batch_size=32, verbose=False, seed=0,
                        validation_data={"x": x_test, "y": y_test})
    loss, val_loss = history.history["loss"], history.history["val_loss"]
    print(f"trained {epochs} epochs ({model.step_count} Adam steps): training MSE {loss[0]:.3f} -> "
          f"{loss[-1]:.4f}, test MSE {val_loss[-1]:.4f} (noise variance 0.01)")
    params = model.get_params()
    for name, value in params.items():
        print(f"   {name:<9} = {np.array2string(np.ravel(value), precision=3)}")

    fig, axes = figure(2, 1, size=(4.6, 3.6))
    grid = np.linspace(-1, 1, 200)[:, None]
    ax = axes[0, 0]
    ax.plot(x_train[:, 0], y_train[:, 0], ".", color="0.6", label="training data")
    ax.plot(grid[:, 0], np.sin(3 * grid[:, 0]), "k:", lw=1.5, label="sin(3x)")
    ax.plot(grid[:, 0], model.predict({"x": grid})[:, 0], "r", lw=2, label="network")
    ax.set(xlabel="x", ylabel="y", title="Fit of the 1-2-1 net (7 weights)")
    ax.grid(alpha=0.4)
    ax.legend(loc="upper left")
    ax = axes[0, 1]
    epochs_axis = np.arange(1, len(loss) + 1)
    ax.semilogy(epochs_axis, loss, "b", lw=2, label="training")
    ax.semilogy(epochs_axis, val_loss, "r--", lw=2, label="test")
    ax.set(xlabel="epoch", ylabel="MSE (log scale)", title="Loss curve")
    ax.grid(alpha=0.4, which="both")
    ax.legend()
    files = [save(fig, out, "regression_net_fit.png")]

    batch = {"x": x_train[:8], "y": y_train[:8]}
    files.append(save_picture(gn.render(net, feed=batch, params=params,
                                        title="regression 1-2-1: values of 8 rows"),
                              out, "regression_net_graph.svg"))
    files.append(save_picture(gn.render(net, deltas=True, feed=batch, params=params,
                                        title="regression 1-2-1: delta flow"),
                              out, "regression_net_deltas.svg"))
    return {"weights": net.graph.num_parameters, "gradient_check": report.ok, "first_loss": loss[0],
            "final_loss": loss[-1], "test_mse": val_loss[-1], "files": files}


if __name__ == "__main__":
    main()
