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
