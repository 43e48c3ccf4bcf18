"""keras_gmm.datasets.load_breast_cancer: the fixed anomaly-detection split."""

import numpy as np
import pytest

from keras_gmm import datasets


def test_splits_sizes_labels_and_standardisation():
    x_train, y_train = datasets.load_breast_cancer("train")
    x_val, y_val = datasets.load_breast_cancer("val")
    x_test, y_test = datasets.load_breast_cancer("test")
    assert x_train.shape == (214, 30) and x_val.shape == (118, 30)
    assert x_test.shape == (237, 30)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    # "train" is benign only; val/test mix both, benign rows first.
    assert y_train.sum() == 0
    assert (np.sum(y_val == 0), np.sum(y_val == 1)) == (54, 64)
    assert (np.sum(y_test == 0), np.sum(y_test == 1)) == (89, 148)
    for y in (y_val, y_test):
        assert np.all(np.diff(y) >= 0)
    # Standardised with the train statistics: train has mean 0 and std 1.
    np.testing.assert_allclose(x_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(axis=0), 1.0, atol=1e-5)
    # Malignant rows are far from the benign training data on average.
    assert np.linalg.norm(x_test[y_test == 1], axis=1).mean() > 2 * np.linalg.norm(
        x_test[y_test == 0], axis=1
    ).mean()


def _zscore(x):
    x = np.asarray(x, np.float64)
    return (x - x.mean(axis=0)) / x.std(axis=0)


def test_splits_partition_sklearn_data_with_malignant_labels():
    data = pytest.importorskip("sklearn.datasets").load_breast_cancer()
    malignant = (data.target == 0).astype(np.int64)  # sklearn: 0 = malignant
    splits = [datasets.load_breast_cancer(s) for s in ("train", "val", "test")]
    x_all = np.concatenate([x for x, _ in splits])
    y_all = np.concatenate([y for _, y in splits])
    # The splits are one per-feature affine map (the train standardisation)
    # of sklearn's rows; z-scoring both over all rows removes the map.
    ours, reference = _zscore(x_all), _zscore(data.data)
    distances = ((ours[:, None, :] - reference[None, :, :]) ** 2).sum(axis=-1)
    rows = distances.argmin(axis=1)
    assert np.max(distances[np.arange(len(rows)), rows]) < 1e-6
    assert len(np.unique(rows)) == len(rows) == len(data.data)  # a partition
    np.testing.assert_array_equal(malignant[rows], y_all)


def test_deterministic_and_bad_split():
    a = datasets.load_breast_cancer("test")
    b = datasets.load_breast_cancer("test")
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(ValueError, match="split.*'all'"):
        datasets.load_breast_cancer("all")
