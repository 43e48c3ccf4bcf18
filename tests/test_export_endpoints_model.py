"""Export endpoints that do not take the model's inputs, providers that see the
model, and GMMPriorSampling's generate / generate_component / reconstruct."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gmm
from keras_gmm import export
from tests.export_utils import isolated_export_registry, run_tf_only

K, D, F = 3, 2, 5


def make_vade(nested=False):
    """x [F] -> encoder -> GMMPriorSampling (inference="mean") -> decoder.

    Outputs ``{"gamma": [b, K], "images": [b, F]}``; with ``nested`` the model
    is wrapped: ``x -> vade(x)["gamma"]`` (one output, the decoder inside).
    """
    x = keras.Input((F,), name="x")
    h = keras.layers.Dense(8, activation="tanh")(x)
    z_mean = keras.layers.Dense(D)(h)
    z_log_var = keras.layers.Dense(D)(h)
    prior = keras_gmm.GMMPriorSampling(K, D, seed=0, inference="mean", name="prior")
    z, gamma = prior([z_mean, z_log_var], return_cluster_probabilities=True)
    decoder = keras.Sequential(
        [keras.Input((D,)), keras.layers.Dense(8, activation="tanh"),
         keras.layers.Dense(F, activation="sigmoid")],
        name="decoder",
    )
    vade = keras.Model(x, {"gamma": gamma, "images": decoder(z)}, name="vade")
    if not nested:
        return vade
    outer_x = keras.Input((F,), name="x")
    return keras.Model(outer_x, vade(outer_x)["gamma"], name="outer")


def _vade_parts(model):
    vade = model if model.name == "vade" else model.get_layer("vade")
    return vade, vade.get_layer("prior"), vade.get_layer("decoder")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Both variants exported, and every signature called in one TF-only run."""
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).uniform(size=(6, F)).astype(np.float32)
    seed = np.array([3, 4], np.int64)
    models, requests = {}, []
    for nested in (False, True):
        model = make_vade(nested)
        path = keras_gmm.export_saved_model(
            model, tmp_path_factory.mktemp("export"), version=1
        )
        models[nested] = (model, path)
        requests += [
            (path, "serving_default", {"x": x}),
            (path, "reconstruct", {"x": x}),
            (path, "generate", {"n": np.int32(7), "temperature": np.float32(1.0),
                                "seed": seed}),
            (path, "generate_component", {
                "n": np.int32(4), "component": np.int32(2),
                "temperature": np.float32(0.5), "seed": seed}),
        ]
    results = run_tf_only(requests)
    served = {
        nested: dict(zip(
            ["serving_default", "reconstruct", "generate", "generate_component"],
            results[4 * i: 4 * i + 4],
        ))
        for i, nested in enumerate((False, True))
    }
    return models, served, x, seed


@pytest.mark.parametrize("nested", [False, True], ids=["flat", "nested"])
def test_vade_signatures(exported, nested):
    models, served, x, seed = exported
    model, path = models[nested]
    vade, prior, decoder = _vade_parts(model)
    out = served[nested]
    loaded = tf.saved_model.load(path)
    assert set(loaded.signatures) == {
        "serving_default", "generate", "generate_component", "reconstruct"
    }
    # generate*: only their own inputs, not the model's.
    _, kwargs = loaded.signatures["generate"].structured_input_signature
    assert set(kwargs) == {"n", "temperature", "seed"}
    _, kwargs = loaded.signatures["generate_component"].structured_input_signature
    assert set(kwargs) == {"n", "component", "temperature", "seed"}

    want = vade.predict(x, verbose=0)
    (gamma,) = [v for k, v in out["serving_default"].items() if k in ("gamma", "vade")]
    np.testing.assert_allclose(gamma, want["gamma"], rtol=1e-5, atol=1e-6)
    # reconstruct: the decoder on z_mean (inference="mean").
    assert set(out["reconstruct"]) == {"images"}
    np.testing.assert_allclose(out["reconstruct"]["images"], want["images"],
                               rtol=1e-5, atol=1e-6)

    gen = out["generate"]
    assert set(gen) == {"latent", "component", "images"}
    assert gen["latent"].shape == (7, D) and gen["images"].shape == (7, F)
    assert np.all((gen["component"] >= 0) & (gen["component"] < K))
    z, c = prior.sample_prior(7, temperature=1.0, seed=tf.constant(seed),
                              return_components=True)
    np.testing.assert_allclose(gen["latent"], z, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(gen["component"], c)
    np.testing.assert_allclose(gen["images"], decoder(z), rtol=1e-5, atol=1e-6)

    one = out["generate_component"]
    np.testing.assert_array_equal(one["component"], [2, 2, 2, 2])
    z = prior.sample_prior(4, component=2, temperature=0.5, seed=tf.constant(seed))
    np.testing.assert_allclose(one["latent"], z, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one["images"], decoder(z), rtol=1e-5, atol=1e-6)


def test_prior_without_decoder_offers_latents_only(tmp_path):
    x = keras.Input((F,), name="x")
    h = keras.layers.Dense(4)(x)
    prior = keras_gmm.GMMPriorSampling(K, D, inference="mean", name="prior")
    model = keras.Model(x, prior([keras.layers.Dense(D)(h), keras.layers.Dense(D)(h)]))
    loaded = tf.saved_model.load(keras_gmm.export_saved_model(model, tmp_path))
    assert set(loaded.signatures) == {"serving_default", "generate", "generate_component"}
    out = loaded.signatures["generate"](
        n=tf.constant(5), temperature=tf.constant(0.0), seed=tf.constant([1, 2], tf.int64)
    )
    assert set(out) == {"latent", "component"}
    # temperature 0: the component means.
    np.testing.assert_allclose(
        out["latent"], tf.gather(prior.means, out["component"]), rtol=1e-6
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="component"):
        loaded.signatures["generate_component"](
            n=tf.constant(2), component=tf.constant(K), temperature=tf.constant(1.0),
            seed=tf.constant([1, 2], tf.int64),
        )


# ------------------------------------------------ the general export hooks
class _Shift(keras.layers.Layer):
    """Gets a model-input-free endpoint and one that reads the model."""

    def call(self, inputs):
        return inputs + 1.0


def _shift_endpoints(layer, model):
    width = model.inputs[0].shape[-1]

    def ones(n):
        return {"ones": tf.ones([n, width])}

    def shifted(outputs, factor):
        return {"shifted": outputs * factor}

    return {
        "ones": export.ExportEndpoint(
            ones, {"n": tf.TensorSpec([], tf.int32)}, model_inputs=False
        ),
        # Named like a model input: allowed, the model's inputs are not taken.
        "x_only": (lambda x: {"y": 2.0 * x},
                   {"x": tf.TensorSpec([None, width], tf.float32)}, False),
        "shifted": (shifted, {"factor": tf.TensorSpec([], tf.float32)}),
    }


class _Plain(keras.layers.Layer):
    def call(self, inputs):
        return -inputs


def test_model_free_endpoints_and_model_aware_providers(tmp_path, monkeypatch):
    isolated_export_registry(monkeypatch)
    export.register_export_endpoints(_Shift)(_shift_endpoints)
    seen = []

    @export.register_export_endpoints(_Plain)
    def _provider(layer, model=None):
        seen.append(model)
        return {"twice": export.ExportEndpoint(lambda outputs: {"twice": 2 * outputs})}

    x = keras.Input((3,), name="x")
    model = keras.Model(x, [_Shift(name="shift")(x), _Plain(name="plain")(x)])
    loaded = tf.saved_model.load(keras_gmm.export_saved_model(model, tmp_path))
    assert seen == [model]
    assert set(loaded.signatures) == {
        "serving_default", "ones", "x_only", "shifted", "twice"
    }
    _, kwargs = loaded.signatures["ones"].structured_input_signature
    assert set(kwargs) == {"n"}
    assert loaded.signatures["ones"](n=tf.constant(4))["ones"].shape == (4, 3)
    data = tf.constant(np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_allclose(loaded.signatures["x_only"](x=data)["y"], 2 * data)
    np.testing.assert_allclose(
        loaded.signatures["shifted"](x=data, factor=tf.constant(3.0))["shifted"],
        3 * (data + 1),
    )
    np.testing.assert_allclose(loaded.signatures["twice"](x=data)["twice"], -2 * data)


def test_providers_without_model_parameter_still_work(tmp_path, monkeypatch):
    isolated_export_registry(monkeypatch)

    @export.register_export_endpoints(_Plain)
    def _provider(layer):
        return {"neg": export.ExportEndpoint(lambda outputs: {"neg": -outputs})}

    x = keras.Input((2,), name="x")
    model = keras.Model(x, _Plain(name="plain")(x))
    loaded = tf.saved_model.load(keras_gmm.export_saved_model(model, tmp_path))
    data = tf.constant([[1.0, 2.0]])
    np.testing.assert_allclose(loaded.signatures["neg"](x=data)["neg"], data)
