"""Writers: cells -> json | csv | geojson | overlay (PNG), the one home of every output format.

Every format is written the same way, whatever the input (a tile, a folder, a
slide, a cohort): a :class:`CellWriter` is opened on a target, takes cells in
batches as tiles finish (constant memory: a slide's million cells are never
held at once), and is finished with the run's summary, or aborted. A file is
written through a temporary file in its folder and renamed into place at the
end, so an interrupted run never leaves half a file; ``.gz`` compresses as it
goes.

- ``json``: ``mastctl/detections@1``, one document per image (JSON Lines on
  stdout for several);
- ``csv``: one row per cell, with an ``id`` that joins to the GeoJSON, pixel
  and micrometre positions (QuPath's "Centroid X µm"), and the backend's
  features as extra columns (those of the first cells written);
- ``geojson``: a QuPath FeatureCollection of Point detections, with the run's
  provenance in the collection's ``properties``;
- ``overlay``: the image as PNG with a ring around each cell (plain images only).

The format comes from the output's extension (``--format`` overrides it); an
extension mastctl does not write is a usage error, never a silent default. An
existing file is replaced only when mastctl wrote it in that format (or with
``--force``).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from mastctl.cells import CELL_CLASSES, SCHEMA, Cell, Detections, cell_class
from mastctl.errors import InputError, UsageError
from mastctl.interrupts import at_stop, shielded

if TYPE_CHECKING:
    from mastctl.imaging import Image

EXTENSIONS = {"json": ".json", "csv": ".csv", "geojson": ".geojson", "overlay": ".png"}
FORMATS = tuple(EXTENSIONS)
TEXT_FORMATS = ("json", "csv", "geojson")
STREAM_FORMATS = ("json", "csv", "geojson")  # what a slide (or stdout) can be written as

CSV_COLUMNS = ("image", "id", "x", "y", "x_um", "y_um", "mpp", "label", "kind", "confidence")
OVERLAY_MARK = "mastctl overlay"  # a PNG text chunk: this PNG is an overlay mastctl may overwrite
MARK_RADIUS_UM = 6.0  # overlay ring radius, about a mast cell's


# --------------------------------------------------------------------------- names and formats


def format_for(path: Path | str) -> tuple[str, bool] | None:
    """(format, gzip) that a file name asks for by its extension, or None when it names none we know."""
    name = Path(path).name.lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    if name.endswith(".geo.json") or name.endswith(".geojson"):
        return "geojson", gz
    for fmt, ext in EXTENSIONS.items():
        if name.endswith(ext) and not (gz and fmt == "overlay"):
            return fmt, gz
    return None


def extension(fmt: str, gz: bool = False) -> str:
    return EXTENSIONS[fmt] + (".gz" if gz else "")


def check_format(fmt: str) -> str:
    if fmt not in EXTENSIONS:
        raise UsageError(f"unknown output format {fmt!r} (choose from {', '.join(FORMATS)})")
    return fmt


def is_mastctl_output(path: Path, fmt: str) -> bool:
    """Did mastctl write ``path`` in ``fmt``? (Only such a file is replaced without --force.)"""
    try:
        if fmt == "overlay":
            from PIL import Image as PILImage

            with PILImage.open(path) as im:
                return im.format == "PNG" and im.info.get("Software") == OVERLAY_MARK
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:  # type: ignore[operator]
            head = fh.read(4096)
    except (OSError, EOFError, ValueError, SyntaxError):
        return False
    if fmt == "json":
        return f'"schema": "{SCHEMA}"' in head or f'"schema":"{SCHEMA}"' in head
    if fmt == "geojson":
        return '"FeatureCollection"' in head
    if fmt == "csv":
        first = head.splitlines()[0] if head else ""
        return first.startswith("image,") and ",x," in first + ","
    return False


def check_target(path: Path, fmt: str, force: bool) -> None:
    """Refuse to replace a file that is not mastctl's output of this format (an image, another format)."""
    if path.is_dir():
        raise UsageError(f"-o {path}: is a folder; give a file name, or several inputs for a folder")
    if path.exists() and not force and not is_mastctl_output(path, fmt):
        raise UsageError(f"refusing to overwrite {path}: it is not mastctl {fmt} output (pass --force to replace it)")


# --------------------------------------------------------------------------- one cell in each format


def feature_id(*parts: Any) -> str:
    """Deterministic feature ids (QuPath reads them as UUIDs): the same detections give the same file."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "mastctl:" + ":".join(str(p) for p in parts)))


def geojson_feature(cell: Cell, fid: str, mpp: float | None = None) -> dict[str, Any]:
    """One cell as a QuPath Point detection."""
    cls = cell_class(cell.label, cell.kind)
    d = cell.to_dict()
    measurements = {"Confidence": d["confidence"]}
    if mpp:
        measurements.update({"Centroid X µm": round(cell.x * mpp, 3), "Centroid Y µm": round(cell.y * mpp, 3)})
    measurements.update({k: v for k, v in d.get("features", {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return {
        "type": "Feature",
        "id": fid,
        "geometry": {"type": "Point", "coordinates": [d["x"], d["y"]]},
        "properties": {
            "objectType": "detection",
            "classification": {"name": cls.qupath, "color": list(cls.color)},
            "measurements": measurements,
        },
    }


def annotation_feature(fid: str, name: str, color: tuple[int, int, int], geometry: dict[str, Any],
                       measurements: dict[str, float] | None = None) -> dict[str, Any]:
    """A region (the tissue outline, the hotspot) as a QuPath annotation; truth readers skip these."""
    props: dict[str, Any] = {"objectType": "annotation", "classification": {"name": name, "color": list(color)}}
    if measurements:
        props["measurements"] = measurements
    return {"type": "Feature", "id": fid, "geometry": geometry, "properties": props}


# --------------------------------------------------------------------------- streamed writers


class CellWriter:
    """Cells of one image, written as they come: ``begin``, ``write`` (any number of times), ``finish``.

    ``finish(summary)`` completes the document with the run's summary (a dict) and puts the file
    in place; ``abort()`` leaves the target as it was.
    """

    def __init__(self, fh: IO[str], header: dict[str, Any], all_cells: bool) -> None:
        self.fh, self.header, self.all_cells = fh, header, all_cells
        self.count = 0  # cells written
        self.image_path = str(header["image"]["path"])
        self.mpp = header["image"].get("mpp")

    def chosen(self, cells: Sequence[Cell]) -> list[Cell]:
        return [c for c in cells if self.all_cells or c.is_mast_cell]

    def begin(self) -> None: ...

    def write(self, cells: Sequence[Cell]) -> int:
        raise NotImplementedError

    def finish(self, summary: dict[str, Any]) -> None: ...

    def abort(self) -> None: ...

    def cell_id(self, n: int) -> str:
        return feature_id(self.image_path, n)


class JsonWriter(CellWriter):
    """``mastctl/detections@1``: indented (a file, one document on stdout) or one line (JSON Lines)."""

    def __init__(self, fh, header, all_cells, indent: bool = True) -> None:
        super().__init__(fh, header, all_cells)
        self.indent = indent

    def _member(self, key: str, value: Any) -> str:
        text = json.dumps(value, indent=2 if self.indent else None, ensure_ascii=False, default=str)
        if self.indent:
            text = text.replace("\n", "\n  ")
            return f'  "{key}": {text}'
        return f'"{key}": {text}'

    def begin(self) -> None:
        head = {"schema": SCHEMA, "image": self.header["image"], "backend": self.header["backend"]}
        sep = ",\n" if self.indent else ", "
        self.fh.write(("{\n" if self.indent else "{") + sep.join(self._member(k, v) for k, v in head.items()) + sep
                      + ('  "cells": [' if self.indent else '"cells": ['))

    def write(self, cells: Sequence[Cell]) -> int:
        chosen = self.chosen(cells)
        for c in chosen:
            lead = ("," if self.count else "") + "\n    " if self.indent else (", " if self.count else "")
            self.fh.write(lead + json.dumps(c.to_dict(), ensure_ascii=False))
            self.count += 1
        return len(chosen)

    def finish(self, summary: dict[str, Any]) -> None:
        tail = {"summary": summary.get("summary", {}), "timing_s": summary.get("timing_s", {})}
        if summary.get("backend_info"):
            tail["backend_info"] = summary["backend_info"]
        sep = ",\n" if self.indent else ", "
        close = ("\n  ]" if self.count else "]") if self.indent else "]"
        self.fh.write(close + sep + sep.join(self._member(k, v) for k, v in tail.items()) + ("\n}\n" if self.indent else "}\n"))


class GeoJsonWriter(CellWriter):
    def begin(self) -> None:
        props = {"mastctl": {k: v for k, v in self.header.items() if v is not None}}
        self.fh.write('{"type": "FeatureCollection", "properties": ' + json.dumps(props, ensure_ascii=False, default=str)
                      + ', "features": [\n')

    def write(self, cells: Sequence[Cell]) -> int:
        chosen = self.chosen(cells)
        for c in chosen:
            feature = geojson_feature(c, self.cell_id(self.count), self.mpp)
            self.fh.write((",\n" if self.count else "") + json.dumps(feature, ensure_ascii=False))
            self.count += 1
        return len(chosen)

    def finish(self, summary: dict[str, Any]) -> None:
        for feature in summary.get("annotations", ()):  # tissue outline, hotspot: QuPath annotations
            self.fh.write((",\n" if self.count else "") + json.dumps(feature, ensure_ascii=False))
            self.count += 1
        self.fh.write("\n]}\n")


class CsvWriter(CellWriter):
    def __init__(self, fh, header, all_cells, write_header: bool = True, columns: list[str] | None = None) -> None:
        super().__init__(fh, header, all_cells)
        self.csv = csv.writer(fh, lineterminator="\n")
        self.write_header = write_header
        self.extra = columns  # feature columns, fixed by the first cells (or given)

    def write(self, cells: Sequence[Cell]) -> int:
        chosen = self.chosen(cells)
        if chosen and self.extra is None:
            self.extra = sorted({k for c in chosen for k in c.features})
        if self.write_header and (chosen or self.extra is not None):
            self.csv.writerow([*CSV_COLUMNS, *(self.extra or [])])
            self.write_header = False
        mpp = self.mpp
        for c in chosen:
            d = c.to_dict()
            feats = d.get("features", {})
            self.csv.writerow([self.image_path, self.cell_id(self.count), d["x"], d["y"],
                               "" if not mpp else round(c.x * mpp, 3), "" if not mpp else round(c.y * mpp, 3),
                               "" if not mpp else mpp, d["label"], d["kind"] or "", d["confidence"],
                               *["" if feats.get(k) is None else feats[k] for k in self.extra or []]])
            self.count += 1
        return len(chosen)

    def finish(self, summary: dict[str, Any]) -> None:
        if self.write_header:  # no cell at all: still a table
            self.csv.writerow([*CSV_COLUMNS, *(self.extra or [])])
            self.write_header = False


class OverlayWriter(CellWriter):
    """Collects the cells, then draws them on the image (held in memory: plain images only)."""

    def __init__(self, fh, header, all_cells, pixels) -> None:
        super().__init__(fh, header, all_cells)
        self.pixels = pixels
        self.cells: list[Cell] = []

    def write(self, cells: Sequence[Cell]) -> int:
        chosen = self.chosen(cells)
        self.cells.extend(chosen)
        self.count += len(chosen)
        return len(chosen)

    def render(self) -> bytes:
        return render_overlay(self.cells, self.pixels, self.mpp)


def render_overlay(cells: Sequence[Cell], pixels, mpp: float | None) -> bytes:
    """The image as PNG with a ring around each cell in its class's colour, and a legend.

    Every class gets the same ring (one size, about a mast cell's, so no class looks more important),
    drawn over a dark ring so it stands out on pink and purple alike. The PNG carries a text chunk
    marking it as mastctl's overlay (only such a file is replaced without --force).
    """
    from PIL import Image as PILImage
    from PIL import ImageDraw
    from PIL.PngImagePlugin import PngInfo

    from mastctl.wsi.density import _font

    canvas = PILImage.fromarray(pixels, "RGB")
    draw = ImageDraw.Draw(canvas)
    radius = MARK_RADIUS_UM / mpp if mpp else 8.0
    radius = max(4.0, min(radius, 60.0))
    width = max(2, int(round(radius / 5)))
    for c in cells:
        color = cell_class(c.label, c.kind).color
        box = [c.x - radius, c.y - radius, c.x + radius, c.y + radius]
        draw.ellipse(box, outline=(20, 20, 20), width=width + 2)
        draw.ellipse(box, outline=color, width=width)
    present = [k for k in CELL_CLASSES if any(cell_class(c.label, c.kind) is k for c in cells)]
    if present:  # the legend: the classes drawn, top left, on a white card
        font = _font(max(10, min(16, canvas.height // 30)))
        line = font.size + 6 if hasattr(font, "size") else 16
        w = max(draw.textlength(k.qupath, font=font) for k in present) + line + 16
        draw.rectangle([4, 4, 4 + w, 8 + line * len(present)], fill=(255, 255, 255), outline=(60, 60, 60))
        for i, k in enumerate(present):
            y = 8 + i * line
            draw.ellipse([10, y + 2, 10 + line - 8, y + line - 6], outline=k.color, width=3)
            draw.text((14 + line, y + 1), k.qupath, fill=(0, 0, 0), font=font)
    info = PngInfo()
    info.add_text("Software", OVERLAY_MARK)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


_UNFINISHED: set[str] = set()  # temporary files not yet renamed into place or removed


@at_stop
def remove_unfinished() -> None:
    """Remove the temporary files of outputs never finished (as each CLI run ends)."""
    for tmp in list(_UNFINISHED):
        _UNFINISHED.discard(tmp)
        try:
            os.unlink(tmp)
        except OSError:
            pass


class FileTarget:
    """A file written through a temporary sibling and renamed into place (optionally gzipped)."""

    @shielded
    def __init__(self, path: Path, gz: bool = False, binary: bool = False) -> None:
        self.path = Path(path)
        _make_parent(self.path)
        self._mode = self.path.stat().st_mode & 0o7777 if self.path.exists() else 0o666 & ~_umask()
        fd, self.tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
        _UNFINISHED.add(self.tmp)
        raw = os.fdopen(fd, "wb")
        if gz:
            raw = gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)  # type: ignore[assignment]
        self._raw = raw
        self.fh: IO[Any] = raw if binary else io.TextIOWrapper(raw, encoding="utf-8", newline="")

    @shielded
    def commit(self) -> Path:
        self.fh.close()
        os.chmod(self.tmp, self._mode)
        os.replace(self.tmp, self.path)
        _UNFINISHED.discard(self.tmp)
        return self.path

    @shielded
    def discard(self) -> None:
        try:
            self.fh.close()
        except Exception:  # noqa: BLE001 - a broken stream must not hide why we discard it
            pass
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)
        _UNFINISHED.discard(self.tmp)


class Output:
    """One image's output: a :class:`CellWriter` on a file (atomic) or on a stream (stdout)."""

    def __init__(self, writer: CellWriter, target: FileTarget | None = None) -> None:
        self.writer, self.target = writer, target

    @property
    def count(self) -> int:
        return self.writer.count

    def write(self, cells: Sequence[Cell]) -> int:
        return self.writer.write(cells)

    def finish(self, summary: dict[str, Any]) -> Path | None:
        try:
            if isinstance(self.writer, OverlayWriter):
                assert self.target is not None
                self.target.fh.write(self.writer.render())
            else:
                self.writer.finish(summary)
        except BaseException:
            self.abort()
            raise
        if self.target is None:
            self.writer.fh.flush()
            return None
        return self.target.commit()

    def abort(self) -> None:
        if self.target is not None:
            self.target.discard()


def open_output(fmt: str, header: dict[str, Any], *, path: Path | None = None, gz: bool = False, stream: IO[str] | None = None,
                all_cells: bool = False, pixels=None, indent: bool = True, csv_header: bool = True) -> Output:
    """Start one image's output (``header``: image info, backend, provenance) on ``path`` or ``stream``."""
    check_format(fmt)
    if path is None and stream is None:
        raise UsageError("an output needs a file or a stream")
    if fmt == "overlay" and path is None:
        raise UsageError("overlay output needs -o FILE")
    if fmt == "overlay" and pixels is None:
        raise UsageError("overlay output draws on the image itself: it needs a plain image, not a whole slide "
                         "(a slide gets a heat map beside its geojson or csv)")
    target = None if path is None else FileTarget(path, gz=gz, binary=fmt == "overlay")
    try:
        fh = stream if target is None else target.fh
        if fmt == "json":
            writer: CellWriter = JsonWriter(fh, header, all_cells, indent=indent)
        elif fmt == "geojson":
            writer = GeoJsonWriter(fh, header, all_cells)
        elif fmt == "csv":
            writer = CsvWriter(fh, header, all_cells, write_header=csv_header)
        else:
            writer = OverlayWriter(fh, header, all_cells, pixels)
        writer.begin()
    except BaseException:
        if target is not None:
            target.discard()
        raise
    return Output(writer, target)


# --------------------------------------------------------------------------- whole documents (in memory)


def header_of(det: Detections) -> dict[str, Any]:
    return {"image": {"path": det.image.path, "width": det.image.width, "height": det.image.height, "mpp": det.image.mpp},
            "backend": det.backend}


def render(det: Detections, fmt: str, all_cells: bool = False, indent: bool = True) -> str:
    """One image's detections as text (json, csv, geojson)."""
    buf = io.StringIO()
    out = open_output(fmt, header_of(det), stream=buf, all_cells=all_cells, indent=indent)
    out.write(det.cells)
    out.finish(det.document_tail())
    return buf.getvalue()


def to_json(det: Detections, all_cells: bool, indent: int | None = 2) -> str:
    return render(det, "json", all_cells, indent=bool(indent))


def to_geojson(det: Detections, all_cells: bool) -> dict[str, Any]:
    return json.loads(render(det, "geojson", all_cells))


def write(det: Detections, fmt: str, path: Path, *, all_cells: bool = False, image: Image | None = None,
          force: bool = True) -> Path:
    """Write one image's detections to ``path`` atomically; returns the path."""
    check_format(fmt)
    if not force:
        check_target(path, fmt, force)
    found = format_for(path)
    gz = bool(found and found[1])
    out = open_output(fmt, header_of(det), path=path, gz=gz, all_cells=all_cells,
                      pixels=None if image is None else image.pixels)
    out.write(det.cells)
    out.finish(det.document_tail())
    return path


def dump(dets: Sequence[Detections], fmt: str, stream: IO[str], *, all_cells: bool = False) -> None:
    """Text formats to a stream: JSON (Lines for several images), CSV (one header), GeoJSON (one image)."""
    if fmt == "geojson" and len(dets) != 1:
        raise UsageError(f"{fmt} output for {len(dets)} image(s) needs a file: pass -o PATH")
    if fmt not in TEXT_FORMATS:
        raise UsageError(f"{fmt} output needs -o FILE")
    columns = sorted({k for d in dets for c in d.selected(all_cells) for k in c.features}) if fmt == "csv" else None
    for i, det in enumerate(dets):
        out = open_output(fmt, header_of(det), stream=stream, all_cells=all_cells, indent=len(dets) == 1,
                          csv_header=i == 0)
        if isinstance(out.writer, CsvWriter):
            out.writer.extra = columns
        out.write(det.cells)
        out.finish(det.document_tail())


# --------------------------------------------------------------------------- atomic files


def atomic_write(path: Path, fill: Callable[[IO[bytes]], Any]) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``."""
    if path.is_dir():
        raise UsageError(f"cannot write {path}: it is a folder")
    target = FileTarget(path, binary=True)
    try:
        fill(target.fh)
    except BaseException:
        target.discard()
        raise
    target.commit()


def _make_parent(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UsageError(f"cannot write {path}: a file stands where its folder should be") from None
    except PermissionError:
        raise InputError(f"cannot write {path}: permission denied") from None
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc}") from None
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"cannot write {path}: the folder {path.parent} is not writable")


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current
