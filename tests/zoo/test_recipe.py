"""keras_gmm.zoo._recipe: the helpers the recipes share, written once."""

import json

import keras
import numpy as np
import pytest

import keras_gmm
from keras_gmm.zoo import _files, _recipe


def test_seed_summary():
    summary = _recipe.seed_summary(
        {0: {"acc": 0.5, "nmi": 0.1}, 1: {"acc": 0.7, "nmi": 0.3}},
        ("acc", "nmi", "absent"))
    assert set(summary) == {"acc", "nmi"}
    assert summary["acc"]["mean"] == pytest.approx(0.6)
    assert summary["acc"]["std"] == pytest.approx(0.1)
    assert summary["nmi"]["per_seed"] == {"0": 0.1, "1": 0.3}


def test_find_layer():
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1, name="last")(
        keras.layers.Dense(3)(inputs)))
    assert _recipe.find_layer(model, keras.layers.Dense).name == "last"
    with pytest.raises(ValueError, match="has no GMMEnergy layer"):
        _recipe.find_layer(model, keras_gmm.GMMEnergy)


def test_name_clusters_renumbers_components_after_the_classes():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [8.0, 0.0], [0.0, 8.0]])
    y = np.repeat(np.arange(3), 50)
    x = (centres[y] + rng.normal(size=(150, 2))).astype("float32")
    gmm = keras_gmm.GaussianMixtureEM(3, seed=1)
    gmm.fit(x, verbose=0)
    before = gmm.predict(x)
    log_likelihood = gmm.score(x)
    order = _recipe.name_clusters(gmm, before, y)
    assert sorted(order) == [0, 1, 2]
    after = gmm.predict(x)
    np.testing.assert_array_equal(after, np.argsort(order)[before])  # a relabelling
    assert np.mean(after == y) > 0.95
    assert gmm.score(x) == pytest.approx(log_likelihood, rel=1e-6)


CARD = {
    "name": "mdn_inverse_sine",
    "description": "a card",
    "architecture": "Dense",
    "dataset": {"function": "f"},
    "metrics": {
        "nll": {"value": 1.0, "unit": "nats", "tolerance": 0.1,
                "reference": {"name": "floor", "value": -1.0, "source": "exact"}},
        "acc": {"value": 0.5, "tolerance": 0.1,
                "reference": {"name": "baseline", "value": 0.4, "source": "seed 0"}},
    },
    "training": {"seed": 0, "epochs": 9, "loss": "prose", "selection": {"tried": [1]},
                 "comparison": {"stale": 1}, "seconds": 3.0},
    "model_file": "model.keras",
    "sha256": "0" * 64,
    "loading": "how it loads",
    "notes": ["a note"],
}


def test_save_writes_the_card_with_this_run(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    record = {"metrics": {"nll": {"value": 0.25, "gap": 1.25},
                          "acc": {"value": 0.75, "reference": {"value": 0.5,
                                                               "source": "seed 1"}}},
              "training": {"seed": 1, "epochs": 2, "seconds": 0.5}}
    meta = _recipe.save(model, tmp_path / "out", CARD, record)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "model.keras"]
    assert json.loads((out / "metadata.json").read_text()) == meta
    assert meta["sha256"] == _files.sha256_file(out / "model.keras")
    for key in ("description", "architecture", "dataset", "loading", "notes"):
        assert meta[key] == CARD[key]
    nll, acc = meta["metrics"]["nll"], meta["metrics"]["acc"]
    assert (nll["value"], nll["unit"], nll["tolerance"], nll["gap"]) == (
        0.25, "nats", 0.1, 1.25)
    assert nll["reference"] == CARD["metrics"]["nll"]["reference"]  # not measured: kept
    assert acc["reference"] == {"name": "baseline", "value": 0.5, "source": "seed 1"}
    # Prose and the selection come from the card; figures only from this run.
    assert meta["training"] == {"seed": 1, "epochs": 2, "seconds": 0.5, "loss": "prose",
                                "selection": {"tried": [1]}}
    assert "--epochs 2 --seed 1" in meta["train_command"]
    assert meta["saved_compiled"] is False
    assert set(meta["library_versions"]) >= {"tensorflow", "keras", "keras_gmm"}
    loaded = _recipe.load_model(out / "model.keras")
    np.testing.assert_allclose(loaded.get_weights()[0], model.get_weights()[0])


def test_save_refuses_metrics_the_card_does_not_define(tmp_path):
    inputs = keras.Input((2,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    record = {"metrics": {"nll": 0.25}, "training": {"seed": 1, "epochs": 2}}
    with pytest.raises(RuntimeError, match="measured"):
        _recipe.save(model, tmp_path / "out", CARD, record)
    assert not (tmp_path / "out").exists()


def _digit(side=28):
    """One square test image: a bright bar off the centre, in [0, 1]."""
    image = np.zeros((side, side), np.float32)
    image[6:20, 9:12] = 1.0
    return image.reshape(1, -1)


def test_contrastive_augment_is_seeded_in_range_and_identity_without_changes():
    import tensorflow as tf

    x = tf.constant(np.repeat(_digit(), 6, axis=0))
    plain = _recipe.Contrastive(rotation=0, scale=0, shift=0, cutout=0, noise=0)
    np.testing.assert_allclose(plain.augment(x, tf.random.Generator.from_seed(0)), x,
                               atol=1e-6)
    views = _recipe.Contrastive()
    a = views.augment(x, tf.random.Generator.from_seed(3)).numpy()
    b = views.augment(x, tf.random.Generator.from_seed(3)).numpy()
    np.testing.assert_array_equal(a, b)  # seeded
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert len({row.tobytes() for row in a}) == 6  # each image its own draw
    # The geometry, with each draw at its maximum: a shift moves the ink by
    # whole pixels, a quarter turn about the centre turns the image.
    class Highest:
        def uniform(self, shape, minval, maxval, dtype=tf.float32):
            return tf.fill(shape, tf.cast(maxval, dtype))

    image = _digit().reshape(28, 28)
    moved = _recipe.Contrastive(rotation=0, scale=0, shift=2, cutout=0, noise=0
                                ).augment(x[:1], Highest()).numpy().reshape(28, 28)
    np.testing.assert_allclose(moved, np.roll(image, (2, 2), (0, 1)), atol=1e-5)
    turned = _recipe.Contrastive(rotation=90, scale=0, shift=0, cutout=0, noise=0
                                 ).augment(x[:1], Highest()).numpy().reshape(28, 28)
    assert any(np.allclose(turned, np.rot90(image, k), atol=1e-4) for k in (1, 3))
    # Cutout zeroes one square of cutout x cutout pixels of an all-ones image.
    ones = tf.ones((4, 784))
    holes = _recipe.Contrastive(rotation=0, scale=0, shift=0, cutout=10, noise=0)
    cut = holes.augment(ones, tf.random.Generator.from_seed(1)).numpy()
    assert np.all((784 - cut.sum(axis=1)) == 100)


def test_nt_xent_matches_a_naive_reference():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    loss = _recipe.Contrastive(temperature=0.5).nt_xent(
        tf.constant(a, tf.float32), tf.constant(b, tf.float32))
    z = np.concatenate([a, b])
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    sim = z @ z.T / 0.5
    terms = []
    for i in range(10):
        twin = (i + 5) % 10
        others = np.delete(sim[i], i)
        terms.append(-(sim[i, twin] - np.log(np.exp(others).sum())))
    assert float(loss) == pytest.approx(np.mean(terms), rel=1e-5)
    # Views that agree with their twin and differ from the rest score low.
    twins = np.eye(5, 3 + 2)[:, :5].astype(np.float32)
    assert float(_recipe.Contrastive(temperature=0.1).nt_xent(
        tf.constant(twins), tf.constant(twins))) < 0.01


@pytest.mark.parametrize("projection", [(128, 64), ()])
def test_contrastive_pretraining_pulls_views_of_an_image_together(projection):
    """A few epochs on 64 images with mild views make the encoder match two
    augmentations of an image to each other far more often than before
    training (the point of the phase), and the loss went down; with
    ``projection=()`` the loss is on the encoder's output itself (no head)."""
    import tensorflow as tf

    from keras_gmm import datasets

    x = tf.constant(datasets.load_mnist("val")[0][:64])
    encoder = keras.Sequential([keras.Input((784,)), keras.layers.Dense(32,
                                activation="relu"), keras.layers.Dense(8)])
    recipe = _recipe.Contrastive(batch_size=32, rotation=10, scale=0.1, shift=1,
                                 cutout=0, noise=0.3, projection=projection)
    head = recipe.settings()["projection_head"]
    if projection:
        assert head == list(projection)
    else:
        assert head.startswith("none")

    def matched():
        generator = tf.random.Generator.from_seed(7)
        z1, z2 = (keras.ops.convert_to_numpy(encoder(recipe.augment(x, generator)))
                  for _ in range(2))
        z1 = z1 / np.linalg.norm(z1, axis=1, keepdims=True)
        z2 = z2 / np.linalg.norm(z2, axis=1, keepdims=True)
        return np.mean((z1 @ z2.T).argmax(axis=1) == np.arange(64))

    before = matched()
    losses = recipe.pretrain(encoder, x.numpy(), seed=0, epochs=30)
    assert len(losses) == 30 and losses[-1] < 0.8 * losses[0]
    assert matched() > before + 0.2, before
    with pytest.raises(ValueError, match="epochs"):
        recipe.pretrain(encoder, x.numpy(), seed=0, epochs=0)


def test_contrastive_refuses_bad_projection_widths():
    for projection, match in ((None, "projection=None"), (64, "projection=64"),
                              ("64", "projection='64'"), ((128, 0), r"projection\[1\]"),
                              ((32.5,), r"projection\[0\]")):
        with pytest.raises(ValueError, match=match):
            _recipe.Contrastive(projection=projection)
    assert _recipe.Contrastive(projection=[16]).projection == (16,)


def test_vade_contrastive_phase_whitens_the_latent_and_fits_the_decoder():
    """With a Contrastive phase the encoder means come out whitened on the
    training images (zero mean, identity covariance: the EM then starts on a
    round latent) and the decoder's loss went down on the frozen latent."""
    from keras_gmm import datasets

    x = datasets.load_mnist("val")[0][:96]
    recipe = _recipe.VaDE("t", datasets.load_mnist, 784, (16,), latent_dim=4,
                          num_components=3, conv_filters=(4,), batch_size=32,
                          contrastive=_recipe.Contrastive(batch_size=32, cutout=0),
                          decoder_epochs=3, em={"covariance_type": "diag",
                                                "reg_covar": 1e-4, "n_init": 1})
    model, em, losses, seconds = recipe.initialise(0, 2, x_train=x)
    z = _recipe.predict(recipe.encoder_of(model), x)[0]
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(np.cov(z.T, bias=True), np.eye(4), atol=1e-3)
    assert len(losses) == 3 and losses[-1] < losses[0]
    assert set(seconds) == {"pretrain", "em"} and em.means_.shape == (3, 4)
    with pytest.raises(ValueError, match="num_pixels=30"):
        _recipe.VaDE("t", datasets.load_mnist, 30, (8,), conv_filters=(4,))


def test_vade_unit_latent_lies_on_a_sphere_and_takes_a_full_prior():
    """unit_latent: the latent is the direction of the contrastively trained
    Dense output times sqrt(latent_dim) (no whitening), and the prior takes
    the EM's covariance type ("full" here), initialised from it."""
    from keras_gmm import datasets

    x = datasets.load_mnist("val")[0][:96]
    recipe = _recipe.VaDE("t", datasets.load_mnist, 784, (16,), latent_dim=4,
                          num_components=3, conv_filters=(4,), batch_size=32,
                          contrastive=_recipe.Contrastive(batch_size=32, cutout=0),
                          decoder_epochs=2, unit_latent=True,
                          em={"covariance_type": "full", "reg_covar": 1e-2, "n_init": 1})
    model, em, _, _ = recipe.initialise(0, 2, x_train=x)
    z = _recipe.predict(recipe.encoder_of(model), x)[0]
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 2.0, rtol=1e-5)
    prior = recipe.prior_of(model)
    assert prior.covariance_type == "full"
    np.testing.assert_allclose(prior.mixture().precisions_cholesky.numpy(),
                               em.precisions_cholesky_, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="unit_latent=True needs a contrastive"):
        _recipe.VaDE("t", datasets.load_mnist, 784, (8,), unit_latent=True)
    with pytest.raises(ValueError, match="em.*covariance_type.*n_init"):
        _recipe.VaDE("t", datasets.load_mnist, 784, (8,), em={"n_init": 1})
