"""`mastctl detect` end to end, driven by the third-party test plugin's 'points' detector."""

from __future__ import annotations

import csv
import io
import json

import pytest
from PIL import Image

from conftest import he_like

CELLS = [
    [10, 20, "mast_cell", "explicit", 0.9],
    [30, 40, "mast_cell", "implicit", 0.45],
    [50, 10, "lymphocyte", None, 0.8],
    [70, 50, "eosinophil", None, 0.3],
]


@pytest.fixture
def workspace(tmp_path, plugin):
    (tmp_path / "mastctl.yaml").write_text(
        "detect:\n  backend: points\n  thresholds: {explicit: 0.5, implicit: 0.4, other: 0.5}\n"
        f"backend_options:\n  points:\n    cells: {json.dumps(CELLS)}\n"
    )
    for name in ("a", "b"):
        Image.fromarray(he_like()).save(tmp_path / f"{name}.png", dpi=(50800, 50800))  # 0.5 um/px
    return tmp_path


def test_one_image_to_geojson_file(cli, workspace):
    r = cli("detect", "a.png", "-o", "a.geojson")
    assert r.exit_code == 0, r.stderr
    gj = json.loads((workspace / "a.geojson").read_text())
    names = [f["properties"]["classification"]["name"] for f in gj["features"] if f["properties"]["objectType"] == "detection"]
    assert names == ["Mast cell: Explicit", "Mast cell: Implicit"]
    assert "a.png" in r.stdout and "a.geojson" in r.stdout  # the human summary table


def test_stdout_json_document_with_summary(cli, workspace):
    r = cli("detect", "a.png")
    doc = r.json()
    assert r.exit_code == 0 and doc["schema"] == "mastctl/detections@1" and doc["backend"] == "points"
    assert doc["image"] == {"path": "a.png", "width": 80, "height": 64, "mpp": 0.5}
    assert doc["summary"]["mast_cells"] == 2 and doc["summary"]["explicit"] == 1 and doc["summary"]["implicit"] == 1
    assert doc["summary"]["image_mm2"] == pytest.approx(80 * 64 * 0.25e-6, rel=1e-3)
    assert 0 < doc["summary"]["tissue_mm2"] <= doc["summary"]["image_mm2"] and doc["summary"]["density_over"] == "tissue"
    assert set(doc["timing_s"]) >= {"load", "detect", "model"}


def test_all_cells_and_thresholds(cli, workspace):
    doc = cli("detect", "a.png", "--all-cells").json()
    labels = [c["label"] for c in doc["cells"]]
    assert labels == ["mast_cell", "mast_cell", "lymphocyte"]  # the 0.3 eosinophil is under 'other: 0.5'
    doc = cli("detect", "a.png", "--all-cells", "--min-confidence", "0.85").json()
    assert [c["label"] for c in doc["cells"]] == ["mast_cell"]
    r = cli("detect", "a.png", "--min-confidence", "1.5")
    assert r.exit_code == 2


def test_several_images_to_a_folder_with_json_report(cli, workspace):
    r = cli("--json", "detect", "a.png", "b.png", "-o", "out", "--format", "csv")
    assert r.exit_code == 0, r.stderr
    report = r.json()
    assert [row["output"] for row in report] == ["out/a.csv", "out/b.csv"]
    assert report[0]["summary"]["mast_cells"] == 2 and report[0]["mpp"] == 0.5
    rows = list(csv.DictReader(io.StringIO((workspace / "out" / "b.csv").read_text())))
    assert [r_["kind"] for r_ in rows] == ["explicit", "implicit"] and rows[0]["image"] == "b.png"


def test_folder_input_and_overlays(cli, workspace):
    (workspace / "tiles").mkdir()
    for n in ("t1", "t2", "t3"):
        Image.fromarray(he_like(seed=3)).save(workspace / "tiles" / f"{n}.png")
    (workspace / "tiles" / "notes.txt").write_text("not an image")
    r = cli("detect", "tiles", "-o", "marked", "--format", "overlay", "--mpp", "0.25")
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in (workspace / "marked").iterdir()) == ["summary.csv", "t1.png", "t2.png", "t3.png"]
    assert Image.open(workspace / "marked" / "t1.png").size == (80, 64)


def test_csv_to_stdout_for_several_images(cli, workspace):
    r = cli("detect", "a.png", "b.png", "--format", "csv", "--all-cells")
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert r.exit_code == 0 and len(rows) == 6 and {row["image"] for row in rows} == {"a.png", "b.png"}
    assert "mean_red" in rows[0]  # features become columns


def test_mpp_from_option_and_profile_default(cli, workspace):
    Image.fromarray(he_like()).save(workspace / "noscale.png")
    assert cli("detect", "noscale.png").json()["summary"]["mast_cells_per_mm2"] is None
    assert cli("detect", "noscale.png", "--mpp", "0.25").json()["image"]["mpp"] == 0.25
    text = (workspace / "mastctl.yaml").read_text().replace("backend: points", "backend: points\n  mpp: 0.3")
    (workspace / "mastctl.yaml").write_text(text)
    assert cli("detect", "noscale.png").json()["image"]["mpp"] == 0.3
    assert cli("detect", "a.png").json()["image"]["mpp"] == 0.5  # the file's own scale wins over the default


def test_backend_option_flag(cli, workspace):
    doc = cli("detect", "a.png", "-O", "cells=[[1, 2, mast_cell, explicit, 0.45]]", "-O", "gain=2").json()
    assert len(doc["cells"]) == 1 and doc["cells"][0]["confidence"] == 0.9
    r = cli("detect", "a.png", "-O", "nonsense")
    assert r.exit_code == 2 and "KEY=VALUE" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["a.png", "b.png", "--format", "geojson"], "geojson output needs -o DIR"),
        (["a.png", "--format", "overlay"], "overlay output needs -o FILE"),
        (["a.png", "-o", "a.png"], "refusing to overwrite the input image"),
        (["a.png", "sub/a.png", "-o", "out"], "would both be written to out/a.json"),
        (["a.png", "--format", "pdf"], "'pdf' is not one of"),
        (["a.png", "-b", "nosuch"], "unknown detector 'nosuch'"),
    ],
)
def test_bad_command_lines_exit_2_before_any_work(cli, workspace, args, message):
    (workspace / "sub").mkdir()
    Image.fromarray(he_like()).save(workspace / "sub" / "a.png")
    before = sorted(p.name for p in workspace.iterdir())
    r = cli("detect", *args)
    assert r.exit_code == 2 and message in r.stderr and r.stdout == ""
    assert sorted(p.name for p in workspace.iterdir()) == before  # nothing written, nothing lost


def test_a_bad_image_fails_alone(cli, workspace):
    (workspace / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    r = cli("--json", "detect", "a.png", "broken.png", "b.png", "-o", "out")
    assert r.exit_code == 3
    report = r.json()
    assert report[1]["image"] == "broken.png" and "cannot decode PNG" in report[1]["error"]
    assert sorted(p.name for p in (workspace / "out").iterdir()) == ["a.json", "b.json", "summary.csv"]
    assert "broken.png: cannot decode PNG image" in r.stderr


def test_decompression_bomb_guard_from_cli(cli, workspace):
    r = cli("detect", "a.png", "--max-pixels", "100")
    assert r.exit_code == 3 and "decompression-bomb limit of 100" in r.stderr
    assert cli("detect", "a.png", "--max-pixels", "0").exit_code == 0


def test_trailing_slash_means_a_folder_even_for_one_image(cli, workspace):
    r = cli("detect", "a.png", "--format", "geojson", "-o", "out/")
    assert r.exit_code == 0, r.stderr
    assert (workspace / "out" / "a.geojson").is_file()
    r = cli("detect", "a.png", "-o", "out/overlay.png")
    assert r.exit_code == 0 and (workspace / "out" / "overlay.png").is_file()
    (workspace / "afile").write_text("x")
    r = cli("detect", "a.png", "-o", "afile/x.json")
    assert r.exit_code == 2 and "a file stands where its folder should be" in r.stderr
