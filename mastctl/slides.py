"""Whole-slide images: region reads at any pyramid level, with the physical scale.

- OpenSlide (``openslide-python`` + ``openslide-bin``): SVS, NDPI, MRXS, SCN,
  generic tiled TIFF...; mpp from ``openslide.mpp-x``.
- tifffile: pyramidal OME-TIFF (mpp from the OME XML), read tile by tile so
  a region costs only the tiles it touches.
- Anything else that mastctl.imaging reads is held in memory as one level.

``open_slide(path)`` picks the reader. Every reader answers ``levels``
(width, height, downsample), ``mpp`` (level 0) and ``read(level, x, y, w, h)``
with level-0 coordinates for x, y and level pixels for w, h, as RGB uint8,
white outside the slide.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from mastctl.errors import BackendError, InputError
from mastctl.imaging import DEFAULT_MAX_PIXELS
from mastctl.scale import plausible

WSI_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")


@dataclass(frozen=True)
class Level:
    width: int
    height: int
    downsample: float


class SlideReader(Protocol):
    path: str
    mpp: float | None
    levels: list[Level]

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray: ...

    def close(self) -> None: ...


def is_slide(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(WSI_SUFFIXES) or name.endswith((".ome.tif", ".ome.tiff"))


def open_slide(path: str | Path, mpp: float | None = None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> SlideReader:
    """The reader for ``path``: OpenSlide, tiled OME-TIFF, or the image decoded whole (guarded by ``max_pixels``).

    No reader decodes more than ``max_pixels`` at once (0/None: no limit): a region, an untiled page or
    a plain image over the limit is refused before it is decoded.
    """
    from mastctl.imaging import check_readable

    p = Path(path)
    check_readable(p, sniff=False)
    name = p.name.lower()
    if name.endswith((".ome.tif", ".ome.tiff")):
        reader: SlideReader = OmeTiffReader(p, max_pixels)
    elif name.endswith(WSI_SUFFIXES) or _openslide_can(p):
        reader = OpenSlideReader(p, max_pixels)
    else:
        reader = MemoryReader(p, max_pixels)
    if mpp is not None:
        reader.mpp = float(mpp)
        reader.mpp_source = "option"
    return reader


def _guard_region(path: str, w: int, h: int, max_pixels: int | None) -> None:
    if w <= 0 or h <= 0:
        raise InputError(f"{path}: empty region ({w} x {h})")
    if max_pixels and w * h > max_pixels:
        raise InputError(f"{path}: a {w} x {h} read exceeds the decompression-bomb limit of {max_pixels:,} pixels; "
                         "raise --max-pixels if you trust this file")


def _openslide_can(p: Path) -> bool:
    if p.suffix.lower() not in (".tif", ".tiff"):
        return False
    try:
        import openslide
    except ImportError:
        return False
    try:
        vendor = openslide.OpenSlide.detect_format(str(p))
    except Exception:
        return False
    if vendor != "generic-tiff":
        return vendor is not None
    import tifffile

    with tifffile.TiffFile(p) as tif:  # only tiled TIFFs gain from region reads
        return bool(tif.pages[0].is_tiled)


def best_level(levels: list[Level], mpp: float | None, target_mpp: float) -> int:
    """The coarsest level still at least as fine as ``target_mpp``."""
    if not mpp:
        return 0
    best = 0
    for i, lv in enumerate(levels):
        if mpp * lv.downsample <= target_mpp * 1.05:
            best = i
    return best


class OpenSlideReader:
    mpp_source = "openslide"

    def __init__(self, path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.max_pixels = max_pixels
        try:
            import openslide
        except ImportError:
            raise BackendError("reading whole-slide files needs OpenSlide: pip install 'mastctl[slides]'") from None
        try:
            self._slide = openslide.OpenSlide(str(path))
        except Exception as exc:
            raise InputError(f"{path}: OpenSlide cannot read it: {str(exc).strip() or type(exc).__name__}") from None
        self.path = str(path)
        props = self._slide.properties
        self.mpp = plausible(props.get("openslide.mpp-x"))
        self.levels = [Level(int(w), int(h), float(d)) for (w, h), d in zip(self._slide.level_dimensions, self._slide.level_downsamples)]

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        _guard_region(self.path, int(w), int(h), self.max_pixels)
        try:
            region = self._slide.read_region((int(x), int(y)), level, (int(w), int(h)))
        except Exception as exc:  # OpenSlide raises its own error type for damaged tiles
            raise InputError(f"{self.path}: cannot read a region ({str(exc).strip() or type(exc).__name__})") from None
        rgba = np.asarray(region)
        alpha = rgba[..., 3:4].astype(np.float32) / 255.0  # outside the slide is transparent: make it white
        return np.round(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)

    def close(self) -> None:
        self._slide.close()


class OmeTiffReader:
    """Pyramidal OME-TIFF via tifffile, decoding only the tiles a region needs."""

    mpp_source = "ome"

    def __init__(self, path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        import tifffile

        from mastctl.imaging import ome_physical_size_um

        self.path = str(path)
        self.max_pixels = max_pixels
        self._whole: dict[int, np.ndarray] = {}  # untiled pages, decoded once
        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series[0]
        except Exception as exc:
            raise InputError(f"{path}: cannot read OME-TIFF: {str(exc).strip()[:200] or type(exc).__name__}") from None
        self._levels = list(series.levels) if getattr(series, "levels", None) else [series]
        self.mpp = plausible(ome_physical_size_um(self._tif.ome_metadata)) if self._tif.ome_metadata else None
        w0 = self._levels[0].shape[self._levels[0].axes.index("X")]
        self.levels = []
        for lv in self._levels:
            w, h = lv.shape[lv.axes.index("X")], lv.shape[lv.axes.index("Y")]
            self.levels.append(Level(int(w), int(h), w0 / w))

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        lv = self._levels[level]
        page = lv.pages[0]
        d = self.levels[level].downsample
        x0, y0 = int(round(x / d)), int(round(y / d))
        _guard_region(self.path, int(w), int(h), self.max_pixels)
        out = np.full((h, w, 3), 255, np.uint8)
        if page.planarconfig != 1 or lv.axes not in ("YXS",) or len(lv.pages) != 1:
            _paste(out, self._untiled(level, page), x0, y0)
            return out
        if page.is_tiled:  # the tiles the region touches
            th, tw = page.tilelength, page.tilewidth
        else:  # strips: whole rows of rowsperstrip lines, only those the region touches
            th, tw = min(int(page.rowsperstrip or page.imagelength), page.imagelength), page.imagewidth
        across = math.ceil(page.imagewidth / tw)
        fh = self._tif.filehandle
        _guard_region(self.path, int(tw), int(th), self.max_pixels)  # one segment is decoded whole
        for ty in range(max(0, y0 // th), min(math.ceil(page.imagelength / th), (y0 + h - 1) // th + 1)):
            for tx in range(max(0, x0 // tw), min(across, (x0 + w - 1) // tw + 1)):
                index = ty * across + tx
                fh.seek(page.dataoffsets[index])
                data = fh.read(page.databytecounts[index])
                try:
                    seg, _, shape = page.decode(data, index, jpegtables=page.jpegtables)
                except Exception as exc:  # codecs raise many types for damaged data
                    raise InputError(f"{self.path}: cannot decode level {level} segment {index} "
                                     f"({str(exc).strip()[:200] or type(exc).__name__})") from None
                if seg is None:  # an empty (sparse) segment: glass
                    continue
                seg = seg.reshape(seg.shape[-3:])[..., :3]
                seg = seg[: page.imagelength - ty * th, : page.imagewidth - tx * tw]  # edge segments are padded
                _paste(out, seg, x0 - tx * tw, y0 - ty * th)
        return out

    def _untiled(self, level: int, page) -> np.ndarray:
        """A page stored some other way (separate planes, several pages), decoded once (within the bomb limit) and kept."""
        if level not in self._whole:
            _guard_region(self.path, int(page.imagewidth), int(page.imagelength), self.max_pixels)
            try:
                full = page.asarray()
            except Exception as exc:  # codecs raise many types for damaged data
                raise InputError(f"{self.path}: cannot decode page {level} ({str(exc).strip()[:200] or type(exc).__name__})") from None
            if full.ndim == 2:
                full = np.repeat(full[..., None], 3, axis=2)
            self._whole = {level: full[..., :3]}
        return self._whole[level]

    def close(self) -> None:
        self._whole = {}
        self._tif.close()


def _paste(out: np.ndarray, src: np.ndarray, x0: int, y0: int) -> None:
    """Copy the part of ``src`` (placed so that out[0, 0] is src[y0, x0]) that overlaps ``out``."""
    h, w = out.shape[:2]
    sy0, sx0 = max(y0, 0), max(x0, 0)
    sy1, sx1 = min(y0 + h, src.shape[0]), min(x0 + w, src.shape[1])
    if sy1 > sy0 and sx1 > sx0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = src[sy0:sy1, sx0:sx1]


class MemoryReader:
    """Any image mastctl.imaging reads, held whole, as a one-level slide."""

    def __init__(self, path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        from mastctl import imaging

        image = imaging.load(path, max_pixels=max_pixels)
        self.path, self.mpp, self.mpp_source, self.pixels = str(path), image.mpp, image.mpp_source, image.pixels
        self.levels = [Level(image.width, image.height, 1.0)]

    def read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        if self.pixels is not None and (x, y, w, h) == (0, 0, self.pixels.shape[1], self.pixels.shape[0]):
            return self.pixels  # the whole image (tile mode): no copy
        out = np.full((h, w, 3), 255, np.uint8)
        _paste(out, self.pixels, int(x), int(y))
        return out

    def close(self) -> None:
        self.pixels = None
