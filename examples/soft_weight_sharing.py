"""Compressing an MLP by soft weight sharing with GMMRegularizer.

The recipe of the ``soft_weight_sharing_digits`` zoo model (Ullrich, Meeds &
Welling 2017), step by step on scikit-learn's 8x8 digits:

1. train a 64-300-100-10 MLP normally;
2. retrain it with one :class:`keras_gmm.GMMRegularizer` shared by every
   kernel and bias (a 16-component Gaussian mixture over the weights, one
   component pinned at zero), the mixture learned during ``fit`` by
   :class:`keras_gmm.regularizers.GMMPriorCallback` (MAP EM);
3. prune (the weights of the zero component, and the smallest others beyond
   10 % non-zero) and snap every weight to its component's mean
   (:func:`keras_gmm.regularizers.quantize`);
4. with the zeros fixed, fine-tune the other weights, pull them onto 15
   shared values and snap them there; then measure the compression
   (:func:`keras_gmm.regularizers.compression_report`).

Run from the repository root (with keras_gmm installed, ``pip install -e .``,
or with ``PYTHONPATH=.``)::

    python examples/soft_weight_sharing.py          # the zoo recipe, 1-2 min
    python examples/soft_weight_sharing.py --smoke  # a few epochs, to check it works

It prints the accuracy on the held-out "test" split after each step, the fraction of non-zero weights, the distinct values and the
compression ratio (per layer and in total), and writes
``soft_weight_sharing.png`` into ``--output-dir``: the paper's Figure 1 in
spirit: each weight before (x) against after retraining (y), with the learned
components as horizontal bands (mean +- 2 standard deviations), and the
histograms of the weights before and after, the learned mixture density
overlaid on the second.
"""

import argparse
import time
from pathlib import Path

import matplotlib
import numpy as np

from keras_gmm.zoo import soft_weight_sharing_digits as recipe

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402


def mixture_density(reg, grid):
    """``p(w)`` of the learned prior on ``grid``."""
    return np.exp(reg.log_prob(grid.astype("float32")).numpy())


def plot(result, path):
    reg = result["regularizer"]
    before, after = result["weights_pretrained"], result["weights_retrained"]
    means, stds = reg.means, reg.stddevs
    low = min(before.min(), after.min(), (means - 2 * stds).min())
    high = max(before.max(), after.max(), (means + 2 * stds).max())
    pad = 0.05 * (high - low)
    low, high = low - pad, high + pad
    bins = np.linspace(low, high, 121)

    fig = plt.figure(figsize=(10, 8))
    grid = fig.add_gridspec(2, 2, width_ratios=(4, 1.3), height_ratios=(1.3, 4),
                            wspace=0.05, hspace=0.05)
    ax = fig.add_subplot(grid[1, 0])
    top = fig.add_subplot(grid[0, 0], sharex=ax)
    side = fig.add_subplot(grid[1, 1], sharey=ax)

    colors = plt.cm.tab20(np.linspace(0, 1, len(means)))
    for k, (mu, sd) in enumerate(zip(means, stds)):
        color = "k" if (reg.zero_component and k == 0) else colors[k]
        ax.axhspan(mu - 2 * sd, mu + 2 * sd, color=color, alpha=0.15, lw=0)
        ax.axhline(mu, color=color, lw=0.8, alpha=0.8)
    ax.scatter(before, after, s=1, alpha=0.3, color="tab:blue", rasterized=True,
               label="one weight")
    ax.set(xlim=(low, high), ylim=(low, high), xlabel="weight, trained normally",
           ylabel="weight after retraining with the prior")
    ax.text(0.02, 0.98,
            f"{len(before):,} weights; non-zero after quantization: "
            f"{result['quantize']['nonzero_fraction']:.1%}",
            transform=ax.transAxes, va="top", fontsize=10,
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"})

    top.hist(before, bins=bins, color="tab:gray", log=True,
             label="weights trained normally")
    top.set(ylabel="count (log)", title="Soft weight sharing: 64-300-100-10 MLP, "
            "digits")
    top.tick_params(labelbottom=False)

    side.hist(after, bins=bins, orientation="horizontal", color="tab:blue", log=True,
              label="weights retrained with the prior")
    ws = np.linspace(low, high, 2000)
    width = bins[1] - bins[0]
    side.plot(mixture_density(reg, ws) * len(after) * width, ws, color="tab:red",
              lw=1.0, label="learned mixture (scaled to counts)")
    side.set(xlabel="count (log)")
    side.set_xlim(left=0.5)
    side.tick_params(labelleft=False)

    # The key, in the free top-right corner.
    key = fig.add_subplot(grid[0, 1])
    key.axis("off")
    handles, labels = [], []
    for source in (top, ax, side):
        h, lab = source.get_legend_handles_labels()
        handles, labels = handles + h, labels + lab
    bands = [(Patch(color="k", alpha=0.25), "zero component: mean ± 2 sd"),
             (Patch(color=colors[len(means) // 2], alpha=0.4),
              "other components (a colour each): mean ± 2 sd")]
    handles += [h for h, _ in bands]
    labels += [lab for _, lab in bands]
    key.legend(handles, labels, loc="center", fontsize=8, markerscale=6,
               frameon=False)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def print_report(result):
    comp = result["compression"]
    print(f"accuracy (test): trained normally {result['accuracy_pretrained']:.4f}, "
          f"retrained with the prior {result['accuracy_retrained']:.4f}, "
          f"quantized {result['accuracy_quantized']:.4f}, tuned "
          f"{result['accuracy_tuned']:.4f} (drop "
          f"{100 * (result['accuracy_pretrained'] - result['accuracy_tuned']):+.2f} points)")
    print(f"{'variable':<26s}{'weights':>9s}{'non-zero':>10s}{'distinct':>10s}"
          f"{'format':>14s}{'bits':>9s}")
    for row in comp["variables"]:
        name = row["name"].split("/", 1)[-1]  # without the model's name
        print(f"{name:<26s}{row['n_weights']:>9d}{row['n_nonzero']:>10d}"
              f"{row['n_distinct']:>10d}{row['format']:>14s}{row['bits']:>9d}")
    print(f"non-zero weights: {comp['n_nonzero']} of {comp['n_weights']} "
          f"({comp['nonzero_fraction']:.2%}); distinct values: {comp['n_distinct']}")
    print(f"bits per weight: {comp['bits_per_weight']:.3f}; compression ratio vs "
          f"float32: {comp['compression_ratio']:.1f}x")
    reg = result["regularizer"]
    order = np.argsort(reg.means)
    print("learned prior (mean, sd, weight): " + ", ".join(
        f"({reg.means[k]:+.3f}, {reg.stddevs[k]:.4f}, {reg.mixture_weights[k]:.4f})"
        for k in order))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=recipe.DEFAULTS["seed"])
    parser.add_argument("--epochs", type=int, default=recipe.DEFAULTS["epochs"],
                        help="retraining epochs with the prior")
    parser.add_argument("--pretrain-epochs", type=int,
                        default=recipe.DEFAULTS["pretrain_epochs"])
    parser.add_argument("--smoke", action="store_true",
                        help="2-3 epochs per step, to check it works")
    parser.add_argument("--output-dir", type=Path, default=Path("examples/output"))
    args = parser.parse_args()
    epochs, pretrain_epochs, tune = args.epochs, args.pretrain_epochs, {}
    if args.smoke:
        epochs, pretrain_epochs = 3, 3
        tune = {"tune_epochs": 2, "free_epochs": 2}

    start = time.perf_counter()
    result = recipe.run(seed=args.seed, epochs=epochs, pretrain_epochs=pretrain_epochs,
                        **tune)
    print(f"pretrained {pretrain_epochs} epochs, retrained {epochs} epochs with the "
          f"prior ({result['em_updates']} EM updates), tuned, in "
          f"{time.perf_counter() - start:.1f} s")
    print_report(result)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / "soft_weight_sharing.png"
    plot(result, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
