"""Deep density anomaly detection (DAGMM-style) against scikit-learn's detectors.

Two benchmarks, each trained on normal data only:

1. Breast cancer: the zoo model ``dagmm_breast_cancer`` (an autoencoder, an
   estimation network and :class:`keras_gmm.GMMEnergy`; see
   ``keras_gmm/zoo/dagmm_breast_cancer.py``) scores the held-out "test" split
   of :func:`keras_gmm.datasets.load_breast_cancer` (89 benign, 148
   malignant rows); ``--retrain`` trains it from scratch first.
2. Digits, one class held out: for each digit ``c``, the same architecture
   (64 inputs) is trained on the "train" split of
   :func:`keras_gmm.datasets.load_digits` without the images of ``c``, and
   scores the whole "test" split, where the images of ``c`` (about 10 %) are
   the anomalies.

Next to it, on the same splits: scikit-learn's ``GaussianMixture``
(``score_samples``; 1 and 2 full components), ``IsolationForest`` and
``OneClassSVM`` with their defaults, and an untrained control (the same
network with random weights, only its mixture fitted on the training data:
published DAGMM code has been shown to score well untrained, so this shows
what the training adds).

Run from the repository root (with keras_gmm installed, ``pip install -e .``,
or with ``PYTHONPATH=.``)::

    python examples/anomaly_detection.py          # all 10 digits, a few minutes
    python examples/anomaly_detection.py --smoke  # digit 0 only, 2 epochs

It prints AUROC and F1 tables (F1 when each method flags its top scores in
the proportion of anomalies of the split, DAGMM's protocol) and writes
``<output-dir>/anomaly_detection.png``: the ROC curves on breast cancer and
the AUROC per held-out digit.
"""

import argparse
import time
from pathlib import Path

import matplotlib
import numpy as np
from sklearn.metrics import roc_curve

import keras_gmm.zoo
from keras_gmm import datasets, metrics
from keras_gmm.zoo import dagmm_breast_cancer as recipe

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OURS = "keras_gmm DAGMM"
CONTROL = "untrained control"


def f1_at_contamination(y, scores):
    threshold = metrics.contamination_threshold(scores, float(np.mean(y)))
    return metrics.f1_score(y, scores > threshold)


def baseline_scores(x_train, x_test, seed):
    """``{name: test scores}`` of scikit-learn's detectors (higher = more
    anomalous)."""
    from sklearn.ensemble import IsolationForest
    from sklearn.mixture import GaussianMixture
    from sklearn.svm import OneClassSVM

    detectors = {
        "GaussianMixture(1)": GaussianMixture(1, random_state=seed),
        "GaussianMixture(2)": GaussianMixture(2, random_state=seed),
        "IsolationForest": IsolationForest(random_state=seed),
        "OneClassSVM": OneClassSVM(),
    }
    x_train, x_test = x_train.astype(np.float64), x_test.astype(np.float64)
    return {
        name: -d.fit(x_train).score_samples(x_test) for name, d in detectors.items()
    }


def print_table(title, rows):
    print(f"\n{title}")
    print(f"{'method':<22} {'AUROC':>7} {'F1':>7}")
    for name, (auroc, f1) in rows.items():
        print(f"{name:<22} {auroc:7.4f} {f1:7.4f}")


def breast_cancer(retrain, epochs, seed):
    x_train, _ = datasets.load_breast_cancer("train")
    x_test, y_test = datasets.load_breast_cancer("test")
    if retrain:
        model, _ = recipe.train_dagmm(x_train, epochs, seed=seed)
    else:
        model = keras_gmm.zoo.load(recipe.NAME)
        # The control starts from the zoo model's own initialisation.
        seed = keras_gmm.zoo.info(recipe.NAME)["training"]["selected_seed"]
    scores = {OURS: recipe.anomaly_scores(model, x_test)}
    control, _ = recipe.train_dagmm(x_train, 0, seed=seed)
    scores[CONTROL] = recipe.anomaly_scores(control, x_test)
    scores.update(baseline_scores(x_train, x_test, seed))
    rows = {
        name: (metrics.roc_auc_score(y_test, s), f1_at_contamination(y_test, s))
        for name, s in scores.items()
    }
    source = f"retrained, {epochs} epochs" if retrain else "zoo model"
    print_table(f"breast cancer, test split ({source}, seed {seed}; F1 at "
                f"contamination {np.mean(y_test):.3f})", rows)
    comparison = keras_gmm.zoo.info(recipe.NAME)["training"].get("comparison")
    if comparison:
        print("recorded with the zoo model, test AUROC over seeds "
              f"{comparison['seeds']} (mean +- std):")
        for name, summary in comparison.items():
            if isinstance(summary, dict):
                auroc = summary["auroc"]
                print(f"  {name}: {auroc['mean']:.4f} +- {auroc['std']:.4f}")
    return y_test, scores, rows


def digits(classes, epochs, seed):
    x_train_all, y_train_all = datasets.load_digits("train")
    x_test, y_test = datasets.load_digits("test")
    per_class = {}
    for digit in classes:
        start = time.perf_counter()
        x_train = x_train_all[y_train_all != digit]
        anomaly = (y_test == digit).astype(int)
        model, _ = recipe.train_dagmm(x_train, epochs, seed=seed)
        scores = {OURS: recipe.anomaly_scores(model, x_test)}
        control, _ = recipe.train_dagmm(x_train, 0, seed=seed)
        scores[CONTROL] = recipe.anomaly_scores(control, x_test)
        scores.update(baseline_scores(x_train, x_test, seed))
        per_class[digit] = {
            name: (metrics.roc_auc_score(anomaly, s), f1_at_contamination(anomaly, s))
            for name, s in scores.items()
        }
        aurocs = ", ".join(f"{n} {v[0]:.3f}" for n, v in per_class[digit].items())
        print(f"digit {digit} held out ({time.perf_counter() - start:.0f} s): {aurocs}",
              flush=True)
    names = list(next(iter(per_class.values())))
    mean = {
        name: tuple(np.mean([per_class[d][name][i] for d in classes]) for i in (0, 1))
        for name in names
    }
    print_table(f"digits, one class held out, mean over {len(classes)} class(es)", mean)
    return per_class


def plot(y_test, scores, per_class, path):
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y_test, s)
        style = "-" if name == OURS else ("--" if name == CONTROL else ":")
        ax1.plot(fpr, tpr, style, lw=2 if name == OURS else 1.5,
                 label=f"{name} ({metrics.roc_auc_score(y_test, s):.3f})")
    ax1.plot([0, 1], [0, 1], color="lightgray", lw=1)
    ax1.set(title="Breast cancer (test split): ROC curves",
            xlabel="false positive rate", ylabel="true positive rate")
    ax1.legend(fontsize=9, loc="lower right", title="detector (AUROC)",
               title_fontsize=9)
    digits_ = sorted(per_class)
    names = list(per_class[digits_[0]])
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        ax2.bar(np.arange(len(digits_)) + i * width,
                [per_class[d][name][0] for d in digits_], width, label=name)
    ax2.axhline(0.5, color="gray", lw=1, ls="--")
    ax2.set(title="Digits: AUROC with one digit held out as the anomalies",
            xlabel="held-out digit", ylabel="AUROC (dashed: chance)", ylim=(0.0, 1.3),
            xticks=np.arange(len(digits_)) + 0.4 - width / 2, xticklabels=digits_)
    ax2.legend(fontsize=9, loc="upper center", ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--retrain", action="store_true",
                        help="train the breast cancer model, not load the zoo's")
    parser.add_argument("--epochs", type=int, default=recipe.DEFAULTS["epochs"],
                        help="breast cancer training epochs (with --retrain)")
    parser.add_argument("--digits-epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true",
                        help="digit 0 only, 2 epochs (and 2 epochs with --retrain)")
    parser.add_argument("--output-dir", type=Path, default=Path("examples/output"))
    args = parser.parse_args()
    classes, digits_epochs, epochs = range(10), args.digits_epochs, args.epochs
    if args.smoke:
        classes, digits_epochs, epochs = [0], 2, 2

    y_test, scores, rows = breast_cancer(args.retrain, epochs, args.seed)
    per_class = digits(classes, digits_epochs, args.seed)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    path = args.output_dir / "anomaly_detection.png"
    plot(y_test, scores, per_class, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
