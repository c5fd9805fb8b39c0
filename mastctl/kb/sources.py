"""Where knowledge-base records come from: annotation files with their images, earlier analyses, records.

Every cell of an annotation becomes a record whose id is the image and the
point (``{image}-x{X}-y{Y}``), so ingesting the same file twice adds nothing.
Its crop is cut from the image, embedded once, and the same measurement
describes the nucleus and rates the difficulty (how sure the morphology model
is of the annotated class).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mastctl.cells import Cell
from mastctl.errors import InputError
from mastctl.imaging import IMAGE_SUFFIXES
from mastctl.kb import crops as C
from mastctl.kb.describe import describe, difficulty
from mastctl.kb.records import CellRecord, Coordinates

DEFAULT_CROP_UM = 30.0


def record_id(key: str, x: float, y: float) -> str:
    clean = re.sub(r"[^A-Za-z0-9_.\-]+", "_", key).strip("_.-") or "image"
    return f"{clean}-x{int(round(x))}-y{int(round(y))}"


def cell_type(cell: Cell) -> tuple[str, str]:
    """(record type, label) of an annotated cell; a mast cell of unknown kind counts as explicit."""
    if cell.is_mast_cell:
        return (cell.kind or "explicit"), "mast_cell"
    return "negative", cell.label


def cell_records(pixels: np.ndarray, mpp: float, cells: Sequence[Cell], *, key: str, embedder: Any,
                 image_path: str | None = None, ihc_image_path: str | None = None, source: str = "",
                 crop_um: float = DEFAULT_CROP_UM, insights: Sequence[str] = (),
                 ) -> tuple[list[CellRecord], list[np.ndarray]]:
    """Records (with crops) and their image vectors for the annotated cells of one image."""
    h, w = pixels.shape[:2]
    inside = [c for c in cells if 0 <= c.x < w and 0 <= c.y < h]
    crop_arrays = [C.cut(pixels, mpp, c.x, c.y, crop_um) for c in inside]
    from mastctl.protocols import MeasuringEmbedder

    if isinstance(embedder, MeasuringEmbedder):
        vectors, measures = embedder.embed_and_measure(crop_arrays) if crop_arrays else (np.zeros((0, embedder.dim)), [])
    else:
        vectors, measures = (embedder.embed(crop_arrays) if crop_arrays else np.zeros((0, embedder.dim))), [None] * len(inside)
    records = []
    for cell, crop, m in zip(inside, crop_arrays, measures):
        rtype, label = cell_type(cell)
        kind = label if rtype == "negative" else rtype
        morph, dist, words = describe(kind, m.features if m else {})
        records.append(CellRecord(
            id=record_id(key, cell.x, cell.y), type=rtype, label=label, image_path=image_path, ihc_image_path=ihc_image_path,
            coordinates=Coordinates(x=round(cell.x, 2), y=round(cell.y, 2)), mpp=mpp, confidence=cell.confidence,
            morphological_features=morph, distinguishing_features=dist, insights=[*words, *insights],
            difficulty=difficulty(m.probabilities, kind) if m else "medium", source=source,
            crop_png=C.to_png(crop), crop_um=crop_um,
        ))
    return records, list(vectors)


def synth_tile_records(tile, key: str, embedder: Any | None = None) -> tuple[list[CellRecord], list[np.ndarray]]:
    """Records of a rendered synthetic tile (benchmarks, tests)."""
    if embedder is None:
        from mastctl import registry

        embedder = registry.create("embedder", "cellcrop")
    cells = [Cell(c.x, c.y, c.label, c.kind, 1.0) for c in tile.cells]
    return cell_records(tile.he, tile.mpp, cells, key=key, embedder=embedder, image_path=f"{key}_he.png", source="synthetic")


# --------------------------------------------------------------------------- annotation files


def find_image(key: str, named: str | None, folders: Sequence[Path]) -> Path:
    """The image of an annotation: the file it names, else ``key.*`` in the given folders."""
    if named and Path(named).is_file():
        return Path(named)
    for folder in folders:
        for suffix in IMAGE_SUFFIXES:
            for candidate in (folder / f"{key}{suffix}", folder / f"{key}_he{suffix}"):
                if candidate.is_file():
                    return candidate
    where = ", ".join(str(f) for f in folders) or "(no --images folder given)"
    raise InputError(f"no image found for annotations of {key!r} (looked for {key}.* in {where}); give --images DIR")


def images_in(source: Path, from_analysis: bool = False) -> int:
    """How many images an ingest source will read (for progress): a JSONL file counts as one."""
    if source.suffix.lower() == ".jsonl":
        return 1
    if from_analysis:
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return 1
        return len(data) if isinstance(data, list) else 1
    from mastctl.truth import load_truth

    return max(1, len(load_truth(source)))


def truth_batches(truth: Path, images: Sequence[Path], *, embedder: Any, mpp: float | None, crop_um: float,
                  include_negatives: bool = True, source: str | None = None, workers: int = 1,
                  ) -> Iterator[tuple[Path, list[CellRecord], list[np.ndarray]]]:
    """Per annotated image, in key order: (image, records, image vectors).

    ``workers`` > 1 cuts and embeds several images at once in worker processes (the embedder is
    rebuilt there from its registry name); results still arrive in order.
    """
    from mastctl.truth import load_truth

    annotated = load_truth(truth)
    folders = [*images, truth if truth.is_dir() else truth.parent]
    jobs = [(find_image(key, item.image, folders), key, item, mpp, crop_um, include_negatives, source or truth.name)
            for key, item in sorted(annotated.items())]
    if workers > 1 and len(jobs) >= 2 * workers:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from mastctl.threads import share_the_cores

        name = getattr(embedder, "name", None)
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=share_the_cores, initargs=(workers,)) as pool:
            yield from pool.map(_truth_job, [(*job, name) for job in jobs], chunksize=1)
        return
    for job in jobs:
        yield _truth_job((*job, embedder))


_WORKER_EMBEDDERS: dict[str, Any] = {}


def _truth_job(job) -> tuple[Path, list[CellRecord], list[np.ndarray]]:
    from mastctl import imaging

    path, key, item, mpp, crop_um, include_negatives, source, embedder = job
    if isinstance(embedder, str):  # in a worker process: build it once
        if embedder not in _WORKER_EMBEDDERS:
            from mastctl import registry

            _WORKER_EMBEDDERS[embedder] = registry.create("embedder", embedder)
        embedder = _WORKER_EMBEDDERS[embedder]
    image = imaging.load(path, mpp=mpp)
    use_mpp = mpp or item.mpp or image.mpp
    if not use_mpp:
        raise InputError(f"{path}: resolution unknown; give --mpp")
    cells = [c for c in item.cells if include_negatives or c.is_mast_cell]
    records, vectors = cell_records(image.pixels, use_mpp, cells, key=key, embedder=embedder, image_path=str(path),
                                    ihc_image_path=_ihc_partner(path), source=source, crop_um=crop_um)
    return path, records, vectors


def _ihc_partner(he: Path) -> str | None:
    if "_he" not in he.stem:
        return None
    candidate = he.with_name(he.name.replace("_he", "_ihc", 1))
    return str(candidate) if candidate.is_file() else None


# --------------------------------------------------------------------------- earlier analyses

_POINT = re.compile(r"(?:\(\s*|\bx\s*[=:]\s*)(-?\d+(?:\.\d+)?)\s*(?:,|;|\s)\s*(?:y\s*[=:]\s*)?(-?\d+(?:\.\d+)?)\s*\)?", re.IGNORECASE)


def analysis_points(text: str) -> list[tuple[float, float, str]]:
    """(x, y, kind) from free text such as '1. (195, 190) explicit ...' or 'x=120, y=88 - implicit'.

    The kind is the word explicit/implicit nearest after the point on its line (explicit when none).
    """
    found = []
    for line in str(text).splitlines() or [str(text)]:
        matches = list(_POINT.finditer(line))
        for i, m in enumerate(matches):
            tail = line[m.end(): matches[i + 1].start() if i + 1 < len(matches) else len(line)].lower()
            head = line[: m.start()].lower()
            kind = "implicit" if "implicit" in tail or ("implicit" in head and "explicit" not in tail) else "explicit"
            found.append((float(m.group(1)), float(m.group(2)), kind))
    return found


def analysis_insights(text: str) -> list[str]:
    parts = re.split(r"(?:\n+|(?<=[.!?])\s+)", str(text or ""))
    return [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", p).strip() for p in parts if len(p.strip()) > 3]


def analysis_batches(path: Path, images: Sequence[Path], *, embedder: Any, mpp: float | None, crop_um: float,
                     ) -> Iterator[tuple[Path, list[CellRecord], list[np.ndarray]]]:
    """Records from the analysis-results JSON of the original design (image_no, image_yes, step1/step3 text)."""
    from mastctl import imaging

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not readable JSON: {exc}") from None
    if isinstance(data, dict):
        data = data.get("results") or data.get("analyses") or [data]
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a list of analyses (objects with image_no, step1_coordinates)")
    folders = [*images, path.parent]
    for n, item in enumerate(data, start=1):
        if not isinstance(item, dict) or "image_no" not in item:
            raise InputError(f"{path}: analysis {n} lacks image_no (the unmarked image)")
        points = analysis_points(item.get("step1_coordinates", ""))
        if not points:
            continue
        named = Path(str(item["image_no"]))
        direct = [f / named for f in folders if (f / named).is_file()]
        image_path = named if named.is_absolute() and named.is_file() else direct[0] if direct else find_image(named.stem, None, folders)
        image = imaging.load(image_path, mpp=mpp)
        use_mpp = mpp or image.mpp
        if not use_mpp:
            raise InputError(f"{image_path}: resolution unknown; give --mpp")
        cells = [Cell(x, y, "mast_cell", kind, 1.0) for x, y, kind in points]
        yes = item.get("image_yes")
        records, vectors = cell_records(image.pixels, use_mpp, cells, key=image_path.stem, embedder=embedder,
                                        image_path=str(image_path), source=f"analysis:{path.name}", crop_um=crop_um,
                                        insights=analysis_insights(item.get("step3_recommendations", "")))
        if yes:
            for r in records:
                r.insights.append(f"marked in {Path(str(yes)).name}")
        yield image_path, records, vectors


# --------------------------------------------------------------------------- record files (kb add --file, kb ingest *.jsonl)


def read_records_file(path: Path) -> list[dict[str, Any]]:
    import json

    import yaml

    from mastctl import yamlio

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yamlio.load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise InputError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'YAML'}: {str(exc).splitlines()[0]}") from None
    items = data if isinstance(data, list) else [data]
    if not items or not all(isinstance(i, dict) for i in items):
        raise InputError(f"{path}: expected a record (a mapping) or a list of records")
    return items


def with_derived_id(raw: dict[str, Any]) -> dict[str, Any]:
    if raw.get("id") or not raw.get("image_path") or not isinstance(raw.get("coordinates"), dict):
        return raw
    from mastctl.truth import image_key

    return {**raw, "id": record_id(image_key(raw["image_path"]), raw["coordinates"]["x"], raw["coordinates"]["y"])}


def with_crop(crop_um: float, record: CellRecord, base: Path, mpp: float | None) -> CellRecord:
    """A record naming an image and a point gets its crop (and mpp) from the image, unless it has one."""
    if record.crop_png is not None or not record.image_path or record.coordinates is None:
        return record
    from mastctl import imaging
    from mastctl.kb import crops as C

    path = Path(record.image_path)
    if not path.is_absolute() and not path.exists():
        path = base / path
    image = imaging.load(path, mpp=mpp or record.mpp)
    use_mpp = mpp or record.mpp or image.mpp
    if not use_mpp:
        raise InputError(f"{path}: resolution unknown; give --mpp")
    crop = C.cut(image.pixels, use_mpp, record.coordinates.x, record.coordinates.y, crop_um)
    return record.model_copy(update={"crop_png": C.to_png(crop), "crop_um": crop_um, "mpp": use_mpp})
