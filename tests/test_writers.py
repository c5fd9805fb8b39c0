from __future__ import annotations

import csv
import dataclasses
import io
import json
import uuid

import numpy as np
import pytest
from PIL import Image as PILImage

from conftest import he_like
from mastctl import writers
from mastctl.cells import SCHEMA, Cell, Detections, ImageInfo, cell_class
from mastctl.imaging import Image


def sample(path: str = "slides/a.png", mpp: float | None = 0.5) -> Detections:
    cells = [
        Cell(10.5, 20.25, "mast_cell", "explicit", 0.91, {"nucleus_area_um2": 30.5}),
        Cell(40, 30, "mast_cell", "implicit", 0.62),
        Cell(60, 12, "lymphocyte", None, 0.8, {"nucleus_area_um2": 18.0}),
        Cell(5, 5, "mast_cell", None, 0.7),
    ]
    return Detections(ImageInfo(path, 80, 64, mpp), "points", cells, {"load": 0.01, "detect": 0.2})


def test_cell_validation():
    with pytest.raises(ValueError, match="label"):
        Cell(1, 2, "macrophage")
    with pytest.raises(ValueError, match="kind"):
        Cell(1, 2, "mast_cell", "hidden")
    with pytest.raises(ValueError, match="only mast cells have a kind"):
        Cell(1, 2, "lymphocyte", "explicit")
    with pytest.raises(ValueError, match="0..1"):
        Cell(1, 2, confidence=1.5)
    with pytest.raises(ValueError, match="finite"):
        Cell(float("nan"), 2)


def test_summary_counts_and_density_over_tissue():
    s = sample().summary()
    assert (s.mast_cells, s.explicit, s.implicit, s.cells) == (3, 1, 1, 4)
    assert s.image_mm2 == pytest.approx(80 * 64 * 0.25e-6)
    assert s.mast_cells_per_mm2 is None  # no tissue measured: no density (never per image area)
    measured = dataclasses.replace(sample(), tissue_mm2=0.001).summary()
    assert measured.mast_cells_per_mm2 == pytest.approx(3000) and measured.to_dict()["density_over"] == "tissue"
    assert sample(mpp=None).summary().image_mm2 is None


def test_json_document_schema_and_round_trip():
    det = sample()
    doc = json.loads(writers.to_json(det, all_cells=False))
    assert doc["schema"] == SCHEMA
    assert doc["image"] == {"path": "slides/a.png", "width": 80, "height": 64, "mpp": 0.5}
    assert doc["backend"] == "points" and len(doc["cells"]) == 3
    assert doc["cells"][0] == {"x": 10.5, "y": 20.25, "label": "mast_cell", "kind": "explicit", "confidence": 0.91,
                               "features": {"nucleus_area_um2": 30.5}}
    assert set(doc["summary"]) == {"mast_cells", "explicit", "implicit", "cells", "tissue_mm2", "image_mm2",
                                   "mast_cells_per_mm2", "density_over"}
    assert doc["timing_s"] == {"load": 0.01, "detect": 0.2}
    full = json.loads(writers.to_json(det, all_cells=True))
    assert len(full["cells"]) == 4 and full["summary"] == doc["summary"]
    again = Detections.from_dict(full)
    assert again.cells == det.cells and again.image == det.image


def test_csv_columns_and_values():
    rows = list(csv.DictReader(io.StringIO(writers.render(sample(), "csv", all_cells=True))))
    assert list(rows[0]) == ["image", "id", "x", "y", "x_um", "y_um", "mpp", "label", "kind", "confidence", "nucleus_area_um2"]
    assert rows[0]["kind"] == "explicit" and rows[2]["label"] == "lymphocyte" and rows[2]["kind"] == ""
    assert rows[1]["nucleus_area_um2"] == "" and float(rows[0]["x"]) == 10.5 and len(rows) == 4
    assert float(rows[0]["x_um"]) == pytest.approx(5.25) and float(rows[0]["y_um"]) == pytest.approx(10.125)
    gj = writers.to_geojson(sample(), all_cells=True)
    assert [r["id"] for r in rows] == [f["id"] for f in gj["features"]]  # the CSV joins to the GeoJSON


def test_geojson_has_qupath_structure():
    gj = writers.to_geojson(sample(), all_cells=True)
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == 4
    for feature in gj["features"]:
        assert feature["type"] == "Feature"
        uuid.UUID(feature["id"])  # QuPath reads ids as UUIDs
        assert feature["geometry"]["type"] == "Point" and len(feature["geometry"]["coordinates"]) == 2
        props = feature["properties"]
        assert props["objectType"] == "detection"
        cls = props["classification"]
        assert isinstance(cls["name"], str) and len(cls["color"]) == 3 and all(0 <= c <= 255 for c in cls["color"])
        assert isinstance(props["measurements"], dict) and "Confidence" in props["measurements"]
        assert all(isinstance(v, (int, float)) for v in props["measurements"].values())
    names = [f["properties"]["classification"]["name"] for f in gj["features"]]
    assert names == ["Mast cell: Explicit", "Mast cell: Implicit", "Lymphocyte", "Mast cell"]
    assert gj["features"][0]["geometry"]["coordinates"] == [10.5, 20.25]
    assert gj == writers.to_geojson(sample(), all_cells=True)  # deterministic ids


def test_overlay_marks_cells_in_class_colours(tmp_path):
    px = np.full((64, 80, 3), 255, dtype=np.uint8)
    image = Image(px, "a.png", mpp=0.5)
    out = writers.write(sample(), "overlay", tmp_path / "o.png", image=image)
    marked = np.asarray(PILImage.open(out).convert("RGB"))
    assert marked.shape == px.shape
    explicit_colour = np.array(cell_class("mast_cell", "explicit").color)
    assert (np.abs(marked.astype(int) - explicit_colour).sum(axis=2) == 0).sum() > 10
    # lymphocytes are drawn only with all_cells
    lymph = np.array(cell_class("lymphocyte").color)
    assert (np.abs(marked.astype(int) - lymph).sum(axis=2) == 0).sum() == 0
    marked_all = np.asarray(PILImage.open(writers.write(sample(), "overlay", tmp_path / "all.png", image=image, all_cells=True)).convert("RGB"))
    assert (np.abs(marked_all.astype(int) - lymph).sum(axis=2) == 0).sum() > 0


@pytest.mark.parametrize("fmt", writers.FORMATS)
def test_write_every_format_atomically(tmp_path, fmt):
    image = Image(he_like(), "a.png", mpp=0.5)
    path = tmp_path / "nested" / f"out{writers.EXTENSIONS[fmt]}"
    writers.write(sample(), fmt, path, image=image)
    assert path.stat().st_size > 0
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_written_files_get_ordinary_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = writers.write(sample(), "json", tmp_path / "out.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    path.chmod(0o600)
    writers.write(sample(), "csv", path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # an existing file keeps its mode


def test_failed_write_leaves_previous_file_intact(tmp_path):
    path = tmp_path / "keep.json"
    path.write_text("previous")

    def boom(fh):
        fh.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        writers.atomic_write(path, boom)
    assert path.read_text() == "previous" and len(list(tmp_path.iterdir())) == 1


def test_dump_to_stream():
    buf = io.StringIO()
    writers.dump([sample("a.png"), sample("b.png")], "json", buf)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and json.loads(lines[1])["image"]["path"] == "b.png"
    buf = io.StringIO()
    writers.dump([sample("a.png"), sample("b.png")], "csv", buf)
    assert buf.getvalue().count("image,id,x,y") == 1 and len(buf.getvalue().splitlines()) == 7


def test_format_from_extension(tmp_path):
    assert writers.format_for(tmp_path / "x.GeoJSON") == ("geojson", False)
    assert writers.format_for(tmp_path / "x.geo.json") == ("geojson", False)
    assert writers.format_for(tmp_path / "x.geojson.gz") == ("geojson", True)
    assert writers.format_for(tmp_path / "x.csv.gz") == ("csv", True)
    assert writers.format_for(tmp_path / "x.png") == ("overlay", False)
    assert writers.format_for(tmp_path / "x.txt") is None and writers.format_for(tmp_path / "x.png.gz") is None
