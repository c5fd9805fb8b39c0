"""The one detection flow, for a tile, a folder, a slide and a cohort alike:

    plan -> read (region by region) -> detect -> thresholds -> mask -> write

:func:`plan` decides every input's output file and format and refuses
anything unsafe before a single image is decoded. :func:`run` then opens each
input as a reader (a plain image is a one-level slide held in memory), measures
its tissue, cuts it into tiles (one tile when it fits), detects tile by tile in
this process or in workers, applies the profile's thresholds and the ``--mask``
polygons to every cell, and streams the cells into the output. Densities are
always per mm² of tissue, and the summary says how much tissue that was.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mastctl import imaging, slides, writers
from mastctl.cells import Cell, Detections, ImageInfo
from mastctl.errors import BackendError, InputError, MastctlError, UsageError
from mastctl.protocols import Identified

if TYPE_CHECKING:
    from mastctl.profile import Profile, Thresholds
    from mastctl.protocols import Detector
    from mastctl.wsi.regions import Polygons

IMAGE_SUFFIXES = imaging.IMAGE_SUFFIXES


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Everything a run needs besides its inputs and outputs: one object, from the profile and the flags."""

    backend: str
    profile: Profile
    options: dict[str, Any] = field(default_factory=dict)
    mpp: float | None = None  # --mpp: overrides every file
    max_pixels: int | None = imaging.DEFAULT_MAX_PIXELS
    thresholds: Thresholds | None = None
    all_cells: bool = False
    roi: tuple[int, int, int, int] | None = None
    mask: Polygons | None = None
    hpf_mm2: float = 0.237
    skip_blurred: bool = True
    workers: int = 1
    executor: str = "local"
    scheduler: str | None = None
    tile_px: int = 1024
    force: bool = False
    fallback_mpp: float | None = None  # for images without a scale, before the profile's detect.mpp (e.g. the truth's)

    @classmethod
    def from_profile(cls, profile: Profile, **overrides: Any) -> Settings:
        d = profile.detect
        base = {"backend": d.backend, "profile": profile, "max_pixels": d.max_pixels, "thresholds": d.thresholds,
                "all_cells": d.all_cells}
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**base)

    @property
    def default_mpp(self) -> float | None:
        return self.fallback_mpp if self.fallback_mpp is not None else self.profile.detect.mpp

    def spec(self, extra: dict[str, Any] | None = None):
        from mastctl.wsi.tiles import DetectorSpec

        return DetectorSpec(self.backend, {**self.options, **(extra or {})}, self.profile.model_dump(mode="json"))


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Job:
    """One input and where its cells go (``output`` None: stdout)."""

    image: Path
    output: Path | None
    fmt: str
    gz: bool = False
    mpp: float | None = None  # a manifest row's scale
    side_files: bool = False  # slides: OUT.summary.json and OUT.heatmap.png beside OUT

    @property
    def summary_path(self) -> Path | None:
        return None if self.output is None else self.output.with_name(self.output.name + ".summary.json")

    @property
    def heatmap_path(self) -> Path | None:
        return None if self.output is None else self.output.with_name(self.output.name + ".heatmap.png")

    @property
    def done(self) -> bool:
        return bool(self.output and self.output.is_file() and self.summary_path and self.summary_path.is_file())


@dataclass(frozen=True)
class Plan:
    jobs: tuple[Job, ...]
    fmt: str
    several: bool = False  # -o is a folder (several inputs, a folder input, a manifest)

    @property
    def to_stdout(self) -> bool:
        return bool(self.jobs) and self.jobs[0].output is None


def is_slide(path: Path) -> bool:
    return path.is_file() and slides.is_slide(path)


# A run whose images hold at most this many pixels in all runs the morphology detector's nets on numpy unless torch is
# loaded already (``threads.numpy_unless_torch_is_loaded``). Measured on 2 cores (2026-12-06): torch's import takes
# about 0.7 s and the numpy nets about 0.8 s a megapixel more than torch's at 0.5 um/px (a 500 x 500 CRC tile: 276 ms
# against 63), so a megapixel is about where loading torch starts to pay; `mastctl detect` of one 384 x 384 tile takes
# 0.68 s on numpy against 1.69 s with torch loaded for it (the same cells), a fifth of the memory.
SMALL_RUN_PIXELS = 1_000_000


def small_run(jobs: Sequence[Job]) -> bool:
    """Whether the jobs' images hold at most SMALL_RUN_PIXELS in all, read from their headers (a slide, or a file
    Pillow cannot size without decoding it, is never small)."""
    from PIL import Image as PILImage

    total = 0
    for job in jobs:
        if slides.is_slide(job.image):
            return False
        try:
            with PILImage.open(job.image) as im:
                width, height = im.size
        except Exception:  # unreadable here: the job itself will say why
            return False
        total += width * height
        if total > SMALL_RUN_PIXELS:
            return False
    return True


def expand_inputs(paths: Sequence[Path], on_skip: Callable[[Path, str], None] | None = None) -> list[Path]:
    """Files as given; a folder stands for the images directly inside it.

    In a folder, ``X_ihc.*`` beside ``X_he.*`` is the IHC partner of an H&E tile (``mastctl synth``,
    paired sections): not an H&E image to find mast cells in, so it is skipped.
    """
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise InputError(f"{p}: folder holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            stems = {q.stem for q in found}
            for q in found:
                if q.stem.endswith("_ihc") and q.stem[: -len("_ihc")] + "_he" in stems:
                    if on_skip:
                        on_skip(q, "the IHC partner of an H&E tile")
                    continue
                out.append(q)
        else:
            out.append(p)
    if not out:
        raise UsageError("no input images given")
    return out


def manifest_entries(manifest: Path) -> list[tuple[Path, float | None]]:
    """(slide, mpp) per row of a cohort manifest: a 'slide' column (paths relative to the manifest), maybe 'mpp'."""
    from mastctl.scale import checked
    from mastctl.tables import read_table

    rows = read_table(manifest, ("slide",), ("mpp",))
    return [(manifest.parent / r.get("slide"), checked(r.get("mpp"), f"{manifest}:{r.line}") if r.get("mpp") else None)
            for r in rows]


def output_stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def plan(inputs: Sequence[Path], output: Path | str | None, fmt: str | None, default_fmt: str = "json", *,
         manifest: Path | None = None, slide_outputs: bool = False, force: bool = False,
         on_skip: Callable[[Path, str], None] | None = None) -> Plan:
    """Decide each input's output file and the format; refuse anything unsafe, before any work.

    ``output`` may be the raw text the user typed: a trailing slash means a folder. The format comes
    from ``fmt``, else the output file's extension (an unknown one is an error), else ``default_fmt``.
    ``slide_outputs``: every input gets OUT.summary.json and OUT.heatmap.png (whole slides, --roi, ...).
    """
    entries: list[tuple[Path, float | None]] = [(p, None) for p in expand_inputs(inputs, on_skip)] if inputs else []
    if manifest is not None:
        entries += manifest_entries(manifest)
    if not entries:
        raise UsageError("give images (or slides), or --manifest slides.csv")
    folder_input = any(Path(p).is_dir() for p in inputs)
    several = len(entries) > 1 or manifest is not None or folder_input
    trailing_slash = isinstance(output, str) and output.endswith(("/", "\\"))
    out = Path(output) if output is not None else None
    out_is_dir = out is not None and (several or out.is_dir() or trailing_slash)
    gz = False
    if fmt is not None:
        writers.check_format(fmt)
    if out is not None and not out_is_dir:
        found = writers.format_for(out)
        if found is None and fmt is None:
            raise UsageError(f"-o {out}: the extension names no output format; end it in .json, .csv, .geojson "
                             "(.geojson.gz, .csv.gz, .json.gz) or .png (an overlay), or pass --format")
        if found is not None:
            if fmt is not None and found[0] != fmt:
                raise UsageError(f"-o {out} asks for {found[0]} by its extension but --format says {fmt}")
            fmt, gz = found
    slide_inputs = [p for p, _ in entries if is_slide(p)]
    side = slide_outputs or bool(slide_inputs) or manifest is not None
    fmt = fmt or ("geojson" if side else default_fmt)  # slides: QuPath's format, streamed
    if side and fmt not in writers.STREAM_FORMATS:
        raise UsageError(f"whole slides are written as geojson, csv or json, not {fmt} (a slide gets a heat map "
                         "beside its output)")
    if out is None:
        if side:
            raise UsageError("whole slides need -o: a file for one slide, a folder for several")
        if fmt == "overlay" or (fmt == "geojson" and several):
            raise UsageError(f"{fmt} output needs -o {'DIR' if several else 'FILE'}")
        return Plan(tuple(Job(p, None, fmt, mpp=m) for p, m in entries), fmt, several)
    if out_is_dir and out.exists() and not out.is_dir():
        raise UsageError(f"-o {out}: with several inputs -o must be a folder, and this is a file")
    named = writers.format_for(out) if out_is_dir and not out.is_dir() and not trailing_slash else None
    if named is not None:  # `detect *.png -o cells.csv` would make a folder named cells.csv: surely not what was meant
        folder = out.parent / (out.name.split(".")[0] or "out")
        raise UsageError(f"-o {out} names one {named[0]} file, but there are {len(entries)} inputs: give a folder "
                         f"(-o {folder}/ --format {named[0]}), or end -o in / to use this name as a folder")
    jobs: list[Job] = []
    taken: dict[Path, Path] = {}
    inputs_resolved = {Path(p).resolve() for p, _ in entries}
    for img, slide_mpp in entries:
        target = out / (output_stem(img) + writers.extension(fmt, gz)) if out_is_dir else out
        key = target.resolve()
        if key in taken:
            raise UsageError(f"{taken[key]} and {img} would both be written to {target}; run them separately")
        if key in inputs_resolved:
            raise UsageError(f"refusing to overwrite the input image {target} with {fmt} output; choose another -o")
        taken[key] = img
        jobs.append(Job(img, target, fmt, gz, slide_mpp, side))
    for job in jobs:
        assert job.output is not None
        writers.check_target(job.output, fmt, force)
        if job.side_files:
            for extra, extra_fmt in ((job.summary_path, "json-summary"), (job.heatmap_path, "heatmap")):
                assert extra is not None
                if extra.resolve() in inputs_resolved:
                    raise UsageError(f"refusing to overwrite the input image {extra} with the slide's {extra_fmt}")
    return Plan(tuple(jobs), fmt, several or out_is_dir)


# --------------------------------------------------------------------------- thresholds


def apply_thresholds(cells: Sequence[Cell], thresholds: Thresholds | None) -> list[Cell]:
    """Drop cells whose confidence is under the threshold of their kind."""
    if thresholds is None:
        return list(cells)

    def threshold(cell: Cell) -> float:
        if cell.is_mast_cell:
            if cell.kind == "implicit":
                return thresholds.implicit or 0.0
            if cell.kind == "explicit":
                return thresholds.explicit or 0.0
            return min(thresholds.explicit or 0.0, thresholds.implicit or 0.0)
        return thresholds.other or 0.0

    return [c for c in cells if c.confidence >= threshold(c)]


def detect_one(detector: Detector, image: imaging.Image) -> Detections:
    """Run one detector on one image; any failure of the backend becomes a BackendError."""
    try:
        det = detector.detect(image)
    except MastctlError:
        raise
    except MemoryError:
        raise InputError(f"{image.path}: not enough memory to analyse this image; lower --max-pixels or tile it "
                         "(--workers N)") from None
    except Exception as exc:
        raise BackendError(f"detector {detector.name!r} failed on {image.path}: {exc}") from exc
    if not isinstance(det, Detections):
        raise BackendError(f"detector {detector.name!r} returned {type(det).__name__}, not Detections")
    return det


# --------------------------------------------------------------------------- running


@dataclass
class Result:
    """What happened to one job: its summary (and the cells, when collected), or an error."""

    job: Job
    summary: dict[str, Any] | None = None
    detections: Detections | None = None
    error: MastctlError | None = None
    resumed: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"image": str(self.job.image)}
        if self.error is not None:
            out.update(error=str(self.error), exit_code=self.error.exit_code)
            return out
        assert self.summary is not None
        out["output"] = None if self.job.output is None else str(self.job.output)
        out.update({k: self.summary[k] for k in ("backend", "mpp", "summary", "timing_s") if k in self.summary})
        if self.job.side_files:
            out["slide"] = self.summary.get("slide")
        return out


def run(job_plan: Plan, settings: Settings, *, detector: Detector | None = None, stream=None, collect: bool = False,
        resume: bool = False, keep_going: bool = False,
        on_tiles: Callable[[Job, int, int], None] | None = None,
        on_result: Callable[[Result], None] | None = None) -> Iterator[Result]:
    """Process each job in order.

    An input error fails that job only. A backend error stops the run, unless ``keep_going`` (a
    cohort), where every failure — of any kind — is reported for its slide and the others still run.
    ``resume`` takes finished jobs' summaries from disk. ``collect`` keeps each image's cells.
    """
    from mastctl import registry
    from mastctl.threads import numpy_unless_torch_is_loaded

    if detector is None:
        detector = registry.create("detector", settings.backend, settings.profile, **settings.options)
    with numpy_unless_torch_is_loaded(small_run(job_plan.jobs)):
        for n, job in enumerate(job_plan.jobs):
            if resume and job.done:
                previous = _previous_summary(job)
                if previous is not None:
                    result = Result(job, summary=previous, resumed=True)
                    if on_result:
                        on_result(result)
                    yield result
                    continue
            try:
                result = process(job, settings, detector, stream=stream, first=n == 0, several=len(job_plan.jobs) > 1,
                                 collect=collect, on_tiles=on_tiles)
            except InputError as exc:
                result = Result(job, error=exc)
            except MastctlError as exc:
                if not keep_going:
                    raise
                result = Result(job, error=exc)
            except Exception as exc:
                if not keep_going:
                    raise
                result = Result(job, error=MastctlError(f"unexpected error: {type(exc).__name__}: {exc}"))
            if on_result:
                on_result(result)
            yield result


def _previous_summary(job: Job) -> dict[str, Any] | None:
    """A finished slide's summary, or None when it is damaged (the slide is then done again)."""
    try:
        data = json.loads(job.summary_path.read_text(encoding="utf-8"))  # type: ignore[union-attr]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(data, dict) or data.get("schema") != SLIDE_SCHEMA or not isinstance(data.get("summary"), dict):
        return None
    return data


SLIDE_SCHEMA = "mastctl/slide-summary@2"


def process(job: Job, settings: Settings, detector: Detector, *, stream=None, first: bool = True, several: bool = False,
            collect: bool = False, on_tiles: Callable[[Job, int, int], None] | None = None) -> Result:
    """One input, region by region, into its output."""
    from mastctl import __version__, registry
    from mastctl.scale import resolve
    from mastctl.wsi import density, tiles, tissue

    t0 = time.perf_counter()
    given_mpp = job.mpp if job.mpp is not None else settings.mpp
    reader = slides.open_slide(job.image, mpp=given_mpp, max_pixels=settings.max_pixels)
    try:
        mpp, mpp_source = resolve(given_mpp, reader.mpp, settings.default_mpp)
        if given_mpp is None and reader.mpp is not None:
            mpp_source = getattr(reader, "mpp_source", None) or "file"
        reader.mpp = mpp
        W, H = reader.levels[0].width, reader.levels[0].height
        if min(W, H) < imaging.MIN_SIDE_PX:
            raise InputError(f"{job.image}: {W}x{H} pixels is too small to hold a cell "
                             f"(at least {imaging.MIN_SIDE_PX} pixels a side)")
        roi = _clip_roi(settings.roi, W, H, job.image)
        if mpp is None and (job.side_files or settings.mask is not None):
            raise InputError(f"{job.image}: the image carries no scale; pass --mpp (or set detect.mpp)")
        if mpp is not None:
            mask, scale = tissue.tissue_mask(reader, roi)
            if settings.mask is not None:
                mask &= settings.mask.rasterise(mask.shape, scale)
        else:  # no scale: one region, no areas
            import numpy as np

            mask, scale = np.ones((1, 1), bool), float(max(W, H))
        task_list = tiles.plan_tiles(reader, mask, scale, roi=roi, tile_px=settings.tile_px, max_pixels=settings.max_pixels,
                                     skip_blurred=settings.skip_blurred, mpp=mpp)
        calibration = tiles.calibrate(reader, detector, task_list) if len(task_list) > 1 else {}
        here = registry.create("detector", settings.backend, settings.profile, **{**settings.options, **calibration}) \
            if calibration else detector
        spec = settings.spec(calibration)
        image_mm2 = None if mpp is None else ((roi[2] if roi else W) * (roi[3] if roi else H)) * (mpp / 1000.0) ** 2
        header = {"image": {"path": str(job.image), "width": W, "height": H, "mpp": mpp},
                  "backend": getattr(detector, "name", settings.backend), "version": __version__, "mpp_source": mpp_source,
                  "model": detector.model_id if isinstance(detector, Identified) else None,
                  "options": _public_options(settings.options) or None, "roi": list(roi) if roi else None}
        pixels = getattr(reader, "pixels", None) if job.fmt == "overlay" else None
        if job.fmt == "overlay" and pixels is None:
            raise UsageError(f"{job.image}: overlay output draws on the image itself and needs a plain image, not a slide")
        out = writers.open_output(job.fmt, header, path=job.output, gz=job.gz, stream=None if job.output else stream,
                                  all_cells=settings.all_cells, pixels=pixels, indent=not several or job.output is not None,
                                  csv_header=first or job.output is not None)
        try:
            t1 = time.perf_counter()
            grid = density.DensityGrid(W, H, mpp) if mpp else None
            found: list[Cell] = []  # kept only when collecting
            blurred, blurred_mm2, tissue_mm2, info = 0, 0.0, 0.0, {}
            backend_timing: dict[str, float] = {}
            for done, res in enumerate(tiles.execute(task_list, spec, detector=here, reader=reader, workers=settings.workers,
                                                     executor=settings.executor, scheduler=settings.scheduler), start=1):
                task = task_list[res.index]
                if res.blurred:  # out of focus: not analysed, and not counted as tissue
                    blurred += 1
                    blurred_mm2 += task.tissue_mm2
                else:
                    tissue_mm2 += task.tissue_mm2
                cells = apply_thresholds(res.cells, settings.thresholds)
                if settings.mask is not None and cells:
                    inside = settings.mask.contains([(c.x, c.y) for c in cells])
                    cells = [c for c, keep in zip(cells, inside) if keep]
                out.write(cells)
                if grid is not None:
                    grid.add(cells)
                if collect:
                    found.extend(cells)
                _count(info, res, cells)
                for k, v in res.timing_s.items():
                    backend_timing[k] = backend_timing.get(k, 0.0) + v
                if on_tiles and len(task_list) > 1:
                    on_tiles(job, done, len(task_list))
            t2 = time.perf_counter()
            summary = _summary_dict(info, mpp and tissue_mm2, image_mm2)
            hot = grid.hotspot(settings.hpf_mm2, tissue_mm2=summary["tissue_mm2"]) if grid is not None else None
            summary["hotspot"] = hot
            if blurred:
                summary.update(blurred_tiles=blurred, blurred_mm2=round(blurred_mm2, 6))
            timing = {"load": t1 - t0, **backend_timing, "detect": t2 - t1}
            backend_info = info.get("backend_info") or {}
            out.finish({"summary": summary, "timing_s": {k: round(v, 4) for k, v in timing.items()},
                        "backend_info": backend_info,
                        "annotations": _annotations(mask, scale, hot, job.image) if job.fmt == "geojson" and mpp else []})
        except BaseException:
            out.abort()
            raise
    finally:
        reader.close()
    record: dict[str, Any] = {"schema": SLIDE_SCHEMA, "image": str(job.image), "width": W, "height": H, "mpp": mpp,
                              "mpp_source": mpp_source, "backend": header["backend"], "tiles": len(task_list),
                              "summary": summary, "timing_s": {k: round(v, 4) for k, v in timing.items()},
                              "outputs": {"cells": None if job.output is None else str(job.output)}}
    if job.side_files and job.output is not None:
        from mastctl.writers import atomic_write

        assert grid is not None and job.heatmap_path is not None and job.summary_path is not None
        heat = grid.heatmap_png(job.heatmap_path, mask=mask, mask_scale=scale, hotspot=hot,
                                title=f"{job.image.name}: {summary['mast_cells']} mast cells, "
                                      f"{summary['mast_cells_per_mm2'] or 0:.1f} per mm2 of tissue")
        record["outputs"].update(heatmap=str(heat), summary=str(job.summary_path))
        text = json.dumps(record, indent=1) + "\n"
        atomic_write(job.summary_path, lambda fh: fh.write(text.encode()))
    record["slide"] = {k: record[k] for k in ("tiles", "outputs")}
    detections = None
    if collect:
        detections = Detections(ImageInfo(str(job.image), W, H, mpp), header["backend"], tuple(found),
                                timing_s=timing, tissue_mm2=summary["tissue_mm2"], info=backend_info)
    return Result(job, summary=record, detections=detections)


def _annotations(mask, scale: float, hotspot: dict[str, Any] | None, image: Path) -> list[dict[str, Any]]:
    """The tissue outline and the hotspot as QuPath annotations (polygons in level-0 pixels)."""
    from mastctl.wsi.tissue import outline
    from mastctl.writers import annotation_feature, feature_id

    out = []
    rings = outline(mask, scale)
    if rings:
        out.append(annotation_feature(feature_id(image, "tissue"), "Tissue", (0, 140, 0),
                                      {"type": "MultiPolygon", "coordinates": [[r] for r in rings]}))
    if hotspot:
        x, y, w, h = hotspot["x"], hotspot["y"], hotspot["width"], hotspot["height"]
        ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
        out.append(annotation_feature(feature_id(image, "hotspot"), "Hotspot (10 HPF)", (200, 0, 0),
                                      {"type": "Polygon", "coordinates": [ring]},
                                      {"Mast cells": hotspot["count"], "Fields": hotspot["fields"]}))
    return out


def _count(info: dict[str, Any], res, cells: list[Cell]) -> None:
    info["cells"] = info.get("cells", 0) + len(cells)
    mast = [c for c in cells if c.is_mast_cell]
    info["mast_cells"] = info.get("mast_cells", 0) + len(mast)
    info["explicit"] = info.get("explicit", 0) + sum(c.kind == "explicit" for c in mast)
    info["implicit"] = info.get("implicit", 0) + sum(c.kind == "implicit" for c in mast)
    if res.info:
        info.setdefault("backend_info", {}).update(res.info)


def _summary_dict(info: dict[str, Any], tissue_mm2: float | None, image_mm2: float | None) -> dict[str, Any]:
    from mastctl.cells import Summary

    s = Summary(info.get("mast_cells", 0), info.get("explicit", 0), info.get("implicit", 0), info.get("cells", 0),
                tissue_mm2 if tissue_mm2 is not None else None, image_mm2)
    return s.to_dict()


def _clip_roi(roi, W: int, H: int, path: Path):
    if roi is None:
        return None
    x, y, w, h = roi
    if x >= W or y >= H:
        raise UsageError(f"--roi {x},{y},{w},{h} lies outside {path} ({W} x {H} pixels)")
    return x, y, min(w, W - x), min(h, H - y)


def _public_options(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if not any(s in k.lower() for s in ("key", "token", "secret", "password"))}


def detect_image(path: Path, settings: Settings, detector: Detector | None = None) -> Detections:
    """Every cell the flow finds in one image, in memory (for compare, ihc transfer, ...)."""
    job = Job(Path(path), None, "json")
    import io

    result = next(run(Plan((job,), "json"), settings, detector=detector, stream=io.StringIO(), collect=True))
    if result.error is not None:
        raise result.error
    assert result.detections is not None
    return dataclasses.replace(result.detections)
