"""Zoo recipe ``dagmm_mnist``: one-class DAGMM-style anomaly detection on
MNIST (:func:`keras_gmm.datasets.load_mnist`), one detector per digit.

Detector ``d`` (trained on the "train" images of digit ``d`` only): ``x [n,
784] -> Dense(64) code`` (initialised with the whitened PCA of its training
images) ``-> Dense(784) x_hat``; ``z = [code, log RMS(x - x_hat)]`` ``->
Dense(10, tanh) -> Dropout(0.5) -> Dense(4, softmax)`` memberships ``gamma``;
:class:`keras_gmm.GMMEnergy` ``([z, gamma]) ->`` energy ``[n]``. The zoo model
holds the ten detectors side by side: ``x [n, 784] -> energies [n, 10]``,
column ``d`` the energy under detector ``d`` (higher = less like digit ``d``).
The card (settings searched on "val", per-digit table, baselines, controls):
``saved_models/dagmm_mnist/metadata.json``.
"""

import time

import keras
import numpy as np

from keras_gmm import datasets, metrics
from keras_gmm._validation import check_bool, check_positive_int, check_seed
from keras_gmm.layers import GMMEnergy
from keras_gmm.zoo import _recipe

NAME = "dagmm_mnist"
NUM_FEATURES = 784
DIGITS = tuple(range(10))
CODE_DIM = 64
NUM_COMPONENTS = 4
ENERGY_WEIGHT = 10.0
LEARNING_RATE = 1e-4
BATCH_SIZE = 64
DEFAULTS = {"seed": 0, "epochs": 10, "seeds": 3}
OURS_KEY = "keras_gmm DAGMM (this recipe: PCA-initialised, trained)"
PCA_CONTROL_KEY = "PCA-initialised control (the same detectors, no gradient training)"
CONTROL_KEY = "untrained control (same architecture, random weights, no training)"
TASK_KEYS = tuple(f"auroc_digit_{d}" for d in DIGITS)
METRIC_KEYS = ("mean_auroc", *TASK_KEYS)


def whitened_pca(x_normal, code_dim=CODE_DIM):
    """``(mean [F], components [code_dim, F], scales [code_dim])``: the
    leading principal axes of ``x_normal`` and their standard deviations."""
    x_normal = np.asarray(x_normal, np.float64)
    mean = x_normal.mean(axis=0)
    _, singular, vt = np.linalg.svd(x_normal - mean, full_matrices=False)
    return mean, vt[:code_dim], singular[:code_dim] / np.sqrt(len(x_normal))


def build_detector(x_normal=None, digit=0, seed=0):
    """A compiled DAGMM ``x [n, 784] -> energy [n]`` named ``detector_<digit>``
    (its loss: the layers' terms, reconstruction MSE, energy, covariance
    penalty; trained by ``model.fit(x)``). With ``x_normal`` its encoder and
    decoder start as the whitened PCA of ``x_normal``; without, random."""
    keras.utils.set_random_seed(seed + 1000 * digit)
    x = keras.Input((NUM_FEATURES,), name="x")
    encoder = keras.layers.Dense(CODE_DIM, name="code")
    decoder = keras.layers.Dense(NUM_FEATURES, name="reconstruction")
    code = encoder(x)
    x_hat = decoder(code)
    # The MSE, as the batch mean of an activity regularizer on the residual.
    residual = keras.layers.ActivityRegularization(
        l2=1.0 / NUM_FEATURES, name="reconstruction_loss")(keras.ops.subtract(x, x_hat))
    log_error = 0.5 * keras.ops.log(
        keras.ops.mean(keras.ops.square(residual), axis=-1, keepdims=True) + 1e-6)
    z = keras.layers.Concatenate(name="z")([code, log_error])
    h = keras.layers.Dense(10, activation="tanh", name="estimation")(z)
    h = keras.layers.Dropout(0.5, name="estimation_dropout")(h)
    gamma = keras.layers.Dense(NUM_COMPONENTS, activation="softmax", name="gamma")(h)
    energy = GMMEnergy(covariance_type="full", reg_covar=1e-3,
                       energy_weight=ENERGY_WEIGHT, cov_penalty_weight=0.005,
                       name="energy")([z, gamma])
    model = keras.Model(x, energy, name=f"detector_{digit}")
    if x_normal is not None:
        mean, components, scales = whitened_pca(x_normal)
        encoder.set_weights([(components.T / scales).astype("float32"),
                             (-(mean @ components.T) / scales).astype("float32")])
        decoder.set_weights([(components * scales[:, None]).astype("float32"),
                             mean.astype("float32")])
    model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE))
    return model


def train_detector(x_normal, digit, epochs, seed=0, pca=True, verbose=0):
    """Build (``pca``: PCA-initialised) and train detector ``digit`` on its
    normal images ``x_normal`` for ``epochs`` (0: none), then fit its
    inference mixture by one M-step over ``x_normal``. ``(model, history)``."""
    model = build_detector(x_normal if pca else None, digit, seed)
    history = None
    if epochs:
        history = model.fit(x_normal, epochs=epochs, batch_size=BATCH_SIZE,
                            shuffle=True, verbose=verbose)
    layer = _recipe.find_layer(model, GMMEnergy)
    layer.fit_mixture(*_recipe.predict(keras.Model(model.input, layer.input), x_normal))
    return model, history


def uncompiled(detector):
    """A copy of ``detector`` (same config and weights), not compiled: the
    zoo model is used for scoring, so its file holds no optimizer state."""
    copy = keras.Model.from_config(detector.get_config())
    copy.set_weights(detector.get_weights())
    return copy


def combine(detectors):
    """The zoo model: ``x [n, 784] -> energies [n, len(detectors)]``, column
    ``d`` the output of (an uncompiled copy of) ``detectors[d]``."""
    x = keras.Input((NUM_FEATURES,), name="x")
    columns = [keras.layers.Reshape((1,), name=f"energy_{d}")(uncompiled(detector)(x))
               for d, detector in enumerate(detectors)]
    energies = keras.layers.Concatenate(name="energies")(columns)
    return keras.Model(x, energies, name=NAME)


def build(seed=DEFAULTS["seed"]):
    """The untrained zoo model: ten randomly initialised detectors."""
    return combine([build_detector(None, d, seed) for d in DIGITS])


def detectors_of(model):
    """The ten detectors inside the zoo model, in digit order."""
    return [model.get_layer(f"detector_{d}") for d in DIGITS]


def anomaly_scores(model, x):
    """The model's energies of ``x``, float64 ``[n, 10]``."""
    return _recipe.predict(model, x).astype(np.float64)


def task_scores(y, scores):
    """``{"mean_auroc", "auroc_digit_d"}`` of ``scores [n, 10]``: task ``d``
    scores column ``d`` with digit ``d`` normal, the others anomalies."""
    y = np.asarray(y)
    out = {f"auroc_digit_{d}": metrics.roc_auc_score((y != d).astype(np.int64),
                                                     scores[:, d]) for d in DIGITS}
    return {"mean_auroc": float(np.mean(list(out.values()))), **out}


def evaluate(model):
    """The ten tasks' AUROCs on "test" and their mean."""
    x_test, y_test = datasets.load_mnist("test")
    return task_scores(y_test, anomaly_scores(model, x_test))


def example_inputs(n=8):
    """``n`` "test" images, digits 0, 1, ..., 9, 0, ... in turn, [n, 784]."""
    x_test, y_test = datasets.load_mnist("test")
    rows = np.stack([np.flatnonzero(y_test == d)[:-(-n // 10)] for d in DIGITS], axis=1)
    return x_test[rows.reshape(-1)[:n]]


def sklearn_baselines(x_train, y_train, x_test, seed, pca_dims=(32, CODE_DIM)):
    """``{name: test scores [n, 10]}`` of scikit-learn's one-class detectors,
    each fitted per digit on its "train" images (raw pixels, and the PCA of
    those images with ``pca_dims`` components); higher = more anomalous."""
    from sklearn.decomposition import PCA
    from sklearn.ensemble import IsolationForest
    from sklearn.mixture import GaussianMixture
    from sklearn.svm import OneClassSVM
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    def detectors(features):
        found = {f"OneClassSVM() on {features}": OneClassSVM(),
                 f"IsolationForest() on {features}": IsolationForest(random_state=seed)}
        kinds = ((1, "diag"), (2, "diag")) if features == "pixels" else (
            (1, "full"), (2, "full"), (4, "full"))
        for k, ctype in kinds:
            found[f"GaussianMixture({k}, {ctype!r}) on {features}"] = GaussianMixture(
                k, covariance_type=ctype, random_state=seed)
        return found

    x_test = np.asarray(x_test, np.float64)
    out = {}
    with threadpool_limits(limits=1):
        for d in DIGITS:
            x_normal = np.asarray(x_train[y_train == d], np.float64)
            views = {"pixels": (x_normal, x_test)}
            for dims in pca_dims:
                pca = PCA(dims, random_state=seed).fit(x_normal)
                views[f"PCA({dims})"] = (pca.transform(x_normal), pca.transform(x_test))
            for features, (fit_rows, test_rows) in views.items():
                for name, detector in detectors(features).items():
                    # score_samples: higher = more normal.
                    scores = -detector.fit(fit_rows).score_samples(test_rows)
                    out.setdefault(f"sklearn {name}", np.zeros((len(x_test), 10)))
                    out[f"sklearn {name}"][:, d] = scores
    return out


def _trained_scores(x_train, y_train, x_test, epochs, seed, pca, verbose):
    """``(detectors, test energies [n, 10])`` of ten detectors of one seed."""
    detectors, history = [], None
    for d in DIGITS:
        detector, history = train_detector(x_train[y_train == d], d, epochs, seed=seed,
                                           pca=pca, verbose=verbose)
        detectors.append(detector)
    return detectors, anomaly_scores(combine(detectors), x_test), history


def _per_digit_table(per_seed):
    """``{"mean_auroc", "auroc_digit_d": mean over seeds}`` of one method."""
    return {key: float(np.mean([s[key] for s in per_seed.values()]))
            for key in METRIC_KEYS}


def train(seed=DEFAULTS["seed"], epochs=DEFAULTS["epochs"], seeds=DEFAULTS["seeds"],
          verbose=0, baselines=True):
    """Train the ten detectors (seed ``seed``, the zoo model) and, for the
    spread, again with seeds ``seed + 1, ...`` (``seeds`` in all); with
    ``baselines``, also score both controls and scikit-learn's detectors on
    the same seeds. Returns ``(model, record)``."""
    seed = check_seed(seed, allow_none=False)
    all_seeds = [seed + i for i in range(check_positive_int(seeds, "seeds"))]
    epochs, baselines = check_positive_int(epochs, "epochs"), check_bool(
        baselines, "baselines")
    (x_train, y_train), (x_test, y_test) = (datasets.load_mnist(split)
                                            for split in ("train", "test"))
    start = time.perf_counter()
    ours, model, history = {}, None, None
    for i, run_seed in enumerate(all_seeds):
        _recipe.say(verbose, NAME, f"seed {run_seed}: training ten detectors, each on "
                    f"the 400 train images of its digit, {_recipe.count(epochs, 'epoch')}")
        detectors, scores, last = _trained_scores(
            x_train, y_train, x_test, epochs, run_seed, True, verbose if i == 0 else 0)
        ours[run_seed] = task_scores(y_test, scores)
        if i == 0:
            model, history = combine(detectors), last
        _recipe.say(verbose, NAME, f"seed {run_seed}: test mean AUROC "
                    f"{ours[run_seed]['mean_auroc']:.4f}")
    seconds = time.perf_counter() - start
    measured = evaluate(model)
    differences = {key: abs(measured[key] - ours[seed][key]) for key in METRIC_KEYS}
    if max(differences.values()) > 1e-9:
        raise RuntimeError(f"evaluate() disagrees with the training: {differences}")
    training = {
        "seed": seed, "seeds": all_seeds, "epochs": epochs, "batch_size": BATCH_SIZE,
        "optimizer": {"name": "Adam", "learning_rate": LEARNING_RATE},
        "final_loss_digit_9": float(history.history["loss"][-1]),
        "mean_auroc_spread": _recipe.seed_summary(ours, ("mean_auroc",))["mean_auroc"],
        "seconds": round(seconds, 1),
    }
    record_metrics = {**measured}
    if baselines:
        _recipe.say(verbose, NAME, "the untrained and PCA-initialised controls and "
                    f"scikit-learn's detectors, seeds {all_seeds}")
        runs = {OURS_KEY: ours, PCA_CONTROL_KEY: {}, CONTROL_KEY: {}}
        for run_seed in all_seeds:
            for key, pca in ((PCA_CONTROL_KEY, True), (CONTROL_KEY, False)):
                scores = _trained_scores(x_train, y_train, x_test, 0, run_seed, pca, 0)[1]
                runs[key][run_seed] = task_scores(y_test, scores)
            for name, scores in sklearn_baselines(x_train, y_train, x_test,
                                                  run_seed).items():
                runs.setdefault(name, {})[run_seed] = task_scores(y_test, scores)
        sklearn = [name for name in runs if name.startswith("sklearn")]
        best = max(sklearn, key=lambda name: runs[name][seed]["mean_auroc"])
        record_metrics["mean_auroc"] = {"value": measured["mean_auroc"], "reference": {
            "value": runs[best][seed]["mean_auroc"],
            "source": f"{best}, random_state={seed}, fitted per digit on the train "
            "split",
            "met": bool(measured["mean_auroc"] >= runs[best][seed]["mean_auroc"]),
        }}
        training["comparison"] = {
            "split": "test", "seeds": all_seeds,
            **{name: _recipe.seed_summary(per_seed, METRIC_KEYS)
               for name, per_seed in runs.items()}}
        training["per_digit_table"] = {name: _per_digit_table(per_seed)
                                       for name, per_seed in runs.items()}
        training["seconds_with_baselines"] = round(time.perf_counter() - start, 1)
    return model, {"metrics": record_metrics, "training": training}
