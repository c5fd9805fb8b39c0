"""Writers: detections -> json | csv | geojson | overlay (PNG).

``write(detections, fmt, path)`` writes one image's detections to a file,
atomically (a temporary file renamed into place, so an interrupted run never
leaves half a file behind). ``dump(detections_list, fmt, stream)`` writes
text formats to a stream (stdout): one JSON document, or JSON Lines for
several images; one CSV table with an ``image`` column.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mastctl.cells import Cell, Detections
from mastctl.errors import UsageError

if TYPE_CHECKING:
    from mastctl.imaging import Image

EXTENSIONS = {"json": ".json", "csv": ".csv", "geojson": ".geojson", "overlay": ".png"}
FORMATS = tuple(EXTENSIONS)
TEXT_FORMATS = ("json", "csv", "geojson")

CSV_COLUMNS = ("image", "x", "y", "label", "kind", "confidence")

# QuPath classification per (label, kind): display name and RGB colour.
CLASSES: dict[tuple[str, str | None], tuple[str, tuple[int, int, int]]] = {
    ("mast_cell", "explicit"): ("Mast cell: Explicit", (230, 0, 230)),
    ("mast_cell", "implicit"): ("Mast cell: Implicit", (255, 140, 0)),
    ("mast_cell", None): ("Mast cell", (220, 20, 60)),
    ("lymphocyte", None): ("Lymphocyte", (30, 144, 255)),
    ("plasma_cell", None): ("Plasma cell", (138, 43, 226)),
    ("fibroblast", None): ("Fibroblast", (34, 139, 34)),
    ("eosinophil", None): ("Eosinophil", (255, 69, 0)),
    ("other", None): ("Other", (128, 128, 128)),
}

MARK_RADIUS_UM = 6.0  # overlay circle radius, about a mast cell's


def format_for(path: Path) -> str | None:
    """The format a file name asks for by its extension, or None."""
    name = path.name.lower()
    if name.endswith(".geo.json"):
        return "geojson"
    suffix = path.suffix.lower()
    return next((fmt for fmt, ext in EXTENSIONS.items() if suffix == ext), None)


def classification(cell: Cell) -> tuple[str, tuple[int, int, int]]:
    return CLASSES[(cell.label, cell.kind if cell.is_mast_cell else None)]


# --------------------------------------------------------------------------- renderers


def to_json(det: Detections, all_cells: bool, indent: int | None = 2) -> str:
    return json.dumps(det.to_dict(all_cells), indent=indent, ensure_ascii=False) + "\n"


def feature_names(dets: Sequence[Detections], all_cells: bool) -> list[str]:
    names: set[str] = set()
    for det in dets:
        for c in det.selected(all_cells):
            names.update(c.features)
    return sorted(names)


def write_csv(dets: Sequence[Detections], stream: IO[str], all_cells: bool) -> None:
    extra = feature_names(dets, all_cells)
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow([*CSV_COLUMNS, *extra])
    for det in dets:
        for c in det.selected(all_cells):
            d = c.to_dict()
            feats = d.get("features", {})
            writer.writerow(
                [det.image.path, d["x"], d["y"], d["label"], d["kind"] or "", d["confidence"]]
                + ["" if feats.get(k) is None else feats[k] for k in extra]
            )


def geojson_feature(cell: Cell, feature_id: str) -> dict[str, Any]:
    """One cell as a QuPath Point detection."""
    name, color = classification(cell)
    d = cell.to_dict()
    measurements = {"Confidence": d["confidence"]}
    measurements.update({k: v for k, v in d.get("features", {}).items() if isinstance(v, (int, float))})
    return {
        "type": "Feature",
        "id": feature_id,
        "geometry": {"type": "Point", "coordinates": [d["x"], d["y"]]},
        "properties": {
            "objectType": "detection",
            "classification": {"name": name, "color": list(color)},
            "measurements": measurements,
        },
    }


def feature_id(*parts: Any) -> str:
    """Deterministic feature ids (QuPath reads them as UUIDs): the same detections give the same file."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "mastctl:" + ":".join(str(p) for p in parts)))


def to_geojson(det: Detections, all_cells: bool) -> dict[str, Any]:
    """A QuPath-importable FeatureCollection of Point detections."""
    features = []
    for i, c in enumerate(det.selected(all_cells)):
        d = c.to_dict()
        features.append(geojson_feature(c, feature_id(det.image.path, i, d["x"], d["y"])))
    return {"type": "FeatureCollection", "features": features}


def render_overlay(det: Detections, image: Image, all_cells: bool) -> bytes:
    """The image as PNG with a circle around each cell, coloured by class."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    canvas = PILImage.fromarray(image.pixels, "RGB")
    draw = ImageDraw.Draw(canvas)
    radius = MARK_RADIUS_UM / image.mpp if image.mpp else 8.0
    radius = max(4.0, min(radius, 60.0))
    width = max(2, int(radius / 5))
    for c in det.selected(all_cells):
        _, color = classification(c)
        r = radius if c.is_mast_cell else radius * 0.6
        draw.ellipse([c.x - r, c.y - r, c.x + r, c.y + r], outline=color, width=width if c.is_mast_cell else 1)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- file and stream output


def write(
    det: Detections,
    fmt: str,
    path: Path,
    *,
    all_cells: bool = False,
    image: Image | None = None,
) -> Path:
    """Write one image's detections to ``path`` atomically; returns the path."""
    if fmt not in EXTENSIONS:
        raise UsageError(f"unknown output format {fmt!r} (choose from {', '.join(FORMATS)})")
    if fmt == "overlay":
        if image is None:
            raise UsageError("the overlay format needs the decoded image")
        payload: bytes = render_overlay(det, image, all_cells)
    elif fmt == "json":
        payload = to_json(det, all_cells).encode()
    elif fmt == "geojson":
        payload = (json.dumps(to_geojson(det, all_cells), indent=1) + "\n").encode()
    else:
        buf = io.StringIO()
        write_csv([det], buf, all_cells)
        payload = buf.getvalue().encode()
    atomic_write(path, lambda fh: fh.write(payload))
    return path


def dump(dets: Sequence[Detections], fmt: str, stream: IO[str], *, all_cells: bool = False) -> None:
    """Text formats to a stream: JSON (Lines for several images), CSV, GeoJSON (one image)."""
    if fmt == "json":
        if len(dets) == 1:
            stream.write(to_json(dets[0], all_cells))
        else:
            for det in dets:
                stream.write(to_json(det, all_cells, indent=None))
    elif fmt == "csv":
        write_csv(dets, stream, all_cells)
    elif fmt == "geojson" and len(dets) == 1:
        stream.write(json.dumps(to_geojson(dets[0], all_cells), indent=1) + "\n")
    else:
        raise UsageError(f"{fmt} output for {len(dets)} image(s) needs a file: pass -o PATH")


def atomic_write(path: Path, fill: Callable[[IO[bytes]], Any]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"cannot write {path}: a file stands where its folder should be") from None
    if path.is_dir():
        raise UsageError(f"cannot write {path}: it is a folder")
    # mkstemp makes the file private (0600); give it what a plain open() would, or keep the old file's mode.
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_umask()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fill(fh)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
