"""The Keras layer checks every keras_gmm layer must pass (see DESIGN.md).

Each public layer's test module calls :func:`check_layer` with a factory for the
layer and a small model around it:

- ``get_config``/``from_config`` and ``keras.layers.serialize`` round trips;
- symbolic (functional model) and eager calls agree;
- ``.keras`` save/load with no ``custom_objects`` and ``safe_mode=True`` gives
  the same outputs;
- one ``fit`` step with ``jit_compile=True`` changes the weights, finitely;
- a ``mixed_float16`` fit step is finite, keeps float32 variables, and (when
  ``float32_outputs``) returns float32;
- a SavedModel export reloads in a process without keras_gmm/TFP and gives the
  same outputs (``tests/export_utils.py``).
"""

import keras
import numpy as np


def check_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is type(layer)
    assert restored.get_config() == config


def check_symbolic_and_eager(model, layer, x):
    """The functional model's output equals calling the model eagerly."""
    symbolic = model.predict(x, verbose=0)
    eager = model(x, training=False)
    eager = eager if isinstance(eager, dict) else {"out": eager}
    symbolic = symbolic if isinstance(symbolic, dict) else {"out": symbolic}
    for key in eager:
        np.testing.assert_allclose(
            np.asarray(eager[key]), np.asarray(symbolic[key]), rtol=1e-5, atol=1e-6
        )


def check_keras_file_round_trip(model, x, tmp_path):
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)  # no custom_objects
    np.testing.assert_allclose(
        np.asarray(loaded.predict(x, verbose=0)),
        np.asarray(model.predict(x, verbose=0)),
        rtol=1e-6,
        atol=1e-6,
    )
    return loaded


def check_jit_fit_step(make_model, x, y, make_loss):
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss=make_loss(model),
                  jit_compile=True)
    before = [np.array(w) for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=len(x), epochs=2, verbose=0)
    assert all(np.isfinite(history.history["loss"]))
    after = [np.array(w) for w in model.trainable_weights]
    assert any(not np.allclose(b, a) for b, a in zip(before, after))
    return model


def check_mixed_precision(make_model, x, y, make_loss, float32_outputs=True):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = make_model()
        model.compile(optimizer="adam", loss=make_loss(model))
        history = model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        assert all(w.dtype == "float32" for w in model.weights if w.trainable)
        out = model(x)
        if float32_outputs:
            assert out.dtype == "float32", out.dtype
        assert np.all(np.isfinite(np.asarray(out)))
    finally:
        keras.mixed_precision.set_global_policy("float32")


def check_export_reload(model, x, tmp_path):
    """Exported SavedModel, loaded without keras_gmm/TFP, gives the same outputs."""
    import keras_gmm
    from tests.export_utils import tf_only_outputs

    path = keras_gmm.export_saved_model(model, tmp_path / "export", version=1)
    (input_name,) = keras_gmm.export.signature_input_names(model)
    outputs = tf_only_outputs(path, "serving_default", {input_name: np.asarray(x)})
    (served,) = outputs.values()
    np.testing.assert_allclose(
        served, np.asarray(model.predict(x, verbose=0)), rtol=1e-5, atol=1e-6
    )


def check_layer(make_model, layer_of, x, y, make_loss, tmp_path,
                float32_outputs=True, export_check=check_export_reload):
    """Run all the checks.

    Args:
        make_model: ``() -> keras.Model`` with the layer under test.
        layer_of: ``model -> layer`` under test.
        x, y: a small batch of inputs and targets.
        make_loss: ``model -> loss`` to compile with.
        export_check: ``(model, x, tmp_path) -> None`` export check (default:
            :func:`check_export_reload`); None skips it where another test
            already exports the same configuration.
    """
    model = make_model()
    layer = layer_of(model)
    check_config_round_trip(layer)
    check_symbolic_and_eager(model, layer, x)
    check_keras_file_round_trip(model, x, tmp_path)
    check_jit_fit_step(make_model, x, y, make_loss)
    check_mixed_precision(make_model, x, y, make_loss, float32_outputs)
    if export_check is not None:
        export_check(model, x, tmp_path)
