"""GMMEnergy: DAGMM's sample energy against a naive NumPy/SciPy computation."""

import doctest

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.stats import multivariate_normal

import keras_gmm
from keras_gmm.layers import gmm_energy
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


def test_endpoints_without_keras_gmm(tmp_path):
    from tests.export_utils import run_tf_only

    rng = np.random.default_rng(2)
    x = rng.normal(size=(40, 5)).astype("float32")
    model = _make_model()
    layer = model.get_layer("energy")
    extractor = keras.Model(model.inputs, layer.input)
    layer.fit_mixture(*extractor.predict(x, verbose=0))
    energy = model.predict(x, verbose=0)
    threshold = float(np.median(energy))
    layer.set_threshold(threshold)
    path = keras_gmm.export_saved_model(model, tmp_path / "export")
    default, score, predict = run_tf_only(
        [(path, name, {"x": x}) for name in ("serving_default", "score", "predict")]
    )
    np.testing.assert_allclose(default["energy"], energy, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(score["score"], energy, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(predict["is_anomaly"], energy > threshold)
    assert predict["is_anomaly"].sum() == 20


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
    "kwargs, match",
    [
        ({"covariance_type": "banana"}, "covariance_type.*'banana'"),
        ({"reg_covar": 0.0}, "reg_covar.*0.0"),
        ({"momentum": 1.0}, "momentum.*1.0"),
        ({"energy_weight": -1}, "energy_weight.*-1"),
        ({"cov_penalty_weight": float("nan")}, "cov_penalty_weight"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_gmm.GMMEnergy(**kwargs)


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


def test_docstring_example_runs():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(gmm_energy.GMMEnergy, "GMMEnergy"):
        result = runner.run(test)
        assert result.failed == 0
