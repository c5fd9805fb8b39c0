"""Whole slides: tissue mask, tiles with overlap, parallel detection, streamed outputs.

A slide is cut into tiles at the detector's working resolution (the pyramid
level closest to 0.5 um/px), each read with an overlap wider than a cell; a
cell is kept by the tile whose core (the tile without its overlap) holds it,
so cells on tile borders are found once. Tiles without tissue (low-resolution
mask: background glass, pen marks, tiny specks) are never read.

Tiles run in a local process pool (``workers``) or on a Dask distributed
cluster; results come back in tile order and are written as they arrive:
GeoJSON and CSV streams, a density grid for the heat map and the hotspot
(the block of 10 contiguous high-power fields with the most mast cells).
Peak memory is a few tiles per worker plus the small density grid, whatever
the slide's size.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mastctl import slides
from mastctl.cells import Cell
from mastctl.errors import InputError, MastctlError, UsageError

WORK_MPP = 0.5
TILE_PX = 1024  # at the working level
OVERLAP_UM = 24.0  # wider than any cell, so a cell cut by one tile is whole in its neighbour
MASK_UM = 16.0  # resolution of the tissue mask
GRID_UM = 100.0  # resolution of the density grid (heat map)
HPF_MM2 = 0.237  # a 40x high-power field (0.55 mm across)
# Out-of-focus tiles: high-frequency energy (Laplacian) over contrast at the working scale.
# Sharp tissue scores 0.02-0.4 here (synthetic, the SVS, CRC, OS-1); 1 um of blur drops it to ~0.005.
MIN_FOCUS = 0.01


@dataclass(frozen=True)
class TileTask:
    index: int
    slide: str
    level: int
    x: int  # level-0 pixels: the tile's core
    y: int
    w: int
    h: int
    pad: int  # level-0 pixels of overlap on each side
    mpp: float | None
    detector: str
    options: dict
    profile: dict
    tissue_mm2: float = 0.0  # tissue in the core, from the mask
    skip_blurred: bool = True


@dataclass
class TileResult:
    index: int
    cells: list[Cell]
    seconds: float
    blurred: bool = False
    focus: float | None = None


def tissue_mask(reader, roi: tuple[int, int, int, int] | None = None) -> tuple[np.ndarray, float]:
    """(mask, level-0 pixels per mask pixel): tissue at ~16 um/px, without glass, pen and specks."""
    from scipy import ndimage as ndi

    from mastctl import stains

    mpp0 = reader.mpp or WORK_MPP
    level = slides.best_level(reader.levels, mpp0, MASK_UM) if reader.mpp else len(reader.levels) - 1
    lv = reader.levels[level]
    thumb = reader.read(level, 0, 0, lv.width, lv.height)
    factor = max(1, int(round(MASK_UM / (mpp0 * lv.downsample))))
    hh, ww = (thumb.shape[0] // factor) * factor, (thumb.shape[1] // factor) * factor
    if factor > 1 and hh and ww:
        thumb = thumb[:hh, :ww].reshape(hh // factor, factor, ww // factor, factor, 3).mean(axis=(1, 3)).astype(np.uint8)
    scale = lv.downsample * factor
    od = stains.rgb_to_od(thumb)
    r, g, b = (thumb[..., i].astype(np.int16) for i in range(3))
    spread = thumb.max(axis=2).astype(np.int16) - thumb.min(axis=2)
    stained = (od.sum(axis=2) > 0.2) & ((spread > 12) | (od.sum(axis=2) > 0.8))  # coloured, or dark: not grey glass
    pen = ((b - r > 40) & (b - g > 20)) | ((g - r > 30) & (g - b > 10)) | (thumb.max(axis=2) < 50)  # blue, green, black ink
    mask = stained & ~pen
    mask = ndi.binary_closing(mask, iterations=2)
    mask = ndi.binary_fill_holes(mask)
    lab, n = ndi.label(mask)
    if n:
        sizes = ndi.sum(mask, lab, range(1, n + 1))
        min_px = (100.0 / (mpp0 * scale)) ** 2  # specks under 0.01 mm^2
        mask = np.isin(lab, 1 + np.flatnonzero(sizes >= min_px))
    if roi is not None:
        x, y, w, h = roi
        keep = np.zeros_like(mask)
        keep[int(y / scale) : int(math.ceil((y + h) / scale)), int(x / scale) : int(math.ceil((x + w) / scale))] = True
        mask &= keep
    return mask, scale


def plan_tiles(reader, detector: str, options: dict, profile: dict, *, roi=None, mask_polygons=None,
               tile_px: int = TILE_PX, tissue: tuple[np.ndarray, float] | None = None,
               skip_blurred: bool = True) -> tuple[list[TileTask], float, np.ndarray, float]:
    """Tiles over tissue; returns (tasks, tissue area mm^2, mask, mask scale).

    ``tissue`` is a (mask, scale) already computed for this slide (it is read from the slide otherwise).
    """
    mpp0 = reader.mpp or WORK_MPP
    level = slides.best_level(reader.levels, reader.mpp, WORK_MPP)
    down = reader.levels[level].downsample
    if tissue is None:
        mask, scale = tissue_mask(reader, roi)
        if mask_polygons is not None:
            mask &= rasterise(mask_polygons, mask.shape, scale)
    else:
        mask, scale = tissue
    tissue_mm2 = float(mask.sum()) * (scale * mpp0 / 1000.0) ** 2
    W, H = reader.levels[0].width, reader.levels[0].height
    x0, y0, x1, y1 = (0, 0, W, H) if roi is None else (roi[0], roi[1], min(W, roi[0] + roi[2]), min(H, roi[1] + roi[3]))
    step = int(tile_px * down)
    # overlap in whole multiples of 4 working pixels, so every tile's pixel grid (and the 2x
    # averaging inside the detectors) lines up with the slide's: a tile sees what the slide has
    unit = int(round(4 * down))
    pad = int(math.ceil(OVERLAP_UM / mpp0 / unit)) * unit
    tasks = []
    for ty in range(y0, y1, step):
        for tx in range(x0, x1, step):
            w, h = min(step, x1 - tx), min(step, y1 - ty)
            m = mask[int(ty / scale) : int(math.ceil((ty + h) / scale)), int(tx / scale) : int(math.ceil((tx + w) / scale))]
            if m.size and m.mean() > 0.02:
                area = float(m.sum()) * (scale * mpp0 / 1000.0) ** 2
                tasks.append(TileTask(len(tasks), reader.path, level, tx, ty, w, h, pad, reader.mpp, detector, options, profile,
                                      area, skip_blurred))
    return tasks, tissue_mm2, mask, scale


def slide_calibration(reader, detector: str, options: dict, profile: dict, roi=None, samples: int = 6,
                      tissue: tuple[np.ndarray, float] | None = None) -> dict:
    """Options that a detector fixes once per slide (its ``slide_options``), from a few tissue tiles."""
    from mastctl import registry
    from mastctl.profile import Profile

    instance = registry.create("detector", detector, Profile.model_validate(profile), **options)
    if not hasattr(instance, "slide_options"):
        return {}
    tasks, _, _, _ = plan_tiles(reader, detector, options, profile, roi=roi, tile_px=512, tissue=tissue)
    if not tasks:
        return {}
    picks = [tasks[int(i)] for i in np.linspace(0, len(tasks) - 1, min(samples, len(tasks)))]
    down = reader.levels[picks[0].level].downsample
    tiles = [reader.read(t.level, t.x, t.y, int(t.w / down), int(t.h / down)) for t in picks]
    height = max(t.shape[0] for t in tiles)
    mosaic = np.hstack([np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0)), constant_values=255) for t in tiles])
    return instance.slide_options(mosaic, reader.mpp * down)


def rasterise(geojson: dict, shape, scale: float) -> np.ndarray:
    """Polygons of a GeoJSON (level-0 pixels) on the mask grid."""
    from PIL import Image, ImageDraw

    canvas = Image.new("1", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(canvas)
    features = geojson.get("features", [geojson]) if isinstance(geojson, dict) else geojson
    polys = 0
    for f in features:
        geom = f.get("geometry", f)
        rings = geom.get("coordinates", []) if geom.get("type") == "Polygon" else [p[0] for p in geom.get("coordinates", [])] if geom.get("type") == "MultiPolygon" else []
        if geom.get("type") == "Polygon":
            rings = rings[:1]
        for ring in rings:
            draw.polygon([(px / scale, py / scale) for px, py in ring], fill=1)
            polys += 1
    if not polys:
        raise InputError("the --mask GeoJSON holds no polygon")
    return np.asarray(canvas, dtype=bool)


# --------------------------------------------------------------------------- workers

_WORKER: dict[str, Any] = {}


def run_tile(task: TileTask) -> TileResult:
    """Read one tile with its overlap, detect, keep the cells of its core (level-0 coordinates)."""
    from mastctl import registry
    from mastctl.imaging import Image
    from mastctl.profile import Profile

    t0 = time.perf_counter()
    key = (task.slide, task.detector, json.dumps(task.options, sort_keys=True))
    if _WORKER.get("key") != key:
        for reader in _WORKER.get("readers", {}).values():
            reader.close()
        profile = Profile.model_validate(task.profile)
        _WORKER.update(key=key, detector=registry.create("detector", task.detector, profile, **task.options),
                       readers={task.slide: slides.open_slide(task.slide, mpp=task.mpp)})
    reader = _WORKER["readers"][task.slide]
    down = reader.levels[task.level].downsample
    rx, ry = task.x - task.pad, task.y - task.pad
    rw, rh = int(math.ceil((task.w + 2 * task.pad) / down)), int(math.ceil((task.h + 2 * task.pad) / down))
    pixels = reader.read(task.level, rx, ry, rw, rh)
    p = int(round(task.pad / down))
    sharpness = focus(pixels[p : rh - p, p : rw - p])
    if task.skip_blurred and sharpness < MIN_FOCUS:
        return TileResult(task.index, [], time.perf_counter() - t0, blurred=True, focus=sharpness)
    image = Image(pixels, f"{task.slide}#tile{task.index}", (task.mpp or WORK_MPP) * down)
    det = _WORKER["detector"].detect(image)
    cells = []
    for c in det.cells:
        X, Y = rx + c.x * down, ry + c.y * down
        if task.x <= X < task.x + task.w and task.y <= Y < task.y + task.h:  # the owner-tile rule
            cells.append(Cell(X, Y, c.label, c.kind, c.confidence, c.features))
    return TileResult(task.index, cells, time.perf_counter() - t0, focus=sharpness)


def focus(rgb: np.ndarray) -> float:
    """Variance of the Laplacian over the variance of the image (gray): low when out of focus."""
    from scipy import ndimage as ndi

    gray = rgb.astype(np.float32).mean(axis=2)
    if gray.size < 64:
        return 1.0
    lap = ndi.laplace(ndi.gaussian_filter(gray, 0.7))
    return float(lap.var() / (gray.var() + 1e-3))


def execute(tasks: list[TileTask], *, workers: int = 1, executor: str = "local", scheduler: str | None = None) -> Iterator[TileResult]:
    """Tile results in tile order, from a local pool or a Dask cluster."""
    if executor == "dask":
        yield from _dask(tasks, scheduler)
    elif workers <= 1:
        for t in tasks:
            yield run_tile(t)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            yield from pool.map(run_tile, tasks, chunksize=1)


def _dask(tasks: list[TileTask], scheduler: str | None) -> Iterator[TileResult]:
    try:
        from distributed import Client
    except ImportError:
        from mastctl.errors import BackendError

        raise BackendError("--executor dask needs dask.distributed: pip install 'mastctl[dask]'") from None
    if not scheduler:
        raise UsageError("--executor dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
    with Client(scheduler, timeout="20s") as client:
        futures = client.map(run_tile, tasks, pure=False)
        for fut in futures:  # in tile order
            yield fut.result()


# --------------------------------------------------------------------------- outputs


@dataclass
class SlideSummary:
    slide: str
    width: int
    height: int
    mpp: float | None
    tissue_mm2: float
    mast_cells: int = 0
    explicit: int = 0
    implicit: int = 0
    cells: int = 0
    tiles: int = 0
    blurred_tiles: int = 0
    blurred_mm2: float = 0.0
    seconds: float = 0.0
    hotspot: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    @property
    def density(self) -> float | None:
        return self.mast_cells / self.tissue_mm2 if self.tissue_mm2 else None

    def to_dict(self) -> dict[str, Any]:
        return {"schema": "mastctl/slide-summary@1", "slide": self.slide, "width": self.width, "height": self.height,
                "mpp": self.mpp, "tissue_mm2": round(self.tissue_mm2, 4), "mast_cells": self.mast_cells,
                "explicit": self.explicit, "implicit": self.implicit,
                "mast_cells_per_mm2": None if self.density is None else round(self.density, 3),
                "cells_written": self.cells, "tiles": self.tiles, "blurred_tiles": self.blurred_tiles,
                "blurred_mm2": round(self.blurred_mm2, 4), "seconds": round(self.seconds, 2),
                "hotspot": self.hotspot, "outputs": self.outputs}


class DensityGrid:
    """Mast cells counted on a coarse grid (GRID_UM) over the slide."""

    def __init__(self, width: int, height: int, mpp: float) -> None:
        self.cell_px = GRID_UM / mpp
        self.mpp = mpp
        self.counts = np.zeros((int(math.ceil(height / self.cell_px)), int(math.ceil(width / self.cell_px))), np.int32)

    def add(self, cells: list[Cell]) -> None:
        for c in cells:
            if c.is_mast_cell:
                self.counts[min(int(c.y / self.cell_px), self.counts.shape[0] - 1), min(int(c.x / self.cell_px), self.counts.shape[1] - 1)] += 1

    def hotspot(self, hpf_mm2: float = HPF_MM2, fields: int = 10) -> dict[str, Any]:
        """The block of ``fields`` contiguous HPFs (2 x 5 or 5 x 2) with the most mast cells."""
        side_um = math.sqrt(hpf_mm2) * 1000.0
        k = max(1, int(round(side_um / GRID_UM)))  # grid cells per HPF side
        best = {"count": 0}
        c = self.counts
        integral = np.pad(c.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        rows_cols = [(2, fields // 2), (fields // 2, 2)] if fields % 2 == 0 else [(1, fields), (fields, 1)]
        for rows, cols in rows_cols:
            bh, bw = min(rows * k, c.shape[0]), min(cols * k, c.shape[1])
            sums = integral[bh:, bw:] - integral[:-bh, bw:] - integral[bh:, :-bw] + integral[:-bh, :-bw]
            if sums.size and int(sums.max()) >= best["count"]:
                y, x = np.unravel_index(int(np.argmax(sums)), sums.shape)
                px = self.cell_px
                best = {"count": int(sums.max()), "fields": fields, "field_mm2": hpf_mm2, "layout": f"{rows}x{cols}",
                        "x": round(float(x * px), 1), "y": round(float(y * px), 1), "width": round(float(bw * px), 1), "height": round(float(bh * px), 1)}
        return best

    def heatmap_png(self, path: Path) -> Path:
        """Mast cells per mm^2 on the grid, white (none) to dark red (the slide's maximum)."""
        from PIL import Image

        from mastctl.writers import atomic_write

        density = self.counts / ((GRID_UM / 1000.0) ** 2)
        top = max(float(density.max()), 1e-9)
        t = np.clip(density / top, 0, 1)[..., None]
        rgb = (np.array([255, 255, 255]) * (1 - t) + np.array([180, 0, 20]) * t).astype(np.uint8)
        image = Image.fromarray(rgb).resize((max(1, rgb.shape[1] * 4), max(1, rgb.shape[0] * 4)), Image.NEAREST)
        atomic_write(path, lambda fh: image.save(fh, format="PNG"))
        return path


class StreamWriter:
    """GeoJSON and/or CSV written feature by feature (constant memory), finished atomically."""

    def __init__(self, path: Path, fmt: str, slide: str, all_cells: bool) -> None:
        self.path, self.fmt, self.slide, self.all_cells = path, fmt, slide, all_cells
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(f".{path.name}.part")
        self.fh = open(self.tmp, "w", encoding="utf-8")
        self.n = 0
        if fmt == "geojson":
            self.fh.write('{"type": "FeatureCollection", "features": [\n')
        else:
            import csv

            self.csv = csv.writer(self.fh, lineterminator="\n")
            self.csv.writerow(["image", "x", "y", "label", "kind", "confidence"])

    def write(self, cells: list[Cell]) -> int:
        from mastctl.writers import feature_id, geojson_feature

        chosen = [c for c in cells if self.all_cells or c.is_mast_cell]
        if self.fmt == "geojson":
            for c in chosen:
                feature = geojson_feature(c, feature_id(self.slide, self.n))
                self.fh.write((",\n" if self.n else "") + json.dumps(feature))
                self.n += 1
        else:
            for c in chosen:
                self.csv.writerow([self.slide, f"{c.x:.2f}", f"{c.y:.2f}", c.label, c.kind or "", f"{c.confidence:.4f}"])
                self.n += 1
        return len(chosen)

    def close(self) -> None:
        if self.fmt == "geojson":
            self.fh.write("\n]}\n")
        self.fh.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        self.fh.close()
        if self.tmp.exists():
            self.tmp.unlink()


def process_slide(path: Path, output: Path, *, fmt: str = "geojson", detector: str, options: dict, profile: dict,
                  mpp: float | None = None, roi=None, mask_geojson=None, workers: int = 1, executor: str = "local",
                  scheduler: str | None = None, all_cells: bool = False, hpf_mm2: float = HPF_MM2,
                  skip_blurred: bool = True, tile_px: int = TILE_PX,
                  on_progress: Callable[[int, int], None] | None = None) -> SlideSummary:
    """Detect over a whole slide; writes OUT (geojson|csv), OUT.summary.json and OUT.heatmap.png."""
    if fmt not in ("geojson", "csv"):
        raise UsageError(f"whole slides are written as geojson or csv, not {fmt}")
    reader = slides.open_slide(path, mpp=mpp)
    try:
        if reader.mpp is None:
            raise InputError(f"{path}: the slide carries no scale; pass --mpp")
        tissue = tissue_mask(reader, roi)  # read once: for the calibration sample and for the tiles
        if mask_geojson is not None:
            tissue[0][:] &= rasterise(mask_geojson, tissue[0].shape, tissue[1])
        options = {**options, **slide_calibration(reader, detector, options, profile, roi, tissue=tissue)}
        tasks, _, _, _ = plan_tiles(reader, detector, options, profile, roi=roi, tile_px=tile_px, tissue=tissue,
                                    skip_blurred=skip_blurred)
        tissue_mm2 = sum(t.tissue_mm2 for t in tasks)  # the tissue that tiles cover
        summary = SlideSummary(str(path), reader.levels[0].width, reader.levels[0].height, reader.mpp, tissue_mm2, tiles=len(tasks))
        grid = DensityGrid(reader.levels[0].width, reader.levels[0].height, reader.mpp)
    finally:
        reader.close()
    writer = StreamWriter(output, fmt, str(path), all_cells)
    t0 = time.perf_counter()
    try:
        for done, result in enumerate(execute(tasks, workers=workers, executor=executor, scheduler=scheduler), start=1):
            if result.blurred:  # out of focus: not analysed, and not counted as tissue
                summary.blurred_tiles += 1
                summary.blurred_mm2 += tasks[result.index].tissue_mm2
                summary.tissue_mm2 = max(0.0, summary.tissue_mm2 - tasks[result.index].tissue_mm2)
            summary.cells += writer.write(result.cells)
            grid.add(result.cells)
            mast = [c for c in result.cells if c.is_mast_cell]
            summary.mast_cells += len(mast)
            summary.explicit += sum(c.kind == "explicit" for c in mast)
            summary.implicit += sum(c.kind == "implicit" for c in mast)
            if on_progress:
                on_progress(done, len(tasks))
    except BaseException:
        writer.abort()
        raise
    writer.close()
    summary.seconds = time.perf_counter() - t0
    summary.hotspot = grid.hotspot(hpf_mm2)
    heat = grid.heatmap_png(output.with_name(output.name + ".heatmap.png"))
    summary.outputs = {"cells": str(output), "heatmap": str(heat), "summary": str(output.with_name(output.name + ".summary.json"))}
    from mastctl.writers import atomic_write

    text = json.dumps(summary.to_dict(), indent=1) + "\n"
    atomic_write(Path(summary.outputs["summary"]), lambda fh: fh.write(text.encode()))
    return summary


# --------------------------------------------------------------------------- cohorts


@dataclass(frozen=True)
class SlideJob:
    slide: Path
    output: Path
    fmt: str
    mpp: float | None = None

    @property
    def summary_path(self) -> Path:
        return self.output.with_name(self.output.name + ".summary.json")

    @property
    def done(self) -> bool:
        return self.summary_path.is_file() and self.output.is_file()


def slide_jobs(images: list[Path], manifest: Path | None, output: Path | None, fmt: str) -> list[SlideJob]:
    """One job per slide: its output file (a folder of them for several slides or a manifest)."""
    import csv

    if fmt not in ("geojson", "csv"):
        raise UsageError(f"whole slides are written as geojson or csv (--format), not {fmt}")
    entries: list[tuple[Path, float | None]] = [(p, None) for p in images]
    if manifest is not None:
        if not manifest.is_file():
            raise InputError(f"{manifest}: no such manifest")
        with open(manifest, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
        if not rows or "slide" not in {k.strip().lower() for k in rows[0]}:
            raise InputError(f"{manifest}: needs a 'slide' column (and optionally 'mpp')")
        for row in rows:
            row = {k.strip().lower(): (v or "").strip() for k, v in row.items()}
            try:
                slide_mpp = float(row["mpp"]) if row.get("mpp") else None
            except ValueError:
                raise InputError(f"{manifest}: mpp {row['mpp']!r} is not a number") from None
            entries.append((manifest.parent / row["slide"], slide_mpp))
    if not entries:
        raise UsageError("no slides given")
    several = len(entries) > 1 or manifest is not None
    if output is None:
        raise UsageError("whole slides need -o: a file for one slide, a folder for several")
    if several and output.exists() and not output.is_dir():
        raise UsageError(f"-o {output}: with several slides -o is a folder")
    jobs, seen = [], set()
    for slide, slide_mpp in entries:
        target = output / f"{_stem(slide)}.{fmt}" if several else output
        if target in seen:
            raise UsageError(f"two slides would write {target}: give them distinct names")
        seen.add(target)
        jobs.append(SlideJob(slide, target, fmt, slide_mpp))
    return jobs


def run_jobs(jobs: list[SlideJob], *, resume: bool, keep_going: bool, on_progress=None, on_error=None,
             **slide_options: Any) -> tuple[list[dict[str, Any]], int, int]:
    """Process slides in order; returns (summaries, slides failed, slides already done).

    ``resume`` takes finished slides' summaries from disk instead of redoing them; with
    ``keep_going`` a slide's error is reported (``on_error``) and the others still run.
    ``on_progress(job, done, total)`` follows the tiles; the rest goes to ``process_slide``.
    """
    rows: list[dict[str, Any]] = []
    failed = already = 0
    for job in jobs:
        if resume and job.done:
            rows.append(json.loads(job.summary_path.read_text()))
            already += 1
            continue
        progress = (lambda done, total, _job=job: on_progress(_job, done, total)) if on_progress else None
        try:
            options = {k: v for k, v in slide_options.items() if k != "mpp"}
            summary = process_slide(job.slide, job.output, fmt=job.fmt, mpp=job.mpp or slide_options.get("mpp"),
                                    on_progress=progress, **options)
        except MastctlError as exc:
            if not keep_going:
                raise
            failed += 1
            if on_error:
                on_error(job, exc)
            continue
        rows.append(summary.to_dict())
    return rows, failed, already


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def parse_roi(text: str) -> tuple[int, int, int, int]:
    try:
        x, y, w, h = (int(float(v)) for v in text.split(","))
    except ValueError:
        raise UsageError(f"--roi wants x,y,w,h in level-0 pixels, got {text!r}") from None
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise UsageError(f"--roi {text}: x, y must be >= 0 and w, h > 0")
    return x, y, w, h


def read_mask(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no such mask file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable GeoJSON: {exc}") from None


def write_cohort_table(path: Path, rows: list[dict]) -> Path:
    """One line per slide: the cohort's summary table."""
    import csv
    import io

    from mastctl.writers import atomic_write

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["slide", "tissue_mm2", "mast_cells", "explicit", "implicit", "mast_cells_per_mm2", "hotspot_count", "tiles", "seconds"])
    for r in rows:
        writer.writerow([r["slide"], r["tissue_mm2"], r["mast_cells"], r["explicit"], r["implicit"], r["mast_cells_per_mm2"],
                         r["hotspot"].get("count", 0), r["tiles"], r["seconds"]])
    atomic_write(path, lambda fh: fh.write(buf.getvalue().encode()))
    return path
