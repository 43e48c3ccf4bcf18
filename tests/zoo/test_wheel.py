"""A plain wheel install (no extras) ships the zoo and its data, and runs the CLI.

The wheel is built from the repository with the project's own build backend
(hatchling, in the ``test`` extra) and installed with ``pip install --no-deps
--target`` into a temporary folder. It is then exercised in subprocesses that
see only what a fresh ``pip install keras-gmm`` would give them:

- ``sys.path`` holds the install folder but not the repository (which the
  editable install of the checkout would add), and cwd is a temporary folder,
  so the package, the zoo's files and the data can only come from the wheel;
- every module of this environment that keras-gmm's declared dependencies do
  not bring (their closure, read from the wheel's ``Requires-Dist`` and the
  installed metadata) is hidden: scikit-learn, mlxtend, matplotlib, pandas,
  pytest, ... cannot be imported, exactly as if they were not installed (a
  ``sitecustomize`` puts a path hook in front of site-packages that does not
  find them; ``importlib.util.find_spec`` returns None for them).

There ``keras-gmm zoo evaluate NAME`` for every zoo model and ``keras-gmm
demo`` run (through ``keras_gmm.cli.main``, in one process, so TensorFlow
starts once) and must exit 0, the demo printing every model's metrics
(each ok) and export check; the installed ``keras-gmm`` console script
answers ``--help`` and ``zoo list``. About 1.5-2 minutes on 2 cores.
(This is the default suite's demo test: tests/test_cli.py's in-process
``test_demo_passes`` runs with ``-m slow``.)
"""

import email.parser
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import keras_gmm.zoo
from keras_gmm import cli, datasets
from keras_gmm.zoo import _files

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 600

# Installed first on PYTHONPATH as sitecustomize.py: hides the modules named in
# KERAS_GMM_TEST_HIDDEN_MODULES from the site-packages folders and drops the
# repository (KERAS_GMM_TEST_REPO) from sys.path.
SITECUSTOMIZE = textwrap.dedent(
    """
    import importlib.machinery as _machinery
    import json as _json
    import os as _os
    import site as _site
    import sys as _sys
    from pathlib import Path as _Path

    HIDDEN = frozenset(_json.loads(_os.environ["KERAS_GMM_TEST_HIDDEN_MODULES"]))
    _REPO = _Path(_os.environ["KERAS_GMM_TEST_REPO"]).resolve()
    _LOADERS = [
        (_machinery.ExtensionFileLoader, _machinery.EXTENSION_SUFFIXES),
        (_machinery.SourceFileLoader, _machinery.SOURCE_SUFFIXES),
        (_machinery.SourcelessFileLoader, _machinery.BYTECODE_SUFFIXES),
    ]
    _SITE_DIRS = {
        _Path(p).resolve()
        for p in [*_site.getsitepackages(), _site.getusersitepackages()]
    }


    class _HidingFinder(_machinery.FileFinder):
        def find_spec(self, fullname, target=None):
            if fullname.partition(".")[0] in HIDDEN:
                return None
            return super().find_spec(fullname, target)


    def _hook(path):
        if path and _Path(path).resolve() in _SITE_DIRS:
            return _HidingFinder(path, *_LOADERS)
        raise ImportError("not a site-packages folder")


    _sys.path_hooks.insert(0, _hook)
    _sys.path_importer_cache.clear()
    # The editable install of the checkout puts the repository on sys.path
    # through a .pth file; drop it, as on a machine with only the wheel.
    _sys.path[:] = [p for p in _sys.path if not (p and _Path(p).resolve() == _REPO)]
    """
)

CHECK_INSTALLED = textwrap.dedent(
    """
    import contextlib, importlib.util, io, json, os, sys, time
    from pathlib import Path

    import sitecustomize

    site = Path(sys.argv[1]).resolve()
    repo = Path(sys.argv[2]).resolve()
    assert sitecustomize.HIDDEN, "nothing hidden"
    assert not any(
        p and Path(p).resolve() == repo for p in sys.path
    ), ("repository on sys.path", sys.path)
    for name in ("sklearn", "mlxtend"):
        assert importlib.util.find_spec(name) is None, name
        try:
            __import__(name)
        except ModuleNotFoundError:
            pass
        else:
            raise AssertionError(f"{name} importable")

    import keras_gmm
    import keras_gmm.zoo as zoo
    from keras_gmm import cli, datasets

    package = Path(keras_gmm.__file__).resolve()
    assert package.is_relative_to(site), (package, site)
    root = zoo.zoo_root().resolve()
    assert root == site / "keras_gmm" / "saved_models", root
    assert datasets.DATA_DIR.resolve() == site / "keras_gmm" / "data"
    sizes = {
        "digits": [len(datasets.load_digits(s)[0]) for s in ("train", "test")],
        "breast_cancer": [len(datasets.load_breast_cancer(s)[0])
                          for s in ("train", "val", "test")],
        "mnist": [len(datasets.load_mnist(s)[0]) for s in ("train", "test")],
    }
    report = {"package": str(package), "root": str(root), "sizes": sizes,
              "models": {}, "commands": {}}
    for name in zoo.list_models():
        folder = zoo.model_dir(name).resolve()
        assert folder.is_relative_to(site), folder
        report["models"][name] = sorted(p.name for p in folder.iterdir())

    commands = [["zoo", "evaluate", name] for name in zoo.list_models()]
    for argv in [*commands, ["demo"]]:
        out = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(out):
            status = cli.main(argv)
        report["commands"][" ".join(argv)] = {
            "status": status, "output": out.getvalue(),
            "seconds": time.perf_counter() - start}
    report["hidden_imported"] = sorted(
        m for m in sys.modules if m.partition(".")[0] in sitecustomize.HIDDEN
    )
    print("REPORT " + json.dumps(report))
    """
)


def _run(args, **kwargs):
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
        **kwargs,
    )
    assert result.returncode == 0, (
        f"{args} exited with {result.returncode}\n"
        f"stdout:\n{result.stdout[-4000:]}\nstderr:\n{result.stderr[-4000:]}"
    )
    return result.stdout


def _requirements(wheel):
    """The unconditional ``Requires-Dist`` of the wheel (no extras)."""
    with zipfile.ZipFile(wheel) as archive:
        member = next(
            m for m in archive.namelist() if m.endswith(".dist-info/METADATA")
        )
        metadata = email.parser.Parser().parsestr(archive.read(member).decode())
    return [Requirement(r) for r in metadata.get_all("Requires-Dist") or []]


def _dependency_closure(requirements):
    """Canonical names of the distributions a plain install of
    ``requirements`` brings: the requirements, with their extras, and theirs,
    as this environment's metadata declares them (markers evaluated here)."""
    names, seen = set(), set()
    todo = [(requirement, frozenset()) for requirement in requirements]
    while todo:
        requirement, extras = todo.pop()
        marker = requirement.marker
        if marker is not None and not any(
            marker.evaluate({"extra": extra}) for extra in (extras or {""})
        ):
            continue
        name = canonicalize_name(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(name)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in dist.requires or []:
            todo.append((Requirement(line), frozenset(requirement.extras)))
    return names


def _hidden_modules(allowed):
    """Top-level modules of this environment that no distribution in
    ``allowed`` provides."""
    return sorted(
        module
        for module, dists in importlib.metadata.packages_distributions().items()
        if not {canonicalize_name(d) for d in dists} & allowed
    )


def _install_and_run(tmp_path):
    """Build the wheel, check its files, install it plainly and run the CLI
    there (see the module docstring): the installed run's report."""
    assert importlib.util.find_spec("hatchling") is not None, (
        "building the wheel needs hatchling in this environment: "
        "pip install -e '.[test]' (or pip install hatchling)"
    )
    dist, site, work = tmp_path / "dist", tmp_path / "site", tmp_path / "work"
    hide = tmp_path / "hide"
    work.mkdir()
    hide.mkdir()
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

    # The wheel itself holds each zoo model's files under keras_gmm/saved_models
    # and the data under keras_gmm/data, byte for byte the repository's, and
    # the console script.
    with zipfile.ZipFile(wheels[0]) as wheel:
        members = set(wheel.namelist())
        for name in keras_gmm.zoo.list_models():
            for filename in ("model.keras", "metadata.json"):
                member = f"keras_gmm/saved_models/{name}/{filename}"
                assert member in members, (member, sorted(members))
                source = keras_gmm.zoo.model_dir(name) / filename
                assert wheel.read(member) == source.read_bytes(), member
        data_files = [s["file"] for s in datasets.DATA_SOURCES.values()]
        for filename in [*data_files, "README.md"]:
            member = f"keras_gmm/data/{filename}"
            assert member in members, (member, sorted(members))
            assert wheel.read(member) == (datasets.DATA_DIR / filename).read_bytes()
        assert not any(m.startswith("saved_models/") for m in members)
        entry_points = next(
            m for m in members if m.endswith(".dist-info/entry_points.txt")
        )
        assert "keras-gmm = keras_gmm.cli:main" in wheel.read(entry_points).decode()

    # What a plain install brings, and what it must do without.
    allowed = _dependency_closure(_requirements(wheels[0]))
    assert {"tensorflow", "keras", "numpy", "scipy"} <= allowed, allowed
    assert not {"scikit-learn", "mlxtend", "matplotlib"} & allowed, allowed
    hidden = _hidden_modules(allowed)
    if importlib.util.find_spec("sklearn") is not None:
        assert "sklearn" in hidden  # installed here, so the check is not vacuous
    assert "tensorflow" not in hidden and "keras_gmm" not in hidden

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
    (hide / "sitecustomize.py").write_text(SITECUSTOMIZE)

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", _files.ZOO_DIR_ENV)
    }
    env["PYTHONPATH"] = os.pathsep.join([str(hide), str(site)])
    env["KERAS_GMM_TEST_HIDDEN_MODULES"] = json.dumps(hidden)
    env["KERAS_GMM_TEST_REPO"] = str(REPO_ROOT)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    # The installed console script itself, from outside the repository.
    script = site / "bin" / "keras-gmm"
    assert script.is_file(), sorted(p.name for p in (site / "bin").iterdir())
    assert "usage: keras-gmm" in _run([str(script), "--help"], cwd=work, env=env)
    listing = _run([str(script), "zoo", "list"], cwd=work, env=env)
    for name in keras_gmm.zoo.list_models():
        assert name in listing, listing

    out = _run(
        [sys.executable, "-c", CHECK_INSTALLED, str(site), str(REPO_ROOT)],
        cwd=work,
        env=env,
    )
    return json.loads(out.split("REPORT ", 1)[1])


# The build, the install and the CLI runs are subprocesses: they run in the
# background of the in-process tests (tests/script_utils.py).
@pytest.mark.background.with_args(_install_and_run)
def test_plain_wheel_install_runs_demo_and_zoo_evaluate(background_result):
    report = background_result
    assert report["sizes"] == {
        "digits": [1343, 454],
        "breast_cancer": [214, 118, 237],
        "mnist": [datasets.MNIST_SPLITS["train"], datasets.MNIST_SPLITS["test"]],
    }
    assert set(report["models"]) == set(keras_gmm.zoo.list_models())
    for name, files in report["models"].items():
        assert files == ["metadata.json", "model.keras"], (name, files)
    for name in keras_gmm.zoo.list_models():
        command = report["commands"][f"zoo evaluate {name}"]
        assert command["status"] == 0, (name, command["output"])
        assert name in command["output"], command["output"]
    # The demo (the README's first command) as a user sees it: every model
    # loads, reproduces every recorded metric and exports; the table and its
    # legend are printed; in under a minute (TensorFlow already started).
    demo = report["commands"]["demo"]
    out = demo["output"]
    assert demo["status"] == 0, out
    assert "reproduce their recorded metrics and export correctly" in out
    for name in keras_gmm.zoo.list_models():
        assert f"{name}: export check ok" in out, (name, out)
        row = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert row.rstrip().endswith("ok"), row
    assert "FAILED" not in out
    assert cli.TABLE_LEGEND in out
    assert demo["seconds"] < 60, demo["seconds"]
    assert report["hidden_imported"] == [], report["hidden_imported"]
