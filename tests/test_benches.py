"""Every benchmark runs from a fresh clone on a fresh machine: its smallest setting, with an empty home folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SHARED_DATA

BENCH = Path(__file__).resolve().parents[1] / "bench"

pytestmark = pytest.mark.slow

CASES = {
    "score": ["--backend", "log", "--tiles", "1", "--size", "128", "--repeat", "1", "--skip-crc"],
    "startup": ["--runs", "1"],
    "ihc": ["--pairs", "1"],
    "kb-search": ["search", "--records", "300"],
    "kb-ingest": ["ingest", "--records", "60", "--stores", "lancedb"],
    "kb-quality": ["quality", "--tiles", "1"],
    "cube": ["--seeds", "0", "--epochs", "1", "--epoch-pairs", "16"],
    "wsi": ["--size", "2048", "--workers", "1"],
    "calibrate_morphology": ["--tiles", "2", "--size", "128", "--focus-um", "0.2,1.2", "--gains", "0.5,1.5,0.5,1.5",
                             "--wobble", "0.6,2.2", "--out", "{tmp}/model.json"],
    "train_mast_net": ["--tiles-scale", "0.02", "--steps", "5", "--out", "{tmp}/net.npz"],
    "real_tissue": ["--synthetic-tiles", "1"],
    "style_ablation": ["--factors", "focus", "--seeds", "8000", "--tiles", "1"],
    "other_renderer": ["{tmp}/tiles", "--tiles", "1"],
    "third_renderer": ["{tmp}/tiles", "--tiles", "1"],
    "fourth_renderer": ["{tmp}/tiles", "--tiles", "1"],
    "train_nucleus_net": ["--steps", "3", "--out", "{tmp}/nuclei.safetensors"],
    "dense_mast_study": ["--limit", "1", "--steps", "3", "--no-speed", "--basis", "image"],  # -shared: the reference maps
    "dense_mast_study-shared": ["--limit", "1", "--steps", "3", "--no-speed", "--shared-trunk"],
}
NEEDS_SHARED_DATA = {"train_mast_net", "real_tissue", "train_nucleus_net", "dense_mast_study",
                     "dense_mast_study-shared"}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bench_runs_from_a_fresh_machine(name, tmp_path):
    if name in NEEDS_SHARED_DATA and not SHARED_DATA.exists():
        pytest.skip("../shared/data not present")
    script = BENCH / f"{name.split('-')[0]}.py"
    args = [a.replace("{tmp}", str(tmp_path)) for a in CASES[name]]
    home = tmp_path / "home"  # no ~/.cache, no earlier results
    home.mkdir()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MASTCTL_")}, "HOME": str(home)}
    proc = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and proc.stdout.strip()


def test_calibrate_draws_its_tiles_with_the_stains_and_outlines_asked_for(tmp_path):
    """--gains and --wobble change how the criteria's training tiles are drawn, tile pair by tile pair, and nothing else;
    a malformed --gains is a one-line usage error."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    import numpy as np
    from calibrate_morphology import synthetic_samples

    from mastctl import synth

    plain = list(synthetic_samples(1000, 4, 64, ("gut",)))
    drawn = list(synthetic_samples(1000, 4, 64, ("gut",), None, (0.5, 1.5, 0.5, 1.5), (0.6, 2.2)))
    first, second = synth.STYLES["gut-gains-wobble0.6"], synth.STYLES["gut-gains-wobble2.2"]
    assert (first.wobble, second.wobble) == (0.6, 2.2) and first.gains == second.gains == ((0.5, 1.5), (0.5, 1.5))
    assert first.blur_um == synth.STYLES["gut"].blur_um  # (no --focus-um: the style's own)
    assert [mpp for _, mpp, _ in drawn] == [0.5, 0.25, 0.5, 0.25]
    assert all(not np.array_equal(a[0], b[0]) for a, b in zip(plain, drawn))  # other stains and outlines, each tile
    assert [len(c) for _, _, c in plain] == [len(c) for _, _, c in drawn]  # the same cells drawn
    proc = subprocess.run([sys.executable, str(BENCH / "calibrate_morphology.py"), "--gains", "1.5,0.5,0.5,1.5"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "--gains takes four numbers" in proc.stderr and "Traceback" not in proc.stderr


def test_the_style_ablation_refuses_the_held_out_style(tmp_path):
    """bench/style_ablation.py diagnoses a style it may choose on; the held-out style is only ever reported."""
    proc = subprocess.run([sys.executable, str(BENCH / "style_ablation.py"), "--style", "faded"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "held-out style" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.skipif(not (SHARED_DATA / "crc_nuclei").exists(), reason="../shared/data not present")
def test_nuclei_cv_smoke(tmp_path):
    pytest.importorskip("torch")
    import csv

    data = tmp_path / "crc"  # six images (three a half): the smallest set every fold of the bench can split
    (data / "images").mkdir(parents=True)
    names = sorted((SHARED_DATA / "crc_nuclei" / "images").glob("*.png"), key=lambda p: int(p.stem[3:]))[:6]
    for p in names:
        (data / "images" / p.name).symlink_to(p)
    with open(SHARED_DATA / "crc_nuclei" / "points.csv", newline="") as src, open(data / "points.csv", "w", newline="") as dst:
        rows = csv.DictReader(src)
        out = csv.DictWriter(dst, rows.fieldnames)
        out.writeheader()
        out.writerows(r for r in rows if r["image"] in {p.stem for p in names})
    proc = subprocess.run([sys.executable, str(BENCH / "nuclei_cv.py"), "--out", str(tmp_path / "cv"), "--data", str(data),
                           "--recipes", "w16-b8-3k",
                           "--inner-folds", "2", "--workers", "1", "--steps-scale", "0.002", "--device", "cpu"],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
