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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mastctl.cells import LOOK_ALIKES
from mastctl.errors import InputError

SCHEMA_VERSION = 2
SCHEMA = f"mastctl/kb-record@{SCHEMA_VERSION}"
RECORD_TYPES = ("explicit", "implicit", "negative")
NEGATIVE_LABELS = LOOK_ALIKES  # a negative record is one of the look-alikes
DIFFICULTIES = ("easy", "medium", "hard")
WORD_CONFIDENCE = {"high": 0.9, "medium": 0.6, "low": 0.3}


MAX_TEXT = 2000  # characters of one description field
MAX_INSIGHTS = 64
MAX_PATH = 4096
MAX_CROP_BYTES = 4 * 1024 * 1024
MAX_CROP_PX = 1024  # a crop is crop_um at 0.5 um/px: 60 px for the default 30 um
MAX_LINE_BYTES = 16 * 1024 * 1024  # one JSON Lines record, crop included

Text = Annotated[str, Field(max_length=MAX_TEXT)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)


class Coordinates(_Part):
    x: float = Field(ge=0, le=10_000_000)
    y: float = Field(ge=0, le=10_000_000)


class Morphology(_Part):
    nucleus: Text = ""
    cytoplasm: Text = ""
    shape: Text = ""
    location: Text = ""


class Distinguishing(_Part):
    vs_lymphocytes: Text = ""
    vs_plasma_cells: Text = ""
    vs_fibroblasts: Text = ""


def now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class CellRecord(BaseModel):
    """One example cell of the knowledge base."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    id: str = Field(min_length=1, max_length=200)
    type: Literal["explicit", "implicit", "negative"]
    label: str = Field("mast_cell", max_length=40)  # mast_cell for explicit/implicit; the look-alike's label for negatives
    image_path: str | None = Field(None, max_length=MAX_PATH)
    ihc_image_path: str | None = Field(None, max_length=MAX_PATH)
    coordinates: Coordinates | None = None
    mpp: float | None = Field(None, ge=0.01, le=100)
    confidence: float = Field(1.0, ge=0, le=1)
    morphological_features: Morphology = Field(default_factory=Morphology)
    distinguishing_features: Distinguishing = Field(default_factory=Distinguishing)
    insights: list[Text] = Field(default_factory=list, max_length=MAX_INSIGHTS)
    difficulty: Literal["easy", "medium", "hard"] = "medium"
    source: str = Field("", max_length=200)
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)
    crop_png: bytes | None = Field(None, max_length=MAX_CROP_BYTES)  # the cell at the centre, crop_um x crop_um
    crop_um: float | None = Field(None, gt=0, le=1000)

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
            if len(value) > MAX_CROP_BYTES * 4 // 3 + 4:
                raise ValueError(f"crop_png is larger than {MAX_CROP_BYTES // (1024 * 1024)} MB")
            try:
                value = base64.b64decode(value, validate=True)
            except ValueError:
                raise ValueError("crop_png must be base64 PNG data") from None
        if value is not None:
            check_crop_png(bytes(value))
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


def check_crop_png(data: bytes) -> None:
    """A crop is a small, whole PNG: its header's size is read before anything is decoded."""
    import io
    import struct

    if not data.startswith(b"\x89PNG\r\n\x1a\n") or len(data) < 33 or data[12:16] != b"IHDR":
        raise ValueError("crop_png is not a PNG image")
    if len(data) > MAX_CROP_BYTES:
        raise ValueError(f"crop_png is larger than {MAX_CROP_BYTES // (1024 * 1024)} MB")
    width, height = struct.unpack(">II", data[16:24])
    if not (0 < width <= MAX_CROP_PX and 0 < height <= MAX_CROP_PX):
        raise ValueError(f"crop_png is {width} x {height} pixels; a crop is at most {MAX_CROP_PX} x {MAX_CROP_PX}")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception as exc:  # truncated or corrupt image data
        raise ValueError(f"crop_png is damaged ({str(exc).strip()[:100] or type(exc).__name__})") from None


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
