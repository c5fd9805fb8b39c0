from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from conftest import SHARED_DATA
from mastctl import synth
from mastctl.errors import InputError
from mastctl.truth import image_key, load_truth, parse_class


def test_class_names():
    assert parse_class("Mast cell: Explicit") == ("mast_cell", "explicit")
    assert parse_class("implicit") == ("mast_cell", "implicit")
    assert parse_class("mast_cell") == ("mast_cell", None)
    assert parse_class("Plasma cell") == ("plasma_cell", None)
    assert parse_class("inflammatory") == ("other", None)


def test_image_keys():
    assert image_key("a/b/img2.png") == "img2" == image_key("img2")
    assert image_key("x.ome.tif") == "x" and image_key("tile_he.png") == "tile_he"


def test_csv_with_class_column_and_filter(tmp_path):
    (tmp_path / "t.csv").write_text("image,class,x,y\nimg1,detection,1,2\nimg1,fibroblast,1,2\nimg2.png,Mast cell: Implicit,5,6\n")
    t = load_truth(tmp_path / "t.csv")
    assert len(t["img1"].cells) == 2 and t["img2"].cells[0].kind == "implicit"
    t = load_truth(tmp_path / "t.csv", classes=["detection"])
    assert set(t) == {"img1"} and len(t["img1"].cells) == 1 and t["img1"].cells[0].label == "other"


def test_mastctl_csv_and_detections_json_as_truth(tmp_path):
    (tmp_path / "cells.csv").write_text("image,x,y,label,kind,confidence\nslides/a.png,3,4,mast_cell,explicit,0.9\nslides/a.png,5,5,lymphocyte,,0.7\n")
    t = load_truth(tmp_path / "cells.csv")
    assert [(c.label, c.kind) for c in t["a"].cells] == [("mast_cell", "explicit"), ("lymphocyte", None)]
    doc = {"schema": "mastctl/detections@1", "image": {"path": "b.png", "width": 10, "height": 10, "mpp": 0.5},
           "backend": "x", "cells": [{"x": 1, "y": 2, "label": "mast_cell", "kind": "implicit", "confidence": 0.8}]}
    (tmp_path / "b.json").write_text(json.dumps(doc))
    t = load_truth(tmp_path / "b.json")
    assert t["b"].mpp == 0.5 and t["b"].cells[0].kind == "implicit"


def test_qupath_geojson_points_multipoints_and_polygons(tmp_path):
    gj = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [10, 20]},
         "properties": {"classification": {"name": "Mast cell: Explicit", "color": [1, 2, 3]}}},
        {"type": "Feature", "geometry": {"type": "MultiPoint", "coordinates": [[1, 1], [2, 2]]},
         "properties": {"classification": {"name": "Lymphocyte"}}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 2], [0, 2], [0, 0]]]},
         "properties": {"classification": "Mast cell: Implicit"}},
    ]}
    (tmp_path / "slide7.geojson").write_text(json.dumps(gj))
    cells = load_truth(tmp_path / "slide7.geojson")["slide7"].cells
    assert [(c.x, c.y, c.label, c.kind) for c in cells] == [
        (10, 20, "mast_cell", "explicit"), (1, 1, "lymphocyte", None), (2, 2, "lymphocyte", None), (2, 1, "mast_cell", "implicit")]


def test_folder_of_truth_and_bad_files(tmp_path):
    tile = synth.render_tile([1, 0], synth.SynthOptions(size=128))
    synth.write_tile(tile, tmp_path, "t0")
    t = load_truth(tmp_path)
    assert set(t) == {"t0_he"} and t["t0_he"].mpp == 0.5 and len(t["t0_he"].cells) == len(tile.cells)
    (tmp_path / "t0_he.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": []}))
    with pytest.raises(InputError, match="has truth in both t0.json and t0_he.geojson"):
        load_truth(tmp_path)
    (tmp_path / "t0_he.geojson").unlink()
    (tmp_path / "run.summary.json").write_text(json.dumps({"schema": "mastctl/slide-summary@1"}))
    assert set(load_truth(tmp_path)) == {"t0_he"}  # other JSON documents in a folder are not truth
    (tmp_path / "bad.csv").write_text("name,a\n1,2\n")
    with pytest.raises(InputError, match="needs columns image, x, y"):
        load_truth(tmp_path / "bad.csv")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(InputError, match="not readable JSON"):
        load_truth(tmp_path / "x.json")
    with pytest.raises(InputError, match="no such truth"):
        load_truth(tmp_path / "nope.csv")


@pytest.fixture
def tiles(tmp_path):
    for i in range(3):
        synth.write_tile(synth.render_tile([2, i], synth.SynthOptions(size=192)), tmp_path / "val", f"t{i}")
    return tmp_path / "val"


def truth_as_points(tiles, name):
    doc = json.loads((tiles / f"{name}.json").read_text())
    return [[c["x"], c["y"], c["label"], c["kind"], 0.95] for c in doc["cells"]]


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def test_compare_scores_backends_and_writes_report(cli, plugin, tiles, tmp_path):
    # The 'points' plugin reports the truth of tile t0 on every image: perfect on t0, wrong elsewhere.
    (tmp_path / "mastctl.yaml").write_text(f"backend_options:\n  points:\n    cells: {json.dumps(truth_as_points(tiles, 't0'))}\n")
    r = cli("--json", "compare", str(tiles / "t0_he.png"), str(tiles / "t1_he.png"), "--truth", str(tiles),
            "--backends", "points,log,qwen,needs-missing", "--report", "rep.html")
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    runs = {b["backend"]: b for b in doc["backends"]}
    assert "base model" in runs["qwen"]["skipped"]
    assert "pip install mastctl-testplugin[fancy]" in runs["needs-missing"]["skipped"]
    points = runs["points"]
    first = points["images"][0]
    assert first["fp"] == 0 and first["fn"] == 0 and first["tp"] == first["true"] > 0
    assert points["images"][1]["tp"] < points["images"][1]["true"]
    assert runs["log"]["detection"]["tp"] == 0  # the nucleus baseline names no mast cells
    assert set(points["by_kind"]) == {"explicit", "implicit"} and points["seconds_per_megapixel"] >= 0
    assert "skipped" in r.stderr
    html_text = (tmp_path / "rep.html").read_text()
    parser = _Collect()
    parser.feed(html_text)
    assert parser.tags.count("svg") == 2 + 3 and parser.tags.count("img") == 4  # 2 charts, 3 legend marks; 2 images x 2 backends
    assert "n/a" in html_text or "nan" not in html_text.lower()
    assert "score (0 to 1)" in html_text and "true count per image" in html_text  # axes have titles
    assert "data:image/jpeg;base64," in html_text and "points" in html_text and "classList.toggle('big')" in html_text
    assert len(html_text) < 300_000
    assert "<p>2 images · " in html_text and "none from one image" not in html_text
    assert runs["points"]["ci95"]["f1"] is not None  # two images: an interval
    r = cli("--json", "compare", str(tiles / "t0_he.png"), "--truth", str(tiles), "--backends", "log",
            "--report", "one.html")
    assert r.exit_code == 0 and r.json()["backends"][0]["ci95"] == {"precision": None, "recall": None, "f1": None}
    one = (tmp_path / "one.html").read_text()
    assert "<p>1 image · " in one and "(none from one image)" in one


def test_compare_all_cells_table(cli, tiles):
    r = cli("compare", str(tiles), "--truth", str(tiles), "--backends", "log", "--all-cells")
    assert r.exit_code == 0 and "every cell" in r.stdout and "log" in r.stdout
    assert "have no truth" not in r.stderr  # the IHC partners in the folder are not inputs at all


def test_compare_errors(cli, tiles, tmp_path):
    r = cli("compare", str(tiles), "--truth", str(tiles), "--backends", "nosuch")
    assert r.exit_code == 2 and "unknown detector 'nosuch'" in r.stderr
    r = cli("compare", str(tiles), "--truth", str(tiles), "--backends", "qwen,llava")
    assert r.exit_code == 4 and "no backend could run" in r.stderr
    (tmp_path / "other.csv").write_text("image,class,x,y\nzzz,mast,1,1\n")
    r = cli("compare", str(tiles), "--truth", str(tmp_path / "other.csv"), "--backends", "log")
    assert r.exit_code == 3 and "no image has truth" in r.stderr
    r = cli("compare", str(tiles), "--truth", str(tiles), "--backends", "log", "--report", "r.pdf")
    assert r.exit_code == 2


@pytest.mark.skipif(not (SHARED_DATA / "crc_nuclei").exists(), reason="../shared/data not present")
def test_log_baseline_on_real_crc_nuclei(cli):
    crc = SHARED_DATA / "crc_nuclei"
    images = sorted((crc / "images").glob("*.png"))[:6]
    r = cli("--json", "compare", *map(str, images), "--truth", str(crc / "points.csv"), "--truth-class", "detection",
            "--all-cells", "--radius-px", "6", "--mpp", "0.55", "--backends", "log")
    assert r.exit_code == 0, r.stderr
    f1 = r.json()["backends"][0]["detection"]["f1"]
    assert 0.45 < f1 < 0.8  # a plain LoG on hematoxylin: about 0.6 on this set
