"""The physical scale of an image (micrometres per pixel): its bounds and the one fallback rule.

Every path that decides "what scale is this image?" asks :func:`resolve`, so a
tile, a slide and a cohort row agree; every number a user or a file gives is
checked against :data:`MPP_RANGE` where it enters.
"""

from __future__ import annotations

import math

from mastctl.errors import InputError

MPP_RANGE = (0.01, 100.0)
"""Plausible microscope scales: 100x oil (~0.05 um/px) to a slide overview (~50 um/px)."""

ASSUMED_MPP = 0.5
"""What an image of unknown scale is taken to be (20x) when something must be measured in pixels;
areas and densities of such an image stay unknown."""


def unscaled_warning(images) -> str | None:
    """The one warning for a run whose ``images`` (paths) carried no scale and were read at :data:`ASSUMED_MPP`
    (None when there were none): the detectors tell cells apart by their size in micrometres."""
    images = list(images)
    if not images:
        return None
    which = f"{images[0]}" if len(images) == 1 else f"{len(images)} images (first {images[0]})"
    return (f"{which}: no scale in the file, so detected as if {ASSUMED_MPP:g} um/px (20x); at another magnification "
            "cell sizes are misread: pass --mpp (0.25 at 40x) or set detect.mpp")


def working(mpp: float | None) -> float:
    """``mpp``, or :data:`ASSUMED_MPP` when the scale is unknown: the one fallback every detector uses."""
    return float(mpp) if mpp else ASSUMED_MPP


def plausible(mpp: float | None) -> float | None:
    """``mpp`` if it is a finite number in :data:`MPP_RANGE`, else None (a file's 72 dpi, a zero)."""
    try:
        value = float(mpp)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if not math.isfinite(value) or not MPP_RANGE[0] <= value <= MPP_RANGE[1]:
        return None
    return round(value, 6)


def checked(mpp: float | None, where: str) -> float | None:
    """``mpp`` from a file or a table row, refused (InputError) when given but implausible."""
    if mpp is None:
        return None
    value = plausible(mpp)
    if value is None:
        raise InputError(f"{where}: scale {mpp!r} um/px is not a plausible microscope scale "
                         f"({MPP_RANGE[0]:g}-{MPP_RANGE[1]:g})")
    return value


def resolve(given: float | None, from_file: float | None, fallback: float | None) -> tuple[float | None, str | None]:
    """(um/px, where it came from): the user's value, else the file's, else the profile's ``detect.mpp``."""
    if given is not None:
        return float(given), "option"
    if from_file is not None:
        return float(from_file), "file"
    if fallback is not None:
        return float(fallback), "profile"
    return None, None
