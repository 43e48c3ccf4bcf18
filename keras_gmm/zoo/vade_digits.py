"""Zoo recipe ``vade_digits``: deep clustering and generation of the 8x8 digits
with VaDE (Jiang et al. 2017), a VAE whose latent prior is a learnable
Gaussian mixture (:class:`keras_gmm.GMMPriorSampling`).

The zoo model ``x [n, 64] -> cluster probabilities [n, 10]`` wraps the nested
model ``"vade"``: encoder (2 x Dense(256, relu)) ``-> z_mean, z_log_var ->``
``GMMPriorSampling(10, 10, inference="mean")`` ``-> z, gamma``; decoder
(2 x Dense(256, relu), Dense(64, sigmoid)) ``-> images``. Trained without
labels: a denoising autoencoder, the prior initialised by a "diag"
:class:`keras_gmm.GaussianMixtureEM` on the encoder means, then the ELBO;
``RESTARTS`` restarts per seed, the lowest training negative ELBO among those
that did not collapse kept. The train labels only name the clusters. The card
(settings tried, baselines, metrics): ``saved_models/vade_digits/metadata.json``.
"""

import time

import keras
import numpy as np

from keras_gmm import datasets
from keras_gmm._validation import check_positive_int, check_seed
from keras_gmm.layers import GaussianMixtureEM, GMMPriorSampling
from keras_gmm.zoo import _recipe

NAME = "vade_digits"
NUM_COMPONENTS = 10
LATENT_DIM = 10
HIDDEN = (256, 256)
NUM_PIXELS = 64
INPUT_NOISE = 0.2  # pre-training: a denoising autoencoder
PRETRAIN_LEARNING_RATE = 1e-3
LEARNING_RATE = 2e-3  # the ELBO: Adam, cosine decay to LR_FLOOR * LEARNING_RATE
LR_FLOOR = 0.05
BATCH_SIZE = 64
EM = {"covariance_type": "diag", "reg_covar": 1e-4, "max_iter": 300, "n_init": 10,
      "init_params": "kmeans"}  # the EM initialisation of the prior
INITIAL_LOG_VAR = -4.0  # bias of z_log_var (its kernel starts at 0)
MAX_CLUSTER_FRACTION = 0.3  # collapse guard on the train split (3 x 10 %)
NUM_SEEDS = 3
RESTARTS = 3  # restart r of seed s has the seed s + RESTART_SEED_STRIDE * r
RESTART_SEED_STRIDE = 1000
ELBO_SAMPLES = 10
DEFAULTS = {"seed": 0, "epochs": 100, "pretrain_epochs": 200, "num_seeds": NUM_SEEDS,
            "restarts": RESTARTS}
SUMMARY_KEYS = ("clustering_accuracy", "nmi", "largest_cluster_fraction")


class CollapseError(RuntimeError):
    """The clustering collapsed (a cluster took too many images or one is empty)."""


def reconstruction_nll(y_true, y_pred):
    """Bernoulli negative log-likelihood per image, summed over the pixels."""
    return NUM_PIXELS * keras.losses.binary_crossentropy(y_true, y_pred)


def build(seed=DEFAULTS["seed"]):
    """The untrained zoo model (uncompiled), seeded by
    ``keras.utils.set_random_seed(seed)``."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((NUM_PIXELS,), name="x")
    encoder = keras.Sequential(
        [keras.Input((NUM_PIXELS,))]
        + [keras.layers.Dense(u, activation="relu") for u in HIDDEN], name="encoder")
    h = encoder(x)
    z_mean = keras.layers.Dense(LATENT_DIM, name="z_mean")(h)
    z_log_var = keras.layers.Dense(
        LATENT_DIM, kernel_initializer="zeros",
        bias_initializer=keras.initializers.Constant(INITIAL_LOG_VAR), name="z_log_var",
    )(h)
    prior = GMMPriorSampling(NUM_COMPONENTS, LATENT_DIM, seed=seed, inference="mean",
                             name="prior")
    z, gamma = prior([z_mean, z_log_var], return_cluster_probabilities=True)
    decoder = keras.Sequential(
        [keras.Input((LATENT_DIM,))]
        + [keras.layers.Dense(u, activation="relu") for u in reversed(HIDDEN)]
        + [keras.layers.Dense(NUM_PIXELS, activation="sigmoid")], name="decoder")
    vade = keras.Model(x, {"cluster_probabilities": gamma, "images": decoder(z)},
                       name="vade")
    outer = keras.Input((NUM_PIXELS,), name="x")
    return keras.Model(outer, vade(outer)["cluster_probabilities"], name="vade_digits")


def vade_of(model):
    """The nested VaDE model: ``x -> {"cluster_probabilities", "images"}``."""
    return model.get_layer("vade")


def prior_of(model):
    """The model's :class:`keras_gmm.GMMPriorSampling` layer."""
    return vade_of(model).get_layer("prior")


def decoder_of(model):
    """The decoder: latents ``[n, 10]`` -> images ``[n, 64]``."""
    return vade_of(model).get_layer("decoder")


def encoder_of(model):
    """``x -> [z_mean, z_log_var]`` (sharing the model's layers)."""
    vade = vade_of(model)
    return keras.Model(vade.inputs[0], [vade.get_layer("z_mean").output,
                                        vade.get_layer("z_log_var").output])


def predict_clusters(model, x):
    """``argmax`` of the model's cluster probabilities for ``x``."""
    return _recipe.predict(model, x).argmax(-1)


def evaluate(model):
    """``clustering_accuracy``, ``nmi``, ``digit_accuracy`` and
    ``largest_cluster_fraction`` on the held-out "test" split."""
    x_test, y_test = datasets.load_digits("test")
    return _recipe.cluster_scores(y_test, predict_clusters(model, x_test))


def example_inputs(n=8):
    """``n`` held-out inputs (the first rows of the "test" split), [n, 64]."""
    return datasets.load_digits("test")[0][:n]


def check_not_collapsed(labels, max_fraction=MAX_CLUSTER_FRACTION):
    """The largest cluster's fraction of ``labels``; :class:`CollapseError`
    if it exceeds ``max_fraction`` or a cluster is empty."""
    counts = np.bincount(np.asarray(labels), minlength=NUM_COMPONENTS)
    fraction = counts.max() / counts.sum()
    if fraction > max_fraction or np.any(counts == 0):
        raise CollapseError(
            f"The clustering collapsed: cluster sizes {counts.tolist()} (largest "
            f"fraction {fraction:.3f} > {max_fraction} or an empty cluster). "
            "Pre-train the autoencoder longer, or lower the learning rate."
        )
    return float(fraction)


def negative_elbo(model, x, samples=ELBO_SAMPLES, seed=0):
    """The negative ELBO on ``x``, nats per image: :func:`reconstruction_nll`
    averaged over ``samples`` draws ``z ~ q(z | x)`` (a fixed NumPy stream
    seeded by ``seed``) plus the prior layer's closed-form VaDE KL."""
    prior, decoder = prior_of(model), decoder_of(model)
    x = np.asarray(x, np.float32)
    z_mean, z_log_var = _recipe.predict(encoder_of(model), x)
    kl = np.asarray(prior.kl_divergence(z_mean, z_log_var))
    rng = np.random.default_rng(seed)
    nll = np.zeros(len(x), np.float64)
    for _ in range(samples):
        noise = rng.standard_normal(z_mean.shape).astype(np.float32)
        images = _recipe.predict(decoder, z_mean + np.exp(0.5 * z_log_var) * noise)
        nll += np.asarray(reconstruction_nll(x, images), np.float64)
    return float(np.mean(nll / samples + kl))


def restart_seed(seed, restart):
    """The seed of restart ``restart`` (0, 1, ...) of recipe seed ``seed``."""
    return int(seed) + RESTART_SEED_STRIDE * int(restart)


def fit_once(seed, epochs, pretrain_epochs, verbose=0, x_train=None, phases=None):
    """One model trained from scratch on ``x_train`` (default: "train"; no
    labels). Returns ``(model, info)``: the model (clusters not yet named)
    and its figures, with the EM fitted on the pre-trained latent as
    ``info["em"]``. ``verbose``: Keras' for the two fits; ``phases``: a line
    per phase (default: when ``verbose``)."""
    phases = bool(verbose) if phases is None else phases
    if x_train is None:
        x_train = datasets.load_digits("train")[0]
    x_train = np.asarray(x_train, np.float32)
    model = build(seed=seed)
    vade, prior, decoder = vade_of(model), prior_of(model), decoder_of(model)
    fit_verbose = verbose if verbose in (0, 1, 2) else 2
    seconds = {}

    # 1. Denoising autoencoder: x + noise -> encoder -> z_mean -> decoder.
    inputs = keras.Input((NUM_PIXELS,))
    noisy = keras.layers.GaussianNoise(INPUT_NOISE, seed=seed)(inputs)
    autoencoder = keras.Model(
        inputs, decoder(vade.get_layer("z_mean")(vade.get_layer("encoder")(noisy))))
    autoencoder.compile(keras.optimizers.Adam(PRETRAIN_LEARNING_RATE),
                        loss=reconstruction_nll)
    _recipe.say(phases, NAME, f"seed {seed}, phase 1/3: the denoising autoencoder, "
                f"{_recipe.count(pretrain_epochs, 'epoch')}")
    start = time.perf_counter()
    pre = autoencoder.fit(x_train, x_train, batch_size=BATCH_SIZE,
                          epochs=pretrain_epochs, verbose=fit_verbose)
    seconds["pretrain"] = round(time.perf_counter() - start, 1)

    # 2. The prior from a diag GMM fitted by EM on the encoder means.
    _recipe.say(phases, NAME, f"seed {seed}, phase 2/3: the prior from EM on the "
                "encoder means")
    start = time.perf_counter()
    em = GaussianMixtureEM(NUM_COMPONENTS, seed=seed, **EM)
    em.fit(_recipe.predict(encoder_of(model), x_train)[0], verbose=0)
    prior.initialize_from(em)
    seconds["em"] = round(time.perf_counter() - start, 1)

    # 3. The ELBO: reconstruction NLL + the prior layer's VaDE KL (add_loss).
    steps = epochs * _recipe.steps_per_epoch(len(x_train), BATCH_SIZE)
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, steps,
                                                      alpha=LR_FLOOR)
    vade.compile(keras.optimizers.Adam(schedule), loss={"images": reconstruction_nll})
    _recipe.say(phases, NAME, f"seed {seed}, phase 3/3: the ELBO, "
                f"{_recipe.count(epochs, 'epoch')}")
    start = time.perf_counter()
    history = vade.fit(x_train, {"images": x_train}, batch_size=BATCH_SIZE,
                       epochs=epochs, verbose=fit_verbose)
    seconds["elbo"] = round(time.perf_counter() - start, 1)
    return model, {
        "em": em,
        "pretrain_final_loss": float(pre.history["loss"][-1]),
        "em_lower_bound": float(em.lower_bound_),
        "final_epoch_loss": float(history.history["loss"][-1]),
        "negative_elbo": negative_elbo(model, x_train),
        "seconds": seconds,
    }


def _fit_candidates(seed, epochs, pretrain_epochs, verbose, restarts, x_train,
                    phases=None):
    """``[(model, info)]`` of every restart, with its collapse check on ``x_train``."""
    phases = bool(verbose) if phases is None else phases
    candidates = []
    for r in range(restarts):
        _recipe.say(phases, NAME, f"restart {r + 1}/{restarts} (seed "
                    f"{restart_seed(seed, r)})")
        model, info = fit_once(restart_seed(seed, r), epochs, pretrain_epochs, verbose,
                               x_train=x_train, phases=phases)
        labels = predict_clusters(model, x_train)
        counts = np.bincount(labels, minlength=NUM_COMPONENTS)
        info.update(seed=restart_seed(seed, r), restart=r,
                    train_largest_cluster_fraction=float(counts.max() / counts.sum()))
        try:
            check_not_collapsed(labels)
            info["collapsed"] = False
        except CollapseError:
            info["collapsed"] = True
        candidates.append((model, info))
        _recipe.say(phases, NAME, f"restart {r + 1}/{restarts}: training negative "
                    f"ELBO {info['negative_elbo']:.2f} nats per image"
                    + (", collapsed" if info["collapsed"] else ""))
    return candidates


def _select(candidates):
    """The non-collapsed candidate with the lowest training negative ELBO."""
    eligible = [c for c in candidates if not c[1]["collapsed"]]
    if not eligible:
        raise CollapseError(
            f"The clustering collapsed in all {len(candidates)} restart(s) (a "
            "cluster holding more than MAX_CLUSTER_FRACTION of the train images, "
            "or an empty cluster). Pre-train the autoencoder longer, or lower "
            "the learning rate."
        )
    model, info = min(eligible, key=lambda c: c[1]["negative_elbo"])
    restarts = [{key: i[key] for key in ("seed", "negative_elbo",
                                         "train_largest_cluster_fraction", "collapsed")}
                for _, i in candidates]
    return model, {**info, "restarts": restarts}


def fit(seed, epochs, pretrain_epochs, verbose=0, restarts=None, x_train=None):
    """Train ``restarts`` models (:func:`fit_once` with the seeds
    ``restart_seed(seed, r)``; no labels) on ``x_train`` (default: "train")
    and keep, among those that did not collapse there, the one with the
    lowest negative ELBO there (:class:`CollapseError` if all collapsed).
    Returns ``(model, info)`` (clusters not yet named)."""
    if restarts is None:
        restarts = DEFAULTS["restarts"]
    restarts = check_positive_int(restarts, "restarts")
    if x_train is None:
        x_train = datasets.load_digits("train")[0]
    return _select(_fit_candidates(seed, epochs, pretrain_epochs, verbose, restarts,
                                   x_train))


def _uncompiled_copy(model, seed):
    """A fresh :func:`build` model with ``model``'s weights: the saved file
    must not reference :func:`reconstruction_nll` (not registered)."""
    copy = build(seed=seed)
    copy.set_weights(model.get_weights())
    return copy


def _pca_features(x_train, x_test, dims):
    from sklearn.decomposition import PCA

    def features(seed):
        pca = PCA(dims, random_state=seed).fit(x_train)
        return pca.transform(x_train), pca.transform(x_test)
    return features


def train(seed=DEFAULTS["seed"], epochs=DEFAULTS["epochs"],
          pretrain_epochs=DEFAULTS["pretrain_epochs"], num_seeds=DEFAULTS["num_seeds"],
          restarts=DEFAULTS["restarts"], verbose=0, baselines=True):
    """:func:`fit` with ``seed`` (the saved model, its clusters named after
    the digits by the train labels) and ``seed + 1, ...`` (``num_seeds`` in
    all, the recorded spread); every restart is also scored on "test" for the
    record (the selection never sees it). About 40 s per restart on 2 CPU
    cores. Returns ``(model, record)``."""
    seed = check_seed(seed, allow_none=False)
    epochs = check_positive_int(epochs, "epochs")
    pretrain_epochs = check_positive_int(pretrain_epochs, "pretrain_epochs")
    num_seeds = check_positive_int(num_seeds, "num_seeds")
    restarts = check_positive_int(restarts, "restarts")
    x_train, y_train = datasets.load_digits("train")
    x_test, y_test = datasets.load_digits("test")
    start = time.perf_counter()
    seeds = [seed + i for i in range(num_seeds)]
    runs, init_scores, infos, first, every = {}, {}, {}, {}, {}
    for i, s in enumerate(seeds, 1):
        role = ("the saved model" if s == seed
                else "for the recorded spread; epochs not shown")
        _recipe.say(verbose, NAME, f"seed {s} ({i}/{num_seeds}, {role}): "
                    f"{_recipe.count(restarts, 'restart')}, each autoencoder -> EM "
                    "-> ELBO; the lowest ELBO kept")
        candidates = _fit_candidates(s, epochs, pretrain_epochs,
                                     verbose if s == seed else 0, restarts, x_train,
                                     phases=bool(verbose))
        for candidate, info in candidates:  # for the record only
            every[info["seed"]] = _recipe.cluster_scores(
                y_test, predict_clusters(candidate, x_test))
        first[s] = every[candidates[0][1]["seed"]]
        trained, infos[s] = _select(candidates)
        del candidates
        test_means = _recipe.predict(encoder_of(trained), x_test)[0]
        init_scores[s] = _recipe.cluster_scores(
            y_test, infos[s].pop("em").predict(test_means))
        runs[s] = _recipe.cluster_scores(y_test, predict_clusters(trained, x_test))
        _recipe.say(verbose, NAME, f"seed {s}: restart {infos[s]['restart'] + 1} kept: "
                    f"test clustering accuracy {runs[s]['clustering_accuracy']:.4f} "
                    "(EM on the pre-trained latent: "
                    f"{init_scores[s]['clustering_accuracy']:.4f})")
        if s == seed:
            train_labels = predict_clusters(trained, x_train)
            model = _uncompiled_copy(trained, seed)
            order = _recipe.name_clusters(prior_of(model), train_labels, y_train)
    seconds = time.perf_counter() - start

    summary = {key: _recipe.seed_summary(per_seed, SUMMARY_KEYS) for key, per_seed in {
        "keras_gmm VaDE (this recipe)": runs,
        "diag GaussianMixtureEM on the pre-trained autoencoder latent (VaDE's "
        "initialisation, same runs)": init_scores,
        "keras_gmm VaDE, first restart only (restarts=1, no selection)": first,
        f"keras_gmm VaDE, every restart ({restarts} per seed, no selection; "
        "per_seed keyed by restart seed)": every}.items()}
    comparison = {"split": "test", "seeds": seeds, **summary}
    metrics = evaluate(model)
    if baselines:
        _recipe.say(verbose, NAME, f"baselines on the same {len(seeds)} seeds: "
                    "scikit-learn's KMeans and GaussianMixture on PCA features")
        others = _recipe.digits_baselines(x_train, x_test, y_test, seeds, {
            f"sklearn.mixture.GaussianMixture(10, covariance_type='diag', n_init=10) "
            f"on PCA({LATENT_DIM}) features (the latent size and covariance type of "
            "this model)": (_pca_features(x_train, x_test, LATENT_DIM),
                            {"covariance_type": "diag", "reg_covar": 1e-6, "n_init": 10,
                             "init_params": "kmeans"}),
            "sklearn.mixture.GaussianMixture(10, covariance_type='full', "
            "reg_covar=3e-2, n_init=10) on PCA(30) features (the em_digits zoo "
            "model's setting)": (_pca_features(x_train, x_test, 30),
                                 {"covariance_type": "full", "reg_covar": 3e-2,
                                  "n_init": 10, "init_params": "kmeans"})})
        comparison.update({key: _recipe.seed_summary(per_seed, SUMMARY_KEYS)
                           for key, per_seed in others.items()})
        for key, reference in _recipe.kmeans_references(comparison, seed).items():
            metrics[key] = {"value": metrics[key], **reference}
    training = {
        "seed": seed,
        "restarts": restarts,
        "epochs": epochs,
        "pretrain_epochs": pretrain_epochs,
        "batch_size": BATCH_SIZE,
        "optimizer": {
            "pretrain": {"name": "Adam", "learning_rate": PRETRAIN_LEARNING_RATE,
                         "input_noise_stddev": INPUT_NOISE},
            "initialisation": {
                "name": "keras_gmm.GaussianMixtureEM on the encoder means", **EM},
            "elbo": {"name": "Adam", "learning_rate": LEARNING_RATE,
                     "schedule": "keras.optimizers.schedules.CosineDecay",
                     "alpha": LR_FLOOR},
        },
        "collapse_guard": {
            "max_cluster_fraction_on_train": MAX_CLUSTER_FRACTION,
            "largest_cluster_fraction_on_train": {
                str(s): infos[s]["train_largest_cluster_fraction"] for s in seeds},
        },
        "runs": {str(s): infos[s] for s in seeds},
        "component_order": [int(i) for i in order],
        "train_scores": _recipe.cluster_scores(y_train,
                                               predict_clusters(model, x_train)),
        "seconds": round(seconds, 1),
        "comparison": comparison,
    }
    if baselines:
        training["seconds_with_baselines"] = round(time.perf_counter() - start, 1)
    return model, {"metrics": metrics, "training": training}
