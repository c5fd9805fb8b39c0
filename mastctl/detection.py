"""The detect flow: inputs -> load -> Detector.detect -> thresholds -> writers.

Everything a user can get wrong about inputs and outputs is checked in
:func:`plan` before a single image is decoded, so a bad command line costs
nothing and never overwrites anything it should not.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mastctl import imaging, writers
from mastctl.cells import Detections
from mastctl.errors import BackendError, InputError, MastctlError, UsageError

if TYPE_CHECKING:
    from mastctl.profile import Thresholds
    from mastctl.protocols import Detector

IMAGE_SUFFIXES = imaging.IMAGE_SUFFIXES


@dataclass(frozen=True)
class Job:
    """One input image and the file its detections go to (None: stdout)."""

    image: Path
    output: Path | None


@dataclass(frozen=True)
class Plan:
    jobs: tuple[Job, ...]
    fmt: str


@dataclass(frozen=True)
class Outcome:
    """What happened to one job: detections and the file written, or an error."""

    job: Job
    detections: Detections | None = None
    error: MastctlError | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": str(self.job.image)}
        if self.error is not None:
            out["error"] = str(self.error)
            out["exit_code"] = self.error.exit_code
            return out
        assert self.detections is not None
        out["output"] = None if self.job.output is None else str(self.job.output)
        out["backend"] = self.detections.backend
        out["mpp"] = self.detections.image.mpp
        out["summary"] = self.detections.summary().to_dict()
        out["timing_s"] = {k: round(v, 4) for k, v in self.detections.timing_s.items()}
        return out


def expand_inputs(paths: Sequence[Path]) -> list[Path]:
    """Files as given; a folder stands for the images directly inside it."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"{p}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            out.extend(found)
        else:
            out.append(p)
    if not out:
        raise UsageError("no input images given")
    return out


def plan(inputs: Sequence[Path], output: Path | str | None, fmt: str | None, default_fmt: str) -> Plan:
    """Decide the format and each image's output file; refuse anything unsafe.

    ``output`` may be given as the raw text the user typed: a trailing slash means a folder
    (pathlib would drop it).
    """
    images = expand_inputs(inputs)
    several = len(images) > 1
    trailing_slash = isinstance(output, str) and output.endswith(("/", "\\"))
    output = Path(output) if output is not None else None
    out_is_dir = output is not None and (several or output.is_dir() or trailing_slash)
    if fmt is None:
        fmt = (writers.format_for(output) if output is not None and not out_is_dir else None) or default_fmt
    if fmt not in writers.FORMATS:
        raise UsageError(f"unknown output format {fmt!r} (choose from {', '.join(writers.FORMATS)})")
    if output is None:
        if fmt == "overlay" or (fmt == "geojson" and several):
            raise UsageError(f"{fmt} output needs -o {'DIR' if several else 'FILE'}")
        return Plan(tuple(Job(img, None) for img in images), fmt)
    if out_is_dir and output.exists() and not output.is_dir():
        raise UsageError(f"-o {output}: with several images -o must be a folder, and this is a file")
    jobs = []
    taken: dict[Path, Path] = {}
    inputs_resolved = {img.resolve() for img in images}
    for img in images:
        target = output / (img.stem + writers.EXTENSIONS[fmt]) if out_is_dir else output
        key = target.resolve()
        if key in taken:
            raise UsageError(f"{taken[key]} and {img} would both be written to {target}; run them separately")
        if key in inputs_resolved:
            raise UsageError(f"refusing to overwrite the input image {img} with {fmt} output; choose another -o")
        taken[key] = img
        jobs.append(Job(img, target))
    return Plan(tuple(jobs), fmt)


def apply_thresholds(det: Detections, thresholds: Thresholds) -> Detections:
    """Drop cells whose confidence is under the threshold of their kind."""

    def threshold(cell) -> float:
        if cell.is_mast_cell:
            if cell.kind == "implicit":
                return thresholds.implicit or 0.0
            if cell.kind == "explicit":
                return thresholds.explicit or 0.0
            return min(thresholds.explicit or 0.0, thresholds.implicit or 0.0)
        return thresholds.other or 0.0

    kept = tuple(c for c in det.cells if c.confidence >= threshold(c))
    return dataclasses.replace(det, cells=kept)


def run(
    detector: Detector,
    job_plan: Plan,
    *,
    mpp: float | None,
    default_mpp: float | None,
    max_pixels: int | None,
    thresholds: Thresholds,
    all_cells: bool,
    write_outputs: bool = True,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> Iterator[Outcome]:
    """Process each job; an input error fails that image only, a backend error stops the run."""
    for job in job_plan.jobs:
        try:
            t0 = time.perf_counter()
            image = imaging.load(job.image, mpp=mpp, max_pixels=max_pixels)
            if image.mpp is None and default_mpp is not None:
                image = dataclasses.replace(image, mpp=default_mpp, mpp_source="profile")
            t1 = time.perf_counter()
            det = detect_one(detector, image)
            t2 = time.perf_counter()
            det = apply_thresholds(det, thresholds)
            timing = {"load": t1 - t0, **dict(det.timing_s), "detect": t2 - t1}
            det = dataclasses.replace(det, timing_s=timing)
            if write_outputs and job.output is not None:
                writers.write(det, job_plan.fmt, job.output, all_cells=all_cells, image=image)
            outcome = Outcome(job, detections=det)
        except InputError as exc:
            outcome = Outcome(job, error=exc)
        if on_outcome:
            on_outcome(outcome)
        yield outcome


def detect_one(detector: Detector, image: imaging.Image) -> Detections:
    """Run one detector on one image; any failure of the backend becomes a BackendError."""
    try:
        det = detector.detect(image)
    except MastctlError:
        raise
    except Exception as exc:
        raise BackendError(f"detector {detector.name!r} failed on {image.path}: {exc}") from exc
    if not isinstance(det, Detections):
        raise BackendError(f"detector {detector.name!r} returned {type(det).__name__}, not Detections")
    return det
