"""`mastctl detect IMAGE... [-o OUT]`: find mast cells, write them for pathology tools."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from mastctl.cli import state
from mastctl.errors import EXIT_INPUT, UsageError

HELP = """Find mast cells in images and write them as json, csv, geojson or an overlay PNG.

With one image, -o is the output file (its extension picks the format); with
several images or a folder, -o is a folder that receives <image stem>.<ext>
per image. Without -o the detections go to stdout.

[bold]Examples[/bold]

  mastctl detect tile.png                                  [dim]# JSON on stdout[/dim]
  mastctl detect tile.png -o tile.geojson                  [dim]# import into QuPath[/dim]
  mastctl detect tiles/ -o out/ --format overlay           [dim]# marked PNG per image[/dim]
  mastctl detect a.tif b.tif --backend hybrid --format csv > cells.csv
  mastctl detect tile.png --model model.json               [dim]# a classifier from finetune morphology[/dim]
  mastctl detect slide.svs -o slide.geojson --workers 2    [dim]# whole slide: tiles, heat map, hotspot[/dim]
  mastctl detect --manifest cohort.csv -o results/         [dim]# many slides, resumable[/dim]

Whole slides (SVS, NDPI, MRXS, OME-TIFF... or any image with --roi/--mask/--workers)
are tiled over the tissue; OUT (geojson or csv) is streamed, and OUT.summary.json
(tissue area, mast cells per mm², hotspot of 10 high-power fields) and
OUT.heatmap.png are written beside it.
"""

FORMAT_HELP = "json | csv | geojson | overlay (default: from -o's extension, else the profile's detect.format)."


def _is_slide(path: Path) -> bool:
    from mastctl import slides

    return path.is_file() and slides.is_slide(path)


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    import yaml

    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            options[key.strip()] = value
    return options


def detect(
    ctx: typer.Context,
    images: Annotated[list[Path] | None, typer.Argument(help="Image files, folders of images, or whole slides.", show_default=False)] = None,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="Detector (default: the profile's detect.backend).", show_default=False)] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Output file (one image) or folder (several, or ending in /).", show_default=False)] = None,
    fmt: Annotated[str | None, typer.Option("--format", "-f", help=FORMAT_HELP, show_default=False)] = None,
    mpp: Annotated[float | None, typer.Option("--mpp", help="Micrometres per pixel; overrides the file's own scale.", show_default=False)] = None,
    all_cells: Annotated[bool | None, typer.Option("--all-cells/--mast-cells", help="List every detected cell, not only mast cells.", show_default=False)] = None,
    min_confidence: Annotated[float | None, typer.Option("--min-confidence", min=0.0, max=1.0, help="One threshold for every kind of cell (default: the profile's detect.thresholds).", show_default=False)] = None,
    max_pixels: Annotated[int | None, typer.Option("--max-pixels", min=0, help="Decompression-bomb limit in pixels; 0 = none (default: profile's detect.max_pixels).", show_default=False)] = None,
    model: Annotated[Path | None, typer.Option("--model", help="A trained model for the backend (e.g. from `mastctl finetune morphology`); same as -O model=PATH.", show_default=False)] = None,
    option: Annotated[list[str] | None, typer.Option("--option", "-O", help="Backend option KEY=VALUE (repeatable); overrides the profile's backend_options.", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Whole slides: tile processes (default: CPU cores).", show_default=False, rich_help_panel="Whole slides")] = None,
    executor: Annotated[str, typer.Option("--executor", help="Whole slides: local (process pool) or dask.", rich_help_panel="Whole slides")] = "local",
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="Dask scheduler address (tcp://host:8786).", show_default=False, rich_help_panel="Whole slides")] = None,
    roi: Annotated[str | None, typer.Option("--roi", help="Whole slides: only x,y,w,h (level-0 pixels).", show_default=False, rich_help_panel="Whole slides")] = None,
    mask: Annotated[Path | None, typer.Option("--mask", help="Whole slides: only inside these GeoJSON polygons.", show_default=False, rich_help_panel="Whole slides")] = None,
    hpf_mm2: Annotated[float, typer.Option("--hpf-mm2", min=0.01, help="Area of one high-power field for the hotspot (10 contiguous fields).", rich_help_panel="Whole slides")] = 0.237,
    keep_blurred: Annotated[bool, typer.Option("--keep-blurred", help="Whole slides: analyse out-of-focus tiles too (skipped and reported by default).", rich_help_panel="Whole slides")] = False,
    manifest: Annotated[Path | None, typer.Option("--manifest", help="A cohort: CSV with a 'slide' column (and optional 'mpp'); -o is a folder; finished slides are skipped.", show_default=False, rich_help_panel="Whole slides")] = None,
) -> None:
    from mastctl import detection, registry

    images = images or []
    if not images and manifest is None:
        raise UsageError("give images (or slides), or --manifest slides.csv")
    st = state(ctx)
    out = st.out
    settings = st.loaded.profile.detect
    name = backend or settings.backend
    slide_mode = manifest is not None or roi is not None or mask is not None or workers is not None or executor != "local" \
        or any(_is_slide(p) for p in images)
    if slide_mode:
        options = _parse_options(option or [])
        if model is not None:
            options["model"] = str(model)
        return _slides(st, images, manifest=manifest, output=Path(output) if output else None, fmt=fmt, backend=name, options=options, mpp=mpp,
                       all_cells=settings.all_cells if all_cells is None else all_cells, workers=workers, executor=executor,
                       scheduler=scheduler, roi=roi, mask=mask, hpf_mm2=hpf_mm2, skip_blurred=not keep_blurred)
    job_plan = detection.plan(images, output, fmt, settings.format)
    thresholds = settings.thresholds
    if min_confidence is not None:
        thresholds = thresholds.model_copy(update={"explicit": min_confidence, "implicit": min_confidence, "other": min_confidence})
    keep_all = settings.all_cells if all_cells is None else all_cells
    options = _parse_options(option or [])
    if model is not None:
        if not model.is_file():
            from mastctl.errors import InputError

            raise InputError(f"{model}: no such model file")
        options["model"] = str(model)
    detector = registry.create("detector", name, st.loaded.profile, **options)
    out.detail(f"detector: {name}; format: {job_plan.fmt}; images: {len(job_plan.jobs)}")

    outcomes = []
    with out.progress(len(job_plan.jobs)) as bar:
        task = bar.add_task("detect", total=len(job_plan.jobs))
        for outcome in detection.run(
            detector,
            job_plan,
            mpp=mpp,
            default_mpp=settings.mpp,
            max_pixels=settings.max_pixels if max_pixels is None else max_pixels,
            thresholds=thresholds,
            all_cells=keep_all,
        ):
            outcomes.append(outcome)
            bar.advance(task)
            if outcome.error is not None:
                typer.echo(f"mastctl: error: {outcome.error}", err=True)
            elif outcome.detections.info:  # usage, cost, opinions: what the backend says of its run
                import json

                out.detail(f"{outcome.job.image}: {json.dumps(outcome.detections.info, default=str)}")

    _report(st, job_plan, outcomes, keep_all)
    if any(o.error is not None for o in outcomes):
        raise typer.Exit(max(o.error.exit_code for o in outcomes if o.error is not None) or EXIT_INPUT)


def _report(st, job_plan, outcomes, keep_all: bool) -> None:
    from mastctl import writers

    out = st.out
    done = [o for o in outcomes if o.detections is not None]
    to_stdout = job_plan.jobs and job_plan.jobs[0].output is None
    if to_stdout:
        # The detections themselves are the result; --json keeps them JSON.
        fmt = "json" if out.json_mode else job_plan.fmt
        if done:
            writers.dump([o.detections for o in done], fmt, sys.stdout, all_cells=keep_all)
        return
    if out.json_mode:
        out.data([o.to_dict() for o in outcomes])
        return
    rows = []
    for o in done:
        s = o.detections.summary()
        density = "" if s.mast_cells_per_mm2 is None else f"{s.mast_cells_per_mm2:.1f}"
        rows.append([o.job.image, s.mast_cells, s.explicit, s.implicit, density, o.job.output])
    if rows and not out.quiet:
        out.table(None, ["image", "mast cells", "explicit", "implicit", "per mm²", "written to"], rows)


def _slides(st, images, *, manifest, output, fmt, backend, options, mpp, all_cells, workers, executor, scheduler, roi, mask, hpf_mm2,
            skip_blurred):
    """Whole slides (one, several, or a manifest): tiles, streamed outputs, one summary table."""
    import os

    from mastctl import wsi

    out = st.out
    if executor not in ("local", "dask"):
        raise UsageError(f"--executor must be local or dask, got {executor!r}")
    region = wsi.parse_roi(roi) if roi else None
    jobs = wsi.slide_jobs(images, manifest, output, fmt or "geojson")
    polygons = wsi.read_mask(mask) if mask else None
    n_workers = workers or max(1, min(os.cpu_count() or 1, 8))
    with out.progress(2, unit="tiles") as bar:
        tasks: dict = {}

        def progress(job, done, total):
            if job not in tasks:
                tasks[job] = bar.add_task(job.slide.name, total=total)
            bar.update(tasks[job], completed=done, total=total)

        def error(job, exc):
            typer.echo(f"mastctl: error: {job.slide}: {exc}", err=True)

        rows, failed, already = wsi.run_jobs(
            jobs, resume=manifest is not None, keep_going=manifest is not None, on_progress=progress, on_error=error,
            detector=backend, options=options, profile=st.loaded.profile.model_dump(mode="json"), mpp=mpp, roi=region,
            mask_geojson=polygons, workers=n_workers, executor=executor, scheduler=scheduler, all_cells=all_cells,
            hpf_mm2=hpf_mm2, skip_blurred=skip_blurred)
    if already:
        out.info(f"{already} of {len(jobs)} slides already done; resumed")
    for r in rows:
        if r.get("blurred_tiles"):
            out.warn(f"{r['slide']}: {r['blurred_tiles']} out-of-focus tile(s) ({r['blurred_mm2']:.2f} mm²) skipped; "
                     "--keep-blurred analyses them")
    if manifest is not None and rows:
        wsi.write_cohort_table(output / "summary.csv", rows)
    if out.json_mode:
        out.data(rows)
    else:
        out.table(None, ["slide", "tissue mm²", "mast cells", "explicit", "implicit", "per mm²", "hotspot (10 HPF)", "tiles", "s", "written to"],
                  [[r["slide"], f"{r['tissue_mm2']:.2f}", r["mast_cells"], r["explicit"], r["implicit"],
                    "" if r["mast_cells_per_mm2"] is None else f"{r['mast_cells_per_mm2']:.1f}", r["hotspot"].get("count", 0),
                    r["tiles"], f"{r['seconds']:.1f}", r["outputs"]["cells"]] for r in rows])
    if failed:
        raise typer.Exit(3)
