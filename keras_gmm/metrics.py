"""Scores of clusterings and anomaly detectors, in NumPy on plain arrays.

Clustering: how well unsupervised cluster labels match classes.

A clustering model (:class:`keras_gmm.GaussianMixtureEM`, and the zoo's
clustering models) numbers its clusters arbitrarily, so its labels can only be
compared with the true classes up to a relabelling. Two standard scores do
that, both in NumPy on plain label arrays (take the ``argmax`` of a model's
responsibilities ``[n, K]`` first):

- :func:`clustering_accuracy`: the accuracy under the best one-to-one mapping
  of clusters to classes (the Hungarian algorithm, through SciPy);
- :func:`normalized_mutual_info`: the mutual information of the two labelings
  divided by the arithmetic mean of their entropies (scikit-learn's
  ``normalized_mutual_info_score`` with its default normalisation).

Both take labels of any type NumPy can sort (ints, strings), need not use the
same label values for clusters and classes, and allow a different number of
clusters and classes; :func:`clustering_scores` gives both and the share of
the largest cluster.

Anomaly detection (binary labels, 1 = anomaly, and scores, higher = more
anomalous): :func:`roc_auc_score`, :func:`f1_score` and
:func:`contamination_threshold` (DAGMM's protocol: flag the top fraction).
"""

import numpy as np

from keras_gmm._validation import check_array, check_number

__all__ = ["clustering_accuracy", "clustering_scores", "contamination_threshold",
           "contingency_matrix", "f1_score", "normalized_mutual_info",
           "roc_auc_score"]


def _check_labels(y_true, y_pred):
    """Both labelings as 1-D arrays of the same, non-zero length."""
    arrays = []
    for name, value in (("y_true", y_true), ("y_pred", y_pred)):
        array = np.asarray(value)
        if array.ndim != 1:
            hint = (
                " (for responsibilities or probabilities [n, K], pass their "
                "argmax over the last axis)"
                if array.ndim == 2
                else ""
            )
            raise ValueError(
                f"`{name}` must be a 1-D array of labels; received an array of "
                f"shape {array.shape}{hint}."
            )
        if array.size == 0:
            raise ValueError(f"`{name}` must not be empty; received {name}={value!r}.")
        if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
            raise ValueError(
                f"`{name}` contains NaN or inf; received {name}={value!r}."
            )
        arrays.append(array)
    if arrays[0].shape != arrays[1].shape:
        raise ValueError(
            "`y_true` and `y_pred` must have the same length; received "
            f"len(y_true)={len(arrays[0])} and len(y_pred)={len(arrays[1])}."
        )
    return arrays


def contingency_matrix(y_true, y_pred):
    """Counts ``C[i, j]`` of samples of class ``i`` put in cluster ``j``.

    Rows follow ``np.unique(y_true)``, columns ``np.unique(y_pred)``.

    Example:

    >>> contingency_matrix([0, 0, 1, 1], [1, 1, 1, 0])
    array([[0, 2],
           [1, 1]])
    """
    y_true, y_pred = _check_labels(y_true, y_pred)
    classes, class_idx = np.unique(y_true, return_inverse=True)
    clusters, cluster_idx = np.unique(y_pred, return_inverse=True)
    counts = np.zeros((len(classes), len(clusters)), np.int64)
    np.add.at(counts, (class_idx.ravel(), cluster_idx.ravel()), 1)
    return counts


def clustering_accuracy(y_true, y_pred):
    """Accuracy of cluster labels under the best one-to-one cluster -> class map.

    ``max over injective maps m of mean(m(y_pred) == y_true)``, found with the
    Hungarian algorithm (``scipy.optimize.linear_sum_assignment``) on the
    contingency matrix. With more clusters than classes, the clusters left
    unmatched count as wrong (a one-to-one map, not a many-to-one one, which
    would reward over-clustering); with fewer clusters than classes, the
    classes left unmatched count as wrong.

    Args:
        y_true: true class labels, 1-D, length ``n``.
        y_pred: cluster labels, 1-D, length ``n`` (any label values; e.g.
            ``gmm.predict(x)`` or ``np.argmax(responsibilities, -1)``).

    Returns:
        A float in [0, 1].

    Raises:
        ValueError: an argument is not 1-D, is empty, contains NaN, or the
            lengths differ.
        ImportError: SciPy is not installed (``pip install scipy``).

    Example:

    >>> clustering_accuracy([0, 0, 1, 1, 2, 2], [5, 5, 3, 3, 3, 7])
    0.8333333333333334

    Reference:
        Yang et al., "Image Clustering Using Local Discriminant Models and
        Global Integration", IEEE TIP 2010 (the "ACC" of deep clustering
        papers, e.g. Xie et al. 2016, Jiang et al. 2017).
    """
    counts = contingency_matrix(y_true, y_pred)
    try:
        from scipy.optimize import linear_sum_assignment
    except ImportError as error:  # pragma: no cover - depends on the env
        raise ImportError(
            "keras_gmm.metrics.clustering_accuracy finds the best cluster -> "
            "class map with SciPy's Hungarian algorithm; install it with "
            "`pip install scipy` (a dependency of keras-gmm: reinstalling it "
            "brings SciPy back)."
        ) from error
    rows, cols = linear_sum_assignment(counts, maximize=True)
    return float(counts[rows, cols].sum() / counts.sum())


def _entropy(counts):
    """Entropy (nats) of the distribution ``counts / counts.sum()``."""
    counts = counts[counts > 0].astype(np.float64)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log(p)))


def normalized_mutual_info(y_true, y_pred):
    """Normalised mutual information of two labelings, in [0, 1].

    ``NMI = I(Y_true; Y_pred) / ((H(Y_true) + H(Y_pred)) / 2)``, the
    arithmetic-mean normalisation (scikit-learn's default in
    ``normalized_mutual_info_score``, whose values it reproduces, including
    its conventions: 1.0 when both labelings have a single label, 0.0 when
    the mutual information is 0). It does not depend on how the labels are
    numbered, and it is symmetric in its two arguments.

    Args:
        y_true: true class labels, 1-D, length ``n``.
        y_pred: cluster labels, 1-D, length ``n``.

    Returns:
        A float in [0, 1]: 1 for the same partition, 0 for independent ones.

    Raises:
        ValueError: an argument is not 1-D, is empty, contains NaN, or the
            lengths differ.

    Example:

    >>> normalized_mutual_info([0, 0, 1, 1], [1, 1, 0, 0])
    1.0
    >>> round(normalized_mutual_info([0, 0, 1, 1], [0, 1, 2, 3]), 4)
    0.6667

    Reference:
        Strehl & Ghosh, "Cluster Ensembles", JMLR 3, 2002; Vinh, Epps &
        Bailey, "Information Theoretic Measures for Clusterings Comparison",
        JMLR 11, 2010 (the arithmetic-mean variant).
    """
    counts = contingency_matrix(y_true, y_pred)
    if counts.shape == (1, 1):
        return 1.0
    n = float(counts.sum())
    joint = counts / n
    p_true = joint.sum(axis=1, keepdims=True)
    p_pred = joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    mutual_info = float(
        np.sum(joint[nonzero] * np.log(joint[nonzero] / (p_true @ p_pred)[nonzero]))
    )
    mutual_info = max(mutual_info, 0.0)  # rounding can give -1e-17
    if mutual_info == 0.0:
        return 0.0
    normalizer = 0.5 * (_entropy(counts.sum(axis=1)) + _entropy(counts.sum(axis=0)))
    return float(min(mutual_info / max(normalizer, np.finfo(np.float64).eps), 1.0))


def clustering_scores(y_true, y_pred):
    """``{"clustering_accuracy", "nmi", "largest_cluster_fraction"}`` of
    cluster labels ``y_pred`` against classes ``y_true``: the two scores above
    and the fraction of the samples in the most used cluster (1.0 for a
    clustering collapsed to one cluster).

    >>> clustering_scores([0, 0, 1, 1], [1, 1, 0, 0])["largest_cluster_fraction"]
    0.5
    """
    counts = contingency_matrix(y_true, y_pred)
    return {
        "clustering_accuracy": clustering_accuracy(y_true, y_pred),
        "nmi": normalized_mutual_info(y_true, y_pred),
        "largest_cluster_fraction": float(counts.sum(axis=0).max() / counts.sum()),
    }


def _binary(value, name):
    y = check_array(value, name, ndim=1)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError(
            f"`{name}` must hold binary labels (1 = positive/anomaly, 0 = "
            f"negative); received the values {np.unique(y)[:10].tolist()}."
        )
    return y.astype(bool)


def _check_binary(y_true, scores, scores_name):
    y = _binary(y_true, "y_true")
    if scores_name == "y_pred":
        scores = _binary(scores, "y_pred")
    else:
        scores = check_array(scores, scores_name, ndim=1, dtype=np.float64)
    if scores.shape != y.shape:
        raise ValueError(
            f"`y_true` and `{scores_name}` must have the same length; received "
            f"{len(y)} and {len(scores)}."
        )
    return y, scores


def roc_auc_score(y_true, scores):
    """Area under the ROC curve of ``scores`` for the positives of ``y_true``.

    The Mann-Whitney statistic: the probability that a random positive scores
    above a random negative, ties counting 1/2 (scikit-learn's
    ``roc_auc_score``).

    >>> roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75

    Raises:
        ValueError: labels not binary, NaN or inf scores, different lengths,
            or only one class present.
    """
    y, scores = _check_binary(y_true, scores, "scores")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("`y_true` must hold both classes to compute an AUROC.")
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores), np.float64)
    ranks[order] = np.repeat(first + (counts - 1) / 2.0 + 1.0, counts)  # tie-averaged
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def f1_score(y_true, y_pred):
    """F1 score of the positive class (1) of binary predictions ``y_pred``;
    0.0 when nothing is predicted positive correctly.

    >>> f1_score([0, 1, 1, 1], [1, 1, 1, 0])
    0.6666666666666666
    """
    y, predicted = _check_binary(y_true, y_pred, "y_pred")
    tp = int(np.sum(y & predicted))
    if tp == 0:
        return 0.0
    return float(2 * tp / (2 * tp + np.sum(~y & predicted) + np.sum(y & ~predicted)))


def contamination_threshold(scores, contamination):
    """The threshold above which the top ``contamination`` fraction of
    ``scores`` lies: halfway between the ``round(contamination * n)``-th
    largest score and the next.

    >>> contamination_threshold([1.0, 2.0, 3.0, 4.0], 0.5)
    2.5
    """
    scores = np.sort(check_array(scores, "scores", ndim=1, dtype=np.float64))[::-1]
    contamination = check_number(contamination, "contamination", low=0.0, high=1.0)
    n_flagged = int(round(contamination * len(scores)))
    if n_flagged <= 0:
        return float(scores[0])
    if n_flagged >= len(scores):
        return float(np.nextafter(scores[-1], -np.inf))
    return float(0.5 * (scores[n_flagged - 1] + scores[n_flagged]))
