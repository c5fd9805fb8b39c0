"""Many images at once: the one-row-per-image table (``summary.csv``) of a folder or a cohort run."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mastctl.writers import atomic_write

COLUMNS = ("image", "mast_cells", "explicit", "implicit", "cells", "tissue_mm2", "mast_cells_per_mm2", "hotspot_count",
           "mpp", "backend", "tiles", "seconds", "output", "error")


def row(result) -> dict[str, Any]:
    """One table row from a :class:`mastctl.detection.Result`."""
    out: dict[str, Any] = {"image": str(result.job.image), "output": "" if result.job.output is None else str(result.job.output)}
    if result.error is not None:
        out["error"] = str(result.error)
        return out
    s = result.summary or {}
    counts = s.get("summary", {})
    hot = counts.get("hotspot") or {}
    out.update({k: counts.get(k) for k in ("mast_cells", "explicit", "implicit", "cells", "tissue_mm2", "mast_cells_per_mm2")})
    out.update(hotspot_count=hot.get("count", ""), mpp=s.get("mpp"), backend=s.get("backend"), tiles=s.get("tiles"),
               seconds=round(sum((s.get("timing_s") or {}).values()), 3))
    return out


def write_table(path: Path, results: Sequence[Any]) -> Path:
    """``summary.csv``: one line per image of the run (failed ones with their error), written atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for r in results:
        writer.writerow({k: ("" if v is None else v) for k, v in row(r).items()})
    atomic_write(path, lambda fh: fh.write(buf.getvalue().encode()))
    return path
