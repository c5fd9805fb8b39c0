"""Regions a user draws (``--mask``): GeoJSON polygons, holes included, in level-0 pixels.

Read once at the boundary (any GeoJSON shape QuPath writes: a FeatureCollection,
a list of features, one Feature or a bare geometry; 2-D or 3-D positions), then
used twice with the same geometry: which tiles to read (:meth:`Polygons.rasterise`)
and which cells to keep (:meth:`Polygons.contains`), so a cell outside the
polygon is never reported and the area of a density is the polygon's tissue.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mastctl.errors import InputError


@dataclass(frozen=True)
class Polygon:
    exterior: np.ndarray  # (n, 2) x, y
    holes: tuple[np.ndarray, ...] = ()


@dataclass(frozen=True)
class Polygons:
    polygons: tuple[Polygon, ...]

    @classmethod
    def read(cls, path: Path) -> Polygons:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError(f"{path}: no such mask file") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise InputError(f"{path}: not a readable GeoJSON: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
        return cls.from_geojson(data, str(path))

    @classmethod
    def from_geojson(cls, data: Any, where: str = "the --mask GeoJSON") -> Polygons:
        out: list[Polygon] = []
        for geom in _geometries(data):
            kind = geom.get("type")
            coords = geom.get("coordinates")
            if kind == "Polygon":
                out.append(_polygon(coords, where))
            elif kind == "MultiPolygon":
                if not isinstance(coords, list):
                    raise InputError(f"{where}: a MultiPolygon's coordinates must be a list of polygons")
                out.extend(_polygon(p, where) for p in coords)
        if not out:
            raise InputError(f"{where} holds no polygon (a Polygon or MultiPolygon geometry)")
        return cls(tuple(out))

    def contains(self, xy: np.ndarray) -> np.ndarray:
        """Which points (x, y) lie inside some polygon and outside its holes."""
        from skimage.measure import points_in_poly

        xy = np.asarray(xy, np.float64).reshape(-1, 2)
        inside = np.zeros(len(xy), bool)
        for poly in self.polygons:
            here = points_in_poly(xy, poly.exterior)
            for hole in poly.holes:
                here &= ~points_in_poly(xy, hole)
            inside |= here
        return inside

    def rasterise(self, shape: tuple[int, int], scale: float) -> np.ndarray:
        """The polygons on a grid of ``scale`` level-0 pixels per cell (holes cut out)."""
        from skimage.draw import polygon as fill

        canvas = np.zeros(shape, bool)
        for poly in self.polygons:
            part = np.zeros(shape, bool)
            rr, cc = fill(poly.exterior[:, 1] / scale - 0.5, poly.exterior[:, 0] / scale - 0.5, shape)
            part[rr, cc] = True
            for hole in poly.holes:
                rr, cc = fill(hole[:, 1] / scale - 0.5, hole[:, 0] / scale - 0.5, shape)
                part[rr, cc] = False
            canvas |= part
        return canvas

    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) around every polygon."""
        pts = np.vstack([p.exterior for p in self.polygons])
        return float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max())


def _geometries(data: Any):
    if isinstance(data, list):
        for item in data:
            yield from _geometries(item)
    elif isinstance(data, dict):
        if data.get("type") == "FeatureCollection":
            yield from _geometries(data.get("features") or [])
        elif data.get("type") == "Feature":
            if isinstance(data.get("geometry"), dict):
                yield from _geometries(data["geometry"])
        elif data.get("type") == "GeometryCollection":
            yield from _geometries(data.get("geometries") or [])
        elif "coordinates" in data:
            yield data


def _ring(raw: Any, where: str) -> np.ndarray:
    if not isinstance(raw, list) or len(raw) < 3:
        raise InputError(f"{where}: a polygon ring needs at least 3 positions")
    pts = []
    for pos in raw:
        if not isinstance(pos, (list, tuple)) or len(pos) < 2:
            raise InputError(f"{where}: a position must be [x, y] (or [x, y, z]), got {pos!r}"[:200])
        try:
            x, y = float(pos[0]), float(pos[1])  # a third value (z) is allowed by GeoJSON and ignored
        except (TypeError, ValueError):
            raise InputError(f"{where}: position {pos!r} is not numeric"[:200]) from None
        if not (math.isfinite(x) and math.isfinite(y)):
            raise InputError(f"{where}: position {pos!r} is not a finite number pair"[:200])
        pts.append((x, y))
    return np.asarray(pts, np.float64)


def _polygon(rings: Any, where: str) -> Polygon:
    if not isinstance(rings, list) or not rings:
        raise InputError(f"{where}: a Polygon's coordinates must be a list of rings")
    return Polygon(_ring(rings[0], where), tuple(_ring(r, where) for r in rings[1:]))
