"""The boundary contract of keras_gmm.export_saved_model (issue "Boundary
contract"): non-finite rows flagged by the exported anomaly detector,
in-graph checks with the eager messages, unfitted layers refused, the output
folder checked before anything is traced."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_gmm
from keras_gmm import _validation, export
from keras_gmm.export.gmm_energy import is_anomaly
from tests.export_utils import isolated_export_registry

NAN, INF = float("nan"), float("inf")


# ------------------------------------------------------------------ helpers
def _energy_model():
    keras.utils.set_random_seed(0)
    x = keras.Input((3,), name="x")
    z = keras.layers.Dense(2, name="encoder")(x)
    gamma = keras.layers.Dense(2, activation="softmax", name="estimator")(z)
    energy = keras_gmm.GMMEnergy(reg_covar=1e-3, name="energy")([z, gamma])
    return keras.Model(x, energy), z, gamma


def _mdn_model():
    keras.utils.set_random_seed(0)
    head = keras_gmm.MixtureDensityHead(2, 1, name="mdn")
    return keras.Sequential(
        [keras.Input((2,), name="features"), keras.layers.Dense(4), head]
    )


def _refuse_tracing(monkeypatch):
    """Make any tracing/writing an AssertionError: a check must come first."""

    def traced(*args, **kwargs):
        raise AssertionError("export traced the model before refusing it")

    monkeypatch.setattr(keras.export, "ExportArchive", traced)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """An MDN and a GMMEnergy model, exported once and loaded in-process."""
    energy_model, _, _ = _energy_model()
    energy_model.get_layer("energy").set_threshold(3.0)
    root = tmp_path_factory.mktemp("contract")
    energy_path = keras_gmm.export_saved_model(energy_model, root / "energy")
    mdn_path = keras_gmm.export_saved_model(_mdn_model(), root / "mdn")
    return {
        "energy": (energy_model, tf.saved_model.load(energy_path)),
        "mdn": tf.saved_model.load(mdn_path),
    }


# ------------------------------------------- the anomaly detector and NaN
def test_is_anomaly_flags_non_finite_scores():
    energy = tf.constant([1.0, NAN, INF, -INF, 5.0, 2.0])
    np.testing.assert_array_equal(
        is_anomaly(energy, tf.constant(2.0)), [False, True, True, True, True, False]
    )
    # The default threshold (+inf, never set) flags only what is not finite.
    np.testing.assert_array_equal(
        is_anomaly(energy, tf.constant(INF)), [False, True, True, True, False, False]
    )


def test_exported_predict_flags_nan_and_inf_rows(loaded):
    model, served = loaded["energy"]
    rows = np.array(
        [[0.1, -0.2, 0.3], [NAN, 0.0, 0.0], [0.0, INF, 0.0], [-INF, 0.0, 0.0],
         [40.0, -40.0, 40.0], [0.0, 0.0, 0.0]],
        np.float32,
    )
    out = served.signatures["predict"](x=tf.constant(rows))
    score, flagged = out["score"].numpy(), out["is_anomaly"].numpy()
    assert flagged.dtype == bool and flagged.shape == (6,)
    # A non-finite row gives a non-finite score (never a plausible number) ...
    assert not np.any(np.isfinite(score[1:4]))
    # ... and is flagged anomalous; finite rows follow the threshold.
    assert flagged[1:4].all()
    threshold = float(model.get_layer("energy").threshold.numpy())
    finite = np.isfinite(score)
    np.testing.assert_array_equal(flagged[finite], score[finite] > threshold)
    assert flagged[4] and not flagged[0], (score, threshold)  # both sides seen
    np.testing.assert_allclose(
        served.signatures["score"](x=tf.constant(rows[[0, 4, 5]]))["score"],
        model.predict(rows[[0, 4, 5]], verbose=0), rtol=1e-5, atol=1e-5,
    )


def test_energy_endpoints_come_from_export_not_the_layer(tmp_path, monkeypatch):
    def boom(self):
        raise AssertionError("export called GMMEnergy.export_endpoints")

    monkeypatch.setattr(keras_gmm.GMMEnergy, "export_endpoints", boom, raising=False)
    model, _, _ = _energy_model()
    loaded = tf.saved_model.load(keras_gmm.export_saved_model(model, tmp_path))
    assert set(loaded.signatures) == {"serving_default", export.SCORE, export.PREDICT}


# --------------------------------------- in-graph checks, eager messages
@pytest.mark.parametrize(
    "name, temperature, sigma_temperature",
    [("temperature", NAN, 1.0), ("temperature", INF, 1.0),
     ("temperature", -1.0, 1.0), ("sigma_temperature", 1.0, NAN),
     ("sigma_temperature", 1.0, -INF)],
)
def test_exported_sample_asserts_finite_non_negative_temperatures(
    loaded, name, temperature, sigma_temperature
):
    with pytest.raises(ValueError) as eager:
        _validation.check_number(
            temperature if name == "temperature" else sigma_temperature, name, low=0
        )
    rule = str(eager.value).split("; received ")[0]
    assert rule == f"`{name}` must be a finite number >= 0"
    with pytest.raises(tf.errors.InvalidArgumentError) as served:
        loaded["mdn"].signatures["sample"](
            features=tf.ones((2, 2)), temperature=tf.constant(temperature),
            sigma_temperature=tf.constant(sigma_temperature),
            seed=tf.constant([1, 2], tf.int64),
        )
    assert f"{rule}; received {name}=" in served.value.message


def test_exported_generate_asserts_finite_temperature(tmp_path):
    x = keras.Input((3,), name="x")
    prior = keras_gmm.GMMPriorSampling(2, 2, inference="mean", name="prior")
    model = keras.Model(
        x, prior([keras.layers.Dense(2)(x), keras.layers.Dense(2)(x)])
    )
    generate = tf.saved_model.load(
        keras_gmm.export_saved_model(model, tmp_path)
    ).signatures["generate"]
    seed = tf.constant([1, 2], tf.int64)
    assert generate(n=tf.constant(3), temperature=tf.constant(0.5),
                    seed=seed)["latent"].shape == (3, 2)
    for bad in (NAN, INF):
        with pytest.raises(
            tf.errors.InvalidArgumentError,
            match="`temperature` must be a finite number >= 0; received temperature=",
        ):
            generate(n=tf.constant(3), temperature=tf.constant(bad), seed=seed)


@pytest.mark.parametrize("seed", ["a", [2**63, 0], [1.5, 2.0]])
def test_exported_sample_refuses_bad_seeds_clearly(loaded, seed):
    """The served seed is an int64 [2] input: a string, a float or a value
    out of int64 range is refused when the call binds its inputs (a
    TypeError naming the conversion), never an UnimplementedError."""
    with pytest.raises(TypeError, match="int64|out-of-range"):
        loaded["mdn"].signatures["sample"](
            features=tf.ones((1, 2)), temperature=tf.constant(1.0),
            sigma_temperature=tf.constant(1.0), seed=seed,
        )


# --------------------------------------------------- unfitted layers
def _em_model(nested=False):
    x = keras.Input((2,), name="x")
    em = keras_gmm.GaussianMixtureEM(2, covariance_type="diag", seed=0, name="em")
    if not nested:
        return keras.Model(x, em(x), name="clusters"), em
    inner = keras.Model(x, em(x), name="inner")
    outer_x = keras.Input((2,), name="x")
    return keras.Model(
        outer_x, keras.layers.Dense(1)(inner(outer_x)), name="outer"
    ), em


@pytest.mark.parametrize("nested", [False, True], ids=["output", "nested"])
def test_unfitted_gaussian_mixture_em_is_refused(tmp_path, monkeypatch, nested):
    model, em = _em_model(nested)
    assert float(em.fitted.numpy()) == 0.0
    target = tmp_path / "export"
    with monkeypatch.context() as patch:
        _refuse_tracing(patch)
        with pytest.raises(
            ValueError,
            match=r"Layer 'em' \(GaussianMixtureEM\) of model '(clusters|outer)' "
                  r"is not fitted.*call its fit\(x\) first \(or load a fitted model\)",
        ):
            keras_gmm.export_saved_model(model, target)
    assert not target.exists()  # refused before anything was written

    rng = np.random.default_rng(0)
    data = np.concatenate([rng.normal(-3, 1, (30, 2)), rng.normal(3, 1, (30, 2))])
    em.fit(data.astype("float32"), verbose=0)
    loaded = tf.saved_model.load(keras_gmm.export_saved_model(model, target))
    (served,) = loaded.signatures["serving_default"](
        x=tf.constant(data[:4], tf.float32)
    ).values()
    np.testing.assert_allclose(
        served, model.predict(data[:4].astype("float32"), verbose=0),
        rtol=1e-5, atol=1e-6,
    )


def test_unfitted_bayesian_mixture_is_refused_and_fitted_one_exports(
        tmp_path, monkeypatch):
    x = keras.Input((2,), name="x")
    layer = keras_gmm.BayesianGaussianMixtureEM(3, covariance_type="full", seed=0,
                                                name="bgm")
    model = keras.Model(x, layer(x), name="bayes")
    target = tmp_path / "export"
    with monkeypatch.context() as patch:
        _refuse_tracing(patch)
        with pytest.raises(ValueError, match=r"Layer 'bgm' \(BayesianGaussianMixtureEM"
                                             r"\) of model 'bayes' is not fitted"):
            keras_gmm.export_saved_model(model, target)
    assert not target.exists()

    rng = np.random.default_rng(1)
    data = np.concatenate([rng.normal(-3, 1, (40, 2)), rng.normal(3, 1, (40, 2))])
    layer.fit(data.astype("float32"), verbose=0)
    loaded = tf.saved_model.load(keras_gmm.export_saved_model(model, target))
    (served,) = loaded.signatures["serving_default"](
        x=tf.constant(data[:5], tf.float32)
    ).values()
    np.testing.assert_allclose(
        served, model.predict(data[:5].astype("float32"), verbose=0),
        rtol=1e-5, atol=1e-6,
    )


# ------------------------------------------------- the output folder
def test_unwritable_export_dir_is_refused_before_tracing(monkeypatch):
    _refuse_tracing(monkeypatch)
    model = _mdn_model()
    for path in ("/proc/keras_gmm_export", "/proc/keras_gmm_export/deeper"):
        for call in (
            lambda: keras_gmm.export_saved_model(model, path),
            lambda: export.check_export_target(path),
        ):
            with pytest.raises(ValueError) as error:
                call()
            message = str(error.value)
            assert "\n" not in message
            assert repr(path) in message and "Cannot create" in message
            assert "Pass an export_dir you can write to" in message


def test_export_dir_that_is_a_file_is_refused(tmp_path, monkeypatch):
    _refuse_tracing(monkeypatch)
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    with pytest.raises(ValueError, match="a file of that name exists"):
        keras_gmm.export_saved_model(_mdn_model(), path)
    assert path.read_text() == "not a folder"


def test_existing_version_is_refused_before_tracing(tmp_path, monkeypatch):
    (tmp_path / "3").mkdir()
    _refuse_tracing(monkeypatch)
    for call in (
        lambda: keras_gmm.export_saved_model(_mdn_model(), tmp_path, version=3),
        lambda: export.check_export_target(tmp_path, version=3),
    ):
        with pytest.raises(ValueError, match=r"already exists.*overwrite=True"):
            call()
    assert sorted(os.listdir(tmp_path)) == ["3"]


def test_check_export_target_leaves_nothing_behind(tmp_path):
    target = export.check_export_target(tmp_path / "new" / "models", version=2)
    assert target == os.path.join(str(tmp_path / "new" / "models"), "2")
    assert not os.listdir(tmp_path)
    with pytest.raises(ValueError, match="`version` must be an integer >= 1"):
        export.check_export_target(tmp_path, version=0)


def test_failed_export_removes_the_folders_it_created(tmp_path, monkeypatch):
    isolated_export_registry(monkeypatch)

    class _Failing(keras.layers.Layer):
        def call(self, inputs):
            return inputs

    def broken(outputs):
        raise RuntimeError("broken endpoint")

    export.register_export_endpoints(_Failing)(
        lambda layer: {"broken": export.ExportEndpoint(broken)}
    )
    x = keras.Input((2,), name="x")
    model = keras.Model(x, _Failing(name="failing")(x))
    with pytest.raises(RuntimeError, match="broken endpoint"):
        keras_gmm.export_saved_model(model, tmp_path / "a" / "b")
    assert not os.listdir(tmp_path)
