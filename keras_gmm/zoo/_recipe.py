"""What the zoo's recipes share, written once: layer lookup, scores, naming
clusters after classes, seed summaries, baselines, loading and writing.

Imports TensorFlow (through Keras and the layers): :mod:`keras_gmm.zoo`
imports this module only when a model is loaded or trained.
"""

import datetime
import importlib.metadata
import json
import math
import os
import platform
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

import keras_gmm.layers  # noqa: F401  (registers the serializable layers,
import keras_gmm.losses  # noqa: F401  loss and regularizer, so that
import keras_gmm.regularizers  # noqa: F401  load_model needs no custom_objects)
from keras_gmm import metrics, regularizers
from keras_gmm._validation import check_positive_int, check_seed
from keras_gmm.zoo._files import (
    METADATA_FILENAME,
    MODEL_FILENAME,
    sha256_file,
    train_command,
)

EVAL_BATCH_SIZE = 1024
KMEANS_KEY = "sklearn.cluster.KMeans(10, n_init=10) on the raw 64 pixels"


def load_model(path):
    """``keras.saving.load_model(path, safe_mode=True)``, no custom_objects."""
    return keras.saving.load_model(path, safe_mode=True)


def find_layer(model, cls):
    """The last layer of ``model`` that is a ``cls``."""
    found = [layer for layer in model.layers if isinstance(layer, cls)]
    if not found:
        raise ValueError(f"Model {model.name!r} has no {cls.__name__} layer.")
    return found[-1]


def predict(model, x, batch_size=EVAL_BATCH_SIZE):
    """The outputs of ``model`` on ``x`` as NumPy arrays (the structure the
    model returns: an array, a list, a dict), computed eagerly, ``batch_size``
    rows at a time: ``model(batch, training=False)``.

    Not ``model.predict``: it traces a new ``tf.function`` for every model
    and for every new batch shape, and TensorFlow counts those traces
    together for all Keras models (one code object), so evaluating or
    training the zoo's models one after another logged "triggered
    tf.function retracing" warnings. An eager call traces nothing and gives
    the same numbers.
    """
    x = np.asarray(x)
    parts = [model(x[i:i + batch_size], training=False)
             for i in range(0, max(len(x), 1), batch_size)]
    def join(*tensors):
        return np.concatenate([keras.ops.convert_to_numpy(t) for t in tensors])

    return keras.tree.map_structure(join, *parts)


def say(verbose, name, message):
    """One line of a recipe's progress (a phase, a restart, a seed, a
    result), ``"NAME: message"`` on stdout, when ``verbose``."""
    if verbose:
        print(f"{name}: {message}", flush=True)


def count(n, noun):
    """``"1 epoch"``, ``"3 epochs"``: ``n`` and ``noun``, plural unless one."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def steps_per_epoch(n, batch_size):
    return -(-n // batch_size)


def fit_record(seed, epochs, batch_size, history, seconds, **learning_rate):
    """The ``training`` record of a model fitted by Adam with a cosine-decaying
    ``learning_rate`` (its ``initial_learning_rate``, ``decay_steps``, ...)."""
    return {"seed": seed, "epochs": epochs, "batch_size": batch_size,
            "optimizer": {"name": "Adam", "learning_rate": {
                "schedule": "keras.optimizers.schedules.CosineDecay", **learning_rate}},
            "shuffle": True, "seconds": round(seconds, 1),
            "final_train_loss": float(history.history["loss"][-1])}


def cluster_scores(y, labels):
    """:func:`keras_gmm.metrics.clustering_scores` and ``digit_accuracy``
    (``mean(labels == y)``: the clusters named after the classes)."""
    return {**metrics.clustering_scores(y, labels),
            "digit_accuracy": float(np.mean(np.asarray(labels) == np.asarray(y)))}


def name_clusters(layer, labels, y):
    """Renumber ``layer``'s components so that component ``k`` is the one the
    Hungarian matching of ``labels`` to classes ``y`` (0, 1, ...) gives class
    ``k`` (a relabelling: no likelihood changes); returns the order applied."""
    from scipy.optimize import linear_sum_assignment

    counts = np.zeros((layer.num_components,) * 2, np.int64)
    np.add.at(counts, (np.asarray(y), np.asarray(labels)), 1)
    classes, components = linear_sum_assignment(counts, maximize=True)
    order = components[np.argsort(classes)]
    layer.permute_components(order)
    return order


def seed_summary(per_seed, keys):
    """``{key: {"mean", "std", "per_seed"}}`` of the scores of several seeds
    (``per_seed``: ``{seed: {key: value}}``); keys the runs lack are skipped."""
    first = next(iter(per_seed.values()))
    out = {}
    for key in (k for k in keys if k in first):
        values = np.array([s[key] for s in per_seed.values()], np.float64)
        out[key] = {"mean": float(values.mean()), "std": float(values.std()),
                    "per_seed": {str(seed): float(s[key])
                                 for seed, s in per_seed.items()}}
    return out


def digits_baselines(x_train, x_test, y_test, seeds, mixtures):
    """Per seed, scikit-learn's ``KMeans(10)`` on the raw pixels and, for each
    ``key: (features, settings)`` of ``mixtures``, a ``GaussianMixture(10,
    **settings)`` on ``features(seed) -> (z_train, z_test)``; returns
    ``{key: {seed: scores}}`` (the mixtures' with their ``lower_bound``)."""
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    results = {KMEANS_KEY: {}, **{key: {} for key in mixtures}}
    # One BLAS thread: next to TensorFlow's pools more oversubscribe the cores.
    with threadpool_limits(limits=1):
        for seed in seeds:
            km = KMeans(10, n_init=10, random_state=seed).fit(x_train)
            results[KMEANS_KEY][seed] = cluster_scores(y_test, km.predict(x_test))
            for key, (features, settings) in mixtures.items():
                z_train, z_test = features(seed)
                gm = GaussianMixture(10, random_state=seed, **settings).fit(z_train)
                results[key][seed] = {**cluster_scores(y_test, gm.predict(z_test)),
                                      "lower_bound": float(gm.lower_bound_)}
    return results


def kmeans_references(comparison, seed):
    """The k-means baseline of ``comparison`` as the ``reference`` of the
    clustering_accuracy and nmi metrics (its name and meaning: the card's)."""
    return {key: {"reference": {
        "value": comparison[KMEANS_KEY][key]["per_seed"][str(seed)],
        "source": f"sklearn.cluster.KMeans(10, n_init=10, random_state={seed}) "
        "fitted on the train split",
    }} for key in ("clustering_accuracy", "nmi")}


def library_versions():
    """Versions of the libraries a zoo model was trained and saved with."""
    try:
        version = importlib.metadata.version("keras-gmm")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        version = "unknown"
    return {"python": platform.python_version(), "numpy": np.__version__,
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "tensorflow_probability": tfp.__version__, "keras_gmm": version}


def save(model, output_dir, card, record):
    """Write ``model.keras`` and ``metadata.json`` into ``output_dir``; return
    the metadata.

    The metadata is the model's ``card`` (its shipped metadata: description,
    architecture, dataset, notes, each metric's definition, tolerance and
    reference, a baseline's score kept unless the run measures it again, and
    the prose and ``selection`` of its ``training``) with what this run set
    and measured: ``record["metrics"]`` (``{key: value}`` or ``{key:
    {"value": ..., ...}}``) and ``record["training"]``. The model is saved as
    it is (compiled when trained by gradient descent: its keras_gmm loss is
    registered). Both files go to temporary names first, the model first, so
    an interrupted run never leaves a metadata file describing other bytes.
    """
    if set(record["metrics"]) != set(card["metrics"]):
        raise RuntimeError(
            f"The recipe of {card['name']!r} measured {sorted(record['metrics'])}, "
            f"but its card defines {sorted(card['metrics'])}."
        )
    metric_specs = {}
    for key, spec in card["metrics"].items():
        measured = record["metrics"][key]
        measured = measured if isinstance(measured, dict) else {"value": measured}
        fixed = {k: v for k, v in spec.items() if k != "value"}
        if "reference" in measured and "reference" in fixed:
            measured = {**measured,
                        "reference": {**fixed["reference"], **measured["reference"]}}
        metric_specs[key] = {"value": float(measured["value"]), **fixed, **measured}
    training = dict(record["training"])
    for key, value in card["training"].items():
        if key == "selection" or isinstance(value, str):
            training.setdefault(key, value)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp_model = tmp_meta = None
    try:
        fd, tmp_model = tempfile.mkstemp(prefix=".model-", suffix=".keras",
                                         dir=output_dir)
        os.close(fd)
        model.save(tmp_model, overwrite=True)
        commands = train_command(card["name"], epochs=training["epochs"],
                                 seed=training["seed"])
        metadata = {
            "format_version": 1,
            "name": card["name"],
            "description": card["description"],
            "architecture": card.get("architecture"),
            "dataset": card["dataset"],
            "metrics": metric_specs,
            "training": training,
            "model_file": MODEL_FILENAME,
            "sha256": sha256_file(tmp_model),
            "saved_compiled": bool(getattr(model, "compiled", False)),
            **({"loading": card["loading"]} if "loading" in card else {}),
            "train_command": commands[0],
            "train_command_python": commands[1],
            "library_versions": library_versions(),
            "saved_at": datetime.datetime.now(datetime.timezone.utc)
            .replace(microsecond=0).isoformat(),
            **({"notes": card["notes"]} if "notes" in card else {}),
        }
        fd, tmp_meta = tempfile.mkstemp(prefix=".metadata-", suffix=".json",
                                        dir=output_dir)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=2)
            f.write("\n")
        for tmp in (tmp_model, tmp_meta):
            os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; zoo files are shared
        os.replace(tmp_model, output_dir / MODEL_FILENAME)
        os.replace(tmp_meta, output_dir / METADATA_FILENAME)
    finally:
        for tmp in (tmp_model, tmp_meta):
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
    return metadata


class AnnealPrecisionPrior(keras.callbacks.Callback):
    """Lowers the rate of ``regularizer``'s Gamma(``alpha``, beta) precision
    hyperpriors (the zero component's too) geometrically from ``beta_start``
    (first epoch) to ``beta_end`` (epoch ``epochs``); every EM update of the
    prior reads the current ``precision_prior``."""

    def __init__(self, regularizer, epochs, alpha, beta_start, beta_end):
        super().__init__()
        self.regularizer, self.epochs = regularizer, epochs
        self.alpha, self.beta_start, self.beta_end = alpha, beta_start, beta_end

    def on_epoch_begin(self, epoch, logs=None):
        ratio = self.beta_end / self.beta_start
        beta = self.beta_start * ratio ** (epoch / max(self.epochs - 1, 1))
        self.regularizer.precision_prior = (self.alpha, beta)
        self.regularizer.zero_precision_prior = (self.alpha, beta)


class CollapseError(RuntimeError):
    """A clustering collapsed (a cluster took too many images or one is empty)."""


class Contrastive:
    """SimCLR pre-training (Chen et al. 2020) of an encoder on square
    greyscale images, the first phase of a :class:`VaDE` recipe whose latent
    should group images by what they show, not by their pixels.

    Every step draws two augmented views of each image of a batch
    (:meth:`augment`: rotation up to ``rotation`` degrees, scaling by up to
    ``scale`` each way, a shift of up to ``shift`` pixels, both bilinear, a
    ``cutout`` x ``cutout`` square set to zero, Gaussian noise of stddev
    ``noise``, clipped to [0, 1]) and minimises the NT-Xent loss (the
    normalised temperature-scaled cross-entropy, ``temperature``) of a
    projection head (Dense ``projection``, relu between; discarded after; none
    for ``projection=()``: the loss then is on the encoder's output itself) on
    the encoder's output: each view must pick its twin among the ``2 *
    batch_size - 1`` other views. The augmentation runs outside the model
    (nothing of it is saved). Adam, cosine decay from ``learning_rate``.

    Example:

    >>> import keras, numpy as np
    >>> encoder = keras.Sequential([keras.Input((64,)), keras.layers.Dense(4)])
    >>> losses = Contrastive(epochs=1, batch_size=8, cutout=2).pretrain(
    ...     encoder, np.random.default_rng(0).random((16, 64), np.float32), seed=0)
    >>> len(losses)
    1
    """

    def __init__(self, epochs=80, batch_size=256, temperature=0.2, projection=(128, 64),
                 learning_rate=1e-3, rotation=20.0, scale=0.2, shift=3.0, cutout=10,
                 noise=0.1):
        self.epochs = check_positive_int(epochs, "epochs")
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.temperature = float(temperature)
        if isinstance(projection, (str, bytes)) or not hasattr(projection, "__iter__"):
            raise ValueError(
                "`projection` must be a sequence of layer widths, e.g. (128, 64), or "
                f"() for no projection head; received projection={projection!r}.")
        self.projection = tuple(check_positive_int(u, f"projection[{i}]")
                                for i, u in enumerate(projection))
        self.learning_rate = float(learning_rate)
        self.rotation, self.scale, self.shift = float(rotation), float(scale), float(shift)
        self.cutout, self.noise = int(cutout), float(noise)

    def settings(self):
        """The pre-training settings, for a training record."""
        return {"name": "SimCLR NT-Xent (Chen et al. 2020), Adam",
                "epochs": self.epochs, "batch_size": self.batch_size,
                "temperature": self.temperature,
                "projection_head": list(self.projection) if self.projection else
                "none: the NT-Xent loss on the encoder's output itself",
                "learning_rate": self.learning_rate,
                "schedule": "keras.optimizers.schedules.CosineDecay",
                "augmentation": {"rotation_degrees": self.rotation,
                                 "scale": self.scale, "shift_pixels": self.shift,
                                 "cutout_pixels": self.cutout,
                                 "noise_stddev": self.noise}}

    def augment(self, x, generator):
        """Augmented views of flat square images ``x [n, side * side]`` (a
        float32 tensor in [0, 1]), drawn from the ``tf.random.Generator``
        ``generator``; same shape and range."""
        n, pixels = tf.shape(x)[0], x.shape[-1]
        side = math.isqrt(pixels)
        images = tf.reshape(x, (n, side, side, 1))
        angle = generator.uniform((n,), -1.0, 1.0) * (self.rotation * math.pi / 180)
        zoom = 1.0 + generator.uniform((n,), -self.scale, self.scale)
        move = generator.uniform((n, 2), -self.shift, self.shift)
        # The projective transform maps output pixels to input pixels: the
        # inverse of "rotate and zoom about the centre, then move".
        centre = (side - 1) / 2.0
        cos, sin = tf.cos(angle) / zoom, tf.sin(angle) / zoom
        ox, oy = centre + move[:, 0], centre + move[:, 1]
        transforms = tf.stack([cos, sin, centre - cos * ox - sin * oy,
                               -sin, cos, centre + sin * ox - cos * oy,
                               tf.zeros_like(cos), tf.zeros_like(cos)], axis=1)
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=[side, side],
            fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT")
        if self.cutout:
            corner = generator.uniform((n, 2), 0, side - self.cutout + 1, dtype=tf.int32)
            grid = tf.range(side)
            rows = ((grid[None] >= corner[:, :1])
                    & (grid[None] < corner[:, :1] + self.cutout))
            cols = ((grid[None] >= corner[:, 1:])
                    & (grid[None] < corner[:, 1:] + self.cutout))
            hole = rows[:, :, None] & cols[:, None, :]
            images = tf.where(hole[..., None], 0.0, images)
        if self.noise:
            images = images + self.noise * generator.normal(tf.shape(images))
        return tf.reshape(tf.clip_by_value(images, 0.0, 1.0), (n, pixels))

    def nt_xent(self, a, b):
        """The NT-Xent loss of the projections ``a`` and ``b`` ``[n, p]`` of
        two views of the same ``n`` images (row ``i`` of each is a pair)."""
        z = tf.math.l2_normalize(tf.concat([a, b], axis=0), axis=1)
        n = tf.shape(a)[0]
        logits = tf.matmul(z, z, transpose_b=True) / self.temperature
        logits = logits - 1e9 * tf.eye(2 * n)  # a view is not its own twin
        twins = tf.concat([tf.range(n, 2 * n), tf.range(n)], axis=0)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            twins, logits))

    def pretrain(self, encoder, x, seed, verbose=0, name="contrastive", epochs=None):
        """Train ``encoder`` (a Keras model, flat images -> latent) on the
        images ``x`` for ``epochs`` epochs (default: the instance's), seeded
        by ``seed`` (the head's weights, the batches, the views); returns the
        mean loss per epoch."""
        epochs = self.epochs if epochs is None else check_positive_int(epochs, "epochs")
        keras.utils.set_random_seed(seed)
        x = np.asarray(x, np.float32)
        if self.projection:
            head = keras.Sequential(
                [keras.Input(encoder.compute_output_shape((None, x.shape[1]))[1:])]
                + [keras.layers.Dense(u, activation="relu")
                   for u in self.projection[:-1]]
                + [keras.layers.Dense(self.projection[-1])], name="projection_head")
            head_weights = head.trainable_variables
        else:  # the loss on the encoder's output itself
            head, head_weights = (lambda latent, training=None: latent), []
        steps = max(len(x) // self.batch_size, 1)
        batch = min(self.batch_size, len(x))
        optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
            self.learning_rate, steps * epochs))
        weights = encoder.trainable_variables + head_weights
        generator = tf.random.Generator.from_seed(seed)

        @tf.function
        def step(images):
            with tf.GradientTape() as tape:
                views = [head(encoder(self.augment(images, generator), training=True),
                              training=True) for _ in range(2)]
                loss = self.nt_xent(*views)
            optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
            return loss

        rng, losses = np.random.default_rng(seed), []
        for epoch in range(epochs):
            order = rng.permutation(len(x))
            total = 0.0
            for i in range(steps):
                total += float(step(tf.constant(x[order[i * batch:(i + 1) * batch]])))
            losses.append(total / steps)
            if verbose == 2 or (verbose and epoch + 1 == epochs):
                say(True, name, f"contrastive epoch {epoch + 1}/{epochs}: "
                    f"NT-Xent {losses[-1]:.4f}")
        return losses


class VaDE:
    """The VaDE recipe (Jiang et al. 2017) of a zoo model on flat images in
    [0, 1]: the model, its three training phases, restarts and their
    unsupervised selection, written once for every VaDE zoo model.

    The zoo model ``x [n, num_pixels] -> cluster probabilities
    [n, num_components]`` wraps the nested model ``"vade"``: encoder (with
    ``conv_filters``, square images reshaped and convolved by Conv2D
    ``kernel_size``, stride 2, relu, one per entry, then flattened; Dense
    ``hidden``, relu) ``-> z_mean, z_log_var ->`` :class:`keras_gmm.
    GMMPriorSampling` ``(inference="mean") -> z, gamma``; decoder (Dense
    ``decoder_hidden``, default ``reversed(hidden)``, relu; Dense(num_pixels,
    sigmoid)) ``-> images``.
    :meth:`fit_once` trains it without labels. Phase 1, without
    ``contrastive``: a denoising autoencoder (Gaussian input noise
    ``input_noise``; with ``max_shift`` > 0 and square images, every epoch
    also shifts each image by up to ``max_shift`` pixels each way,
    zero-filled); with a :class:`Contrastive` ``contrastive``: the encoder
    means by contrastive learning, whitened, then the decoder alone on them
    (``decoder_epochs``); with ``unit_latent`` the latent is instead the
    direction of the Dense output the contrastive loss trained (its unit
    vector times ``sqrt(latent_dim)``: layers ``z_direction``, ``z_unit``,
    ``z_mean``), not whitened. Phase 2: the prior from a :class:`keras_gmm.
    GaussianMixtureEM` (settings ``em``; the prior takes its covariance
    type) on the encoder means. Phase 3: the
    ELBO (Adam, cosine decay from ``learning_rate`` to ``lr_floor`` times it).
    :meth:`fit` keeps, among restarts that did not collapse on the training
    images, the one with the lowest negative ELBO there.

    ``load(split) -> (x, y)``: the dataset function (x flat, float32 in [0,
    1]).

    Example:

    >>> import numpy as np
    >>> from keras_gmm import datasets
    >>> vade = VaDE("tiny", datasets.load_digits, 64, (16,), latent_dim=2,
    ...             num_components=3)
    >>> model = vade.build(seed=0)
    >>> vade.predict_clusters(model, np.zeros((4, 64), np.float32)).shape
    (4,)
    """

    def __init__(self, name, load, num_pixels, hidden, *, latent_dim=10,
                 num_components=10, input_noise=0.2, max_shift=0,
                 pretrain_learning_rate=1e-3, learning_rate=2e-3, lr_floor=0.05,
                 batch_size=64, em=None, initial_log_var=-4.0,
                 max_cluster_fraction=0.3, restart_seed_stride=1000, elbo_samples=10,
                 conv_filters=(), kernel_size=3, decoder_hidden=None,
                 contrastive=None, decoder_epochs=30, unit_latent=False):
        self.name, self.load = name, load
        self.num_pixels, self.hidden = int(num_pixels), tuple(hidden)
        self.conv_filters, self.kernel_size = tuple(conv_filters), int(kernel_size)
        self.decoder_hidden = (tuple(reversed(self.hidden)) if decoder_hidden is None
                               else tuple(decoder_hidden))
        self.contrastive, self.decoder_epochs = contrastive, int(decoder_epochs)
        self.unit_latent = bool(unit_latent)
        if self.unit_latent and contrastive is None:
            raise ValueError("unit_latent=True needs a contrastive pre-training "
                             "(contrastive=Contrastive(...)).")
        if (self.conv_filters or contrastive) and math.isqrt(self.num_pixels) ** 2 \
                != self.num_pixels:
            raise ValueError(f"conv_filters and contrastive need square images; "
                             f"num_pixels={num_pixels} is not a square.")
        self.latent_dim, self.num_components = latent_dim, num_components
        self.input_noise, self.max_shift = input_noise, int(max_shift)
        self.pretrain_learning_rate = pretrain_learning_rate
        self.learning_rate, self.lr_floor = learning_rate, lr_floor
        self.batch_size = batch_size
        self.em = dict(em or {"covariance_type": "diag", "reg_covar": 1e-4,
                              "max_iter": 300, "n_init": 10, "init_params": "kmeans"})
        if "covariance_type" not in self.em:
            raise ValueError(
                "`em` must name its covariance_type (the prior takes it: 'diag' or "
                f"'full'); received em={em!r}.")
        self.initial_log_var = initial_log_var
        self.max_cluster_fraction = max_cluster_fraction
        self.restart_seed_stride = restart_seed_stride
        self.elbo_samples = elbo_samples

    def reconstruction_nll(self, y_true, y_pred):
        """Bernoulli negative log-likelihood per image, summed over the pixels."""
        return self.num_pixels * keras.losses.binary_crossentropy(y_true, y_pred)

    def build(self, seed=0):
        """The untrained zoo model (uncompiled), seeded by
        ``keras.utils.set_random_seed(seed)``."""
        from keras_gmm.layers import GMMPriorSampling

        keras.utils.set_random_seed(seed)
        x = keras.Input((self.num_pixels,), name="x")
        side = math.isqrt(self.num_pixels)
        convolutions = [keras.layers.Reshape((side, side, 1))] + [
            keras.layers.Conv2D(f, self.kernel_size, strides=2, padding="same",
                                activation="relu") for f in self.conv_filters
        ] + [keras.layers.Flatten()] if self.conv_filters else []
        encoder = keras.Sequential(
            [keras.Input((self.num_pixels,))] + convolutions
            + [keras.layers.Dense(u, activation="relu") for u in self.hidden],
            name="encoder")
        h = encoder(x)
        if self.unit_latent:
            direction = keras.layers.Dense(self.latent_dim, name="z_direction")(h)
            z_mean = keras.layers.Rescaling(
                math.sqrt(self.latent_dim), name="z_mean")(
                keras.layers.UnitNormalization(name="z_unit")(direction))
        else:
            z_mean = keras.layers.Dense(self.latent_dim, name="z_mean")(h)
        z_log_var = keras.layers.Dense(
            self.latent_dim, kernel_initializer="zeros",
            bias_initializer=keras.initializers.Constant(self.initial_log_var),
            name="z_log_var")(h)
        prior = GMMPriorSampling(self.num_components, self.latent_dim, seed=seed,
                                 inference="mean", name="prior",
                                 covariance_type=self.em["covariance_type"])
        z, gamma = prior([z_mean, z_log_var], return_cluster_probabilities=True)
        decoder = keras.Sequential(
            [keras.Input((self.latent_dim,))]
            + [keras.layers.Dense(u, activation="relu") for u in self.decoder_hidden]
            + [keras.layers.Dense(self.num_pixels, activation="sigmoid")],
            name="decoder")
        vade = keras.Model(x, {"cluster_probabilities": gamma, "images": decoder(z)},
                           name="vade")
        outer = keras.Input((self.num_pixels,), name="x")
        return keras.Model(outer, vade(outer)["cluster_probabilities"], name=self.name)

    @staticmethod
    def vade_of(model):
        """The nested VaDE model: ``x -> {"cluster_probabilities", "images"}``."""
        return model.get_layer("vade")

    @classmethod
    def prior_of(cls, model):
        """The model's :class:`keras_gmm.GMMPriorSampling` layer."""
        return cls.vade_of(model).get_layer("prior")

    @classmethod
    def decoder_of(cls, model):
        """The decoder: latents ``[n, latent_dim]`` -> images ``[n, num_pixels]``."""
        return cls.vade_of(model).get_layer("decoder")

    @classmethod
    def encoder_of(cls, model):
        """``x -> [z_mean, z_log_var]`` (sharing the model's layers)."""
        vade = cls.vade_of(model)
        return keras.Model(vade.inputs[0], [vade.get_layer("z_mean").output,
                                            vade.get_layer("z_log_var").output])

    @staticmethod
    def predict_clusters(model, x):
        """``argmax`` of the model's cluster probabilities for ``x``."""
        return predict(model, x).argmax(-1)

    def evaluate(self, model):
        """:func:`cluster_scores` of the model's clusters on the held-out
        "test" split: ``clustering_accuracy``, ``nmi``, ``digit_accuracy``,
        ``largest_cluster_fraction``."""
        x_test, y_test = self.load("test")
        return cluster_scores(y_test, self.predict_clusters(model, x_test))

    def example_inputs(self, n=8):
        """``n`` held-out inputs (the first rows of the "test" split)."""
        return self.load("test")[0][:n]

    def check_not_collapsed(self, labels, max_fraction=None):
        """The largest cluster's fraction of ``labels``; :class:`CollapseError`
        if it exceeds ``max_fraction`` (default: ``max_cluster_fraction``) or
        a cluster is empty."""
        if max_fraction is None:
            max_fraction = self.max_cluster_fraction
        counts = np.bincount(np.asarray(labels), minlength=self.num_components)
        fraction = counts.max() / counts.sum()
        if fraction > max_fraction or np.any(counts == 0):
            raise CollapseError(
                f"The clustering collapsed: cluster sizes {counts.tolist()} (largest "
                f"fraction {fraction:.3f} > {max_fraction} or an empty cluster). "
                "Pre-train the autoencoder longer, or lower the learning rate."
            )
        return float(fraction)

    def negative_elbo(self, model, x, samples=None, seed=0):
        """The negative ELBO on ``x``, nats per image: the reconstruction NLL
        averaged over ``samples`` (default ``elbo_samples``) draws ``z ~ q(z |
        x)`` (a fixed NumPy stream seeded by ``seed``) plus the prior layer's
        closed-form VaDE KL."""
        samples = self.elbo_samples if samples is None else samples
        prior, decoder = self.prior_of(model), self.decoder_of(model)
        x = np.asarray(x, np.float32)
        z_mean, z_log_var = predict(self.encoder_of(model), x)
        kl = np.asarray(prior.kl_divergence(z_mean, z_log_var))
        rng = np.random.default_rng(seed)
        nll = np.zeros(len(x), np.float64)
        for _ in range(samples):
            noise = rng.standard_normal(z_mean.shape).astype(np.float32)
            images = predict(decoder, z_mean + np.exp(0.5 * z_log_var) * noise)
            nll += np.asarray(self.reconstruction_nll(x, images), np.float64)
        return float(np.mean(nll / samples + kl))

    def restart_seed(self, seed, restart):
        """The seed of restart ``restart`` (0, 1, ...) of recipe seed ``seed``."""
        return int(seed) + self.restart_seed_stride * int(restart)

    def shifted(self, x, rng):
        """``x`` with each square image shifted by a random whole number of
        pixels in ``[-max_shift, max_shift]`` along each axis (zero-filled),
        drawn from the NumPy generator ``rng``; ``x`` itself if ``max_shift``
        is 0."""
        if not self.max_shift:
            return x
        n, k = len(x), self.max_shift
        side = math.isqrt(self.num_pixels)
        padded = np.pad(x.reshape(n, side, side), ((0, 0), (k, k), (k, k)))
        start = rng.integers(0, 2 * k + 1, (n, 2))
        rows = (start[:, 0, None] + np.arange(side))[:, :, None]
        cols = (start[:, 1, None] + np.arange(side))[:, None, :]
        return padded[np.arange(n)[:, None, None], rows, cols].reshape(n, -1)

    def _fit_epochs(self, model, x, targets, epochs, verbose, rng):
        """``model.fit`` on ``x`` for ``epochs`` epochs (``targets(x)``: the
        targets); one call per epoch on freshly shifted images when
        ``max_shift``. Returns the per-epoch losses."""
        if not self.max_shift:
            return model.fit(x, targets(x), batch_size=self.batch_size, epochs=epochs,
                             verbose=verbose).history["loss"]
        losses = []
        for epoch in range(epochs):
            xs = self.shifted(x, rng)
            losses += model.fit(xs, targets(xs), batch_size=self.batch_size,
                                initial_epoch=epoch, epochs=epoch + 1,
                                verbose=verbose).history["loss"]
        return losses

    def _pretrain_autoencoder(self, model, x_train, seed, epochs, verbose, rng,
                              phases):
        """Phase 1 without ``contrastive``: a denoising autoencoder, x + noise
        -> encoder -> z_mean -> decoder. Returns the per-epoch losses."""
        vade = self.vade_of(model)
        inputs = keras.Input((self.num_pixels,))
        noisy = keras.layers.GaussianNoise(self.input_noise, seed=seed)(inputs)
        autoencoder = keras.Model(
            inputs, self.decoder_of(model)(
                vade.get_layer("z_mean")(vade.get_layer("encoder")(noisy))))
        autoencoder.compile(keras.optimizers.Adam(self.pretrain_learning_rate),
                            loss=self.reconstruction_nll)
        say(phases, self.name, f"seed {seed}, phase 1/3: the denoising autoencoder, "
            f"{count(epochs, 'epoch')}")
        return self._fit_epochs(autoencoder, x_train, lambda x: x, epochs, verbose, rng)

    def _pretrain_contrastive(self, model, x_train, seed, epochs, verbose, phases):
        """Phase 1 with ``contrastive``: the encoder's means by
        :meth:`Contrastive.pretrain` (``epochs`` epochs), whitened (the mean
        and full covariance of a one-component :class:`keras_gmm.
        GaussianMixtureEM` on them, folded into the ``z_mean`` layer: its
        latent has zero mean and unit covariance on ``x_train``; with
        ``unit_latent`` the latent is the direction of the trained Dense
        output instead, not whitened), then the decoder alone on the frozen
        means (``decoder_epochs``). Returns the
        per-epoch losses of the decoder fit."""
        from keras_gmm.layers import GaussianMixtureEM

        vade = self.vade_of(model)
        dense = vade.get_layer("z_direction" if self.unit_latent else "z_mean")
        means = keras.Model(vade.inputs[0], dense.output)
        say(phases, self.name, f"seed {seed}, phase 1/3: contrastive pre-training of "
            f"the encoder, {count(epochs, 'epoch')}; "
            f"{'the unit-direction latent' if self.unit_latent else 'whitening'}; the decoder on the "
            f"frozen latent, {count(self.decoder_epochs, 'epoch')}")
        self.contrastive.pretrain(means, x_train, seed, verbose, self.name, epochs)
        if self.unit_latent:  # the latent: the directions, on a sphere of radius sqrt(D)
            means = keras.Model(vade.inputs[0], vade.get_layer("z_mean").output)
        else:
            gaussian = GaussianMixtureEM(1, covariance_type="full", reg_covar=1e-6,
                                         seed=seed)
            gaussian.fit(predict(means, x_train), verbose=0)
            kernel, bias = (keras.ops.convert_to_numpy(w) for w in dense.weights)
            whiten = np.asarray(gaussian.precisions_cholesky_)[0]  # (z - mu) @ whiten
            centre = np.asarray(gaussian.means_)[0]
            dense.set_weights([kernel @ whiten, (bias - centre) @ whiten])
        decoder = self.decoder_of(model)
        decoder.compile(keras.optimizers.Adam(self.pretrain_learning_rate),
                        loss=self.reconstruction_nll)
        history = decoder.fit(predict(means, x_train), x_train,
                              batch_size=self.batch_size, epochs=self.decoder_epochs,
                              shuffle=True, verbose=verbose)
        return history.history["loss"]

    def train_images(self, x_train=None):
        """``x_train`` as float32 (default: the "train" images)."""
        return np.asarray(self.load("train")[0] if x_train is None else x_train,
                          np.float32)

    def initialise(self, seed, pretrain_epochs, verbose=0, x_train=None, phases=None,
                   rng=None):
        """Phases 1 and 2 of :meth:`fit_once` on ``x_train`` (default:
        "train"; no labels): a new model, its encoder (and decoder)
        pre-trained, its prior from a :class:`keras_gmm.GaussianMixtureEM` on
        the encoder means. Returns ``(model, em, pretrain_losses,
        seconds)``; the EM alone is the "AE + GMM" baseline. ``rng``: the
        NumPy generator of the shifts (``max_shift``; default: seeded by
        ``seed``)."""
        from keras_gmm.layers import GaussianMixtureEM

        phases = bool(verbose) if phases is None else phases
        x_train = self.train_images(x_train)
        model = self.build(seed=seed)
        fit_verbose = verbose if verbose in (0, 1, 2) else 2
        seconds = {}
        start = time.perf_counter()
        if self.contrastive is None:
            pre = self._pretrain_autoencoder(model, x_train, seed, pretrain_epochs,
                                             fit_verbose,
                                             np.random.default_rng(seed) if rng is None
                                             else rng, phases)
        else:
            pre = self._pretrain_contrastive(model, x_train, seed, pretrain_epochs,
                                             fit_verbose, phases)
        seconds["pretrain"] = round(time.perf_counter() - start, 1)

        say(phases, self.name, f"seed {seed}, phase 2/3: the prior from EM on the "
            "encoder means")
        start = time.perf_counter()
        em = GaussianMixtureEM(self.num_components, seed=seed, **self.em)
        em.fit(predict(self.encoder_of(model), x_train)[0], verbose=0)
        self.prior_of(model).initialize_from(em)
        seconds["em"] = round(time.perf_counter() - start, 1)
        return model, em, pre, seconds

    def fit_once(self, seed, epochs, pretrain_epochs, verbose=0, x_train=None,
                 phases=None):
        """One model trained from scratch on ``x_train`` (default: "train"; no
        labels): :meth:`initialise`, then the ELBO. Returns ``(model,
        info)``: the model (clusters not yet named) and its figures, with the
        EM fitted on the pre-trained latent as ``info["em"]``. ``verbose``:
        Keras' for the fits; ``phases``: a line per phase (default: when
        ``verbose``)."""
        phases = bool(verbose) if phases is None else phases
        x_train = self.train_images(x_train)
        rng = np.random.default_rng(seed)  # the shifts of both phases, one stream
        model, em, pre, seconds = self.initialise(seed, pretrain_epochs, verbose,
                                                  x_train, phases, rng)
        vade = self.vade_of(model)
        fit_verbose = verbose if verbose in (0, 1, 2) else 2

        # 3. The ELBO: reconstruction NLL + the prior layer's VaDE KL (add_loss).
        steps = epochs * steps_per_epoch(len(x_train), self.batch_size)
        schedule = keras.optimizers.schedules.CosineDecay(
            self.learning_rate, steps, alpha=self.lr_floor)
        vade.compile(keras.optimizers.Adam(schedule),
                     loss={"images": self.reconstruction_nll})
        say(phases, self.name, f"seed {seed}, phase 3/3: the ELBO, "
            f"{count(epochs, 'epoch')}")
        start = time.perf_counter()
        history = self._fit_epochs(vade, x_train, lambda x: {"images": x}, epochs,
                                   fit_verbose, rng)
        seconds["elbo"] = round(time.perf_counter() - start, 1)
        return model, {
            "em": em,
            "pretrain_final_loss": float(pre[-1]),
            "em_lower_bound": float(em.lower_bound_),
            "final_epoch_loss": float(history[-1]),
            "negative_elbo": self.negative_elbo(model, x_train),
            "seconds": seconds,
        }

    def fit_candidates(self, seed, epochs, pretrain_epochs, verbose, restarts,
                       x_train, phases=None):
        """``[(model, info)]`` of every restart, with its collapse check on
        ``x_train``."""
        phases = bool(verbose) if phases is None else phases
        candidates = []
        for r in range(restarts):
            rseed = self.restart_seed(seed, r)
            say(phases, self.name, f"restart {r + 1}/{restarts} (seed {rseed})")
            model, info = self.fit_once(rseed, epochs, pretrain_epochs, verbose,
                                        x_train=x_train, phases=phases)
            labels = self.predict_clusters(model, x_train)
            counts = np.bincount(labels, minlength=self.num_components)
            info.update(seed=rseed, restart=r,
                        train_largest_cluster_fraction=float(counts.max()
                                                             / counts.sum()))
            try:
                self.check_not_collapsed(labels)
                info["collapsed"] = False
            except CollapseError:
                info["collapsed"] = True
            candidates.append((model, info))
            say(phases, self.name, f"restart {r + 1}/{restarts}: training negative "
                f"ELBO {info['negative_elbo']:.2f} nats per image"
                + (", collapsed" if info["collapsed"] else ""))
        return candidates

    @staticmethod
    def select(candidates):
        """The non-collapsed candidate with the lowest training negative ELBO
        (:class:`CollapseError` if all collapsed)."""
        eligible = [c for c in candidates if not c[1]["collapsed"]]
        if not eligible:
            raise CollapseError(
                f"The clustering collapsed in all {len(candidates)} restart(s) (a "
                "cluster holding more than max_cluster_fraction of the train "
                "images, or an empty cluster). Pre-train the autoencoder longer, "
                "or lower the learning rate."
            )
        model, info = min(eligible, key=lambda c: c[1]["negative_elbo"])
        restarts = [{key: i[key] for key in ("seed", "negative_elbo",
                                             "train_largest_cluster_fraction",
                                             "collapsed")}
                    for _, i in candidates]
        return model, {**info, "restarts": restarts}

    def fit(self, seed, epochs, pretrain_epochs, verbose=0, restarts=3, x_train=None):
        """Train ``restarts`` models (:meth:`fit_once`, seeds
        ``restart_seed(seed, r)``; no labels) on ``x_train`` (default:
        "train") and keep :meth:`select`'s. Returns ``(model, info)``."""
        restarts = check_positive_int(restarts, "restarts")
        if x_train is None:
            x_train = self.load("train")[0]
        return self.select(self.fit_candidates(seed, epochs, pretrain_epochs, verbose,
                                               restarts, x_train))

    def uncompiled_copy(self, model, seed):
        """A fresh :meth:`build` model with ``model``'s weights: the saved
        file must not reference :meth:`reconstruction_nll` (not registered)."""
        copy = self.build(seed=seed)
        copy.set_weights(model.get_weights())
        return copy

    @staticmethod
    def check_train_options(seed, epochs, pretrain_epochs, num_seeds, restarts):
        """The options of a VaDE recipe's ``train``, checked: ``(seed, epochs,
        pretrain_epochs, num_seeds, restarts)``."""
        from keras_gmm._validation import check_seed

        return (check_seed(seed, allow_none=False),
                *(check_positive_int(value, name) for value, name in (
                    (epochs, "epochs"), (pretrain_epochs, "pretrain_epochs"),
                    (num_seeds, "num_seeds"), (restarts, "restarts"))))

    def train_seeds(self, seed, epochs, pretrain_epochs, num_seeds, restarts,
                    verbose=0):
        """:meth:`fit_candidates` for the recipe seeds ``seed, seed + 1, ...``
        (``num_seeds``) on "train", each restart also scored on "test" for the
        record (the selection never sees it). Returns a dict: ``model`` (seed
        ``seed``'s kept model, uncompiled, its clusters named after the
        classes by the train labels), ``order`` (the component order applied),
        ``seeds``, ``infos`` (per seed, :meth:`select`'s info), ``seconds``,
        and ``comparison`` (per method, :func:`seed_summary` of the test
        scores: this recipe, its EM initialisation, the first restart only,
        every restart)."""
        x_train, y_train = self.load("train")
        x_test, y_test = self.load("test")
        start = time.perf_counter()
        seeds = [seed + i for i in range(num_seeds)]
        runs, init_scores, infos, first, every = {}, {}, {}, {}, {}
        for i, s in enumerate(seeds, 1):
            role = ("the saved model" if s == seed
                    else "for the recorded spread; epochs not shown")
            say(verbose, self.name, f"seed {s} ({i}/{num_seeds}, {role}): "
                f"{count(restarts, 'restart')}, each autoencoder -> EM -> ELBO; "
                "the lowest ELBO kept")
            candidates = self.fit_candidates(s, epochs, pretrain_epochs,
                                             verbose if s == seed else 0, restarts,
                                             x_train, phases=bool(verbose))
            for candidate, info in candidates:  # for the record only
                every[info["seed"]] = cluster_scores(
                    y_test, self.predict_clusters(candidate, x_test))
            first[s] = every[candidates[0][1]["seed"]]
            trained, infos[s] = self.select(candidates)
            del candidates
            test_means = predict(self.encoder_of(trained), x_test)[0]
            init_scores[s] = cluster_scores(y_test,
                                            infos[s].pop("em").predict(test_means))
            runs[s] = cluster_scores(y_test, self.predict_clusters(trained, x_test))
            say(verbose, self.name, f"seed {s}: restart {infos[s]['restart'] + 1} "
                f"kept: test clustering accuracy {runs[s]['clustering_accuracy']:.4f}"
                " (EM on the pre-trained latent: "
                f"{init_scores[s]['clustering_accuracy']:.4f})")
            if s == seed:
                train_labels = self.predict_clusters(trained, x_train)
                model = self.uncompiled_copy(trained, seed)
                order = name_clusters(self.prior_of(model), train_labels, y_train)
        keys = ("clustering_accuracy", "nmi", "largest_cluster_fraction")
        comparison = {"split": "test", "seeds": seeds, **{
            key: seed_summary(per_seed, keys) for key, per_seed in {
                "keras_gmm VaDE (this recipe)": runs,
                f"{self.em['covariance_type']} GaussianMixtureEM on the pre-trained "
                + ("autoencoder" if self.contrastive is None else
                   "contrastive encoder's unit-direction" if self.unit_latent else
                   "contrastive encoder's whitened")
                + " latent (VaDE's initialisation, same runs)": init_scores,
                "keras_gmm VaDE, first restart only (restarts=1, no selection)":
                    first,
                f"keras_gmm VaDE, every restart ({restarts} per seed, no selection; "
                "per_seed keyed by restart seed)": every}.items()}}
        return {"model": model, "order": order, "seeds": seeds, "infos": infos,
                "seconds": time.perf_counter() - start, "comparison": comparison}

    def training_record(self, seed, epochs, pretrain_epochs, restarts, trained):
        """The ``training`` record of :meth:`train_seeds`' result ``trained``."""
        model, infos = trained["model"], trained["infos"]
        x_train, y_train = self.load("train")
        return {
            "seed": seed,
            "restarts": restarts,
            "epochs": epochs,
            "pretrain_epochs": pretrain_epochs,
            "batch_size": self.batch_size,
            "optimizer": {
                "pretrain": {"name": "Adam",
                             "learning_rate": self.pretrain_learning_rate,
                             "input_noise_stddev": self.input_noise,
                             **({"max_shift_pixels": self.max_shift}
                                if self.max_shift else {})}
                if self.contrastive is None else {
                    "encoder": {**self.contrastive.settings(),
                                "epochs": pretrain_epochs},
                    "whitening": "none: the latent is the unit direction of the "
                                 "contrastive encoder's Dense output times "
                                 "sqrt(latent_dim) (layers z_direction, z_unit, z_mean)"
                    if self.unit_latent else
                                 "the mean and full covariance of a 1-component "
                                 "keras_gmm.GaussianMixtureEM(covariance_type='full', "
                                 "reg_covar=1e-6) on the encoder means, folded into "
                                 "the z_mean layer",
                    "decoder": {"name": "Adam", "learning_rate":
                                self.pretrain_learning_rate,
                                "epochs": self.decoder_epochs,
                                "on": "the frozen encoder means (the unit-direction "
                                      "latent)" if self.unit_latent else
                                      "the frozen, whitened encoder means"}},
                "initialisation": {
                    "name": "keras_gmm.GaussianMixtureEM on the encoder means",
                    **self.em},
                "elbo": {"name": "Adam", "learning_rate": self.learning_rate,
                         "schedule": "keras.optimizers.schedules.CosineDecay",
                         "alpha": self.lr_floor,
                         **({"max_shift_pixels": self.max_shift}
                            if self.max_shift else {})},
            },
            "collapse_guard": {
                "max_cluster_fraction_on_train": self.max_cluster_fraction,
                "largest_cluster_fraction_on_train": {
                    str(s): infos[s]["train_largest_cluster_fraction"]
                    for s in trained["seeds"]},
            },
            "runs": {str(s): infos[s] for s in trained["seeds"]},
            "component_order": [int(i) for i in trained["order"]],
            "train_scores": cluster_scores(y_train,
                                           self.predict_clusters(model, x_train)),
            "seconds": round(trained["seconds"], 1),
            "comparison": trained["comparison"],
        }


def pixels_kmeans_key(num_pixels):
    """The :func:`digits_baselines` key of its k-means baseline, for images
    of ``num_pixels`` raw pixels (:data:`KMEANS_KEY` for the 8x8 digits)."""
    return KMEANS_KEY.replace(" 64 ", f" {num_pixels} ")


def pca_features(x_train, x_test, dims):
    """``features(seed) -> (z_train, z_test)``: scikit-learn's ``PCA(dims,
    random_state=seed)`` fitted on ``x_train``, applied to both (the
    ``features`` of a :func:`digits_baselines` mixture)."""
    from sklearn.decomposition import PCA

    def features(seed):
        pca = PCA(dims, random_state=seed).fit(x_train)
        return pca.transform(x_train), pca.transform(x_test)
    return features


# --------------------------------------------------------------------------
# soft weight sharing (soft_weight_sharing_digits, soft_weight_sharing_mnist)
# --------------------------------------------------------------------------
#: The settings both soft weight sharing recipes share (each adds its
#: epochs, batch sizes and EM rate): the prior, as Ullrich et al. but with
#: every precision's Gamma(alpha, beta) hyperprior annealed (beta falls
#: geometrically from beta_start to beta_end over step 2), and steps 3-4.
SOFT_WEIGHT_SHARING_DEFAULTS = {
    "seed": 0,
    "pretrain_learning_rate": 1e-3,
    "learning_rate": 5e-3,  # step 2: cosine decay to a fraction of it
    "tune_learning_rate": 1e-3,  # step 4: cosine decay to the same fraction
    "final_learning_rate_fraction": 0.01,
    "num_components": 16,
    "zero_weight": 0.99,
    "tau": 0.005,
    "precision_alpha": 5000.0,
    "beta_start": 2.0,
    "beta_end": 0.02,
    "em_iterations": 5,
    "max_nonzero_fraction": 0.05,  # step 3
    "free_epochs": 20,  # step 4: the non-zero weights free, then
    "tune_epochs": 30,  # pulled onto the shared values, the pull growing
    "pull_start": 0.01,  # geometrically from pull_start to pull_end
    "pull_end": 100.0,
}


def prune_to_fraction(model, regularizer, max_nonzero_fraction):
    """Before :func:`keras_gmm.regularizers.quantize`: set to 0 the weights
    of ``model`` that ``regularizer`` regularizes and assigns to its zero
    component (as quantizing would) and, while more than
    ``max_nonzero_fraction`` of them would stay non-zero, the smallest in
    magnitude of the others (to ``floor(max_nonzero_fraction * n)`` left).
    The weights left are unchanged, so quantizing keeps them non-zero.
    Returns ``{"nonzero_fraction_by_prior", "nonzero_fraction",
    "threshold"}``: the fraction the prior alone keeps, the fraction left
    and the largest magnitude set to 0 beyond the prior's (0 if none)."""
    variables = [v for v, _ in regularizers.regularized_variables(model, regularizer)]
    values = [v.numpy() for v in variables]
    kept = [regularizer.component_of(v.value).numpy() != 0 for v in variables]
    total = sum(v.size for v in values)
    by_prior = sum(int(k.sum()) for k in kept)
    allowed = math.floor(max_nonzero_fraction * total)
    threshold = 0.0
    if by_prior > allowed:
        magnitudes = np.sort(np.concatenate([np.abs(v[k]) for v, k in
                                             zip(values, kept)]))
        threshold = float(magnitudes[by_prior - allowed - 1])
        kept = [k & (np.abs(v) > threshold) for v, k in zip(values, kept)]
    for variable, value, k in zip(variables, values, kept):
        variable.assign(np.where(k, value, 0.0).astype(value.dtype))
    return {"nonzero_fraction_by_prior": by_prior / total,
            "nonzero_fraction": sum(int(k.sum()) for k in kept) / total,
            "threshold": threshold}


def _shared_value_kmeans(values, n_values, n_iter=100):
    """``n_values`` shared values for the non-zero ``values`` (1-D): Lloyd
    iterations (:func:`keras_gmm.ops.init.kmeans`) from evenly spaced
    quantiles."""
    from keras_gmm.ops import init

    start = np.quantile(values, (np.arange(n_values) + 0.5) / n_values)
    centers, _ = init.kmeans(
        tf.constant(values[:, None], tf.float32),
        tf.constant(start[:, None], tf.float32), n_iter=n_iter)
    return centers.numpy()[:, 0]


def _settle(variables, regularizer):
    """Snap ``variables`` by ``regularizer`` until that changes nothing
    (values that are all component means); returns the entries moved."""
    moved = 0
    for variable in variables:
        for _ in range(regularizer.num_components + 1):
            snapped = tf.cast(regularizer.snap(variable.value), variable.dtype)
            changed = int(tf.math.count_nonzero(snapped != variable.value))
            if not changed:
                break
            moved += changed
            variable.assign(snapped)
        else:
            raise RuntimeError(f"Snapping {variable.path} by the prior does not "
                               "settle (its components map onto each other).")
    return moved


#: The smallest variance :func:`tune_nonzero_weights` gives a shared value's
#: component (a standard deviation of 1e-4).
MIN_SHARED_VARIANCE = 1e-8


def tune_nonzero_weights(model, regularizer, x, y, free_epochs, epochs, batch_size,
                         learning_rate, pull=(0.01, 100.0),
                         final_learning_rate_fraction=0.01, seed=0):
    """After :func:`keras_gmm.regularizers.quantize`: fine-tune ``model``'s
    non-zero weights with its zeros held at 0, pull them onto shared values,
    then snap them there.

    Only the variables ``regularizer`` regularizes are constrained (other
    trainable variables train freely); their zeros stay 0 throughout.

    1. ``free_epochs`` of ``model``'s compiled loss on ``(x, y)``, the
       non-zero weights free: the network recovers what pruning and
       quantizing cost.
    2. The ``K - 1`` shared values (the prior's non-zero components) are
       re-estimated from the non-zero weights by 1-D k-means.
    3. ``epochs`` of the loss plus ``lam / 2 * sum_i (w_i - m_(c_i))^2``
       over the non-zero weights ``w_i``, ``m`` the shared values (learned
       with the weights) and ``c_i`` the one nearest ``w_i``, chosen again at
       every epoch; ``lam`` grows geometrically from ``pull[0]`` to
       ``pull[1]``, so the weights settle onto the shared values while the
       rest of the network adapts.
    4. Every such weight is set to its shared value; the prior's means to
       the shared values, its variances to the spread of their weights just
       before (at least :data:`MIN_SHARED_VARIANCE`; the zero component's
       kept) and its mixing weights to the fractions of the weights on each
       (the zero component's pinned weight kept); then the weights are
       snapped by the prior (:meth:`~keras_gmm.GMMRegularizer.snap`) until
       that changes nothing, so the prior quantizes them to themselves.

    Adam throughout, its learning rate decaying (cosine) from
    ``learning_rate`` to ``final_learning_rate_fraction`` of it over both
    phases.

    Returns ``{"free_epochs", "epochs", "learning_rate", "pull",
    "loss_before", "loss_free", "loss_after", "kmeans_values",
    "reassigned_fraction", "changed_by_final_snap"}``: losses (the compiled
    loss alone) on all of ``(x, y)`` at the start, after step 1 and at the
    end; the shared values of step 2; the fraction of the non-zero weights
    whose nearest shared value changed during step 3; the weights the final
    snapping moved.
    """
    if not regularizer.zero_component:
        raise ValueError("tune_nonzero_weights needs a GMMRegularizer with "
                         "zero_component=True (its zeros are held fixed).")
    trainable = model.trainable_variables
    weights = [tf.Variable(v.value) for v in trainable]
    masks = [tf.constant((v.numpy() != 0).astype(np.float32))
             if getattr(v, "regularizer", None) is regularizer else None
             for v in trainable]
    num_values = regularizer.num_components
    codebook = tf.Variable(np.zeros(num_values, np.float32))
    lam = tf.Variable(0.0)
    variables = weights + [codebook]
    loss_fn = keras.losses.get(model.loss)
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(
        learning_rate, (free_epochs + epochs) * steps_per_epoch(len(x), batch_size),
        alpha=final_learning_rate_fraction))

    def masked():
        return [w if m is None else w * m for w, m in zip(weights, masks)]

    def loss_of(values, xb, yb):
        out, _ = model.stateless_call(values,
                                      [v.value for v in model.non_trainable_variables],
                                      xb, training=False)
        return tf.reduce_mean(loss_fn(yb, out))

    def nearest():
        """Per constrained variable, the index (1..K-1) of each non-zero
        weight's nearest shared value, 0 for the zeros."""
        values = codebook.numpy()[1:]
        return [tf.zeros([0], tf.int32) if m is None else tf.constant(np.where(
            m.numpy() > 0, 1 + np.abs(w.numpy()[..., None] - values).argmin(-1), 0),
            tf.int32) for w, m in zip(weights, masks)]

    @tf.function(autograph=False)
    def step(xb, yb, components):
        with tf.GradientTape() as tape:
            penalty = tf.add_n([tf.constant(0.0)] + [
                tf.reduce_sum(m * tf.square(w - tf.gather(codebook, c)))
                for w, m, c in zip(weights, masks, components) if m is not None])
            loss = loss_of(masked(), xb, yb) + 0.5 * lam * penalty
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

    rng = np.random.default_rng(seed)

    def one_epoch(components):
        perm = rng.permutation(len(x))
        for i in range(0, len(x), batch_size):
            rows = perm[i:i + batch_size]
            step(tf.constant(x[rows]), tf.constant(y[rows]), components)

    before = float(loss_of(masked(), x, y))
    none = nearest()  # lam = 0: the components do not matter yet
    for _ in range(free_epochs):
        one_epoch(none)
    free = float(loss_of(masked(), x, y))
    flat = np.concatenate([w.numpy()[m.numpy() > 0]
                           for w, m in zip(weights, masks) if m is not None])
    kmeans_values = _shared_value_kmeans(flat, num_values - 1)
    codebook.assign(np.r_[0.0, kmeans_values].astype(np.float32))
    first = components = nearest()
    for epoch in range(epochs):
        lam.assign(pull[0] * (pull[1] / pull[0]) ** (epoch / max(epochs - 1, 1)))
        components = nearest()
        one_epoch(components)
    components = nearest()
    shared = codebook.numpy()
    tied = [(w.numpy()[m.numpy() > 0], c.numpy()[m.numpy() > 0])
            for w, m, c in zip(weights, masks, components) if m is not None]
    values, owners = (np.concatenate(parts) for parts in zip(*tied))
    counts = np.bincount(owners, minlength=num_values).astype(np.float64)
    spread = np.bincount(owners, np.square(values - shared[owners]),
                         minlength=num_values) / np.maximum(counts, 1.0)
    for variable, w, m, c in zip(trainable, weights, masks, components):
        variable.assign(w if m is None else tf.gather(shared, c))
    variances = np.maximum(spread, MIN_SHARED_VARIANCE)
    variances[0] = regularizer.variances[0]
    regularizer.set_prior(shared, variances,
                          np.maximum(counts, 1e-3) / np.maximum(counts, 1e-3).sum())
    changed = _settle([v for v, m in zip(trainable, masks) if m is not None],
                      regularizer)
    n_nonzero = sum(float(tf.reduce_sum(m)) for m in masks if m is not None)
    reassigned = sum(int(tf.math.count_nonzero(a != b))
                     for a, b, m in zip(first, components, masks) if m is not None)
    return {"free_epochs": free_epochs, "epochs": epochs,
            "learning_rate": learning_rate, "pull": [float(p) for p in pull],
            "loss_before": before, "loss_free": free,
            "loss_after": float(loss_of([v.value for v in trainable], x, y)),
            "kmeans_values": [float(v) for v in kmeans_values],
            "reassigned_fraction": reassigned / max(n_nonzero, 1.0),
            "changed_by_final_snap": changed}


class SoftWeightSharing:
    """The soft weight sharing recipe (Ullrich, Meeds & Welling, ICLR 2017)
    of the zoo models ``soft_weight_sharing_digits`` and
    ``soft_weight_sharing_mnist``, for a ReLU MLP on ``load``'s data.

    :meth:`run` (one seed): 1. train the MLP plainly (the reference);
    2. retrain it under one :class:`keras_gmm.GMMRegularizer` on every kernel
    and bias (``num_components`` components, one pinned at zero), the prior
    learned by MAP EM during ``fit`` and its precision hyperprior annealed
    (:class:`AnnealPrecisionPrior`); 3. :func:`prune_to_fraction` (the
    prior's zeros and, beyond ``max_nonzero_fraction``, the smallest other
    weights) and quantize (:func:`keras_gmm.regularizers.quantize`);
    4. :func:`tune_nonzero_weights`: the zeros fixed, the other weights
    fine-tuned, pulled onto shared values and snapped there. :meth:`train`
    runs it for several seeds and writes the record.

    Args:
        name: the zoo model's name (the Keras model's too).
        load: its :mod:`keras_gmm.datasets` loader (``load(split) -> (x, y)``,
            splits "train" and "test").
        input_dim: the number of input features.
        defaults: the recipe's ``DEFAULTS`` (the keys of
            ``soft_weight_sharing_mnist.DEFAULTS``).
        hidden_units: the sizes of the hidden ReLU layers (LeNet-300-100's).
        targets: ``(drop_points, nonzero_fraction)``, a seed's targets: the
            most accuracy points lost against step 1 on "test", the largest
            fraction of non-zero weights.
    """

    STEPS = 4

    def __init__(self, name, load, input_dim, defaults, hidden_units=(300, 100),
                 targets=(1.0, 0.05)):
        self.name, self.load = name, load
        self.input_dim, self.hidden_units = input_dim, tuple(hidden_units)
        self.defaults = dict(defaults)
        self.target_drop_points, self.target_nonzero = targets

    def make_regularizer(self, n_train):
        """The shared prior, ``strength = tau / n_train`` (Ullrich et al.'s
        tau for a loss averaged over the ``n_train`` training samples)."""
        s = self.defaults
        prior = (s["precision_alpha"], s["beta_start"])
        return regularizers.GMMRegularizer(
            num_components=s["num_components"], strength=s["tau"] / n_train,
            zero_weight=s["zero_weight"], precision_prior=prior,
            zero_precision_prior=prior)

    def build(self, seed=0, regularizer=None, learning_rate=None):
        """The compiled MLP, ``regularizer`` (if given) on every kernel and
        bias; ``learning_rate``: Adam's, a float or a schedule (``None``:
        ``pretrain_learning_rate``)."""
        keras.utils.set_random_seed(seed)
        if learning_rate is None:
            learning_rate = self.defaults["pretrain_learning_rate"]

        def dense(units, activation, name):
            return keras.layers.Dense(units, activation=activation, name=name,
                                      kernel_regularizer=regularizer,
                                      bias_regularizer=regularizer)
        model = keras.Sequential(
            [keras.Input((self.input_dim,), name="x"),
             *(dense(units, "relu", f"hidden_{i}")
               for i, units in enumerate(self.hidden_units)),
             dense(10, "softmax", "probabilities")], name=self.name)
        model.compile(keras.optimizers.Adam(learning_rate),
                      "sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    def retrain(self, pretrained, x, y, seed=0, epochs=None, verbose=0):
        """Step 2: ``pretrained``'s weights retrained under one shared
        GMMRegularizer; returns ``(model, regularizer, callback)``."""
        s = self.defaults
        epochs = s["epochs"] if epochs is None else epochs
        regularizer = self.make_regularizer(len(x))
        schedule = keras.optimizers.schedules.CosineDecay(
            s["learning_rate"],
            decay_steps=epochs * steps_per_epoch(len(x), s["batch_size"]),
            alpha=s["final_learning_rate_fraction"])
        model = self.build(seed=seed, regularizer=regularizer, learning_rate=schedule)
        model.set_weights(pretrained.get_weights())
        callback = regularizer.callback(update_every=s["update_every"],
                                        max_iter=s["em_iterations"])
        anneal = AnnealPrecisionPrior(regularizer, epochs, s["precision_alpha"],
                                      s["beta_start"], s["beta_end"])
        model.fit(x, y, batch_size=s["batch_size"], epochs=epochs, shuffle=True,
                  verbose=verbose, callbacks=[anneal, callback])
        return model, regularizer, callback

    @staticmethod
    def accuracy(model, x, y):
        """``mean(argmax(model(x)) == y)``."""
        return float(np.mean(predict(model, x, batch_size=512).argmax(-1) == y))

    def evaluate(self, model):
        """``accuracy`` on "test"; ``nonzero_fraction`` and
        ``compression_ratio`` of the model's weights."""
        report = regularizers.compression_report(model)
        return {"accuracy": self.accuracy(model, *self.load("test")),
                **{key: float(report[key])
                   for key in ("nonzero_fraction", "compression_ratio")}}

    def example_inputs(self, n=8):
        """``n`` held-out inputs (the first rows of the "test" split)."""
        return self.load("test")[0][:n]

    def run(self, seed=0, epochs=None, pretrain_epochs=None, tune_epochs=None,
            free_epochs=None, x=None, y=None, x_eval=None, y_eval=None, verbose=0):
        """The four steps once, evaluated on ``(x_eval, y_eval)`` ("test" by
        default; trained on ``(x, y)``, "train" by default; ``None`` epochs:
        the defaults'). Returns the ``pretrained`` and compressed (``model``)
        models, the ``regularizer``, the flat ``weights_pretrained`` /
        ``weights_retrained``, the steps' reports (``quantize``,
        ``prune_to_fraction``, ``tune``, ``compression``), the accuracies after
        each step and the seconds."""
        s = self.defaults
        epochs = s["epochs"] if epochs is None else epochs
        pretrain_epochs = s["pretrain_epochs"] if pretrain_epochs is None else (
            pretrain_epochs)
        tune_epochs = s["tune_epochs"] if tune_epochs is None else tune_epochs
        free_epochs = s["free_epochs"] if free_epochs is None else free_epochs
        if x is None:
            x, y = self.load("train")
        if x_eval is None:
            x_eval, y_eval = self.load("test")

        def step(i, what):
            say(verbose, self.name, f"seed {seed}, step {i}/{self.STEPS}: {what}")
        start = time.perf_counter()
        step(1, f"training the MLP plainly, {count(pretrain_epochs, 'epoch')}")
        pretrained = self.build(seed=seed)
        pretrained.fit(x, y, batch_size=s["pretrain_batch_size"],
                       epochs=pretrain_epochs, shuffle=True, verbose=verbose)
        seconds = {"pretrain": time.perf_counter() - start}
        step(2, f"retraining it under the GMMRegularizer prior "
             f"({s['num_components']} components, re-estimated every "
             f"{s['update_every']} batches), {count(epochs, 'epoch')}")
        model, regularizer, callback = self.retrain(pretrained, x, y, seed=seed,
                                                    epochs=epochs, verbose=verbose)
        seconds["retrain"] = time.perf_counter() - start - sum(seconds.values())
        weights_retrained = np.concatenate([np.ravel(w) for w in model.get_weights()])
        accuracy_retrained = self.accuracy(model, x_eval, y_eval)
        pruned = prune_to_fraction(model, regularizer, s["max_nonzero_fraction"])
        report = regularizers.quantize(model, regularizer)
        accuracy_quantized = self.accuracy(model, x_eval, y_eval)
        step(3, f"pruned and quantized: {pruned['nonzero_fraction_by_prior']:.1%} "
             f"of the weights non-zero by the prior, {report['nonzero_fraction']:.1%} "
             f"kept, {report['n_distinct']} distinct values")
        step(4, f"tuning the non-zero weights, the zeros fixed: "
             f"{count(free_epochs, 'epoch')} free, then "
             f"{count(tune_epochs, 'epoch')} pulled onto the shared values")
        tuned = tune_nonzero_weights(
            model, regularizer, x, y, free_epochs=free_epochs, epochs=tune_epochs,
            batch_size=s["tune_batch_size"], learning_rate=s["tune_learning_rate"],
            pull=(s["pull_start"], s["pull_end"]),
            final_learning_rate_fraction=s["final_learning_rate_fraction"], seed=seed)
        seconds["tune"] = time.perf_counter() - start - sum(seconds.values())
        accuracy_pretrained = self.accuracy(pretrained, x_eval, y_eval)
        accuracy_tuned = self.accuracy(model, x_eval, y_eval)
        say(verbose, self.name, f"seed {seed}: accuracy {accuracy_pretrained:.4f} "
            f"(step 1) -> {accuracy_retrained:.4f} (step 2) -> "
            f"{accuracy_quantized:.4f} (step 3) -> {accuracy_tuned:.4f} (step 4)")
        return {
            "pretrained": pretrained,
            "model": model,
            "regularizer": regularizer,
            "weights_pretrained": np.concatenate(
                [np.ravel(w) for w in pretrained.get_weights()]),
            "weights_retrained": weights_retrained,
            "quantize": report,
            "prune_to_fraction": pruned,
            "tune": tuned,
            "compression": regularizers.compression_report(model),
            "accuracy_pretrained": accuracy_pretrained,
            "accuracy_retrained": accuracy_retrained,
            "accuracy_quantized": accuracy_quantized,
            "accuracy_tuned": accuracy_tuned,
            "em_updates": len(callback.history),
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
        }

    def seed_figures(self, result):
        """One seed's recorded figures (``run``'s ``result``) and whether it
        meets both targets."""
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
            "n_distinct": result["compression"]["n_distinct"],
            "target_met": bool(drop <= self.target_drop_points
                               and nonzero <= self.target_nonzero),
            "seconds": result["seconds"],
        }

    def optimizers(self):
        """The optimizers of the four steps, as recorded."""
        s = self.defaults

        def cosine(initial):
            return {"schedule": "keras.optimizers.schedules.CosineDecay",
                    "initial_learning_rate": initial,
                    "alpha": s["final_learning_rate_fraction"]}
        return {
            "pretrain": {"name": "Adam", "learning_rate": s["pretrain_learning_rate"],
                         "batch_size": s["pretrain_batch_size"]},
            "retrain": {"name": "Adam", "batch_size": s["batch_size"],
                        "learning_rate": cosine(s["learning_rate"])},
            "tune_nonzero_weights": {"name": "Adam", "batch_size": s["tune_batch_size"],
                                     "learning_rate": cosine(s["tune_learning_rate"])},
        }

    def train(self, seed=None, epochs=None, pretrain_epochs=None, tune_epochs=None,
              free_epochs=None, num_seeds=3, verbose=0):
        """:meth:`run` on "train" with ``seed`` (the saved model) and, for the
        recorded spread, ``seed + 1, ...`` (``num_seeds`` in all), each
        evaluated on "test" against its own plainly trained network (step 1);
        ``None``: the defaults'. Returns ``(model, record)``."""
        s = self.defaults
        seed = check_seed(s["seed"] if seed is None else seed, allow_none=False)
        epochs, pretrain_epochs, tune_epochs, free_epochs = (
            check_positive_int(s[name] if value is None else value, name)
            for name, value in (("epochs", epochs), ("pretrain_epochs", pretrain_epochs),
                                ("tune_epochs", tune_epochs),
                                ("free_epochs", free_epochs)))
        num_seeds = check_positive_int(num_seeds, "num_seeds")
        start = time.perf_counter()
        results, per_seed = {}, {}
        for i, each in enumerate(range(seed, seed + num_seeds), 1):
            say(verbose, self.name, f"seed {each} ({i}/{num_seeds})" + (
                "" if i == 1 else ", for the recorded spread (epochs not shown)"))
            results[each] = self.run(seed=each, epochs=epochs,
                                     pretrain_epochs=pretrain_epochs,
                                     tune_epochs=tune_epochs, free_epochs=free_epochs,
                                     verbose=verbose if i == 1 else 0)
            per_seed[str(each)] = self.seed_figures(results[each])
            say(verbose, self.name, f"seed {each}: {per_seed[str(each)]}")
        result = results[seed]
        model, reg = result["model"], result["regularizer"]
        measured = self.evaluate(model)
        keys = [k for k, v in per_seed[str(seed)].items()
                if isinstance(v, (int, float)) and not isinstance(v, bool)]
        metrics = {
            "accuracy": {"value": measured["accuracy"],
                         "before_quantization": result["accuracy_retrained"],
                         "quantized_before_tuning": result["accuracy_quantized"],
                         "reference": {"value": result["accuracy_pretrained"], "source":
                                       f"step 1 of this recipe (the same network "
                                       f"trained plainly), seed {seed}, "
                                       f"{pretrain_epochs} epochs"}},
            "nonzero_fraction": measured["nonzero_fraction"],
            "compression_ratio": measured["compression_ratio"],
        }
        training = {
            "seed": seed, "epochs": epochs, "pretrain_epochs": pretrain_epochs,
            "tune_epochs": tune_epochs, "free_epochs": free_epochs,
            "batch_size": s["batch_size"],
            "optimizer": self.optimizers(),
            "settings": {k: v for k, v in s.items() if k not in (
                "seed", "epochs", "pretrain_epochs", "tune_epochs", "free_epochs")},
            "prior": {
                "strength": reg.strength,
                "em_updates": result["em_updates"],
                "saved": {"means": [float(v) for v in reg.means],
                          "stddevs": [float(v) for v in reg.stddevs],
                          "mixture_weights": [float(v) for v in reg.mixture_weights]},
            },
            "quantize": {k: v for k, v in result["quantize"].items() if k != "variables"},
            "prune_to_fraction": result["prune_to_fraction"],
            "tune_nonzero_weights": result["tune"],
            "compression_variables": result["compression"]["variables"],
            "seconds": result["seconds"],
            "comparison": {"split": "test", "seeds": [int(k) for k in per_seed],
                           "per_seed": per_seed,
                           "spread": seed_summary(per_seed, keys),
                           "targets_met_on_every_seed": all(
                               f["target_met"] for f in per_seed.values())},
        }
        training["seconds_total"] = round(time.perf_counter() - start, 1)
        return model, {"metrics": metrics, "training": training}
