"""GaussianMixtureClassifier (L-GM) against a naive NumPy/SciPy computation."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from scipy.special import log_softmax, logsumexp, softmax
from scipy.stats import multivariate_normal

import keras_gmm
from keras_gmm.export.gaussian_mixture_classifier import LOG_LIKELIHOOD
from tests import layer_checks
from tests.export_utils import run_tf_only

MIN_SCALE = 1e-2


# ------------------------------------------------------------ naive reference
def _softplus(x):
    return np.log1p(np.exp(x))


def naive_covariances(layer):
    """Each component's covariance matrix ``[C*M, D, D]`` from the raw
    weights, written out (float64)."""
    k, d = layer.num_components, layer.event_size
    if layer.scales is None:
        return np.broadcast_to(np.eye(d), (k, d, d))
    raw = np.asarray(layer.scales, np.float64)
    if layer.covariance_type == "diag":
        std = _softplus(raw.reshape(k, d)) + MIN_SCALE
        return np.stack([np.diag(s**2) for s in std])
    covs = []
    for block in raw.reshape(k, d * (d + 1) // 2):
        # W = inv(L): diagonal 1 / (softplus + min_scale), then the strictly
        # lower entries row by row; covariance = inv(W^T W).
        w = np.diag(1.0 / (_softplus(block[:d]) + MIN_SCALE))
        w[np.tril_indices(d, -1)] = block[d:]
        covs.append(np.linalg.inv(w.T @ w))
    return np.stack(covs)


def naive_terms(layer, f):
    """``(logits [n, C], d [n, C], log_weights [C*M], log_pdf [n, C*M],
    sq [n, C*M])`` with SciPy."""
    c, m = layer.num_classes, layer.components_per_class
    f = np.asarray(f, np.float64)
    means = np.asarray(layer.means, np.float64)
    covs = naive_covariances(layer)
    if layer.prior_logits is None:
        log_w = np.full(c * m, -np.log(c * m))
    else:
        log_w = log_softmax(np.asarray(layer.prior_logits, np.float64))
    log_pdf = np.stack(
        [multivariate_normal(mu, s).logpdf(f) for mu, s in zip(means, covs)], -1
    ).reshape(len(f), c * m)
    sq = np.stack(
        [np.einsum("ni,ij,nj->n", f - mu, np.linalg.inv(s), f - mu)
         for mu, s in zip(means, covs)], -1,
    )
    joint = (log_w + log_pdf).reshape(len(f), c, m)
    logits = logsumexp(joint, axis=-1)
    resp = softmax(joint, axis=-1)
    d = (resp * sq.reshape(len(f), c, m)).sum(-1)
    return logits, d, log_w, log_pdf, sq


def _layer(covariance_type="diag", m=1, seed=0, d=3, c=3, **kwargs):
    """A built classifier with random means, scales and priors."""
    rng = np.random.default_rng(seed)
    kwargs.setdefault("learn_priors", True)
    layer = keras_gmm.GaussianMixtureClassifier(
        c, components_per_class=m, covariance_type=covariance_type,
        min_scale=MIN_SCALE, **kwargs,
    )
    layer.build((None, d))
    layer.means.assign(rng.normal(size=layer.means.shape))
    if layer.scales is not None:
        layer.scales.assign(rng.normal(scale=0.5, size=layer.scales.shape))
    if layer.prior_logits is not None:
        layer.prior_logits.assign(rng.normal(size=layer.prior_logits.shape))
    return layer, rng.normal(size=(7, d)).astype("float32")


# ---------------------------------------------------------------- the math
@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_outputs_equal_naive(covariance_type, m):
    layer, f = _layer(covariance_type, m, output_mode="logits_and_distances")
    logits, d, log_w, _, _ = naive_terms(layer, f)
    out = layer(f).numpy()
    assert out.shape == (7, 3, 2) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], logits, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out[..., 1], d, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        layer.predict_proba(f).numpy(), softmax(logits, -1), rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(
        layer.log_likelihood(f).numpy(), logsumexp(logits, -1), rtol=1e-5, atol=1e-4
    )
    class_prior = logsumexp(log_w.reshape(3, m), -1)
    np.testing.assert_allclose(
        layer.class_log_likelihoods(f).numpy(), logits - class_prior,
        rtol=1e-5, atol=1e-4,
    )
    np.testing.assert_array_equal(
        layer.predict_classes(f).numpy(), np.argmax(logits, -1)
    )


@pytest.mark.parametrize("output_mode", ["probabilities", "logits"])
def test_output_modes(output_mode):
    layer, f = _layer("full", output_mode=output_mode)
    logits = naive_terms(layer, f)[0]
    want = softmax(logits, -1) if output_mode == "probabilities" else logits
    np.testing.assert_allclose(layer(f).numpy(), want, rtol=1e-4, atol=1e-5)
    assert layer.compute_output_shape((7, 3)) == (7, 3)


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_fixed_covariance_is_the_identity_and_fixed_priors_uniform(covariance_type):
    layer, f = _layer(covariance_type, learn_covariance=False, learn_priors=False)
    assert layer.scales is None and layer.prior_logits is None
    assert [w.name for w in layer.trainable_weights] == ["means"]
    means = np.asarray(layer.means, np.float64)
    want = np.stack(
        [np.log(1 / 3) + multivariate_normal(mu, np.eye(3)).logpdf(f) for mu in means],
        -1,
    )
    np.testing.assert_allclose(
        np.log(layer.predict_proba(f).numpy()), log_softmax(want, -1),
        rtol=1e-4, atol=1e-5,
    )
    np.testing.assert_allclose(
        layer.log_likelihood(f).numpy(), logsumexp(want, -1), rtol=1e-5
    )


@pytest.mark.parametrize("covariance_type", ["diag", "full"])
def test_margin_equals_its_definition(covariance_type):
    # L-GM: the true class's Mahalanobis distance is multiplied by (1 + alpha)
    # inside the softmax; everything else of its log-density is unchanged.
    alpha = 0.7
    layer, f = _layer(covariance_type, output_mode="logits_and_distances")
    y = np.array([0, 1, 2, 0, 1, 2, 1])
    _, _, log_w, log_pdf, sq = naive_terms(layer, f)
    margin = log_w + log_pdf - 0.5 * alpha * sq * np.eye(3)[y]
    want = -log_softmax(margin, -1)[np.arange(7), y]
    loss = keras_gmm.GMMClassificationLoss(
        alpha=alpha, likelihood_weight=0.0, reduction=None
    )
    np.testing.assert_allclose(loss(y, layer(f)).numpy(), want, rtol=1e-4)
    # ... and the likelihood term is -log p(f, y).
    lkd = keras_gmm.GMMClassificationLoss(alpha=0.0, likelihood_weight=1.0,
                                          reduction=None)
    ce = -log_softmax(log_w + log_pdf, -1)[np.arange(7), y]
    joint = (log_w + log_pdf)[np.arange(7), y]
    np.testing.assert_allclose(lkd(y, layer(f)).numpy(), ce - joint, rtol=1e-4)


def test_nan_feature_row_gives_a_nan_row():
    layer, f = _layer("full", m=2, output_mode="logits_and_distances")
    f[2, 1] = np.nan
    out = layer(f).numpy()
    assert np.all(np.isnan(out[2])) and np.all(np.isfinite(np.delete(out, 2, 0)))
    assert np.isnan(layer.log_likelihood(f).numpy()[2])
    labels = layer.predict_classes(f).numpy()
    assert labels[2] == -1 and np.all(np.delete(labels, 2) >= 0)
    loss = keras_gmm.GMMClassificationLoss(reduction=None)(np.zeros(7, int), out)
    assert np.isnan(loss[2]) and np.all(np.isfinite(np.delete(loss.numpy(), 2)))


# ------------------------------------------------------------- training
def _blobs(n_per_class=60, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 3.0], [-3.0, -2.0], [3.0, -2.0]])
    x = np.concatenate([c + rng.normal(size=(n_per_class, 2)) for c in centres])
    y = np.repeat(np.arange(3), n_per_class)
    order = rng.permutation(len(y))
    return x[order].astype("float32"), y[order]


def test_training_separates_blobs_and_scores_outliers_low():
    keras.utils.set_random_seed(0)
    x, y = _blobs()
    clf = keras_gmm.GaussianMixtureClassifier(3, output_mode="logits_and_distances")
    backbone = keras.layers.Dense(2, name="features")
    model = keras.Sequential([keras.Input((2,)), backbone, clf])
    model.compile(keras.optimizers.Adam(0.05),
                  loss=keras_gmm.GMMClassificationLoss(alpha=0.1,
                                                       likelihood_weight=0.1))
    model.fit(x, y, batch_size=60, epochs=40, verbose=0)
    features = backbone(x)
    accuracy = np.mean(clf.predict_classes(features).numpy() == y)
    assert accuracy >= 0.95, accuracy
    inside = clf.log_likelihood(features).numpy()
    outliers = clf.log_likelihood(backbone(np.array([[15.0, 15.0], [-12.0, 14.0]],
                                                    "float32"))).numpy()
    assert np.all(outliers < np.percentile(inside, 1)), (outliers, inside.min())


# ------------------------------------------------------ the layer checks
def _make_model(covariance_type, m=1):
    def make():
        keras.utils.set_random_seed(0)
        return keras.Sequential([
            keras.Input((4,), name="x"),
            keras.layers.Dense(3, name="features"),
            keras_gmm.GaussianMixtureClassifier(
                3, components_per_class=m, covariance_type=covariance_type,
                learn_priors=True, output_mode="logits_and_distances",
                name="classifier",
            ),
        ])
    return make


def _export_check(model, x, tmp_path):
    """serving_default and log_likelihood, served without keras_gmm/TFP."""
    path = keras_gmm.export_saved_model(model, tmp_path / "export", version=1)
    served, scores = run_tf_only([
        (path, "serving_default", {"x": x}),
        (path, LOG_LIKELIHOOD, {"x": x}),
    ])
    np.testing.assert_allclose(
        served["classifier"], model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )
    clf = model.get_layer("classifier")
    want = clf.log_likelihood(model.get_layer("features")(x)).numpy()
    np.testing.assert_allclose(scores["log_likelihood"], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "covariance_type, m, export_check",
    [("diag", 1, _export_check), ("full", 2, None)],
)
def test_layer_checks(covariance_type, m, export_check, tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = rng.integers(0, 3, size=16)
    layer_checks.check_layer(
        _make_model(covariance_type, m),
        lambda model: model.get_layer("classifier"),
        x, y,
        lambda model: keras_gmm.GMMClassificationLoss(),
        tmp_path,
        export_check=export_check,
    )


def test_keras_file_round_trip_keeps_the_ood_score(tmp_path):
    model = _make_model("full")()
    x = np.random.default_rng(1).normal(size=(5, 4)).astype("float32")
    loaded = layer_checks.check_keras_file_round_trip(model, x, tmp_path)
    clf, clf2 = model.get_layer("classifier"), loaded.get_layer("classifier")
    assert clf2.get_config() == clf.get_config()
    np.testing.assert_allclose(
        clf2.log_likelihood(loaded.get_layer("features")(x)).numpy(),
        clf.log_likelihood(model.get_layer("features")(x)).numpy(), rtol=1e-6,
    )


def test_mixed_precision_probabilities_are_float32_and_match():
    layer, f = _layer("diag")
    want = layer(f).numpy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        mixed = keras_gmm.GaussianMixtureClassifier(3, covariance_type="diag",
                                                    learn_priors=True,
                                                    min_scale=MIN_SCALE)
        mixed.build((None, 3))
        for w, v in zip(mixed.weights, layer.weights):
            assert w.dtype == "float32"
            w.assign(v)
        out = mixed(tf.constant(f, tf.float16))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), want, atol=2e-3)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 1}, r"`num_classes` must be an integer >= 2.*num_classes=1"),
        ({"num_classes": 2.0}, r"`num_classes`.*received num_classes=2.0"),
        ({"components_per_class": 0}, r"`components_per_class`.*>= 1"),
        ({"covariance_type": "tied"},
         r"`covariance_type` must be one of \('diag', 'full'\).*'tied'"),
        ({"covariance_type": "identity"}, r"`covariance_type`.*'identity'"),
        ({"learn_covariance": "no"}, r"`learn_covariance` must be True or False"),
        ({"learn_priors": 1}, r"`learn_priors` must be True or False"),
        ({"output_mode": "probs"},
         (r"`output_mode` must be one of \('probabilities', 'logits', "
          r"'logits_and_distances'\).*'probs'")),
        ({"min_scale": 0.0}, r"`min_scale` must be a finite number > 0"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    kwargs = {"num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        keras_gmm.GaussianMixtureClassifier(**kwargs)


def test_methods_refuse_unbuilt_layers_and_wrong_feature_sizes():
    clf = keras_gmm.GaussianMixtureClassifier(3)
    with pytest.raises(ValueError, match="is not built: call it on features"):
        clf.log_likelihood(np.zeros((2, 3), "float32"))
    clf.build((None, 3))
    with pytest.raises(ValueError, match=r"`features` must have 3 values.*\(2, 4\)"):
        clf.predict_classes(np.zeros((2, 4), "float32"))
    with pytest.raises(ValueError, match="last axis of the input.*must be known"):
        keras_gmm.GaussianMixtureClassifier(3).build((None, None))


def test_exported_log_likelihood_follows_the_exported_call(tmp_path):
    clf = keras_gmm.GaussianMixtureClassifier(2, name="clf")
    a, b = keras.Input((2,), name="a"), keras.Input((2,), name="b")
    clf(a)  # a first call elsewhere: the exported graph's call is the second
    model = keras.Model([a, b], clf(b))
    path = keras_gmm.export_saved_model(model, tmp_path / "ok")  # still found
    served = tf.saved_model.load(path).signatures[LOG_LIKELIHOOD]
    x = np.ones((3, 2), "float32")
    np.testing.assert_allclose(
        served(a=tf.constant(x * 0), b=tf.constant(x))["log_likelihood"].numpy(),
        clf.log_likelihood(x).numpy(), rtol=1e-6,
    )
