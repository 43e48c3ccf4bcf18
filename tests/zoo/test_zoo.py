"""The model zoo: registry, metadata, checksums, loading, evaluation, training."""

import importlib
import json
import logging
import math
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

import keras_gmm
import keras_gmm.zoo
from keras_gmm import datasets
from keras_gmm.zoo import _files, _registry

NAMES = keras_gmm.zoo.list_models()
REPO_ROOT_ZOO = Path(__file__).resolve().parents[2] / "saved_models"


@pytest.fixture(scope="module")
def loaded():
    """Each zoo model, loaded once for the module."""
    return {name: keras_gmm.zoo.load(name) for name in NAMES}


def _copy_zoo(tmp_path, name):
    """A copy of zoo model ``name``'s folder under ``tmp_path/<name>``."""
    target = tmp_path / name
    shutil.copytree(keras_gmm.zoo.model_dir(name), target)
    return target


# ---------------------------------------------------------------- registry
def test_list_models_is_sorted_registry():
    assert NAMES == sorted(_registry.REGISTRY)
    assert {"em_digits", "mdn_inverse_sine"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_recipe_module_interface(name):
    recipe = _registry.get_recipe(name)
    assert recipe.__name__ == f"keras_gmm.zoo.{name}"
    assert getattr(keras_gmm.zoo, name) is recipe  # lazy attribute of the zoo
    for attr in ("DEFAULTS", "build", "train", "evaluate", "example_inputs"):
        assert hasattr(recipe, attr), f"{recipe.__name__} lacks {attr}"
    assert {"seed", "epochs"} <= set(recipe.DEFAULTS)
    # What is prose lives in the card, not in the recipe.
    for attr in ("DESCRIPTION", "ARCHITECTURE", "DATASET", "METRICS", "SELECTION"):
        assert not hasattr(recipe, attr), f"{recipe.__name__}.{attr}"
    assert "selection" in keras_gmm.zoo.info(name)["training"]


@pytest.mark.parametrize(
    "call",
    [
        lambda: keras_gmm.zoo.info("no_such_model"),
        lambda: keras_gmm.zoo.load("no_such_model"),
        lambda: keras_gmm.zoo.evaluate("no_such_model"),
        lambda: keras_gmm.zoo.train("no_such_model", output_dir="unused"),
    ],
    ids=["info", "load", "evaluate", "train"],
)
def test_unknown_name_lists_known_models(call):
    with pytest.raises(ValueError, match="Unknown zoo model 'no_such_model'") as info:
        call()
    for name in NAMES:
        assert name in str(info.value)


# ---------------------------------------------------------------- metadata
@pytest.mark.parametrize("name", NAMES)
def test_info_fields(name):
    meta = keras_gmm.zoo.info(name)
    assert meta["name"] == name
    assert meta["description"] and meta["architecture"]
    # The dataset function named in the metadata exists.
    module, _, function = meta["dataset"]["function"].rpartition(".")
    assert callable(getattr(importlib.import_module(module), function))
    assert meta["dataset"]["evaluation_split"] in meta["dataset"]["splits"]
    assert meta["metrics"]
    for spec in meta["metrics"].values():
        assert math.isfinite(spec["value"])
        assert spec["unit"] and spec["meaning"] and spec["tolerance"] > 0
        assert spec["split"] == meta["dataset"]["evaluation_split"]
    training = meta["training"]
    for key in ("seed", "epochs", "batch_size", "optimizer"):
        assert key in training
    assert re.fullmatch(r"[0-9a-f]{64}", meta["sha256"])
    assert meta["train_command"].startswith(f"keras-gmm zoo train {name} ")
    assert f"--output-dir saved_models/{name}" in meta["train_command"]
    assert f"--epochs {training['epochs']}" in meta["train_command"]
    assert f"--seed {training['seed']}" in meta["train_command"]
    assert set(meta["library_versions"]) >= {
        "python",
        "numpy",
        "tensorflow",
        "keras",
        "tensorflow_probability",
        "keras_gmm",
    }


@pytest.mark.parametrize("name", NAMES)
def test_sha256_matches_model_file(name):
    path = keras_gmm.zoo.model_dir(name) / "model.keras"
    assert _files.sha256_file(path) == keras_gmm.zoo.info(name)["sha256"]
    assert keras_gmm.zoo.verify(name) == path


def test_mdn_inverse_sine_metadata_records_the_floor():
    spec = keras_gmm.zoo.info("mdn_inverse_sine")["metrics"]["nll_per_sample"]
    floor = datasets.inverse_sine_conditional_entropy()
    assert spec["unit"] == "nats" and spec["split"] == "test"
    assert spec["reference"]["value"] == pytest.approx(floor, abs=1e-9)
    assert spec["reference"]["value"] == pytest.approx(-1.282, abs=2e-3)
    # Close to the floor, as the issue asks: NLL <= -1.20 (floor -1.282); a
    # value well below the floor would mean a broken evaluation.
    assert floor - 0.05 < spec["value"] <= -1.20


# ----------------------------------------------------------------- loading
@pytest.mark.parametrize("name", NAMES)
def test_loaded_model_reproduces_recorded_metrics(name, loaded):
    model = loaded[name]
    assert isinstance(model, keras.Model)
    measured = keras_gmm.zoo.evaluate(name, model)
    recorded = keras_gmm.zoo.recorded_metrics(name)
    assert set(measured) == set(recorded)
    rows = keras_gmm.zoo.check_metrics(name, measured)
    for row in rows:
        assert row["ok"], row
        assert abs(row["measured"] - row["recorded"]) <= row["tolerance"]


class _RetracingLog(logging.Handler):
    """Collects TensorFlow's "triggered tf.function retracing" warnings."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        if "retracing" in record.getMessage():
            self.messages.append(record.getMessage())


def test_evaluating_every_model_traces_no_predict_function():
    # Evaluating the models one after another used model.predict, which
    # traces a new tf.function per model and per batch shape, all counted
    # together by TensorFlow: the demo logged retracing warnings.
    log, logger = _RetracingLog(), logging.getLogger("tensorflow")
    logger.addHandler(log)
    try:
        for name in NAMES:
            model = keras_gmm.zoo.load(name)  # a fresh model each
            keras_gmm.zoo.evaluate(name, model)
            assert getattr(model, "predict_function", None) is None, name
    finally:
        logger.removeHandler(log)
    assert log.messages == []


def test_mdn_inverse_sine_takes_raw_inputs_and_is_compiled(loaded):
    model = loaded["mdn_inverse_sine"]
    x, y = datasets.inverse_sine_split("test")
    head = model.layers[-1]
    assert isinstance(head, keras_gmm.MixtureDensityHead)
    # Standardisation is inside the model: raw x goes in.
    assert any(isinstance(layer, keras.layers.Normalization) for layer in model.layers)
    # Saved compiled with its keras_gmm loss: evaluate() works as loaded and
    # gives the recorded NLL.
    assert isinstance(model.loss, keras_gmm.GMMNegLogLik)
    loss = model.evaluate(x, y, batch_size=2048, verbose=0)
    recorded = keras_gmm.zoo.recorded_metrics("mdn_inverse_sine")["nll_per_sample"]
    assert loss == pytest.approx(recorded, abs=1e-3)
    # p(y | x) is uniform on S(x) = {y in [0, 1] : |x - g(y)| < 0.1}, with
    # g(y) = y + 0.3 sin(2 pi y): one interval or several (x = 0.55, 0.45:
    # two branches). The model puts nearly all its mass on S(x).
    ys = np.linspace(-0.5, 1.5, 4001, dtype=np.float32)
    g = ys + 0.3 * np.sin(2 * np.pi * ys)
    for x0 in (0.1, 0.45, 0.5, 0.55, 0.9):
        params = model.predict(np.array([[x0]], np.float32), verbose=0)
        grid = np.repeat(params, len(ys), axis=0)
        density = np.exp(head.log_prob(grid, ys[:, None]).numpy())
        support = (np.abs(x0 - g) < 0.1) & (ys >= 0) & (ys <= 1)
        mass_on_support = density[support].sum() / density.sum()
        assert mass_on_support > 0.9, (x0, mass_on_support)


def test_em_digits_structure_and_baselines(loaded):
    model = loaded["em_digits"]
    # The projection is a standard, frozen Dense layer (a PCA), then the mixture.
    pca = model.get_layer("pca")
    assert type(pca) is keras.layers.Dense and not pca.trainable
    gmm = model.layers[-1]
    assert isinstance(gmm, keras_gmm.GaussianMixtureEM)
    assert gmm.num_components == 10
    x, y = datasets.load_digits("test")
    resp = model.predict(x, verbose=0)
    assert resp.shape == (len(x), 10)
    np.testing.assert_allclose(resp.sum(axis=1), 1.0, atol=1e-5)
    # The PCA inside the model is the PCA of the train split (centred, orthonormal).
    x_train, _ = datasets.load_digits("train")
    kernel, bias = pca.get_weights()
    np.testing.assert_allclose(kernel.T @ kernel, np.eye(kernel.shape[1]), atol=1e-5)
    np.testing.assert_allclose((x_train @ kernel + bias).mean(axis=0), 0.0, atol=1e-4)
    # Components are named after the digits: argmax reads as a digit.
    recorded = keras_gmm.zoo.recorded_metrics("em_digits")
    assert np.mean(resp.argmax(axis=1) == y) == pytest.approx(
        recorded["digit_accuracy"], abs=1e-9
    )
    # The recorded scores beat the k-means baseline clearly, and the baselines
    # are recorded on the same split.
    meta = keras_gmm.zoo.info("em_digits")
    for key in ("clustering_accuracy", "nmi"):
        reference = meta["metrics"][key]["reference"]
        assert "KMeans" in reference["source"]
        assert recorded[key] > reference["value"] + 0.04, (key, reference)
    comparison = meta["training"]["comparison"]
    assert comparison["split"] == "test" and len(comparison["seeds"]) == 3
    methods = [key for key in comparison if key not in ("split", "seeds", "note")]
    assert len(methods) == 3  # ours, k-means, scikit-learn's GaussianMixture
    assert any("KMeans" in key for key in methods)
    assert any("GaussianMixture(" in key for key in methods)
    ours = comparison["keras_gmm.GaussianMixtureEM (this recipe)"]
    assert ours["clustering_accuracy"]["per_seed"][str(meta["training"]["seed"])] == (
        pytest.approx(recorded["clustering_accuracy"], abs=1e-12)
    )


def test_em_digits_train_tiny_writes_loadable_model(tmp_path):
    name = "em_digits"
    out = tmp_path / name
    meta = keras_gmm.zoo.train(
        name, output_dir=out, epochs=3, seed=1, n_init=1, baselines=False
    )
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "model.keras"]
    assert meta["training"]["epochs"] == 3 and meta["training"]["seed"] == 1
    assert "--epochs 3 --seed 1" in meta["train_command"]
    assert sorted(meta["training"]["component_order"]) == list(range(10))
    # The card's prose is carried over; the shipped run's comparison is not.
    card = keras_gmm.zoo.info(name)
    assert meta["training"]["selection"] == card["training"]["selection"]
    assert "comparison" not in meta["training"]
    model = keras_gmm.zoo.load(name, root=tmp_path, sha256=meta["sha256"])
    measured = keras_gmm.zoo.evaluate(name, model)
    assert all(
        row["ok"] for row in keras_gmm.zoo.check_metrics(name, measured, root=tmp_path)
    )
    # Three EM iterations already cluster far better than chance (0.1).
    assert measured["clustering_accuracy"] > 0.5
    assert measured["digit_accuracy"] <= measured["clustering_accuracy"] + 1e-12


def test_em_digits_train_rejects_bad_options(tmp_path):
    for options, match in (
        ({"epochs": 0}, "epochs"),
        ({"seed": "0"}, "seed"),
        ({"n_init": 0}, "n_init"),
    ):
        with pytest.raises(ValueError, match=match):
            keras_gmm.zoo.train("em_digits", output_dir=tmp_path, **options)
    assert not any(tmp_path.iterdir())


# The default suite runs this same check on every model through the demo of
# tests/zoo/test_wheel.py (cli._export_check: export, tf.saved_model.load,
# serving_default on example_inputs(name, 8) against the Keras model, rtol and
# atol 1e-5, on a plain wheel install): this in-process copy is opt-in.
@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_export_reproduces_keras_outputs(name, loaded, tmp_path):
    import tensorflow as tf

    model = loaded[name]
    x = keras_gmm.zoo.example_inputs(name, 8)
    path = keras_gmm.export_saved_model(model, tmp_path / "export", version=1)
    serving = tf.saved_model.load(str(path)).signatures["serving_default"]
    (input_name,) = serving.structured_input_signature[1]
    (output,) = serving(**{input_name: tf.constant(x)}).values()
    np.testing.assert_allclose(
        output.numpy(), model.predict(x, verbose=0), rtol=1e-5, atol=1e-5
    )


def test_load_refuses_tampered_file(tmp_path, monkeypatch):
    name = "mdn_inverse_sine"
    copy = _copy_zoo(tmp_path, name)
    # The untampered copy loads through both overrides.
    assert keras_gmm.zoo.verify(name, root=tmp_path) == copy / "model.keras"
    monkeypatch.setenv(keras_gmm.zoo.ZOO_DIR_ENV, str(tmp_path))
    assert keras_gmm.zoo.zoo_root() == tmp_path
    assert isinstance(keras_gmm.zoo.load(name), keras.Model)

    path = copy / "model.keras"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    for call in (
        lambda: keras_gmm.zoo.load(name),
        lambda: keras_gmm.zoo.load(name, root=tmp_path),
    ):
        with pytest.raises(keras_gmm.zoo.ChecksumMismatchError) as info:
            call()
        message = str(info.value)
        assert str(path) in message
        assert "Checksum mismatch" in message
        assert "keras-gmm zoo train mdn_inverse_sine" in message  # how to retrain
        assert "git checkout" in message or "reinstall" in message  # how to restore
    assert isinstance(info.value, ValueError)


def test_load_refuses_missing_files(tmp_path):
    name = "mdn_inverse_sine"
    copy = _copy_zoo(tmp_path, name)
    (copy / "model.keras").unlink()
    with pytest.raises(keras_gmm.zoo.ZooFileNotFoundError) as info:
        keras_gmm.zoo.load(name, root=tmp_path)
    assert str(copy / "model.keras") in str(info.value)
    assert "keras-gmm zoo train mdn_inverse_sine" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)

    (copy / "metadata.json").unlink()
    for call in (keras_gmm.zoo.info, keras_gmm.zoo.load):
        with pytest.raises(FileNotFoundError, match="metadata.json"):
            call(name, root=tmp_path)


def test_zoo_root_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv(keras_gmm.zoo.ZOO_DIR_ENV, raising=False)
    # Source checkout: the repository's saved_models/ (no keras_gmm/saved_models).
    package_copy = Path(keras_gmm.__file__).resolve().parent / "saved_models"
    expected = package_copy if package_copy.is_dir() else REPO_ROOT_ZOO
    assert keras_gmm.zoo.zoo_root() == expected
    monkeypatch.setenv(keras_gmm.zoo.ZOO_DIR_ENV, str(tmp_path / "env"))
    assert keras_gmm.zoo.zoo_root() == tmp_path / "env"
    # An explicit root wins over the environment.
    assert keras_gmm.zoo.zoo_root(tmp_path / "arg") == tmp_path / "arg"
    assert keras_gmm.zoo.model_dir("x", root=tmp_path) == tmp_path / "x"


# ---------------------------------------------------------------- training
def test_train_tiny_writes_loadable_model(tmp_path, capsys):
    name = "mdn_inverse_sine"
    out = tmp_path / name
    meta = keras_gmm.zoo.train(name, output_dir=out, epochs=1, seed=3, verbose=0)
    assert capsys.readouterr().out == ""  # verbose=0: silent
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "model.keras"]
    assert json.loads((out / "metadata.json").read_text()) == meta
    assert meta["sha256"] == _files.sha256_file(out / "model.keras")
    assert meta["training"]["epochs"] == 1 and meta["training"]["seed"] == 3
    assert "--epochs 1 --seed 3" in meta["train_command"]
    card = keras_gmm.zoo.info(name)
    for key in ("description", "architecture", "dataset", "notes"):
        assert meta[key] == card[key]
    assert meta["training"]["selection"] == card["training"]["selection"]
    spec = meta["metrics"]["nll_per_sample"]
    assert spec["reference"] == card["metrics"]["nll_per_sample"]["reference"]  # floor
    floor = spec["reference"]["value"]
    assert spec["gap_to_floor"] == pytest.approx(spec["value"] - floor)
    # A retrained model is not the pinned one: it loads with the digest given.
    with pytest.raises(keras_gmm.zoo.ChecksumMismatchError, match="sha256="):
        keras_gmm.zoo.load(name, root=tmp_path)
    model = keras_gmm.zoo.load(name, root=tmp_path, sha256=meta["sha256"])
    measured = keras_gmm.zoo.evaluate(name, model)
    assert all(
        row["ok"] for row in keras_gmm.zoo.check_metrics(name, measured, root=tmp_path)
    )
    # One epoch learns something: better than the best single Gaussian over y
    # ~ U(0, 1) ignoring x (entropy of U(0, 1) is 0 nats; a Gaussian is worse).
    assert measured["nll_per_sample"] < 0.0


def test_train_shows_progress_and_writes_a_new_folder_by_default(
        tmp_path, monkeypatch, capsys):
    name = "mdn_inverse_sine"
    shipped = keras_gmm.zoo.model_dir(name)
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).mkdir()  # taken: the default is the next free name
    assert keras_gmm.zoo.default_output_dir(name) == tmp_path / f"{name}-2"
    meta = keras_gmm.zoo.train(name, epochs=1, seed=3)
    out = capsys.readouterr().out
    written = tmp_path / f"{name}-2"
    assert sorted(p.name for p in written.iterdir()) == ["metadata.json", "model.keras"]
    assert meta["sha256"] == _files.sha256_file(written / "model.keras")
    assert not any((tmp_path / name).iterdir())
    # The shipped files are untouched.
    assert keras_gmm.zoo.verify(name) == shipped / "model.keras"
    # Progress by default: where it writes, the phase, Keras' epochs, the result.
    lines = out.splitlines()
    assert f"{name}: writing into {written} (a new folder)" in lines
    assert any(line.startswith(f"{name}: training the MDN: 1 epoch of")
               for line in lines)
    assert re.search(r"step - loss: -?\d", out)  # Keras' progress bar
    assert re.search(rf"^{name}: trained in \d+ s: test NLL -?\d", out, re.MULTILINE)


def test_default_output_dir_is_a_new_folder(tmp_path):
    assert keras_gmm.zoo.default_output_dir("em_digits", tmp_path) == (
        tmp_path / "em_digits")
    (tmp_path / "em_digits").mkdir()
    (tmp_path / "em_digits-2").write_text("")  # a file takes the name too
    assert keras_gmm.zoo.default_output_dir("em_digits", tmp_path) == (
        tmp_path / "em_digits-3")


def test_train_rejects_bad_options(tmp_path):
    for verbose in (3, "auto", True):
        with pytest.raises(ValueError, match="`verbose` must be one of"):
            keras_gmm.zoo.train("mdn_inverse_sine", output_dir=tmp_path,
                                verbose=verbose)
    with pytest.raises(ValueError, match="epochs"):
        keras_gmm.zoo.train("mdn_inverse_sine", output_dir=tmp_path, epochs=0)
    with pytest.raises(ValueError, match="seed"):
        keras_gmm.zoo.train("mdn_inverse_sine", output_dir=tmp_path, seed="0")
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_retraining_reproduces_recorded_metrics(name, tmp_path):
    """The full recipe (minutes) gives the recorded metrics within a few 1e-3."""
    recorded = keras_gmm.zoo.info(name)
    meta = keras_gmm.zoo.train(
        name,
        output_dir=tmp_path / name,
        epochs=recorded["training"]["epochs"],
        seed=recorded["training"]["seed"],
    )
    for key, spec in recorded["metrics"].items():
        assert meta["metrics"][key]["value"] == pytest.approx(spec["value"], abs=0.02)
