"""GMMConv2D vs Conv2D: the same small CNN on the 8x8 digits, and its kernels.

Two CNNs, identical but for their convolutions -- ``keras_gmm.GMMConv2D``
(each 5x5 kernel a mixture of 8 Gaussian bumps shared by the layer's channel
pairs) or ``keras.layers.Conv2D`` (5x5) -- are built by the zoo recipe
``keras_gmm.zoo.gmmconv_digits`` and trained the same way (seed, data,
schedule) on :func:`keras_gmm.datasets.load_digits` ("train" split). The
script prints each one's held-out accuracy ("test" split) and parameter
counts, and writes ``gmm_conv_digits.png`` into ``--output-dir``: the first
layer's learned kernels of both CNNs side by side, and the learned Gaussian
bumps of each GMMConv2D layer (1- and 2-sigma ellipses on the kernel grid).

Run from the repository root (with keras_gmm installed, ``pip install -e
".[examples]"``, or with ``PYTHONPATH=.``)::

    python examples/gmm_conv_digits.py           # 120 epochs each, 1-2 minutes
    python examples/gmm_conv_digits.py --smoke   # 2 epochs each
"""

import argparse
import time
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.patches import Ellipse

import keras_gmm
from keras_gmm.zoo import gmmconv_digits as recipe

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NUM_SHOWN = 12  # first-layer kernels drawn per CNN


def train(conv, epochs, seed):
    x_train, y_train = keras_gmm.datasets.load_digits("train")
    steps = epochs * -(-len(x_train) // recipe.DEFAULTS["batch_size"])
    model = recipe.build(seed=seed, conv=conv, steps=steps)
    start = time.perf_counter()
    model.fit(x_train, y_train, batch_size=recipe.DEFAULTS["batch_size"],
              epochs=epochs, verbose=0)
    return model, time.perf_counter() - start


def conv_layers(model):
    return [layer for layer in model.layers if layer.name.startswith("conv_")]


def conv_parameters(model):
    return sum(layer.count_params() for layer in conv_layers(model))


def draw_bumps(ax, layer, title):
    """The layer's shared bumps as 1- and 2-sigma ellipses on its grid."""
    kh, kw = layer.kernel_size
    means = layer.means.numpy()  # [K, 2] (row, col) offsets from the centre
    covs = layer.covariances.numpy()  # [K, 2, 2]
    colors = plt.cm.tab10(np.arange(len(means)) % 10)
    for mean, cov, color in zip(means, covs, colors):
        # (row, col) -> image coordinates (x = col, y = row).
        cov_xy = cov[::-1, ::-1]
        values, vectors = np.linalg.eigh(cov_xy)
        angle = np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1]))
        for n_sigma in (1, 2):
            ax.add_patch(Ellipse(
                (mean[1], mean[0]), 2 * n_sigma * np.sqrt(values[1]),
                2 * n_sigma * np.sqrt(values[0]), angle=angle, fill=False,
                color=color, alpha=1.0 if n_sigma == 1 else 0.4,
            ))
        ax.plot(mean[1], mean[0], "o", color=color, ms=3)
    rows, cols = np.arange(kh) - (kh - 1) / 2, np.arange(kw) - (kw - 1) / 2
    grid_c, grid_r = np.meshgrid(cols, rows)
    ax.plot(grid_c, grid_r, "k+", ms=4, alpha=0.5)
    ax.set_xlim(-kw / 2, kw / 2)
    ax.set_ylim(kh / 2, -kh / 2)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def plot(gmm_model, conv_model, path):
    gmm_layers, conv2d_layers = conv_layers(gmm_model), conv_layers(conv_model)
    gmm_kernel = gmm_layers[0].kernel.numpy()[:, :, 0, :NUM_SHOWN]
    conv_kernel = conv2d_layers[0].kernel.numpy()[:, :, 0, :NUM_SHOWN]
    fig = plt.figure(figsize=(NUM_SHOWN * 0.9, 4.6))
    grid = fig.add_gridspec(3, NUM_SHOWN, height_ratios=[1, 1, 1.6])
    for row, (kernels, label) in enumerate(
        [(gmm_kernel, "GMMConv2D"), (conv_kernel, "Conv2D")]
    ):
        for j in range(NUM_SHOWN):
            ax = fig.add_subplot(grid[row, j])
            kernel = kernels[:, :, j]
            limit = np.abs(kernel).max() or 1.0
            ax.imshow(kernel, cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=8)
    half = NUM_SHOWN // 2
    for i, layer in enumerate(gmm_layers[:2]):
        ax = fig.add_subplot(grid[2, i * half:(i + 1) * half])
        draw_bumps(ax, layer, f"GMMConv2D layer {i + 1}: {layer.num_components} "
                              "shared bumps\n(dot: mean; rings: 1 and 2 sigma; "
                              "+: the kernel's taps)")
    fig.suptitle("First-layer 5x5 kernels of each CNN (red > 0 > blue, each on its "
                 "own scale) and the learned Gaussian bumps", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=recipe.DEFAULTS["epochs"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="2 epochs each")
    parser.add_argument("--output-dir", type=Path, default=Path("examples/output"))
    args = parser.parse_args()
    epochs = 2 if args.smoke else args.epochs
    if epochs < 1:
        parser.error(f"--epochs must be >= 1; received {epochs}")

    results = {}
    for conv in ("GMMConv2D", "Conv2D"):
        model, seconds = train(conv, epochs, args.seed)
        scores = recipe.evaluate(model)
        results[conv] = (model, scores)
        print(
            f"{conv:<9} CNN: test accuracy {scores['accuracy']:.4f}, "
            f"NLL {scores['nll']:.4f} nats; parameters: convolutions "
            f"{conv_parameters(model)}, total {model.count_params()} "
            f"({epochs} epochs, {seconds:.1f} s)"
        )
    gmm_params = conv_parameters(results["GMMConv2D"][0])
    conv_params = conv_parameters(results["Conv2D"][0])
    gap = results["Conv2D"][1]["accuracy"] - results["GMMConv2D"][1]["accuracy"]
    print(f"GMMConv2D: {conv_params / gmm_params:.2f}x fewer convolution "
          f"parameters; accuracy gap (Conv2D - GMMConv2D): {100 * gap:.2f} points")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / "gmm_conv_digits.png"
    plot(results["GMMConv2D"][0], results["Conv2D"][0], path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
