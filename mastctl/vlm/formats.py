"""The detection prompt, each model family's coordinate convention, and parsing of answers.

Conventions (what the answer's numbers mean):
- qwen2-vl: x and y normalised to 0-1000 of the image (Qwen2-VL's grounding convention);
- qwen2.5-vl: absolute pixels of the image as the model sees it (after its resize to multiples of 28);
- llava: x and y as fractions 0-1 of the image, three decimals (mastctl's choice; LLaVA has no convention of its own).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

PROMPT_VERSION = "mastctl-vlm-1"
FAMILIES = ("qwen2-vl", "qwen2.5-vl", "llava")

PROMPT = """Find all mast cells in this H&E image.
Explicit mast cells: round or ovoid cell, central nucleus, abundant pink granular cytoplasm ("fried egg").
Implicit mast cells: central nucleus with a pale, blurred cytoplasm border ("dirty halo").
Not mast cells: lymphocytes (no visible cytoplasm), plasma cells (eccentric nucleus), fibroblasts (spindle nucleus),
eosinophils (bilobed nucleus, orange-red granules).
Answer with a JSON list, one object per mast cell: {"x": X, "y": Y, "type": "explicit" or "implicit"}, the nucleus
centre in COORDS. Answer [] when there are none."""

COORDS = {
    "qwen2-vl": "0-1000 normalised coordinates (0,0 top left, 1000,1000 bottom right)",
    "qwen2.5-vl": "pixels of the image",
    "llava": "fractions 0-1 of the image width and height (0,0 top left), three decimals",
}


@dataclass(frozen=True)
class Point:
    x: float  # image pixels
    y: float
    kind: str = "explicit"


def prompt(family: str) -> str:
    return PROMPT.replace("COORDS", COORDS[family])


def smart_resize(height: int, width: int, factor: int = 28, min_pixels: int = 56 * 56, max_pixels: int = 14 * 14 * 4 * 1280) -> tuple[int, int]:
    """Qwen2-VL / Qwen2.5-VL's resize: sides multiples of ``factor``, area within [min_pixels, max_pixels]."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def _scale(family: str, width: int, height: int, seen: tuple[int, int] | None) -> tuple[float, float]:
    """Answer units per image pixel, in x and y."""
    if family == "qwen2-vl":
        return 1000 / width, 1000 / height
    if family == "qwen2.5-vl":
        sh, sw = seen or smart_resize(height, width)
        return sw / width, sh / height
    return 1 / width, 1 / height


def answer(points: list[Point], family: str, width: int, height: int, seen: tuple[int, int] | None = None) -> str:
    """The assistant's answer for these points, in the family's convention."""
    sx, sy = _scale(family, width, height, seen)
    digits = 3 if family == "llava" else 0
    items = []
    for p in sorted(points, key=lambda p: (p.y, p.x)):
        x, y = round(p.x * sx, digits), round(p.y * sy, digits)
        items.append({"x": int(x) if digits == 0 else x, "y": int(y) if digits == 0 else y, "type": p.kind})
    return json.dumps(items)


_OBJECT = re.compile(r"\{[^{}]*\}")
_BOX = re.compile(r"<\|box_start\|>\s*\(\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\)\s*,\s*\(\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\)\s*<\|box_end\|>")
_PAIR = re.compile(r"\(\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*\)")


def parse(text: str, family: str, width: int, height: int, seen: tuple[int, int] | None = None) -> tuple[list[Point], int]:
    """Points in image pixels from a model's answer, and how many items were invalid (dropped).

    Reads a JSON list; else every complete {...} object of a partial JSON answer; else Qwen box tokens
    ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>`` (0-1000, their centre); else bare "(x, y)" pairs.
    """
    sx, sy = _scale(family, width, height, seen)
    raw: list[tuple[float, float, str]] = []
    invalid = 0
    items = _json_items(text)
    if items is None:
        items = []
        for m in _OBJECT.finditer(text or ""):
            try:
                items.append(json.loads(m.group(0)))
            except json.JSONDecodeError:
                invalid += 1
    for item in items:
        try:
            x, y = float(item["x"]), float(item["y"])
            kind = str(item.get("type") or item.get("kind") or "explicit").lower()
            raw.append((x, y, "implicit" if kind.startswith("impl") else "explicit"))
        except (KeyError, TypeError, ValueError, AttributeError):
            invalid += 1
    if not items:
        for m in _BOX.finditer(text or ""):
            x1, y1, x2, y2 = map(float, m.groups())
            # Box tokens are always 0-1000 (Qwen2-VL grounding), whatever the family's point convention.
            raw.append(((x1 + x2) / 2 / 1000 * width * sx, (y1 + y2) / 2 / 1000 * height * sy, "explicit"))
        if not raw:
            raw = [(float(a), float(b), "explicit") for a, b in _PAIR.findall(text or "")]
    points = []
    for x, y, kind in raw:
        px, py = x / sx, y / sy
        if not (math.isfinite(px) and math.isfinite(py) and 0 <= px <= width and 0 <= py <= height):
            invalid += 1
            continue
        points.append(Point(px, py, kind))
    return points, invalid


def _json_items(text: str) -> list | None:
    s = (text or "").strip()
    s = re.sub(r"^```(?:json)?\s*|\s*```$", "", s)
    start = s.find("[")
    if start < 0:
        return None
    try:
        data = json.loads(s[start: s.rfind("]") + 1])
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, list) else None
