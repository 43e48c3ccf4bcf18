"""Checks that several zoo recipes' tests share (one copy)."""

import keras
import pytest

import keras_gmm.zoo


def load_and_check_retrained(name, root, meta):
    """Load the model ``zoo.train`` wrote under ``root`` (its own sha256),
    re-measure it and assert that every metric it recorded reproduces.
    Returns ``(model, measured)``."""
    loaded = keras_gmm.zoo.load(name, root=root, sha256=meta["sha256"])
    assert isinstance(loaded, keras.Model)
    measured = keras_gmm.zoo.evaluate(name, loaded)
    rows = keras_gmm.zoo.check_metrics(name, measured, root=root)
    assert rows and all(row["ok"] for row in rows), rows
    return loaded, measured


def assert_train_rejects(name, tmp_path, cases):
    """``zoo.train(name, **options)`` raises a ValueError matching ``match``
    for each ``(options, match)`` of ``cases``, before writing anything."""
    for options, match in cases:
        with pytest.raises(ValueError, match=match):
            keras_gmm.zoo.train(name, output_dir=tmp_path, **options)
    assert not any(tmp_path.iterdir())
