"""Tiles: where to read (over tissue, with an overlap wider than a cell), reading and detecting one,
and running many in a local process pool or on a Dask cluster.

A cell is kept by the tile whose core (the tile without its overlap) holds it,
so cells on tile borders are found once. Results come back in tile order.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mastctl import slides
from mastctl.cells import Cell
from mastctl.errors import BackendError, UsageError
from mastctl.wsi.tissue import focus
from mastctl.scale import working

WORK_MPP = 0.5
TILE_PX = 1024  # at the working level
OVERLAP_UM = 24.0  # wider than any cell, so a cell cut by one tile is whole in its neighbour
MIN_TISSUE = 0.02  # a tile with less tissue than this is not read (when an image has several)
# Out-of-focus tiles: high-frequency energy (Laplacian) over contrast at the working scale.
# Sharp tissue scores 0.02-0.4 here (synthetic, the SVS, CRC, OS-1); 1 um of blur drops it to ~0.005.
MIN_FOCUS = 0.01


@dataclass(frozen=True)
class DetectorSpec:
    """How a worker process builds the run's detector (a detector itself may not travel between processes)."""

    name: str
    options: dict = field(default_factory=dict)
    profile: dict = field(default_factory=dict)

    def key(self) -> str:
        return json.dumps([self.name, self.options], sort_keys=True, default=str)

    def create(self):
        from mastctl import registry
        from mastctl.profile import Profile

        return registry.create("detector", self.name, Profile.model_validate(self.profile), **self.options)


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
    mpp: float | None  # level 0, as the run decided it
    max_pixels: int | None = None
    tissue_mm2: float = 0.0  # tissue in the core, from the mask
    skip_blurred: bool = True


@dataclass
class TileResult:
    index: int
    cells: list[Cell]
    seconds: float
    blurred: bool = False
    focus: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    timing_s: dict[str, float] = field(default_factory=dict)  # what the backend timed


def plan_tiles(reader, mask: np.ndarray, scale: float, *, roi=None, tile_px: int = TILE_PX, max_pixels: int | None = None,
               skip_blurred: bool = True, mpp: float | None = None) -> list[TileTask]:
    """Tiles over the tissue ``mask`` (``scale`` level-0 pixels per mask pixel), inside ``roi``.

    An image that fits in one tile is one task whatever its tissue (the user asked for that image);
    otherwise a tile with under MIN_TISSUE of tissue is not read.
    """
    mpp0 = working(mpp or reader.mpp)
    level = slides.best_level(reader.levels, mpp0, WORK_MPP)
    down = reader.levels[level].downsample
    W, H = reader.levels[0].width, reader.levels[0].height
    x0, y0, x1, y1 = (0, 0, W, H) if roi is None else (roi[0], roi[1], min(W, roi[0] + roi[2]), min(H, roi[1] + roi[3]))
    step = int(tile_px * down)
    # overlap in whole multiples of 4 working pixels, so every tile's pixel grid (and the 2x
    # averaging inside the detectors) lines up with the slide's: a tile sees what the slide has
    unit = int(round(4 * down))
    pad = int(math.ceil(OVERLAP_UM / mpp0 / unit)) * unit
    one = (x1 - x0) <= step and (y1 - y0) <= step
    px_mm2 = (scale * mpp0 / 1000.0) ** 2
    tasks = []
    for ty in range(y0, y1, step):
        for tx in range(x0, x1, step):
            w, h = min(step, x1 - tx), min(step, y1 - ty)
            m = mask[int(ty / scale) : int(math.ceil((ty + h) / scale)), int(tx / scale) : int(math.ceil((tx + w) / scale))]
            if one or (m.size and m.mean() > MIN_TISSUE):
                tasks.append(TileTask(len(tasks), reader.path, level, tx, ty, w, h, 0 if one else pad, mpp0 if mpp or reader.mpp else None,
                                      max_pixels, float(m.sum()) * px_mm2, skip_blurred and not one))
    return tasks


def calibrate(reader, detector, tasks: list[TileTask], samples: int = 6) -> dict:
    """Options a detector fixes once per slide (:class:`~mastctl.protocols.SlideCalibrating`), from a few tiles."""
    from mastctl.protocols import SlideCalibrating

    if len(tasks) < 2 or not isinstance(detector, SlideCalibrating):
        return {}
    picks = [tasks[int(i)] for i in np.linspace(0, len(tasks) - 1, min(samples, len(tasks)))]
    down = reader.levels[picks[0].level].downsample
    tiles = [reader.read(t.level, t.x, t.y, min(512, int(t.w / down)), min(512, int(t.h / down))) for t in picks]
    height = min(t.shape[0] for t in tiles)  # side by side, cut to the shortest: no filler to pass for glass
    mosaic = np.hstack([t[:height] for t in tiles])
    mpp = working(picks[0].mpp) * down
    return detector.slide_options(mosaic, mpp)


# --------------------------------------------------------------------------- one tile

_WORKER: dict[str, Any] = {}


def run_tile(task: TileTask, spec: DetectorSpec | None = None, detector=None, reader=None) -> TileResult:
    """Read one tile with its overlap, detect, keep the cells of its core (level-0 coordinates).

    In a worker process the detector and reader are built from ``spec`` and kept for the next
    tile; in the calling process they are passed in.
    """
    from mastctl.detection import detect_one
    from mastctl.imaging import Image

    t0 = time.perf_counter()
    if detector is None or reader is None:
        detector, reader = _worker_state(task, spec)
    down = reader.levels[task.level].downsample
    rx, ry = task.x - task.pad, task.y - task.pad
    rw, rh = int(math.ceil((task.w + 2 * task.pad) / down)), int(math.ceil((task.h + 2 * task.pad) / down))
    pixels = reader.read(task.level, rx, ry, rw, rh)
    p = int(round(task.pad / down))
    sharpness = focus(pixels[p : rh - p, p : rw - p])
    if task.skip_blurred and sharpness < MIN_FOCUS:
        return TileResult(task.index, [], time.perf_counter() - t0, blurred=True, focus=sharpness)
    image = Image(pixels, f"{task.slide}#tile{task.index}" if task.pad else task.slide,
                  None if task.mpp is None else task.mpp * down)
    det = detect_one(detector, image)
    cells = []
    for c in det.cells:
        X, Y = rx + c.x * down, ry + c.y * down
        if task.x <= X < task.x + task.w and task.y <= Y < task.y + task.h:  # the owner-tile rule
            cells.append(c if (X, Y) == (c.x, c.y) else Cell(X, Y, c.label, c.kind, c.confidence, c.features))
    return TileResult(task.index, cells, time.perf_counter() - t0, focus=sharpness, info=dict(det.info),
                      timing_s={k: float(v) for k, v in det.timing_s.items()})


def _worker_state(task: TileTask, spec: DetectorSpec | None):
    if spec is None:
        raise BackendError("a tile in a worker process needs the detector's spec")
    key = spec.key()
    if _WORKER.get("key") != key:
        _WORKER.clear()
        _WORKER.update(key=key, detector=spec.create(), readers={})
    readers = _WORKER["readers"]
    if task.slide not in readers:
        for old in readers.values():
            old.close()
        readers.clear()
        readers[task.slide] = slides.open_slide(task.slide, mpp=task.mpp, max_pixels=task.max_pixels)
    return _WORKER["detector"], readers[task.slide]


def _run_in_worker(args: tuple[TileTask, DetectorSpec]) -> TileResult:
    return run_tile(args[0], args[1])


# --------------------------------------------------------------------------- many tiles


def execute(tasks: list[TileTask], spec: DetectorSpec, *, detector=None, reader=None, workers: int = 1,
            executor: str = "local", scheduler: str | None = None) -> Iterator[TileResult]:
    """Tile results in tile order: here (``detector`` and ``reader`` of this process), a process pool, or Dask."""
    if executor == "dask":
        yield from _dask(tasks, spec, scheduler)
    elif workers <= 1 or len(tasks) <= 1:
        for t in tasks:
            yield run_tile(t, spec, detector, reader)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")
        from mastctl.threads import share_the_cores

        n = min(workers, len(tasks))
        with ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=share_the_cores, initargs=(n,)) as pool:
            yield from pool.map(_run_in_worker, [(t, spec) for t in tasks], chunksize=1)


def _dask(tasks: list[TileTask], spec: DetectorSpec, scheduler: str | None) -> Iterator[TileResult]:
    try:
        from distributed import Client
    except ImportError:
        raise BackendError("--executor dask needs dask.distributed: pip install 'mastctl[dask]'") from None
    if not scheduler:
        raise UsageError("--executor dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
    with Client(scheduler, timeout="20s") as client:
        futures = client.map(_run_in_worker, [(t, spec) for t in tasks], pure=False)
        for fut in futures:  # in tile order
            yield fut.result()
