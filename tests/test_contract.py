"""The boundary contract, tried as a hostile user would (README "Errors and
edge cases"): bad and extreme inputs on the public entry points, each with its
asserted outcome: a clear error (type and message) or a correct result.

This module holds the cases of the shared boundary (``_validation``, the
mixture functions, the mixture density head and its loss); the layers' own
cases live beside their tests (tests/layers/, tests/test_regularizers.py,
tests/zoo/, tests/test_cli.py, tests/test_export*.py).
"""

import threading
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gmm
from keras_gmm import _validation, mixture
from keras_gmm.ops import covariance


# --------------------------------------------------------------------------
# _validation: numbers, integers, choices, seeds
# --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value, kwargs, match",
    [
        (float("nan"), {}, r"`x` must be a finite number; received x=nan"),
        (float("inf"), {"low": 0.0}, r"finite number >= 0.0; received x=inf"),
        (-1e-30, {"low": 0.0}, r">= 0.0; received x=-1e-30"),
        (True, {}, r"received x=True"),
        ("3", {}, r"received x='3'"),
        (1e30, {"high": 1.0, "high_open": True}, r"< 1.0; received x=1e\+30"),
        (None, {}, r"received x=None"),
        (np.array([1.0, 2.0]), {}, r"received x=array"),
    ],
)
def test_check_number_refuses(value, kwargs, match):
    with pytest.raises(ValueError, match=match):
        _validation.check_number(value, "x", **kwargs)


@pytest.mark.parametrize("value", [1e-30, 1e30, 0.5, np.float32(2.0), np.int64(3), 7])
def test_check_number_accepts_extreme_finite_numbers(value):
    assert _validation.check_number(value, "x") == float(value)


@pytest.mark.parametrize("value", [0, -1, 2.0, True, "2", None, 2**70 * 1.0])
def test_check_positive_int_refuses(value):
    with pytest.raises(ValueError, match=r"`n` must be an integer >= 1; received n="):
        _validation.check_positive_int(value, "n")


@pytest.mark.parametrize("value", ["0", -1, 2**63, 1.5, True])
def test_check_seed_refuses(value):
    with pytest.raises(ValueError, match=r"`seed` must be an integer in \[0, "):
        _validation.check_seed(value)


def test_check_seed_accepts_the_int64_range_and_none():
    assert _validation.check_seed(None) is None
    assert _validation.check_seed(2**63 - 1) == 2**63 - 1
    assert _validation.check_seed(np.uint8(3)) == 3


def test_check_one_of_is_exact():
    assert _validation.check_one_of("diag", "t", ("diag", "full")) == "diag"
    for bad in ("Diag", " diag", 1, None, ["diag"], np.array("diag")):
        with pytest.raises(ValueError, match=r"`t` must be one of \('diag', 'full'\)"):
            _validation.check_one_of(bad, "t", ("diag", "full"))


# --------------------------------------------------------------------------
# _validation: arrays
# --------------------------------------------------------------------------
def test_check_array_refuses_sparse_with_the_fix():
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match=r"`x` is a sparse matrix .*x\.toarray\(\)"):
        _validation.check_array(sparse.csr_matrix(np.eye(3)), "x", ndim=2)


@pytest.mark.parametrize(
    "value, kwargs, error, match",
    [
        (np.ones((3, 2)) + 1j, {}, ValueError, r"`x` must hold real numbers; received complex"),
        (np.array([["a", "b"]]), {}, TypeError, r"`x` must hold numbers; .*dtype <U1"),
        (np.array([{}, 1], dtype=object), {}, TypeError, r"must hold numbers; .*object"),
        ([[1.0, 2.0], [3.0]], {}, ValueError, r"must be an array of numbers with one shape"),
        (np.ones(4), {"ndim": 2}, ValueError, r"must be 2-D .*shape \(4,\).*x\.reshape\(1, -1\)"),
        (np.ones((0, 2)), {"ndim": 2}, ValueError, r"at least 1 row; received .*\(0, 2\)"),
        (np.ones((3, 2)), {"ndim": 2, "n_features": 5}, ValueError, r"must have 5 features"),
        (np.array([[1.0, np.nan]]), {"ndim": 2}, ValueError, r"holds NaN or inf \(first at index \(0, 1\)\)"),
        (np.array([[1.0, -np.inf]]), {"ndim": 2}, ValueError, r"must be finite"),
    ],
)
def test_check_array_refuses(value, kwargs, error, match):
    with pytest.raises(error, match=match):
        _validation.check_array(value, "x", **kwargs)


def test_check_array_keeps_nan_when_asked_and_casts_integers():
    x = _validation.check_array([[1, 2], [3, 4]], "x", ndim=2)
    assert x.dtype == np.float64
    y = _validation.check_array(np.array([[np.nan, 1e30, 1e-30]]), "x", ndim=2,
                                allow_nan=True, dtype=np.float32)
    assert np.isnan(y[0, 0]) and y[0, 1] == np.float32(1e30) and y[0, 2] > 0
    t = _validation.check_array(tf.ones((2, 3)), "x", ndim=2, n_features=3)
    assert isinstance(t, np.ndarray) and t.shape == (2, 3)


# --------------------------------------------------------------------------
# mixture: layout, sampling, seeds
# --------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [0, -2, 2.5, "3", None, True])
def test_params_size_refuses_bad_counts(bad):
    with pytest.raises(ValueError, match=r"`num_components` must be an integer >= 1"):
        mixture.params_size(bad, 2)
    with pytest.raises(ValueError, match=r"`event_size` must be an integer >= 1"):
        mixture.params_size(2, bad)


def test_split_params_names_the_expected_size():
    with pytest.raises(ValueError, match=r"must have 15 values on its last axis.*params_size"):
        mixture.split_params(tf.zeros([2, 14]), 3, 2)


def _mixture(ctype="diag"):
    c = covariance.get(ctype)
    p = tf.constant(c.identity_precisions_cholesky(2, 2), tf.float32)
    return mixture.MixtureParams(
        tf.zeros([2]), tf.constant([[0.0, 0.0], [10.0, 10.0]]), p, ctype
    )


@pytest.mark.parametrize("name", ["temperature", "sigma_temperature"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1.0, "1", None])
def test_sample_refuses_bad_temperatures(name, bad):
    with pytest.raises(ValueError, match=rf"`{name}` must be a finite number >= 0"):
        mixture.sample(_mixture(), tf.constant([1, 2]), n=3, **{name: bad})


@pytest.mark.parametrize("name", ["temperature", "sigma_temperature"])
def test_sample_checks_tensor_temperatures_in_graph_with_the_same_message(name):
    fn = tf.function(
        lambda t: mixture.sample(_mixture(), tf.constant([1, 2]), n=3, **{name: t})
    )
    assert fn(tf.constant(0.5)).shape == (3, 2)
    for bad in (np.nan, -1.0, np.inf):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"`{name}` must be a finite number >= 0"):
            fn(tf.constant(bad))


@pytest.mark.parametrize("ctype", covariance.COVARIANCE_TYPES)
def test_sample_draws_each_component_with_its_weight_and_covariance(ctype):
    m = _mixture(ctype)._replace(logits=tf.math.log(tf.constant([0.25, 0.75])))
    x, c = mixture.sample(m, tf.constant([3, 4]), n=4000, return_components=True)
    frac = float(np.mean(c.numpy() == 1))
    assert abs(frac - 0.75) < 0.03
    near = x.numpy()[c.numpy() == 1] - 10.0
    np.testing.assert_allclose(near.mean(0), 0.0, atol=0.08)
    np.testing.assert_allclose(np.cov(near.T), np.eye(2), atol=0.1)
    given = mixture.sample(m, tf.constant([3, 4]), n=5, components=tf.zeros([5], tf.int32),
                           sigma_temperature=0.0)
    np.testing.assert_array_equal(given.numpy(), 0.0)


@pytest.mark.parametrize("bad, error, match", [
    ("7", ValueError, r"`seed` must be an integer in \[0, 9223372036854775807\]"),
    (2**64, ValueError, r"received seed=18446744073709551616"),
    (-3, ValueError, r"`seed` must be an integer in \[0, "),
    (1.5, ValueError, r"received seed=1.5"),
])
def test_stateless_seed_refuses_bad_seeds(bad, error, match):
    with pytest.raises(error, match=match):
        mixture.stateless_seed(bad, keras.random.SeedGenerator(0))


def test_stateless_seed_refuses_float_tensors():
    with pytest.raises(ValueError, match=r"`seed` must be an integer tensor; .*float32"):
        mixture.stateless_seed(tf.constant([1.0, 2.0]), keras.random.SeedGenerator(0))


# --------------------------------------------------------------------------
# MixtureDensityHead and GMMNegLogLik
# --------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    ({"num_components": 0}, r"`num_components` must be an integer >= 1; received num_components=0"),
    ({"event_size": 2.0}, r"`event_size` must be an integer >= 1; received event_size=2.0"),
    ({"covariance_type": "ful"}, r"`covariance_type` must be one of"),
    ({"min_scale": 0.0}, r"`min_scale` must be a finite number > 0.0 \(the floor"),
    ({"min_scale": float("nan")}, r"received min_scale=nan"),
    ({"logits_gain": -1.0}, r"`logits_gain` must be a finite number > 0.0"),
    ({"means_gain": float("inf")}, r"`means_gain` must be a finite number > 0.0"),
    ({"seed": "0"}, r"`seed` must be an integer in \[0, "),
    ({"seed": 2**63}, r"`seed` must be an integer in \[0, "),
])
def test_head_constructor_refuses(kwargs, match):
    args = {"num_components": 2, "event_size": 1, **kwargs}
    with pytest.raises(ValueError, match=match):
        keras_gmm.MixtureDensityHead(**args)


@pytest.fixture(scope="module")
def head_and_params():
    head = keras_gmm.MixtureDensityHead(3, 2, seed=0)
    params = head(tf.random.stateless_normal([4, 5], [1, 2]))
    return head, params


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": float("nan")}, r"`temperature` must be a finite number >= 0; received temperature=nan"),
    ({"sigma_temperature": float("nan")}, r"`sigma_temperature` must be a finite number >= 0"),
    ({"temperature": -0.1}, r"received temperature=-0.1"),
    ({"seed": "abc"}, r"`seed` must be an integer in \["),
    ({"seed": 2**64}, r"`seed` must be an integer in \["),
])
def test_head_sample_refuses_what_the_export_refuses(head_and_params, kwargs, match):
    head, params = head_and_params
    with pytest.raises(ValueError, match=match):
        head.sample(params, **kwargs)


def test_head_sample_is_reproducible_across_threads(head_and_params):
    head, params = head_and_params
    want = head.sample(params, seed=7).numpy()
    results = [None] * 4

    def run(i):
        results[i] = head.sample(params, seed=7).numpy()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for r in results:
        np.testing.assert_array_equal(r, want)


def test_head_keeps_the_mask_of_sequence_inputs():
    inputs = keras.Input((5, 3))
    masked = keras.layers.Masking(0.0)(inputs)
    head = keras_gmm.MixtureDensityHead(2, 1)
    out = head(masked)
    assert out._keras_mask is not None and tuple(out._keras_mask.shape) == (None, 5)
    x = np.ones((2, 5, 3), np.float32)
    x[:, 3:] = 0.0
    mask = head.compute_mask(tf.constant(x), tf.constant(x[..., 0] != 0))
    np.testing.assert_array_equal(mask.numpy(), x[..., 0] != 0)


def test_nan_target_row_gives_a_nan_loss_for_that_row_only(head_and_params):
    head, params = head_and_params
    y = np.zeros((4, 2), np.float32)
    y[1, 0] = np.nan
    per_row = head.loss(reduction=None)(y, params).numpy()
    assert np.isnan(per_row[1]) and np.all(np.isfinite(per_row[[0, 2, 3]]))


def test_loss_refuses_targets_of_the_wrong_event_size(head_and_params):
    head, params = head_and_params
    with pytest.raises(ValueError, match=r"`y_true` must have event_size=2 values"):
        head.loss()(np.zeros((4, 3), np.float32), params)


def test_old_configs_with_locs_gain_still_load():
    head = keras_gmm.MixtureDensityHead(2, 1, means_gain=3.0)
    config = head.get_config()
    assert config["means_gain"] == 3.0 and "locs_gain" not in config
    config["locs_gain"] = config.pop("means_gain")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an old file loads quietly
        again = keras_gmm.MixtureDensityHead.from_config(config)
    assert again.means_gain == 3.0 and again.locs_gain == 3.0
    with pytest.warns(DeprecationWarning, match="means_gain"):
        keras_gmm.MixtureDensityHead(2, 1, locs_gain=3.0)
