"""keras_gmm.GMMPriorSampling: the VaDE prior layer."""

import doctest

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp

import keras_gmm
from keras_gmm.layers import gmm_prior_sampling
from keras_gmm.metrics import clustering_accuracy
from keras_gmm.ops import kl as kl_ops
from tests import layer_checks

K, D, F = 3, 2, 6


def make_vae(kl_method="vade", inference="mean", features=F, **kw):
    """x [F] -> encoder -> GMMPriorSampling -> z [D] (the model output)."""
    x = keras.Input((features,), name="x")
    h = keras.layers.Dense(16, activation="tanh")(x)
    z_mean = keras.layers.Dense(D, name="z_mean")(h)
    z_log_var = keras.layers.Dense(D, name="z_log_var")(h)
    prior = keras_gmm.GMMPriorSampling(
        K, D, kl_method=kl_method, inference=inference, seed=0, name="prior", **kw
    )
    return keras.Model(x, prior([z_mean, z_log_var]))


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, F)).astype(np.float32)
    return x, x[:, :D].copy()


def random_prior(layer, seed=0):
    rng = np.random.default_rng(seed)
    k, d = layer.num_components, layer.latent_dim
    layer.logits.assign(rng.normal(size=k).astype(np.float32))
    layer.means.assign(rng.normal(scale=3.0, size=(k, d)).astype(np.float32))
    layer.log_variances.assign(rng.normal(-1.0, 0.5, size=(k, d)).astype(np.float32))


def built_layer(k=K, d=D, **kw):
    layer = keras_gmm.GMMPriorSampling(k, d, seed=0, **kw)
    layer.build([(None, d), (None, d)])
    return layer


def test_keras_layer_checks(tmp_path):
    x, y = data()
    layer_checks.check_layer(
        make_vae,
        lambda m: m.get_layer("prior"),
        x,
        y,
        lambda m: "mse",
        tmp_path,
    )
    # kl_method="mc" (same weights and config path): a compiled fit step.
    layer_checks.check_jit_fit_step(lambda: make_vae("mc"), x, y, lambda m: "mse")


def test_prior_weights_are_trainable_float32_and_trained_by_fit():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = make_vae()
        prior = model.get_layer("prior")
        assert [w.name for w in prior.trainable_weights] == [
            "logits", "means", "log_variances"
        ]
        assert all(w.dtype == "float32" for w in prior.weights)
        assert model(data()[0]).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model = make_vae()
    prior = model.get_layer("prior")
    before = [w.numpy().copy() for w in prior.trainable_weights]
    model.compile(keras.optimizers.Adam(0.05), loss="mse")
    x, y = data()
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    for b, w in zip(before, prior.trainable_weights):
        assert not np.allclose(b, w.numpy()), w.name


def test_added_loss_is_the_weighted_batch_mean_kl():
    x, _ = data()
    for kl_method in ("vade", "mc"):
        model = make_vae(kl_method, kl_weight=0.25)
        prior = model.get_layer("prior")
        random_prior(prior)
        encoder = keras.Model(model.inputs[0], [model.get_layer("z_mean").output,
                                             model.get_layer("z_log_var").output])
        z_mean, z_log_var = encoder(x)
        z = prior([z_mean, z_log_var], training=True)
        (loss,) = prior.losses
        if kl_method == "vade":
            want = kl_ops.vade_kl(z_mean, z_log_var, *prior._prior())[0]
            np.testing.assert_allclose(
                prior.kl_divergence(z_mean, z_log_var), want, rtol=1e-6
            )
        else:
            want = kl_ops.mc_kl(z, z_mean, z_log_var, *prior._prior())
        np.testing.assert_allclose(loss, 0.25 * np.mean(want), rtol=1e-5)
    # kl_weight=0: a zero loss (autoencoder pre-training).
    prior = built_layer(kl_weight=0.0)
    prior([tf.zeros((4, D)), tf.zeros((4, D))])
    assert float(prior.losses[0]) == 0.0


def test_training_samples_and_inference_option():
    x, _ = data(n=2000)
    z_mean = tf.constant(x[:, :D])
    z_log_var = tf.fill(z_mean.shape, np.log(0.25).astype(np.float32))
    sampling = built_layer()
    z = sampling([z_mean, z_log_var], training=True).numpy()
    # A reparameterized sample: residuals have the posterior's scale (0.5).
    np.testing.assert_allclose(np.std(z - x[:, :D], axis=0), 0.5, rtol=0.05)
    # inference="sample" (default) samples at inference too; "mean" returns z_mean.
    z_inf = sampling([z_mean, z_log_var], training=False).numpy()
    assert np.std(z_inf - x[:, :D]) > 0.4
    mean_mode = built_layer(inference="mean")
    np.testing.assert_array_equal(mean_mode([z_mean, z_log_var]).numpy(), x[:, :D])
    z_train = mean_mode([z_mean, z_log_var], training=True).numpy()
    assert np.std(z_train - x[:, :D]) > 0.4
    # With return_cluster_probabilities: (z, gamma), gamma = cluster_probabilities.
    z2, gamma = mean_mode([z_mean, z_log_var], return_cluster_probabilities=True)
    np.testing.assert_allclose(
        gamma, mean_mode.cluster_probabilities(z_mean, z_log_var), rtol=1e-6
    )
    assert gamma.shape == (2000, K) and z2.shape == (2000, D)


def test_cluster_probabilities_match_numpy_and_extremes():
    layer = built_layer(k=4, d=3)
    random_prior(layer, seed=1)
    rng = np.random.default_rng(2)
    z_mean = rng.normal(scale=3.0, size=(7, 3)).astype(np.float32)
    z_log_var = rng.normal(-1.0, 0.5, size=(7, 3)).astype(np.float32)
    logits, mu, v = (w.numpy().astype(np.float64) for w in layer.trainable_weights)
    ell = -0.5 * np.sum(
        np.log(2 * np.pi) + v + (np.exp(z_log_var)[:, None] + (z_mean[:, None] - mu) ** 2)
        / np.exp(v), axis=-1,
    )
    log_joint = logits - logsumexp(logits) + ell
    want = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
    gamma = layer.cluster_probabilities(z_mean, z_log_var).numpy()
    np.testing.assert_allclose(gamma, want, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(
        layer.predict_cluster(z_mean, z_log_var).numpy(), want.argmax(axis=1)
    )
    # Extreme inputs: |z| = 1e4, log-variances of +-30 (posterior and prior).
    for prior_log_var in (30.0, -30.0):
        layer.log_variances.assign(np.full((4, 3), prior_log_var, np.float32))
        for scale in (1e4, -1e4):
            for log_var in (30.0, -30.0):
                zm = scale * np.sign(rng.normal(size=(5, 3))).astype(np.float32)
                zl = np.full((5, 3), log_var, np.float32)
                gamma = layer.cluster_probabilities(zm, zl).numpy()
                assert np.all(np.isfinite(gamma))
                np.testing.assert_allclose(gamma.sum(axis=1), 1.0, atol=1e-5)
                layer([zm, zl])
                assert np.isfinite(float(layer.losses[-1]))


# ---------------------------------------------------------------- sampling
def test_sample_prior_moments_components_and_temperature():
    layer = built_layer(k=3, d=2)
    random_prior(layer, seed=3)
    w = tf.nn.softmax(layer.logits).numpy()
    mu, var = layer.means.numpy(), np.exp(layer.log_variances.numpy())
    n = 200_000
    z, c = layer.sample_prior(n, seed=0, return_components=True)
    z, c = z.numpy(), c.numpy()
    assert z.shape == (n, 2) and z.dtype == np.float32
    np.testing.assert_allclose(np.bincount(c, minlength=3) / n, w, atol=0.005)
    mix_mean = w @ mu
    mix_var = w @ (var + mu**2) - mix_mean**2
    np.testing.assert_allclose(z.mean(axis=0), mix_mean, atol=0.03)
    np.testing.assert_allclose(z.var(axis=0), mix_var, rtol=0.02)
    for k in range(3):
        zk = layer.sample_prior(20_000, component=k, seed=k).numpy()
        np.testing.assert_allclose(zk.mean(axis=0), mu[k], atol=0.02)
        np.testing.assert_allclose(zk.var(axis=0), var[k], rtol=0.05)
    # One component per row, temperature scales the standard deviations.
    comps = np.array([2, 0, 1, 2], np.int32)
    z0 = layer.sample_prior(4, component=comps, temperature=0.0, seed=1).numpy()
    np.testing.assert_allclose(z0, mu[comps], rtol=1e-6)
    z_half = layer.sample_prior(4, component=comps, temperature=0.5, seed=1).numpy()
    z_one = layer.sample_prior(4, component=comps, temperature=1.0, seed=1).numpy()
    np.testing.assert_allclose(z_half - mu[comps], 0.5 * (z_one - mu[comps]), rtol=1e-5,
                               atol=1e-6)
    # Seeds: the same int seed gives the same draws; None advances.
    np.testing.assert_array_equal(layer.sample_prior(5, seed=7), layer.sample_prior(5, seed=7))
    assert not np.allclose(layer.sample_prior(5), layer.sample_prior(5))


def test_sample_prior_gradients_reach_the_prior():
    layer = built_layer()
    random_prior(layer)
    with tf.GradientTape() as tape:
        z = layer.sample_prior(64, seed=0)
        loss = tf.reduce_sum(tf.square(z - 1.0))
    grads = dict(zip(
        [w.name for w in layer.trainable_weights],
        tape.gradient(loss, layer.trainable_weights),
    ))
    grads = {k: None if g is None else tf.convert_to_tensor(g) for k, g in grads.items()}
    assert np.any(grads["means"].numpy() != 0)
    assert np.any(grads["log_variances"].numpy() != 0)
    assert np.all(np.isfinite(grads["means"].numpy()))
    # The component draw is discrete: the logits get no gradient.
    assert grads["logits"] is None
    # Fitting the samples to a target moves the means there (DeLiGAN use).
    opt = keras.optimizers.Adam(0.1)
    for step in range(100):
        with tf.GradientTape() as tape:
            z = layer.sample_prior(256, seed=step)
            loss = tf.reduce_mean(tf.square(z - 2.0))
        variables = [layer.means, layer.log_variances]
        opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
    np.testing.assert_allclose(layer.means.numpy(), 2.0, atol=0.3)
    assert np.all(np.exp(layer.log_variances.numpy()) < 0.2)


# ---------------------------------------------------------- initialisation
@pytest.fixture(scope="module")
def fitted_em():
    """A diag EM (3 components) fitted on 3 elongated blobs in 2-D, and the data."""
    rng = np.random.default_rng(0)
    centres = np.array([[-5.0, 0.0], [5.0, 0.0], [0.0, 6.0]])
    x = np.concatenate([c + rng.normal(scale=[0.5, 1.0], size=(300, 2)) for c in centres])
    x = x.astype(np.float32)
    em = keras_gmm.GaussianMixtureEM(3, covariance_type="diag", seed=0, max_iter=30)
    em.fit(x, verbose=0)
    return em, x


def test_initialize_from_em(fitted_em):
    em, x = fitted_em
    layer = keras_gmm.GMMPriorSampling(3, 2)
    assert layer.initialize_from(em) is layer and layer.built
    np.testing.assert_allclose(tf.nn.softmax(layer.logits), em.weights_, rtol=1e-5)
    np.testing.assert_allclose(layer.means.numpy(), em.means_, rtol=1e-6)
    np.testing.assert_allclose(
        np.exp(layer.log_variances.numpy()), em.covariances_, rtol=1e-5
    )
    # With a near-deterministic posterior, gamma is the EM's responsibilities.
    zl = np.full_like(x, -20.0)
    np.testing.assert_allclose(
        layer.cluster_probabilities(x, zl).numpy(), em.predict_proba(x), atol=1e-4
    )


# --------------------------------------------------- clustering end to end
def test_short_training_recovers_separated_blobs_without_collapse():
    """VaDE's recipe in miniature: pre-train the autoencoder, initialise the
    prior by EM on the encoder means, train the ELBO."""
    rng = np.random.default_rng(0)
    k, features, per = 4, 10, 150
    centres = rng.normal(size=(k, features))
    centres *= 4.0 / np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.repeat(np.arange(k), per)
    x = (centres[y] + 0.5 * rng.normal(size=(k * per, features))).astype(np.float32)

    inputs = keras.Input((features,))
    h = keras.layers.Dense(32, activation="relu")(inputs)
    z_mean = keras.layers.Dense(2)(h)
    z_log_var = keras.layers.Dense(2, kernel_initializer="zeros",
                                   bias_initializer=keras.initializers.Constant(-4.0))(h)
    decoder = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(32, activation="relu"),
         keras.layers.Dense(features)]
    )
    # Gaussian reconstruction NLL per example (unit variance), up to a constant.
    recon = lambda t, p: 0.5 * features * keras.losses.mean_squared_error(t, p)  # noqa: E731
    autoencoder = keras.Model(inputs, decoder(z_mean))
    autoencoder.compile(keras.optimizers.Adam(3e-3), loss=recon)
    autoencoder.fit(x, x, batch_size=64, epochs=30, verbose=0)

    encoder = keras.Model(inputs, [z_mean, z_log_var])
    em = keras_gmm.GaussianMixtureEM(k, covariance_type="diag", n_init=3, seed=0)
    em.fit(encoder.predict(x, verbose=0)[0], verbose=0)
    prior = keras_gmm.GMMPriorSampling(k, 2, seed=0, name="prior")
    z, gamma = prior([z_mean, z_log_var], return_cluster_probabilities=True)
    vade = keras.Model(inputs, {"gamma": gamma, "x_hat": decoder(z)})
    prior.initialize_from(em)
    vade.compile(keras.optimizers.Adam(1e-3), loss={"x_hat": recon}, jit_compile=True)
    history = vade.fit(x, {"x_hat": x}, batch_size=64, epochs=15, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))

    labels = vade.predict(x, verbose=0)["gamma"].argmax(axis=1)
    assert clustering_accuracy(y, labels) >= 0.95
    # No collapse: every cluster used, none holds much more than its share.
    fractions = np.bincount(labels, minlength=k) / len(labels)
    assert fractions.min() > 0.15 and fractions.max() < 0.35, fractions
    assert tf.nn.softmax(prior.logits).numpy().min() > 0.1


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_components=0, latent_dim=2), "num_components.*0"),
        (dict(num_components=-1, latent_dim=2), "num_components.*-1"),
        (dict(num_components=2.0, latent_dim=2), "num_components.*2.0"),
        (dict(num_components=2, latent_dim=0), "latent_dim.*0"),
        (dict(num_components=2, latent_dim=2, kl_method="exact"), "kl_method.*exact"),
        (dict(num_components=2, latent_dim=2, kl_weight=-1.0), "kl_weight.*-1.0"),
        (dict(num_components=2, latent_dim=2, inference="mode"), "inference.*mode"),
        (dict(num_components=2, latent_dim=2, seed="0"), "seed"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_gmm.GMMPriorSampling(**kwargs)


def test_bad_inputs():
    layer = keras_gmm.GMMPriorSampling(2, 3)
    with pytest.raises(ValueError, match="same shape.*\\(4, 3\\).*\\(4, 2\\)"):
        layer([tf.zeros((4, 3)), tf.zeros((4, 2))])
    with pytest.raises(ValueError, match="latent_dim=3.*\\(4, 5\\)"):
        layer([tf.zeros((4, 5)), tf.zeros((4, 5))])
    with pytest.raises(ValueError, match="z_mean, z_log_var"):
        layer(tf.zeros((4, 3)))
    with pytest.raises(ValueError, match="latent_dim=3"):
        keras.Model(
            keras.Input((2,)),
            keras_gmm.GMMPriorSampling(2, 3)([keras.Input((2,)), keras.Input((2,))]),
        )
    with pytest.raises(ValueError, match="not built"):
        keras_gmm.GMMPriorSampling(2, 3).sample_prior(4)
    built = built_layer(k=2, d=3)
    with pytest.raises(ValueError, match="same shape"):
        built.cluster_probabilities(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="component.*\\[0, 2\\).*5"):
        built.sample_prior(4, component=5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="component"):
        built.sample_prior(2, component=tf.constant([0, 2]))
    with pytest.raises(ValueError, match="`n`.*0"):
        built.sample_prior(0)
    with pytest.raises(ValueError, match="temperature.*-1"):
        built.sample_prior(2, temperature=-1.0)


def test_initialize_from_bad_em(fitted_em):
    em, _ = fitted_em  # 3 components on 2-D data
    layer = keras_gmm.GMMPriorSampling(3, 4)
    with pytest.raises(keras_gmm.layers.gaussian_mixture_em.NotFittedError,
                       match="unfitted.*fit"):
        layer.initialize_from(keras_gmm.GaussianMixtureEM(3, covariance_type="diag"))
    with pytest.raises(ValueError, match="2-dimensional.*latent_dim=4"):
        layer.initialize_from(em)
    with pytest.raises(ValueError, match="num_components=3.*num_components=2"):
        keras_gmm.GMMPriorSampling(2, 2).initialize_from(em)
    full = keras_gmm.GaussianMixtureEM(3, covariance_type="full", seed=0)
    with pytest.raises(ValueError, match="covariance_type='diag'.*'full'"):
        layer.initialize_from(full)
    with pytest.raises(ValueError, match="GaussianMixtureEM"):
        layer.initialize_from("em")
    assert not layer.built  # nothing was half-set


def test_docstring_example_runs():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(gmm_prior_sampling.GMMPriorSampling, "GMMPriorSampling"):
        runner.run(test)
    assert runner.failures == 0 and runner.tries >= 10
