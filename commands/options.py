"""Options several commands share, each defined once: its name, type, check and help.

A bad value is a usage error (exit 2) raised while the command line is parsed,
before any file is read.
"""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from mastctl.scale import MPP_RANGE


def parse_mpp(text: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise typer.BadParameter(f"{text!r} is not a number of micrometres per pixel") from None
    if not math.isfinite(value) or not MPP_RANGE[0] <= value <= MPP_RANGE[1]:
        raise typer.BadParameter(f"{text} is outside {MPP_RANGE[0]:g}-{MPP_RANGE[1]:g} micrometres per pixel "
                                 "(0.25 = 40x, 0.5 = 20x)")
    return value


def mpp(help: str = "Micrometres per pixel; overrides the files' own scale.") -> Any:
    """``--mpp X`` (use as ``Annotated[float | None, O.mpp("...")]``): a plausible microscope scale (0.01-100 um/px)."""
    return typer.Option("--mpp", help=help, parser=parse_mpp, metavar="UM_PER_PX", show_default=False)


def workers(help: str = "Worker processes (default: CPU cores).", panel: str | None = None) -> Any:
    """``--workers N`` (use as ``Annotated[int | None, O.workers("...")]``)."""
    return typer.Option("--workers", min=1, max=256, help=help, show_default=False, rich_help_panel=panel)


def force(help: str = "Overwrite an existing output file that mastctl did not write.") -> Any:
    """``--force`` (use as ``Annotated[bool, O.force()]``)."""
    return typer.Option("--force", help=help)


Output = Annotated[Path | None, typer.Option("--output", "-o", help="Output file.", show_default=False)]


class Format(str, Enum):
    json = "json"
    csv = "csv"
    geojson = "geojson"
    overlay = "overlay"


class Executor(str, Enum):
    local = "local"
    dask = "dask"


FormatOption = Annotated[Format | None, typer.Option("--format", "-f", help="Output format (default: from -o's extension, else the profile's detect.format).", show_default=False)]
Backend = Annotated[str | None, typer.Option("--backend", "-b", help="Detector (default: the profile's detect.backend; see `mastctl backends list`).", show_default=False)]
BackendOptions = Annotated[list[str] | None, typer.Option("--option", "-O", help="Backend option KEY=VALUE (a YAML value; repeatable); overrides the profile's backend_options.", metavar="KEY=VALUE", show_default=False)]


def backend_options(pairs: list[str] | None) -> dict[str, Any]:
    """``-O key=value`` pairs as a dict (values read as YAML: 0.3, true, [1, 2], text)."""
    import yaml

    from mastctl import yamlio
    from mastctl.errors import UsageError

    options: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = yamlio.load(value) if value.strip() else ""
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def parse_roi(text: str) -> tuple[int, int, int, int]:
    """``x,y,w,h`` in level-0 pixels: whole, finite, non-negative, w and h positive."""
    parts = text.split(",")
    try:
        values = [float(v) for v in parts]
    except ValueError:
        values = []
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise typer.BadParameter(f"wants x,y,w,h in level-0 pixels (four finite numbers), got {text!r}")
    x, y, w, h = (int(v) for v in values)
    if w <= 0 or h <= 0 or x < 0 or y < 0:
        raise typer.BadParameter(f"{text}: x, y must be >= 0 and w, h > 0")
    if max(x + w, y + h) > 10_000_000:
        raise typer.BadParameter(f"{text}: larger than any slide (10 million pixels a side)")
    return x, y, w, h
