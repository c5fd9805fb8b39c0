"""Whole slides: readers and their scale, tiling without duplicates or losses, executors, cohorts."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from conftest import SHARED_DATA
from mastctl import detection, metrics, registry, slides, synth
from mastctl.imaging import Image
from mastctl.profile import Profile
from mastctl.wsi import density, tiles, tissue

PROFILE = Profile()


def run_slide(path, out, fmt=None, **overrides):
    """The one flow on one input, written as a slide (summary and heat map beside OUT)."""
    job_plan = detection.plan([path], str(out), fmt, slide_outputs=True, force=True)
    settings = detection.Settings.from_profile(PROFILE, **overrides)
    result = next(detection.run(job_plan, settings))
    if result.error is not None:
        raise result.error
    return result.summary


def calibration_of(path, tile_px=256):
    reader = slides.open_slide(path)
    mask, scale = tissue.tissue_mask(reader)
    detector = registry.create("detector", "morphology", PROFILE)
    return tiles.calibrate(reader, detector, tiles.plan_tiles(reader, mask, scale, tile_px=tile_px))


def plan_of(reader, roi=None, polygons=None, tile_px=256):
    mask, scale = tissue.tissue_mask(reader, roi)
    if polygons is not None:
        mask &= polygons.rasterise(mask.shape, scale)
    tasks = tiles.plan_tiles(reader, mask, scale, roi=roi, tile_px=tile_px)
    return tasks, sum(t.tissue_mm2 for t in tasks)


@pytest.fixture(scope="module")
def big_tile(tmp_path_factory):
    """A 1024 px synthetic H&E region (0.5 um/px) saved as PNG: cells fall on every 256 px tile border."""
    folder = tmp_path_factory.mktemp("slide")
    tile = synth.render_tile([88, 0], synth.SynthOptions(size=1024, mpp=0.5))
    path = folder / "region.png"
    PILImage.fromarray(tile.he).save(path, dpi=(50800, 50800))
    return path, tile


def test_tiles_find_the_same_cells_as_the_whole_image(big_tile, tmp_path):
    path, tile = big_tile
    out = tmp_path / "cells.geojson"
    summary = run_slide(path, out, all_cells=True, tile_px=256)
    assert summary["tiles"] >= 12
    tiled = [f["geometry"]["coordinates"] for f in json.loads(out.read_text())["features"] if f["geometry"]["type"] == "Point"]
    # the same detector on the whole image, with the slide's calibration
    calibration = calibration_of(path)
    whole = registry.create("detector", "morphology", Profile(), **calibration).detect(Image(tile.he, str(path), 0.5)).cells
    margin = 30 / 0.5  # cells this close to the image edge see white beyond it in tiles
    inner = lambda x, y: margin < x < 1024 - margin and margin < y < 1024 - margin  # noqa: E731
    tiled_in = [p for p in tiled if inner(*p)]
    whole_in = [(c.x, c.y) for c in whole if inner(c.x, c.y)]
    m = metrics.match(tiled_in, whole_in, 1.0)
    assert len(m.pairs) >= 0.99 * len(whole_in) and len(m.unmatched_pred) <= 0.01 * len(tiled_in)
    # no duplicates: no two tiled cells closer than a nucleus
    from scipy.spatial import cKDTree

    assert not cKDTree(np.array(tiled)).query_pairs(2.0)
    on_borders = [p for p in tiled_in if min(p[0] % 256, 256 - p[0] % 256, p[1] % 256, 256 - p[1] % 256) < 8]
    assert len(on_borders) >= 5  # the test really has cells on tile borders


def test_summary_heatmap_and_hotspot(big_tile, tmp_path):
    path, _ = big_tile
    out = tmp_path / "slide.csv"
    summary = run_slide(path, out, tile_px=512, hpf_mm2=0.01)
    doc = json.loads((tmp_path / "slide.csv.summary.json").read_text())["summary"]
    assert doc["mast_cells"] == summary["summary"]["mast_cells"] > 0 and doc["explicit"] + doc["implicit"] == doc["mast_cells"]
    assert 0.2 < doc["tissue_mm2"] <= 0.27  # 512 um square of tissue, minus holes
    assert doc["mast_cells_per_mm2"] == pytest.approx(doc["mast_cells"] / doc["tissue_mm2"], rel=1e-3)
    hot = doc["hotspot"]
    assert hot["fields"] == 10 and 0 < hot["count"] <= doc["mast_cells"]
    assert hot["x"] + hot["width"] <= 1024 and hot["y"] + hot["height"] <= 1024  # inside the image
    rows = list(csv.DictReader(open(out)))
    assert len(rows) == doc["mast_cells"] and {r["label"] for r in rows} == {"mast_cell"}
    heat = PILImage.open(tmp_path / "slide.csv.heatmap.png")
    assert heat.size[0] > 0 and np.asarray(heat).min() < 255


def test_hotspot_picks_the_densest_block():
    grid = density.DensityGrid(20000, 20000, 0.5)  # 10 mm square, 100 um grid
    grid.counts[50:60, 20:45] = 1  # a dense band
    grid.counts[5, 5] = 40
    hot = grid.hotspot(hpf_mm2=0.25, fields=10)  # 500 um fields: 5 grid cells a side
    assert hot["layout"] == "2x5" and hot["count"] >= 240


def test_ome_tiff_reader_reads_tiled_pyramids_and_scale(tmp_path):
    data = synth.render_tile([89, 0], synth.SynthOptions(size=600, mpp=0.25)).he
    path = tmp_path / "s.ome.tif"
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        tif.write(data, tile=(256, 256), subifds=1, photometric="rgb", compression="zlib",
                  metadata={"axes": "YXS", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.25})
        tif.write(data[::2, ::2], tile=(256, 256), subfiletype=1, photometric="rgb", compression="zlib")
    reader = slides.open_slide(path)
    assert isinstance(reader, slides.OmeTiffReader) and reader.mpp == pytest.approx(0.25)
    assert [lv.downsample for lv in reader.levels] == [1.0, 2.0]
    region = reader.read(0, 200, 250, 300, 280)
    assert np.array_equal(region, data[250:530, 200:500])
    edge = reader.read(0, 500, 500, 200, 200)  # past the slide: white
    assert np.array_equal(edge[:100, :100], data[500:600, 500:600]) and (edge[150:, 150:] == 255).all()
    assert np.array_equal(reader.read(1, 0, 0, 100, 100), data[::2, ::2][:100, :100])


@pytest.mark.parametrize("compression", [None, "zlib"])
def test_ome_tiff_strips_are_read_strip_by_strip(tmp_path, compression, monkeypatch):
    data = synth.render_tile([89, 1], synth.SynthOptions(size=400, mpp=0.5)).he
    path = tmp_path / "strips.ome.tif"
    tifffile.imwrite(path, data, photometric="rgb", compression=compression, rowsperstrip=16,
                     metadata={"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    reader = slides.open_slide(path, max_pixels=400 * 64)  # the whole page is over the limit, a strip is not
    assert not reader._levels[0].pages[0].is_tiled
    monkeypatch.setattr(type(reader._levels[0].pages[0]), "asarray", lambda *a, **k: pytest.fail("whole page decoded"))
    for x, y, w, h in ((0, 0, 100, 60), (123, 250, 150, 100), (350, 390, 100, 30)):
        expected = np.full((h, w, 3), 255, np.uint8)
        slides._paste(expected, data, x, y)
        assert np.array_equal(reader.read(0, x, y, w, h), expected)


@pytest.mark.skipif(not (SHARED_DATA / "wsi").exists(), reason="../shared/data not present")
def test_svs_through_openslide_and_ome_crop_scale():
    reader = slides.open_slide(SHARED_DATA / "wsi" / "cmu_small_region.svs")
    assert isinstance(reader, slides.OpenSlideReader) and reader.mpp == pytest.approx(0.499)
    assert (reader.levels[0].width, reader.levels[0].height) == (2220, 2967)
    assert reader.read(0, 100, 100, 64, 32).shape == (32, 64, 3)
    ome = slides.open_slide(SHARED_DATA / "openslide_crops" / "images-OS-1-detail.ome.tif")
    assert ome.mpp == pytest.approx(0.2271, abs=1e-4)


def test_tissue_mask_skips_glass_and_pen(tmp_path):
    canvas = np.full((800, 800, 3), 245, np.uint8)
    canvas[100:400, 100:400] = synth.render_tile([90, 0], synth.SynthOptions(size=300, mpp=0.5)).he
    canvas[500:700, 500:520] = (30, 60, 200)  # a blue pen stroke
    path = tmp_path / "glass.png"
    PILImage.fromarray(canvas).save(path, dpi=(50800, 50800))
    mask, scale = tissue.tissue_mask(slides.open_slide(path))
    mm2 = mask.sum() * (scale * 0.5 / 1000) ** 2
    assert 0.015 < mm2 < 0.03  # the 150 um square of tissue (0.0225 mm^2), no pen, no glass
    tasks, tissue_mm2 = plan_of(slides.open_slide(path), tile_px=128)
    assert all(t.x < 450 and t.y < 450 for t in tasks)  # no tile on the pen stroke or bare glass


def test_roi_and_mask_limit_the_work(big_tile, tmp_path):
    path, _ = big_tile
    reader = slides.open_slide(path)
    tasks, area = plan_of(reader, roi=(0, 0, 512, 512))
    assert len(tasks) == 4 and area <= 0.0656
    from mastctl.wsi.regions import Polygons

    poly = Polygons.from_geojson({"type": "FeatureCollection", "features": [{"type": "Feature", "geometry": {"type": "Polygon",
            "coordinates": [[[600, 600], [1000, 600], [1000, 1000], [600, 1000], [600, 600]]]}, "properties": {}}]})
    tasks, area = plan_of(reader, polygons=poly)
    assert all(t.x >= 512 and t.y >= 512 for t in tasks) and area < 0.045


def test_manifest_is_resumable_and_the_pool_matches(cli, big_tile, tmp_path):
    path, _ = big_tile
    second = tmp_path / "second.png"
    second.write_bytes(path.read_bytes())
    (tmp_path / "cohort.csv").write_text(f"slide,mpp\n{path},\n{second},0.5\n")
    r = cli("--json", "detect", "--manifest", "cohort.csv", "-o", "res", "--workers", "2")
    assert r.exit_code == 0, r.stderr
    rows = r.json()
    assert len(rows) == 2 and rows[0]["summary"]["mast_cells"] == rows[1]["summary"]["mast_cells"] > 0
    table = list(csv.DictReader(open(tmp_path / "res" / "summary.csv")))
    assert [row["image"] for row in table] == [str(path), str(second)]
    before = (tmp_path / "res" / "region.geojson").read_text()
    r = cli("detect", "--manifest", "cohort.csv", "-o", "res")
    assert r.exit_code == 0 and "2 of 2 slides already done" in r.stderr
    # a process pool of 2 gives the same file as one process
    r = cli("detect", str(path), "--roi", "0,0,1024,1024", "-o", "one.geojson", "--workers", "1")
    assert r.exit_code == 0, r.stderr
    assert json.loads((tmp_path / "one.geojson").read_text())["features"] == json.loads(before)["features"]


def test_dask_executor_matches_the_local_pool(big_tile, tmp_path):
    distributed = pytest.importorskip("distributed")
    path, _ = big_tile
    local = run_slide(path, tmp_path / "local.geojson", tile_px=512)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        dask = run_slide(path, tmp_path / "dask.geojson", tile_px=512, executor="dask", scheduler=cluster.scheduler_address)
    assert dask["summary"]["mast_cells"] == local["summary"]["mast_cells"] and dask["tiles"] == local["tiles"]
    assert (tmp_path / "dask.geojson").read_text() == (tmp_path / "local.geojson").read_text()


def test_slide_errors(cli, tmp_path):
    r = cli("detect", "nope.svs", "-o", "x.geojson")
    assert r.exit_code == 3 and "no such file" in r.stderr
    r = cli("detect", "--manifest", "missing.csv", "-o", "out")
    assert r.exit_code == 3
    (tmp_path / "m.csv").write_text("name\nx\n")
    r = cli("detect", "--manifest", "m.csv", "-o", "out")
    assert r.exit_code == 3 and "'slide' column" in r.stderr
    r = cli("detect", "--manifest", "m.csv", "-o", "out", "--executor", "spark")
    assert r.exit_code == 2
    r = cli("detect", "a.svs", "--roi", "1,2,3")
    assert r.exit_code == 2 and "--roi" in r.stderr


def test_out_of_focus_tiles_are_skipped_and_reported(big_tile, tmp_path):
    from scipy import ndimage as ndi

    _, tile = big_tile
    pixels = tile.he.copy()
    pixels[:, :512] = ndi.gaussian_filter(pixels[:, :512], (3, 3, 0))  # the left half out of focus
    path = tmp_path / "half_blurred.png"
    PILImage.fromarray(pixels).save(path, dpi=(50800, 50800))
    s = run_slide(path, tmp_path / "b.geojson", tile_px=256)
    assert s["summary"]["blurred_tiles"] == 8 and s["tiles"] == 16
    cells = [f["geometry"]["coordinates"] for f in json.loads((tmp_path / "b.geojson").read_text())["features"]
             if f["geometry"]["type"] == "Point"]
    assert cells and all(x >= 512 for x, _ in cells)
    assert s["summary"]["blurred_mm2"] == pytest.approx(s["summary"]["tissue_mm2"], rel=0.25)  # half the tissue set aside
    kept = run_slide(path, tmp_path / "k.geojson", tile_px=256, skip_blurred=False)
    assert "blurred_tiles" not in kept["summary"] and kept["summary"]["mast_cells"] >= s["summary"]["mast_cells"]
