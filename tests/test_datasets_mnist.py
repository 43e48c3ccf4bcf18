"""keras_gmm.datasets.load_mnist: 5,000 real MNIST digits, one fixed split."""

import numpy as np
import pytest

from keras_gmm import datasets

SPLITS = ("train", "train_fit", "val", "test", "all")
PER_CLASS = {"train": 400, "train_fit": 320, "val": 80, "test": 100, "all": 500}


@pytest.fixture(scope="module")
def splits():
    return {split: datasets.load_mnist(split) for split in SPLITS}


def _rows(x):
    """Each image as bytes (a hashable row)."""
    return [row.tobytes() for row in x]


def test_shapes_dtypes_range_and_class_counts(splits):
    for split, (x, y) in splits.items():
        assert x.shape == (datasets.MNIST_SPLITS[split], 784), split
        assert x.dtype == np.float32 and y.dtype == np.int64
        assert x.min() == 0.0 and x.max() == 1.0
        # pixel / 255 of uint8 pixels
        np.testing.assert_allclose(x * 255, np.round(x * 255), atol=1e-4)
        np.testing.assert_array_equal(
            np.bincount(y, minlength=10), [PER_CLASS[split]] * 10, err_msg=split
        )
    # the fractions of MNIST_SPLIT give those counts
    n_test = datasets.MNIST_SPLIT["test_fraction"] * 500
    assert PER_CLASS["test"] == n_test
    assert PER_CLASS["val"] == datasets.MNIST_SPLIT["val_fraction"] * (500 - n_test)


def test_splits_are_disjoint_and_nested(splits):
    fit, val, test = (set(_rows(splits[s][0])) for s in ("train_fit", "val", "test"))
    everything = _rows(splits["all"][0])
    assert len(set(everything)) == len(everything) == 5000  # no duplicate image
    assert not fit & val and not fit & test and not val & test
    # train = train_fit then val (so validation_split=0.2 validates on "val");
    # all = train then test
    for name, parts in (("train", ("train_fit", "val")), ("all", ("train", "test"))):
        np.testing.assert_array_equal(
            splits[name][0], np.concatenate([splits[p][0] for p in parts])
        )
        np.testing.assert_array_equal(
            splits[name][1], np.concatenate([splits[p][1] for p in parts])
        )
    x_train = splits["train"][0]
    np.testing.assert_array_equal(x_train[-int(0.2 * len(x_train)):], splits["val"][0])


def test_all_is_a_permutation_of_the_shipped_images(splits):
    raw = datasets._shipped("mnist")
    assert raw["data"].dtype == np.uint8 and raw["data"].shape == (5000, 784)
    x_all, y_all = splits["all"]
    ours = np.round(x_all * 255).astype(np.uint8)
    order_ours = np.lexsort(np.c_[ours, y_all].T[::-1])
    order_raw = np.lexsort(np.c_[raw["data"], raw["target"]].T[::-1])
    np.testing.assert_array_equal(ours[order_ours], raw["data"][order_raw])
    np.testing.assert_array_equal(y_all[order_ours], raw["target"][order_raw])


def test_fixed_and_classes_interleaved(splits):
    for split in ("train_fit", "test"):
        x, y = datasets.load_mnist(split)
        np.testing.assert_array_equal(x, splits[split][0])
        np.testing.assert_array_equal(y, splits[split][1])
        # not sorted by class: the first 50 rows hold most digits
        assert len(np.unique(y[:50])) >= 8, y[:50]


def test_flatten_false_gives_the_same_images(splits):
    x_img, y_img = datasets.load_mnist("val", flatten=False)
    assert x_img.shape == (800, 28, 28) and x_img.dtype == np.float32
    np.testing.assert_array_equal(x_img.reshape(800, 784), splits["val"][0])
    np.testing.assert_array_equal(y_img, splits["val"][1])


def test_real_digits(splits):
    # real handwriting: a "1" has far less ink than a "0", and ink is in the
    # middle of the 28x28 frame, not on its border
    x, y = splits["all"]
    ink = x.sum(axis=1)
    assert ink[y == 1].mean() < 0.6 * ink[y == 0].mean()
    images = x.reshape(-1, 28, 28)
    assert images[:, :2, :].mean() < 0.05 * images[:, 10:18, 10:18].mean()


def test_mnist_metadata_matches_the_splits(splits):
    meta = datasets.mnist_metadata(train_split="train_fit", validation_split="val",
                                   flatten=False)
    assert meta["function"] == "keras_gmm.datasets.load_mnist"
    assert (meta["train_split"], meta["validation_split"]) == ("train_fit", "val")
    assert set(meta["splits"]) == {"train_fit", "val", "test"}
    for name, spec in meta["splits"].items():
        assert spec["n"] == len(splits[name][0])
    assert "[n, 28, 28]" in meta["inputs"]
    assert set(datasets.mnist_metadata()["splits"]) == {"train", "test"}


@pytest.mark.parametrize("bad", ["dev", "Train", None, 0, ["train"]])
def test_bad_split(bad):
    with pytest.raises(ValueError, match="`split` must be one of"):
        datasets.load_mnist(bad)


@pytest.mark.parametrize("bad", [1, "yes", None])
def test_bad_flatten(bad):
    with pytest.raises(ValueError, match="`flatten` must be True or False"):
        datasets.load_mnist("test", flatten=bad)


def test_bad_metadata_arguments():
    with pytest.raises(ValueError, match="`train_split` must be one of"):
        datasets.mnist_metadata(train_split="dev")
    with pytest.raises(ValueError, match="`validation_split` must be one of"):
        datasets.mnist_metadata(validation_split="dev")
