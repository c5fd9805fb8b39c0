"""Image loading: any common format -> RGB uint8 pixels with a physical scale.

``load(path, mpp=None)`` is the one entry point. It recognises the format by
its first bytes (not the file name), guards against decompression bombs
before decoding, and turns every way a file can be bad into one
:class:`~mastctl.errors.InputError` line.

Physical scale (micrometres per pixel, "mpp") comes from, in order: the
``mpp`` argument (``--mpp``), OME-XML ``PhysicalSizeX``, an Aperio
``MPP = x`` image description, TIFF ``XResolution``/``ResolutionUnit``, and a
PNG ``pHYs`` / JPEG density. A file resolution that is not plausible for a
microscope (outside 0.01-100 um/px, e.g. the 72 dpi that editors write) is
ignored rather than trusted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mastctl.cells import ImageInfo
from mastctl.errors import InputError

if TYPE_CHECKING:  # numpy is imported lazily: `mastctl --help` must stay fast
    import numpy as np

DEFAULT_MAX_PIXELS = 300_000_000
"""Largest image decoded whole (about 0.9 GB as RGB); 0 or None disables."""


SUPPORTED = "PNG, JPEG, TIFF/OME-TIFF/SVS, BMP, WebP"
# File name endings of images (a folder given as input stands for the files with these).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".svs", ".bmp", ".webp", ".ndpi", ".mrxs"})

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"II+\x00", "TIFF"),  # BigTIFF
    (b"MM\x00+", "TIFF"),
    (b"BM", "BMP"),
)


@dataclass(frozen=True)
class Image:
    """Decoded pixels (H x W x 3, uint8, RGB) with their physical scale."""

    pixels: "np.ndarray"
    path: str
    mpp: float | None = None
    mpp_source: str | None = None  # "option", "ome", "aperio", "tiff", "png", "jpeg"

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def info(self) -> ImageInfo:
        return ImageInfo(path=self.path, width=self.width, height=self.height, mpp=self.mpp)


def sniff_format(path: Path) -> str | None:
    """The container format from the file's first bytes, or None."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


def load(path: str | os.PathLike[str], mpp: float | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image:
    """Read ``path`` as RGB uint8 with its um/px scale (``mpp`` overrides the file)."""
    from mastctl.scale import checked

    p = Path(path)
    mpp = checked(mpp, "--mpp")
    fmt = check_readable(p)
    try:
        if fmt == "TIFF":
            pixels, file_mpp, source = _load_tiff(p, max_pixels)
        else:
            pixels, file_mpp, source = _load_pillow(p, fmt, max_pixels)
    except InputError:
        raise
    except MemoryError:
        raise InputError(f"{p}: not enough memory to decode this image; lower its size or use a tiled reader") from None
    except Exception as exc:  # decoders raise many types for corrupt data
        raise InputError(f"{p}: cannot decode {fmt} image: {_short(exc)}") from exc
    if mpp is not None:
        file_mpp, source = float(mpp), "option"
    return Image(pixels=pixels, path=str(p), mpp=file_mpp, mpp_source=source)


def check_readable(p: Path, sniff: bool = True) -> str | None:
    """The file's format by content; InputError for a missing, unreadable, empty or unknown file."""
    if str(p) in ("", "."):
        raise InputError("an empty file name")
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not an image")
    if not os.access(p, os.R_OK):
        raise InputError(f"{p}: permission denied")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: file is empty")
    if not sniff:
        return None
    fmt = sniff_format(p)
    if fmt is None:
        raise InputError(f"{p}: not a supported image format (supported: {SUPPORTED})")
    return fmt


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


MIN_SIDE_PX = 8  # smaller than a nucleus at any scale: no cell can be in it (the detection flow refuses it)


def _guard(p: Path, width: int, height: int, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise InputError(f"{p}: image has no pixels ({width}x{height})")
    n = width * height
    if max_pixels and n > max_pixels:
        raise InputError(
            f"{p}: {width}x{height} = {n:,} pixels exceeds the decompression-bomb limit of "
            f"{max_pixels:,}; if you trust this file, raise it with --max-pixels N (0 = no limit), "
            "or save it as a tiled pyramid (OME-TIFF), which is read region by region"
        )


def _plausible(mpp: float | None) -> float | None:
    from mastctl.scale import plausible

    return plausible(mpp)


# --------------------------------------------------------------------------- Pillow


def _load_pillow(p: Path, fmt: str, max_pixels: int | None):
    import numpy as np
    from PIL import Image as PILImage

    PILImage.MAX_IMAGE_PIXELS = None  # our own guard below, with a clearer message
    with PILImage.open(p) as im:
        _guard(p, im.width, im.height, max_pixels)
        im.load()
        dpi = im.info.get("dpi")
        pixels = _pil_to_rgb(im, np)
    file_mpp = None
    if dpi and dpi[0]:
        file_mpp = _plausible(25400.0 / float(dpi[0]))
    return pixels, file_mpp, (fmt.lower() if file_mpp else None)


def _pil_to_rgb(im, np) -> "np.ndarray":
    mode = im.mode
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        return _composite_on_white(np.asarray(im.convert("RGBA")), np)
    if mode.startswith("I;16") or mode in ("I", "F"):
        return gray_to_rgb(to_uint8(np.asarray(im), np), np)
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(im))
    return np.ascontiguousarray(np.asarray(im.convert("RGB")))  # L, 1, P, CMYK, YCbCr, ...


# --------------------------------------------------------------------------- TIFF


def _load_tiff(p: Path, max_pixels: int | None):
    import logging

    import numpy as np
    import tifffile

    # tifffile logs its repairs of odd files as warnings; our errors say what matters.
    logging.getLogger("tifffile").setLevel(logging.ERROR)
    with tifffile.TiffFile(p) as tif:
        if not tif.series:
            raise InputError(f"{p}: cannot decode TIFF image: it holds no readable image")
        series = tif.series[0]
        level = series.levels[0] if getattr(series, "levels", None) else series
        axes = level.axes
        shape = dict(zip(axes, level.shape))
        width, height = shape.get("X", 0), shape.get("Y", 0)
        _guard(p, width, height, max_pixels)
        page = level.pages[0] if level.pages else tif.pages[0]
        data = level.asarray()
        file_mpp, source = _tiff_mpp(tif, page)
        photometric = getattr(page, "photometric", None)
        photometric = 2 if photometric is None else int(photometric)
        colormap = getattr(page, "colormap", None)
        extrasamples = tuple(getattr(page, "extrasamples", ()) or ())
    pixels = _tiff_to_rgb(p, data, axes, photometric, colormap, extrasamples, np)
    return pixels, file_mpp, source


def _tiff_to_rgb(p: Path, data, axes: str, photometric: int, colormap, extrasamples, np):
    # Drop every axis but Y, X and one channel axis (first plane of T/Z/...).
    keep_channel = "S" if "S" in axes else ("C" if "C" in axes else None)
    index = []
    for ax in axes:
        index.append(slice(None) if ax in ("Y", "X", keep_channel) else 0)
    data = data[tuple(index)]
    kept = [ax for ax in axes if ax in ("Y", "X", keep_channel)]
    order = [kept.index("Y"), kept.index("X")] + ([kept.index(keep_channel)] if keep_channel else [])
    data = np.transpose(data, order)
    if data.ndim == 3 and data.shape[2] == 1:
        data = data[:, :, 0]

    if photometric == 3 and colormap is not None and data.ndim == 2:  # palette
        lut = np.asarray(colormap).T  # (N, 3) uint16
        lut8 = (lut.astype(np.float64) / 257.0).round().astype(np.uint8) if lut.max() > 255 else lut.astype(np.uint8)
        return np.ascontiguousarray(lut8[data])
    if data.ndim == 2:
        gray = to_uint8(data, np)
        if photometric == 0:  # MinIsWhite
            gray = 255 - gray
        return gray_to_rgb(gray, np)
    channels = data.shape[2]
    rgb8 = to_uint8(data, np)
    if channels == 2:  # gray + alpha
        rgba = np.dstack([rgb8[..., 0]] * 3 + [rgb8[..., 1]])
        return _composite_on_white(rgba, np)
    if channels == 4 and (photometric == 5):  # separated (CMYK)
        from PIL import Image as PILImage

        return np.asarray(PILImage.fromarray(rgb8, "CMYK").convert("RGB"))
    if channels == 4:
        return _composite_on_white(rgb8, np)
    if channels == 3:
        return np.ascontiguousarray(rgb8)
    raise InputError(f"{p}: {channels}-channel image is not a brightfield RGB/gray image")


def _tiff_mpp(tif, page) -> tuple[float | None, str | None]:
    if tif.is_ome and tif.ome_metadata:
        mpp = _plausible(ome_physical_size_um(tif.ome_metadata))
        if mpp:
            return mpp, "ome"
    description = getattr(page, "description", "") or ""
    m = re.search(r"\bMPP\s*=\s*([0-9]+(?:\.[0-9]*)?)", description)
    if m:
        mpp = _plausible(float(m.group(1)))
        if mpp:
            return mpp, "aperio"
    tags = page.tags
    xres, unit = tags.get("XResolution"), tags.get("ResolutionUnit")
    if xres is not None and unit is not None:
        num, den = xres.value if isinstance(xres.value, tuple) else (xres.value, 1)
        per_unit = float(num) / float(den) if den else 0.0
        um_per_unit = {2: 25400.0, 3: 10000.0}.get(int(unit.value))
        if per_unit > 0 and um_per_unit:
            mpp = _plausible(um_per_unit / per_unit)
            if mpp:
                return mpp, "tiff"
    return None, None


_UNIT_UM = {"µm": 1.0, "um": 1.0, "micron": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6, "Å": 1e-4}


def ome_physical_size_um(xml: str) -> float | None:
    """``PhysicalSizeX`` of the first OME ``Pixels`` element, in micrometres."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("}Pixels") or el.tag == "Pixels":
            value = el.get("PhysicalSizeX")
            if value is None:
                return None
            unit = el.get("PhysicalSizeXUnit", "µm")
            factor = _UNIT_UM.get(unit)
            try:
                return float(value) * factor if factor else None
            except ValueError:
                return None
    return None


# --------------------------------------------------------------------------- pixel helpers


def to_uint8(data, np) -> "np.ndarray":
    """Scale any integer/float/bool array to uint8 by its type's full range."""
    if data.dtype == np.uint8:
        return data
    if data.dtype == bool:
        return data.astype(np.uint8) * 255
    if np.issubdtype(data.dtype, np.integer):
        info = np.iinfo(data.dtype)
        if info.min < 0:  # signed: negative is black
            data = np.clip(data, 0, None)
        return np.round(data.astype(np.float64) * (255.0 / info.max)).astype(np.uint8)
    data = np.nan_to_num(data.astype(np.float64))
    scale = 255.0 if data.max(initial=0.0) <= 1.0 else 1.0
    return np.clip(np.round(data * scale), 0, 255).astype(np.uint8)


def gray_to_rgb(gray, np) -> "np.ndarray":
    return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))


def _composite_on_white(rgba, np) -> "np.ndarray":
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.round(rgb).astype(np.uint8)
