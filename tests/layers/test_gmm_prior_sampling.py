"""keras_gmm.GMMPriorSampling: the VaDE prior layer."""

import warnings
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import logsumexp

import keras_gmm
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
    """Random logits, means and covariances: log-variances ("diag") or raw
    scales ("full": correlated components)."""
    rng = np.random.default_rng(seed)
    k, d = layer.num_components, layer.event_size
    layer.logits.assign(rng.normal(size=k).astype(np.float32))
    layer.means.assign(rng.normal(scale=3.0, size=(k, d)).astype(np.float32))
    if layer.covariance_type == "diag":
        layer.log_variances.assign(rng.normal(-1.0, 0.5, size=(k, d)).astype(np.float32))
    else:
        layer.raw_scales.assign(
            rng.normal(0.0, 0.6, size=layer.raw_scales.shape).astype(np.float32))


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
        (dict(num_components=0, event_size=2), "num_components.*0"),
        (dict(num_components=-1, event_size=2), "num_components.*-1"),
        (dict(num_components=2.0, event_size=2), "num_components.*2.0"),
        (dict(num_components=2, event_size=0), "event_size.*0"),
        (dict(num_components=2), "event_size.*None"),
        (dict(num_components=2, event_size=2, latent_dim=2), "event_size` only.*latent_dim=2"),
        (dict(num_components=2, event_size=2, kl_method="exact"), "kl_method.*exact"),
        (dict(num_components=2, event_size=2, kl_weight=-1.0), "kl_weight.*-1.0"),
        (dict(num_components=2, event_size=2, kl_weight=float("nan")), "kl_weight.*nan"),
        (dict(num_components=2, event_size=2, kl_weight=float("inf")), "kl_weight.*inf"),
        (dict(num_components=2, event_size=2, inference="mode"), "inference.*mode"),
        (dict(num_components=2, event_size=2, seed="0"), "seed.*'0'"),
        (dict(num_components=2, event_size=2, seed=-1), "seed.*-1"),
        (dict(num_components=2, event_size=2, seed=2**63), "seed.*9223372036854775808"),
        (dict(num_components=2, event_size=2, seed=1.5), "seed.*1.5"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_gmm.GMMPriorSampling(**kwargs)


def test_bad_inputs():
    layer = keras_gmm.GMMPriorSampling(2, 3)
    with pytest.raises(ValueError, match="same shape.*\\(4, 3\\).*\\(4, 2\\)"):
        layer([tf.zeros((4, 3)), tf.zeros((4, 2))])
    with pytest.raises(ValueError, match="event_size=3.*\\(4, 5\\)"):
        layer([tf.zeros((4, 5)), tf.zeros((4, 5))])
    with pytest.raises(ValueError, match="z_mean, z_log_var"):
        layer(tf.zeros((4, 3)))
    with pytest.raises(ValueError, match="event_size=3"):
        keras.Model(
            keras.Input((2,)),
            keras_gmm.GMMPriorSampling(2, 3)([keras.Input((2,)), keras.Input((2,))]),
        )
    with pytest.raises(ValueError, match="not built"):
        keras_gmm.GMMPriorSampling(2, 3).sample_prior(4)
    built = built_layer(k=2, d=3)
    with pytest.raises(ValueError, match="same shape"):
        built.cluster_probabilities(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="component.*\\[0, 1\\].*num_components=2.*5"):
        built.sample_prior(4, component=5)
    with pytest.raises(tf.errors.InvalidArgumentError, match="component"):
        built.sample_prior(2, component=tf.constant([0, 2]))
    with pytest.raises(ValueError, match="`n`.*0"):
        built.sample_prior(0)
    with pytest.raises(ValueError, match="temperature.*-1"):
        built.sample_prior(2, temperature=-1.0)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(n=2.0), ValueError, "`n`.*2.0"),
        (dict(n=True), ValueError, "`n`.*True"),
        (dict(n="3"), ValueError, "`n`.*'3'"),
        (dict(n=tf.constant(2.0)), ValueError, "`n`.*integer tensor.*float32"),
        (dict(n=tf.constant(0)), tf.errors.InvalidArgumentError, "`n` must be"),
        (dict(n=2, temperature=float("nan")), ValueError, "temperature.*nan"),
        (dict(n=2, temperature=float("inf")), ValueError, "temperature.*inf"),
        (dict(n=2, temperature=tf.constant(float("nan"))),
         tf.errors.InvalidArgumentError, "temperature"),
        (dict(n=2, seed="7"), ValueError, "seed.*'7'"),
        (dict(n=2, seed=-3), ValueError, "seed.*-3"),
        (dict(n=2, seed=2**64), ValueError, "seed.*18446744073709551616"),
        (dict(n=2, seed=tf.constant([1.0, 2.0])), ValueError, "seed.*integer tensor"),
        (dict(n=2, component=1.0), ValueError, "component.*1.0"),
        (dict(n=2, component=True), ValueError, "component.*True"),
        (dict(n=2, component="0"), ValueError, "component.*'0'"),
        (dict(n=2, component=-1), ValueError, "component.*-1"),
        (dict(n=2, component=[[0, 1]]), ValueError, "component.*scalar or a vector"),
        (dict(n=3, component=[0, 1]), ValueError, "one index per code.*n=3.*2 indices"),
        (dict(n=tf.constant(3), component=tf.constant([0, 1])),
         tf.errors.InvalidArgumentError, "one index per code"),
    ],
)
def test_sample_prior_bad_arguments(kwargs, error, match):
    built = built_layer(k=2, d=3)
    with pytest.raises(error, match=match):
        built.sample_prior(**kwargs)


def test_kl_divergence_and_nan_rows():
    layer = built_layer(kl_method="mc")
    zm, zl = np.zeros((4, D), np.float32), np.zeros((4, D), np.float32)
    with pytest.raises(ValueError, match="pass z"):
        layer.kl_divergence(zm, zl)
    with pytest.raises(ValueError, match="`z` must have the shape of z_mean.*\\(4, 3\\)"):
        layer.kl_divergence(zm, zl, z=np.zeros((4, 3), np.float32))
    # A NaN row gives NaN for that row only, and no invented cluster.
    zm[1, 0] = np.nan
    gamma = layer.cluster_probabilities(zm, zl).numpy()
    assert np.all(np.isnan(gamma[1])) and np.all(np.isfinite(gamma[[0, 2, 3]]))
    np.testing.assert_array_equal(layer.predict_cluster(zm, zl).numpy()[1], -1)
    assert np.all(layer.predict_cluster(zm, zl).numpy()[[0, 2, 3]] >= 0)
    for method in ("vade", "mc"):
        layer = built_layer(kl_method=method)
        z, kl = layer([zm, zl], training=True), layer.kl_divergence(zm, zl, z=zm)
        z = z.numpy()  # elementwise: only the NaN entry's sample is NaN
        assert np.isnan(z[1, 0]) and np.isfinite(z).sum() == z.size - 1
        assert np.isnan(kl.numpy()[1]) and np.all(np.isfinite(kl.numpy()[[0, 2, 3]]))


# ------------------------------------------------- extreme posterior variances
@pytest.mark.parametrize("log_var", [89.0, 200.0, -200.0, 1e6])
@pytest.mark.parametrize("kl_method", ["vade", "mc"])
def test_extreme_z_log_var_gives_finite_gamma_kl_and_samples(log_var, kl_method):
    """exp(89) overflows float32: the docstring promises finite rows anyway."""
    layer = built_layer(k=4, d=3, kl_method=kl_method)
    random_prior(layer, seed=4)
    rng = np.random.default_rng(5)
    zm = rng.normal(size=(6, 3)).astype(np.float32)
    zl = np.full((6, 3), log_var, np.float32)
    zl[0] = 0.0  # an ordinary row next to the extreme ones
    z, gamma = layer([zm, zl], training=True, return_cluster_probabilities=True)
    gamma = gamma.numpy()
    assert np.all(np.isfinite(gamma)) and np.all(np.isfinite(z.numpy()))
    np.testing.assert_allclose(gamma.sum(axis=1), 1.0, atol=1e-5)
    assert np.isfinite(float(layer.losses[-1]))
    kl = layer.kl_divergence(zm, zl, z=z).numpy()
    assert np.all(np.isfinite(kl))
    # The extreme rows cost more than the ordinary one (a huge or a tiny
    # posterior variance is far from the prior), and gradients are finite.
    assert np.all(kl[1:] > kl[0])
    zl_var = tf.Variable(zl)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer.kl_divergence(zm, zl_var, z=z))
    grad = tape.gradient(loss, zl_var).numpy()
    assert np.all(np.isfinite(grad))
    if log_var > 0 and kl_method == "vade":  # it still pulls a huge variance down
        assert np.all(grad[1:] > 0)


@pytest.mark.parametrize("log_var", [89.0, 200.0, -200.0])
def test_extreme_z_log_var_gamma_is_right(log_var):
    """With the same prior variance for every component, the trace term of
    E_q[log N] is common to all and cancels: gamma = p(c | z_mean) exactly,
    for any z_log_var. With distinct variances and a huge z_log_var, the
    widest component takes everything."""
    layer = built_layer(k=3, d=2)
    random_prior(layer, seed=6)
    layer.log_variances.assign(np.full((3, 2), -0.5, np.float32))
    rng = np.random.default_rng(7)
    zm = rng.normal(scale=2.0, size=(5, 2)).astype(np.float32)
    gamma = layer.cluster_probabilities(zm, np.full((5, 2), log_var, np.float32))
    want = layer.cluster_probabilities(zm, np.full((5, 2), -30.0, np.float32))
    np.testing.assert_allclose(gamma.numpy(), want.numpy(), rtol=1e-5, atol=1e-7)
    if log_var > 0:
        layer.log_variances.assign([[-1.0, 0.0], [0.5, 0.7], [0.2, -0.3]])
        gamma = layer.cluster_probabilities(zm, np.full((5, 2), log_var, np.float32))
        np.testing.assert_allclose(gamma.numpy()[:, 1], 1.0, atol=1e-6)


# ----------------------------------------------------------- permutations
def test_permute_components_relabels_the_prior():
    layer = built_layer(k=4, d=2)
    random_prior(layer, seed=8)
    before = [w.numpy().copy() for w in (layer.logits, layer.means, layer.log_variances)]
    rng = np.random.default_rng(9)
    zm = rng.normal(scale=2.0, size=(10, 2)).astype(np.float32)
    zl = rng.normal(-1.0, 0.3, size=(10, 2)).astype(np.float32)
    gamma = layer.cluster_probabilities(zm, zl).numpy()
    kl = layer.kl_divergence(zm, zl).numpy()
    order = [2, 0, 3, 1]
    assert layer.permute_components(np.array(order)) is layer
    for old, w in zip(before, (layer.logits, layer.means, layer.log_variances)):
        np.testing.assert_array_equal(w.numpy(), old[order])  # new k = old order[k]
    np.testing.assert_allclose(layer.cluster_probabilities(zm, zl).numpy(),
                               gamma[:, order], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(layer.kl_divergence(zm, zl).numpy(), kl, rtol=1e-5)
    # The inverse permutation restores the prior (a list works too).
    layer.permute_components(list(np.argsort(order)))
    np.testing.assert_array_equal(layer.means.numpy(), before[1])


@pytest.mark.parametrize(
    "order", [[0, 0, 1], [0, 1], [0, 1, 3], [[0, 1, 2]], [0.0, 1.0, 2.0], "012",
              [-1, 0, 1], None],
)
def test_permute_components_bad_order(order):
    layer = built_layer(k=3, d=2)
    means = layer.means.numpy().copy()
    with pytest.raises(ValueError, match=r"order.*permutation of range\(3\)"):
        layer.permute_components(order)
    np.testing.assert_array_equal(layer.means.numpy(), means)  # nothing changed


def test_permute_components_needs_a_built_layer():
    with pytest.raises(ValueError, match="not built"):
        keras_gmm.GMMPriorSampling(3, 2).permute_components([0, 1, 2])


# ------------------------------------------------------------ vocabulary
def test_latent_dim_is_a_deprecated_alias_of_event_size():
    with pytest.warns(DeprecationWarning, match="latent_dim.*event_size"):
        layer = keras_gmm.GMMPriorSampling(3, latent_dim=2)
    assert layer.event_size == 2
    with pytest.warns(DeprecationWarning, match="latent_dim.*event_size"):
        assert layer.latent_dim == 2
    config = layer.get_config()
    assert config["event_size"] == 2 and "latent_dim" not in config
    # A config saved before the rename loads, silently (the file is not code).
    old = dict(config)
    old["latent_dim"] = old.pop("event_size")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        restored = keras_gmm.GMMPriorSampling.from_config(old)
    assert restored.event_size == 2


def test_saved_zoo_model_with_latent_dim_still_loads():
    """saved_models/vade_digits stores ``latent_dim`` in its config."""
    path = Path(__file__).resolve().parents[2] / "saved_models/vade_digits/model.keras"
    with zipfile.ZipFile(path) as archive:
        assert '"latent_dim": 10' in archive.read("config.json").decode()
    model = keras.saving.load_model(path, safe_mode=True)
    prior = model.get_layer("vade").get_layer("prior")
    assert isinstance(prior, keras_gmm.GMMPriorSampling)
    assert (prior.num_components, prior.event_size) == (10, 10)
    x = np.random.default_rng(0).uniform(size=(4, 64)).astype(np.float32)
    gamma = model.predict(x, verbose=0)
    assert gamma.shape == (4, 10) and np.allclose(gamma.sum(axis=1), 1.0, atol=1e-5)


def test_initialize_from_bad_em(fitted_em):
    em, _ = fitted_em  # 3 components on 2-D data
    layer = keras_gmm.GMMPriorSampling(3, 4)
    with pytest.raises(keras_gmm.layers.gaussian_mixture_em.NotFittedError,
                       match="unfitted.*fit"):
        layer.initialize_from(keras_gmm.GaussianMixtureEM(3, covariance_type="diag"))
    with pytest.raises(ValueError, match="2-dimensional.*event_size=4"):
        layer.initialize_from(em)
    with pytest.raises(ValueError, match="num_components=3.*num_components=2"):
        keras_gmm.GMMPriorSampling(2, 2).initialize_from(em)
    full = keras_gmm.GaussianMixtureEM(3, covariance_type="full", seed=0)
    with pytest.raises(ValueError, match="covariance_type='diag'.*'full'"):
        layer.initialize_from(full)
    with pytest.raises(ValueError, match="GaussianMixtureEM"):
        layer.initialize_from("em")
    assert not layer.built  # nothing was half-set


# ------------------------------------------------- covariance_type="full"
def full_covariances(layer):
    """The prior's covariances from its precision factors, in NumPy."""
    p = layer.mixture().precisions_cholesky.numpy().astype(np.float64)
    return np.linalg.inv(p @ np.swapaxes(p, -1, -2))


def test_full_prior_keras_layer_checks(tmp_path):
    x, y = data()
    make = lambda: make_vae(covariance_type="full")  # noqa: E731
    layer_checks.check_layer(make, lambda m: m.get_layer("prior"), x, y,
                             lambda m: "mse", tmp_path)
    model = make()
    prior = model.get_layer("prior")
    assert [w.name for w in prior.trainable_weights] == ["logits", "means", "raw_scales"]
    assert prior.raw_scales.shape == (K, D * (D + 1) // 2)
    assert prior.get_config()["covariance_type"] == "full"
    # A new full prior has unit covariances, as the diag prior's.
    np.testing.assert_allclose(full_covariances(prior), np.broadcast_to(np.eye(D), (K, D, D)),
                               atol=1e-6)


def test_full_prior_gamma_and_kl_match_scipy():
    from scipy.stats import multivariate_normal

    layer = built_layer(k=4, d=3, covariance_type="full")
    random_prior(layer, seed=1)
    cov = full_covariances(layer)
    rng = np.random.default_rng(2)
    z_mean = rng.normal(scale=3.0, size=(7, 3)).astype(np.float32)
    z_log_var = rng.normal(-1.0, 0.5, size=(7, 3)).astype(np.float32)
    logits = layer.logits.numpy().astype(np.float64)
    mu = layer.means.numpy().astype(np.float64)
    ell = np.stack([
        multivariate_normal(mu[c], cov[c]).logpdf(z_mean)
        - 0.5 * np.exp(z_log_var) @ np.diag(np.linalg.inv(cov[c])) for c in range(4)], -1)
    log_joint = logits - logsumexp(logits) + ell
    want_gamma = np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))
    np.testing.assert_allclose(layer.cluster_probabilities(z_mean, z_log_var).numpy(),
                               want_gamma, rtol=1e-4, atol=1e-6)
    want_kl = (-0.5 * np.sum(np.log(2 * np.pi) + 1.0 + z_log_var, axis=-1)
               - logsumexp(log_joint, axis=1))
    np.testing.assert_allclose(layer.kl_divergence(z_mean, z_log_var).numpy(), want_kl,
                               rtol=1e-4)
    np.testing.assert_allclose(layer.stddevs.numpy(),
                               np.sqrt(np.diagonal(cov, axis1=1, axis2=2)), rtol=1e-5)


def test_full_prior_samples_have_its_covariances_and_gradients():
    layer = built_layer(k=3, d=2, covariance_type="full")
    random_prior(layer, seed=3)
    cov, mu = full_covariances(layer), layer.means.numpy()
    for k in range(3):
        zk = layer.sample_prior(40_000, component=k, seed=k).numpy()
        np.testing.assert_allclose(zk.mean(axis=0), mu[k], atol=0.05 * np.sqrt(cov[k].max()))
        np.testing.assert_allclose(np.cov(zk.T), cov[k], rtol=0.05,
                                   atol=0.02 * np.abs(cov[k]).max())
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(layer.sample_prior(64, seed=0) - 1.0))
    grad = tape.gradient(loss, layer.raw_scales)
    assert grad is not None and np.all(np.isfinite(tf.convert_to_tensor(grad).numpy()))
    assert np.any(tf.convert_to_tensor(grad).numpy() != 0)


def test_full_prior_initialize_from_full_em_and_permute():
    rng = np.random.default_rng(0)
    corr = np.array([[1.0, 0.9], [0.9, 1.0]])
    x = np.concatenate([rng.multivariate_normal(c, s * corr, 300) for c, s in
                        (([-6.0, 0.0], 1.0), ([6.0, 0.0], 0.5), ([0.0, 7.0], 2.0))])
    x = x.astype(np.float32)
    em = keras_gmm.GaussianMixtureEM(3, covariance_type="full", seed=0)
    em.fit(x, verbose=0)
    layer = keras_gmm.GMMPriorSampling(3, 2, covariance_type="full")
    assert layer.initialize_from(em) is layer and layer.built
    np.testing.assert_allclose(layer.mixture().precisions_cholesky.numpy(),
                               em.precisions_cholesky_, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(full_covariances(layer), em.covariances_, rtol=1e-4,
                               atol=1e-5)
    zl = np.full_like(x, -20.0)
    np.testing.assert_allclose(layer.cluster_probabilities(x, zl).numpy(),
                               em.predict_proba(x), atol=1e-4)
    gamma = layer.cluster_probabilities(x[:20], zl[:20]).numpy()
    raw = layer.raw_scales.numpy().copy()
    layer.permute_components([2, 0, 1])
    np.testing.assert_array_equal(layer.raw_scales.numpy(), raw[[2, 0, 1]])
    np.testing.assert_allclose(layer.cluster_probabilities(x[:20], zl[:20]).numpy(),
                               gamma[:, [2, 0, 1]], rtol=1e-5, atol=1e-7)
    # A diag prior refuses the full EM and a full prior the diag one.
    diag = keras_gmm.GaussianMixtureEM(3, covariance_type="diag", seed=0)
    diag.fit(x, verbose=0)
    with pytest.raises(ValueError, match="covariance_type='full'.*'diag'"):
        layer.initialize_from(diag)
    with pytest.raises(ValueError, match="covariance_type='diag'.*'full'"):
        keras_gmm.GMMPriorSampling(3, 2).initialize_from(em)


@pytest.mark.parametrize("covariance_type", ["tied", "spherical", "box", 2])
def test_unsupported_prior_covariance_types(covariance_type):
    with pytest.raises(ValueError, match="covariance_type"):
        keras_gmm.GMMPriorSampling(3, 2, covariance_type=covariance_type)


def test_a_full_prior_vae_trains_with_finite_weights():
    """The full prior in a tiny VaDE: fit reduces the loss and keeps every
    weight finite."""
    x, _ = data(n=256)
    model = make_vae(covariance_type="full")
    prior = model.get_layer("prior")
    model.compile(keras.optimizers.Adam(0.02), loss="mse")
    history = model.fit(x, x[:, :D], epochs=5, batch_size=32, verbose=0).history["loss"]
    assert history[-1] < history[0]
    assert all(np.all(np.isfinite(w.numpy())) for w in prior.weights)
