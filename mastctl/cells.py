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

LABELS = ("mast_cell", "lymphocyte", "plasma_cell", "fibroblast", "eosinophil", "other")
KINDS = ("explicit", "implicit")


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
    mast_cells: int
    explicit: int
    implicit: int
    area_mm2: float | None
    mast_cells_per_mm2: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "mast_cells": self.mast_cells,
            "explicit": self.explicit,
            "implicit": self.implicit,
            "area_mm2": None if self.area_mm2 is None else round(self.area_mm2, 6),
            "mast_cells_per_mm2": None if self.mast_cells_per_mm2 is None else round(self.mast_cells_per_mm2, 3),
        }


@dataclass(frozen=True)
class Detections:
    """What one detector found in one image."""

    image: ImageInfo
    backend: str
    cells: tuple[Cell, ...] = ()
    timing_s: Mapping[str, float] = field(default_factory=dict)
    area_mm2: float | None = None  # analysed area; None = the whole image (when mpp is known)
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
        mast = self.mast_cells
        area = self.area_mm2 if self.area_mm2 is not None else self.image.area_mm2
        density = len(mast) / area if area else None
        return Summary(
            mast_cells=len(mast),
            explicit=sum(1 for c in mast if c.kind == "explicit"),
            implicit=sum(1 for c in mast if c.kind == "implicit"),
            area_mm2=area,
            mast_cells_per_mm2=density,
        )

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
            "summary": self.summary().to_dict(),
            "timing_s": {k: round(float(v), 4) for k, v in self.timing_s.items()},
            **({"backend_info": dict(self.info)} if self.info else {}),
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
        area = (data.get("summary") or {}).get("area_mm2")
        return cls(
            image=info,
            backend=str(data.get("backend", "")),
            cells=tuple(Cell.from_dict(c) for c in data.get("cells") or ()),
            timing_s=dict(data.get("timing_s") or {}),
            area_mm2=area if area != info.area_mm2 else None,
            info=dict(data.get("backend_info") or {}),
        )

