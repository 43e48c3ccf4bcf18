"""keras_gmm.MixtureDensityHead."""


import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gmm
from keras_gmm import mixture
from tests import layer_checks

COV_TYPES = ("diag", "full", "spherical", "tied")


def make_mdn(num_components=3, event_size=2, covariance_type="diag", features=4, **kw):
    return keras.Sequential(
        [
            keras.Input((features,)),
            keras.layers.Dense(16, activation="tanh"),
            keras_gmm.MixtureDensityHead(
                num_components, event_size, covariance_type, name="head", **kw
            ),
        ]
    )


def head_loss(model):
    return model.get_layer("head").loss()


def data(n=32, features=4, event_size=2, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype(np.float32)
    y = (x[:, :event_size] + 0.1 * rng.normal(size=(n, event_size))).astype(np.float32)
    return x, y


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_keras_layer_checks(covariance_type, tmp_path):
    x, y = data()
    layer_checks.check_layer(
        lambda: make_mdn(covariance_type=covariance_type),
        lambda m: m.get_layer("head"),
        x,
        y,
        head_loss,
        tmp_path,
        # diag and full exports (and their TF-only reload) are covered, with
        # every endpoint, by tests/test_export.py.
        export_check=(
            None if covariance_type in ("diag", "full")
            else layer_checks.check_export_reload
        ),
    )


def test_output_shape_and_leading_dimensions():
    head = keras_gmm.MixtureDensityHead(4, 3, "full")
    size = mixture.params_size(4, 3, "full")
    assert head.compute_output_shape((None, 7, 5)) == (None, 7, size)
    x = np.random.default_rng(0).normal(size=(2, 7, 5)).astype(np.float32)
    params = head(x)
    assert params.shape == (2, 7, size) and params.dtype == tf.float32
    assert head.sample(params, seed=1).shape == (2, 7, 3)
    assert head.log_prob(params, np.zeros((2, 7, 3))).shape == (2, 7)


def test_sequence_model_trains_with_time_dimension():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6, 3)).astype(np.float32)
    y = np.cumsum(x[..., :2], axis=1).astype(np.float32)
    head = keras_gmm.MixtureDensityHead(3, 2)
    model = keras.Sequential(
        [keras.Input((None, 3)), keras.layers.LSTM(8, return_sequences=True), head]
    )
    model.compile("adam", loss=head.loss())
    hist = model.fit(x, y, epochs=2, verbose=0)
    assert np.all(np.isfinite(hist.history["loss"]))
    td = keras.Sequential(
        [keras.Input((6, 3)), keras.layers.TimeDistributed(keras_gmm.MixtureDensityHead(2, 2))]
    )
    assert td(x).shape == (16, 6, mixture.params_size(2, 2))


def test_initialisation_is_near_uniform_unit_scale_and_spread():
    head = keras_gmm.MixtureDensityHead(8, 2, seed=3)
    x = np.random.default_rng(0).normal(size=(64, 10)).astype(np.float32)
    parts = head.component_params(head(x))
    w = parts["weights"].numpy()
    assert np.all(np.abs(w - 1 / 8) < 0.06)  # near-uniform weights
    std = parts["stddevs"].numpy()
    assert std.min() > 0.05 and std.max() < 0.2  # start near 0.1
    means = parts["means"].numpy()
    assert means.std(axis=1).mean() > 0.1  # components do not start on top of each other


@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_methods_agree_with_the_tfp_distribution(covariance_type):
    head = keras_gmm.MixtureDensityHead(3, 2, covariance_type)
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    params = head(x)
    dist = head.distribution(params)
    y = np.random.default_rng(2).normal(size=(5, 2)).astype(np.float32)
    np.testing.assert_allclose(head.log_prob(params, y), dist.log_prob(y), rtol=1e-5)
    np.testing.assert_allclose(head.mean(params), dist.mean(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(head.variance(params), dist.variance(), rtol=1e-4)
    np.testing.assert_allclose(head.covariance(params), dist.covariance(), rtol=1e-4, atol=1e-6)
    loss = head.loss(reduction=None)
    np.testing.assert_allclose(loss(y, params), -dist.log_prob(y), rtol=1e-5)


def test_sample_statistics_and_greedy():
    head = keras_gmm.MixtureDensityHead(3, 2, "full", seed=0)
    x = np.tile(np.random.default_rng(3).normal(size=(1, 4)), (50_000, 1)).astype(np.float32)
    params = head(x)
    s = head.sample(params, seed=11).numpy()
    np.testing.assert_allclose(s.mean(0), head.mean(params)[0], atol=0.03)
    np.testing.assert_allclose(np.cov(s.T), head.covariance(params)[0], rtol=0.05, atol=0.01)
    greedy = head.greedy(params).numpy()
    np.testing.assert_array_equal(head.sample(params, 0.0, 0.0, seed=1).numpy(), greedy)
    # default seed stream advances: two calls differ
    assert not np.allclose(head.sample(params[:8]), head.sample(params[:8]))


def test_sample_inside_tf_function_and_jit():
    head = keras_gmm.MixtureDensityHead(3, 1)
    x = tf.ones((4, 2))
    head.build(x.shape)  # variables are created outside the compiled function

    @tf.function(jit_compile=True)
    def draw(x, seed):
        return head.sample(head(x), temperature=0.5, sigma_temperature=0.5, seed=seed)

    a = draw(x, tf.constant([1, 2], tf.int64))
    b = draw(x, tf.constant([1, 2], tf.int64))
    np.testing.assert_array_equal(a, b)


def test_fit_under_mirrored_strategy_two_cpus():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:2]
    assert len(devices) == 2, "conftest configures two logical CPUs"
    strategy = tf.distribute.MirroredStrategy(devices)
    x, y = data(n=64)
    with strategy.scope():
        model = make_mdn()
        model.compile("adam", loss=head_loss(model))
    hist = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(hist.history["loss"]))
    assert hist.history["loss"][-1] < hist.history["loss"][0]


def test_learns_a_bimodal_target():
    """y = +-x: a mean-squared-error model predicts 0, the MDN finds both arms."""
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.0, size=(2000, 1)).astype(np.float32)
    y = (x * rng.choice([-1.0, 1.0], size=x.shape)).astype(np.float32)
    head = keras_gmm.MixtureDensityHead(2, 1, seed=0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(32, activation="tanh"), head])
    model.compile(keras.optimizers.Adam(1e-3), loss=head.loss())
    model.fit(x, y, batch_size=100, epochs=40, verbose=0)
    parts = head.component_params(model(np.array([[0.8]], np.float32)))
    means = np.sort(parts["means"].numpy().ravel())
    np.testing.assert_allclose(means, [-0.8, 0.8], atol=0.1)
    np.testing.assert_allclose(parts["weights"].numpy().ravel(), [0.5, 0.5], atol=0.1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_components=0, event_size=1), "num_components.*0"),
        (dict(num_components=-2, event_size=1), "num_components.*-2"),
        (dict(num_components=2, event_size=0), "event_size.*0"),
        (dict(num_components=2, event_size=1, covariance_type="foo"), "covariance_type.*foo"),
        (dict(num_components=2, event_size=1, min_scale=0), "min_scale.*0"),
        (dict(num_components=2, event_size=1, min_scale=-1e-3), "min_scale"),
        (dict(num_components=2, event_size=1, seed="a"), "seed"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        keras_gmm.MixtureDensityHead(**kwargs)


def test_wrong_event_size_of_targets():
    model = make_mdn(event_size=2)
    model.compile("adam", loss=head_loss(model))
    x, _ = data()
    with pytest.raises(ValueError, match=r"y_true.*event_size=2.*3\)"):
        model.fit(x, np.zeros((32, 3), np.float32), verbose=0)
    head = model.get_layer("head")
    with pytest.raises(ValueError, match=r"`y`.*event_size=2"):
        head.log_prob(model(x), np.zeros((32, 5), np.float32))


def test_negative_temperatures_are_errors():
    head = keras_gmm.MixtureDensityHead(2, 1)
    params = head(tf.ones((1, 3)))
    with pytest.raises(ValueError, match="temperature.*-1"):
        head.sample(params, temperature=-1.0)
    with pytest.raises(ValueError, match="sigma_temperature.*-0.5"):
        head.sample(params, sigma_temperature=-0.5)


def test_unknown_feature_size_is_an_error():
    head = keras_gmm.MixtureDensityHead(2, 1)
    with pytest.raises(ValueError, match="last axis.*known"):
        head.build((None, None))


def test_initialisation_follows_the_global_keras_seed():
    x = tf.ones((2, 3))
    keras.utils.set_random_seed(7)
    a = keras_gmm.MixtureDensityHead(4, 2)(x).numpy()
    keras.utils.set_random_seed(7)
    b = keras_gmm.MixtureDensityHead(4, 2)(x).numpy()
    np.testing.assert_array_equal(a, b)
    c = keras_gmm.MixtureDensityHead(4, 2, seed=np.int64(3))(x).numpy()
    assert not np.allclose(a, c)


def test_negative_tensor_temperature_is_an_error():
    head = keras_gmm.MixtureDensityHead(2, 1)
    params = head(tf.ones((1, 3)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature"):
        head.sample(params, temperature=tf.constant(-1.0))
