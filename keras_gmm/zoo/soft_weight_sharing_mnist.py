"""Zoo recipe ``soft_weight_sharing_mnist``: LeNet-300-100 compressed by soft
weight sharing (Ullrich, Meeds & Welling, ICLR 2017) on 28x28 MNIST.

1. train a 784-300-100-10 ReLU MLP normally; 2. retrain it with one
:class:`keras_gmm.GMMRegularizer` (16 components, one pinned at zero) on
every kernel and bias, the prior learned by MAP EM during ``fit`` and its
precision hyperprior annealed; 3. snap every weight to its component's mean
(:func:`keras_gmm.regularizers.quantize`); 4. fine-tune the shared values
(the non-zero component means) with every weight's component held fixed, so
the zeros and the sharing stay as quantized. The saved model holds the
quantized weights. The card (settings searched, per-seed figures):
``saved_models/soft_weight_sharing_mnist/metadata.json``.
"""

import functools
import time

import keras
import numpy as np

from keras_gmm import datasets
from keras_gmm._validation import check_positive_int, check_seed
from keras_gmm.regularizers import (
    GMMRegularizer,
    compression_report,
    quantize,
)
from keras_gmm.zoo import _recipe
from keras_gmm.zoo.soft_weight_sharing_digits import accuracy

NAME = "soft_weight_sharing_mnist"
INPUT_DIM = 784
HIDDEN_UNITS = (300, 100)
NUM_SEEDS = 3
# The targets, on each seed: at most 1 point of "test" accuracy lost
# against the same network trained plainly, at most 5 % non-zero weights.
TARGET_DROP_POINTS = 1.0
TARGET_NONZERO = 0.05
DEFAULTS = {
    "seed": 0,
    "epochs": 30,  # retraining epochs, with the prior
    "pretrain_epochs": 20,
    "codebook_epochs": 10,  # step 4
    "pretrain_batch_size": 128,
    "batch_size": 256,  # retraining and step 4
    "pretrain_learning_rate": 1e-3,
    "learning_rate": 5e-3,  # retraining: cosine decay to a fraction of it
    "final_learning_rate_fraction": 0.01,
    "codebook_learning_rate": 3e-4,
    # Step 3b: the components nearest zero are merged into it while more
    # than this fraction of the weights is non-zero.
    "max_nonzero_fraction": 0.045,
    "update_every": 8,
    "em_iterations": 5,
    "num_components": 16,
    "zero_weight": 0.99,
    "tau": 0.005,
    # Gamma(alpha, beta) hyperprior on every precision; beta falls
    # geometrically from beta_start to beta_end over the retraining epochs.
    "precision_alpha": 5000.0,
    "beta_start": 2.0,
    "beta_end": 0.02,
}


def make_regularizer(n_train, settings=DEFAULTS):
    """The shared prior, ``strength = tau / n_train`` (Ullrich et al.'s tau
    for a loss averaged over the ``n_train`` training samples)."""
    prior = (settings["precision_alpha"], settings["beta_start"])
    return GMMRegularizer(
        num_components=settings["num_components"],
        strength=settings["tau"] / n_train, zero_weight=settings["zero_weight"],
        precision_prior=prior, zero_precision_prior=prior,
    )


def merge_into_zero(model, regularizer, max_nonzero_fraction):
    """Step 3b, on quantized weights: set to 0 the weights of the non-zero
    components nearest zero (smallest ``|mean|`` first), one component at a
    time, while more than ``max_nonzero_fraction`` of them are non-zero.
    Returns ``{"merged_means", "nonzero_fraction_before", "nonzero_fraction"}``."""
    variables = [v for v in model.trainable_variables
                 if getattr(v, "regularizer", None) is regularizer]
    components = [regularizer.component_of(v.value).numpy() for v in variables]
    counts = np.bincount(np.concatenate([c.ravel() for c in components]),
                         minlength=regularizer.num_components)
    means, total = regularizer.means, counts.sum()
    nonzero = before = total - counts[0]
    merged = []
    for k in sorted(range(1, len(means)), key=lambda k: abs(means[k])):
        if nonzero <= max_nonzero_fraction * total:
            break
        merged.append(k)
        nonzero -= counts[k]
    for variable, comp in zip(variables, components):
        variable.assign(np.where(np.isin(comp, merged), 0.0, variable.numpy()))
    return {"merged_means": [float(means[k]) for k in merged],
            "nonzero_fraction_before": float(before / total),
            "nonzero_fraction": float(nonzero / total)}


def build(seed=DEFAULTS["seed"], regularizer=None,
          learning_rate=DEFAULTS["pretrain_learning_rate"]):
    """The compiled LeNet-300-100, ``regularizer`` (if given) on every kernel
    and bias; ``learning_rate``: Adam's, a float or a schedule."""
    keras.utils.set_random_seed(seed)
    dense = functools.partial(keras.layers.Dense, kernel_regularizer=regularizer,
                              bias_regularizer=regularizer)
    model = keras.Sequential(
        [keras.Input((INPUT_DIM,), name="x"),
         *(dense(units, activation="relu", name=f"hidden_{i}")
           for i, units in enumerate(HIDDEN_UNITS)),
         dense(10, activation="softmax", name="probabilities")], name=NAME)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def retrain(pretrained, x, y, seed=DEFAULTS["seed"], epochs=DEFAULTS["epochs"],
            settings=DEFAULTS, verbose=0):
    """Step 2: ``pretrained``'s weights retrained under one shared
    GMMRegularizer; returns ``(model, regularizer, callback)``."""
    regularizer = make_regularizer(len(x), settings)
    schedule = keras.optimizers.schedules.CosineDecay(
        settings["learning_rate"],
        decay_steps=epochs * _recipe.steps_per_epoch(len(x), settings["batch_size"]),
        alpha=settings["final_learning_rate_fraction"])
    model = build(seed=seed, regularizer=regularizer, learning_rate=schedule)
    model.set_weights(pretrained.get_weights())
    callback = regularizer.callback(update_every=settings["update_every"],
                                    max_iter=settings["em_iterations"])
    anneal = _recipe.AnnealPrecisionPrior(
        regularizer, epochs, settings["precision_alpha"], settings["beta_start"],
        settings["beta_end"])
    model.fit(x, y, batch_size=settings["batch_size"], epochs=epochs, shuffle=True,
              verbose=verbose, callbacks=[anneal, callback])
    return model, regularizer, callback


def evaluate(model):
    """``accuracy`` on "test" (``mean(argmax(model(x)) == y)``);
    ``nonzero_fraction`` and ``compression_ratio`` of the model's weights."""
    report = compression_report(model)
    return {"accuracy": accuracy(model, *datasets.load_mnist("test")),
            **{key: float(report[key]) for key in ("nonzero_fraction",
                                                   "compression_ratio")}}


def example_inputs(n=8):
    """``n`` held-out inputs (the first rows of the "test" split), [n, 784]."""
    return datasets.load_mnist("test")[0][:n]


def run(seed=DEFAULTS["seed"], epochs=DEFAULTS["epochs"],
        pretrain_epochs=DEFAULTS["pretrain_epochs"],
        codebook_epochs=DEFAULTS["codebook_epochs"], x=None, y=None, x_eval=None,
        y_eval=None, settings=DEFAULTS, verbose=0):
    """The whole recipe once (pretrain, retrain with the prior, quantize,
    tune the shared values), evaluated on ``(x_eval, y_eval)`` ("test" by
    default); ``settings``: :data:`DEFAULTS` with changes. Returns the
    ``pretrained`` and compressed (``model``) models, the ``regularizer``,
    the ``quantize`` and ``compression`` reports and the accuracies."""
    if x is None:
        x, y = datasets.load_mnist("train")
    if x_eval is None:
        x_eval, y_eval = datasets.load_mnist("test")
    batch_size = settings["batch_size"]
    start = time.perf_counter()
    _recipe.say(verbose, NAME, f"seed {seed}, step 1/4: training the MLP normally, "
                f"{_recipe.count(pretrain_epochs, 'epoch')}")
    pretrained = build(seed=seed, learning_rate=settings["pretrain_learning_rate"])
    pretrained.fit(x, y, batch_size=settings["pretrain_batch_size"],
                   epochs=pretrain_epochs, shuffle=True, verbose=verbose)
    seconds = {"pretrain": time.perf_counter() - start}
    _recipe.say(verbose, NAME, f"seed {seed}, step 2/4: retraining it under the "
                f"GMMRegularizer prior ({settings['num_components']} components, "
                f"re-estimated every {settings['update_every']} batches), "
                f"{_recipe.count(epochs, 'epoch')}")
    model, regularizer, callback = retrain(pretrained, x, y, seed=seed, epochs=epochs,
                                           settings=settings, verbose=verbose)
    seconds["retrain"] = time.perf_counter() - start - sum(seconds.values())
    accuracy_retrained = accuracy(model, x_eval, y_eval)
    report = quantize(model, regularizer)
    merged = merge_into_zero(model, regularizer, settings["max_nonzero_fraction"])
    accuracy_quantized = accuracy(model, x_eval, y_eval)
    _recipe.say(verbose, NAME, f"seed {seed}, step 3/4: quantized: "
                f"{report['nonzero_fraction']:.1%} of the weights non-zero, "
                f"{merged['nonzero_fraction']:.1%} after merging "
                f"{_recipe.count(len(merged['merged_means']), 'component')} into "
                f"zero; step 4/4: tuning the "
                f"shared values, {_recipe.count(codebook_epochs, 'epoch')}")
    tuned = _recipe.tune_shared_values(
        model, regularizer, x, y, epochs=codebook_epochs, batch_size=batch_size,
        learning_rate=settings["codebook_learning_rate"], seed=seed)
    seconds["tune"] = time.perf_counter() - start - sum(seconds.values())
    accuracy_pretrained = accuracy(pretrained, x_eval, y_eval)
    accuracy_tuned = accuracy(model, x_eval, y_eval)
    _recipe.say(verbose, NAME, f"seed {seed}: accuracy {accuracy_pretrained:.4f} "
                f"(step 1) -> {accuracy_retrained:.4f} (step 2) -> "
                f"{accuracy_quantized:.4f} (step 3) -> {accuracy_tuned:.4f} (step 4)")
    return {
        "pretrained": pretrained,
        "model": model,
        "regularizer": regularizer,
        "quantize": report,
        "merge_into_zero": merged,
        "tune": tuned,
        "compression": compression_report(model),
        "accuracy_pretrained": accuracy_pretrained,
        "accuracy_retrained": accuracy_retrained,
        "accuracy_quantized": accuracy_quantized,
        "accuracy_tuned": accuracy_tuned,
        "em_updates": len(callback.history),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }


def _seed_figures(result):
    plain, compressed = result["accuracy_pretrained"], result["accuracy_tuned"]
    nonzero = result["compression"]["nonzero_fraction"]
    drop = 100.0 * (plain - compressed)
    return {
        "accuracy_plain": plain,
        "accuracy_retrained": result["accuracy_retrained"],
        "accuracy_quantized": result["accuracy_quantized"],
        "accuracy_compressed": compressed,
        "accuracy_drop_points": drop,
        "nonzero_fraction": nonzero,
        "compression_ratio": result["compression"]["compression_ratio"],
        "n_distinct": result["quantize"]["n_distinct"],
        "target_met": bool(drop <= TARGET_DROP_POINTS and nonzero <= TARGET_NONZERO),
        "seconds": result["seconds"],
    }


def _optimizers():
    settings = DEFAULTS
    return {
        "pretrain": {"name": "Adam", "learning_rate": settings["pretrain_learning_rate"],
                     "batch_size": settings["pretrain_batch_size"]},
        "retrain": {"name": "Adam", "batch_size": settings["batch_size"],
                    "learning_rate": {
                        "schedule": "keras.optimizers.schedules.CosineDecay",
                        "initial_learning_rate": settings["learning_rate"],
                        "alpha": settings["final_learning_rate_fraction"]}},
        "tune_shared_values": {"name": "Adam", "batch_size": settings["batch_size"],
                               "learning_rate": settings["codebook_learning_rate"]},
    }


def train(seed=DEFAULTS["seed"], epochs=DEFAULTS["epochs"],
          pretrain_epochs=DEFAULTS["pretrain_epochs"],
          codebook_epochs=DEFAULTS["codebook_epochs"], num_seeds=NUM_SEEDS, verbose=0):
    """:func:`run` on "train" with ``seed`` (the saved model) and, for the
    recorded spread, ``seed + 1, ...`` (``num_seeds`` in all), each evaluated
    on "test" against its own plainly trained network (step 1). Returns
    ``(model, record)``."""
    seed = check_seed(seed, allow_none=False)
    epochs = check_positive_int(epochs, "epochs")
    pretrain_epochs = check_positive_int(pretrain_epochs, "pretrain_epochs")
    codebook_epochs = check_positive_int(codebook_epochs, "codebook_epochs")
    num_seeds = check_positive_int(num_seeds, "num_seeds")
    start = time.perf_counter()
    results, per_seed = {}, {}
    for i, each in enumerate(range(seed, seed + num_seeds), 1):
        _recipe.say(verbose, NAME, f"seed {each} ({i}/{num_seeds})"
                    + ("" if i == 1 else ", for the recorded spread (epochs not shown)"))
        result = run(seed=each, epochs=epochs, pretrain_epochs=pretrain_epochs,
                     codebook_epochs=codebook_epochs, verbose=verbose if i == 1 else 0)
        results[each] = result
        per_seed[str(each)] = _seed_figures(result)
        _recipe.say(verbose, NAME, f"seed {each}: {per_seed[str(each)]}")
    result = results[seed]
    model, reg = result["model"], result["regularizer"]
    measured = evaluate(model)
    keys = [k for k, v in per_seed[str(seed)].items() if isinstance(v, float)]
    metrics = {
        "accuracy": {"value": measured["accuracy"],
                     "before_quantization": result["accuracy_retrained"],
                     "quantized_before_tuning": result["accuracy_quantized"],
                     "reference": {"value": result["accuracy_pretrained"], "source":
                                   f"step 1 of this recipe (the same network trained "
                                   f"plainly), seed {seed}, {pretrain_epochs} epochs"}},
        "nonzero_fraction": measured["nonzero_fraction"],
        "compression_ratio": measured["compression_ratio"],
    }
    training = {
        "seed": seed,
        "epochs": epochs,
        "pretrain_epochs": pretrain_epochs,
        "codebook_epochs": codebook_epochs,
        "batch_size": DEFAULTS["batch_size"],
        "optimizer": _optimizers(),
        "settings": {k: v for k, v in DEFAULTS.items()
                     if k not in ("seed", "epochs", "pretrain_epochs", "codebook_epochs")},
        "prior": {
            "strength": reg.strength,
            "em_updates": result["em_updates"],
            "learned": {"means": [float(v) for v in reg.means],
                        "stddevs": [float(v) for v in reg.stddevs],
                        "mixture_weights": [float(v) for v in reg.mixture_weights]},
        },
        "quantize": {k: v for k, v in result["quantize"].items() if k != "variables"},
        "tune_shared_values": result["tune"],
        "compression_variables": result["compression"]["variables"],
        "seconds": result["seconds"],
        "comparison": {"split": "test", "seeds": [int(s) for s in per_seed],
                       "per_seed": per_seed,
                       "spread": _recipe.seed_summary(per_seed, keys),
                       "targets_met_on_every_seed": all(
                           f["target_met"] for f in per_seed.values())},
    }
    training["seconds_total"] = round(time.perf_counter() - start, 1)
    return model, {"metrics": metrics, "training": training}
