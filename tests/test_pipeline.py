"""One detection flow for a tile, a folder, a slide and a cohort: the bugs a second pipeline caused, each pinned."""

from __future__ import annotations

import csv
import gzip
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mastctl import synth

CELLS = [
    [40, 40, "mast_cell", "explicit", 0.9],
    [80, 80, "mast_cell", "implicit", 0.45],
    [120, 120, "lymphocyte", None, 0.8],
    [200, 60, "eosinophil", None, 0.3],
]


@pytest.fixture
def ws(tmp_path, plugin):
    tile = synth.render_tile([77, 0], synth.SynthOptions(size=256, mpp=0.5)).he
    Image.fromarray(tile).save(tmp_path / "tile.png", dpi=(50800, 50800))  # 0.5 um/px
    (tmp_path / "mastctl.yaml").write_text(
        "detect:\n  backend: points\n  thresholds: {explicit: 0.5, implicit: 0.4, other: 0.5}\n"
        f"backend_options:\n  points:\n    cells: {json.dumps(CELLS)}\n")
    return tmp_path


def _labels(doc) -> list[str]:
    return [c["label"] for c in doc["cells"]]


def test_slides_apply_the_same_thresholds_and_options_as_tiles(cli, ws):
    tile = cli("detect", "tile.png", "--all-cells").json()
    r = cli("detect", "tile.png", "--all-cells", "--workers", "1", "-o", "slide.json")
    assert r.exit_code == 0, r.stderr
    slide = json.loads((ws / "slide.json").read_text())
    assert _labels(tile) == _labels(slide) == ["mast_cell", "mast_cell", "lymphocyte"]  # profile thresholds, both modes
    r = cli("detect", "tile.png", "--all-cells", "--workers", "1", "--min-confidence", "0.85", "-o", "s2.json")
    assert r.exit_code == 0 and _labels(json.loads((ws / "s2.json").read_text())) == ["mast_cell"]
    r = cli("detect", "tile.png", "--workers", "1", "--max-pixels", "100", "-o", "s3.json")
    assert r.exit_code == 3 and "decompression-bomb limit of 100" in r.stderr
    Image.open(ws / "tile.png").save(ws / "noscale.png")  # no dpi: the profile's detect.mpp decides
    (ws / "mastctl.yaml").write_text((ws / "mastctl.yaml").read_text().replace("backend: points", "backend: points\n  mpp: 0.25"))
    r = cli("detect", "noscale.png", "--workers", "1", "-o", "s4.json")
    assert r.exit_code == 0, r.stderr
    assert json.loads((ws / "s4.json").read_text())["image"]["mpp"] == 0.25


def test_the_same_tile_has_the_same_density_in_every_mode(cli, ws):
    tile = cli("detect", "tile.png").json()["summary"]
    r = cli("--json", "detect", "tile.png", "--roi", "0,0,256,256", "-o", "s.geojson")
    assert r.exit_code == 0, r.stderr
    slide = json.loads((ws / "s.geojson.summary.json").read_text())["summary"]
    assert tile["density_over"] == slide["density_over"] == "tissue"
    assert tile["tissue_mm2"] == pytest.approx(slide["tissue_mm2"]) and 0 < tile["tissue_mm2"] <= tile["image_mm2"]
    assert tile["mast_cells_per_mm2"] == pytest.approx(slide["mast_cells_per_mm2"])
    assert tile["hotspot"] is None and slide["hotspot"] is None  # 0.016 mm^2 of tissue is not 10 high-power fields


@pytest.mark.parametrize("name, fmt, gz", [("roi.csv", "csv", False), ("roi.geojson.gz", "geojson", True),
                                           ("roi.json", "json", False)])
def test_slide_outputs_take_their_format_from_the_extension(cli, ws, name, fmt, gz):
    r = cli("detect", "tile.png", "--roi", "0,0,200,200", "-o", name)
    assert r.exit_code == 0, r.stderr
    raw = (ws / name).read_bytes()
    text = gzip.decompress(raw).decode() if gz else raw.decode()
    if fmt == "csv":
        assert text.startswith("image,id,x,y") and len(list(csv.DictReader(io.StringIO(text)))) == 2  # (40,40), (80,80)
    elif fmt == "geojson":
        assert json.loads(text)["type"] == "FeatureCollection"
    else:
        assert json.loads(text)["schema"] == "mastctl/detections@1"


@pytest.mark.parametrize("name, message", [("os1.png", "overlay"), ("x.db", "names no output format"),
                                           ("x.geojson.txt", "names no output format")])
def test_unknown_or_impossible_extensions_are_usage_errors(cli, ws, name, message):
    r = cli("detect", "tile.png", "--roi", "0,0,200,200", "-o", name)
    assert r.exit_code == 2 and message in r.stderr and not (ws / name).exists()


@pytest.mark.parametrize("name, fmt", [("cells.csv", "csv"), ("marked.png", "overlay"), ("all.geojson.gz", "geojson")])
def test_a_file_name_for_several_inputs_is_a_usage_error_not_a_folder_of_that_name(cli, ws, name, fmt):
    shutil.copy(ws / "tile.png", ws / "tile2.png")
    r = cli("detect", "tile.png", "tile2.png", "-o", name)
    assert r.exit_code == 2 and f"names one {fmt} file, but there are 2 inputs" in r.stderr
    assert f"-o {name.split('.')[0]}/ --format {fmt}" in r.stderr and not (ws / name).exists()
    r = cli("detect", "tile.png", "tile2.png", "-o", name + "/", "--format", "json")  # a trailing slash: a folder
    assert r.exit_code == 0, r.stderr
    assert sorted(p.name for p in (ws / name).iterdir()) == ["summary.csv", "tile.json", "tile2.json"]
    (ws / "old.csv").mkdir()  # an existing folder is a folder, whatever its name
    assert cli("detect", "tile.png", "tile2.png", "-o", "old.csv", "--format", "csv").exit_code == 0
    assert (ws / "old.csv" / "tile2.csv").exists()


def test_an_image_without_a_scale_is_detected_at_the_assumed_scale_with_a_warning(cli, ws):
    Image.open(ws / "tile.png").save(ws / "noscale.png")  # no dpi
    r = cli("detect", "noscale.png")
    assert r.exit_code == 0 and r.json()["image"]["mpp"] is None
    assert "noscale.png: no scale in the file, so detected as if 0.5 um/px" in r.stderr and "--mpp" in r.stderr
    shutil.copy(ws / "noscale.png", ws / "noscale2.png")
    r = cli("detect", "noscale.png", "noscale2.png", "tile.png", "-o", "out/")
    assert r.exit_code == 0 and r.stderr.count("no scale in the file") == 1 and "2 images (first " in r.stderr
    for args in (("noscale.png", "--mpp", "0.25"), ("tile.png",)):  # a scale given or in the file: no warning
        r = cli("detect", *args)
        assert r.exit_code == 0 and "no scale" not in r.stderr


def test_an_existing_file_that_is_not_our_output_is_never_overwritten(cli, ws):
    (ws / "s").mkdir()
    for n in ("tile_0000_he.png", "tile_0001_he.png"):
        shutil.copy(ws / "tile.png", ws / "s" / n)
    before = (ws / "s" / "tile_0000_he.png").read_bytes()
    r = cli("detect", "s/tile_0001_he.png", "-o", "s/tile_0000_he.png")
    assert r.exit_code == 2 and "refusing to overwrite" in r.stderr and "--force" in r.stderr
    assert (ws / "s" / "tile_0000_he.png").read_bytes() == before
    (ws / "cells.csv").write_text("my,own,table\n1,2,3\n")
    r = cli("detect", "tile.png", "-o", "cells.csv")
    assert r.exit_code == 2 and (ws / "cells.csv").read_text() == "my,own,table\n1,2,3\n"
    assert cli("detect", "tile.png", "-o", "cells.csv", "--force").exit_code == 0
    assert cli("detect", "tile.png", "-o", "cells.csv").exit_code == 0  # our own output is replaced
    assert cli("detect", "tile.png", "-o", "o.png").exit_code == 0
    assert cli("detect", "tile.png", "-o", "o.png").exit_code == 0  # so is our own overlay
    r = cli("detect", "tile.png", "-o", "cells.geojson")
    assert r.exit_code == 0
    (ws / "cells.geojson").write_text("{}")
    r = cli("detect", "tile.png", "-o", "cells.geojson")
    assert r.exit_code == 2  # a file of another kind under a .geojson name


def test_a_synth_folder_is_read_without_its_ihc_partners(cli, ws):
    synth.generate(ws / "synth", 2, 5, synth.SynthOptions(size=128, mpp=0.5))
    r = cli("--json", "detect", "synth", "-o", "out")
    assert r.exit_code == 0, r.stderr
    assert sorted(Path(row["image"]).name for row in r.json()) == ["synth_s5_0000_he.png", "synth_s5_0001_he.png"]
    explicit = cli("detect", str(ws / "synth" / "synth_s5_0000_ihc.png"))  # named on purpose: still read
    assert explicit.exit_code == 0


def test_mask_keeps_only_the_cells_inside_and_measures_its_tissue(cli, ws):
    square = [[0, 0], [100, 0], [100, 100], [0, 100], [0, 0]]
    hole = [[70, 70], [90, 70], [90, 90], [70, 90], [70, 70]]
    (ws / "m.geojson").write_text(json.dumps({"type": "Feature", "properties": {},
                                              "geometry": {"type": "Polygon", "coordinates": [square, hole]}}))
    r = cli("--json", "detect", "tile.png", "--all-cells", "--mask", "m.geojson", "-o", "m.json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads((ws / "m.json").read_text())
    # (40, 40) is inside; (80, 80) lies in the hole; (120, 120) and (200, 60) are outside
    assert [(c["x"], c["y"]) for c in doc["cells"]] == [(40.0, 40.0)]
    summary = doc["summary"]
    assert 0 < summary["tissue_mm2"] <= (100 * 0.5 / 1000) ** 2 * 1.05  # the polygon's tissue, not the image's


def test_a_folder_run_writes_a_summary_table(cli, ws):
    (ws / "tiles").mkdir()
    for n in ("a", "b"):
        shutil.copy(ws / "tile.png", ws / "tiles" / f"{n}.png")
    r = cli("detect", "tiles", "-o", "out")
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(open(ws / "out" / "summary.csv")))
    assert [Path(row["image"]).name for row in rows] == ["a.png", "b.png"]
    assert rows[0]["mast_cells"] == "2" and float(rows[0]["tissue_mm2"]) > 0 and rows[0]["backend"] == "points"


def test_a_failed_write_leaves_no_partial_output(ws):
    from mastctl import writers

    out = writers.open_output("geojson", {"image": {"path": "x", "width": 10, "height": 10, "mpp": 0.5}, "backend": "t"},
                              path=ws / "half.geojson")
    from mastctl.cells import Cell

    out.write([Cell(1, 1, "mast_cell", "explicit", 0.9)])
    out.abort()
    assert not (ws / "half.geojson").exists() and not list(ws.glob("*.part"))


class ProtocolOnly:
    """A third-party detector that implements nothing but mastctl.protocols.Detector."""

    name = "protocol-only"

    def __init__(self, options=None, profile=None) -> None:
        pass

    def detect(self, image):
        from mastctl.cells import Cell, Detections

        h, w = image.pixels.shape[:2]
        return Detections(image.info, self.name, [Cell(w / 2, h / 2, "mast_cell", "explicit", 0.8)])


def test_a_detector_with_only_the_protocol_runs_in_every_mode(ws, monkeypatch):
    from mastctl import detection
    from mastctl.profile import Profile
    from mastctl.protocols import Detector

    det = ProtocolOnly()
    assert isinstance(det, Detector)
    settings = detection.Settings.from_profile(Profile(), backend="protocol-only", tile_px=128, workers=1)
    (ws / "folder").mkdir()
    shutil.copy(ws / "tile.png", ws / "folder" / "t.png")
    for inputs, out, side in (([ws / "tile.png"], None, False), ([ws / "folder"], ws / "fo", False),
                              ([ws / "tile.png"], ws / "slide.geojson", True)):
        plan = detection.plan(inputs, None if out is None else str(out), None, slide_outputs=side, force=True)
        results = list(detection.run(plan, settings, detector=det, stream=io.StringIO(), collect=True))
        assert all(r.error is None for r in results)
        cells = [c for r in results for c in r.detections.cells]
        assert cells and all(c.label == "mast_cell" for c in cells)
    # as a slide, 256 px at 128 px tiles: one cell per tile core
    assert results[0].summary["tiles"] == 4 and len(results[0].detections.cells) == 4


def test_outputs_follow_their_shipped_json_schemas(cli, ws):
    pytest.importorskip("jsonschema")
    from mastctl import schemas

    doc = cli("detect", "tile.png", "--all-cells").json()
    schemas.validate("detections", doc)
    assert cli("detect", "tile.png", "--workers", "1", "-o", "s.json").exit_code == 0
    schemas.validate("detections", json.loads((ws / "s.json").read_text()))
    schemas.validate("slide-summary", json.loads((ws / "s.json.summary.json").read_text()))
    truth = ws / "truth.json"
    truth.write_text(json.dumps(doc))  # a detections document is truth too
    r = cli("--json", "compare", "tile.png", "--truth", str(truth), "--backend", "points")
    assert r.exit_code == 0, r.stderr
    schemas.validate("compare", r.json())
    assert json.loads(cli("schema", "detections").stdout)["title"] == "mastctl/detections@1"
    assert cli("schema", "nope").exit_code == 2


def test_geojson_carries_provenance_and_the_tissue_and_hotspot_as_annotations(cli, ws):
    big = np.tile(np.asarray(Image.open(ws / "tile.png").convert("RGB")), (4, 4, 1))  # 1024 px: 0.26 mm^2
    Image.fromarray(big).save(ws / "big.png", dpi=(50800, 50800))
    r = cli("detect", "big.png", "--workers", "1", "--hpf-mm2", "0.01", "-o", "s.geojson")
    assert r.exit_code == 0, r.stderr
    gj = json.loads((ws / "s.geojson").read_text())
    prov = gj["properties"]["mastctl"]
    assert prov["backend"] == "points" and prov["image"]["mpp"] == 0.5 and prov["version"]
    kinds = {f["properties"]["objectType"] for f in gj["features"]}
    assert kinds == {"detection", "annotation"}
    names = {f["properties"]["classification"]["name"] for f in gj["features"] if f["properties"]["objectType"] == "annotation"}
    assert names == {"Tissue", "Hotspot (10 HPF)"}
    from mastctl.truth import load_truth

    cells = load_truth(ws / "s.geojson")["s"].cells  # read back as truth: the regions are not cells
    assert cells and {c.label for c in cells} == {"mast_cell"}
