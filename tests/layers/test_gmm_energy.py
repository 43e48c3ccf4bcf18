"""GMMEnergy: DAGMM's sample energy against a naive NumPy/SciPy computation."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import multivariate_normal

import keras_gmm
from tests import layer_checks

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")


# ------------------------------------------------------------ naive reference
def naive_mixture(z, gamma, covariance_type, reg_covar, row_weights=None):
    """The weighted M-step from memberships, written out (float64).

    Returns ``(phi [K], mu [K, D], covariances [K, D, D])``: each component's
    full covariance matrix whatever the covariance type.
    """
    z, gamma = np.asarray(z, np.float64), np.asarray(gamma, np.float64)
    gamma = gamma / gamma.sum(axis=1, keepdims=True)
    w = np.ones(len(z)) if row_weights is None else np.asarray(row_weights)
    r = gamma * w[:, None]
    nk = r.sum(axis=0)
    mu = r.T @ z / nk[:, None]
    k, d = gamma.shape[1], z.shape[1]
    scatter = np.stack(
        [(r[:, j, None] * (z - mu[j])).T @ (z - mu[j]) for j in range(k)]
    )
    if covariance_type == "full":
        cov = scatter / nk[:, None, None]
    elif covariance_type == "tied":
        cov = np.broadcast_to(scatter.sum(axis=0) / nk.sum(), (k, d, d))
    elif covariance_type == "diag":
        cov = np.stack([np.diag(np.diag(s)) / n for s, n in zip(scatter, nk)])
    else:
        cov = np.stack([np.trace(s) / (n * d) * np.eye(d) for s, n in zip(scatter, nk)])
    return nk / nk.sum(), mu, cov + reg_covar * np.eye(d)


def naive_energy(points, phi, mu, cov):
    """``-log sum_k phi_k N(x | mu_k, cov_k)`` with SciPy (float64)."""
    log_joint = np.stack(
        [
            np.log(p) + multivariate_normal(m, c).logpdf(points)
            for p, m, c in zip(phi, mu, cov)
        ],
        axis=-1,
    )
    top = log_joint.max(axis=-1)
    return -(top + np.log(np.exp(log_joint - top[:, None]).sum(axis=-1)))


def _data(n=60, d=3, k=2, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d)) * rng.uniform(0.5, 2.0, size=d) + rng.normal(size=d)
    gamma = rng.dirichlet(np.ones(k), size=n)
    return z, gamma


# ---------------------------------------------------------------- the math
@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_training_energy_equals_naive(covariance_type):
    z, gamma = _data()
    layer = keras_gmm.GMMEnergy(covariance_type, reg_covar=1e-3, dtype="float64")
    energy = layer([tf.constant(z), tf.constant(gamma)], training=True).numpy()
    phi, mu, cov = naive_mixture(z, gamma, covariance_type, 1e-3)
    expected = naive_energy(z, phi, mu, cov)
    np.testing.assert_allclose(energy, expected, rtol=1e-9, atol=1e-9)
    # The added loss: energy_weight * mean energy + cov_penalty_weight * sum 1/var.
    variances = np.stack([np.diag(c) for c in cov])
    expected = 0.1 * energy.mean() + 0.005 * np.sum(1.0 / variances)
    (loss,) = layer.losses
    assert float(loss) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_fit_mixture_then_inference_equals_naive(covariance_type):
    z, gamma = _data(n=500, d=4, k=3, seed=1)
    layer = keras_gmm.GMMEnergy(covariance_type, reg_covar=1e-4)
    layer.fit_mixture(z.astype("float32"), gamma.astype("float32"), batch_size=128)
    phi, mu, cov = naive_mixture(z, gamma, covariance_type, 1e-4)
    np.testing.assert_allclose(layer.weights_, phi, rtol=1e-5)
    np.testing.assert_allclose(layer.means_, mu, rtol=1e-5, atol=1e-5)
    points = z[:50] + 0.5
    energy = layer(
        [tf.constant(points, tf.float32), tf.constant(gamma[:50], tf.float32)]
    )
    expected = naive_energy(points, phi, mu, cov)
    np.testing.assert_allclose(energy, expected, rtol=1e-5, atol=1e-4)
    assert energy.dtype == tf.float32


def test_log_determinant_does_not_underflow():
    # 30 features with variances ~1e-4: det(Sigma) ~ 1e-120 underflows float32
    # (and a determinant-based log-density with it), the factor's log-diagonal
    # does not.
    rng = np.random.default_rng(2)
    d = 30
    z = rng.normal(size=(400, d)) * 1e-2
    gamma = rng.dirichlet(np.ones(2), size=400)
    phi, mu, cov = naive_mixture(z, gamma, "full", 1e-6)
    assert np.linalg.det(cov[0].astype(np.float32)) == 0.0  # the trap
    layer = keras_gmm.GMMEnergy("full", reg_covar=1e-6)
    layer.fit_mixture(z, gamma)
    energy = layer(
        [tf.constant(z[:20], tf.float32), tf.constant(gamma[:20], tf.float32)]
    )
    expected = naive_energy(z[:20], phi, mu, cov)
    assert np.all(expected < -80)  # a sharp density: large negative energies
    np.testing.assert_allclose(energy, expected, rtol=1e-4)


def test_gradients_through_the_m_step_match_finite_differences():
    z, gamma = _data(n=12, d=2, k=2, seed=3)
    layer = keras_gmm.GMMEnergy("full", reg_covar=1e-2, dtype="float64")
    logits = np.log(gamma)

    def mean_energy(z_, logits_):
        return tf.reduce_mean(layer([z_, tf.nn.softmax(logits_)], training=True))

    z_t, l_t = tf.Variable(z), tf.Variable(logits)
    with tf.GradientTape() as tape:
        value = mean_energy(z_t, l_t)
    grad_z, grad_l = tape.gradient(value, [z_t, l_t])
    assert grad_z is not None and grad_l is not None
    eps = 1e-6
    for array, grad, which in ((z, grad_z, 0), (logits, grad_l, 1)):
        numeric = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            up, down = array.copy(), array.copy()
            up[index] += eps
            down[index] -= eps
            args_up = (up, logits) if which == 0 else (z, up)
            args_down = (down, logits) if which == 0 else (z, down)
            numeric[index] = (
                float(mean_energy(*map(tf.constant, args_up)))
                - float(mean_energy(*map(tf.constant, args_down)))
            ) / (2 * eps)
        np.testing.assert_allclose(grad.numpy(), numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_moving_statistics_are_the_decayed_m_step(covariance_type):
    # Two training batches with momentum m: the inference mixture is the M-step
    # of (1 - m) [m S1 / n1 + S2 / n2] (stepwise EM), i.e. a weighted M-step
    # with row weights m / n1 for the first batch and 1 / n2 for the second.
    z1, g1 = _data(n=40, d=3, k=2, seed=4)
    z2, g2 = _data(n=30, d=3, k=2, seed=5)
    m = 0.6
    layer = keras_gmm.GMMEnergy(covariance_type, reg_covar=1e-3, momentum=m,
                                dtype="float64")
    for z, g in ((z1, g1), (z2, g2)):
        layer([tf.constant(z), tf.constant(g)], training=True)
    weights = np.concatenate([np.full(40, m / 40), np.full(30, 1 / 30)])
    phi, mu, cov = naive_mixture(
        np.concatenate([z1, z2]), np.concatenate([g1, g2]), covariance_type, 1e-3,
        row_weights=weights,
    )
    np.testing.assert_allclose(layer.weights_, phi, rtol=1e-9)
    np.testing.assert_allclose(layer.means_, mu, rtol=1e-9, atol=1e-12)
    points, gamma = _data(n=10, d=3, k=2, seed=6)
    energy = layer([tf.constant(points), tf.constant(gamma)], training=False)
    np.testing.assert_allclose(energy, naive_energy(points, phi, mu, cov), rtol=1e-9)
    # Inference calls leave the mixture unchanged.
    np.testing.assert_allclose(layer.means_, mu, rtol=1e-9, atol=1e-12)


def test_energy_is_finite_for_extreme_inputs_and_empty_components():
    z, gamma = _data(n=50, d=3, k=3, seed=7)
    gamma[:, 2] = 0.0  # an empty component
    layer = keras_gmm.GMMEnergy("full", reg_covar=1e-6)
    train = layer([tf.constant(z, tf.float32), tf.constant(gamma, tf.float32)],
                  training=True)
    assert np.all(np.isfinite(train.numpy()))
    assert np.all(np.isfinite(layer.precisions_cholesky_))
    extreme = np.array(
        [[1e15, -1e15, 1e15], [0, 0, 0], [-3e14, 1e-30, 5e14]], np.float32
    )
    energy = layer([tf.constant(extreme), tf.constant(gamma[:3], tf.float32)])
    assert np.all(np.isfinite(energy.numpy()))
    assert energy[0] > energy[1]  # far away is more anomalous


def test_no_loss_when_weights_are_zero():
    z, gamma = _data()
    layer = keras_gmm.GMMEnergy(energy_weight=0, cov_penalty_weight=0)
    layer([tf.constant(z, tf.float32), tf.constant(gamma, tf.float32)], training=True)
    assert layer.losses == []


# ----------------------------------------------------------- Keras checks
def _make_model(covariance_type="full"):
    inputs = keras.Input((5,), name="x")
    z = keras.layers.Dense(3, name="z")(inputs)
    gamma = keras.layers.Dense(2, activation="softmax", name="gamma")(inputs)
    energy = keras_gmm.GMMEnergy(covariance_type, reg_covar=1e-3, name="energy")(
        [z, gamma]
    )
    return keras.Model(inputs, energy)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_keras_layer_checks(covariance_type, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    layer_checks.check_layer(
        lambda: _make_model(covariance_type),
        lambda model: model.get_layer("energy"),
        x,
        np.zeros((64,), "float32"),
        lambda model: None,  # the loss is the layer's add_loss terms
        tmp_path,
        # The TF-only export check (serving_default, score, predict) is
        # test_endpoints_without_keras_gmm, in one process.
        export_check=None,
    )


def test_training_updates_state_and_round_trips(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(128, 5)).astype("float32")
    model = _make_model()
    model.compile(keras.optimizers.Adam(1e-2))
    model.fit(x, epochs=1, batch_size=32, verbose=0)
    layer = model.get_layer("energy")
    assert np.all(layer.moving_nk.numpy() > 0)
    assert not np.allclose(layer.means_, 0.0)
    layer.set_threshold(1.5)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6
    )
    assert float(loaded.get_layer("energy").threshold.numpy()) == 1.5


def test_export_without_keras_gmm(tmp_path):
    # serving_default only: the anomaly endpoints (score, predict) are
    # keras_gmm.export's, tested in tests/export.
    from tests.export_utils import run_tf_only

    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 5)).astype("float32")
    model = _make_model()
    layer = model.get_layer("energy")
    extractor = keras.Model(model.inputs, layer.input)
    layer.fit_mixture(*extractor.predict(x, verbose=0))
    energy = model.predict(x, verbose=0)
    path = keras_gmm.export_saved_model(model, tmp_path / "export")
    (default,) = run_tf_only([(path, "serving_default", {"x": x})])
    np.testing.assert_allclose(default["energy"], energy, rtol=1e-5, atol=1e-5)


def test_mixed_precision_computes_in_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = keras_gmm.GMMEnergy()
        z, gamma = _data()
        out = layer([tf.constant(z, tf.float16), tf.constant(gamma, tf.float16)],
                    training=True)
        assert out.dtype == tf.float32
        assert layer.means.dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "name, value",
    [("covariance_type", "banana"), ("reg_covar", 0.0), ("momentum", 1.0),
     ("momentum", -0.1), ("energy_weight", -1), ("energy_weight", "0.1"),
     ("cov_penalty_weight", float("nan")), ("cov_penalty_weight", True)],
)
def test_bad_arguments_name_the_argument_and_the_value(name, value):
    # every message names the argument and repeats the value received
    expected = f"`{name}`.*received {name}={re.escape(repr(value))}"
    with pytest.raises(ValueError, match=expected):
        keras_gmm.GMMEnergy(**{name: value})


def test_bad_inputs():
    layer = keras_gmm.GMMEnergy()
    with pytest.raises(ValueError, match=r"list \[z, gamma\]"):
        layer(tf.zeros((4, 3)))
    with pytest.raises(ValueError, match="same batch size"):
        keras_gmm.GMMEnergy()([tf.zeros((4, 3)), tf.zeros((5, 2))])
    with pytest.raises(ValueError, match="`z` must be 2-D"):
        keras_gmm.GMMEnergy()([tf.zeros((4, 3, 2)), tf.zeros((4, 2))])
    fitted = keras_gmm.GMMEnergy()
    with pytest.raises(ValueError, match=r"shapes \[n, 3\] and \[n, 2\]"):
        fitted.build([(None, 3), (None, 2)])
        fitted.fit_mixture(np.zeros((10, 4)), np.ones((10, 2)))
    with pytest.raises(ValueError, match="finite"):
        fitted.fit_mixture(np.full((10, 3), np.nan), np.ones((10, 2)))
    with pytest.raises(ValueError, match="value.*nan"):
        fitted.set_threshold(float("nan"))
    with pytest.raises(ValueError, match="build"):
        keras_gmm.GMMEnergy().set_threshold(1.0)


# ------------------------------------------ state, training gate, bad gamma
def test_fit_mixture_uses_float64_and_matches_parameters_from_resp():
    # fit_mixture's streamed statistics (3 batches) give the one M-step from
    # responsibilities of ops.em, in float64, whatever the layer's dtype
    from keras_gmm.ops import em

    z, gamma = _data(n=300, d=3, k=2, seed=11)
    z = z * 1e-3 + 1e3  # far from the origin, tight: float32 statistics would lose
    layer = keras_gmm.GMMEnergy("full", reg_covar=1e-9, dtype="float64")
    layer.fit_mixture(z, gamma, batch_size=128)
    w, mu, cov, _ = em.parameters_from_resp(
        tf.constant(z), tf.constant(gamma / gamma.sum(1, keepdims=True)), "full", 1e-9
    )
    np.testing.assert_allclose(layer.means_, mu.numpy(), rtol=1e-12)
    np.testing.assert_allclose(layer.covariances_, cov.numpy(), rtol=1e-8)
    np.testing.assert_allclose(layer.weights_, w.numpy(), rtol=1e-12)


def test_unfitted_properties_raise_until_the_moving_statistics_hold_mass():
    from keras_gmm.layers.gaussian_mixture_em import NotFittedError

    z, gamma = _data()
    layer = keras_gmm.GMMEnergy(reg_covar=1e-3)
    layer.build([(None, 3), (None, 2)])
    for name in ("weights_", "means_", "precisions_cholesky_", "covariances_",
                 "precisions_"):
        with pytest.raises(NotFittedError, match="GMMEnergy is not fitted.*fit_mixture"):
            getattr(layer, name)
    # inference before training serves the initial mixture (as BatchNormalization)
    assert np.all(np.isfinite(layer([tf.constant(z, tf.float32),
                                     tf.constant(gamma, tf.float32)]).numpy()))
    with pytest.raises(NotFittedError):
        layer.means_
    layer([tf.constant(z, tf.float32), tf.constant(gamma, tf.float32)], training=True)
    assert layer.means_.shape == (2, 3) and np.all(layer.moving_nk.numpy() > 0)


def test_a_frozen_layer_neither_estimates_nor_updates():
    z, gamma = _data()
    layer = keras_gmm.GMMEnergy(reg_covar=1e-3)
    layer.fit_mixture(z, gamma)
    layer.trainable = False
    before = [w.numpy().copy() for w in layer.weights]
    inputs = [tf.constant(z, tf.float32), tf.constant(gamma, tf.float32)]
    energy = layer(inputs, training=True)
    np.testing.assert_array_equal(energy, layer(inputs, training=False))
    for b, w in zip(before, layer.weights):
        np.testing.assert_array_equal(b, w.numpy())
    assert layer.losses == []


def test_a_non_finite_training_batch_is_refused_eagerly_and_skipped_under_jit():
    z, gamma = _data(n=64, d=3, k=2, seed=12)
    layer = keras_gmm.GMMEnergy(reg_covar=1e-3)
    layer([tf.constant(z, tf.float32), tf.constant(gamma, tf.float32)], training=True)
    means = layer.means_.copy()
    z[5, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or inf in `z` or `gamma`"):
        layer([tf.constant(z, tf.float32), tf.constant(gamma, tf.float32)],
              training=True)
    np.testing.assert_array_equal(layer.means_, means)
    # Under XLA the assertion is dropped: the batch's step is skipped, counted.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 5)).astype("float32")
    x[40] = np.nan  # in the second (last) batch
    model = _make_model()
    model.compile("adam", jit_compile=True)
    model.fit(x, batch_size=32, epochs=1, verbose=0, shuffle=False)
    energy = model.get_layer("energy")
    assert int(energy.skipped_batches.numpy()) == 1
    assert np.all(np.isfinite(energy.means_)) and np.all(np.isfinite(energy.covariances_))


def test_gamma_with_another_number_of_components_is_refused():
    z, gamma = _data(k=2)
    layer = keras_gmm.GMMEnergy()
    layer([tf.constant(z, tf.float32), tf.constant(gamma, tf.float32)])
    _, gamma3 = _data(k=3)
    with pytest.raises(ValueError, match=r"built for z \[batch, 3\] and gamma "
                                         r"\[batch, 2\].*\(60, 3\)"):
        layer([tf.constant(z, tf.float32), tf.constant(gamma3, tf.float32)])


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda g: g * np.where(np.arange(len(g))[:, None] == 3, -1.0, 1.0),
         "`gamma` must hold non-negative memberships"),
        (lambda g: np.where(np.arange(len(g))[:, None] == 4, 0.0, g),
         r"`gamma` has zero total membership in 1 of 60 rows \(first at row 4\)"),
        (lambda g: np.zeros_like(g), "zero total membership in 60 of 60 rows"),
        (lambda g: np.where(np.arange(len(g))[:, None] == 2, np.inf, g),
         "`gamma` must be finite"),
    ],
)
def test_fit_mixture_refuses_bad_memberships(change, match):
    z, gamma = _data()
    layer = keras_gmm.GMMEnergy()
    with pytest.raises(ValueError, match=match):
        layer.fit_mixture(z, change(gamma))


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, None])
def test_fit_mixture_refuses_bad_batch_sizes(batch_size):
    z, gamma = _data()
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
        keras_gmm.GMMEnergy().fit_mixture(z, gamma, batch_size=batch_size)


def test_the_shipped_dagmm_file_loads_with_its_state():
    # saved before skipped_batches existed: it loads, with the counter at 0
    import keras_gmm.zoo

    model = keras_gmm.zoo.load("dagmm_breast_cancer")
    (layer,) = [lay for lay in model.layers if isinstance(lay, keras_gmm.GMMEnergy)]
    assert int(layer.skipped_batches.numpy()) == 0
    np.testing.assert_allclose(layer.weights_.sum(), 1.0, rtol=1e-6)
    np.testing.assert_allclose(layer.moving_nk.numpy(), layer.weights_)
    assert np.isfinite(float(layer.threshold.numpy()))
