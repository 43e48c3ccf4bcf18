"""keras_gmm.GMMNegLogLik."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import keras_gmm
from keras_gmm import mixture

tfd = tfp.distributions


@pytest.mark.parametrize("covariance_type", mixture.COVARIANCE_TYPES)
def test_loss_is_mean_negative_log_likelihood(covariance_type):
    rng = np.random.default_rng(0)
    k, d = 3, 2
    y_pred = rng.normal(size=(16, mixture.params_size(k, d, covariance_type)))
    y_true = rng.normal(size=(16, d))
    loss = keras_gmm.GMMNegLogLik(k, d, covariance_type, min_scale=1e-3)
    m = mixture.split_params(tf.constant(y_pred, tf.float32), k, d, covariance_type)
    want = -mixture.distribution(m).log_prob(y_true.astype(np.float32)).numpy()
    np.testing.assert_allclose(float(loss(y_true, y_pred)), want.mean(), rtol=1e-5)
    per_sample = keras_gmm.GMMNegLogLik(k, d, covariance_type, reduction=None)
    np.testing.assert_allclose(per_sample(y_true, y_pred).numpy(), want, rtol=1e-5)


def test_loss_includes_the_2pi_constant():
    # one standard normal component centred on the target: -log N(0|0,1)
    params = np.array([[0.0, 0.0, np.log(np.expm1(1.0 - 1e-3))]], np.float32)
    loss = keras_gmm.GMMNegLogLik(1, 1)
    np.testing.assert_allclose(float(loss(np.zeros((1, 1)), params)), 0.5 * np.log(2 * np.pi), rtol=1e-5)


def test_loss_goes_negative_for_sharp_densities():
    params = np.array([[0.0, 0.0, -30.0]], np.float32)  # stddev = min_scale
    loss = keras_gmm.GMMNegLogLik(1, 1, min_scale=0.01)
    assert float(loss(np.zeros((1, 1)), params)) < -3.0


def test_targets_without_event_axis_are_accepted_when_event_size_is_one():
    rng = np.random.default_rng(1)
    y_pred = rng.normal(size=(8, 15)).astype(np.float32)
    y = rng.normal(size=(8,)).astype(np.float32)
    loss = keras_gmm.GMMNegLogLik(5, 1)
    np.testing.assert_allclose(float(loss(y, y_pred)), float(loss(y[:, None], y_pred)))


def test_gradients_are_finite_at_the_floor_and_for_huge_targets():
    k, d = 2, 3
    for covariance_type in mixture.COVARIANCE_TYPES:
        size = mixture.params_size(k, d, covariance_type)
        params = tf.Variable(np.full((4, size), -60.0, np.float32))  # scales at floor
        y = tf.constant(np.full((4, d), 1e6, np.float32))
        loss = keras_gmm.GMMNegLogLik(k, d, covariance_type, min_scale=1e-3)
        with tf.GradientTape() as tape:
            value = loss(y, params)
        grad = tape.gradient(value, params)
        assert np.isfinite(float(value)), covariance_type
        assert np.all(np.isfinite(grad.numpy())), covariance_type


def test_serialization_round_trip():
    loss = keras_gmm.GMMNegLogLik(4, 2, "full", min_scale=0.01, name="nll")
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, keras_gmm.GMMNegLogLik)
    assert restored.get_config() == loss.get_config()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_components=0, event_size=1), "num_components.*0"),
        (dict(num_components=2, event_size=-1), "event_size.*-1"),
        (dict(num_components=2, event_size=1, covariance_type="box"), "covariance_type.*box"),
        (dict(num_components=2, event_size=1, min_scale=0.0), "min_scale.*0.0"),
        (dict(num_components=2, event_size=1, min_scale=-1), "min_scale.*-1"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_gmm.GMMNegLogLik(**kwargs)


def test_wrong_target_size_is_a_clear_error():
    loss = keras_gmm.GMMNegLogLik(2, 3)
    y_pred = np.zeros((4, mixture.params_size(2, 3)), np.float32)
    with pytest.raises(ValueError, match=r"y_true.*event_size=3.*\(4, 2\)"):
        loss(np.zeros((4, 2), np.float32), y_pred)


def test_wrong_params_size_is_a_clear_error():
    loss = keras_gmm.GMMNegLogLik(2, 3)
    with pytest.raises(ValueError, match=r"params.*14.*\(4, 19\)"):
        loss(np.zeros((4, 3), np.float32), np.zeros((4, 19), np.float32))


# ----------------------------------------------------- GMMClassificationLoss
def _lgm_by_hand(logits, d, labels, alpha, lam):
    """The L-GM loss of each row, written out with Python floats."""
    out = []
    for z_row, d_row, y in zip(logits, d, labels):
        z = [z_c - (0.5 * alpha * d_c if c == y else 0.0)
             for c, (z_c, d_c) in enumerate(zip(z_row, d_row))]
        log_norm = np.log(sum(np.exp(v) for v in z))
        out.append(-(z[y] - log_norm) + lam * -z_row[y])
    return np.array(out)


def _lgm_batch():
    logits = np.array([[-1.0, -3.0, -2.5], [-4.0, -0.5, -6.0]])
    d = np.array([[0.8, 5.0, 3.0], [7.0, 0.3, 9.0]])
    return logits, d, np.stack([logits, d], -1).astype("float32")


def test_classification_loss_equals_a_hand_computation():
    logits, d, y_pred = _lgm_batch()
    labels = np.array([0, 2])
    loss = keras_gmm.GMMClassificationLoss(alpha=0.5, likelihood_weight=0.2,
                                           reduction=None)
    want = _lgm_by_hand(logits, d, labels, 0.5, 0.2)
    np.testing.assert_allclose(loss(labels, y_pred).numpy(), want, rtol=1e-6)
    mean = keras_gmm.GMMClassificationLoss(alpha=0.5, likelihood_weight=0.2)
    np.testing.assert_allclose(float(mean(labels, y_pred)), want.mean(), rtol=1e-6)


def test_classification_loss_without_margin_is_cross_entropy_on_logits():
    logits, _, y_pred = _lgm_batch()
    labels = np.array([1, 0])
    plain = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    loss = keras_gmm.GMMClassificationLoss(alpha=0.0, likelihood_weight=0.0)
    np.testing.assert_allclose(
        float(loss(labels, y_pred)), float(plain(labels, logits)), rtol=1e-6
    )


def test_classification_loss_accepts_sparse_column_and_one_hot_labels():
    _, _, y_pred = _lgm_batch()
    labels = np.array([2, 1])
    loss = keras_gmm.GMMClassificationLoss(alpha=0.3, likelihood_weight=0.1,
                                           reduction=None)
    want = loss(labels, y_pred).numpy()
    np.testing.assert_allclose(loss(labels[:, None], y_pred).numpy(), want, rtol=1e-6)
    np.testing.assert_allclose(
        loss(np.eye(3)[labels].astype("float32"), y_pred).numpy(), want, rtol=1e-6
    )
    # a batch as long as the number of classes is still read as labels
    y3 = np.concatenate([y_pred, y_pred[:1]])
    np.testing.assert_allclose(
        loss(np.array([2, 1, 2]), y3).numpy()[:2], want, rtol=1e-6
    )


def test_classification_loss_flags_bad_labels_and_nan_rows_with_nan():
    _, _, y_pred = _lgm_batch()
    loss = keras_gmm.GMMClassificationLoss(reduction=None)
    out = loss(np.array([3, 0]), y_pred).numpy()  # 3 is not a class of C=3
    assert np.isnan(out[0]) and np.isfinite(out[1])
    out = loss(np.array([-1, 0]), y_pred).numpy()
    assert np.isnan(out[0]) and np.isfinite(out[1])
    y_nan = y_pred.copy()
    y_nan[1, 0, 1] = np.nan
    out = loss(np.array([0, 1]), y_nan).numpy()
    assert np.isfinite(out[0]) and np.isnan(out[1])


def test_classification_loss_runs_in_float32_on_float16_predictions():
    logits, d, y_pred = _lgm_batch()
    loss = keras_gmm.GMMClassificationLoss(reduction=None)
    out = loss(np.array([0, 1]), y_pred.astype("float16"))
    assert out.dtype == tf.float32
    np.testing.assert_allclose(
        out.numpy(), _lgm_by_hand(logits, d, [0, 1], 0.1, 0.1), rtol=2e-3
    )


def test_classification_loss_errors_and_config():
    with pytest.raises(ValueError, match=r"`alpha` must be a finite number >= 0.*-0.1"):
        keras_gmm.GMMClassificationLoss(alpha=-0.1)
    with pytest.raises(ValueError, match=r"`likelihood_weight`.*received likelihood_weight=nan"):
        keras_gmm.GMMClassificationLoss(likelihood_weight=float("nan"))
    loss = keras_gmm.GMMClassificationLoss(alpha=0.2, likelihood_weight=0.05)
    with pytest.raises(ValueError, match=r"`y_pred` must be \[\.\.\., num_classes, 2\].*"
                       r"logits_and_distances.*\(2, 3\)"):
        loss(np.array([0, 1]), np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match=r"`y_true` must be integer labels.*\(2, 3, 1\)"):
        loss(np.zeros((2, 3, 1)), np.zeros((2, 3, 2), "float32"))
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, keras_gmm.GMMClassificationLoss)
    assert (restored.alpha, restored.likelihood_weight) == (0.2, 0.05)
    assert restored.get_config() == loss.get_config()
