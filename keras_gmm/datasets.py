"""Embedded datasets: generated on the fly or shipped inside a pip package.

Nothing here downloads anything. Each zoo model records which function and
split it was evaluated on, and takes the data exactly as returned here.
"""

import math

import numpy as np

from keras_gmm import _validation

__all__ = ["inverse_sine", "INVERSE_SINE_SPLITS", "inverse_sine_split",
           "inverse_sine_conditional_entropy", "load_digits", "DIGITS_SPLIT", "digits_metadata",
           "load_breast_cancer", "BREAST_CANCER_SPLIT"]

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
        "source": "sklearn.datasets.load_digits (ships with scikit-learn)",
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

    The 1,797 images of scikit-learn's ``load_digits`` (shipped inside the
    scikit-learn package, so nothing is downloaded) are split per class: for
    each digit, a permutation from ``numpy.random.default_rng(0)`` puts the
    first ``ceil(0.25 * n_class)`` images in "test" and the rest in "train"
    (1,343 train / 454 test), the same on every machine.

    Args:
        split: "train", "test" or "all" (train then test).

    Returns:
        ``(x, y)``: x float32 ``[n, 64]`` with values in [0, 1] (pixel / 16),
        y int64 labels ``[n]``.

    Raises:
        ImportError: scikit-learn is not installed (``pip install
            scikit-learn``, or the ``examples``/``test`` extras).
    """
    _validation.check_one_of(split, "split", ("train", "test", "all"))
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ImportError as error:  # pragma: no cover - depends on the env
        raise ImportError(
            "keras_gmm.datasets.load_digits reads the digits that ship with "
            "scikit-learn; install it with `pip install scikit-learn` (it is "
            "in the `examples` and `test` extras)."
        ) from error
    data = sklearn_load_digits()
    x = (np.asarray(data.data, np.float64) / 16.0).astype(np.float32)
    y = np.asarray(data.target, np.int64)
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
    ``load_breast_cancer`` (shipped inside the scikit-learn package, nothing
    is downloaded), split once, the same on every machine: a permutation of
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

    Raises:
        ImportError: scikit-learn is not installed (``pip install
            scikit-learn``, or the ``examples``/``test`` extras).
    """
    _validation.check_one_of(split, "split", ("train", "val", "test"))
    try:
        from sklearn.datasets import load_breast_cancer as sklearn_load
    except ImportError as error:  # pragma: no cover - depends on the env
        raise ImportError(
            "keras_gmm.datasets.load_breast_cancer reads the data that ship "
            "with scikit-learn; install it with `pip install scikit-learn` "
            "(it is in the `examples` and `test` extras)."
        ) from error
    data = sklearn_load()
    x = np.asarray(data.data, np.float64)
    y = (np.asarray(data.target) == 0).astype(np.int64)  # sklearn: 0 = malignant
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
