"""The README stays honest: its commands are the ones CI runs, its Python
blocks run, and its lists match the repository."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def code_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_setup_commands_are_the_two_documented_ones():
    bash = [b.strip() for b in code_blocks("bash")]
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

    for line in "\n".join(code_blocks("bash")).splitlines():
        if line.startswith("keras-gmm "):
            words = line.split("#")[0].split()[1:]
            assert cli._parser().parse_args(words) is not None, line


@pytest.mark.filterwarnings("ignore")
def test_python_tour_runs(tmp_path, monkeypatch):
    """The tour's Python blocks run in order in one namespace (shortened:
    one epoch, a one-epoch zoo retrain)."""
    monkeypatch.chdir(tmp_path)
    source = "\n".join(code_blocks("python"))
    source = source.replace("epochs=30", "epochs=1")
    source = re.sub(r'zoo\.train\((.*?)\)', r'zoo.train(\1, epochs=1)', source)
    exec(compile(source, "README.md", "exec"), {})
    assert (tmp_path / "export" / "mdn" / "1" / "saved_model.pb").exists()
