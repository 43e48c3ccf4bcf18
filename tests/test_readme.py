"""The README stays honest: its commands are the ones CI runs, every Python
block runs on its own in a fresh process, and its lists match the repository."""

import re
import sys

import pytest
import tomllib

from tests.readme_blocks import BLOCK_TIMEOUT_S, README_PATH, ROOT, blocks, run_block

README = README_PATH.read_text()
PYTHON_BLOCKS = blocks("python")
BASH_BLOCKS = blocks("bash")
# Update when a Python block is added to or removed from README.md (so that
# none can vanish unnoticed, e.g. by a broken fence).
EXPECTED_PYTHON_BLOCKS = 13


def test_setup_commands_are_the_two_documented_ones():
    bash = [b.source.strip() for b in BASH_BLOCKS]
    assert bash[0] == 'pip install -e ".[examples]" && keras-gmm demo'
    assert bash[1] == 'pip install -e ".[test]" && pytest'
    ci = (ROOT / ".ci" / "run").read_text()
    assert bash[1] in ci  # CI runs the README's test command verbatim


def test_every_example_is_listed():
    listed = set(re.findall(r"`examples/(\w+\.py)`", README))
    present = {p.name for p in (ROOT / "examples").glob("*.py")}
    assert listed == present


def test_no_unfilled_placeholders():
    assert "ZOO_TABLE" not in README and "BENCH_TABLE" not in README


def test_every_zoo_model_is_in_the_zoo_table():
    import keras_gmm.zoo

    for name in keras_gmm.zoo.list_models():
        assert f"`{name}`" in README


def test_cli_commands_in_readme_exist():
    from keras_gmm import cli

    lines = "\n".join(b.source for b in BASH_BLOCKS).splitlines()
    commands = [line for line in lines if line.startswith("keras-gmm ")]
    assert commands
    for line in commands:
        words = line.split("#")[0].split()[1:]
        if "--help" in words:  # argparse prints the help and exits 0
            with pytest.raises(SystemExit) as exit_info:
                cli._parser().parse_args(words)
            assert exit_info.value.code == 0, line
        else:
            assert cli._parser().parse_args(words) is not None, line


def test_bash_blocks_name_real_extras_and_modules():
    """Every ``pip install -e ".[extra]"`` names a declared extra and every
    ``python -m benchmarks.NAME`` an existing module."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    text = "\n".join(b.source for b in BASH_BLOCKS)
    named = re.findall(r'pip install -e "\.\[(\w+)\]"', text)
    assert named and set(named) <= set(extras), named
    modules = re.findall(r"python -m benchmarks\.(\w+)", text)
    assert modules
    for module in modules:
        assert (ROOT / "benchmarks" / f"{module}.py").is_file(), module


def test_layout_names_existing_paths():
    """Every package path the Layout section names exists."""
    layout = README[README.index("## Layout"):]
    named = set(re.findall(r"(keras_gmm/[\w/]+(?:\.\w+)?)", layout))
    assert len(named) >= 10, named
    missing = sorted(p for p in named if not (ROOT / p).exists())
    assert not missing, f"README's Layout names missing paths: {missing}"


def test_images_exist():
    """Every image the README shows (``![alt](path)``) is a file of the
    repository (a PNG, by its magic bytes)."""
    paths = re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", README)
    assert paths, "the README shows no image"
    for path in paths:
        assert (ROOT / path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def test_python_block_count():
    names = [b.name for b in PYTHON_BLOCKS]
    assert len(PYTHON_BLOCKS) == EXPECTED_PYTHON_BLOCKS, (
        f"found {len(PYTHON_BLOCKS)} ```python blocks in README.md, expected "
        f"{EXPECTED_PYTHON_BLOCKS} (update EXPECTED_PYTHON_BLOCKS if one was "
        f"added or removed on purpose): {names}"
    )
    assert all(b.heading for b in PYTHON_BLOCKS), names


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[b.test_id for b in PYTHON_BLOCKS])
def test_python_block_shows_its_result(block):
    """Each block prints or asserts something a reader can check."""
    assert re.search(r"^\s*(print\(|assert )", block.source, re.MULTILINE), (
        f"README block under {block.name} neither prints nor asserts anything"
    )


def _run_block_job(out, block):
    """A README block's background job (``out`` unused: the block gets its
    own temporary folder from run_block)."""
    return run_block(block)


# A Python warning attributed to the README's code or to keras_gmm ("path.py:12:
# DeprecationWarning: ...", e.g. a renamed argument, or quantize's warning;
# blocks run with -W default): the tour shows the API used as it should be,
# so it warns about nothing. Other libraries' warnings are not ours to fix.
_OUR_WARNING = re.compile(
    r"^(?:\S*[/\\])?(?:block\.py|\S*keras_gmm[/\\]\S+\.py):\d+: \w*Warning: .*$",
    re.MULTILINE,
)
_RETRACING = "triggered tf.function retracing"


@pytest.mark.parametrize("block", [
    pytest.param(b, id=b.test_id, marks=pytest.mark.background(_run_block_job, b))
    for b in PYTHON_BLOCKS])
def test_python_block_runs_alone(block, background_result):
    """Each block alone: a fresh interpreter, an empty temporary working
    directory, nothing shared between blocks but the machine (run in the
    session's background, see tests/script_utils.py)."""
    result, seconds = background_result
    report = (
        f"\n--- block ---\n{block.source}--- stdout ---\n{result.stdout[-3000:]}"
        f"\n--- stderr ---\n{result.stderr[-5000:]}"
    )
    assert result.returncode is not None, (
        f"README block under {block.name} did not finish in {BLOCK_TIMEOUT_S} s"
        + report
    )
    assert result.returncode == 0, (
        f"README block under {block.name} exited with status {result.returncode} "
        f"after {seconds:.1f} s (run alone with {sys.executable} in an empty "
        "folder)" + report
    )
    if "print(" in block.source:
        assert result.stdout.strip(), f"README block under {block.name} printed nothing"
    warned = _OUR_WARNING.findall(result.stderr)
    assert not warned, (
        f"README block under {block.name} raises warnings: {warned}" + report
    )
    assert _RETRACING not in result.stderr, (
        f"README block under {block.name} triggers tf.function retracing warnings"
        + report
    )
