"""keras_gmm.datasets: embedded data, fixed splits."""

import numpy as np
import pytest

from keras_gmm import datasets


def test_inverse_sine_shapes_dtype_and_determinism():
    x, y = datasets.inverse_sine(100, seed=3)
    assert x.shape == y.shape == (100, 1) and x.dtype == y.dtype == np.float32
    np.testing.assert_array_equal(x, datasets.inverse_sine(100, seed=3)[0])
    assert np.all((y >= 0) & (y <= 1))
    g = y + 0.3 * np.sin(2 * np.pi * y)
    assert np.all(np.abs(x - g) <= 0.1 + 1e-6)


def test_inverse_sine_splits_are_fixed_and_disjoint():
    sizes = {s: len(datasets.inverse_sine_split(s)[0]) for s in ("train", "val", "test")}
    assert sizes == {"train": 20000, "val": 5000, "test": 10000}
    a = datasets.inverse_sine_split("train")[0][:5]
    b = datasets.inverse_sine_split("test")[0][:5]
    assert not np.allclose(a, b)


def test_conditional_entropy_is_the_known_floor():
    assert abs(datasets.inverse_sine_conditional_entropy() - (-1.2823)) < 2e-3


def test_digits_split_is_fixed_stratified_and_scaled():
    x_train, y_train = datasets.load_digits("train")
    x_test, y_test = datasets.load_digits("test")
    assert x_train.shape == (1343, 64) and x_test.shape == (454, 64)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    assert x_train.min() >= 0.0 and x_train.max() <= 1.0
    # stratified: every class has ~25 % of its images in the test split
    for label in range(10):
        n_test, n_train = np.sum(y_test == label), np.sum(y_train == label)
        assert abs(n_test / (n_test + n_train) - 0.25) < 0.01
    again = datasets.load_digits("test")
    np.testing.assert_array_equal(again[0], x_test)
    x_all, _ = datasets.load_digits("all")
    assert len(x_all) == 1797
    # train and test share no image index: all rows together are the dataset
    assert len(np.unique(np.concatenate([x_train, x_test]), axis=0)) == len(
        np.unique(x_all, axis=0)
    )


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "10", None])
def test_inverse_sine_bad_n(bad):
    with pytest.raises(ValueError, match="`n` must be an integer >= 1"):
        datasets.inverse_sine(bad)


@pytest.mark.parametrize("bad", ["0", -1, 2**63, 1.5, None])
def test_inverse_sine_bad_seed(bad):
    with pytest.raises(ValueError, match="`seed` must be an integer in"):
        datasets.inverse_sine(10, seed=bad)


def test_bad_split_names():
    with pytest.raises(ValueError, match="split.*'dev'"):
        datasets.load_digits("dev")
    with pytest.raises(ValueError, match="split.*'dev'"):
        datasets.inverse_sine_split("dev")
    for bad in (None, ["train"], 0):  # not a name at all: the same clear error
        with pytest.raises(ValueError, match="`split` must be one of"):
            datasets.load_digits(bad)
        with pytest.raises(ValueError, match="`split` must be one of"):
            datasets.inverse_sine_split(bad)
        with pytest.raises(ValueError, match="`split` must be one of"):
            datasets.load_breast_cancer(bad)
