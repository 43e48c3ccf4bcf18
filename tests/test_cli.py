"""The keras-gmm command: zoo list/info/evaluate/train, export, demo, errors,
start-up without TensorFlow."""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import keras_gmm.zoo
from keras_gmm import cli
from keras_gmm.cli import main

NAMES = keras_gmm.zoo.list_models()
NAME = "mdn_inverse_sine"
REPO_ROOT = Path(__file__).resolve().parents[1]
# The console script pip installs next to the interpreter ([project.scripts]).
SCRIPT = Path(sys.executable).with_name("keras-gmm")


def _zoo_copy(tmp_path, monkeypatch):
    """Point the zoo at a copy of its files (KERAS_GMM_ZOO_DIR) and return it."""
    root = tmp_path / "zoo"
    for name in NAMES:
        shutil.copytree(keras_gmm.zoo.model_dir(name), root / name)
    monkeypatch.setenv(keras_gmm.zoo.ZOO_DIR_ENV, str(root))
    return root


def _forbid_long_work(monkeypatch):
    """Make loading, training, exporting and importing TensorFlow fail the
    test: a usage error must be found before any of them."""

    def forbidden(*args, **kwargs):
        raise AssertionError("long work started before the usage error was found")

    monkeypatch.setattr(cli, "_load_tensorflow", forbidden)
    for attr in ("load", "train", "evaluate"):
        monkeypatch.setattr(keras_gmm.zoo, attr, forbidden)
    monkeypatch.setattr(keras_gmm, "export_saved_model", forbidden)


def _assert_one_line_usage_error(captured, *fragments):
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("keras-gmm"), lines[0]
    assert "error:" in lines[0] and "Traceback" not in captured.err
    assert "usage:" not in captured.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert captured.out == ""


# -------------------------------------------------------------------- help
def test_help(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo", "zoo", "export"):
        assert command in out
    assert "TF_CPP_MIN_LOG_LEVEL" in out  # how to see TensorFlow's start-up log


def _all_parsers(parser):
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def test_every_subcommand_and_argument_has_help():
    parsers = list(_all_parsers(cli._parser()))
    progs = {parser.prog for parser in parsers}
    assert {"keras-gmm zoo list", "keras-gmm zoo train", "keras-gmm export"} <= progs
    for parser in parsers:
        assert parser.description or parser.prog == "keras-gmm", parser.prog
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {choice.dest for choice in action._choices_actions
                          if choice.help}
                assert helped == set(action.choices), (parser.prog, helped)
            else:
                assert action.help, (parser.prog, action.dest)


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"keras-gmm {keras_gmm.__version__}"


# --------------------------------------------------------------- zoo list
def test_zoo_list_one_short_line_per_model(capsys):
    assert main(["zoo", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == NAMES
    for line, name in zip(lines, NAMES):
        assert len(line) < 100, line
        headline, spec = next(iter(keras_gmm.zoo.info(name)["metrics"].items()))
        assert f"{headline}={spec['value']:.4g}" in line
        assert len(line.split()) > 2  # a task after the metric


def test_zoo_list_task_prefers_metadata_task():
    assert cli._task({"task": "clustering", "description": "Long: x"}) == "clustering"
    assert cli._task({"description": "Deep clustering of digits: a VAE"}) == (
        "Deep clustering of digits"
    )
    assert cli._shorten("one two three four", 12) == "one two..."
    assert len(cli._shorten("word " * 40, 30)) <= 30


# --------------------------------------------------------------- zoo info
def test_zoo_info(capsys):
    assert main(["zoo", "info", NAME]) == 0
    out = capsys.readouterr().out
    meta = keras_gmm.zoo.info(NAME)
    assert meta["sha256"] in out
    assert meta["train_command"] in out
    assert "nll_per_sample" in out and "floor" in out

    assert main(["zoo", "info", NAME, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == meta


# ----------------------------------------------------------- zoo evaluate
def test_zoo_evaluate(capsys):
    assert main(["zoo", "evaluate", NAME]) == 0
    out = capsys.readouterr().out
    recorded = keras_gmm.zoo.recorded_metrics(NAME)["nll_per_sample"]
    row = next(line for line in out.splitlines() if line.startswith(NAME))
    assert "nll_per_sample" in row and row.rstrip().endswith("ok")
    assert f"{recorded:.5f}" in row
    assert cli.TABLE_LEGEND in out  # the columns are explained under the table


# ------------------------------------------------------------ user errors
@pytest.mark.parametrize(
    "argv",
    [
        ["zoo", "info", "nope"],
        ["zoo", "evaluate", "nope"],
        ["zoo", "train", "nope", "--epochs", "1"],
        ["export", "nope", "unused_dir"],
    ],
    ids=["info", "evaluate", "train", "export"],
)
def test_unknown_name_exits_2_listing_known_models(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _forbid_long_work(monkeypatch)
    assert main(argv) == 2
    captured = capsys.readouterr()
    _assert_one_line_usage_error(captured, "'nope'", *NAMES)
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["zoo", "train", NAME, "--epochs", "0"], ["--epochs", "integer >= 1", "0"]),
        (["zoo", "train", NAME, "--epochs", "1.5"], ["--epochs", "integer", "'1.5'"]),
        (["zoo", "train", NAME, "--epochs", "ten"], ["--epochs", "'ten'"]),
        (["zoo", "train", NAME, "--seed", "-1"], ["--seed", "-1"]),
        (["zoo", "train", NAME, "--seed", str(2**63)], ["--seed", str(2**63)]),
        (["demo", "--rows", "0"], ["--rows", "integer >= 1"]),
        (["export", NAME, "unused_dir", "--version", "0"], ["--version", ">= 1"]),
        (["export", NAME, "unused_dir", "--version", "x"], ["--version", "'x'"]),
        (["export", NAME], ["DIR"]),
        (["zoo", "info"], ["NAME"]),
        (["zoo"], ["ZOO_COMMAND"]),
        ([], ["COMMAND"]),
        (["frobnicate"], ["frobnicate"]),
        (["zoo", "list", "--bogus"], ["--bogus"]),
    ],
)
def test_bad_arguments_exit_2_with_one_line(argv, fragments, capsys, tmp_path,
                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    _forbid_long_work(monkeypatch)
    assert main(argv) == 2
    _assert_one_line_usage_error(capsys.readouterr(), *fragments)
    assert not any(tmp_path.iterdir())


def _unwritable_dirs(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    cases = {"file": a_file, "under_a_file": a_file / "sub" / "dir"}
    if Path("/proc/self").is_dir():  # Linux: a folder nobody can create
        cases["proc"] = Path("/proc/keras_gmm_x")
    return cases


@pytest.mark.parametrize("case", ["file", "under_a_file", "proc"])
@pytest.mark.parametrize("command", ["train", "export"])
def test_unwritable_output_folder_found_before_any_work(
    command, case, capsys, tmp_path, monkeypatch
):
    cases = _unwritable_dirs(tmp_path)
    if case not in cases:
        pytest.skip("no /proc here")
    target = cases[case]
    _forbid_long_work(monkeypatch)
    if command == "train":
        argv = ["zoo", "train", NAME, "--output-dir", str(target)]
    else:
        argv = ["export", NAME, str(target)]
    assert main(argv) == 2
    _assert_one_line_usage_error(capsys.readouterr(), str(target))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_writable_check_leaves_no_trace(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    assert cli._check_writable_dir(target, "--output-dir") == target
    assert not (tmp_path / "a").exists()
    (tmp_path / "kept").mkdir()
    cli._check_writable_dir(tmp_path / "kept", "DIR")
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())


def test_tampered_file_exits_2_with_message(tmp_path, monkeypatch, capsys):
    root = _zoo_copy(tmp_path, monkeypatch)
    path = root / NAME / "model.keras"
    path.write_bytes(path.read_bytes()[:-10])
    _forbid_long_work(monkeypatch)  # found before TensorFlow is imported
    assert main(["zoo", "evaluate", NAME]) == 2
    captured = capsys.readouterr()
    _assert_one_line_usage_error(captured, str(path))


def test_damaged_metadata_is_one_line(tmp_path, monkeypatch, capsys):
    root = _zoo_copy(tmp_path, monkeypatch)
    path = root / NAME / "metadata.json"
    path.write_text("{not json")
    _forbid_long_work(monkeypatch)
    for argv in (["zoo", "info", NAME], ["zoo", "train", NAME],
                 ["zoo", "evaluate", NAME]):
        assert main(argv) == 2, argv
        _assert_one_line_usage_error(capsys.readouterr(), str(path))
    assert main(["zoo", "list"]) == 0  # the other models are still listed
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(NAMES)
    assert "damaged" in next(line for line in lines if line.startswith(NAME))


def test_interrupt_is_one_line(monkeypatch, capsys):
    def interrupted(args, out):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli._COMMANDS, ("zoo", "list"), interrupted)
    assert main(["zoo", "list"]) == 130
    assert capsys.readouterr().err == "keras-gmm: interrupted\n"


def test_missing_module_is_one_line(monkeypatch, capsys):
    def needs_sklearn(args, out):
        raise ModuleNotFoundError("No module named 'sklearn'", name="sklearn")

    monkeypatch.setitem(cli._COMMANDS, ("zoo", "list"), needs_sklearn)
    assert main(["zoo", "list"]) == 2
    _assert_one_line_usage_error(capsys.readouterr(), "sklearn", "scikit-learn")


# ----------------------------------------------------------------- export
def test_export_writes_version_dir(tmp_path, capsys):
    export_dir = tmp_path / "export"
    assert main(["export", NAME, str(export_dir), "--version", "3"]) == 0
    assert (export_dir / "3" / "saved_model.pb").is_file()
    assert str(export_dir / "3") in capsys.readouterr().out
    serving = tf.saved_model.load(str(export_dir / "3")).signatures["serving_default"]
    x = keras_gmm.zoo.example_inputs(NAME, 4)
    (output,) = serving(
        **{next(iter(serving.structured_input_signature[1])): tf.constant(x)}
    ).values()
    expected = keras_gmm.zoo.load(NAME).predict(x, verbose=0)
    np.testing.assert_allclose(output.numpy(), expected, rtol=1e-5, atol=1e-5)

    # An existing version is not replaced silently, and that is found first.
    assert main(["export", NAME, str(export_dir), "--version", "3"]) == 2
    _assert_one_line_usage_error(capsys.readouterr(), "already exists", "--overwrite")
    assert main(["export", NAME, str(export_dir), "--version", "3", "--overwrite"]) == 0


# ------------------------------------------------------------------- demo
# The default suite checks the same demo output, every model and the time, on
# a plain wheel install (tests/zoo/test_wheel.py): this in-process copy of it
# (30 s) is opt-in.
@pytest.mark.slow
def test_demo_passes(capsys):
    start = time.perf_counter()
    assert main(["demo"]) == 0
    seconds = time.perf_counter() - start
    out = capsys.readouterr().out
    for name in NAMES:
        assert f"{name}: export check ok" in out
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert row.rstrip().endswith("ok")
    assert "FAILED" not in out
    assert cli.TABLE_LEGEND in out
    assert seconds < 60, seconds


def test_demo_fails_when_a_metric_does_not_reproduce(tmp_path, monkeypatch, capsys):
    root = _zoo_copy(tmp_path, monkeypatch)
    meta_path = root / NAME / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["metrics"]["nll_per_sample"]["value"] -= 0.1  # a claim the file can't meet
    meta_path.write_text(json.dumps(meta))
    # The failing path needs one model (test_demo_passes checks them all).
    monkeypatch.setattr(keras_gmm.zoo, "list_models", lambda: [NAME])
    assert main(["demo"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and f"{NAME}: nll_per_sample not reproduced" in out


# ------------------------------------------------------------------ train
def _fake_train(calls):
    def train(name, output_dir, **options):
        calls.append({"name": name, "output_dir": Path(output_dir), **options})
        return {"metrics": {}, "sha256": "0" * 64}

    return train


def test_train_defaults_to_a_new_folder_here_with_progress(tmp_path, monkeypatch,
                                                           capsys):
    calls = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(keras_gmm.zoo, "train", _fake_train(calls))
    assert main(["zoo", "train", NAME]) == 0
    assert main(["zoo", "train", NAME, "--quiet"]) == 0
    first, second = calls
    assert first["output_dir"] == tmp_path / NAME
    assert first["verbose"] > 0 and second["verbose"] == 0  # progress by default
    assert "epochs" not in first and "seed" not in first  # the recipe's defaults
    # Never an existing folder (so never the shipped files) by default.
    (tmp_path / NAME).mkdir()
    (tmp_path / f"{NAME}-2").mkdir()
    calls.clear()
    assert main(["zoo", "train", NAME, "--quiet"]) == 0
    assert calls[0]["output_dir"] == tmp_path / f"{NAME}-3"
    shipped = keras_gmm.zoo.model_dir(NAME)
    assert keras_gmm.zoo.default_output_dir(NAME, cwd=shipped.parent) != shipped
    assert f"into {tmp_path / NAME}-3" in capsys.readouterr().out


def test_train_tiny(tmp_path, capsys):
    out_dir = tmp_path / NAME
    argv = [
        "zoo",
        "train",
        NAME,
        "--output-dir",
        str(out_dir),
        "--epochs",
        "1",
        "--seed",
        "5",
        "--quiet",
    ]
    assert main(argv) == 0
    meta = json.loads((out_dir / "metadata.json").read_text())
    assert meta["training"]["epochs"] == 1 and meta["training"]["seed"] == 5
    assert meta["sha256"] in capsys.readouterr().out
    assert keras_gmm.zoo.verify(NAME, root=tmp_path, sha256=meta["sha256"]) == (
        out_dir / "model.keras"
    )


# ------------------------------------------- TensorFlow's start-up lines
STARTUP_LOG = """\
WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
I0000 00:00:1796156063.985085    4520 port.cc:153] oneDNN custom operations are on.
I0000 00:00:1796156063.985461    4520 cudart_stub.cc:31] Could not find cuda drivers
I0000 00:00:1796156064.034851    4520 cpu_feature_guard.cc:227] This TensorFlow binary
To enable the following instructions: AVX2 AVX512F FMA, in other operations, rebuild
2025-09-17 14:44:05.157831: I external/local_xla/xla/tsl/cuda/cudart_stub.cc:32] Could
W0000 00:00:1758131045.228 3722035 computation_placer.cc:177] a start-up warning
E0000 00:00:1758131045.203198 3722035 cuda_dnn.cc:8579] Unable to register cuDNN factory
E0000 00:00:1796156260.542003    9798 cuda_platform.cc:52] failed call to cuInit
E0000 00:00:1796156260.542003    9798 some_op.cc:52] a real error
/x/y.py:3: UserWarning: a Python warning
"""


def test_tensorflow_startup_filter_keeps_errors_and_flags_the_gpu_probe():
    kept, gpu_probe_failed = cli._filter_tensorflow_startup(STARTUP_LOG)
    assert kept == [
        "E0000 00:00:1796156260.542003    9798 some_op.cc:52] a real error",
        "/x/y.py:3: UserWarning: a Python warning",
    ]
    assert gpu_probe_failed
    assert cli._filter_tensorflow_startup("") == ([], False)


def test_tensorflow_startup_filter_applies_the_users_level():
    everything = STARTUP_LOG.splitlines()
    assert cli._filter_tensorflow_startup(STARTUP_LOG, level=0) == (everything, False)
    kept, gpu_probe_failed = cli._filter_tensorflow_startup(STARTUP_LOG, level=1)
    assert [line[:1] for line in kept] == ["W", "E", "/"]  # INFO hidden
    assert not any("InitializeLog" in line or "cuInit" in line for line in kept)
    assert gpu_probe_failed
    kept, gpu_probe_failed = cli._filter_tensorflow_startup(STARTUP_LOG, level=3)
    assert kept == ["/x/y.py:3: UserWarning: a Python warning"]
    assert not gpu_probe_failed  # level 3: no errors, not even as a note


def test_tensorflow_startup_filtered_at_the_file_descriptor(capfd):
    with cli._tensorflow_startup_filtered():
        os.write(2, STARTUP_LOG.encode())  # as TensorFlow's C++ code writes
    err = capfd.readouterr().err.splitlines()
    assert err == [
        "E0000 00:00:1796156260.542003    9798 some_op.cc:52] a real error",
        "/x/y.py:3: UserWarning: a Python warning",
        cli.GPU_PROBE_NOTE,
    ]


# ------------------------------------- start-up: subprocesses, as a user runs it
def _command(how):
    if how == "script":
        if not SCRIPT.is_file():
            pytest.skip(f"no installed console script at {SCRIPT}")
        return [sys.executable, "-X", "importtime", str(SCRIPT)]
    return [sys.executable, "-X", "importtime", "-m", "keras_gmm.cli"]


def _imported_modules(stderr):
    """The module names ``python -X importtime`` reports, and the other lines."""
    modules, other = set(), []
    for line in stderr.splitlines():
        if line.startswith("import time:"):
            modules.add(line.rsplit("|", 1)[-1].strip())
        else:
            other.append(line)
    return modules, other


@pytest.mark.parametrize("how", ["script", "module"])
@pytest.mark.parametrize(
    "args",
    [["--help"], ["zoo", "list"], ["zoo", "info", NAME], ["zoo", "info", "nope"]],
    ids=["help", "zoo-list", "zoo-info", "zoo-info-unknown"],
)
def test_light_commands_never_import_tensorflow(how, args, tmp_path):
    env = dict(os.environ)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = subprocess.run(
        _command(how) + args, capture_output=True, text=True, timeout=120,
        env=env, cwd=tmp_path, check=False,
    )
    modules, other = _imported_modules(result.stderr)
    assert "keras_gmm.cli" in modules or "keras_gmm" in modules
    heavy = sorted(m for m in modules if m.split(".")[0] in ("tensorflow", "keras"))
    assert heavy == [], heavy
    if args[-1] == "nope":
        assert result.returncode == 2
        assert len(other) == 1 and "unknown zoo model 'nope'" in other[0].lower()
    else:
        assert result.returncode == 0, result.stderr[-2000:]
        assert other == [], other  # nothing of TensorFlow's, nothing at all
        assert result.stdout


def test_tensorflow_commands_print_nothing_of_tensorflow(tmp_path):
    """``zoo evaluate`` imports TensorFlow; its start-up lines are hidden
    (the user has not set TF_CPP_MIN_LOG_LEVEL)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    command = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m",
                                                      "keras_gmm.cli"]
    result = subprocess.run(
        command + ["zoo", "evaluate", NAME], capture_output=True, text=True,
        timeout=300, env=env, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert set(result.stderr.splitlines()) <= {cli.GPU_PROBE_NOTE}, result.stderr
    assert any(line.startswith(NAME) for line in result.stdout.splitlines())


def test_module_entry_point_reports_errors_without_traceback():
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-m", "keras_gmm.cli", "zoo", "info", "nope"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 2
    assert "unknown zoo model 'nope'" in result.stderr.lower()
    assert "Traceback" not in result.stderr
