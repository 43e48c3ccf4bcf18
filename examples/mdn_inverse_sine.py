"""A mixture density network on Bishop's inverse-sine problem.

``y`` is a one-to-many function of ``x`` (up to three branches), so a
mean-squared-error regressor would predict the average of the branches; a
mixture density network predicts the whole conditional density ``p(y | x)``.

Run from the repository root (with keras_gmm installed, ``pip install -e .``,
or with ``PYTHONPATH=.``)::

    python examples/mdn_inverse_sine.py              # 30 epochs, under a minute
    python examples/mdn_inverse_sine.py --smoke      # 2 epochs on a small subset

It prints the held-out NLL on the "test" split next to the exact floor
``H(Y|X)`` and writes ``<output-dir>/mdn_inverse_sine.png``: the learned density
as a heat map with the training points over it, and samples drawn from the
model next to the true test points.
"""

import argparse
from pathlib import Path

import keras
import matplotlib
import numpy as np
from matplotlib import colors

import keras_gmm
from keras_gmm import datasets

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def build_model(num_components=5):
    head = keras_gmm.MixtureDensityHead(num_components=num_components, event_size=1)
    model = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            head,
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=head.loss())
    return model, head


def plot(model, head, x_train, y_train, x_test, y_test, path, grid_size=200):
    # p(y | x) on a grid: params for each x column, log_prob for each y row.
    xs = np.linspace(-0.2, 1.2, grid_size, dtype="float32")
    ys = np.linspace(-0.1, 1.1, grid_size, dtype="float32")
    params = model.predict(xs[:, None], verbose=0)  # [nx, P]
    params_grid = np.broadcast_to(params, (grid_size,) + params.shape)  # [ny, nx, P]
    y_grid = np.broadcast_to(ys[:, None, None], (grid_size, grid_size, 1))
    density = np.exp(head.log_prob(params_grid, y_grid).numpy())  # [ny, nx]

    samples = head.sample(model.predict(x_test, verbose=0), seed=0).numpy()

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5), sharex=True, sharey=True)
    image = ax1.imshow(
        density, origin="lower", aspect="auto", cmap="viridis",
        extent=(xs[0], xs[-1], ys[0], ys[-1]),
        norm=colors.PowerNorm(gamma=0.4),  # shows the weaker branches
    )
    ax1.scatter(x_train[:1000], y_train[:1000], s=1, c="white", alpha=0.4,
                label="1,000 training points")
    ax1.set(title="Learned density p(y | x)", xlabel="x", ylabel="y")
    ax1.legend(loc="lower right", markerscale=6, fontsize=9, facecolor="gray",
               labelcolor="white", framealpha=0.6)
    fig.colorbar(image, ax=ax1, label="density (power scale: shows the weak branches)")
    shown = slice(0, 3000)  # the same test inputs for both sets of points
    ax2.scatter(x_test[shown], y_test[shown], s=2, c="black", alpha=0.5,
                label="test data")
    ax2.scatter(x_test[shown], samples[shown], s=2, c="tab:orange", alpha=0.5,
                label="one sample of the model per test input")
    ax2.set(title="Samples from head.sample(params) against the test data",
            xlabel="x")
    ax2.legend(loc="upper left", markerscale=6, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--smoke", action="store_true",
                        help="a 2-epoch run on 2000 samples, to check it works")
    parser.add_argument("--output-dir", type=Path, default=Path("examples/output"))
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    x_train, y_train = datasets.inverse_sine_split("train")
    x_val, y_val = datasets.inverse_sine_split("val")
    x_test, y_test = datasets.inverse_sine_split("test")
    epochs = args.epochs
    if args.smoke:
        epochs, x_train, y_train = 2, x_train[:2000], y_train[:2000]

    model, head = build_model()
    model.fit(x_train, y_train, batch_size=256, epochs=epochs,
              validation_data=(x_val, y_val), verbose=2)

    test_nll = model.evaluate(x_test, y_test, batch_size=1024, verbose=0)
    floor = datasets.inverse_sine_conditional_entropy()
    print(f"test NLL: {test_nll:.4f} nats (floor H(Y|X) = {floor:.4f}, "
          f"gap {test_nll - floor:.4f})")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / "mdn_inverse_sine.png"
    plot(model, head, x_train, y_train, x_test, y_test, path,
         grid_size=60 if args.smoke else 200)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
