"""Cluster a classifier's embeddings with GaussianMixtureEM, inside one model.

A small Keras classifier is trained on the 8x8 digits
(:func:`keras_gmm.datasets.load_digits`); :class:`keras_gmm.GaussianMixtureEM`
is fitted by EM, without labels, on its penultimate-layer embeddings of the
training images. Both heads then live in one functional model, ``image [n,
64] -> {"class_probabilities": [n, 10], "responsibilities": [n, K]}``, which
is exported as one SavedModel (:func:`keras_gmm.export_saved_model`) and
reloaded with plain ``tf.saved_model.load``: a TF Serving client gets the
class and the cluster memberships from one request.

Run from the repository root (with keras_gmm installed, ``pip install -e .``,
or with ``PYTHONPATH=.``)::

    python examples/gmm_on_embeddings.py          # 40 epochs, under a minute
    python examples/gmm_on_embeddings.py --smoke  # a few epochs

It prints the classifier's test accuracy, how well the unsupervised clusters
of the embeddings match the digits (Hungarian accuracy and NMI, next to the
same mixture fitted on the raw pixels), the largest difference between the
reloaded SavedModel's outputs and Keras', and writes
``<output-dir>/gmm_on_embeddings.png`` (the test embeddings projected on
their two principal axes, coloured by cluster, and the cluster/digit
contingency table).
"""

import argparse
import tempfile
from pathlib import Path

import keras
import matplotlib
import numpy as np
import tensorflow as tf

import keras_gmm
from keras_gmm import datasets
from keras_gmm.metrics import clustering_accuracy, normalized_mutual_info

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

NUM_CLUSTERS = 10
EMBEDDING_DIM = 16


def build_classifier(seed):
    keras.utils.set_random_seed(seed)
    image = keras.Input((64,), name="image")
    h = keras.layers.Dense(128, activation="relu")(image)
    embedding = keras.layers.Dense(EMBEDDING_DIM, name="embedding")(h)
    probabilities = keras.layers.Dense(
        10, activation="softmax", name="class_probabilities"
    )(embedding)
    model = keras.Model(image, probabilities, name="classifier")
    model.compile(keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def fit_mixture(features, n_init, seed):
    gmm = keras_gmm.GaussianMixtureEM(
        NUM_CLUSTERS, covariance_type="full", reg_covar=1e-3, n_init=n_init,
        seed=seed, name="clusters",
    )
    gmm.fit(features.astype("float32"), verbose=0)
    return gmm


def plot(embeddings, clusters, digits, path):
    centred = embeddings - embeddings.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ vt[:2].T
    table = np.zeros((NUM_CLUSTERS, 10), int)
    np.add.at(table, (clusters, digits), 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    scatter = ax1.scatter(projected[:, 0], projected[:, 1], c=clusters, cmap="tab10",
                          s=10)
    ax1.legend(*scatter.legend_elements(), title="cluster", fontsize=8, loc="best")
    ax1.set(title="Test embeddings (2 principal axes), coloured by GMM cluster",
            xlabel="PC 1", ylabel="PC 2")
    ax2.imshow(table, cmap="Blues")
    for (i, j), count in np.ndenumerate(table):
        if count:  # white on the dark cells
            ax2.text(j, i, count, ha="center", va="center", fontsize=8,
                     color="white" if count > table.max() / 2 else "black")
    ax2.set(title="Test images: cluster against digit (counts)", xlabel="digit",
            ylabel="cluster", xticks=range(10), yticks=range(NUM_CLUSTERS))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--smoke", action="store_true", help="a few epochs, n_init=1")
    parser.add_argument("--output-dir", type=Path, default=Path("examples/output"))
    args = parser.parse_args()
    epochs, n_init = (5, 1) if args.smoke else (args.epochs, 5)

    x_train, y_train = datasets.load_digits("train")
    x_test, y_test = datasets.load_digits("test")
    classifier = build_classifier(seed=0)
    classifier.fit(x_train, y_train, batch_size=64, epochs=epochs, verbose=0)
    _, accuracy = classifier.evaluate(x_test, y_test, verbose=0)
    print(f"classifier test accuracy: {accuracy:.4f}")

    embed = keras.Model(classifier.inputs, classifier.get_layer("embedding").output)
    gmm = fit_mixture(embed.predict(x_train, verbose=0), n_init, seed=0)
    # One model: the classifier's head and the mixture on its embeddings.
    embedding = classifier.get_layer("embedding").output
    combined = keras.Model(
        classifier.inputs,
        {"class_probabilities": classifier.output, "responsibilities": gmm(embedding)},
        name="classifier_with_clusters",
    )
    outputs = combined.predict(x_test, verbose=0)
    clusters = outputs["responsibilities"].argmax(axis=1)
    raw = fit_mixture(x_train, n_init, seed=0).predict(x_test)
    print(
        f"clusters of the embeddings vs digits (test): accuracy "
        f"{clustering_accuracy(y_test, clusters):.4f}, NMI "
        f"{normalized_mutual_info(y_test, clusters):.4f}; the same mixture on the "
        f"raw pixels: accuracy {clustering_accuracy(y_test, raw):.4f}, NMI "
        f"{normalized_mutual_info(y_test, raw):.4f}"
    )

    with tempfile.TemporaryDirectory() as export_dir:
        path = keras_gmm.export_saved_model(combined, export_dir, version=1)
        served = tf.saved_model.load(path).signatures["serving_default"]
        reloaded = served(image=tf.constant(x_test))
        difference = max(
            float(np.max(np.abs(reloaded[key].numpy() - outputs[key])))
            for key in ("class_probabilities", "responsibilities")
        )
        print(f"SavedModel outputs: {sorted(reloaded)}; largest difference from "
              f"Keras: {difference:.2e}")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    png = args.output_dir / "gmm_on_embeddings.png"
    plot(embed.predict(x_test, verbose=0), clusters, y_test, png)
    print(f"wrote {png}")


if __name__ == "__main__":
    main()
