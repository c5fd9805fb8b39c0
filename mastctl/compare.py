"""`compare`: every backend run on the same images and scored against the same truth."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mastctl import detection, metrics, registry
from mastctl.cells import KINDS
from mastctl.errors import BackendError, InputError, MastctlError, UsageError
from mastctl.truth import TruthImage, image_key

if TYPE_CHECKING:
    from mastctl.cells import Detections
    from mastctl.profile import Profile


@dataclass
class BackendRun:
    name: str
    skipped: str | None = None  # why it did not run (unavailable, failed)
    scores: list[metrics.ImageScore] = field(default_factory=list)
    detections: dict[str, Detections] = field(default_factory=dict)
    detect_seconds: float = 0.0
    megapixels: float = 0.0
    evaluation: metrics.Evaluation | None = None

    @property
    def seconds_per_mp(self) -> float | None:
        return self.detect_seconds / self.megapixels if self.megapixels else None

    def to_dict(self) -> dict[str, Any]:
        if self.skipped is not None:
            return {"backend": self.name, "skipped": self.skipped}
        assert self.evaluation is not None
        return {"backend": self.name, "seconds_per_megapixel": _r(self.seconds_per_mp), **self.evaluation.to_dict()}


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


@dataclass
class Comparison:
    runs: list[BackendRun]
    images: list[Path]
    radius_um: float | None
    radius_px: float | None
    mode: str
    without_truth: list[str]

    def metric_names(self) -> list[str]:
        """The columns of the summary: detection scores, per-kind recall (mast mode), count error, speed."""
        kinds = [f"{k}_recall" for k in KINDS] if self.mode == "mast" else []
        return ["precision", "recall", "f1", *kinds, "count_mae", "seconds_per_mp"]

    def summary_rows(self) -> list[tuple[BackendRun, dict[str, float | None]]]:
        """Each backend with its summary numbers (empty for a skipped one), for tables in any format."""
        rows = []
        for run in self.runs:
            values: dict[str, float | None] = {}
            if run.evaluation is not None:
                ev = run.evaluation
                values = {"precision": ev.detection.precision, "recall": ev.detection.recall, "f1": ev.detection.f1,
                          "count_mae": ev.count_mae, "seconds_per_mp": run.seconds_per_mp}
                if self.mode == "mast":
                    values.update({f"{k}_recall": ev.kind(k).recall for k in KINDS})
            rows.append((run, values))
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "radius_um": self.radius_um,
            "radius_px": self.radius_px,
            "images": [str(p) for p in self.images],
            "images_without_truth": self.without_truth,
            "backends": [r.to_dict() for r in self.runs],
        }


def compare(
    images: Sequence[Path],
    truth: dict[str, TruthImage],
    backends: Sequence[str],
    profile: Profile,
    *,
    radius_um: float | None = 5.0,
    radius_px: float | None = None,
    mode: str = "mast",
    mpp: float | None = None,
    n_boot: int = 1000,
    on_image: Callable[[Path], None] | None = None,
) -> Comparison:
    """Run each backend on each image that has truth; score them all the same way."""
    runs, detectors = [], {}
    for name in backends:
        run = BackendRun(name)
        runs.append(run)
        registry.get("detector", name)  # an unknown name is a usage error, not a skip
        try:
            detectors[name] = registry.create("detector", name, profile)
        except BackendError as exc:
            run.skipped = str(exc)
    if not detectors:
        reasons = "; ".join(f"{r.name}: {r.skipped}" for r in runs)
        raise BackendError(f"no backend could run ({reasons})")

    paths = detection.expand_inputs(list(images))
    with_truth = [p for p in paths if image_key(p) in truth]
    without = [str(p) for p in paths if image_key(p) not in truth]
    if not with_truth:
        known = ", ".join(sorted(truth)[:5]) or "none"
        raise InputError(f"no image has truth: image names must match the truth's (truth has {known}...)")
    for path in with_truth:
        t = truth[image_key(path)]
        for run in runs:
            if run.skipped is not None:
                continue
            flow = detection.Settings.from_profile(profile, backend=run.name, mpp=mpp, fallback_mpp=t.mpp, all_cells=True)
            try:
                t0 = time.perf_counter()
                det = detection.detect_image(path, flow, detectors[run.name])
                run.detect_seconds += time.perf_counter() - t0
            except InputError:
                raise
            except MastctlError as exc:
                run.skipped = f"failed on {path}: {exc}"
                continue
            scale = det.image.mpp or t.mpp
            radius = radius_px if radius_px is not None else (radius_um / scale if scale else None)
            if radius is None:
                raise InputError(f"{path}: no scale to turn --radius-um into pixels; pass --mpp or --radius-px")
            run.megapixels += det.image.width * det.image.height / 1e6
            run.detections[str(path)] = det
            run.scores.append(metrics.score_image(str(path), det.cells, t.cells, radius, mode=mode))
        if on_image:
            on_image(path)
    for run in runs:
        if run.skipped is None:
            run.evaluation = metrics.evaluate(run.scores, mode=mode, n_boot=n_boot)
    return Comparison(runs, with_truth, radius_um if radius_px is None else None, radius_px, mode, without)


def parse_backends(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UsageError("--backends needs at least one name (e.g. --backends morphology,gemini)")
    return list(dict.fromkeys(names))
