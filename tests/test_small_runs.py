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
@pytest.mark.parametrize("precision", ["float32", "auto"])
def test_one_small_image_runs_without_loading_torch_and_finds_what_a_large_run_finds(tmp_path, precision):
    """In float32 a small run leaves torch unloaded; where the nets run in bfloat16 (``auto`` on a CPU with AMX), which
    numpy cannot, torch runs a small run's nets too: either way an image alone gives the cells of a larger run."""
    pytest.importorskip("torch")
    from mastctl import threads

    env, option = {"PYTHONPROFILEIMPORTTIME": "1"}, ["-O", f"net_precision={precision}"]
    alone = run_mastctl("detect", EXAMPLE, "--all-cells", *option, "-o", tmp_path / "alone.csv", env=env)
    assert alone.exit_code == 0, alone.stderr
    assert _loaded_torch(alone.stderr) == (threads.net_precision(precision) == "bfloat16")
    big = tmp_path / "big.png"  # 3 x 3 copies of the tile: 1.3 megapixels, so torch runs the nets
    PILImage.fromarray(np.tile(np.asarray(PILImage.open(EXAMPLE).convert("RGB")), (3, 3, 1))).save(big)
    both = run_mastctl("detect", EXAMPLE, big, "--all-cells", *option, "--format", "csv", "-o", tmp_path / "both",
                       env=env)
    assert both.exit_code == 0, both.stderr
    assert _loaded_torch(both.stderr)
    a, b = _cells(tmp_path / "alone.csv"), _cells(tmp_path / "both" / f"{EXAMPLE.stem}.csv")
    assert len(a) > 40 and [(r["x"], r["y"], r["label"], r["kind"]) for r in a] == [(r["x"], r["y"], r["label"], r["kind"]) for r in b]
    assert max(abs(float(r["confidence"]) - float(s["confidence"])) for r, s in zip(a, b, strict=True)) <= 2e-4


def test_a_small_run_leaves_the_nets_to_numpy_only_in_float32(monkeypatch):
    pytest.importorskip("torch")
    import sys

    from mastctl import threads

    monkeypatch.delitem(sys.modules, "torch")  # as in a fresh process (nothing is imported: find_spec only looks)
    monkeypatch.delenv("MASTCTL_NUMPY_NET", raising=False)
    with threads.numpy_unless_torch_is_loaded(True):
        assert not threads.torch_runs_the_nets("float32") and threads.torch_runs_the_nets("bfloat16")
        monkeypatch.setattr(threads, "_amx_tiles", lambda: True)
        assert threads.torch_runs_the_nets("auto")
        monkeypatch.setattr(threads, "_amx_tiles", lambda: False)
        assert not threads.torch_runs_the_nets("auto")
    assert threads.torch_runs_the_nets("float32")  # not a small run



@pytest.mark.slow
def test_a_small_run_of_tumour_loads_torch_for_the_crop_nets_views(tmp_path):
    """A mast cell tumour sends nearly every crop to the crop net's seven other views: numpy would take seconds where
    torch's import takes 0.7 s, so past TORCH_FOR_VIEWS crop views torch reads them, in a small run too."""
    pytest.importorskip("torch")
    from conftest import SHARED_DATA

    crops = sorted((SHARED_DATA / "ccmct").glob("vb0_*.png"))[:4]
    if len(crops) < 4:
        pytest.skip("needs ../shared/data/ccmct")
    tiles = [np.asarray(PILImage.open(p).convert("RGB"))[:300, :300] for p in crops]
    sheet = tmp_path / "sheet.png"  # 600 x 600 px at 0.25 um/px: a small run
    PILImage.fromarray(np.concatenate([np.concatenate(tiles[:2], 1), np.concatenate(tiles[2:], 1)], 0)).save(sheet)
    loaded = {}
    for views in (1, 8):
        r = run_mastctl("detect", sheet, "--mpp", "0.25", "-O", "net_precision=float32",
                        "-O", f"mast_net_views={views}", "-o", tmp_path / f"v{views}.json",
                        env={"PYTHONPROFILEIMPORTTIME": "1"})
        assert r.exit_code == 0, r.stderr
        loaded[views] = _loaded_torch(r.stderr)
    assert loaded == {1: False, 8: True}
