"""Cells and detections: the data every detector returns and every writer reads.

Plain frozen data classes, no numpy: coordinates are pixels of the input
image (x to the right, y down, origin at the top-left pixel's corner), so a
cell at the centre of pixel (col, row) has x = col + 0.5 only if a detector
says so; mastctl itself never shifts coordinates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mastctl.errors import InputError

SCHEMA = "mastctl/detections@1"

# --------------------------------------------------------------------------- the vocabulary (its one home)

LABELS = ("mast_cell", "lymphocyte", "plasma_cell", "fibroblast", "eosinophil", "other")
KINDS = ("explicit", "implicit")
LOOK_ALIKES = LABELS[1:]  # every label that is not a mast cell (a knowledge base's "negative" records)


@dataclass(frozen=True)
class CellClass:
    """How one (label, kind) is named and drawn everywhere: QuPath's class name and colour."""

    label: str
    kind: str | None
    qupath: str  # QuPath classification name ("Mast cell: Explicit": a derived class)
    color: tuple[int, int, int]


CELL_CLASSES: tuple[CellClass, ...] = (
    CellClass("mast_cell", "explicit", "Mast cell: Explicit", (230, 0, 230)),
    CellClass("mast_cell", "implicit", "Mast cell: Implicit", (255, 140, 0)),
    CellClass("mast_cell", None, "Mast cell", (220, 20, 60)),
    CellClass("lymphocyte", None, "Lymphocyte", (30, 144, 255)),
    CellClass("plasma_cell", None, "Plasma cell", (138, 43, 226)),
    CellClass("fibroblast", None, "Fibroblast", (34, 139, 34)),
    CellClass("eosinophil", None, "Eosinophil", (255, 69, 0)),
    CellClass("other", None, "Other", (128, 128, 128)),
)
_BY_KEY = {(c.label, c.kind): c for c in CELL_CLASSES}


def cell_class(label: str, kind: str | None = None) -> CellClass:
    return _BY_KEY[(label, kind if label == "mast_cell" else None)]


def parse_label(name: object) -> tuple[str, str | None] | None:
    """A free class name -> (label, kind), or None when it names nothing mastctl knows.

    'Mast cell: Implicit', 'mast_implicit', 'Tryptase+', 'Lymphocytes', 'Plasma', 'spindle'...
    """
    text = str(name or "").strip().lower().replace("-", " ").replace("_", " ")
    if not text:
        return None
    kind = "explicit" if "explicit" in text else "implicit" if "implicit" in text else None
    if "mast" in text or kind or "tryptase" in text or "cd117" in text:
        return "mast_cell", kind
    for key, label in (("lymph", "lymphocyte"), ("plasma", "plasma_cell"), ("fibro", "fibroblast"), ("spindle", "fibroblast"),
                       ("eosin", "eosinophil"), ("other", "other"), ("negative", "other"), ("epithel", "other"),
                       ("endothel", "other"), ("tumou", "other"), ("tumor", "other"), ("stroma", "other"),
                       ("inflam", "other"), ("neutro", "other"), ("macro", "other"), ("necro", "other"),
                       ("connective", "other"), ("dead", "other"), ("nucle", "other")):
        if key in text:
            return label, None
    return None


@dataclass(frozen=True)
class Cell:
    """One detected cell: nucleus centre in input-image pixels, what it is, how sure."""

    x: float
    y: float
    label: str = "mast_cell"
    kind: str | None = None  # explicit | implicit, for mast cells; None when unknown or not a mast cell
    confidence: float = 1.0
    features: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.x) and math.isfinite(self.y)):
            raise ValueError(f"cell coordinates must be finite numbers, got ({self.x}, {self.y})")
        if self.label not in LABELS:
            raise ValueError(f"cell label must be one of {', '.join(LABELS)}; got {self.label!r}")
        if self.kind is not None and self.kind not in KINDS:
            raise ValueError(f"cell kind must be explicit, implicit or null; got {self.kind!r}")
        if self.kind is not None and self.label != "mast_cell":
            raise ValueError(f"only mast cells have a kind (explicit/implicit); a {self.label} has none")
        if not (0.0 <= self.confidence <= 1.0):
            raise ValueError(f"cell confidence must lie in 0..1, got {self.confidence}")

    @property
    def is_mast_cell(self) -> bool:
        return self.label == "mast_cell"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "x": round(float(self.x), 2),
            "y": round(float(self.y), 2),
            "label": self.label,
            "kind": self.kind,
            "confidence": round(float(self.confidence), 4),
        }
        if self.features:
            out["features"] = {k: _plain(v) for k, v in self.features.items()}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Cell:
        try:
            return cls(
                x=float(data["x"]),
                y=float(data["y"]),
                label=str(data.get("label", "mast_cell")),
                kind=data.get("kind") or None,
                confidence=float(data.get("confidence", 1.0)),
                features=dict(data.get("features") or {}),
            )
        except KeyError as exc:
            raise InputError(f"cell record lacks {exc.args[0]!r}: {dict(data)}") from None
        except (TypeError, ValueError) as exc:
            raise InputError(f"bad cell record {dict(data)}: {exc}") from None


def _plain(value: Any) -> Any:
    """Numbers as JSON-friendly Python floats/ints (numpy scalars included)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    try:
        return round(float(value), 6)
    except (TypeError, ValueError):
        return str(value)


@dataclass(frozen=True)
class ImageInfo:
    path: str
    width: int
    height: int
    mpp: float | None = None  # micrometres per pixel

    @property
    def area_mm2(self) -> float | None:
        if self.mpp is None:
            return None
        return self.width * self.height * (self.mpp / 1000.0) ** 2


@dataclass(frozen=True)
class Summary:
    """Counts of one image (or slide) and the density of mast cells per mm^2 of tissue."""

    mast_cells: int
    explicit: int
    implicit: int
    cells: int  # every cell found, mast cells included
    tissue_mm2: float | None  # the area densities are reported over (None: unknown scale or not measured)
    image_mm2: float | None  # the whole image (or the region analysed)

    @property
    def mast_cells_per_mm2(self) -> float | None:
        return self.mast_cells / self.tissue_mm2 if self.tissue_mm2 else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mast_cells": self.mast_cells,
            "explicit": self.explicit,
            "implicit": self.implicit,
            "cells": self.cells,
            "tissue_mm2": None if self.tissue_mm2 is None else round(self.tissue_mm2, 6),
            "image_mm2": None if self.image_mm2 is None else round(self.image_mm2, 6),
            "mast_cells_per_mm2": None if self.mast_cells_per_mm2 is None else round(self.mast_cells_per_mm2, 3),
            "density_over": "tissue",
        }


@dataclass(frozen=True)
class Detections:
    """What one detector found in one image (or what one run found over a slide)."""

    image: ImageInfo
    backend: str
    cells: tuple[Cell, ...] = ()
    timing_s: Mapping[str, float] = field(default_factory=dict)
    tissue_mm2: float | None = None  # measured by the run (mastctl.detection); a backend leaves it None
    info: Mapping[str, Any] = field(default_factory=dict)  # what the backend reports of its run (usage, opinions)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cells", tuple(self.cells))

    @property
    def mast_cells(self) -> tuple[Cell, ...]:
        return tuple(c for c in self.cells if c.is_mast_cell)

    def selected(self, all_cells: bool) -> tuple[Cell, ...]:
        """The cells to write: every cell with ``all_cells``, else the mast cells."""
        return self.cells if all_cells else self.mast_cells

    def summary(self) -> Summary:
        return summarise(self.cells, self.tissue_mm2, self.image.area_mm2)

    def document_tail(self) -> dict[str, Any]:
        """What follows the cells in a written document: the summary, timings, the backend's report."""
        tail: dict[str, Any] = {"summary": self.summary().to_dict(),
                                "timing_s": {k: round(float(v), 4) for k, v in self.timing_s.items()}}
        if self.info:
            tail["backend_info"] = dict(self.info)
        return tail

    def to_dict(self, all_cells: bool = False) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "image": {
                "path": self.image.path,
                "width": self.image.width,
                "height": self.image.height,
                "mpp": self.image.mpp,
            },
            "backend": self.backend,
            "cells": [c.to_dict() for c in self.selected(all_cells)],
            **self.document_tail(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Detections:
        if data.get("schema") != SCHEMA:
            raise InputError(f"not a {SCHEMA} document (schema = {data.get('schema')!r})")
        img = data.get("image") or {}
        try:
            info = ImageInfo(
                path=str(img["path"]), width=int(img["width"]), height=int(img["height"]), mpp=img.get("mpp")
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"detections document has a bad 'image' entry: {exc}") from None
        tissue = (data.get("summary") or {}).get("tissue_mm2")
        return cls(
            image=info,
            backend=str(data.get("backend", "")),
            cells=tuple(Cell.from_dict(c) for c in data.get("cells") or ()),
            timing_s=dict(data.get("timing_s") or {}),
            tissue_mm2=tissue if isinstance(tissue, (int, float)) else None,
            info=dict(data.get("backend_info") or {}),
        )


def summarise(cells, tissue_mm2: float | None, image_mm2: float | None) -> Summary:
    mast = [c for c in cells if c.is_mast_cell]
    return Summary(mast_cells=len(mast), explicit=sum(c.kind == "explicit" for c in mast),
                   implicit=sum(c.kind == "implicit" for c in mast), cells=len(cells), tissue_mm2=tissue_mm2,
                   image_mm2=image_mm2)

