"""Zoo recipe ``dagmm_breast_cancer``: deep autoencoding Gaussian mixture
anomaly detection (DAGMM-style) on the Wisconsin breast cancer data.

Task: learn what benign tumours look like from benign rows only, and score
every new row with an anomaly score (higher = more anomalous); malignant rows
are the anomalies. Data: :func:`keras_gmm.datasets.load_breast_cancer` (30
features standardised with the "train" statistics): "train" = 214 benign
rows, "val" = 54 benign + 64 malignant (settings and the threshold), "test" =
89 benign + 148 malignant (held out, the recorded metrics).

Model (one Keras model, ``x [n, 30] -> energy [n]``):

- an autoencoder ``x -> Dense(8, elu) -> code (4) -> Dense(8, elu) -> x_hat
  (30)``, trained by the mean squared reconstruction error, added by a core
  ``ActivityRegularization(l2=1/30)`` on the residual ``x - x_hat``;
- latent features ``z = [code, log RMS(x - x_hat)]`` (5 dims): the code and
  a reconstruction-error feature (the log of the root-mean-square residual;
  DAGMM's relative Euclidean distance and cosine similarity measured a
  validation AUROC of 0.89 against 0.98 for this feature in the same
  selection run, see ``SELECTION``);
- an estimation network ``z -> Dense(10, tanh) -> Dropout(0.5) ->
  Dense(2, softmax)``: soft memberships ``gamma``;
- :class:`keras_gmm.GMMEnergy` (2 full-covariance components,
  ``reg_covar=1e-3``): the mixture estimated from ``gamma`` by the M-step
  shared with :class:`keras_gmm.GaussianMixtureEM`, the energy ``-log p(z)``,
  and DAGMM's objective terms (``0.1 * mean energy + 0.005 * sum 1 /
  Sigma_kjj``).

Trained end to end (Adam 1e-3, batch 32, 200 epochs) on "train", with 3
seeds; the network with the highest AUROC on "val" is kept (one training
varies a lot with the seed on 214 rows). Its inference mixture is set by
one M-step over the whole "train" split
(:meth:`keras_gmm.GMMEnergy.fit_mixture`, DAGMM's test-time parameters) and
the threshold of the exported ``predict`` endpoint is the contamination
threshold of the "val" split (its top 54 % of energies, the fraction of
anomalies there). Only core Keras layers, core ``keras.ops`` and keras_gmm's
registered layer: it loads with ``safe_mode=True`` and no ``custom_objects``.

Metrics on the held-out "test" split: ``auroc``; ``f1_at_contamination``
(DAGMM's protocol: the top 62 % of test energies, the test's anomaly
fraction, are called anomalies); ``f1_at_threshold`` (the exported
``predict`` at the recorded threshold). :func:`train` records the same three
for scikit-learn baselines on the same splits (``GaussianMixture
.score_samples`` with 1 and 2 full components, ``IsolationForest``,
``OneClassSVM``; defaults otherwise) and for an untrained-network control
(the same architecture, randomly initialised, only its mixture fitted on
"train"), each on the same 3 seeds (mean, spread and per seed).

Retrain in place (from the repository root; under a minute on 2 CPU cores)::

    keras-gmm zoo train dagmm_breast_cancer \\
        --output-dir saved_models/dagmm_breast_cancer
"""

import time

import numpy as np

from keras_gmm import datasets
from keras_gmm.zoo._files import check_int, save_trained_model, seed_summary

NAME = "dagmm_breast_cancer"
NUM_FEATURES = 30
HIDDEN_UNITS = (8,)
CODE_DIM = 4
ACTIVATION = "elu"
ESTIMATION_UNITS = 10
DROPOUT = 0.5
NUM_COMPONENTS = 2
COVARIANCE_TYPE = "full"
REG_COVAR = 1e-3
ENERGY_WEIGHT = 0.1
COV_PENALTY_WEIGHT = 0.005
LEARNING_RATE = 1e-3
BATCH_SIZE = 32
OURS_KEY = "keras_gmm DAGMM (this recipe, one training per seed)"
CONTROL_KEY = (
    "untrained control (same architecture, random weights, mixture fitted on train)"
)
# Added to the mean squared residual before the log (no -inf, no infinite
# gradient for a perfect reconstruction).
_LOG_EPS = 1e-6

DESCRIPTION = (
    "Deep autoencoding Gaussian mixture anomaly detector (DAGMM-style) "
    "trained on benign breast tumours only: an autoencoder, latent features "
    "[code, log RMS reconstruction error], an estimation network predicting "
    "soft memberships, and keras_gmm.GMMEnergy (a mixture estimated from "
    "them by the shared M-step). Input: x of shape [n, 30] exactly as "
    "keras_gmm.datasets.load_breast_cancer returns it (standardised with the "
    "train statistics). Output: the anomaly score (energy -log p(z), nats) "
    "[n], higher = more anomalous. Exported with 'score' and 'predict' "
    "(is_anomaly at the recorded threshold) signatures."
)
ARCHITECTURE = (
    "Input x [n, 30] -> encoder Dense(8, elu) -> Dense(4) code -> decoder "
    "Dense(8, elu) -> Dense(30) x_hat; ActivityRegularization(l2=1/30) on "
    "x - x_hat (the MSE loss); z = [code, 0.5 log(mean((x - x_hat)^2) + "
    "1e-6)] [n, 5] -> estimation Dense(10, tanh) -> Dropout(0.5) -> "
    "Dense(2, softmax) gamma; GMMEnergy(covariance_type='full', "
    "reg_covar=1e-3, energy_weight=0.1, cov_penalty_weight=0.005)([z, gamma]) "
    "-> energy [n]"
)

TRAIN_SPLIT, VALIDATION_SPLIT, EVALUATION_SPLIT = "train", "val", "test"
DATASET = {
    "function": "keras_gmm.datasets.load_breast_cancer",
    "source": "sklearn.datasets.load_breast_cancer (ships with scikit-learn)",
    "train_split": TRAIN_SPLIT,
    "validation_split": VALIDATION_SPLIT,
    "evaluation_split": EVALUATION_SPLIT,
    "splits": {
        TRAIN_SPLIT: {"benign": 214, "malignant": 0},
        VALIDATION_SPLIT: {"benign": 54, "malignant": 64},
        EVALUATION_SPLIT: {"benign": 89, "malignant": 148},
        "fractions_and_seed": datasets.BREAST_CANCER_SPLIT,
    },
    "inputs": "x, float32 [n, 30], standardised with the train mean/std",
    "targets": "y, int64 [n], 1 = malignant (anomaly), 0 = benign; not used "
    "in training (train holds benign rows only)",
}

# A forward pass is deterministic, so on the same machine the metrics are
# reproduced exactly; the tolerances accept a near tie ordered the other way
# on other hardware (one pair of the 89 x 148 moves the AUROC by 7.6e-5, one
# row the F1 scores by about 0.004).
METRICS = {
    "auroc": {
        "unit": "fraction",
        "split": EVALUATION_SPLIT,
        "meaning": (
            "area under the ROC curve of the energy as a malignancy score on "
            "the held-out 'test' split (keras_gmm.datasets."
            "load_breast_cancer('test'): 89 benign, 148 malignant); higher is "
            "better"
        ),
        "lower_is_better": False,
        "tolerance": 0.002,
    },
    "f1_at_contamination": {
        "unit": "fraction",
        "split": EVALUATION_SPLIT,
        "meaning": (
            "F1 of 'malignant' on the 'test' split when its top 62.4 % "
            "energies (the split's fraction of anomalies, 148 / 237) are "
            "called anomalies (DAGMM's protocol); higher is better"
        ),
        "lower_is_better": False,
        "tolerance": 0.01,
    },
    "f1_at_threshold": {
        "unit": "fraction",
        "split": EVALUATION_SPLIT,
        "meaning": (
            "F1 of 'malignant' on the 'test' split of the exported 'predict' "
            "endpoint: energy above the recorded threshold (the contamination "
            "threshold of the 'val' split, chosen without the test split); "
            "higher is better"
        ),
        "lower_is_better": False,
        "tolerance": 0.01,
    },
}

DEFAULTS = {"seed": 0, "epochs": 200, "candidates": 3}

#: How the settings were chosen, on the 'val' split. History, for the
#: record: first runs on an earlier split (70 % of the benign rows to train,
#: the rest and all malignant rows held out, overlapping today's test split)
#: compared DAGMM's features, the log-error feature and the code alone with
#: tanh layers and a 2-d code (held-out AUROC 0.76, 0.94, 0.91); then a first
#: version of this recipe, hidden (16, 8), was trained with its baselines and
#: its test AUROC seen (0.942 +- 0.018 over seeds 0-2, 0.937 over seeds 0-8,
#: below the best baseline's 0.958); the switch to hidden (8,) was then made
#: on the 5-seed validation runs below.
SELECTION = {
    "protocol": (
        "validation AUROC on the 'val' split (54 benign, 64 malignant), the "
        "untrained control in brackets; the 'test' split was not used. "
        "Unless said: elu, hidden (16, 8), code 4, the log-error feature, "
        "K=2, 200 epochs, batch 32, Adam 1e-3, energy_weight 0.1, "
        "cov_penalty_weight 0.005, reg_covar 1e-3, estimation Dense(10, "
        "tanh) + Dropout(0.5). Rows marked [2] are the mean over seeds 0-1, "
        "[3] over seeds 0-2, [5] mean +- std over seeds 0-4 (seeds 0-2 "
        "turned out luckier than 3-4, so [3] rows read high against [5] rows)"
    ),
    "results": {
        "[2] tanh, code 2": "0.950 (0.949)",
        "[2] tanh": "0.965 (0.902)",
        "[2] tanh, code 8": "0.959 (0.909)",
        "[2] tanh, energy_weight 0.01": "0.953 (0.902)",
        "[2] tanh, K=4": "0.955 (0.907)",
        "[2] tanh, hidden (32, 16)": "0.946 (0.919)",
        "[2] elu": "0.980 (0.923)",
        "[3] elu": "0.972",
        "[3] elu, K=1 (a single Gaussian: no estimation network)": "0.978 (0.925)",
        "[3] elu, K=3": "0.978 (0.927)",
        "[3] elu, code 8": "0.968 (0.934)",
        "[3] elu, code 2": "0.961 (0.966)",
        "[3] elu, DAGMM's features (relative distance, cosine)": "0.886 (0.824)",
        "[3] elu, energy_weight 0.3": "0.959 (0.926)",
        "[3] elu, energy_weight 0.03": "0.964",
        "[3] elu, 400 epochs": "0.970 (0.926)",
        "[3] elu, dropout 0.2": "0.970",
        "[3] elu, Adam 3e-4, 300 epochs": "0.963",
        "[3] elu, hidden (32, 16)": "0.958",
        "[5] elu": "0.963 +- 0.015",
        "[5] elu, 50 epochs": "0.952 +- 0.013",
        "[5] elu, 100 epochs": "0.961 +- 0.015",
        "[5] elu, code 2, 100 epochs": "0.966 +- 0.016",
        "[5] elu, hidden (8,), 100 epochs": "0.968 +- 0.006",
        "[5] elu, hidden (8,)": "0.969 +- 0.007",
        "[5] elu, hidden (8,), 300 epochs": "0.969 +- 0.012",
        "[5] elu, hidden (12,)": "0.963 +- 0.004",
    },
    "chosen": "elu, hidden (8,), code 4, the log-error feature, K=2, 200 "
    "epochs: the highest mean validation AUROC of the 5-seed runs, with a "
    "small spread and a clear gap to the untrained control",
    "history": (
        "a first version (hidden (16, 8)) was trained with its baselines and "
        "its test AUROC seen: 0.942 +- 0.018 over seeds 0-2 (0.937 over "
        "seeds 0-8), below the best baseline (0.958); hidden (8,) was then "
        "chosen on the validation runs marked [5]"
    ),
}

EVAL_BATCH_SIZE = 1024


# ------------------------------------------------------------------ model
def build_dagmm(
    num_features=NUM_FEATURES,
    hidden_units=HIDDEN_UNITS,
    code_dim=CODE_DIM,
    activation=ACTIVATION,
    estimation_units=ESTIMATION_UNITS,
    dropout=DROPOUT,
    num_components=NUM_COMPONENTS,
    covariance_type=COVARIANCE_TYPE,
    reg_covar=REG_COVAR,
    energy_weight=ENERGY_WEIGHT,
    cov_penalty_weight=COV_PENALTY_WEIGHT,
    learning_rate=LEARNING_RATE,
    seed=0,
    name=NAME,
):
    """A compiled DAGMM-style model ``x [n, num_features] -> energy [n]``.

    Its loss is the sum of the terms its layers add (the reconstruction MSE,
    the mean energy and the covariance penalty), so it trains with
    ``model.fit(x)``, no targets. See the module docstring; the defaults are
    the zoo model's.
    """
    import keras

    import keras_gmm

    keras.utils.set_random_seed(seed)
    x = keras.Input((num_features,), name="x")
    h = x
    for i, units in enumerate(hidden_units):
        h = keras.layers.Dense(units, activation=activation, name=f"encoder_{i}")(h)
    code = keras.layers.Dense(code_dim, name="code")(h)
    h = code
    for i, units in enumerate(reversed(hidden_units)):
        h = keras.layers.Dense(units, activation=activation, name=f"decoder_{i}")(h)
    x_hat = keras.layers.Dense(num_features, name="reconstruction")(h)
    # The MSE reconstruction loss, added on the residual's path (an activity
    # regularizer's loss is its batch mean: 1/D * sum of squares = the MSE).
    residual = keras.layers.ActivityRegularization(
        l2=1.0 / num_features, name="reconstruction_loss"
    )(keras.ops.subtract(x, x_hat))
    log_error = 0.5 * keras.ops.log(
        keras.ops.mean(keras.ops.square(residual), axis=-1, keepdims=True) + _LOG_EPS
    )
    z = keras.layers.Concatenate(name="z")([code, log_error])
    h = keras.layers.Dense(estimation_units, activation="tanh", name="estimation")(z)
    h = keras.layers.Dropout(dropout, name="estimation_dropout")(h)
    gamma = keras.layers.Dense(num_components, activation="softmax", name="gamma")(h)
    energy = keras_gmm.GMMEnergy(
        covariance_type=covariance_type,
        reg_covar=reg_covar,
        energy_weight=energy_weight,
        cov_penalty_weight=cov_penalty_weight,
        name="energy",
    )([z, gamma])
    model = keras.Model(x, energy, name=name)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate))
    return model


def build(seed=DEFAULTS["seed"]):
    """The untrained zoo model (compiled; trained by ``model.fit(x)``)."""
    return build_dagmm(seed=seed)


def energy_layer(model):
    """The model's :class:`keras_gmm.GMMEnergy` layer."""
    import keras_gmm

    layers = [layer for layer in model.layers if isinstance(layer, keras_gmm.GMMEnergy)]
    if not layers:
        raise ValueError(f"Model {model.name!r} has no GMMEnergy layer.")
    return layers[-1]


def fit_inference_mixture(model, x):
    """Set the model's inference mixture by one M-step over ``x`` (DAGMM's
    test-time parameters: the mixture of the training data under the
    trained networks)."""
    import keras

    layer = energy_layer(model)
    extractor = keras.Model(model.inputs, layer.input)
    z, gamma = extractor.predict(x, batch_size=EVAL_BATCH_SIZE, verbose=0)
    layer.fit_mixture(z, gamma)
    return model


def train_dagmm(x_train, epochs, seed=0, verbose=0, batch_size=BATCH_SIZE,
                **settings):
    """Build and train a DAGMM on normal data ``x_train``; the inference
    mixture is then fitted on ``x_train``. Returns ``(model, history)``.
    ``epochs=0`` gives the untrained control (only its mixture fitted).
    ``settings``: arguments of :func:`build_dagmm`."""
    model = build_dagmm(num_features=x_train.shape[1], seed=seed, **settings)
    history = None
    if epochs:
        history = model.fit(
            x_train, epochs=epochs, batch_size=batch_size, shuffle=True,
            verbose=verbose,
        )
    return fit_inference_mixture(model, x_train), history


def anomaly_scores(model, x):
    """The model's energies of ``x`` (higher = more anomalous), float64."""
    scores = model.predict(x, batch_size=EVAL_BATCH_SIZE, verbose=0)
    return np.asarray(scores, np.float64)


# ------------------------------------------------------------- evaluation
def roc_auc(y, scores):
    """Area under the ROC curve (the Mann-Whitney statistic, ties count 1/2)."""
    y = np.asarray(y).astype(bool)
    scores = np.asarray(scores, np.float64)
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(average, counts)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("`y` must hold both classes to compute an AUROC.")
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def f1(y, predicted):
    """F1 of the positive class (1 = anomaly)."""
    y, predicted = np.asarray(y).astype(bool), np.asarray(predicted).astype(bool)
    tp = int(np.sum(y & predicted))
    if tp == 0:
        return 0.0
    return float(2 * tp / (2 * tp + np.sum(~y & predicted) + np.sum(y & ~predicted)))


def contamination_threshold(scores, contamination):
    """The score above which the top ``contamination`` fraction lies: the
    ``n_flagged``-th largest score, ``n_flagged = round(contamination * n)``."""
    scores = np.sort(np.asarray(scores, np.float64))[::-1]
    n_flagged = int(round(contamination * len(scores)))
    if n_flagged <= 0:
        return float(scores[0])
    if n_flagged >= len(scores):
        return float(np.nextafter(scores[-1], -np.inf))
    # Halfway between the last flagged and the first unflagged score.
    return float(0.5 * (scores[n_flagged - 1] + scores[n_flagged]))


def scores_of(y_test, test_scores, threshold):
    """``{"auroc", "f1_at_contamination", "f1_at_threshold"}`` of scores."""
    contamination = float(np.mean(y_test))
    at_contamination = test_scores > contamination_threshold(test_scores, contamination)
    return {
        "auroc": roc_auc(y_test, test_scores),
        "f1_at_contamination": f1(y_test, at_contamination),
        "f1_at_threshold": f1(y_test, test_scores > threshold),
    }


def validation_threshold(val_scores, y_val):
    """The recorded threshold: the contamination threshold of the "val"
    split (its fraction of anomalies flagged)."""
    return contamination_threshold(val_scores, float(np.mean(y_val)))


def evaluate(model):
    """The metrics of :data:`METRICS` on the held-out "test" split; the
    ``predict`` threshold is the model's recorded one."""
    x_test, y_test = datasets.load_breast_cancer(EVALUATION_SPLIT)
    threshold = float(energy_layer(model).threshold.numpy())
    return scores_of(y_test, anomaly_scores(model, x_test), threshold)


def example_inputs(n=8):
    """``n`` held-out inputs: rows of the "test" split, benign and malignant
    alternating, [n, 30]."""
    x_test, y_test = datasets.load_breast_cancer(EVALUATION_SPLIT)
    benign, malignant = np.flatnonzero(y_test == 0), np.flatnonzero(y_test == 1)
    rows = np.stack([benign[: (n + 1) // 2], malignant[: (n + 1) // 2]], axis=1)
    return x_test[rows.reshape(-1)[:n]]


# ------------------------------------------------------------- baselines
def sklearn_baselines(x_train, x_val, y_val, x_test, y_test, seed,
                      num_components=NUM_COMPONENTS):
    """scikit-learn's detectors on the same splits: ``{name: scores}``, each
    with its own val contamination threshold (scikit-learn is imported here
    only)."""
    from sklearn.ensemble import IsolationForest
    from sklearn.mixture import GaussianMixture
    from sklearn.svm import OneClassSVM
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    detectors = {
        "sklearn GaussianMixture(1, 'full').score_samples": GaussianMixture(
            1, covariance_type="full", random_state=seed
        ),
        f"sklearn GaussianMixture({num_components}, 'full').score_samples": (
            GaussianMixture(num_components, covariance_type="full", random_state=seed)
        ),
        "sklearn IsolationForest()": IsolationForest(random_state=seed),
        "sklearn OneClassSVM()": OneClassSVM(),
    }
    out = {}
    with threadpool_limits(limits=1):
        for name, detector in detectors.items():
            detector.fit(x_train.astype(np.float64))
            # score_samples: higher = more normal for all three.
            val = -detector.score_samples(x_val.astype(np.float64))
            test = -detector.score_samples(x_test.astype(np.float64))
            out[name] = {
                "scores": scores_of(y_test, test, validation_threshold(val, y_val)),
                "test_scores": test,
            }
    return out


# --------------------------------------------------------------- training
def _summary(per_seed):
    """Mean, std and per-seed values of each score."""
    return seed_summary(per_seed, METRICS)


def _fit_and_score(x_train, x_val, y_val, x_test, y_test, epochs, seed, verbose):
    """``(model, history, test scores, validation AUROC)`` of one DAGMM
    (``epochs=0``: the untrained control), its threshold set from "val"."""
    model, history = train_dagmm(x_train, epochs, seed=seed, verbose=verbose)
    val = anomaly_scores(model, x_val)
    threshold = validation_threshold(val, y_val)
    energy_layer(model).set_threshold(threshold)
    test = anomaly_scores(model, x_test)
    return model, history, scores_of(y_test, test, threshold), roc_auc(y_val, val)


def train(
    output_dir,
    seed=DEFAULTS["seed"],
    epochs=DEFAULTS["epochs"],
    candidates=DEFAULTS["candidates"],
    verbose=0,
    baselines=True,
):
    """Train the model from scratch and write it into ``output_dir``.

    Trains ``candidates`` networks (seeds ``seed, seed + 1, ...``) on
    "train" (benign rows only), each with its inference mixture fitted on
    "train" and its ``predict`` threshold set from "val", keeps the one with
    the highest validation AUROC, measures its metrics on "test", and
    (``baselines=True``) every candidate's test metrics (the spread of one
    training over seeds), the untrained control and the scikit-learn
    baselines on the same seeds; writes ``model.keras`` and
    ``metadata.json``.

    Args:
        output_dir: folder to write into.
        seed: the first candidate's seed (weights' initialisation, dropout
            and shuffling).
        epochs: training epochs (batch 32).
        candidates: how many seeds to train; the best on "val" is kept.
        verbose: 0 silent, else Keras' per-epoch lines.
        baselines: also compute the controls, baselines and spread (needs
            scikit-learn).
    """
    seed = check_int(seed, "seed", -(2**63))
    epochs = check_int(epochs, "epochs", 1)
    candidates = check_int(candidates, "candidates", 1)
    x_train, _ = datasets.load_breast_cancer(TRAIN_SPLIT)
    x_val, y_val = datasets.load_breast_cancer(VALIDATION_SPLIT)
    x_test, y_test = datasets.load_breast_cancer(EVALUATION_SPLIT)
    splits = (x_train, x_val, y_val, x_test, y_test)

    start = time.perf_counter()
    seeds = [seed + i for i in range(candidates)]
    ours, val_auroc, best = {}, {}, None
    for candidate in seeds:
        model, history, scores, val_auroc[candidate] = _fit_and_score(
            *splits, epochs, candidate, verbose
        )
        ours[candidate] = scores
        if best is None or val_auroc[candidate] > val_auroc[best[0]]:
            best = (candidate, model, history)
        if verbose:
            print(f"seed {candidate}: validation AUROC {val_auroc[candidate]:.4f}")
    selected, model, history = best
    measured = ours[selected]
    seconds = time.perf_counter() - start
    threshold = float(energy_layer(model).threshold.numpy())
    reproduced = evaluate(model)
    for key, value in measured.items():
        if abs(reproduced[key] - value) > 1e-9:
            raise RuntimeError(f"evaluate() disagrees with training on {key}.")

    metrics = {key: {"value": measured[key], **spec} for key, spec in METRICS.items()}
    comparison = None
    if baselines:
        control, sklearn = {}, {}
        for other in seeds:
            control[other] = _fit_and_score(*splits, 0, other, 0)[2]
            for name, result in sklearn_baselines(*splits, other).items():
                sklearn.setdefault(name, {})[other] = result["scores"]
            if verbose:
                print(f"seed {other}: ours {ours[other]}, untrained {control[other]}")
        comparison = {
            "split": EVALUATION_SPLIT,
            "seeds": seeds,
            OURS_KEY: _summary(ours),
            CONTROL_KEY: _summary(control),
            **{name: _summary(per_seed) for name, per_seed in sklearn.items()},
            "note": (
                "one training per seed; the zoo model is the seed with the "
                "highest validation AUROC (training.selected_seed). Every "
                "method's f1_at_threshold uses its own contamination threshold "
                "of the 'val' split; f1_at_contamination flags each method's "
                "top 62.4 % test scores"
            ),
        }
        best_name, best_value = max(
            ((name, comparison[name]["auroc"]["per_seed"][str(selected)])
             for name in comparison if name.startswith("sklearn")),
            key=lambda item: item[1],
        )
        metrics["auroc"]["reference"] = {
            "name": "best scikit-learn baseline",
            "value": best_value,
            "source": f"{best_name}, random_state={selected}, fitted on the "
            "train split",
            "meaning": "the target: AUROC at least the best baseline's",
        }

    training = {
        "seed": seed,
        "epochs": epochs,
        "batch_size": BATCH_SIZE,
        "optimizer": {"name": "Adam", "learning_rate": LEARNING_RATE},
        "loss": (
            "reconstruction MSE + 0.1 * mean energy + 0.005 * sum 1/Sigma_kjj "
            "(the layers' add_loss terms)"
        ),
        "final_loss": float(history.history["loss"][-1]),
        "threshold": threshold,
        "threshold_meaning": (
            "energy above which 'predict' calls a row an anomaly: the "
            "contamination threshold of the 'val' split (its top "
            f"{100 * float(np.mean(y_val)):.1f} % energies)"
        ),
        "inference_mixture": "one M-step over the train split after training "
        "(GMMEnergy.fit_mixture)",
        "candidates": candidates,
        "selected_seed": selected,
        "validation_auroc_per_seed": {str(k): v for k, v in val_auroc.items()},
        "seconds": round(seconds, 1),
        "seconds_meaning": "training the candidates",
        "selection": SELECTION,
    }
    if comparison is not None:
        training["comparison"] = comparison
        training["seconds_with_baselines"] = round(time.perf_counter() - start, 1)
    return save_trained_model(
        model,
        output_dir,
        name=NAME,
        description=DESCRIPTION,
        architecture=ARCHITECTURE,
        dataset=DATASET,
        metrics=metrics,
        training=training,
        notes=[
            "Trained on benign rows only; the labels of 'val' set the predict "
            "threshold (and chose the settings), those of 'test' only score.",
        ],
    )
