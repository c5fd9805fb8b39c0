"""The README's examples run as written: every ```bash block, in order, in one fresh folder.

``sh`` blocks need something a fresh machine lacks (an API key, a downloaded model, your own
slides) and are not run; the two setup commands at the top run without their install steps.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SETUP = re.compile(r"^(python3 -m venv|\. \.venv/bin/activate|pip install|python -m pytest)")

pytestmark = pytest.mark.slow


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def runnable(block: str) -> str:
    """The block itself; a one-line setup command without its install and test steps."""
    lines = block.strip().splitlines()
    if len(lines) == 1 and " && " in lines[0]:
        kept = [part for part in lines[0].split(" && ") if not SETUP.match(part.strip())]
        return " && ".join(kept)
    return block


def test_the_readme_has_the_two_commands_first_and_both_kinds_of_blocks():
    text = README.read_text()
    blocks = bash_blocks(text)
    assert blocks[0].startswith("python3 -m venv") and "mastctl detect examples/" in blocks[0]
    assert blocks[1].strip().endswith('python -m pytest -q -n 2 -m "slow or not slow"')
    ci = (ROOT / ".ci" / "run").read_text()
    assert blocks[1].strip().split("&& ", 1)[1] in ci  # .ci/run runs the README's test command
    assert runnable(blocks[1]) == ""  # nothing left of it: the test command is not run from here
    assert "```sh\n" in text and len(blocks) > 10


def test_every_bash_example_runs_as_written(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(ROOT / "examples", work / "examples")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTCTL_")}
    env.update(HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", NO_COLOR="1",
               COLUMNS="120")
    ran = 0
    for block in bash_blocks(README.read_text()):
        script = runnable(block)
        if not script.strip():
            continue
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=work, env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, f"README example failed (exit {proc.returncode}):\n{script}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr, script
        ran += 1
    assert ran > 10
    assert (work / "out" / "compare.html").stat().st_size > 10_000  # the first command's report
    assert (work / "out" / "summary.csv").read_text().startswith("image,mast_cells,explicit,implicit,")
    assert (work / "results" / "summary.csv").exists() and (work / "slide.geojson.summary.json").exists()
