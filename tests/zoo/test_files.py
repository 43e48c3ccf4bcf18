"""keras_gmm.zoo._files: a zoo model's files are read from its own folder only,
checked against the pinned sha256, and every bad file is a clear error naming
the file and how to restore it (on temporary copies of a model folder)."""

import json
import os
import shutil

import pytest

import keras_gmm.zoo
from keras_gmm.zoo import _files

NAME = "mdn_inverse_sine"
RESTORE = "git checkout -- saved_models/mdn_inverse_sine"


@pytest.fixture
def copy(tmp_path):
    """A copy of the model's folder under ``tmp_path/NAME`` (the zoo root is
    ``tmp_path``)."""
    target = tmp_path / NAME
    shutil.copytree(keras_gmm.zoo.model_dir(NAME), target)
    return target


def _edit_metadata(folder, **changes):
    path = folder / "metadata.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))
    return meta


def _tamper(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # still a zip archive, other bytes
    path.write_bytes(bytes(data))
    return _files.sha256_file(path)


def test_the_copy_verifies(copy):
    assert keras_gmm.zoo.verify(NAME, root=copy.parent) == copy / "model.keras"


@pytest.mark.parametrize("where", ["parent", "absolute", "link"])
def test_model_file_outside_the_folder_is_refused(copy, where):
    # A file outside the folder, with the right bytes and hash, still is not read.
    outside = copy.parent / "elsewhere.keras"
    shutil.copyfile(copy / "model.keras", outside)
    if where == "parent":
        _edit_metadata(copy, model_file="../elsewhere.keras")
    elif where == "absolute":
        _edit_metadata(copy, model_file=str(outside))
    else:
        (copy / "model.keras").unlink()
        os.symlink(outside, copy / "model.keras")
    with pytest.raises(keras_gmm.zoo.ZooMetadataError,
                       match="is not a file inside") as info:
        keras_gmm.zoo.load(NAME, root=copy.parent)
    assert str(copy) in str(info.value) and RESTORE in str(info.value)


def test_modified_file_with_rehashed_metadata_is_refused(copy):
    digest = _tamper(copy / "model.keras")
    _edit_metadata(copy, sha256=digest)  # the metadata agrees with the new bytes
    with pytest.raises(keras_gmm.zoo.ChecksumMismatchError) as info:
        keras_gmm.zoo.load(NAME, root=copy.parent)
    message = str(info.value)
    assert str(copy / "model.keras") in message and digest in message
    assert keras_gmm.zoo._registry.pinned_sha256(NAME) in message
    assert "pinned" in message and RESTORE in message
    # A caller that trusts these bytes says so with their digest.
    assert keras_gmm.zoo.verify(NAME, root=copy.parent, sha256=digest) == (
        copy / "model.keras")


def test_metadata_hash_must_be_the_pinned_one(copy):
    _edit_metadata(copy, sha256="0" * 64)  # the file itself is the shipped one
    with pytest.raises(keras_gmm.zoo.ChecksumMismatchError,
                       match="metadata.json records sha256 0{64}"):
        keras_gmm.zoo.verify(NAME, root=copy.parent)


def test_invalid_json_names_the_file(copy):
    (copy / "metadata.json").write_text('{"name": "mdn_inverse_sine",')
    for call in (keras_gmm.zoo.info, keras_gmm.zoo.load):
        with pytest.raises(keras_gmm.zoo.ZooMetadataError,
                           match="is not valid JSON") as info:
            call(NAME, root=copy.parent)
        assert str(copy / "metadata.json") in str(info.value)
        assert RESTORE in str(info.value) and "reinstall" in str(info.value)
    (copy / "metadata.json").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(keras_gmm.zoo.ZooMetadataError, match="not valid JSON"):
        keras_gmm.zoo.info(NAME, root=copy.parent)


@pytest.mark.parametrize("content", ["[1, 2]", '{"name": "mdn_inverse_sine"}'])
def test_missing_keys_are_listed(copy, content):
    (copy / "metadata.json").write_text(content)
    with pytest.raises(keras_gmm.zoo.ZooMetadataError, match="incomplete") as info:
        keras_gmm.zoo.info(NAME, root=copy.parent)
    for key in ("description", "metrics", "model_file", "sha256"):
        assert key in str(info.value)
    assert str(copy / "metadata.json") in str(info.value)


def test_metadata_of_another_model_is_refused(copy):
    _edit_metadata(copy, name="em_digits")
    with pytest.raises(keras_gmm.zoo.ZooMetadataError, match="describes zoo model"):
        keras_gmm.zoo.info(NAME, root=copy.parent)


def test_non_zip_model_file_is_refused(copy):
    (copy / "model.keras").write_bytes(b"not a zip archive\n" * 10)
    with pytest.raises(keras_gmm.zoo.InvalidModelFileError,
                       match="not a Keras 3 file") as info:
        keras_gmm.zoo.load(NAME, root=copy.parent)
    assert str(copy / "model.keras") in str(info.value) and RESTORE in str(info.value)
    assert isinstance(info.value, ValueError)


def test_missing_files_are_named(copy):
    (copy / "model.keras").unlink()
    with pytest.raises(keras_gmm.zoo.ZooFileNotFoundError, match="are missing") as info:
        keras_gmm.zoo.verify(NAME, root=copy.parent)
    assert str(copy / "model.keras") in str(info.value) and RESTORE in str(info.value)
    shutil.rmtree(copy)
    with pytest.raises(keras_gmm.zoo.ZooFileNotFoundError, match="metadata.json"):
        keras_gmm.zoo.info(NAME, root=copy.parent)


def test_errors_are_zoo_errors():
    for cls in (keras_gmm.zoo.ZooMetadataError, keras_gmm.zoo.ChecksumMismatchError,
                keras_gmm.zoo.InvalidModelFileError, keras_gmm.zoo.ZooFileNotFoundError,
                keras_gmm.zoo.UnknownModelError):
        assert issubclass(cls, keras_gmm.zoo.ZooError)  # the CLI reports these
