"""Tiles of a physical size over an image, and merging of points found in overlapping tiles.

Used by the detectors that look at an image piece by piece (Gemini, the VLMs)
and by ``finetune prepare``; whole slides have their own tiling (``mastctl.wsi``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mastctl.cells import Cell


@dataclass(frozen=True)
class Tile:
    x0: int  # input-image pixels of the tile's top left
    y0: int
    width: int  # input-image pixels covered
    height: int
    scale: float  # input pixels per sent pixel
    pixels: np.ndarray  # what is sent (resampled)


def plan_tiles(pixels: np.ndarray, mpp: float, tile_um: float, overlap_um: float, tile_mpp: float) -> list[Tile]:
    """Overlapping tiles covering the image, each resampled to ``tile_mpp`` (never upsampled)."""
    h, w = pixels.shape[:2]
    size = max(1, int(round(tile_um / mpp)))
    step = max(1, size - int(round(overlap_um / mpp)))
    scale = max(1.0, tile_mpp / mpp)
    xs = _starts(w, size, step)
    ys = _starts(h, size, step)
    tiles = []
    for y0 in ys:
        for x0 in xs:
            window = pixels[y0:y0 + size, x0:x0 + size, :3]
            tiles.append(Tile(x0, y0, window.shape[1], window.shape[0], scale, _shrink(window, scale)))
    return tiles


def _starts(length: int, size: int, step: int) -> list[int]:
    if length <= size:
        return [0]
    starts = list(range(0, length - size, step))
    starts.append(length - size)
    return sorted(set(starts))


def _shrink(window: np.ndarray, scale: float) -> np.ndarray:
    if scale <= 1.0001:
        return np.ascontiguousarray(window)
    from PIL import Image as PILImage

    h, w = window.shape[:2]
    size = (max(1, int(round(w / scale))), max(1, int(round(h / scale))))
    return np.asarray(PILImage.fromarray(window).resize(size, PILImage.Resampling.LANCZOS))


def merge(cells: Sequence[Cell], radius_px: float) -> tuple[list[Cell], int]:
    """One cell per neighbourhood: the most confident within ``radius_px``; (kept, merged away)."""
    from scipy.spatial import cKDTree

    if not cells:
        return [], 0
    order = sorted(range(len(cells)), key=lambda i: -cells[i].confidence)
    tree = cKDTree(np.array([[c.x, c.y] for c in cells]))
    taken = np.zeros(len(cells), bool)
    kept = []
    for i in order:
        if taken[i]:
            continue
        kept.append(cells[i])
        taken[tree.query_ball_point([cells[i].x, cells[i].y], radius_px)] = True
    return kept, len(cells) - len(kept)
