"""JSON Schemas of the documents mastctl writes, shipped with the package (``mastctl schema NAME``)."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

from mastctl.errors import UsageError

NAMES = {"detections": "detections.json", "slide-summary": "slide-summary.json", "compare": "compare.json"}


def text(name: str) -> str:
    if name not in NAMES:
        raise UsageError(f"unknown schema {name!r} (choose from {', '.join(NAMES)})")
    return (resources.files("mastctl.schemas") / NAMES[name]).read_text(encoding="utf-8")


def load(name: str) -> dict[str, Any]:
    return json.loads(text(name))


def validate(name: str, document: Any) -> None:
    """Raise jsonschema.ValidationError when ``document`` does not follow schema ``name`` (tests, users)."""
    import jsonschema
    from referencing import Registry, Resource

    registry = Registry().with_resources([(load(n)["$id"], Resource.from_contents(load(n))) for n in NAMES])
    jsonschema.validate(document, load(name), registry=registry)
