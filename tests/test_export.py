"""keras_gmm.export_saved_model: TF Serving layout, signatures, extensions."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gmm
from keras_gmm import export
from keras_gmm.export import _core as export_core
from tests.export_utils import isolated_export_registry, run_tf_only

COVARIANCE_TYPES = ("diag", "full")
SEED, OTHER_SEED = [7, 11], [8, 11]


def _mdn_model(covariance_type, seed=0):
    """A tiny MDN with spread-out weights (so weights, scales and the
    off-diagonal factors of "full" are far from their initial values)."""
    keras.utils.set_random_seed(seed)
    head = keras_gmm.MixtureDensityHead(
        3, 2, covariance_type=covariance_type, name="mdn"
    )
    model = keras.Sequential(
        [
            keras.Input((3,), name="features"),
            keras.layers.Dense(8, activation="tanh"),
            head,
        ]
    )
    rng = np.random.default_rng(seed)
    head.kernel.assign(rng.normal(scale=0.5, size=head.kernel.shape))
    head.bias.assign(rng.normal(scale=0.5, size=head.bias.shape))
    return model, head


def _sample_inputs(x, seed, temperature=1.0, sigma_temperature=1.0):
    return {
        "features": x,
        "temperature": np.float32(temperature),
        "sigma_temperature": np.float32(sigma_temperature),
        "seed": np.asarray(seed, np.int64),
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Both MDNs exported and run in ONE TF-only process (TF start-up is slow).

    Returns ``{covariance_type: {"path", "x", "expected": {...}, "served":
    {...}}}``, ``served`` holding the outputs of the TF-only process.
    """
    cases, requests = {}, []
    for covariance_type in COVARIANCE_TYPES:
        model, head = _mdn_model(covariance_type)
        x = np.random.default_rng(1).normal(size=(5, 3)).astype("float32")
        params = model(x)
        expected = {
            "serving_default": {"mdn": params.numpy()},
            "mixture_parameters": {
                **{k: v.numpy() for k, v in head.component_params(params).items()},
                "mean": head.mean(params).numpy(),
            },
            "greedy": head.greedy(params).numpy(),
            "sample": head.sample(params, seed=tf.constant(SEED, tf.int64)).numpy(),
            "sample_cold": head.sample(
                params, 0.5, 0.0, seed=tf.constant(SEED, tf.int64)
            ).numpy(),
        }
        path = keras_gmm.export_saved_model(
            model, tmp_path_factory.mktemp(f"export_{covariance_type}")
        )
        calls = {
            "serving_default": ("serving_default", {"features": x}),
            "mixture_parameters": ("mixture_parameters", {"features": x}),
            "sample": ("sample", _sample_inputs(x, SEED)),
            "sample_again": ("sample", _sample_inputs(x, SEED)),
            "sample_other_seed": ("sample", _sample_inputs(x, OTHER_SEED)),
            "sample_greedy": ("sample", _sample_inputs(x, SEED, 0.0, 0.0)),
            "sample_cold": ("sample", _sample_inputs(x, SEED, 0.5, 0.0)),
        }
        requests += [(path, sig, inputs) for sig, inputs in calls.values()]
        cases[covariance_type] = {
            "path": path, "x": x, "expected": expected, "calls": list(calls)
        }
    results = iter(run_tf_only(requests))
    for case in cases.values():
        case["served"] = {name: next(results) for name in case["calls"]}
    return cases


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_served_forward_pass_equals_keras(served, covariance_type):
    case = served[covariance_type]
    got = case["served"]["serving_default"]
    assert set(got) == {"mdn"}
    np.testing.assert_allclose(
        got["mdn"], case["expected"]["serving_default"]["mdn"], rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_served_mixture_parameters_equal_head(served, covariance_type):
    case = served[covariance_type]
    got = case["served"]["mixture_parameters"]
    want = case["expected"]["mixture_parameters"]
    keys = {"weights", "means", "stddevs", "mean"}
    if covariance_type == "full":
        keys.add("scale_tril")
    assert set(got) == set(want) == keys
    for key in keys:
        np.testing.assert_allclose(
            got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key
        )
    assert got["weights"].shape == (5, 3) and got["means"].shape == (5, 3, 2)
    assert got["stddevs"].shape == (5, 3, 2) and got["mean"].shape == (5, 2)
    if covariance_type == "full":
        assert got["scale_tril"].shape == (5, 3, 2, 2)
        assert np.abs(got["scale_tril"][..., 1, 0]).max() > 1e-3  # truly full


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_served_sample_is_seeded_and_stateless(served, covariance_type):
    case = served[covariance_type]
    got = case["served"]
    first, again = got["sample"]["samples"], got["sample_again"]["samples"]
    assert first.shape == (5, 2)
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, got["sample_other_seed"]["samples"])
    # Same stateless seed, same draws as the head in the exporting process,
    # with each temperature reaching its own argument.
    for name in ("sample", "sample_cold"):
        np.testing.assert_allclose(
            got[name]["samples"], case["expected"][name], rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_served_sample_at_zero_temperatures_is_greedy(served, covariance_type):
    case = served[covariance_type]
    np.testing.assert_allclose(
        case["served"]["sample_greedy"]["samples"],
        case["expected"]["greedy"],
        rtol=1e-6,
        atol=1e-6,
    )


def test_layout_and_signatures(served):
    path = served["diag"]["path"]
    export_dir = os.path.dirname(path)
    assert path == os.path.join(export_dir, "1")
    assert os.listdir(export_dir) == ["1"]  # no temporary directory left
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    assert os.path.isdir(os.path.join(path, "variables"))

    loaded = tf.saved_model.load(path)
    assert (export.SERVING_DEFAULT, export.MIXTURE_PARAMETERS, export.SAMPLE) == (
        "serving_default",
        "mixture_parameters",
        "sample",
    )
    assert set(loaded.signatures) == {"serving_default", "mixture_parameters", "sample"}
    for name in ("serving_default", "mixture_parameters"):
        inputs = loaded.signatures[name].structured_input_signature[1]
        assert list(inputs) == ["features"]
        assert inputs["features"].shape.as_list() == [None, 3]
        assert inputs["features"].dtype == tf.float32
    assert set(loaded.signatures["serving_default"].structured_outputs) == {"mdn"}

    sample = loaded.signatures["sample"]
    inputs = sample.structured_input_signature[1]
    assert set(inputs) == {"features", "temperature", "sigma_temperature", "seed"}
    assert inputs["temperature"].shape.rank == 0
    assert inputs["temperature"].dtype == tf.float32
    assert inputs["sigma_temperature"].shape.rank == 0
    assert inputs["seed"].shape.as_list() == [2] and inputs["seed"].dtype == tf.int64
    assert sample.structured_outputs["samples"].shape.as_list() == [None, 2]
    negative = _sample_inputs(served["diag"]["x"], SEED, temperature=-1.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match="temperature"):
        sample(**{k: tf.constant(v) for k, v in negative.items()})


@pytest.mark.parametrize("structure", ["list", "dict"])
def test_multi_input_functional_model(tmp_path, structure):
    age = keras.Input((2,), name="age")
    history = keras.Input((None, 4), name="history")  # variable-length time axis
    h = keras.layers.Concatenate()(
        [age, keras.layers.GlobalAveragePooling1D()(history)]
    )
    h = keras.layers.Dense(8, activation="tanh")(h)
    head = keras_gmm.MixtureDensityHead(2, 1, name="mdn")
    score = keras.layers.Dense(1, name="score")(h)
    inputs = [age, history] if structure == "list" else {"age": age, "history": history}
    model = keras.Model(inputs, [score, head(h)])

    loaded = tf.saved_model.load(keras_gmm.export_saved_model(model, tmp_path))
    fn = loaded.signatures["serving_default"]
    specs = fn.structured_input_signature[1]
    assert set(specs) == {"age", "history"}
    assert specs["age"].shape.as_list() == [None, 2]
    assert specs["history"].shape.as_list() == [None, None, 4]

    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 2)).astype("float32")
    hist = rng.normal(size=(4, 6, 4)).astype("float32")
    feed = [a, hist] if structure == "list" else {"age": a, "history": hist}
    want_score, want_params = model(feed)
    got = fn(age=tf.constant(a), history=tf.constant(hist))
    assert set(got) == {"score", "mdn"}
    np.testing.assert_allclose(got["score"], want_score, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["mdn"], want_params, rtol=1e-5, atol=1e-6)
    # The head is the second output: its endpoints still come along.
    mixture = loaded.signatures["mixture_parameters"](
        age=tf.constant(a), history=tf.constant(hist)
    )
    np.testing.assert_allclose(
        mixture["mean"], head.mean(want_params), rtol=1e-5, atol=1e-6
    )


def test_nested_heads_and_name_clashes(tmp_path):
    x = keras.Input((3,), name="x")
    inner = keras.Sequential(
        [keras.Input((3,)), keras_gmm.MixtureDensityHead(2, 1, name="inner_head")],
        name="inner",
    )
    outer_head = keras_gmm.MixtureDensityHead(2, 2, name="outer")
    model = keras.Model(x, [inner(x), outer_head(keras.layers.Dense(4)(x))])

    loaded = tf.saved_model.load(keras_gmm.export_saved_model(model, tmp_path))
    assert set(loaded.signatures) == {
        "serving_default",
        "mixture_parameters_inner",
        "sample_inner",
        "mixture_parameters_outer",
        "sample_outer",
    }
    for name, event_size in (("inner", 1), ("outer", 2)):
        outputs = loaded.signatures[f"mixture_parameters_{name}"].structured_outputs
        assert outputs["mean"].shape.as_list() == [None, event_size]


class _Affine(keras.layers.Layer):
    """A test layer whose endpoint is registered with export."""

    def call(self, inputs):
        return inputs + 1.0


class _Registered(keras.layers.Layer):
    def call(self, inputs):
        return 2.0 * inputs


class _WithMethod(keras.layers.Layer):
    """Defines the old ``export_endpoints`` protocol: export must ignore it."""

    def call(self, inputs):
        return inputs

    def export_endpoints(self):
        raise AssertionError("export called a layer's export_endpoints method")


def test_registered_providers_offer_endpoints(tmp_path, monkeypatch):
    isolated_export_registry(monkeypatch)

    @export.register_export_endpoints(_Affine)
    def _affine(layer):
        def scaled(outputs, factor):
            return {"scaled": outputs * factor}

        return {"scaled": (scaled, {"factor": tf.TensorSpec([], tf.float32)})}

    @export.register_export_endpoints(_Registered)
    def _provider(layer):
        return {"negated": export.ExportEndpoint(lambda outputs: {"negated": -outputs})}

    x = keras.Input((2,), name="x")
    model = keras.Model(x, [_Affine(name="affine")(x), _Registered(name="twice")(x)])
    loaded = tf.saved_model.load(keras_gmm.export_saved_model(model, tmp_path))
    assert set(loaded.signatures) == {"serving_default", "scaled", "negated"}
    value = tf.constant([[1.0, 2.0]])
    scaled = loaded.signatures["scaled"](x=value, factor=tf.constant(3.0))
    np.testing.assert_allclose(scaled["scaled"], [[6.0, 9.0]])
    negated = loaded.signatures["negated"](x=value)
    np.testing.assert_allclose(negated["negated"], [[-2.0, -4.0]])
    with pytest.raises(TypeError, match="layer_class"):
        export.register_export_endpoints(object)
    with pytest.raises(TypeError, match="layer_class"):
        export.register_export_check("GMMEnergy")


def test_layer_methods_are_not_an_export_protocol(tmp_path):
    x = keras.Input((2,), name="x")
    model = keras.Model(x, _WithMethod(name="with_method")(x))
    loaded = tf.saved_model.load(keras_gmm.export_saved_model(model, tmp_path))
    assert set(loaded.signatures) == {"serving_default"}


def test_every_keras_gmm_layer_endpoint_is_declared_in_export():
    """One mechanism: the registry, keyed by layer class, knows every layer
    export has something to say about, and the package names every endpoint."""
    registered = set(export_core._REGISTRY)
    for cls in (keras_gmm.MixtureDensityHead, keras_gmm.GMMPriorSampling,
                keras_gmm.GMMEnergy, keras_gmm.GaussianMixtureEM,
                keras_gmm.GaussianMixtureClassifier):
        assert cls in registered, cls
    for name in ("SERVING_DEFAULT", "MIXTURE_PARAMETERS", "SAMPLE", "GENERATE",
                 "GENERATE_COMPONENT", "RECONSTRUCT", "SCORE", "PREDICT",
                 "LOG_LIKELIHOOD"):
        assert isinstance(getattr(export, name), str)
        assert name in export.__all__


def test_versions_and_overwrite(tmp_path):
    model, head = _mdn_model("diag")
    x = np.ones((2, 3), "float32")
    keras_gmm.export_saved_model(model, tmp_path)
    with pytest.raises(ValueError, match="overwrite=True"):
        keras_gmm.export_saved_model(model, tmp_path, version=1)

    head.bias.assign(head.bias + 1.0)
    path = keras_gmm.export_saved_model(model, tmp_path, version=1, overwrite=True)
    fn = tf.saved_model.load(path).signatures["serving_default"]
    served = fn(features=tf.constant(x))
    np.testing.assert_allclose(served["mdn"], model(x), rtol=1e-5, atol=1e-6)

    path = keras_gmm.export_saved_model(model, tmp_path, version=np.int64(2))
    assert path == os.path.join(str(tmp_path), "2")
    assert sorted(os.listdir(tmp_path)) == ["1", "2"]


@pytest.mark.parametrize("version", [0, -1, "a", 1.5, True])
def test_invalid_version(tmp_path, version):
    model, _ = _mdn_model("diag")
    with pytest.raises(ValueError, match="`version` must be an integer >= 1"):
        keras_gmm.export_saved_model(model, tmp_path, version=version)


@pytest.mark.parametrize("obj", [keras.layers.Dense(2), "model.keras", None])
def test_rejects_non_models(tmp_path, obj):
    with pytest.raises(TypeError, match="`model` must be a keras.Model"):
        keras_gmm.export_saved_model(obj, tmp_path)


def test_rejects_models_without_known_inputs(tmp_path):
    unbuilt = keras.Sequential([keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no defined inputs"):
        keras_gmm.export_saved_model(unbuilt, tmp_path)

    x = keras.Input((None,), name="x")
    model = keras.Model(x, keras.layers.Lambda(lambda t: t * 2.0)(x))
    with pytest.raises(ValueError, match="unknown last .feature. axis"):
        keras_gmm.export_saved_model(model, tmp_path)

    with pytest.raises(ValueError, match="`overwrite` must be True or False"):
        keras_gmm.export_saved_model(_mdn_model("diag")[0], tmp_path, overwrite="yes")
    assert not os.listdir(tmp_path)  # nothing written on a refused export
