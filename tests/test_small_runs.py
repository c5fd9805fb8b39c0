"""A run too small to repay torch's import runs the detector's nets on numpy (detection.small_run), with the same cells."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from conftest import run_mastctl
from mastctl import detection

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "synth_s9_0000_he.png"


def _jobs(*paths: Path) -> list[detection.Job]:
    return [detection.Job(image=p, output=None, fmt="json") for p in paths]


def test_a_run_is_small_while_its_images_hold_a_megapixel_at_most(tmp_path):
    def png(name: str, width: int, height: int) -> Path:
        path = tmp_path / name
        PILImage.fromarray(np.full((height, width, 3), 200, np.uint8)).save(path)
        return path

    tile, most = png("tile.png", 500, 500), png("most.png", 1000, 800)
    assert detection.SMALL_RUN_PIXELS == 1_000_000
    assert detection.small_run(_jobs(tile)) and detection.small_run(_jobs(tile, tile, tile, tile))
    assert not detection.small_run(_jobs(tile, tile, tile, tile, tile))  # 1.25 megapixels in all
    assert detection.small_run(_jobs(most)) and not detection.small_run(_jobs(most, tile))
    (tmp_path / "x.svs").write_bytes(b"not read")  # a slide is never small, whatever it holds
    assert not detection.small_run(_jobs(tmp_path / "x.svs"))
    (tmp_path / "bad.png").write_bytes(b"not an image")  # unreadable here: the job will say why
    assert not detection.small_run(_jobs(tmp_path / "bad.png"))
    assert detection.small_run([])


def _loaded_torch(stderr: str) -> bool:
    return any(line.rstrip().endswith("| torch") for line in stderr.splitlines())  # PYTHONPROFILEIMPORTTIME lines


def _cells(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_one_small_image_runs_without_loading_torch_and_finds_what_a_large_run_finds(tmp_path):
    pytest.importorskip("torch")
    env = {"PYTHONPROFILEIMPORTTIME": "1"}
    alone = run_mastctl("detect", EXAMPLE, "--all-cells", "-o", tmp_path / "alone.csv", env=env)
    assert alone.exit_code == 0, alone.stderr
    assert not _loaded_torch(alone.stderr)
    big = tmp_path / "big.png"  # 3 x 3 copies of the tile: 1.3 megapixels, so torch runs the nets
    PILImage.fromarray(np.tile(np.asarray(PILImage.open(EXAMPLE).convert("RGB")), (3, 3, 1))).save(big)
    both = run_mastctl("detect", EXAMPLE, big, "--all-cells", "--format", "csv", "-o", tmp_path / "both", env=env)
    assert both.exit_code == 0, both.stderr
    assert _loaded_torch(both.stderr)
    a, b = _cells(tmp_path / "alone.csv"), _cells(tmp_path / "both" / f"{EXAMPLE.stem}.csv")
    assert len(a) > 40 and [(r["x"], r["y"], r["label"], r["kind"]) for r in a] == [(r["x"], r["y"], r["label"], r["kind"]) for r in b]
    assert max(abs(float(r["confidence"]) - float(s["confidence"])) for r, s in zip(a, b, strict=True)) <= 2e-4
