"""Zoo recipe ``gmmconv_digits``: a CNN on the 8x8 digits whose convolutions
are :class:`keras_gmm.GMMConv2D`, next to the same CNN with Conv2D.

Task: classify :func:`keras_gmm.datasets.load_digits` (scikit-learn's 1,797
8x8 digits, pixels / 16, one fixed stratified split: 1,343 "train" / 454
"test"); trained on "train", scored on the held-out "test" split.

Model: ``x [n, 64]`` as the dataset returns it -> ``Reshape((8, 8, 1))`` ->
``GMMConv2D(32, 5, padding="same", relu)`` -> ``GMMConv2D(64, 5,
padding="same", relu)`` -> ``MaxPooling2D(2)`` -> ``Flatten`` ->
``Dropout(0.3)`` -> ``Dense(10, softmax)`` -> class probabilities ``[n, 10]``
(float32). Each GMMConv2D has ``num_components=8`` diagonal Gaussian bumps
shared by its channel pairs and ``geometry_gain=10`` (the bumps' means and
scales learn 10x faster under Adam); so its two convolutions hold 16,800
parameters where the same CNN with ``keras.layers.Conv2D`` (5 x 5) holds
52,096 (3.1x fewer). Trained with sparse categorical cross-entropy, Adam
(cosine decay 3e-3 -> 0 over 120 epochs), batch 64.

The baseline, ``keras.layers.Conv2D`` in place of each GMMConv2D and nothing
else changed, is trained the same way (same seeds, data, schedule) and its
held-out accuracy recorded next to ours, for the recipe's seed and for three
seeds (mean and standard deviation).

How the design was chosen: by 3-fold cross-validation on the "train" split
only (stratified folds of about 448 images, one seed per fold), never on
"test". Mean accuracy (conv parameters):

- Conv2D 5x5: 0.990 (60 epochs), 0.993 (120 epochs) (52,096);
- GMMConv2D, K=6, 60 epochs: bumps starting half a lattice cell wide
  (1.25 px) 0.962 (on a 20% hold-out), starting at 0.3 / 0.5 (the layer's
  default) / 0.75 px: 0.978 / 0.983 / 0.979; "full" covariances 0.983;
  ``geometry_gain`` 5 / 20: 0.984 / 0.984 (12,624);
- K=6, 120 epochs: 0.986; with ``geometry_gain=10``: 0.987 (12,624);
- K=8, 60 epochs: 0.984; with ``geometry_gain=10``: 0.986; K=8, 120 epochs:
  0.987; with ``geometry_gain=10``: **0.988, this model** (16,800);
- per-pair bumps (``share_gaussians=False``), K=1 at random positions, "diag"
  or "full": 0.979 (10,496 / 12,576);
- 7x7 kernels: Conv2D 0.988; GMMConv2D K=12 0.984.

Sharp initial bumps matter most; more epochs, more bumps and a faster
geometry each add a little. On these folds the chosen model stays about 0.45
points below the Conv2D CNN trained the same way. (A first version, K=6 with
60 epochs, had scored 0.974 against Conv2D's 0.985 on "test"; the search
above followed it, on the train folds only.) On "test", over 3 seeds, the
recorded run gives GMMConv2D 0.986 +- 0.003 and Conv2D 0.982 +- 0.002: the
difference is within the noise of 454 images (one image = 0.22 points).

Metrics on the held-out "test" split: ``accuracy`` (argmax of the
probabilities) and ``nll`` (mean cross-entropy, nats).

Retrain in place (from the repository root)::

    keras-gmm zoo train gmmconv_digits --output-dir saved_models/gmmconv_digits
"""

import time

import numpy as np

from keras_gmm import datasets
from keras_gmm.zoo._files import check_int, save_trained_model

NAME = "gmmconv_digits"
DESCRIPTION = (
    "CNN classifying scikit-learn's 8x8 digits whose two convolutions are "
    "keras_gmm.GMMConv2D (kernels = mixtures of 8 shared Gaussian bumps): "
    "3.1x fewer convolution parameters than the same CNN with Conv2D. "
    "Input: x of shape [n, 64] exactly as "
    "keras_gmm.datasets.load_digits returns it (reshaped to 8x8x1 inside the "
    "model). Output: class probabilities [n, 10] (float32)."
)

KERNEL_SIZE = 5
FILTERS = (32, 64)
NUM_COMPONENTS = 8
GEOMETRY_GAIN = 10.0
COVARIANCE_TYPE = "diag"
DROPOUT = 0.3
ARCHITECTURE = (
    "Input x [n, 64] -> Reshape((8, 8, 1)) -> "
    + " -> ".join(
        f"GMMConv2D({f}, {KERNEL_SIZE}, num_components={NUM_COMPONENTS}, "
        f"covariance_type='{COVARIANCE_TYPE}', share_gaussians=True, "
        f"geometry_gain={GEOMETRY_GAIN:g}, "
        "padding='same', activation='relu')"
        for f in FILTERS
    )
    + f" -> MaxPooling2D(2) -> Flatten -> Dropout({DROPOUT}) -> "
    "Dense(10, softmax) -> probabilities [n, 10]"
)

TRAIN_SPLIT, EVALUATION_SPLIT = "train", "test"
_TRAIN_SIZE, _TEST_SIZE = 1343, 454  # sizes of datasets.load_digits' splits
DATASET = {
    "function": "keras_gmm.datasets.load_digits",
    "train_split": TRAIN_SPLIT,
    "evaluation_split": EVALUATION_SPLIT,
    "splits": {
        "train": {"n": _TRAIN_SIZE, **datasets.DIGITS_SPLIT},
        "test": {"n": _TEST_SIZE, **datasets.DIGITS_SPLIT},
    },
    "inputs": "x, float32 [n, 64], pixel / 16 in [0, 1]",
    "targets": "y, int64 [n], digit 0-9",
}

# A forward pass is deterministic, so on the same machine the metrics are
# reproduced exactly; the accuracy tolerance accepts one of the 454 test
# images flipping its argmax on other hardware (a near tie).
_ONE_IMAGE = 0.0025
METRICS = {
    "accuracy": {
        "unit": "fraction",
        "split": EVALUATION_SPLIT,
        "meaning": (
            "mean(argmax(probabilities) == digit) on the held-out 'test' split "
            "(keras_gmm.datasets.load_digits('test'), 454 images); higher is "
            "better"
        ),
        "lower_is_better": False,
        "tolerance": _ONE_IMAGE,
    },
    "nll": {
        "unit": "nats",
        "split": EVALUATION_SPLIT,
        "meaning": (
            "mean cross-entropy -log p(digit | image) on the held-out 'test' "
            "split; lower is better"
        ),
        "lower_is_better": True,
        "tolerance": 1e-3,
    },
}

DEFAULTS = {
    "seed": 0,
    "epochs": 120,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "comparison_seeds": 3,
}

CONV_KINDS = ("GMMConv2D", "Conv2D")


def _conv(kind, filters, name):
    import keras

    import keras_gmm

    if kind == "GMMConv2D":
        return keras_gmm.GMMConv2D(
            filters,
            KERNEL_SIZE,
            num_components=NUM_COMPONENTS,
            covariance_type=COVARIANCE_TYPE,
            geometry_gain=GEOMETRY_GAIN,
            padding="same",
            activation="relu",
            name=name,
        )
    if kind == "Conv2D":
        return keras.layers.Conv2D(
            filters, KERNEL_SIZE, padding="same", activation="relu", name=name
        )
    raise ValueError(f"`conv` must be one of {CONV_KINDS}; received conv={kind!r}.")


def _steps_per_epoch(n, batch_size):
    return -(-n // batch_size)


def build(
    seed=DEFAULTS["seed"],
    conv="GMMConv2D",
    steps=None,
    learning_rate=DEFAULTS["learning_rate"],
):
    """The compiled, untrained CNN.

    Args:
        seed: seeds the weight initialisers and dropout (through
            ``keras.utils.set_random_seed``, which also seeds Python, NumPy
            and TensorFlow globally).
        conv: "GMMConv2D" (the zoo model) or "Conv2D" (the baseline: the same
            CNN with ``keras.layers.Conv2D``).
        steps: optimizer steps the cosine schedule decays over (``None``: the
            default epochs over the "train" split).
        learning_rate: initial learning rate of the cosine schedule.
    """
    import keras

    if conv not in CONV_KINDS:
        raise ValueError(f"`conv` must be one of {CONV_KINDS}; received conv={conv!r}.")
    keras.utils.set_random_seed(seed)
    if steps is None:
        steps = DEFAULTS["epochs"] * _steps_per_epoch(
            _TRAIN_SIZE, DEFAULTS["batch_size"]
        )
    inputs = keras.Input((64,), name="x")
    hidden = keras.layers.Reshape((8, 8, 1), name="to_image")(inputs)
    for i, filters in enumerate(FILTERS):
        hidden = _conv(conv, filters, f"conv_{i}")(hidden)
    hidden = keras.layers.MaxPooling2D(2, name="pool")(hidden)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    hidden = keras.layers.Dropout(DROPOUT, name="dropout")(hidden)
    outputs = keras.layers.Dense(
        10, activation="softmax", dtype="float32", name="probabilities"
    )(hidden)
    name = NAME if conv == "GMMConv2D" else f"{NAME}_conv2d_baseline"
    model = keras.Model(inputs, outputs, name=name)
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, int(steps))
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def conv_parameters(model):
    """Number of parameters of the model's convolution layers (GMMConv2D or
    Conv2D, biases included)."""
    import keras

    import keras_gmm

    return int(
        sum(
            layer.count_params()
            for layer in model.layers
            if isinstance(layer, (keras_gmm.GMMConv2D, keras.layers.Conv2D))
        )
    )


def _scores(model, x, y):
    probs = np.asarray(model.predict(x, batch_size=512, verbose=0), np.float64)
    accuracy = float(np.mean(probs.argmax(axis=1) == y))
    picked = probs[np.arange(len(y)), y]
    nll = float(-np.mean(np.log(np.maximum(picked, 1e-300))))
    return {"accuracy": accuracy, "nll": nll}


def evaluate(model):
    """``{"accuracy", "nll"}`` on the held-out "test" split."""
    x_test, y_test = datasets.load_digits(EVALUATION_SPLIT)
    return _scores(model, x_test, y_test)


def example_inputs(n=8):
    """``n`` held-out inputs (the first rows of the "test" split), [n, 64]."""
    x_test, _ = datasets.load_digits(EVALUATION_SPLIT)
    return x_test[:n]


def _fit(conv, seed, epochs, verbose):
    x_train, y_train = datasets.load_digits(TRAIN_SPLIT)
    batch_size = DEFAULTS["batch_size"]
    steps = epochs * _steps_per_epoch(len(x_train), batch_size)
    model = build(seed=seed, conv=conv, steps=steps)
    start = time.perf_counter()
    history = model.fit(
        x_train, y_train, batch_size=batch_size, epochs=epochs, shuffle=True,
        verbose=verbose,
    )
    return model, history, time.perf_counter() - start, steps


def train(
    output_dir,
    seed=DEFAULTS["seed"],
    epochs=DEFAULTS["epochs"],
    verbose=0,
    comparison_seeds=DEFAULTS["comparison_seeds"],
):
    """Train the GMMConv2D CNN (saved) and the Conv2D baseline; write the files.

    The GMMConv2D CNN trained with ``seed`` is written to ``output_dir``
    (``model.keras`` + ``metadata.json``). The same CNN with Conv2D is trained
    the same way; both are also trained with seeds ``seed + 1, ...`` up to
    ``comparison_seeds`` seeds, and the metadata records the held-out
    accuracy of every run, their mean and standard deviation, and the
    convolution parameter counts. About 3-5 minutes on 2 CPU cores with the
    defaults (6 trainings of 120 epochs).

    Args:
        output_dir: folder to write into.
        seed: seed of the saved model (and of the first comparison run).
        epochs: passes over the 1,343 training images.
        verbose: Keras ``fit`` verbosity of the saved model's training.
        comparison_seeds: number of seeds of the comparison (>= 1; 1 trains
            only the saved model and one baseline).
    """
    seed = check_int(seed, "seed")
    epochs = check_int(epochs, "epochs", minimum=1)
    comparison_seeds = check_int(comparison_seeds, "comparison_seeds", minimum=1)
    seeds = [seed + i for i in range(comparison_seeds)]

    runs = {kind: {} for kind in CONV_KINDS}
    counts = {}
    model = history = seconds = steps = None
    for run_seed in seeds:
        for kind in CONV_KINDS:
            fitted, fit_history, fit_seconds, fit_steps = _fit(
                kind, run_seed, epochs, verbose if run_seed == seed else 0
            )
            scores = evaluate(fitted)
            runs[kind][str(run_seed)] = {**scores, "seconds": round(fit_seconds, 1)}
            counts[kind] = {
                "convolution": conv_parameters(fitted),
                "total": int(fitted.count_params()),
            }
            if kind == "GMMConv2D" and run_seed == seed:
                model, history, seconds, steps = (
                    fitted, fit_history, fit_seconds, fit_steps
                )

    measured = evaluate(model)
    baseline = runs["Conv2D"][str(seed)]
    metrics = {key: {"value": measured[key], **spec} for key, spec in METRICS.items()}
    for key in METRICS:
        metrics[key]["reference"] = {
            "name": "the same CNN with keras.layers.Conv2D (5x5), trained the same way",
            "value": baseline[key],
            "source": f"keras_gmm.zoo.gmmconv_digits.build(seed={seed}, conv='Conv2D')",
        }

    comparison = {"split": EVALUATION_SPLIT, "seeds": seeds}
    for kind in CONV_KINDS:
        accuracies = [runs[kind][str(s)]["accuracy"] for s in seeds]
        comparison[kind] = {
            "per_seed": runs[kind],
            "accuracy_mean": float(np.mean(accuracies)),
            "accuracy_std": float(np.std(accuracies)),
            "parameters": counts[kind],
        }
    ratio = counts["Conv2D"]["convolution"] / counts["GMMConv2D"]["convolution"]
    gap = (
        comparison["Conv2D"]["accuracy_mean"]
        - comparison["GMMConv2D"]["accuracy_mean"]
    )
    comparison["convolution_parameter_ratio"] = ratio
    comparison["accuracy_gap_points"] = 100 * gap
    comparison["target"] = (
        "accuracy within 1 point of the Conv2D CNN (mean over seeds) with at "
        f"least 3x fewer convolution parameters: gap {100 * gap:.2f} points, "
        f"{ratio:.2f}x fewer: {'met' if gap <= 0.01 and ratio >= 3 else 'NOT met'}"
    )

    training = {
        "seed": seed,
        "epochs": epochs,
        "batch_size": DEFAULTS["batch_size"],
        "optimizer": {
            "name": "Adam",
            "learning_rate": {
                "schedule": "keras.optimizers.schedules.CosineDecay",
                "initial_learning_rate": DEFAULTS["learning_rate"],
                "decay_steps": steps,
            },
        },
        "loss": "sparse_categorical_crossentropy",
        "shuffle": True,
        "seconds": round(seconds, 1),
        "final_train_loss": float(history.history["loss"][-1]),
        "final_train_accuracy": float(history.history["accuracy"][-1]),
        "parameters": counts,
        "comparison": comparison,
    }
    return save_trained_model(
        model,
        output_dir,
        name=NAME,
        description=DESCRIPTION,
        architecture=ARCHITECTURE,
        dataset=DATASET,
        metrics=metrics,
        training=training,
    )
