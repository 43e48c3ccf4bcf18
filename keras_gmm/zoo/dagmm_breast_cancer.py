"""Zoo recipe ``dagmm_breast_cancer``: DAGMM-style anomaly detection, trained
on benign breast tumours only (:func:`keras_gmm.datasets.load_breast_cancer`).

``x [n, 30] -> autoencoder Dense(8, elu) -> code (4) -> Dense(8, elu) ->
x_hat``; ``z = [code, log RMS(x - x_hat)]`` ``-> Dense(10, tanh) ->
Dropout(0.5) -> Dense(2, softmax)`` memberships ``gamma``;
:class:`keras_gmm.GMMEnergy` ``([z, gamma]) ->`` energy ``[n]`` (higher = more
anomalous). The best of 3 seeds on "val" is kept; its mixture is refitted on
"train" and its ``predict`` threshold set from "val". The card (settings
searched, baselines, metrics): ``saved_models/dagmm_breast_cancer/metadata.json``.
"""

import time

import keras
import numpy as np

from keras_gmm import datasets, metrics
from keras_gmm._validation import check_positive_int, check_seed
from keras_gmm.layers import GMMEnergy
from keras_gmm.zoo import _recipe

NAME = "dagmm_breast_cancer"
HIDDEN_UNITS = (8,)
CODE_DIM = 4
LEARNING_RATE = 1e-3
BATCH_SIZE = 32
DEFAULTS = {"seed": 0, "epochs": 200, "candidates": 3}
OURS_KEY = "keras_gmm DAGMM (this recipe, one training per seed)"
CONTROL_KEY = (
    "untrained control (same architecture, random weights, mixture fitted on train)"
)


def build_dagmm(num_features=30, seed=0):
    """A compiled DAGMM ``x [n, num_features] -> energy [n]`` whose loss is
    the sum of its layers' terms (reconstruction MSE, mean energy, covariance
    penalty): it trains with ``model.fit(x)``, no targets."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((num_features,), name="x")
    h = x
    for i, units in enumerate(HIDDEN_UNITS):
        h = keras.layers.Dense(units, activation="elu", name=f"encoder_{i}")(h)
    code = keras.layers.Dense(CODE_DIM, name="code")(h)
    h = code
    for i, units in enumerate(reversed(HIDDEN_UNITS)):
        h = keras.layers.Dense(units, activation="elu", name=f"decoder_{i}")(h)
    x_hat = keras.layers.Dense(num_features, name="reconstruction")(h)
    # The MSE, as the batch mean of an activity regularizer on the residual.
    residual = keras.layers.ActivityRegularization(
        l2=1.0 / num_features, name="reconstruction_loss")(keras.ops.subtract(x, x_hat))
    log_error = 0.5 * keras.ops.log(  # + 1e-6: no -inf for a perfect reconstruction
        keras.ops.mean(keras.ops.square(residual), axis=-1, keepdims=True) + 1e-6)
    z = keras.layers.Concatenate(name="z")([code, log_error])
    h = keras.layers.Dense(10, activation="tanh", name="estimation")(z)
    h = keras.layers.Dropout(0.5, name="estimation_dropout")(h)
    gamma = keras.layers.Dense(2, activation="softmax", name="gamma")(h)
    energy = GMMEnergy(covariance_type="full", reg_covar=1e-3, energy_weight=0.1,
                       cov_penalty_weight=0.005, name="energy")([z, gamma])
    model = keras.Model(x, energy, name=NAME)
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
    return model


def build(seed=DEFAULTS["seed"]):
    """The untrained zoo model (compiled; trained by ``model.fit(x)``)."""
    return build_dagmm(seed=seed)


def train_dagmm(x_train, epochs, seed=0, verbose=0, batch_size=BATCH_SIZE):
    """Build and train a DAGMM on normal data ``x_train``, then fit its
    inference mixture by one M-step over ``x_train`` (DAGMM's test-time
    parameters). ``epochs=0``: the untrained control. ``(model, history)``."""
    model = build_dagmm(num_features=x_train.shape[1], seed=seed)
    history = None
    if epochs:
        history = model.fit(x_train, epochs=epochs, batch_size=batch_size, shuffle=True,
                            verbose=verbose)
    layer = _recipe.find_layer(model, GMMEnergy)
    z, gamma = _recipe.predict(keras.Model(model.input, layer.input), x_train)
    layer.fit_mixture(z, gamma)
    return model, history


def anomaly_scores(model, x):
    """The model's energies of ``x`` (higher = more anomalous), float64."""
    return _recipe.predict(model, x).astype(np.float64)


def scores_of(y_test, test_scores, threshold):
    """``{"auroc", "f1_at_contamination", "f1_at_threshold"}`` of scores."""
    cut = metrics.contamination_threshold(test_scores, float(np.mean(y_test)))
    return {"auroc": metrics.roc_auc_score(y_test, test_scores),
            "f1_at_contamination": metrics.f1_score(y_test, test_scores > cut),
            "f1_at_threshold": metrics.f1_score(y_test, test_scores > threshold)}


def validation_threshold(val_scores, y_val):
    """The recorded threshold: the "val" split's contamination threshold."""
    return metrics.contamination_threshold(val_scores, float(np.mean(y_val)))


def evaluate(model):
    """The metrics on "test", with the model's recorded ``predict`` threshold."""
    x_test, y_test = datasets.load_breast_cancer("test")
    threshold = float(_recipe.find_layer(model, GMMEnergy).threshold.numpy())
    return scores_of(y_test, anomaly_scores(model, x_test), threshold)


def example_inputs(n=8):
    """``n`` "test" rows, benign and malignant alternating, [n, 30]."""
    x_test, y_test = datasets.load_breast_cancer("test")
    half = (n + 1) // 2
    rows = np.stack([np.flatnonzero(y_test == 0)[:half],
                     np.flatnonzero(y_test == 1)[:half]], axis=1)
    return x_test[rows.reshape(-1)[:n]]


def sklearn_baselines(x_train, x_val, y_val, x_test, y_test, seed):
    """``{name: test scores}`` of scikit-learn's detectors on the same splits,
    each with its own "val" contamination threshold."""
    from sklearn.ensemble import IsolationForest
    from sklearn.mixture import GaussianMixture
    from sklearn.svm import OneClassSVM
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    detectors = {
        f"sklearn GaussianMixture({k}, 'full').score_samples":
            GaussianMixture(k, covariance_type="full", random_state=seed)
        for k in (1, 2)}
    detectors["sklearn IsolationForest()"] = IsolationForest(random_state=seed)
    detectors["sklearn OneClassSVM()"] = OneClassSVM()
    out = {}
    with threadpool_limits(limits=1):
        for name, detector in detectors.items():
            detector.fit(x_train.astype(np.float64))
            # score_samples: higher = more normal.
            val = -detector.score_samples(x_val.astype(np.float64))
            test = -detector.score_samples(x_test.astype(np.float64))
            out[name] = scores_of(y_test, test, validation_threshold(val, y_val))
    return out


def _fit_and_score(x_train, x_val, y_val, x_test, y_test, epochs, seed, verbose):
    """``(model, history, test scores, validation AUROC)`` of one DAGMM
    (``epochs=0``: the untrained control), its threshold set from "val"."""
    model, history = train_dagmm(x_train, epochs, seed=seed, verbose=verbose)
    val = anomaly_scores(model, x_val)
    threshold = validation_threshold(val, y_val)
    _recipe.find_layer(model, GMMEnergy).set_threshold(threshold)
    test = anomaly_scores(model, x_test)
    return (model, history, scores_of(y_test, test, threshold),
            metrics.roc_auc_score(y_val, val))


def train(seed=DEFAULTS["seed"], epochs=DEFAULTS["epochs"],
          candidates=DEFAULTS["candidates"], verbose=0, baselines=True):
    """Train ``candidates`` DAGMMs (seeds ``seed, seed + 1, ...``) on "train"
    and keep the best validation AUROC; with ``baselines``, also score the
    untrained control and scikit-learn's detectors on the same seeds (under a
    minute on 2 CPU cores). Returns ``(model, record)``."""
    seed = check_seed(seed, allow_none=False)
    epochs = check_positive_int(epochs, "epochs")
    candidates = check_positive_int(candidates, "candidates")
    x_train, _ = datasets.load_breast_cancer("train")
    splits = (x_train, *datasets.load_breast_cancer("val"),
              *datasets.load_breast_cancer("test"))
    start = time.perf_counter()
    seeds = [seed + i for i in range(candidates)]
    ours, val_auroc, best = {}, {}, None
    for i, candidate in enumerate(seeds, 1):
        _recipe.say(verbose, NAME, f"candidate {i}/{candidates}: training a DAGMM on "
                    f"the {len(x_train)} benign train rows, seed {candidate}, "
                    f"{_recipe.count(epochs, 'epoch')}")
        model, history, ours[candidate], val_auroc[candidate] = _fit_and_score(
            *splits, epochs, candidate, verbose)
        if best is None or val_auroc[candidate] > val_auroc[best[0]]:
            best = (candidate, model, history)
        _recipe.say(verbose, NAME, f"candidate {i}/{candidates}: validation AUROC "
                    f"{val_auroc[candidate]:.4f}")
    selected, model, history = best
    seconds = time.perf_counter() - start
    _recipe.say(verbose, NAME, f"kept seed {selected} (the best validation AUROC)")
    measured = evaluate(model)
    if any(abs(measured[key] - value) > 1e-9 for key, value in ours[selected].items()):
        raise RuntimeError("evaluate() disagrees with the training's test scores.")
    training = {
        "seed": seed,
        "epochs": epochs,
        "batch_size": BATCH_SIZE,
        "optimizer": {"name": "Adam", "learning_rate": LEARNING_RATE},
        "final_loss": float(history.history["loss"][-1]),
        "threshold": float(_recipe.find_layer(model, GMMEnergy).threshold.numpy()),
        "candidates": candidates,
        "selected_seed": selected,
        "validation_auroc_per_seed": {str(k): v for k, v in val_auroc.items()},
        "seconds": round(seconds, 1),
    }
    record_metrics = dict(measured)
    if baselines:
        _recipe.say(verbose, NAME, f"baselines on the same {len(seeds)} seeds: the "
                    "untrained control and scikit-learn's detectors")
        control, sklearn = {}, {}
        for other in seeds:
            control[other] = _fit_and_score(*splits, 0, other, 0)[2]
            for name, scores in sklearn_baselines(*splits, other).items():
                sklearn.setdefault(name, {})[other] = scores
        keys = tuple(measured)
        comparison = {"split": "test", "seeds": seeds,
                      OURS_KEY: _recipe.seed_summary(ours, keys),
                      CONTROL_KEY: _recipe.seed_summary(control, keys),
                      **{name: _recipe.seed_summary(runs, keys)
                         for name, runs in sklearn.items()}}
        best_name = max(sklearn, key=lambda name: sklearn[name][selected]["auroc"])
        record_metrics["auroc"] = {"value": measured["auroc"], "reference": {
            "value": sklearn[best_name][selected]["auroc"],
            "source": f"{best_name}, random_state={selected}, fitted on the "
            "train split",
        }}
        training["comparison"] = comparison
        training["seconds_with_baselines"] = round(time.perf_counter() - start, 1)
    return model, {"metrics": record_metrics, "training": training}
