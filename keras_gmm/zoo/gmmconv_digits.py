"""Zoo recipe ``gmmconv_digits``: a CNN on the 8x8 digits whose convolutions
are :class:`keras_gmm.GMMConv2D`, trained next to the same CNN with Conv2D.

``x [n, 64] -> Reshape(8, 8, 1) -> 2 x GMMConv2D(5x5, 8 shared diagonal
bumps, geometry_gain=10, relu) -> MaxPooling2D -> Flatten -> Dropout(0.3) ->
Dense(10, softmax)``. The card (design search, comparison, metrics):
``saved_models/gmmconv_digits/metadata.json``.
"""

import time

import keras
import numpy as np

from keras_gmm import datasets
from keras_gmm._validation import check_one_of, check_positive_int, check_seed
from keras_gmm.layers import GMMConv2D
from keras_gmm.zoo import _recipe

NAME = "gmmconv_digits"
KERNEL_SIZE = 5
FILTERS = (32, 64)
NUM_COMPONENTS = 8
GEOMETRY_GAIN = 10.0
DROPOUT = 0.3
CONV_KINDS = ("GMMConv2D", "Conv2D")
DEFAULTS = {"seed": 0, "epochs": 120, "batch_size": 64, "learning_rate": 3e-3,
            "comparison_seeds": 3}


def build(seed=DEFAULTS["seed"], conv="GMMConv2D", steps=None,
          learning_rate=DEFAULTS["learning_rate"]):
    """The compiled, untrained CNN (seeded by ``keras.utils.set_random_seed``).

    ``conv``: "GMMConv2D" (the zoo model) or "Conv2D" (the baseline, nothing
    else changed); Adam's cosine schedule decays from ``learning_rate`` over
    ``steps`` (default: the default epochs over the "train" split).
    """
    check_one_of(conv, "conv", CONV_KINDS)
    keras.utils.set_random_seed(seed)
    if steps is None:
        steps = DEFAULTS["epochs"] * _recipe.steps_per_epoch(
            len(datasets.load_digits("train")[0]), DEFAULTS["batch_size"])
    inputs = keras.Input((64,), name="x")
    hidden = keras.layers.Reshape((8, 8, 1), name="to_image")(inputs)
    for i, filters in enumerate(FILTERS):
        if conv == "GMMConv2D":
            layer = GMMConv2D(filters, KERNEL_SIZE, num_components=NUM_COMPONENTS,
                              covariance_type="diag", geometry_gain=GEOMETRY_GAIN,
                              padding="same", activation="relu", name=f"conv_{i}")
        else:
            layer = keras.layers.Conv2D(filters, KERNEL_SIZE, padding="same",
                                        activation="relu", name=f"conv_{i}")
        hidden = layer(hidden)
    hidden = keras.layers.MaxPooling2D(2, name="pool")(hidden)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    hidden = keras.layers.Dropout(DROPOUT, name="dropout")(hidden)
    outputs = keras.layers.Dense(10, activation="softmax", dtype="float32",
                                 name="probabilities")(hidden)
    name = "gmmconv_digits" if conv == "GMMConv2D" else "gmmconv_digits_conv2d_baseline"
    model = keras.Model(inputs, outputs, name=name)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, int(steps))
    model.compile(optimizer=keras.optimizers.Adam(schedule),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def conv_parameters(model):
    """Parameters of the model's convolutions (GMMConv2D or Conv2D, biases in)."""
    return int(sum(layer.count_params() for layer in model.layers
                   if isinstance(layer, (GMMConv2D, keras.layers.Conv2D))))


def evaluate(model):
    """``{"accuracy", "nll"}`` on the held-out "test" split."""
    x, y = datasets.load_digits("test")
    probs = _recipe.predict(model, x, batch_size=512).astype(np.float64)
    picked = probs[np.arange(len(y)), y]
    return {"accuracy": float(np.mean(probs.argmax(axis=1) == y)),
            "nll": float(-np.mean(np.log(np.maximum(picked, 1e-300))))}


def example_inputs(n=8):
    """``n`` held-out inputs (the first rows of the "test" split), [n, 64]."""
    return datasets.load_digits("test")[0][:n]


def train(seed=DEFAULTS["seed"], epochs=DEFAULTS["epochs"], verbose=0,
          comparison_seeds=DEFAULTS["comparison_seeds"]):
    """Train the GMMConv2D CNN (the zoo model) and the Conv2D baseline the same
    way, with seeds ``seed, seed + 1, ...`` (``comparison_seeds`` of them;
    3-5 minutes on 2 CPU cores); returns ``(model, record)``."""
    seed = check_seed(seed, allow_none=False)
    epochs = check_positive_int(epochs, "epochs")
    comparison_seeds = check_positive_int(comparison_seeds, "comparison_seeds")
    seeds = [seed + i for i in range(comparison_seeds)]
    x_train, y_train = datasets.load_digits("train")
    batch_size = DEFAULTS["batch_size"]
    steps = epochs * _recipe.steps_per_epoch(len(x_train), batch_size)
    runs, counts = {kind: {} for kind in CONV_KINDS}, {}
    plan = [(run_seed, kind) for run_seed in seeds for kind in CONV_KINDS]
    for i, (run_seed, kind) in enumerate(plan, 1):
        main = run_seed == seed
        _recipe.say(verbose, NAME, f"run {i}/{len(plan)}: the CNN with {kind}, seed "
                    f"{run_seed}, {_recipe.count(epochs, 'epoch')}"
                    + ("" if main else " (for the recorded spread; epochs not shown)"))
        fitted = build(seed=run_seed, conv=kind, steps=steps)
        start = time.perf_counter()
        history = fitted.fit(x_train, y_train, batch_size=batch_size,
                             epochs=epochs, shuffle=True,
                             verbose=verbose if main else 0)
        seconds = time.perf_counter() - start
        runs[kind][str(run_seed)] = {**evaluate(fitted),
                                     "seconds": round(seconds, 1)}
        _recipe.say(verbose, NAME, f"run {i}/{len(plan)} done in {seconds:.0f} s: "
                    f"test accuracy {runs[kind][str(run_seed)]['accuracy']:.4f}")
        counts[kind] = {"convolution": conv_parameters(fitted),
                        "total": int(fitted.count_params())}
        if kind == "GMMConv2D" and main:
            model, model_history, model_seconds = fitted, history, seconds

    comparison = {"split": "test", "seeds": seeds}
    for kind in CONV_KINDS:
        accuracies = [runs[kind][str(s)]["accuracy"] for s in seeds]
        comparison[kind] = {"per_seed": runs[kind],
                            "accuracy_mean": float(np.mean(accuracies)),
                            "accuracy_std": float(np.std(accuracies)),
                            "parameters": counts[kind]}
    ratio = counts["Conv2D"]["convolution"] / counts["GMMConv2D"]["convolution"]
    gap = (comparison["Conv2D"]["accuracy_mean"]
           - comparison["GMMConv2D"]["accuracy_mean"])
    comparison.update(convolution_parameter_ratio=ratio, accuracy_gap_points=100 * gap,
                      target_met=bool(gap <= 0.01 and ratio >= 3))
    baseline, measured = runs["Conv2D"][str(seed)], evaluate(model)
    metrics = {key: {"value": measured[key], "reference": {
        "value": baseline[key],
        "source": f"keras_gmm.zoo.gmmconv_digits.build(seed={seed}, conv='Conv2D')",
    }} for key in measured}
    training = _recipe.fit_record(
        seed, epochs, batch_size, model_history, model_seconds,
        initial_learning_rate=DEFAULTS["learning_rate"], decay_steps=steps)
    training.update(final_train_accuracy=float(model_history.history["accuracy"][-1]),
                    parameters=counts, comparison=comparison)
    return model, {"metrics": metrics, "training": training}
