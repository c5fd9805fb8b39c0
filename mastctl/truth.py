"""Truth readers: annotated cells per image, from any format the project meets.

- synthetic tile truth (``mastctl/synth@1`` JSON, one per tile);
- mastctl detections (``mastctl/detections@1`` JSON), e.g. a reviewed run;
- CSV points: ``image,class,x,y`` (the CRC nuclei set) or ``image,x,y,label,kind``
  (mastctl's own CSV);
- QuPath GeoJSON: a FeatureCollection (or list of features) of Points,
  MultiPoints or Polygons (their centroid), classified by
  ``properties.classification.name``; one file per image, named after it;
- a folder of any of these.

Images and truth are joined by the image's file stem (``img2.png`` <-> CSV
``img2`` / ``img2.png``, ``tile_he.png`` <-> synth ``he_image``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mastctl.cells import SCHEMA as DETECTIONS_SCHEMA
from mastctl.cells import Cell, Detections, parse_label
from mastctl.errors import InputError
from mastctl.imaging import IMAGE_SUFFIXES

SYNTH_SCHEMA = "mastctl/synth@1"


@dataclass(frozen=True)
class TruthImage:
    key: str  # the image's file stem
    cells: tuple[Cell, ...]
    mpp: float | None = None
    image: str | None = None  # the image file named by the truth, when it names one


def image_key(name: str | Path) -> str:
    """The join key of an image: its file name without folders and extension."""
    stem = Path(str(name)).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if stem.lower().endswith(suffix):
            return stem[: -len(suffix)]
    return Path(stem).stem if Path(stem).suffix.lower() in IMAGE_SUFFIXES else stem


def parse_class(name: Any) -> tuple[str, str | None]:
    """A free class name -> (label, kind): 'Mast cell: Implicit' -> ('mast_cell', 'implicit'); unknown -> 'other'."""
    return parse_label(name) or ("other", None)


def load_truth(path: str | Path, classes: Iterable[str] | None = None) -> dict[str, TruthImage]:
    """Read truth from a file or a folder; ``classes`` keeps only rows/features of those raw class names."""
    p = Path(path)
    keep = {c.strip().lower() for c in classes} if classes else None
    if not p.exists():
        raise InputError(f"{p}: no such truth file or folder")
    if p.is_dir():
        files = sorted(q for q in p.iterdir() if q.suffix.lower() in (".json", ".geojson", ".csv", ".jsonl"))
        if not files:
            raise InputError(f"{p}: folder holds no truth files (.json, .geojson, .csv)")
        out: dict[str, TruthImage] = {}
        source: dict[str, Path] = {}
        for f in files:
            for key, item in _load_file(f, keep, strict=False).items():
                if key in out:  # two annotations of one image would count every cell twice
                    raise InputError(f"{p}: image {key!r} has truth in both {source[key].name} and {f.name}; keep one")
                out[key], source[key] = item, f
        if not out:
            raise InputError(f"{p}: no truth in this folder's .json/.geojson/.csv files")
        return out
    return _load_file(p, keep)


def _load_file(p: Path, keep: set[str] | None, strict: bool = True) -> dict[str, TruthImage]:
    """One truth file; in a folder (``strict=False``) other JSON documents (summaries, models) are skipped."""
    if p.suffix.lower() == ".csv":
        return _read_csv(p, keep)
    if p.suffix.lower() == ".jsonl":
        return _read_kb_export(p, keep)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{p}: not readable JSON: {exc}") from None
    if isinstance(data, dict) and data.get("schema") == SYNTH_SCHEMA:
        return _read_synth(p, data)
    if isinstance(data, dict) and data.get("schema") == DETECTIONS_SCHEMA:
        det = Detections.from_dict(data)
        key = image_key(det.image.path)
        return {key: TruthImage(key, det.cells, det.image.mpp, det.image.path)}
    key = image_key(p.name.removesuffix(".geo.json") if p.name.endswith(".geo.json") else p.stem)
    for suffix in ("_cells", "_cell_detection", "_detections"):  # CellViT / HoVer-Net output names
        if key.endswith(suffix) and len(key) > len(suffix):
            key = key[: -len(suffix)]
    nuclei = _nucleus_model_output(data)
    if nuclei is not None:
        return {key: TruthImage(key, tuple(_read_nuclei(p, nuclei, keep)))}
    if (isinstance(data, dict) and data.get("type") in ("FeatureCollection", "Feature")) or isinstance(data, list):
        unknown: set[str] = set()
        cells = _read_geojson(p, data, keep, unknown)
        if unknown:
            _warn(f"{p}: class names mastctl does not know ({', '.join(sorted(unknown)[:5])}) are read as 'other'")
        return {key: TruthImage(key, tuple(cells))}
    if not strict:
        return {}
    raise InputError(f"{p}: not a truth format mastctl reads (synth JSON, detections JSON, GeoJSON, CSV)")


# PanNuke's classes, as HoVer-Net and CellViT number them
PANNUKE_TYPES = {0: "background", 1: "neoplastic", 2: "inflammatory", 3: "connective", 4: "dead", 5: "epithelial"}


def _nucleus_model_output(data: Any) -> tuple[list[dict[str, Any]], dict[int, str]] | None:
    """(nuclei, type names) of a HoVer-Net (``{"nuc": {...}}``) or CellViT (``{"cells": [...]}``, a list) JSON."""
    names = dict(PANNUKE_TYPES)
    if isinstance(data, dict) and isinstance(data.get("nuc"), dict):
        info = data.get("type_info") or {}
        for k, v in info.items() if isinstance(info, dict) else ():
            if str(k).isdigit():
                names[int(k)] = str(v[0] if isinstance(v, list) and v else v)
        return [n for n in data["nuc"].values() if isinstance(n, dict)], names
    cells = data.get("cells") if isinstance(data, dict) else data if isinstance(data, list) else None
    if isinstance(cells, list) and cells and isinstance(cells[0], dict) and "centroid" in cells[0]:
        tmap = data.get("type_map") if isinstance(data, dict) else None
        for k, v in (tmap or {}).items():
            if str(k).isdigit():
                names[int(k)] = str(v)
        return cells, names
    return None


def _read_nuclei(p: Path, found: tuple[list[dict[str, Any]], dict[int, str]], keep: set[str] | None) -> list[Cell]:
    """Every nucleus of another model's output, at its centroid, named by its type (mostly 'other')."""
    nuclei, names = found
    cells = []
    for n, nuc in enumerate(nuclei):
        type_name = names.get(int(nuc.get("type") or 0), str(nuc.get("type"))) if str(nuc.get("type", "0")).isdigit() \
            else str(nuc.get("type"))
        if keep is not None and type_name.lower() not in keep:
            continue
        label, kind = parse_label(type_name) or ("other", None)
        try:
            x, y = _xy(nuc.get("centroid"))
            cells.append(Cell(x, y, label, kind if label == "mast_cell" else None, 1.0))
        except (TypeError, ValueError) as exc:
            raise InputError(f"{p}: nucleus {n}: {exc}") from None
    return cells


def _warn(message: str) -> None:
    import sys

    sys.stderr.write(f"mastctl: warning: {message}\n")


def _read_kb_export(p: Path, keep: set[str] | None) -> dict[str, TruthImage]:
    """A `kb export` file: each record with an image and a point is one annotated cell of that image."""
    by_key: dict[str, list[Cell]] = {}
    images: dict[str, tuple[str, float | None]] = {}
    from mastctl.jsonl import objects

    for n, rec in objects(p):
        if not isinstance(rec, dict):
            raise InputError(f"{p}:{n}: a record must be a JSON object")
        xy, image = rec.get("coordinates"), rec.get("image_path")
        if not isinstance(xy, dict) or not image:
            continue
        rtype = rec.get("type")
        if keep is not None and str(rtype).lower() not in keep and str(rec.get("label", "")).lower() not in keep:
            continue
        label, kind = (rec.get("label") or "other", None) if rtype == "negative" else ("mast_cell", rtype)
        try:
            cell = Cell(float(xy["x"]), float(xy["y"]), label, kind, 1.0)
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{p}:{n}: bad record: {exc}") from None
        key = image_key(image)
        by_key.setdefault(key, []).append(cell)
        images[key] = (image, rec.get("mpp"))
    return {k: TruthImage(k, tuple(v), images[k][1], images[k][0]) for k, v in by_key.items()}


def _read_synth(p: Path, data: dict[str, Any]) -> dict[str, TruthImage]:
    cells = []
    for c in data.get("cells", []):
        try:
            cells.append(Cell(float(c["x"]), float(c["y"]), c["label"], c.get("kind"), 1.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{p}: bad cell {c}: {exc}") from None
    key = image_key(data["he_image"])
    return {key: TruthImage(key, tuple(cells), data.get("mpp"), str(p.parent / data["he_image"]))}


def _read_csv(p: Path, keep: set[str] | None) -> dict[str, TruthImage]:
    try:
        with open(p, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{p}: not a readable CSV: {exc}") from None
    if not rows:
        return {}
    columns = {c.strip().lower(): c for c in rows[0] if c}
    missing = [c for c in ("image", "x", "y") if c not in columns]
    if missing:
        raise InputError(f"{p}: CSV truth needs columns image, x, y (and class or label); missing {', '.join(missing)}")
    by_key: dict[str, list[Cell]] = {}
    for i, row in enumerate(rows, start=2):
        raw_class = row.get(columns.get("class", ""), "") if "class" in columns else ""
        if keep is not None and str(raw_class).strip().lower() not in keep:
            continue
        try:
            x, y = float(row[columns["x"]]), float(row[columns["y"]])
        except (TypeError, ValueError):
            raise InputError(f"{p}, line {i}: x and y must be numbers, got {row[columns['x']]!r}, {row[columns['y']]!r}") from None
        if "label" in columns:
            label, kind = row[columns["label"]] or "other", (row.get(columns.get("kind", ""), "") or None)
            if kind is None and "class" in columns:
                label, kind = parse_class(raw_class)
        else:
            label, kind = parse_class(raw_class)
        try:
            cell = Cell(x, y, label, kind if label == "mast_cell" else None, 1.0)
        except ValueError as exc:
            raise InputError(f"{p}, line {i}: {exc}") from None
        by_key.setdefault(image_key(row[columns["image"]]), []).append(cell)
    return {k: TruthImage(k, tuple(v)) for k, v in by_key.items()}


def qupath_class_name(props: dict[str, Any]) -> str:
    """The class of a QuPath feature, in any version's shape.

    QuPath 0.3 writes ``classification: {"name": "Mast cell: Explicit", "colorRGB": ...}``; 0.4 and 0.5
    write a derived class as ``classification: {"names": ["Mast cell", "Explicit"], "color": [...]}``;
    hand-made files use a bare string or a ``name`` property.
    """
    cls = props.get("classification")
    if isinstance(cls, dict):
        names = cls.get("names")
        if isinstance(names, list) and names:
            return ": ".join(str(n) for n in names)
        return str(cls.get("name") or "")
    if isinstance(cls, str):
        return cls
    return str(props.get("name") or props.get("class") or props.get("label") or "")


def _read_geojson(p: Path, data: Any, keep: set[str] | None, unknown: set[str] | None = None) -> list[Cell]:
    """Cells of a GeoJSON: Points and MultiPoints, and the centroids of detection/cell polygons.

    Region annotations (a polygon whose objectType is "annotation": a tissue outline, a hotspot) are
    not cells and are skipped; a point annotation (QuPath's counting tool) is a cell.
    """
    if isinstance(data, list):
        features = data
    elif isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features") or []
    elif isinstance(data, dict) and ("geometry" in data or data.get("type") == "Feature"):
        features = [data]
    else:
        features = []
    cells = []
    for n, f in enumerate(features):
        if not isinstance(f, dict):
            raise InputError(f"{p}: feature {n} is not a GeoJSON object")
        props = f.get("properties") or {}
        if not isinstance(props, dict):
            props = {}
        geometry = f.get("geometry") or {}
        if not isinstance(geometry, dict):
            raise InputError(f"{p}: feature {n} has a geometry that is not an object")
        if props.get("objectType") == "annotation" and geometry.get("type") in ("Polygon", "MultiPolygon", "LineString"):
            continue
        name = qupath_class_name(props)
        if keep is not None and name.strip().lower() not in keep:
            continue
        known = parse_label(name)
        if known is None and unknown is not None and name:
            unknown.add(name)
        label, kind = known or ("other", None)
        try:
            points = _points(geometry)
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            raise InputError(f"{p}: feature {n}: coordinates are not a valid {geometry.get('type')} ({exc})") from None
        for x, y in points:
            try:
                cells.append(Cell(float(x), float(y), label, kind if label == "mast_cell" else None, 1.0))
            except (TypeError, ValueError) as exc:
                raise InputError(f"{p}: feature {n}: {exc}") from None
    return cells


def _xy(position: Any) -> tuple[float, float]:
    """[x, y] or [x, y, z] (GeoJSON allows a third value; it is ignored)."""
    if not isinstance(position, (list, tuple)) or len(position) < 2:
        raise ValueError(f"a position must be [x, y], got {position!r}"[:120])
    return float(position[0]), float(position[1])


def _points(geometry: dict[str, Any]) -> list[tuple[float, float]]:
    kind, coords = geometry.get("type"), geometry.get("coordinates")
    if kind == "Point":
        return [_xy(coords)]
    if kind == "MultiPoint":
        return [_xy(c) for c in coords]
    if kind == "Polygon":
        return [_centroid([_xy(c) for c in coords[0]])]
    if kind == "MultiPolygon":
        return [_centroid([_xy(c) for c in poly[0]]) for poly in coords]
    if kind == "GeometryCollection":
        return [pt for g in geometry.get("geometries", []) for pt in _points(g)]
    return []


def _centroid(ring: list[tuple[float, float]]) -> tuple[float, float]:
    """Area centroid of a polygon ring (shoelace); the vertex mean for degenerate rings."""
    area = cx = cy = 0.0
    for (x0, y0), (x1, y1) in zip(ring, ring[1:] + ring[:1]):
        cross = x0 * y1 - x1 * y0
        area += cross
        cx += (x0 + x1) * cross
        cy += (y0 + y1) * cross
    if abs(area) < 1e-12:
        return sum(p[0] for p in ring) / len(ring), sum(p[1] for p in ring) / len(ring)
    return cx / (3 * area), cy / (3 * area)
