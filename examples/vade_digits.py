"""Deep clustering and generation of the 8x8 digits with VaDE (GMMPriorSampling).

A VAE whose latent prior is a learnable 10-component Gaussian mixture
(:class:`keras_gmm.GMMPriorSampling`) clusters scikit-learn's digits without
labels and generates new digits from each cluster. By default the trained
zoo model ``vade_digits`` is loaded (checksum verified); ``--train`` trains
it from scratch with the zoo recipe (pre-trained denoising autoencoder,
prior initialised by ``GaussianMixtureEM``, then the ELBO; three restarts,
the one with the best training ELBO kept; about two minutes).

Run from the repository root (with keras_gmm installed, ``pip install -e .``,
or with ``PYTHONPATH=.``)::

    python examples/vade_digits.py           # the zoo model, a few seconds
    python examples/vade_digits.py --train   # train it from scratch (~2 min)
    python examples/vade_digits.py --smoke   # a tiny training, to check it runs

It prints the held-out clustering accuracy (Hungarian) and NMI of VaDE next
to k-means on the raw pixels and Gaussian mixtures on PCA features (fitted
here with scikit-learn on the same split), and writes two PNGs into
``--output-dir``: ``vade_digits_samples.png`` (digits generated from each
mixture component, one row per cluster: ``prior.sample_prior(n,
component=k)`` through the decoder) and ``vade_digits_latent.png`` (the 2-D
PCA projection of the held-out latent means, coloured by cluster, with the
component means).
"""

import argparse
import time
from pathlib import Path

import keras
import matplotlib
import numpy as np

import keras_gmm
from keras_gmm import datasets
from keras_gmm.metrics import clustering_scores
from keras_gmm.zoo import vade_digits

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def baselines(x_train, x_test, y_test, seed, n_init=10):
    """``{name: scores}`` of k-means and Gaussian mixtures (scikit-learn)."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    out = {}
    km = KMeans(10, n_init=n_init, random_state=seed).fit(x_train)
    out["k-means, raw pixels"] = clustering_scores(y_test, km.predict(x_test))
    for dims, cov, reg in ((vade_digits.LATENT_DIM, "diag", 1e-6), (30, "full", 3e-2)):
        pca = PCA(dims, random_state=seed).fit(x_train)
        gm = GaussianMixture(10, covariance_type=cov, reg_covar=reg, n_init=n_init,
                             init_params="kmeans", random_state=seed)
        gm.fit(pca.transform(x_train))
        out[f"GMM ({cov}), PCA {dims}"] = clustering_scores(
            y_test, gm.predict(pca.transform(x_test))
        )
    return out


def plot_samples(model, path, per_cluster, seed):
    """One row per mixture component: decoded draws from that component."""
    vade = model.get_layer("vade")
    prior, decoder = vade.get_layer("prior"), vade.get_layer("decoder")
    k = prior.num_components
    fig, axes = plt.subplots(k, per_cluster, figsize=(per_cluster * 0.7, k * 0.75))
    for c in range(k):
        z = prior.sample_prior(per_cluster, component=c, seed=seed + c)
        images = np.asarray(decoder(z, training=False)).reshape(-1, 8, 8)
        for j in range(per_cluster):
            ax = axes[c, j]
            ax.imshow(images[j], cmap="gray_r", vmin=0.0, vmax=1.0)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[c, 0].set_ylabel(str(c), rotation=0, labelpad=10, fontsize=9)
    fig.suptitle(f"VaDE: {per_cluster} digits decoded from draws of each mixture "
                 "component (one row per component)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_latent(model, x, labels, path):
    """2-D PCA projection of the latent means, coloured by cluster."""
    vade = model.get_layer("vade")
    z_mean = keras.Model(vade.inputs[0], vade.get_layer("z_mean").output).predict(
        x, verbose=0)
    centre = z_mean.mean(axis=0)
    _, _, vt = np.linalg.svd(z_mean - centre, full_matrices=False)
    axes2 = vt[:2].T
    points = (z_mean - centre) @ axes2
    means = (np.asarray(vade.get_layer("prior").means) - centre) @ axes2
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10",
                         vmin=-0.5, vmax=9.5, s=10, alpha=0.8)
    ax.scatter(means[:, 0], means[:, 1], c=np.arange(len(means)), cmap="tab10",
               vmin=-0.5, vmax=9.5, marker="X", s=140, edgecolors="black")
    fig.colorbar(scatter, ax=ax, ticks=range(10), label="cluster")
    ax.set(title="Held-out latent means (PCA to 2-D); X: the component means",
           xlabel="PC 1 of the latent means", ylabel="PC 2")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", action="store_true",
                        help="train from scratch instead of loading the zoo model")
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny training (a few epochs), to check it runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-cluster", type=int, default=10,
                        help="generated digits per cluster (columns)")
    parser.add_argument("--output-dir", type=Path, default=Path("examples/output"))
    args = parser.parse_args()

    x_train, _ = datasets.load_digits("train")
    x_test, y_test = datasets.load_digits("test")
    start = time.perf_counter()
    if args.smoke or args.train:
        epochs = 2 if args.smoke else vade_digits.DEFAULTS["epochs"]
        pretrain = 3 if args.smoke else vade_digits.DEFAULTS["pretrain_epochs"]
        restarts = 1 if args.smoke else vade_digits.DEFAULTS["restarts"]
        model, _ = vade_digits.fit(args.seed, epochs, pretrain, restarts=restarts)
        source = (f"trained here ({pretrain} + {epochs} epochs, best training "
                  f"ELBO of {restarts} restart(s))")
    else:
        model = keras_gmm.zoo.load("vade_digits")
        source = "zoo model vade_digits"
    seconds = time.perf_counter() - start
    labels = model.predict(x_test, verbose=0).argmax(-1)
    ours = clustering_scores(y_test, labels)
    print(f"VaDE: {source}, {seconds:.1f} s")
    print(f"held-out split: {len(x_test)} images")
    print(f"{'method':<24} {'accuracy':>9} {'NMI':>7}")
    n_init = 1 if args.smoke else 10
    rows = {"VaDE (GMMPriorSampling)": ours,
            **baselines(x_train, x_test, y_test, args.seed, n_init)}
    for name, s in rows.items():
        print(f"{name:<24} {s['clustering_accuracy']:>9.4f} {s['nmi']:>7.4f}")
    print(f"largest cluster: {ours['largest_cluster_fraction']:.3f} of the images "
          "(0.1 when balanced; 1.0 = collapsed)")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    samples = args.output_dir / "vade_digits_samples.png"
    plot_samples(model, samples, args.per_cluster, args.seed)
    print(f"wrote {samples}")
    latent = args.output_dir / "vade_digits_latent.png"
    plot_latent(model, x_test, labels, latent)
    print(f"wrote {latent}")


if __name__ == "__main__":
    main()
