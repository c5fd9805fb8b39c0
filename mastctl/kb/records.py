"""The knowledge base's record: one annotated example cell, typed and versioned.

Field names follow the original design (``../shared/docs/domain.md``) so its
JSON loads as is: :func:`migrate` upgrades a version-1 record (the original
design: confidence as high/medium/low, ``vs_plasmocytes``, no schema field)
to the current version. The cell's crop (PNG bytes, fixed size in µm) travels
with the record; JSON forms carry it as base64.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mastctl.errors import InputError

SCHEMA_VERSION = 2
SCHEMA = f"mastctl/kb-record@{SCHEMA_VERSION}"
RECORD_TYPES = ("explicit", "implicit", "negative")
NEGATIVE_LABELS = ("lymphocyte", "plasma_cell", "fibroblast", "eosinophil", "other")
DIFFICULTIES = ("easy", "medium", "hard")
WORD_CONFIDENCE = {"high": 0.9, "medium": 0.6, "low": 0.3}


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Coordinates(_Part):
    x: float
    y: float


class Morphology(_Part):
    nucleus: str = ""
    cytoplasm: str = ""
    shape: str = ""
    location: str = ""


class Distinguishing(_Part):
    vs_lymphocytes: str = ""
    vs_plasma_cells: str = ""
    vs_fibroblasts: str = ""


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class CellRecord(BaseModel):
    """One example cell of the knowledge base."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=200)
    type: Literal["explicit", "implicit", "negative"]
    label: str = "mast_cell"  # mast_cell for explicit/implicit; the look-alike's label for negatives
    image_path: str | None = None
    ihc_image_path: str | None = None
    coordinates: Coordinates | None = None
    mpp: float | None = Field(None, gt=0)
    confidence: float = Field(1.0, ge=0, le=1)
    morphological_features: Morphology = Field(default_factory=Morphology)
    distinguishing_features: Distinguishing = Field(default_factory=Distinguishing)
    insights: list[str] = Field(default_factory=list)
    difficulty: Literal["easy", "medium", "hard"] = "medium"
    source: str = ""
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)
    crop_png: bytes | None = None  # the cell at the centre, crop_um x crop_um
    crop_um: float | None = Field(None, gt=0)

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:\-]*", value):
            raise ValueError("ids use letters, digits and _ . : - (starting with a letter or digit)")
        return value

    @field_validator("crop_png", mode="before")
    @classmethod
    def _crop(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = base64.b64decode(value, validate=True)
            except ValueError:
                raise ValueError("crop_png must be base64 PNG data") from None
        if value is not None and not bytes(value).startswith(b"\x89PNG\r\n\x1a\n"):
            raise ValueError("crop_png is not a PNG image")
        return value

    @model_validator(mode="after")
    def _label_matches_type(self) -> CellRecord:
        if self.type == "negative":
            if self.label not in NEGATIVE_LABELS:
                raise ValueError(f"a negative record's label must be one of {', '.join(NEGATIVE_LABELS)}, got {self.label!r}")
        elif self.label != "mast_cell":
            raise ValueError(f"an {self.type} record is a mast cell (label mast_cell), got label {self.label!r}")
        return self

    # ------------------------------------------------------------------ forms

    @property
    def cell_type(self) -> str:
        """explicit | implicit | the look-alike's label: the class retrieval is judged on."""
        return self.label if self.type == "negative" else self.type

    def to_json_dict(self, crop: bool = True) -> dict[str, Any]:
        """JSON-ready, with the schema; the crop as base64 (or left out)."""
        data = self.model_dump(mode="json", exclude={"crop_png"})
        out = {"schema": SCHEMA, **data}
        if crop and self.crop_png is not None:
            out["crop_png"] = base64.b64encode(self.crop_png).decode("ascii")
        return out

    def text(self) -> str:
        """The text rendering that the text embedder sees (no ids, paths or dates)."""
        what = f"{self.type} mast cell" if self.type != "negative" else f"{self.label.replace('_', ' ')} (not a mast cell)"
        parts = [what]
        for name, value in self.morphological_features.model_dump().items():
            if value:
                parts.append(f"{name}: {value}")
        for name, value in self.distinguishing_features.model_dump().items():
            if value:
                parts.append(f"{name.replace('_', ' ')}: {value}")
        if self.insights:
            parts.append("insights: " + "; ".join(self.insights))
        return ". ".join(parts)


def migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """Upgrade a record of an older schema to the current one (a new dict)."""
    data = dict(raw)
    schema = data.pop("schema", None)
    version = 1 if schema is None else _version(schema)
    if version > SCHEMA_VERSION:
        raise InputError(f"record {data.get('id')!r} has schema {schema}, newer than this mastctl ({SCHEMA}); upgrade mastctl")
    if version == 1:  # the original design's record
        conf = data.get("confidence")
        if isinstance(conf, str):
            key = conf.strip().lower()
            if key not in WORD_CONFIDENCE:
                raise InputError(f"record {data.get('id')!r}: confidence {conf!r} is not high, medium, low or a number")
            data["confidence"] = WORD_CONFIDENCE[key]
        dist = dict(data.get("distinguishing_features") or {})
        if "vs_plasmocytes" in dist:
            dist["vs_plasma_cells"] = dist.pop("vs_plasmocytes")
        if dist:
            data["distinguishing_features"] = dist
        if data.get("type") in NEGATIVE_LABELS:  # {"type": "lymphocyte"} in hand-written files
            data["label"], data["type"] = data["type"], "negative"
    return data


def _version(schema: Any) -> int:
    m = re.fullmatch(r"mastctl/kb-record@(\d+)", str(schema))
    if not m:
        raise InputError(f"unknown record schema {schema!r} (expected {SCHEMA})")
    return int(m.group(1))


def parse(raw: Any, where: str = "record") -> CellRecord:
    """A record from a JSON/YAML mapping of any known schema version; InputError naming the problem."""
    if not isinstance(raw, dict):
        raise InputError(f"{where}: a record must be a mapping, got {type(raw).__name__}")
    try:
        return CellRecord.model_validate(migrate(raw))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "record"
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise InputError(f"{where}: {loc}: {err['msg']}{more}") from None
