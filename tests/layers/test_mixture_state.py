"""keras_gmm.layers._mixture_state: the fitted-mixture state shared by
GaussianMixtureEM and GMMEnergy (weights, fitted check, stepwise update,
scikit-learn's attributes, permute_components, loading older files)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import make_blobs

import keras_gmm
from keras_gmm.layers import _mixture_state
from keras_gmm.layers._mixture_state import NotFittedError

COV_TYPES = ("full", "tied", "diag", "spherical")


@pytest.fixture(scope="module")
def blobs():
    x, _ = make_blobs(300, n_features=3, centers=3, random_state=1)
    return x


def _fitted_em(x, covariance_type, online=False):
    gmm = keras_gmm.GaussianMixtureEM(3, covariance_type, seed=0, dtype="float64",
                                      online=online)
    gmm.fit(x, verbose=0)
    return gmm


def _fitted_energy(x, covariance_type):
    gamma = np.random.default_rng(0).dirichlet(np.ones(3), size=len(x))
    layer = keras_gmm.GMMEnergy(covariance_type, reg_covar=1e-3, dtype="float64")
    return layer.fit_mixture(x, gamma)


# ------------------------------------------------------- permute_components
@pytest.mark.parametrize("covariance_type", COV_TYPES)
@pytest.mark.parametrize("make", [_fitted_em, _fitted_energy], ids=["em", "energy"])
def test_permute_components_relabels_and_keeps_the_mixture(blobs, make, covariance_type):
    layer = make(blobs, covariance_type)
    order = np.array([2, 0, 1])
    before = {v.name: v.numpy().copy() for v in layer.weights}
    points = tf.constant(blobs[:20])
    log_prob = keras_gmm.mixture.log_prob(layer.mixture(), points).numpy()
    assert layer.permute_components(order) is layer
    after = {v.name: v.numpy() for v in layer.weights}
    shared = covariance_type == "tied"
    per_component = ["weights", "means", "moving_nk"]
    per_component += [] if shared else ["precisions_cholesky", "moving_scatter"]
    for name, value in before.items():
        if name in per_component:
            np.testing.assert_array_equal(after[name], value[order], err_msg=name)
        else:  # the tied factor, the flags, the counters, the threshold
            np.testing.assert_array_equal(after[name], value, err_msg=name)
    np.testing.assert_allclose(
        keras_gmm.mixture.log_prob(layer.mixture(), points).numpy(), log_prob,
        rtol=1e-12,
    )


def test_permuted_labels_follow_the_order(blobs):
    gmm = _fitted_em(blobs, "full")
    labels = gmm.predict(blobs)
    order = np.array([1, 2, 0])
    gmm.permute_components(order)
    # old component order[k] is new component k: new label = argsort(order)[old]
    np.testing.assert_array_equal(gmm.predict(blobs), np.argsort(order)[labels])


@pytest.mark.parametrize(
    "order", [[0, 1], [0, 1, 1], [0, 1, 3], [0.0, 1.0, 2.0], [[0, 1, 2]], "012", None]
)
def test_permute_components_refuses_what_is_not_a_permutation(blobs, order):
    gmm = _fitted_em(blobs, "diag")
    means = gmm.means_.copy()
    with pytest.raises(ValueError, match=r"`order` must be a permutation of "
                                         r"range\(3\).*received order="):
        gmm.permute_components(order)
    np.testing.assert_array_equal(gmm.means_, means)


def test_permute_components_of_an_unfitted_layer_raises():
    gmm = keras_gmm.GaussianMixtureEM(2)
    gmm.build((None, 2))
    with pytest.raises(NotFittedError, match="not fitted"):
        gmm.permute_components([1, 0])


# ---------------------------------------------------- one state, both layers
@pytest.mark.parametrize("covariance_type", COV_TYPES)
def test_both_layers_store_the_same_weights_with_the_saved_names(covariance_type):
    em = keras_gmm.GaussianMixtureEM(2, covariance_type, online=True)
    em.build((None, 3))
    energy = keras_gmm.GMMEnergy(covariance_type)
    energy.build([(None, 3), (None, 2)])
    names = lambda layer: [v.name for v in layer.weights]  # noqa: E731
    # the names and order of files saved before are kept, new weights last
    assert names(em) == ["weights", "means", "precisions_cholesky", "fitted",
                         "moving_nk", "moving_scatter", "n_iter", "lower_bound",
                         "converged", "skipped_batches"]
    assert names(energy) == ["weights", "means", "precisions_cholesky", "moving_nk",
                             "moving_scatter", "threshold", "skipped_batches"]
    for name in ("weights", "means", "precisions_cholesky", "moving_nk",
                 "moving_scatter"):
        a, b = (next(v for v in layer.weights if v.name == name)
                for layer in (em, energy))
        assert a.shape == b.shape and not a.trainable and not b.trainable
        np.testing.assert_array_equal(a.numpy(), b.numpy())  # identical start


def test_an_older_file_without_the_newer_weights_loads(blobs, tmp_path):
    gmm = _fitted_em(blobs, "diag")
    store = {str(i): v.numpy() for i, v in enumerate(gmm.weights[:4])}
    fresh = keras_gmm.GaussianMixtureEM(3, "diag", dtype="float64")
    fresh.build((None, 3))
    fresh.load_own_variables(store)
    np.testing.assert_array_equal(fresh.means_, gmm.means_)
    assert fresh.n_iter_ == 0 and not fresh.converged_  # not in the old file
    # any other count is still Keras's error
    with pytest.raises(ValueError, match="expected 7 variables"):
        fresh.load_own_variables({str(i): v.numpy() for i, v in enumerate(gmm.weights[:5])})


def test_the_shipped_em_digits_file_loads_unchanged():
    import keras_gmm.zoo

    model = keras_gmm.zoo.load("em_digits")
    (gmm,) = [lay for lay in model.layers if isinstance(lay, keras_gmm.GaussianMixtureEM)]
    assert gmm.weights_.shape == (10,) and gmm.means_.shape == (10, 30)
    assert gmm.event_size == 30


def test_num_features_is_a_deprecated_read_only_alias_of_event_size():
    energy = keras_gmm.GMMEnergy()
    energy.build([(None, 4), (None, 2)])
    em = keras_gmm.GaussianMixtureEM(2)
    em.build((None, 5))
    for layer, d in ((energy, 4), (em, 5)):
        assert layer.event_size == d
        with pytest.warns(DeprecationWarning, match="num_features.*event_size"):
            assert layer.num_features == d
        with pytest.raises(AttributeError):
            layer.num_features = 3


# -------------------------------------------------------- stepwise update
def test_a_failed_step_keeps_the_mixture_and_counts_it(blobs):
    gmm = _fitted_em(blobs, "full", online=True)
    before = [v.numpy().copy() for v in gmm.weights[:6]]
    stats = keras_gmm.ops.em.zero_statistics(3, 3, "full", tf.float64)
    nan_stats = keras_gmm.ops.em.Stats(*(t + np.nan for t in stats))
    values, ok = gmm._stepwise_values(nan_stats, 10)
    assert not bool(ok)
    assert not bool(gmm._commit_step(values, ok))
    for b, v in zip(before, gmm.weights[:6]):
        np.testing.assert_array_equal(b, v.numpy())
    assert int(gmm.skipped_batches.numpy()) == 1


def test_check_rows_names_the_count_and_the_first_row():
    with pytest.raises(ValueError, match=r"`x` is bad in 2 of 5 rows \(first at row 1\); fix"):
        _mixture_state.check_rows(np.array([0, 1, 0, 1, 0], bool), "x", "is bad", "fix")
    _mixture_state.check_rows(np.zeros(3, bool), "x", "is bad", "fix")  # no error


def test_sample_draws_from_the_stored_mixture_through_the_one_sampler(blobs):
    layer = _fitted_energy(blobs, "diag")
    x, labels = layer.sample(4000, seed=3)
    again, labels_again = layer.sample(4000, seed=3)
    np.testing.assert_array_equal(x, again)
    np.testing.assert_array_equal(labels, labels_again)
    np.testing.assert_allclose(np.bincount(labels, minlength=3) / 4000, layer.weights_,
                               atol=0.03)
    for k in range(3):
        np.testing.assert_allclose(x[labels == k].mean(0), layer.means_[k], atol=0.3)
    with pytest.raises(ValueError, match="`n_samples` must be an integer >= 1"):
        layer.sample(0)
    with pytest.raises(ValueError, match="`seed`"):
        layer.sample(3, seed="a")


def test_keras_round_trip_keeps_the_state(blobs, tmp_path):
    layer = _fitted_energy(blobs, "tied")
    inputs = [keras.Input((3,)), keras.Input((3,))]
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    (restored,) = [lay for lay in loaded.layers if isinstance(lay, keras_gmm.GMMEnergy)]
    for name in ("weights_", "means_", "covariances_", "precisions_"):
        np.testing.assert_array_equal(getattr(restored, name), getattr(layer, name))
