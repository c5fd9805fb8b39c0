"""Where the tissue is: a coarse mask of a slide or an image (no glass, pen or specks), and its area.

The mask is read from the pyramid level closest to ``MASK_UM`` per pixel (a
small image gets a finer mask, so a single tile still has a usable one). A
level that is too big to hold at once (a slide without a pyramid) is read in
bands, each shrunk before the next is read: memory stays bounded whatever the
slide's size.
"""

from __future__ import annotations

import math

import numpy as np

from mastctl import slides
from mastctl.scale import working

MASK_UM = 16.0  # resolution of the tissue mask of a slide
MIN_MASK_UM = 2.0  # ... and of a small image
SPECK_MM2 = 0.01  # tissue pieces smaller than this are dust (at most 5% of the image)
BAND_PX = 2048  # rows read at once when the mask level is large


def mask_scale_um(width_um: float, height_um: float) -> float:
    """Micrometres per mask pixel: 16 for slides; finer for small images (at least 64 mask pixels a side)."""
    return float(min(MASK_UM, max(MIN_MASK_UM, min(width_um, height_um) / 64.0)))


def thumbnail(reader, mask_um: float) -> tuple[np.ndarray, float]:
    """(RGB image at ~``mask_um``, level-0 pixels per thumbnail pixel), read block by block."""
    mpp0 = working(reader.mpp)
    level = slides.best_level(reader.levels, mpp0, mask_um) if reader.mpp else len(reader.levels) - 1
    lv = reader.levels[level]
    factor = max(1, int(round(mask_um / (mpp0 * lv.downsample))))
    out_w, out_h = max(1, lv.width // factor), max(1, lv.height // factor)
    block = max(factor, (BAND_PX // factor) * factor)  # level pixels per block side
    out = np.empty((out_h, out_w, 3), np.uint8)
    for y in range(0, out_h * factor, block):
        for x in range(0, out_w * factor, block):
            h, w = min(block, out_h * factor - y), min(block, out_w * factor - x)
            piece = reader.read(level, int(round(x * lv.downsample)), int(round(y * lv.downsample)), w, h)
            if factor > 1:
                piece = piece.reshape(h // factor, factor, w // factor, factor, 3).mean(axis=(1, 3)).astype(np.uint8)
            out[y // factor : (y + h) // factor, x // factor : (x + w) // factor] = piece
    return out, lv.downsample * factor


def tissue_mask(reader, roi: tuple[int, int, int, int] | None = None, mask_um: float | None = None) -> tuple[np.ndarray, float]:
    """(mask, level-0 pixels per mask pixel): tissue without glass, pen and specks, inside ``roi``."""
    from scipy import ndimage as ndi

    from mastctl import stains

    mpp0 = working(reader.mpp)
    W, H = reader.levels[0].width, reader.levels[0].height
    um = mask_um or mask_scale_um(W * mpp0, H * mpp0)
    thumb, scale = thumbnail(reader, um)
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
        px_mm2 = (mpp0 * scale / 1000.0) ** 2
        min_px = min(SPECK_MM2, 0.05 * W * H * (mpp0 / 1000.0) ** 2) / px_mm2
        mask = np.isin(lab, 1 + np.flatnonzero(sizes >= min_px))
    if roi is not None:
        x, y, w, h = roi
        keep = np.zeros_like(mask)
        keep[int(y / scale) : int(math.ceil((y + h) / scale)), int(x / scale) : int(math.ceil((x + w) / scale))] = True
        mask &= keep
    return mask, scale


def area_mm2(mask: np.ndarray, scale: float, mpp0: float) -> float:
    """Area of a mask's true pixels, in mm^2 (``scale`` level-0 pixels per mask pixel)."""
    return float(mask.sum()) * (scale * mpp0 / 1000.0) ** 2


def focus(rgb: np.ndarray) -> float:
    """Variance of the Laplacian over the variance of the image (gray): low when out of focus."""
    from scipy import ndimage as ndi

    gray = rgb.astype(np.float32).mean(axis=2)
    if gray.size < 64:
        return 1.0
    lap = ndi.laplace(ndi.gaussian_filter(gray, 0.7))
    return float(lap.var() / (gray.var() + 1e-3))


def outline(mask: np.ndarray, scale: float, max_rings: int = 200, tolerance_px: float = 1.0) -> list[list[list[float]]]:
    """The mask's outer boundaries as closed rings of level-0 [x, y] (simplified; the largest first)."""
    from skimage import measure

    if not mask.any():
        return []
    padded = np.pad(mask.astype(np.uint8), 1)
    contours = measure.find_contours(padded, 0.5)
    rings = []
    for c in sorted(contours, key=len, reverse=True)[:max_rings]:
        c = measure.approximate_polygon(c, tolerance_px)
        if len(c) < 4:
            continue
        ring = [[round(float(col - 1 + 0.5) * scale, 1), round(float(row - 1 + 0.5) * scale, 1)] for row, col in c]
        if ring[0] != ring[-1]:
            ring.append(ring[0])
        rings.append(ring)
    return rings
