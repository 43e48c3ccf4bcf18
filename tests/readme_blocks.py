"""The fenced code blocks of README.md, each with the heading it sits under,
and a runner that executes one Python block alone in a fresh interpreter.

Used by tests/test_readme.py; also runnable to time every block by hand::

    python -m tests.readme_blocks            # runs each Python block, prints seconds
"""

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.script_utils import as_text as _text

ROOT = Path(__file__).resolve().parents[1]
README_PATH = ROOT / "README.md"
BLOCK_TIMEOUT_S = 120  # each block takes seconds; generous for a busy 2-core machine

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)
_HEADING = re.compile(r"^(#{1,6}) +(.+?)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    language: str
    source: str
    heading: str  # the nearest heading above the block, as written
    line: int  # 1-based line of the opening fence in README.md
    index: int  # position among the blocks of the same language (0-based)

    @property
    def name(self):
        """``"Tour > GMMConv2D: ... (README.md:123)"``, for failure messages."""
        return f"{self.heading} (README.md:{self.line})"

    @property
    def test_id(self):
        slug = re.sub(r"[^a-z0-9]+", "-", self.heading.lower()).strip("-")
        return f"{self.index}-{slug[:40]}"


def blocks(language=None, text=None):
    """The README's fenced blocks in order (only ``language``'s if given)."""
    text = README_PATH.read_text() if text is None else text
    found, counts = [], {}
    for match in _FENCE.finditer(text):
        lang, source = match.group(1), match.group(2)
        # A "# comment" line inside an earlier block is not a heading.
        heading = _heading_outside_fences(text, match.start()) or ""
        index = counts.get(lang, 0)
        counts[lang] = index + 1
        found.append(Block(lang, source, heading, text.count("\n", 0, match.start()) + 1,
                           index))
    if language is not None:
        found = [b for b in found if b.language == language]
    return found


def _heading_outside_fences(text, position):
    """The last Markdown heading before ``position`` that is not inside a
    fenced block."""
    heading, in_fence = None, False
    for line in text[:position].splitlines():
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        match = _HEADING.match(line)
        if match and not in_fence:
            heading = match.group(2).strip()
    return heading


def block_env():
    """The environment a block runs in: this one, quiet TensorFlow, and the
    checkout importable (as after ``pip install -e .``)."""
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    )
    env.pop("PYTHONWARNINGS", None)
    return env


def run_block(block, timeout=BLOCK_TIMEOUT_S):
    """Run one Python block alone: a new interpreter, its own empty temporary
    working directory. Returns ``(CompletedProcess, seconds)``; a timeout
    gives returncode None and the partial output."""
    with tempfile.TemporaryDirectory(prefix="readme_block_") as cwd:
        script = Path(cwd) / "block.py"
        script.write_text(block.source)
        start = time.perf_counter()
        try:
            result = subprocess.run(
                # -W default: also the warnings Python hides outside __main__
                # (DeprecationWarning), for the test to look for ours.
                [sys.executable, "-W", "default", str(script)], cwd=cwd, env=block_env(),
                capture_output=True, text=True, timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired as error:
            result = subprocess.CompletedProcess(
                error.cmd, None, _text(error.stdout), _text(error.stderr)
            )
        return result, time.perf_counter() - start


if __name__ == "__main__":
    total = time.perf_counter()
    for block in blocks("python"):
        result, seconds = run_block(block)
        status = "ok" if result.returncode == 0 else f"FAILED ({result.returncode})"
        print(f"{seconds:6.1f} s  {status:12s} {block.name}")
        print("        " + result.stdout.strip().replace("\n", "\n        "))
        if result.returncode != 0:
            print(result.stderr[-3000:])
    print(f"total {time.perf_counter() - total:.1f} s")
