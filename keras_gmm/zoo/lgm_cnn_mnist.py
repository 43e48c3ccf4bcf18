"""Zoo recipe ``lgm_cnn_mnist``: a CNN on 28x28 MNIST whose convolutions are
:class:`keras_gmm.GMMConv2D` and whose classifier is the large-margin
Gaussian mixture (L-GM) head, :class:`keras_gmm.GaussianMixtureClassifier`
trained with :class:`keras_gmm.GMMClassificationLoss`; trained next to the
same CNN with Conv2D and a softmax cross-entropy head, and, for
out-of-distribution detection, both again without two digit classes.

``x [n, 28, 28, 1] -> 2 x (GMMConv2D(5x5, 6 shared diagonal bumps,
geometry_gain=10, relu) -> MaxPooling2D) -> Flatten -> Dropout(0.3) ->
Dense(64) features -> GaussianMixtureClassifier(10, learn_covariance=False,
"logits_and_distances")``.
The card (settings searched, comparison, OOD figures):
``saved_models/lgm_cnn_mnist/metadata.json``.
"""

import time

import keras
import numpy as np
from scipy.special import log_softmax

from keras_gmm import datasets, metrics
from keras_gmm._validation import (
    check_bool,
    check_one_of,
    check_positive_int,
    check_seed,
)
from keras_gmm.layers import GaussianMixtureClassifier, GMMConv2D
from keras_gmm.losses import GMMClassificationLoss
from keras_gmm.zoo import _recipe
from keras_gmm.zoo.gmmconv_digits import conv_parameters  # the one count

NAME = "lgm_cnn_mnist"
KERNEL_SIZE = 5
FILTERS = (16, 32)
NUM_COMPONENTS = 6
GEOMETRY_GAIN = 10.0
DROPOUT = 0.3
FEATURES = 64
ALPHA = 1.0
LIKELIHOOD_WEIGHT = 0.1
#: The L-GM head's class Gaussians keep a fixed unit (identity) covariance:
#: only their means are learned (``learn_covariance=False``), chosen on "val".
LEARN_COVARIANCE = False
#: The digits left out of training in the out-of-distribution protocol
#: (chosen before any result was seen).
OOD_CLASSES = (8, 9)
#: "lgm": GMMConv2D + the L-GM head and loss (the zoo model); "softmax": the
#: same CNN with keras.layers.Conv2D and a Dense softmax, cross-entropy.
VARIANTS = ("lgm", "softmax")
TASKS = ("classification", "ood")
DEFAULTS = {"seed": 0, "epochs": 40, "batch_size": 64, "learning_rate": 3e-3,
            "comparison_seeds": 3}


def images(split):
    """``(x [n, 28, 28, 1], y [n])`` of :func:`keras_gmm.datasets.load_mnist`."""
    x, y = datasets.load_mnist(split, flatten=False)
    return x[..., None], y


def build(seed=DEFAULTS["seed"], variant="lgm", num_classes=10, steps=None,
          learning_rate=DEFAULTS["learning_rate"]):
    """The compiled, untrained CNN (seeded by ``keras.utils.set_random_seed``).

    ``variant``: "lgm" (the zoo model: GMMConv2D, L-GM head and loss) or
    "softmax" (Conv2D, Dense softmax, cross-entropy; nothing else changed).
    Adam's cosine schedule decays from ``learning_rate`` over ``steps``
    (default: the default epochs over the "train" split).
    """
    check_one_of(variant, "variant", VARIANTS)
    num_classes = check_positive_int(num_classes, "num_classes")
    keras.utils.set_random_seed(seed)
    if steps is None:
        steps = DEFAULTS["epochs"] * _recipe.steps_per_epoch(
            len(images("train")[1]), DEFAULTS["batch_size"])
    conv, options = keras.layers.Conv2D, {}
    if variant == "lgm":
        conv, options = GMMConv2D, {"num_components": NUM_COMPONENTS,
                                    "covariance_type": "diag",
                                    "geometry_gain": GEOMETRY_GAIN}
    inputs = keras.Input((28, 28, 1), name="x")
    hidden = inputs
    for i, filters in enumerate(FILTERS):
        hidden = conv(filters, KERNEL_SIZE, padding="same", activation="relu",
                      name=f"conv_{i}", **options)(hidden)
        hidden = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(hidden)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    hidden = keras.layers.Dropout(DROPOUT, name="dropout")(hidden)
    features = keras.layers.Dense(FEATURES, name="features")(hidden)
    if variant == "lgm":
        outputs = GaussianMixtureClassifier(
            num_classes, learn_covariance=LEARN_COVARIANCE,
            output_mode="logits_and_distances", name="classifier",
        )(features)
        loss = GMMClassificationLoss(alpha=ALPHA, likelihood_weight=LIKELIHOOD_WEIGHT)
    else:
        outputs = keras.layers.Dense(num_classes, activation="softmax",
                                     dtype="float32", name="classifier")(features)
        loss = "sparse_categorical_crossentropy"
    suffix = "" if num_classes == 10 else f"_{num_classes}_classes"
    model = keras.Model(inputs, outputs, name=f"{NAME}_{variant}{suffix}")
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, int(steps))
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss)
    return model


def _log_probabilities(model, x):
    """``log p(class | x)`` ``[n, C]`` (float64) of either variant."""
    out = _recipe.predict(model, x, batch_size=500).astype(np.float64)
    if out.ndim == 3:  # the L-GM head: [n, C, 2], logits then distances
        return log_softmax(out[..., 0], axis=-1)
    return np.log(np.maximum(out, 1e-300))


def log_likelihood(model, x):
    """``log p(f)`` ``[n]`` of the features of ``x`` under the model's class
    mixture (:meth:`GaussianMixtureClassifier.log_likelihood`): the OOD score."""
    head = _recipe.find_layer(model, GaussianMixtureClassifier)
    to_features = keras.Model(model.input, model.get_layer("features").output)
    features = _recipe.predict(to_features, x, batch_size=500)
    return keras.ops.convert_to_numpy(head.log_likelihood(features)).astype(np.float64)


def evaluate(model):
    """``{"accuracy", "nll"}`` on the held-out "test" split (1,000 images)."""
    x, y = images("test")
    log_p = _log_probabilities(model, x)
    return {"accuracy": float(np.mean(log_p.argmax(axis=1) == y)),
            "nll": float(-np.mean(log_p[np.arange(len(y)), y]))}


def known_classes():
    """The digits the OOD models are trained on, in label order."""
    return [c for c in range(10) if c not in OOD_CLASSES]


def evaluate_ood(model):
    """OOD scores of a model trained on :func:`known_classes` only, on the
    whole "test" split: the images of ``OOD_CLASSES`` are the positives.
    ``auroc_msp``: AUROC of ``-max p(class | x)``; ``auroc_log_likelihood``
    (L-GM only): of ``-log p(f)``; ``known_accuracy`` on the known digits."""
    x, y = images("test")
    unknown = np.isin(y, OOD_CLASSES)
    log_p = _log_probabilities(model, x)
    labels = np.array(known_classes())[log_p.argmax(axis=1)]
    scores = {"known_accuracy": float(np.mean(labels[~unknown] == y[~unknown])),
              "auroc_msp": metrics.roc_auc_score(unknown, -log_p.max(axis=1))}
    if isinstance(model.layers[-1], GaussianMixtureClassifier):
        scores["auroc_log_likelihood"] = metrics.roc_auc_score(
            unknown, -log_likelihood(model, x))
    return scores


def example_inputs(n=8):
    """``n`` held-out inputs (the first images of the "test" split), [n, 28, 28, 1]."""
    return images("test")[0][:n]


def train(seed=DEFAULTS["seed"], epochs=DEFAULTS["epochs"], verbose=0,
          comparison_seeds=DEFAULTS["comparison_seeds"], ood=True, train_rows=None):
    """Train the L-GM CNN (the zoo model) and the Conv2D softmax baseline the
    same way, with seeds ``seed, seed + 1, ...`` (``comparison_seeds`` of
    them), on all ten digits and (``ood``) again without ``OOD_CLASSES``
    (about 10-15 minutes on 2 CPU cores); returns ``(model, record)``.
    ``train_rows``: use only the first rows of "train" (for quick tests)."""
    seed = check_seed(seed, allow_none=False)
    epochs = check_positive_int(epochs, "epochs")
    comparison_seeds = check_positive_int(comparison_seeds, "comparison_seeds")
    ood = check_bool(ood, "ood")
    x_train, y_train = images("train")
    if train_rows is not None:
        train_rows = check_positive_int(train_rows, "train_rows")
        x_train, y_train = x_train[:train_rows], y_train[:train_rows]
    keep = ~np.isin(y_train, OOD_CLASSES)
    relabel = np.full(10, -1, np.int64)
    relabel[known_classes()] = np.arange(len(known_classes()))
    data = {"classification": (x_train, y_train, 10),
            "ood": (x_train[keep], relabel[y_train[keep]], len(known_classes()))}
    batch_size = DEFAULTS["batch_size"]
    seeds = [seed + i for i in range(comparison_seeds)]
    tasks = TASKS if ood else TASKS[:1]
    plan = [(s, task, variant) for s in seeds for task in tasks for variant in VARIANTS]
    runs = {task: {variant: {} for variant in VARIANTS} for task in tasks}
    counts, started = {}, time.perf_counter()
    for i, (run_seed, task, variant) in enumerate(plan, 1):
        x, y, num_classes = data[task]
        main = run_seed == seed and task == "classification" and variant == "lgm"
        steps = epochs * _recipe.steps_per_epoch(len(x), batch_size)
        _recipe.say(verbose, NAME, f"run {i}/{len(plan)}: {task}, {variant}, seed "
                    f"{run_seed}, {num_classes} classes, {len(x)} images, "
                    f"{_recipe.count(epochs, 'epoch')}"
                    + ("" if main else " (for the recorded comparison; epochs not shown)"))
        fitted = build(seed=run_seed, variant=variant, num_classes=num_classes,
                       steps=steps)
        start = time.perf_counter()
        history = fitted.fit(x, y, batch_size=batch_size, epochs=epochs,
                             shuffle=True, verbose=verbose if main else 0)
        seconds = time.perf_counter() - start
        scores = evaluate(fitted) if task == "classification" else evaluate_ood(fitted)
        runs[task][variant][str(run_seed)] = {**scores, "seconds": round(seconds, 1)}
        _recipe.say(verbose, NAME, f"run {i}/{len(plan)} done in {seconds:.0f} s: "
                    + ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        if task == "classification":
            counts[variant] = {"convolution": conv_parameters(fitted),
                               "total": int(fitted.count_params())}
        if main:
            model, model_history, model_seconds = fitted, history, seconds

    comparison = {"split": "test", "seeds": seeds}
    for variant in VARIANTS:
        per_seed = runs["classification"][variant]
        comparison[variant] = {"per_seed": per_seed,
                               **_recipe.seed_summary(per_seed, ("accuracy", "nll")),
                               "parameters": counts[variant]}
    ratio = counts["softmax"]["convolution"] / counts["lgm"]["convolution"]
    gap = (comparison["lgm"]["accuracy"]["mean"]
           - comparison["softmax"]["accuracy"]["mean"])
    comparison.update(convolution_parameter_ratio=ratio,
                      accuracy_gain_points=100 * gap,
                      target_met=bool(gap >= 0 and ratio >= 3))
    training = _recipe.fit_record(
        seed, epochs, batch_size, model_history, model_seconds,
        initial_learning_rate=DEFAULTS["learning_rate"],
        decay_steps=epochs * _recipe.steps_per_epoch(len(x_train), batch_size))
    training.update(loss={"name": "keras_gmm.GMMClassificationLoss", "alpha": ALPHA,
                          "likelihood_weight": LIKELIHOOD_WEIGHT},
                    train_rows=len(x_train), parameters=counts,
                    comparison=comparison)
    if ood:
        lgm, softmax = runs["ood"]["lgm"], runs["ood"]["softmax"]
        block = {"split": "test", "seeds": seeds,
                 "held_out_classes": list(OOD_CLASSES),
                 "positives": int(np.isin(images("test")[1], OOD_CLASSES).sum()),
                 "lgm": {"per_seed": lgm, **_recipe.seed_summary(
                     lgm, ("auroc_log_likelihood", "auroc_msp", "known_accuracy"))},
                 "softmax": {"per_seed": softmax, **_recipe.seed_summary(
                     softmax, ("auroc_msp", "known_accuracy"))}}
        ll_mean = block["lgm"]["auroc_log_likelihood"]["mean"]
        msp_mean = block["softmax"]["auroc_msp"]["mean"]
        block.update(auroc_gain=ll_mean - msp_mean, target_met=bool(ll_mean > msp_mean))
        training["ood"] = block
    training["seconds_all_runs"] = round(time.perf_counter() - started, 1)
    baseline, measured = runs["classification"]["softmax"][str(seed)], evaluate(model)
    record_metrics = {key: {"value": measured[key], "reference": {
        "value": baseline[key],
        "source": f"keras_gmm.zoo.lgm_cnn_mnist.build(seed={seed}, variant='softmax')",
    }} for key in measured}
    return model, {"metrics": record_metrics, "training": training}
