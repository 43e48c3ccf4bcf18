"""Zoo recipe ``mdn_inverse_sine``: a mixture density network for ``p(y | x)``
on Bishop's inverse-sine problem (:func:`keras_gmm.datasets.inverse_sine_split`).

``x [n, 1] -> Normalization -> 3 x Dense(128, relu) -> MixtureDensityHead(20,
event_size=1)``, trained by its negative log-likelihood. What the model is,
how it was chosen and what it scores: ``saved_models/mdn_inverse_sine/
metadata.json`` (``keras-gmm zoo info mdn_inverse_sine``).
"""

import time

import keras
import numpy as np

from keras_gmm import datasets
from keras_gmm._validation import check_positive_int, check_seed
from keras_gmm.layers import MixtureDensityHead
from keras_gmm.zoo import _recipe

NAME = "mdn_inverse_sine"
NUM_COMPONENTS = 20
HIDDEN_UNITS = (128, 128, 128)
DEFAULTS = {"seed": 0, "epochs": 200, "batch_size": 256, "learning_rate": 3e-3,
            "final_learning_rate_fraction": 0.01}


def build(seed=DEFAULTS["seed"], steps=None, learning_rate=DEFAULTS["learning_rate"],
          final_learning_rate_fraction=DEFAULTS["final_learning_rate_fraction"]):
    """The compiled, untrained model (seeded by ``keras.utils.set_random_seed``);
    Adam's cosine schedule decays over ``steps`` (default: the default epochs)
    from ``learning_rate`` to ``learning_rate * final_learning_rate_fraction``."""
    keras.utils.set_random_seed(seed)
    x_train, _ = datasets.inverse_sine_split("train")
    if steps is None:
        steps = DEFAULTS["epochs"] * _recipe.steps_per_epoch(
            len(x_train), DEFAULTS["batch_size"])
    inputs = keras.Input((1,), name="x")
    hidden = keras.layers.Normalization(
        mean=float(np.mean(x_train, dtype=np.float64)),
        variance=float(np.var(x_train, dtype=np.float64)), name="standardize_x",
    )(inputs)
    for i, units in enumerate(HIDDEN_UNITS):
        hidden = keras.layers.Dense(units, activation="relu",
                                    name=f"hidden_{i}")(hidden)
    head = MixtureDensityHead(num_components=NUM_COMPONENTS, event_size=1, seed=seed,
                              name="mdn_head")
    model = keras.Model(inputs, head(hidden), name="mdn_inverse_sine")
    schedule = keras.optimizers.schedules.CosineDecay(
        learning_rate, decay_steps=int(steps), alpha=final_learning_rate_fraction)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss=head.loss())
    return model


def nll_per_sample(model, x, y):
    """Mean ``-log p(y | x)`` (nats) of ``model`` on ``(x, y)``, in float64."""
    head = _recipe.find_layer(model, MixtureDensityHead)
    params = _recipe.predict(model, x, batch_size=2048)
    return float(-np.mean(np.asarray(head.log_prob(params, y), np.float64)))


def evaluate(model):
    """``{"nll_per_sample"}`` on the held-out "test" split."""
    x_test, y_test = datasets.inverse_sine_split("test")
    return {"nll_per_sample": nll_per_sample(model, x_test, y_test)}


def example_inputs(n=8):
    """``n`` held-out inputs (the first rows of the "test" split), [n, 1]."""
    return datasets.inverse_sine_split("test")[0][:n]


def train(seed=DEFAULTS["seed"], epochs=DEFAULTS["epochs"], verbose=0):
    """Train from scratch (1-2 minutes on 2 CPU cores); ``(model, record)``.
    ``verbose``: as ``keras.Model.fit``'s, with a line before and after."""
    seed = check_seed(seed, allow_none=False)
    epochs = check_positive_int(epochs, "epochs")
    batch_size = DEFAULTS["batch_size"]
    x_train, y_train = datasets.inverse_sine_split("train")
    steps = epochs * _recipe.steps_per_epoch(len(x_train), batch_size)
    model = build(seed=seed, steps=steps)
    _recipe.say(verbose, NAME, f"training the MDN: {_recipe.count(epochs, 'epoch')} of "
                f"{len(x_train)} samples, batch {batch_size}, seed {seed}")
    start = time.perf_counter()
    history = model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs,
                        shuffle=True, verbose=verbose)
    seconds = time.perf_counter() - start
    nll = evaluate(model)["nll_per_sample"]
    floor = datasets.inverse_sine_conditional_entropy()
    _recipe.say(verbose, NAME, f"trained in {seconds:.0f} s: test NLL {nll:.4f} "
                f"nats per sample (the exact floor: {floor:.4f})")
    training = _recipe.fit_record(
        seed, epochs, batch_size, history, seconds,
        initial_learning_rate=DEFAULTS["learning_rate"], decay_steps=steps,
        alpha=DEFAULTS["final_learning_rate_fraction"])
    training["final_val_nll_per_sample"] = nll_per_sample(
        model, *datasets.inverse_sine_split("val"))
    metrics = {"nll_per_sample": {"value": nll, "gap_to_floor": nll - floor}}
    return model, {"metrics": metrics, "training": training}
