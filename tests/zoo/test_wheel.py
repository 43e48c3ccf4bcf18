"""A built wheel ships the zoo's files inside the package and loads every model.

The wheel is built from the repository with the project's own build backend
(hatchling, in the ``test`` extra), installed with ``pip install --target`` into
a temporary folder, and exercised in a subprocess whose ``sys.path`` holds that
folder but not the repository (cwd is a temporary folder too), so the zoo can
only be found through the installed package.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import keras_gmm.zoo
from keras_gmm.zoo import _files

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 300

CHECK_INSTALLED = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path

    site = Path(sys.argv[1]).resolve()
    repo = Path(sys.argv[2]).resolve()
    # An editable install of the checkout (pip install -e) puts the repository
    # on sys.path through a .pth file; drop it, as on a machine with only the
    # wheel installed.
    sys.path[:] = [p for p in sys.path if not p or Path(p).resolve() != repo]
    assert not any(
        p and Path(p).resolve() == repo for p in sys.path
    ), ("repository on sys.path", sys.path)

    import keras_gmm
    import keras_gmm.zoo as zoo

    package = Path(keras_gmm.__file__).resolve()
    assert package.is_relative_to(site), (package, site)
    root = zoo.zoo_root().resolve()
    assert root == site / "keras_gmm" / "saved_models", root
    report = {"package": str(package), "root": str(root), "models": {}}
    for name in zoo.list_models():
        folder = zoo.model_dir(name).resolve()
        assert folder.is_relative_to(site), folder
        model = zoo.load(name)  # verifies the sha256 of the installed file
        rows = zoo.check_metrics(name, zoo.evaluate(name, model))
        report["models"][name] = {
            "folder": str(folder),
            "files": sorted(p.name for p in folder.iterdir()),
            "rows": rows,
        }
    print("REPORT " + json.dumps(report))
    """
)


def _run(args, **kwargs):
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=TIMEOUT_S, **kwargs
    )
    assert result.returncode == 0, (
        f"{args} exited with {result.returncode}\n"
        f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    )
    return result.stdout


def test_wheel_ships_and_loads_the_zoo(tmp_path):
    assert importlib.util.find_spec("hatchling") is not None, (
        "building the wheel needs hatchling in this environment: "
        "pip install -e '.[test]' (or pip install hatchling)"
    )
    dist, site, work = tmp_path / "dist", tmp_path / "site", tmp_path / "work"
    work.mkdir()
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(dist),
            str(REPO_ROOT),
        ],
        cwd=work,
    )
    wheels = list(dist.glob("keras_gmm-*.whl"))
    assert len(wheels) == 1, wheels

    # The wheel itself holds each zoo model's files under keras_gmm/saved_models,
    # byte for byte the repository's, and the console script.
    with zipfile.ZipFile(wheels[0]) as wheel:
        members = set(wheel.namelist())
        for name in keras_gmm.zoo.list_models():
            for filename in ("model.keras", "metadata.json"):
                member = f"keras_gmm/saved_models/{name}/{filename}"
                assert member in members, (member, sorted(members))
                source = keras_gmm.zoo.model_dir(name) / filename
                assert wheel.read(member) == source.read_bytes(), member
        assert not any(m.startswith("saved_models/") for m in members)
        entry_points = next(
            m for m in members if m.endswith(".dist-info/entry_points.txt")
        )
        assert "keras-gmm = keras_gmm.cli:main" in wheel.read(entry_points).decode()

    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--quiet",
            "--target",
            str(site),
            str(wheels[0]),
        ],
        cwd=work,
    )

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", _files.ZOO_DIR_ENV)
    }
    env["PYTHONPATH"] = str(site)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    out = _run(
        [sys.executable, "-c", CHECK_INSTALLED, str(site), str(REPO_ROOT)],
        cwd=work,
        env=env,
    )
    report = json.loads(out.split("REPORT ", 1)[1])
    assert set(report["models"]) == set(keras_gmm.zoo.list_models())
    for name, model in report["models"].items():
        assert model["files"] == ["metadata.json", "model.keras"]
        for row in model["rows"]:
            assert row["ok"], (name, row)
