"""Zoo recipe ``em_digits``: unsupervised clustering of the 8x8 digits by EM.

``x [n, 64] -> Dense(30)`` holding the PCA of the "train" split (fixed) ``->``
:class:`keras_gmm.GaussianMixtureEM` (10 full components, fitted by EM
without labels) ``->`` responsibilities ``[n, 10]``. The train labels only
name the components after the digits (a relabelling). The card (settings
searched, baselines, metrics): ``saved_models/em_digits/metadata.json``.
"""

import time

import keras
import numpy as np

from keras_gmm import datasets
from keras_gmm._validation import check_positive_int, check_seed
from keras_gmm.layers import GaussianMixtureEM
from keras_gmm.zoo import _recipe

NAME = "em_digits"
NUM_COMPONENTS = 10
PCA_DIMS = 30
COVARIANCE_TYPE = "full"
REG_COVAR = 3e-2
INIT_PARAMS = "kmeans"
TOL = 1e-3
NUM_SEEDS = 3  # seeds of the spread recorded in the metadata
# epochs: the most EM iterations per initialisation (EM stops after 10-40).
DEFAULTS = {"seed": 0, "epochs": 300, "n_init": 20}
OURS_KEY = "keras_gmm.GaussianMixtureEM (this recipe)"
SKLEARN_KEY = (
    "sklearn.mixture.GaussianMixture(10, covariance_type='full', reg_covar=0.03, "
    "n_init={n_init}, init_params='kmeans') on the same PCA features"
)


def fit_pca(x, dims=PCA_DIMS):
    """``(kernel [64, dims], bias [dims])`` of the PCA of ``x`` (float64 SVD),
    ``x @ kernel + bias = (x - mean) @ axes``, each axis's largest entry
    positive (independent of the SVD's sign choice)."""
    x = np.asarray(x, np.float64)
    mean = x.mean(axis=0)
    components = np.linalg.svd(x - mean, full_matrices=False)[2][:dims]
    signs = np.sign(components[np.arange(dims), np.argmax(np.abs(components), axis=1)])
    kernel = (components * signs[:, None]).T
    return kernel.astype(np.float32), (-mean @ kernel).astype(np.float32)


def build(seed=DEFAULTS["seed"], n_init=DEFAULTS["n_init"],
          max_iter=DEFAULTS["epochs"]):
    """The model with its PCA layer fitted on the "train" split and its
    mixture unfitted (EM has no optimizer or loss: not compiled)."""
    x_train, _ = datasets.load_digits("train")
    inputs = keras.Input((x_train.shape[1],), name="x")
    pca = keras.layers.Dense(PCA_DIMS, trainable=False, name="pca")
    features = pca(inputs)
    pca.set_weights(list(fit_pca(x_train)))
    gmm = GaussianMixtureEM(
        NUM_COMPONENTS, covariance_type=COVARIANCE_TYPE, tol=TOL, reg_covar=REG_COVAR,
        max_iter=max_iter, n_init=n_init, init_params=INIT_PARAMS, seed=seed,
        name="gmm")
    return keras.Model(inputs, gmm(features), name="em_digits")


def features_of(model, x):
    """The model's PCA features of ``x`` (the input of its mixture layer)."""
    gmm = _recipe.find_layer(model, GaussianMixtureEM)
    return _recipe.predict(keras.Model(model.input, gmm.input), x)


def evaluate(model):
    """``{"clustering_accuracy", "nmi", "digit_accuracy"}`` on "test"."""
    x_test, y_test = datasets.load_digits("test")
    scores = _recipe.cluster_scores(y_test, _recipe.predict(model, x_test).argmax(-1))
    return {key: scores[key]
            for key in ("clustering_accuracy", "nmi", "digit_accuracy")}


def example_inputs(n=8):
    """``n`` held-out inputs (the first rows of the "test" split), [n, 64]."""
    return datasets.load_digits("test")[0][:n]


def train(seed=DEFAULTS["seed"], epochs=DEFAULTS["epochs"], n_init=DEFAULTS["n_init"],
          verbose=0, baselines=True):
    """Fit the mixture by EM on the "train" split (no labels), name the
    components after the digits (train labels, Hungarian) and, with
    ``baselines``, record the spread over ``NUM_SEEDS`` seeds and
    scikit-learn's KMeans and GaussianMixture (10-30 s on 2 CPU cores).
    ``epochs``: the most EM iterations per initialisation. Returns
    ``(model, record)``."""
    seed = check_seed(seed, allow_none=False)
    epochs = check_positive_int(epochs, "epochs")
    n_init = check_positive_int(n_init, "n_init")
    x_train, y_train = datasets.load_digits("train")
    x_test, y_test = datasets.load_digits("test")
    start = time.perf_counter()
    _recipe.say(verbose, NAME, f"PCA({PCA_DIMS}) of the {len(x_train)} train images, "
                f"then EM: {NUM_COMPONENTS} {COVARIANCE_TYPE} components, {n_init} "
                f"k-means initialisations of at most {epochs} iterations, seed {seed}")
    model = build(seed=seed, n_init=n_init, max_iter=epochs)
    gmm = _recipe.find_layer(model, GaussianMixtureEM)
    z_train = features_of(model, x_train)
    history = gmm.fit(z_train, verbose=int(bool(verbose)))
    order = _recipe.name_clusters(gmm, gmm.predict(z_train), y_train)
    seconds = time.perf_counter() - start
    measured = evaluate(model)
    _recipe.say(verbose, NAME, f"EM {'converged' if gmm.converged_ else 'stopped'} "
                f"after {gmm.n_iter_} iterations ({seconds:.0f} s): test clustering "
                f"accuracy {measured['clustering_accuracy']:.4f}")
    log_resp = np.log(np.maximum(_recipe.predict(model, x_test), 1e-38))
    top2 = np.sort(log_resp, axis=-1)[:, -2:]
    training = {
        "seed": seed,
        "epochs": epochs,
        "batch_size": int(len(x_train)),
        "optimizer": {
            "name": "EM (closed-form M-step; no gradient optimizer, not compiled)",
            "n_init": n_init, "init_params": INIT_PARAMS, "tol": TOL,
            "reg_covar": REG_COVAR, "covariance_type": COVARIANCE_TYPE},
        "pca": {"dims": PCA_DIMS, "fitted_on": "train", "whiten": False},
        "iterations": int(gmm.n_iter_),
        "converged": bool(gmm.converged_),
        "final_lower_bound": float(history.history["lower_bound"][-1]),
        "component_order": [int(i) for i in order],
        "train_scores": _recipe.cluster_scores(y_train, gmm.predict(z_train)),
        "min_test_log_responsibility_margin": float(np.min(top2[:, 1] - top2[:, 0])),
        "seconds": round(seconds, 1),
    }
    metrics = dict(measured)
    if baselines:
        z_test = features_of(model, x_test)
        seeds = [seed + i for i in range(NUM_SEEDS)]
        ours = {seed: {**measured, "lower_bound": float(gmm.lower_bound_)}}
        for i, other in enumerate(seeds[1:], 2):
            _recipe.say(verbose, NAME, f"seed {other} ({i}/{len(seeds)}), for the "
                        "recorded spread: EM again")
            again = _recipe.find_layer(build(other, n_init, epochs), GaussianMixtureEM)
            again.fit(z_train, verbose=0)
            ours[other] = {**_recipe.cluster_scores(y_test, again.predict(z_test)),
                           "lower_bound": float(again.lower_bound_)}
        settings = {"covariance_type": COVARIANCE_TYPE, "tol": TOL,
                    "reg_covar": REG_COVAR, "max_iter": epochs, "n_init": n_init,
                    "init_params": INIT_PARAMS}
        features = (z_train.astype(np.float64), z_test.astype(np.float64))
        _recipe.say(verbose, NAME, "baselines on the same seeds: scikit-learn's "
                    "KMeans on the pixels, GaussianMixture on the PCA features")
        others = _recipe.digits_baselines(
            x_train, x_test, y_test, seeds,
            {SKLEARN_KEY.format(n_init=n_init): (lambda _: features, settings)})
        keys = ("clustering_accuracy", "nmi", "lower_bound")
        training["comparison"] = {
            "split": "test", "seeds": seeds, OURS_KEY: _recipe.seed_summary(ours, keys),
            **{key: _recipe.seed_summary(runs, keys) for key, runs in others.items()}}
        references = _recipe.kmeans_references(training["comparison"], seed)
        for key, reference in references.items():
            metrics[key] = {"value": measured[key], **reference}
        training["seconds_with_baselines"] = round(time.perf_counter() - start, 1)
    return model, {"metrics": metrics, "training": training}
