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

from keras_gmm import datasets
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


RECIPE = _recipe.VaDE(NAME, datasets.load_digits, NUM_PIXELS, HIDDEN,
                      latent_dim=LATENT_DIM, num_components=NUM_COMPONENTS,
                      input_noise=INPUT_NOISE,
                      pretrain_learning_rate=PRETRAIN_LEARNING_RATE,
                      learning_rate=LEARNING_RATE, lr_floor=LR_FLOOR,
                      batch_size=BATCH_SIZE, em=EM, initial_log_var=INITIAL_LOG_VAR,
                      max_cluster_fraction=MAX_CLUSTER_FRACTION,
                      restart_seed_stride=RESTART_SEED_STRIDE,
                      elbo_samples=ELBO_SAMPLES)
CollapseError = _recipe.CollapseError
reconstruction_nll = RECIPE.reconstruction_nll
build = RECIPE.build
vade_of = RECIPE.vade_of
prior_of = RECIPE.prior_of
decoder_of = RECIPE.decoder_of
encoder_of = RECIPE.encoder_of
predict_clusters = RECIPE.predict_clusters
check_not_collapsed = RECIPE.check_not_collapsed
negative_elbo = RECIPE.negative_elbo
restart_seed = RECIPE.restart_seed
fit_once = RECIPE.fit_once
fit = RECIPE.fit
_fit_candidates = RECIPE.fit_candidates
_select = RECIPE.select

evaluate = RECIPE.evaluate
example_inputs = RECIPE.example_inputs

def train(seed=DEFAULTS["seed"], epochs=DEFAULTS["epochs"],
          pretrain_epochs=DEFAULTS["pretrain_epochs"], num_seeds=DEFAULTS["num_seeds"],
          restarts=DEFAULTS["restarts"], verbose=0, baselines=True):
    """:meth:`keras_gmm.zoo._recipe.VaDE.train_seeds` with ``seed`` (the saved
    model, its clusters named after the digits by the train labels) and
    ``seed + 1, ...`` (``num_seeds`` in all, the recorded spread); every
    restart is also scored on "test" for the record (the selection never sees
    it). About 40 s per restart on 2 CPU cores. Returns ``(model, record)``."""
    seed, epochs, pretrain_epochs, num_seeds, restarts = RECIPE.check_train_options(
        seed, epochs, pretrain_epochs, num_seeds, restarts)
    start = time.perf_counter()
    trained = RECIPE.train_seeds(seed, epochs, pretrain_epochs, num_seeds, restarts,
                                 verbose)
    model, seeds = trained["model"], trained["seeds"]
    comparison = trained["comparison"]
    metrics = evaluate(model)
    if baselines:
        _recipe.say(verbose, NAME, f"baselines on the same {len(seeds)} seeds: "
                    "scikit-learn's KMeans and GaussianMixture on PCA features")
        x_train = datasets.load_digits("train")[0]
        x_test, y_test = datasets.load_digits("test")
        others = _recipe.digits_baselines(x_train, x_test, y_test, seeds, {
            f"sklearn.mixture.GaussianMixture(10, covariance_type='diag', n_init=10) "
            f"on PCA({LATENT_DIM}) features (the latent size and covariance type of "
            "this model)": (_recipe.pca_features(x_train, x_test, LATENT_DIM),
                            {"covariance_type": "diag", "reg_covar": 1e-6, "n_init": 10,
                             "init_params": "kmeans"}),
            "sklearn.mixture.GaussianMixture(10, covariance_type='full', "
            "reg_covar=3e-2, n_init=10) on PCA(30) features (the em_digits zoo "
            "model's setting)": (_recipe.pca_features(x_train, x_test, 30),
                                 {"covariance_type": "full", "reg_covar": 3e-2,
                                  "n_init": 10, "init_params": "kmeans"})})
        comparison.update({key: _recipe.seed_summary(per_seed, SUMMARY_KEYS)
                           for key, per_seed in others.items()})
        for key, reference in _recipe.kmeans_references(comparison, seed).items():
            metrics[key] = {"value": metrics[key], **reference}
    training = RECIPE.training_record(seed, epochs, pretrain_epochs, restarts, trained)
    if baselines:
        training["seconds_with_baselines"] = round(time.perf_counter() - start, 1)
    return model, {"metrics": metrics, "training": training}
