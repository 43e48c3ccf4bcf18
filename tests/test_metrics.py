"""keras_gmm.metrics against scikit-learn and a brute-force reference."""

import itertools

import numpy as np
import pytest
from sklearn.metrics import normalized_mutual_info_score

import keras_gmm
from keras_gmm import metrics


def brute_force_accuracy(y_true, y_pred):
    """Best accuracy over every injective map clusters -> classes (or the
    reverse when there are more classes), by enumeration."""
    classes, clusters = np.unique(y_true), np.unique(y_pred)
    best = 0
    if len(clusters) <= len(classes):
        for image in itertools.permutations(classes, len(clusters)):
            mapping = dict(zip(clusters, image))
            mapped = np.array([mapping[c] for c in y_pred])
            best = max(best, int(np.sum(mapped == y_true)))
    else:
        for chosen in itertools.permutations(clusters, len(classes)):
            mapping = dict(zip(chosen, classes))
            hits = sum(
                1 for t, p in zip(y_true, y_pred) if p in mapping and mapping[p] == t
            )
            best = max(best, hits)
    return best / len(y_true)


def _random_cases():
    rng = np.random.default_rng(0)
    cases = []
    for n_classes, n_clusters in [(2, 2), (3, 3), (4, 4), (3, 5), (5, 3), (1, 4),
                                  (4, 1), (5, 5), (6, 4)]:
        for n in (1, 7, 40):
            y_true = rng.integers(0, n_classes, n)
            # Correlated predictions: a noisy relabelling of y_true.
            perm = rng.permutation(max(n_classes, n_clusters))[:n_classes] % n_clusters
            y_pred = perm[y_true]
            flip = rng.random(n) < 0.3
            y_pred[flip] = rng.integers(0, n_clusters, flip.sum())
            cases.append((y_true, y_pred))
    return cases


CASES = _random_cases()


def test_public_api():
    assert keras_gmm.metrics is metrics
    assert "metrics" in keras_gmm.__all__
    for name in ("clustering_accuracy", "normalized_mutual_info", "clustering_scores",
                 "roc_auc_score", "f1_score", "contamination_threshold"):
        assert name in metrics.__all__


@pytest.mark.parametrize("case", range(len(CASES)))
def test_accuracy_matches_brute_force(case):
    y_true, y_pred = CASES[case]
    assert metrics.clustering_accuracy(y_true, y_pred) == pytest.approx(
        brute_force_accuracy(y_true, y_pred), abs=1e-12
    )


@pytest.mark.parametrize("case", range(len(CASES)))
def test_nmi_matches_sklearn(case):
    y_true, y_pred = CASES[case]
    expected = normalized_mutual_info_score(y_true, y_pred)  # arithmetic mean
    assert metrics.normalized_mutual_info(y_true, y_pred) == pytest.approx(
        expected, abs=1e-12
    )
    # Symmetric in its arguments.
    assert metrics.normalized_mutual_info(y_pred, y_true) == pytest.approx(
        expected, abs=1e-12
    )


def test_nmi_matches_sklearn_on_a_large_case():
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 10, 5000)
    noise = rng.integers(0, 12, 5000)
    y_pred = np.where(rng.random(5000) < 0.6, (y_true * 7) % 12, noise)
    assert metrics.normalized_mutual_info(y_true, y_pred) == pytest.approx(
        normalized_mutual_info_score(y_true, y_pred), abs=1e-12
    )


def test_relabelling_invariance_and_perfect_scores():
    y_true = np.array([0, 0, 1, 1, 2, 2, 2])
    y_pred = np.array([9, 9, 4, 4, 7, 7, 7])
    assert metrics.clustering_accuracy(y_true, y_pred) == 1.0
    assert metrics.normalized_mutual_info(y_true, y_pred) == 1.0
    # Label types other than ints (strings) work too.
    names = np.array(["a", "a", "b", "b", "c", "c", "c"])
    assert metrics.clustering_accuracy(names, y_pred) == 1.0
    assert metrics.normalized_mutual_info(names, y_pred) == 1.0


def test_different_numbers_of_clusters_and_classes():
    y_true = [0, 0, 0, 1, 1, 1]
    # More clusters than classes: the extra cluster counts as wrong.
    assert metrics.clustering_accuracy(y_true, [0, 0, 2, 1, 1, 1]) == (
        pytest.approx(5 / 6)
    )
    # Fewer clusters than classes: one class left unmatched.
    assert metrics.clustering_accuracy([0, 0, 1, 1, 2, 2], [0] * 4 + [1] * 2) == (
        pytest.approx(4 / 6)
    )
    # One label on each side: NMI is 1 by convention (as in scikit-learn); a
    # single cluster against several classes carries no information.
    assert metrics.normalized_mutual_info([3, 3, 3], [1, 1, 1]) == 1.0
    assert metrics.normalized_mutual_info([0, 1, 2], [1, 1, 1]) == 0.0
    assert metrics.clustering_accuracy([5], [2]) == 1.0


def test_contingency_matrix():
    np.testing.assert_array_equal(
        metrics.contingency_matrix([0, 0, 1, 1], [1, 1, 1, 0]), [[0, 2], [1, 1]]
    )


@pytest.mark.parametrize(
    "function", [metrics.clustering_accuracy, metrics.normalized_mutual_info]
)
def test_validation(function):
    same_length = r"same length.*len\(y_true\)=3.*len\(y_pred\)=2"
    with pytest.raises(ValueError, match=same_length):
        function([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match=r"`y_pred` must be a 1-D.*\(4, 2\).*argmax"):
        function([0, 1, 1, 0], np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"`y_true` must be a 1-D.*shape \(\)"):
        function(3, [0])
    with pytest.raises(ValueError, match="`y_true` must not be empty"):
        function([], [])
    with pytest.raises(ValueError, match="`y_pred` contains NaN"):
        function([0, 1], [0.0, np.nan])


def test_clustering_scores():
    y_true, y_pred = CASES[-1]
    scores = metrics.clustering_scores(y_true, y_pred)
    assert scores["clustering_accuracy"] == metrics.clustering_accuracy(y_true, y_pred)
    assert scores["nmi"] == metrics.normalized_mutual_info(y_true, y_pred)
    counts = np.unique(y_pred, return_counts=True)[1]
    assert scores["largest_cluster_fraction"] == counts.max() / len(y_pred)
    collapsed = metrics.clustering_scores([0, 1, 2], [5, 5, 5])
    assert collapsed["largest_cluster_fraction"] == 1.0


def test_anomaly_scores_against_sklearn():
    from sklearn.metrics import f1_score, roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=200)
    scores = rng.normal(size=200) + y
    scores[:20] = scores[20:40]  # ties
    assert metrics.roc_auc_score(y, scores) == pytest.approx(
        roc_auc_score(y, scores), abs=1e-12)
    predicted = scores > 0.5
    assert metrics.f1_score(y, predicted) == pytest.approx(
        f1_score(y, predicted), abs=1e-12)
    assert metrics.f1_score(y, np.zeros(200, bool)) == 0.0
    threshold = metrics.contamination_threshold(scores, 0.3)
    assert np.sum(scores > threshold) == 60
    assert np.sum(scores > metrics.contamination_threshold(scores, 0.0)) == 0
    assert np.sum(scores > metrics.contamination_threshold(scores, 1.0)) == 200


def test_anomaly_scores_refuse_bad_input():
    with pytest.raises(ValueError, match="`y_true` must hold binary labels"):
        metrics.roc_auc_score([0, 1, 2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="`y_pred` must hold binary labels"):
        metrics.f1_score([0, 1, 1], [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="both classes"):
        metrics.roc_auc_score([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="`scores` must be finite"):
        metrics.roc_auc_score([0, 1], [0.1, np.nan])  # NaN would sort last silently
    with pytest.raises(ValueError, match="same length"):
        metrics.roc_auc_score([0, 1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="`contamination` must be a finite number"):
        metrics.contamination_threshold([0.1, 0.2], 1.5)
