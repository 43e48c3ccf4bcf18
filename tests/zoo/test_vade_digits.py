"""The vade_digits zoo model: structure, no collapse, baselines, serving."""

import numpy as np
import pytest
import tensorflow as tf

import keras_gmm
from keras_gmm import datasets
from keras_gmm.zoo import vade_digits
from tests.export_utils import run_tf_only
from tests.zoo.zoo_checks import assert_train_rejects, load_and_check_retrained

NAME = "vade_digits"


@pytest.fixture(scope="module")
def model():
    return keras_gmm.zoo.load(NAME)


def test_structure_and_cluster_probabilities(model):
    x, y = datasets.load_digits("test")
    gamma = model.predict(x, verbose=0)
    assert gamma.shape == (len(x), 10) and gamma.dtype == np.float32
    np.testing.assert_allclose(gamma.sum(axis=1), 1.0, atol=1e-5)
    prior = vade_digits.prior_of(model)
    assert isinstance(prior, keras_gmm.GMMPriorSampling)
    assert (prior.num_components, prior.event_size) == (10, 10)
    assert prior.inference == "mean" and prior.kl_method == "vade"
    # The clusters are named after the digits: argmax reads as a digit.
    recorded = keras_gmm.zoo.recorded_metrics(NAME)
    assert np.mean(gamma.argmax(axis=1) == y) == pytest.approx(
        recorded["digit_accuracy"], abs=1e-9
    )


def test_no_collapse(model):
    """Every cluster is used and none holds much more than its share, on both
    splits; the prior's weights stay spread."""
    for split in ("train", "test"):
        x, _ = datasets.load_digits(split)
        counts = np.bincount(vade_digits.predict_clusters(model, x), minlength=10)
        assert counts.min() > 0, (split, counts)
        assert counts.max() / counts.sum() < vade_digits.MAX_CLUSTER_FRACTION, counts
    weights = vade_digits.prior_of(model).mixture_weights.numpy()
    assert weights.min() > 0.03 and weights.max() < 0.2, weights
    meta = keras_gmm.zoo.info(NAME)
    guard = meta["training"]["collapse_guard"]
    assert all(
        f <= guard["max_cluster_fraction_on_train"]
        for f in guard["largest_cluster_fraction_on_train"].values()
    )


def test_collapse_guard_raises():
    assert vade_digits.check_not_collapsed(np.arange(100) % 10) == pytest.approx(0.1)
    with pytest.raises(vade_digits.CollapseError, match="collapsed"):
        vade_digits.check_not_collapsed(np.zeros(100, int))
    with pytest.raises(vade_digits.CollapseError, match="empty"):
        vade_digits.check_not_collapsed(np.arange(100) % 9)  # cluster 9 unused


def test_recorded_scores_beat_baselines_with_seed_spread():
    meta = keras_gmm.zoo.info(NAME)
    recorded = keras_gmm.zoo.recorded_metrics(NAME)
    comparison = meta["training"]["comparison"]
    assert comparison["split"] == "test" and len(comparison["seeds"]) == 3
    ours = comparison["keras_gmm VaDE (this recipe)"]
    seed = str(meta["training"]["seed"])
    for key in ("clustering_accuracy", "nmi"):
        assert ours[key]["per_seed"][seed] == pytest.approx(recorded[key], abs=1e-12)
        assert len(ours[key]["per_seed"]) == 3 and ours[key]["std"] >= 0
        # Clearly above k-means on the raw pixels, on average over the seeds.
        reference = meta["metrics"][key]["reference"]
        assert "KMeans" in reference["source"]
        kmeans = comparison["sklearn.cluster.KMeans(10, n_init=10) on the raw 64 pixels"]
        assert ours[key]["mean"] > kmeans[key]["mean"] + 0.03, key
        # The ELBO training improves on its EM initialisation.
        init = [v for k, v in comparison.items() if k.startswith("diag GaussianMixtureEM")]
        assert ours[key]["mean"] > init[0][key]["mean"], key
    assert any("covariance_type='diag'" in k and "PCA(10)" in k for k in comparison)
    assert any("covariance_type='full'" in k and "PCA(30)" in k for k in comparison)


def test_decoder_and_prior_generate_digits(model):
    """Samples of component k are decoded into digits the model puts back in
    cluster k (the generator and the clustering agree)."""
    prior, decoder = vade_digits.prior_of(model), vade_digits.decoder_of(model)
    hits = []
    for k in range(10):
        images = decoder(prior.sample_prior(20, component=k, seed=k), training=False)
        images = np.asarray(images)
        assert images.shape == (20, 64)
        assert np.all((images >= 0) & (images <= 1))
        hits.append(np.mean(vade_digits.predict_clusters(model, images) == k))
    assert np.mean(hits) > 0.8, hits


def test_serving_endpoints(model, tmp_path):
    path = keras_gmm.export_saved_model(model, tmp_path / "export")
    x = vade_digits.example_inputs(5)
    seed = np.array([1, 2], np.int64)
    served = run_tf_only([
        (path, "serving_default", {"x": x}),
        (path, "reconstruct", {"x": x}),
        (path, "generate", {"n": np.int32(6), "temperature": np.float32(1.0),
                            "seed": seed}),
        (path, "generate_component", {"n": np.int32(4), "component": np.int32(3),
                                      "temperature": np.float32(0.0), "seed": seed}),
    ])
    (gamma,) = served[0].values()
    np.testing.assert_allclose(gamma, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    vade = vade_digits.vade_of(model)
    want = vade.predict(x, verbose=0)["images"]
    np.testing.assert_allclose(served[1]["images"], want, rtol=1e-5, atol=1e-6)
    # Reconstructions are close to the inputs (pixels in [0, 1]).
    assert np.mean(np.abs(served[1]["images"] - x)) < 0.1
    assert served[2]["images"].shape == (6, 64) and served[2]["latent"].shape == (6, 10)
    np.testing.assert_array_equal(served[3]["component"], [3, 3, 3, 3])
    # temperature 0: the decoded component mean, four times.
    mean_image = vade_digits.decoder_of(model)(
        vade_digits.prior_of(model).means[3:4], training=False
    )
    np.testing.assert_allclose(
        served[3]["images"], np.repeat(np.asarray(mean_image), 4, axis=0),
        rtol=1e-5, atol=1e-6,
    )


def test_train_tiny_writes_loadable_model(tmp_path):
    out = tmp_path / NAME
    meta = keras_gmm.zoo.train(
        NAME, output_dir=out, epochs=2, pretrain_epochs=3, num_seeds=1, seed=1,
        restarts=1, baselines=False,
    )
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "model.keras"]
    assert meta["training"]["epochs"] == 2 and meta["training"]["seed"] == 1
    assert "--epochs 2 --seed 1" in meta["train_command"]
    assert sorted(meta["training"]["component_order"]) == list(range(10))
    assert meta["training"]["restarts"] == 1
    run = meta["training"]["runs"]["1"]
    assert run["seed"] == 1 and [r["seed"] for r in run["restarts"]] == [1]
    assert np.isfinite(run["negative_elbo"]) and run["negative_elbo"] > 0
    loaded, measured = load_and_check_retrained(NAME, tmp_path, meta)
    assert measured["clustering_accuracy"] > 0.3  # far above chance already


def test_train_rejects_bad_options(tmp_path):
    assert_train_rejects(NAME, tmp_path, (
        ({"epochs": 0}, "epochs"),
        ({"seed": "0"}, "seed"),
        ({"num_seeds": 0}, "num_seeds"),
        ({"pretrain_epochs": 1.5}, "pretrain_epochs"),
        ({"restarts": 0}, "restarts"),
    ))


def test_restart_selection_is_unsupervised_and_skips_collapses():
    """The kept restart has the lowest training negative ELBO among the
    restarts that did not collapse; all collapsed -> CollapseError."""
    def candidate(seed, elbo, collapsed):
        return f"model{seed}", {
            "seed": seed, "restart": seed // 1000, "negative_elbo": elbo,
            "train_largest_cluster_fraction": 0.9 if collapsed else 0.15,
            "collapsed": collapsed,
        }

    model, info = vade_digits._select([
        candidate(0, 23.0, False), candidate(1000, 21.0, True),
        candidate(2000, 22.5, False),
    ])
    assert model == "model2000" and info["restart"] == 2
    assert [r["seed"] for r in info["restarts"]] == [0, 1000, 2000]
    assert [r["collapsed"] for r in info["restarts"]] == [False, True, False]
    with pytest.raises(vade_digits.CollapseError, match="all 2 restart"):
        vade_digits._select([candidate(0, 23.0, True), candidate(1000, 21.0, True)])
    assert vade_digits.restart_seed(5, 0) == 5
    assert vade_digits.restart_seed(5, 2) == 5 + 2 * vade_digits.RESTART_SEED_STRIDE


def test_recorded_restart_selection():
    """The recorded runs kept the lowest training negative ELBO (no test
    score involved) and never a collapsed restart."""
    training = keras_gmm.zoo.info(NAME)["training"]
    assert training["restarts"] == vade_digits.DEFAULTS["restarts"] >= 2
    for run in training["runs"].values():
        eligible = [r for r in run["restarts"] if not r["collapsed"]]
        assert len(run["restarts"]) == training["restarts"]
        best = min(eligible, key=lambda r: r["negative_elbo"])
        assert run["seed"] == best["seed"] and not run["collapsed"]


def test_example_inputs_are_held_out():
    x_test, _ = datasets.load_digits("test")
    np.testing.assert_array_equal(vade_digits.example_inputs(3), x_test[:3])
    assert tf.constant(vade_digits.example_inputs(2)).shape == (2, 64)
