"""Choosing K with the Bayesian (variational) Gaussian mixture, on digits.

The 1,797 handwritten 8x8 digits that ship with keras_gmm
(:func:`keras_gmm.datasets.load_digits`) are projected on their first two
principal axes (PCA by SVD, NumPy), and
:class:`keras_gmm.BayesianGaussianMixtureEM` is fitted with an upper bound
of K = 15 components and a Dirichlet-process prior on the weights with a
small concentration: the components the data do not need get a weight near
0. The *effective* K is the number of components whose weight exceeds
``--threshold`` (1%). scikit-learn's ``BayesianGaussianMixture`` is fitted on
the same features with the same settings for comparison, and the clusters
are scored against the digit labels (:func:`keras_gmm.metrics.
clustering_accuracy`, Hungarian matching).

Run from the repository root (with keras_gmm installed, ``pip install -e .``,
or with ``PYTHONPATH=.``)::

    python examples/bayesian_k_selection.py          # 2 PCA dims, full covariances
    python examples/bayesian_k_selection.py --smoke  # fewer iterations: checks it runs

It prints the weights of both fits and the effective K, and writes
``bayesian_k_selection.png`` into ``--output-dir``: the weight of each
component (sorted) with the threshold and the effective K, and the PCA
features coloured by component. (With more PCA dimensions the digits are
less Gaussian per class and, at these priors, every component keeps weight
in both libraries; stronger covariance priors, ``degrees_of_freedom_prior``,
empty more.)
"""

import argparse
import time
import warnings
from pathlib import Path

import matplotlib
import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import BayesianGaussianMixture

import keras_gmm
from keras_gmm.metrics import clustering_accuracy, normalized_mutual_info

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def pca_features(x, n_dims):
    """``x`` centred and projected on its first ``n_dims`` principal axes,
    scaled so the first axis has unit variance."""
    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    z = centred @ vt[:n_dims].T
    return z / z[:, 0].std(), (s[:n_dims] ** 2).sum() / (s**2).sum()


def effective_k(weights, threshold):
    return int(np.sum(np.asarray(weights) > threshold))


def plot_weights(ours, theirs, threshold, z, labels, path, title):
    order = np.argsort(ours)[::-1]
    k = len(ours)
    fig, (ax, scatter) = plt.subplots(1, 2, figsize=(13, 4.8),
                                      gridspec_kw={"width_ratios": [3, 2]})
    positions = np.arange(k)
    ax.bar(positions - 0.2, np.asarray(ours)[order], width=0.4,
           label=f"keras_gmm BayesianGaussianMixtureEM (effective K = "
                 f"{effective_k(ours, threshold)})")
    ax.bar(positions + 0.2, np.sort(theirs)[::-1], width=0.4, alpha=0.6,
           label=f"scikit-learn BayesianGaussianMixture (effective K = "
                 f"{effective_k(theirs, threshold)})")
    ax.axhline(threshold, color="k", ls="--", lw=1,
               label=f"threshold {threshold:.0%}")
    ax.set(xticks=positions, xticklabels=[str(i + 1) for i in range(k)],
           xlabel="component (sorted by weight)", ylabel="posterior mean weight",
           title=title)
    ax.legend(fontsize=8)
    rank = np.empty(k, int)
    rank[order] = np.arange(k)  # a point's colour: its component's rank
    scatter.scatter(z[:, 0], z[:, 1], c=rank[labels], cmap="tab20", s=5,
                    vmin=0, vmax=19)
    scatter.set(title="PCA features, coloured by component",
                xlabel="principal axis 1", ylabel="principal axis 2")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-components", type=int, default=15)
    parser.add_argument("--pca-dims", type=int, default=2)
    parser.add_argument("--covariance-type", default="full")
    parser.add_argument("--weight-concentration-prior", type=float, default=1e-3)
    parser.add_argument("--max-iter", type=int, default=1000)
    parser.add_argument("--n-init", type=int, default=1)
    parser.add_argument("--threshold", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="at most 300 iterations: checks it runs")
    parser.add_argument("--output-dir", type=Path, default=Path("examples/output"))
    args = parser.parse_args()
    if args.smoke:
        args.max_iter = 300

    x, y = keras_gmm.datasets.load_digits("all")
    z, explained = pca_features(x.astype(np.float64), args.pca_dims)
    print(f"digits: {len(z)} images, PCA to {args.pca_dims} dims "
          f"({explained:.0%} of the variance); 10 digit classes")
    settings = dict(covariance_type=args.covariance_type, max_iter=args.max_iter,
                    n_init=args.n_init,
                    weight_concentration_prior_type="dirichlet_process",
                    weight_concentration_prior=args.weight_concentration_prior)

    start = time.perf_counter()
    bgm = keras_gmm.BayesianGaussianMixtureEM(
        args.max_components, seed=args.seed, dtype="float64", init_params="kmeans",
        **settings)
    with warnings.catch_warnings():  # the smoke run stops at max_iter
        warnings.simplefilter("ignore", ConvergenceWarning)
        bgm.fit(z, verbose=0)
        seconds = time.perf_counter() - start
        reference = BayesianGaussianMixture(
            n_components=args.max_components, random_state=args.seed,
            **settings).fit(z)

    ours, theirs = bgm.weights_, reference.weights_
    k_ours = effective_k(ours, args.threshold)
    k_theirs = effective_k(theirs, args.threshold)
    print(f"upper bound K = {args.max_components}, covariance_type="
          f"{args.covariance_type!r}, weight_concentration_prior="
          f"{args.weight_concentration_prior:g} (Dirichlet process)")
    print(f"keras_gmm: {bgm.n_iter_} iterations, converged={bgm.converged_}, "
          f"lower bound {bgm.lower_bound_:.2f}, {seconds:.1f} s (compile included)")
    print("weights, sorted:")
    print("  keras_gmm    " + " ".join(f"{w:.3f}" for w in np.sort(ours)[::-1]))
    print("  scikit-learn " + " ".join(f"{w:.3f}" for w in np.sort(theirs)[::-1]))
    print(f"effective K (weight > {args.threshold:.0%}): keras_gmm {k_ours}, "
          f"scikit-learn {k_theirs}")
    labels = bgm.predict(z)
    print(f"clusters against the digit labels: accuracy "
          f"{clustering_accuracy(y, labels):.3f}, NMI "
          f"{normalized_mutual_info(y, labels):.3f}")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / "bayesian_k_selection.png"
    plot_weights(ours, theirs, args.threshold, z, labels, path,
                 f"digits (PCA {args.pca_dims}): effective K = {k_ours} of "
                 f"{args.max_components}")
    print(f"effective K: {k_ours}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
