"""Zoo recipe ``soft_weight_sharing_digits``: an MLP compressed by soft weight
sharing (Ullrich, Meeds & Welling, ICLR 2017) on the 8x8 digits.

1. train a 64-300-100-10 ReLU MLP normally; 2. retrain it with one
:class:`keras_gmm.GMMRegularizer` (16 components, one pinned at zero) on
every kernel and bias, the prior learned by MAP EM during ``fit`` and its
precision hyperprior annealed; 3. snap every weight to its component's mean
(:func:`keras_gmm.regularizers.quantize`). The saved model holds the
quantized weights. The card (settings searched, per-seed figures):
``saved_models/soft_weight_sharing_digits/metadata.json``.
"""

import time

import keras
import numpy as np

from keras_gmm import datasets
from keras_gmm._validation import check_positive_int, check_seed
from keras_gmm.regularizers import GMMRegularizer, compression_report, quantize
from keras_gmm.zoo import _recipe

NAME = "soft_weight_sharing_digits"
HIDDEN_UNITS = (300, 100)
NUM_COMPONENTS = 16
ZERO_WEIGHT = 0.99
TAU = 0.005
# Gamma(alpha, beta) hyperprior on every precision; beta falls geometrically
# from BETA_START to BETA_END over the retraining epochs.
PRECISION_ALPHA = 5000.0
BETA_START = 2.0
BETA_END = 0.02
NUM_SEEDS = 3
DEFAULTS = {
    "seed": 0,
    "epochs": 100,  # retraining epochs, with the prior
    "pretrain_epochs": 60,
    "batch_size": 64,
    "pretrain_learning_rate": 1e-3,
    "learning_rate": 5e-3,  # retraining: cosine decay to 1 % of it
    "final_learning_rate_fraction": 0.01,
    "update_every": 5,
    "em_iterations": 5,
}


def make_regularizer(n_train):
    """The shared prior, ``strength = TAU / n_train`` (Ullrich et al.'s tau
    for a loss averaged over the ``n_train`` training samples)."""
    return GMMRegularizer(
        num_components=NUM_COMPONENTS, strength=TAU / n_train, zero_weight=ZERO_WEIGHT,
        precision_prior=(PRECISION_ALPHA, BETA_START),
        zero_precision_prior=(PRECISION_ALPHA, BETA_START),
    )


class AnnealPrecisionPrior(keras.callbacks.Callback):
    """Lowers the hyperpriors' rate from BETA_START to BETA_END, epoch by
    epoch (each EM update of the prior reads ``precision_prior``)."""

    def __init__(self, regularizer, epochs):
        super().__init__()
        self.regularizer, self.epochs = regularizer, epochs

    def on_epoch_begin(self, epoch, logs=None):
        beta = BETA_START * (BETA_END / BETA_START) ** (epoch / max(self.epochs - 1, 1))
        self.regularizer.precision_prior = (PRECISION_ALPHA, beta)
        self.regularizer.zero_precision_prior = (PRECISION_ALPHA, beta)


def build(seed=DEFAULTS["seed"], regularizer=None,
          learning_rate=DEFAULTS["pretrain_learning_rate"]):
    """The compiled MLP, ``regularizer`` (if given) on every kernel and bias;
    ``learning_rate``: Adam's, a float or a schedule."""
    keras.utils.set_random_seed(seed)
    layers = [keras.Input((64,), name="x")]
    for i, units in enumerate(HIDDEN_UNITS):
        layers.append(keras.layers.Dense(units, activation="relu", name=f"hidden_{i}",
                                         kernel_regularizer=regularizer,
                                         bias_regularizer=regularizer))
    layers.append(keras.layers.Dense(10, activation="softmax", name="probabilities",
                                     kernel_regularizer=regularizer,
                                     bias_regularizer=regularizer))
    model = keras.Sequential(layers, name="soft_weight_sharing_digits")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def retrain(pretrained, x, y, seed=DEFAULTS["seed"], epochs=DEFAULTS["epochs"],
            verbose=0):
    """Step 2: ``pretrained``'s weights retrained under one shared
    GMMRegularizer; returns ``(model, regularizer, callback)``."""
    regularizer = make_regularizer(len(x))
    schedule = keras.optimizers.schedules.CosineDecay(
        DEFAULTS["learning_rate"],
        decay_steps=epochs * _recipe.steps_per_epoch(len(x), DEFAULTS["batch_size"]),
        alpha=DEFAULTS["final_learning_rate_fraction"])
    model = build(seed=seed, regularizer=regularizer, learning_rate=schedule)
    model.set_weights(pretrained.get_weights())
    callback = regularizer.callback(update_every=DEFAULTS["update_every"],
                                    max_iter=DEFAULTS["em_iterations"])
    model.fit(x, y, batch_size=DEFAULTS["batch_size"], epochs=epochs, shuffle=True,
              verbose=verbose,
              callbacks=[AnnealPrecisionPrior(regularizer, epochs), callback])
    return model, regularizer, callback


def accuracy(model, x, y):
    """``mean(argmax(model(x)) == y)``."""
    return float(np.mean(_recipe.predict(model, x, batch_size=512).argmax(-1) == y))


def evaluate(model):
    """``accuracy`` on "test"; ``nonzero_fraction`` and ``compression_ratio``
    of the model's weights."""
    report = compression_report(model)
    return {"accuracy": accuracy(model, *datasets.load_digits("test")),
            "nonzero_fraction": float(report["nonzero_fraction"]),
            "compression_ratio": float(report["compression_ratio"])}


def example_inputs(n=8):
    """``n`` held-out inputs (the first rows of the "test" split), [n, 64]."""
    return datasets.load_digits("test")[0][:n]


def run(seed=DEFAULTS["seed"], epochs=DEFAULTS["epochs"],
        pretrain_epochs=DEFAULTS["pretrain_epochs"], x=None, y=None, x_eval=None,
        y_eval=None, verbose=0):
    """The whole recipe once (pretrain, retrain with the prior, quantize),
    evaluated on ``(x_eval, y_eval)`` ("test" by default). Returns the
    ``pretrained`` and quantized (``model``) models, the ``regularizer``,
    the flat ``weights_pretrained`` / ``weights_retrained``, the
    ``quantize`` and ``compression`` reports and the three accuracies."""
    if x is None:
        x, y = datasets.load_digits("train")
    if x_eval is None:
        x_eval, y_eval = datasets.load_digits("test")
    start = time.perf_counter()
    _recipe.say(verbose, NAME, f"seed {seed}, step 1/3: training the MLP normally, "
                f"{_recipe.count(pretrain_epochs, 'epoch')}")
    pretrained = build(seed=seed)
    pretrained.fit(x, y, batch_size=DEFAULTS["batch_size"], epochs=pretrain_epochs,
                   shuffle=True, verbose=verbose)
    pretrain_seconds = time.perf_counter() - start
    _recipe.say(verbose, NAME, f"seed {seed}, step 2/3: retraining it under the "
                f"GMMRegularizer prior ({NUM_COMPONENTS} components, re-estimated "
                f"every {DEFAULTS['update_every']} batches), "
                f"{_recipe.count(epochs, 'epoch')}")
    model, regularizer, callback = retrain(pretrained, x, y, seed=seed, epochs=epochs,
                                           verbose=verbose)
    retrain_seconds = time.perf_counter() - start - pretrain_seconds
    weights_retrained = np.concatenate([np.ravel(w) for w in model.get_weights()])
    accuracy_retrained = accuracy(model, x_eval, y_eval)
    report = quantize(model, regularizer)
    accuracy_pretrained = accuracy(pretrained, x_eval, y_eval)
    accuracy_quantized = accuracy(model, x_eval, y_eval)
    _recipe.say(verbose, NAME, f"seed {seed}, step 3/3: quantized: "
                f"{report['nonzero_fraction']:.1%} of the weights non-zero, "
                f"{report['n_distinct']} distinct values; accuracy "
                f"{accuracy_pretrained:.4f} (step 1) -> {accuracy_retrained:.4f} "
                f"(step 2) -> {accuracy_quantized:.4f} (quantized)")
    return {
        "pretrained": pretrained,
        "model": model,
        "regularizer": regularizer,
        "weights_pretrained": np.concatenate(
            [np.ravel(w) for w in pretrained.get_weights()]),
        "weights_retrained": weights_retrained,
        "quantize": report,
        "compression": compression_report(model),
        "accuracy_pretrained": accuracy_pretrained,
        "accuracy_retrained": accuracy_retrained,
        "accuracy_quantized": accuracy_quantized,
        "em_updates": len(callback.history),
        "seconds": {"pretrain": round(pretrain_seconds, 1),
                    "retrain": round(retrain_seconds, 1)},
    }


def _figures(result):
    return {
        "accuracy_pretrained": result["accuracy_pretrained"],
        "accuracy_retrained": result["accuracy_retrained"],
        "accuracy_quantized": result["accuracy_quantized"],
        "accuracy_drop_points": 100.0 * (
            result["accuracy_pretrained"] - result["accuracy_quantized"]),
        "nonzero_fraction": result["compression"]["nonzero_fraction"],
        "compression_ratio": result["compression"]["compression_ratio"],
        "n_distinct": result["quantize"]["n_distinct"],
    }


def train(seed=DEFAULTS["seed"], epochs=DEFAULTS["epochs"],
          pretrain_epochs=DEFAULTS["pretrain_epochs"], num_seeds=NUM_SEEDS, verbose=0):
    """:func:`run` with ``seed`` (the saved, quantized model) and, for the
    recorded spread, ``seed + 1, ...`` (``num_seeds`` in all; 1-2 minutes per
    seed on 2 CPU cores). Returns ``(model, record)``."""
    seed = check_seed(seed, allow_none=False)
    epochs = check_positive_int(epochs, "epochs")
    pretrain_epochs = check_positive_int(pretrain_epochs, "pretrain_epochs")
    num_seeds = check_positive_int(num_seeds, "num_seeds")
    start = time.perf_counter()
    result = run(seed=seed, epochs=epochs, pretrain_epochs=pretrain_epochs,
                 verbose=verbose)
    model, reg = result["model"], result["regularizer"]
    measured = evaluate(model)
    per_seed = {str(seed): _figures(result)}
    for i, other in enumerate(range(seed + 1, seed + num_seeds), 2):
        _recipe.say(verbose, NAME, f"seed {other} ({i}/{num_seeds}), for the recorded "
                    "spread: the three steps again (epochs not shown)")
        figures = _figures(run(seed=other, epochs=epochs,
                               pretrain_epochs=pretrain_epochs))
        per_seed[str(other)] = figures
        _recipe.say(verbose, NAME, f"seed {other}: {figures['nonzero_fraction']:.1%} "
                    f"non-zero, accuracy {figures['accuracy_quantized']:.4f} quantized")
    spread = {key: {"mean": float(np.mean([f[key] for f in per_seed.values()])),
                    "std": float(np.std([f[key] for f in per_seed.values()]))}
              for key in per_seed[str(seed)]}
    metrics = {
        "accuracy": {"value": measured["accuracy"],
                     "before_quantization": result["accuracy_retrained"],
                     "reference": {"value": result["accuracy_pretrained"], "source":
                                   f"step 1 of this recipe, seed {seed}, "
                                   f"{pretrain_epochs} epochs"}},
        "nonzero_fraction": measured["nonzero_fraction"],
        "compression_ratio": measured["compression_ratio"],
    }
    training = {
        "seed": seed,
        "epochs": epochs,
        "pretrain_epochs": pretrain_epochs,
        "batch_size": DEFAULTS["batch_size"],
        "optimizer": {
            "pretrain": {"name": "Adam",
                         "learning_rate": DEFAULTS["pretrain_learning_rate"]},
            "retrain": {"name": "Adam", "learning_rate": {
                "schedule": "keras.optimizers.schedules.CosineDecay",
                "initial_learning_rate": DEFAULTS["learning_rate"],
                "alpha": DEFAULTS["final_learning_rate_fraction"]}},
        },
        "prior": {
            "num_components": NUM_COMPONENTS, "zero_weight": ZERO_WEIGHT, "tau": TAU,
            "strength": reg.strength,
            "precision_prior": {"alpha": PRECISION_ALPHA, "beta_start": BETA_START,
                                "beta_end": BETA_END},
            "update_every_batches": DEFAULTS["update_every"],
            "em_iterations_per_update": DEFAULTS["em_iterations"],
            "em_updates": result["em_updates"],
            "learned": {"means": [float(v) for v in reg.means],
                        "stddevs": [float(v) for v in reg.stddevs],
                        "mixture_weights": [float(v) for v in reg.mixture_weights]},
        },
        "quantize": {k: v for k, v in result["quantize"].items() if k != "variables"},
        "compression_variables": result["compression"]["variables"],
        "seconds": result["seconds"],
        "seconds_total": round(time.perf_counter() - start, 1),
        "comparison": {"split": "test", "seeds": [int(s) for s in per_seed],
                       "per_seed": per_seed, "spread": spread},
    }
    return model, {"metrics": metrics, "training": training}
