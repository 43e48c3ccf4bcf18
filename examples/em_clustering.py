"""Clustering 2-D data with GaussianMixtureEM, choosing K by BIC.

Four anisotropic Gaussian blobs (stretched and rotated, of different sizes)
are generated; :class:`keras_gmm.GaussianMixtureEM` is fitted for every
number of components K = 1..8 and every covariance type, and the model with
the lowest BIC (Bayesian information criterion, ``-2 log L + p log n``) is
kept. scikit-learn's ``GaussianMixture`` is fitted with the same settings on
the same data, so the two BIC curves can be compared.

Run from the repository root (with keras_gmm installed, ``pip install -e .``,
or with ``PYTHONPATH=.``)::

    python examples/em_clustering.py          # 2,000 points, 4 covariance types, < 1 min
    python examples/em_clustering.py --smoke  # 400 points, "full" only, n_init=1

It prints the BIC of every fit (ours and scikit-learn's), the chosen K and
covariance type, and the accuracy of the chosen clustering against the true
blobs (:func:`keras_gmm.metrics.clustering_accuracy`), and writes two PNGs
into ``--output-dir``: ``em_clustering_ellipses.png`` (the data coloured by
cluster, with the fitted components as 1- and 2-sigma ellipses drawn from
``gmm.covariances_``) and ``em_clustering_bic.png`` (the BIC curves).
"""

import argparse
import time
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.patches import Ellipse
from sklearn.mixture import GaussianMixture

import keras_gmm
from keras_gmm.metrics import clustering_accuracy, normalized_mutual_info

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
TRUE_K = 4


def anisotropic_blobs(n, seed=0):
    """``(x [n, 2] float32, labels [n])``: four stretched, rotated blobs."""
    rng = np.random.default_rng(seed)
    centers = np.array([[-6.0, -2.0], [0.0, 4.0], [5.0, -3.0], [7.0, 5.0]])
    # Standard deviations along the blob's axes, and its rotation.
    scales = np.array([[2.5, 0.5], [2.0, 0.7], [0.8, 0.8], [1.5, 0.4]])
    angles = np.deg2rad([30.0, -20.0, 0.0, 70.0])
    weights = np.array([0.3, 0.3, 0.2, 0.2])
    labels = rng.choice(TRUE_K, size=n, p=weights)
    z = rng.standard_normal((n, 2)) * scales[labels]
    cos, sin = np.cos(angles[labels]), np.sin(angles[labels])
    rotated = np.stack(
        [cos * z[:, 0] - sin * z[:, 1], sin * z[:, 0] + cos * z[:, 1]], axis=1
    )
    return (rotated + centers[labels]).astype(np.float32), labels


def component_covariances(gmm):
    """``[K, 2, 2]`` covariances from ``gmm.covariances_`` for any covariance type."""
    cov = np.asarray(gmm.covariances_, np.float64)
    k, d = gmm.num_components, gmm.means_.shape[1]
    if gmm.covariance_type == "full":
        return cov
    if gmm.covariance_type == "tied":
        return np.broadcast_to(cov, (k, d, d))
    if gmm.covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    return cov[:, None, None] * np.eye(d)  # spherical


def fit_curves(x, ks, covariance_types, n_init, seed):
    """BIC of ours and of scikit-learn for every (covariance type, K)."""
    ours, sklearn, models = {}, {}, {}
    for ct in covariance_types:
        for k in ks:
            # k-means initialisation, as scikit-learn's default.
            gmm = keras_gmm.GaussianMixtureEM(
                k, covariance_type=ct, n_init=n_init, init_params="kmeans", seed=seed
            )
            gmm.fit(x, verbose=0)
            ours[ct, k] = float(gmm.bic(x))
            models[ct, k] = gmm
            reference = GaussianMixture(
                k, covariance_type=ct, n_init=n_init, random_state=seed
            ).fit(x.astype(np.float64))
            sklearn[ct, k] = float(reference.bic(x.astype(np.float64)))
    return ours, sklearn, models


def print_table(ours, sklearn, ks, covariance_types):
    print("BIC (lower is better), ours / scikit-learn GaussianMixture:")
    print("K  " + "".join(f"{ct:>24s}" for ct in covariance_types))
    for k in ks:
        cells = "".join(
            f"{ours[ct, k]:>12.1f} /{sklearn[ct, k]:>10.1f}" for ct in covariance_types
        )
        print(f"{k:<3d}{cells}")


def plot_ellipses(gmm, x, labels, path):
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.scatter(x[:, 0], x[:, 1], c=labels, cmap="tab10", s=4, alpha=0.5,
               vmin=0, vmax=9)
    covariances = component_covariances(gmm)
    for k, (mean, cov) in enumerate(zip(gmm.means_, covariances)):
        values, vectors = np.linalg.eigh(cov)
        angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
        for n_std in (1.0, 2.0):
            width, height = 2.0 * n_std * np.sqrt(values[::-1])
            ax.add_patch(Ellipse(mean, width, height, angle=angle, fill=False,
                                 color=plt.cm.tab10(k % 10), lw=2.0 / n_std))
        ax.plot(*mean, "k+", ms=10)
    ax.plot([], [], "k-", lw=2.0, label="1 sigma")
    ax.plot([], [], "k-", lw=1.0, label="2 sigma")
    ax.plot([], [], "k+", ms=10, ls="none", label="component mean")
    ax.legend(loc="upper left", fontsize=9, title="colour: cluster",
              title_fontsize=9, framealpha=0.9)
    ax.set(title=f"GaussianMixtureEM: K={gmm.num_components}, "
                 f"covariance_type={gmm.covariance_type!r}",
           xlabel="x0", ylabel="x1")
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_bic(ours, sklearn, ks, covariance_types, best, path):
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, ct in enumerate(covariance_types):
        color = plt.cm.tab10(i)
        ax.plot(ks, [ours[ct, k] for k in ks], "o-", color=color, label=repr(ct))
        ax.plot(ks, [sklearn[ct, k] for k in ks], "x--", color=color, alpha=0.6)
    # Colour: the covariance type; line: the library.
    ax.plot([], [], "o-", color="gray", label="keras_gmm")
    ax.plot([], [], "x--", color="gray", alpha=0.6, label="scikit-learn")
    ax.plot(best[1], ours[best], "k*", ms=16, ls="none", label="chosen (lowest BIC)")
    ax.set(title="BIC against the number of components", xlabel="K",
           ylabel="BIC (lower is better)", xticks=list(ks))
    ax.legend(fontsize=8, title="covariance_type, library", title_fontsize=8,
              framealpha=0.9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-samples", type=int, default=2000)
    parser.add_argument("--max-components", type=int, default=8)
    parser.add_argument("--n-init", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="400 points, 'full' covariances only, n_init=1, "
                             "to check it works")
    parser.add_argument("--output-dir", type=Path, default=Path("examples/output"))
    args = parser.parse_args()

    n, n_init, covariance_types = args.n_samples, args.n_init, COVARIANCE_TYPES
    if args.smoke:
        n, n_init, covariance_types = 400, 1, ("full",)
    ks = range(1, args.max_components + 1)
    x, true_labels = anisotropic_blobs(n, seed=args.seed)

    start = time.perf_counter()
    ours, sklearn, models = fit_curves(x, ks, covariance_types, n_init, args.seed)
    seconds = time.perf_counter() - start
    print_table(ours, sklearn, ks, covariance_types)

    best = min(ours, key=ours.get)
    best_sklearn = min(sklearn, key=sklearn.get)
    gmm = models[best]
    labels = gmm.predict(x)
    print(f"fitted {len(ours)} mixtures of each library in {seconds:.1f} s")
    print(f"chosen K: {best[1]} (covariance_type={best[0]!r}, BIC {ours[best]:.1f}; "
          f"true K = {TRUE_K})")
    print(f"scikit-learn's lowest BIC: K={best_sklearn[1]}, "
          f"covariance_type={best_sklearn[0]!r}, BIC {sklearn[best_sklearn]:.1f}")
    gaps = np.array([abs(ours[key] - sklearn[key]) for key in ours])
    print(f"|BIC ours - BIC scikit-learn|: median {np.median(gaps):.2f}, largest "
          f"{gaps.max():.2f} (EM finds a local optimum; the two libraries draw "
          "different initialisations, so a fit can land in another one)")
    print(f"chosen model against the true blobs: accuracy "
          f"{clustering_accuracy(true_labels, labels):.4f}, NMI "
          f"{normalized_mutual_info(true_labels, labels):.4f}")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    ellipses = args.output_dir / "em_clustering_ellipses.png"
    plot_ellipses(gmm, x, labels, ellipses)
    print(f"wrote {ellipses}")
    bic_path = args.output_dir / "em_clustering_bic.png"
    plot_bic(ours, sklearn, ks, covariance_types, best, bic_path)
    print(f"wrote {bic_path}")


if __name__ == "__main__":
    main()
