"""Cell crops: a fixed physical size around a point, at one fixed scale.

Every crop in the knowledge base is ``crop_um`` micrometres wide at
``CROP_MPP`` µm/px whatever the source image's resolution, so crops from
different scanners compare, and a crop's size in a prompt says its scale.
"""

from __future__ import annotations

import io

import numpy as np

from mastctl.errors import InputError

CROP_MPP = 0.5  # µm per pixel of every stored crop


def side_px(crop_um: float) -> int:
    return max(8, int(round(crop_um / CROP_MPP)))


def cut(pixels: np.ndarray, mpp: float, x: float, y: float, crop_um: float) -> np.ndarray:
    """The ``crop_um`` square centred on (x, y) (image pixels), resampled to CROP_MPP; white outside the image."""
    from scipy import ndimage as ndi

    if not (mpp and mpp > 0):
        raise InputError("cutting a crop needs the image's resolution (mpp); give --mpp")
    h, w = pixels.shape[:2]
    if not (0 <= x < w and 0 <= y < h):
        raise InputError(f"point ({x:g}, {y:g}) lies outside the {w}x{h} image")
    n = side_px(crop_um)
    if abs(mpp - CROP_MPP) < 1e-3:  # plain slicing, no interpolation
        half = n // 2
        x0, y0 = int(round(x)) - half, int(round(y)) - half
        out = np.full((n, n, 3), 255, np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + n, w), min(y0 + n, h)
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = pixels[sy0:sy1, sx0:sx1, :3]
        return out
    scale = CROP_MPP / mpp  # source pixels per crop pixel
    margin = int(np.ceil(scale * n / 2)) + 2
    x0, y0 = int(np.floor(x)) - margin, int(np.floor(y)) - margin
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x0 + 2 * margin, w), min(y0 + 2 * margin, h)
    window = np.full((2 * margin, 2 * margin, 3), 255.0, np.float32)
    window[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = pixels[sy0:sy1, sx0:sx1, :3]
    if scale > 1:  # anti-alias before shrinking
        window = ndi.gaussian_filter(window, sigma=(0.4 * scale, 0.4 * scale, 0), mode="nearest")
    grid = (np.arange(n) - n / 2 + 0.5) * scale
    cols = x - 0.5 - x0 + grid  # pixel centres: image coordinate c covers [c, c+1)
    rows = y - 0.5 - y0 + grid
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    out = np.stack([ndi.map_coordinates(window[..., k], [rr, cc], order=1, mode="nearest") for k in range(3)], axis=-1)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_png(crop: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def from_png(data: bytes) -> np.ndarray:
    from PIL import Image

    from mastctl.kb.records import check_crop_png

    try:
        check_crop_png(data)
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))
    except ValueError as exc:
        raise InputError(str(exc)) from None


def rescale(pixels: np.ndarray, mpp: float) -> np.ndarray:
    """A whole query crop brought to CROP_MPP (a crop given as a file may have any resolution)."""
    if abs(mpp - CROP_MPP) < 1e-3:
        return pixels[..., :3]
    h, w = pixels.shape[:2]
    return cut(pixels, mpp, w / 2, h / 2, min(h, w) * mpp)
