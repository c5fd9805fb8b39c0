"""docs/workflow.md runs as written: every fenced bash block, in order, in a fresh folder."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "workflow.md"

pytestmark = pytest.mark.slow


def blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_the_paired_sections_workflow_runs_as_written(tmp_path):
    pytest.importorskip("lancedb")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MASTCTL_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for n, block in enumerate(blocks(DOC.read_text())):
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, f"block {n}:\n{block}\n{proc.stderr[-2000:]}"
        assert "Traceback" not in proc.stderr
    labels = sorted((tmp_path / "labels").glob("*.json"))
    assert len(labels) == 4
    doc = json.loads(labels[0].read_text())
    assert doc["schema"] == "mastctl/detections@1" and any(c["label"] == "mast_cell" for c in doc["cells"])
    assert (tmp_path / "lab-model.json").is_file()
    rows = list(csv.DictReader(open(tmp_path / "found" / "summary.csv")))
    assert len(rows) == 4 and all(float(r["tissue_mm2"]) > 0 for r in rows)
    assert json.loads((tmp_path / "found" / "hybrid.geojson").read_text())["type"] == "FeatureCollection"
    html = (tmp_path / "report.html").read_text()
    assert "Precision, recall, F1" in html
