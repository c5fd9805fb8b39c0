"""`mastctl detect IMAGE... [-o OUT]`: find mast cells, write them for pathology tools."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from mastctl.cli import state
from mastctl.commands import options as O
from mastctl.errors import EXIT_INPUT, InputError, UsageError

HELP = """Find mast cells in images and write them as json, csv, geojson or an overlay PNG.

With one image, -o is the output file (its extension picks the format: .json, .csv, .geojson,
.geojson.gz, .png); with several images or a folder, -o is a folder that receives
<image stem>.<ext> per image and a summary.csv (a name ending in .csv, .png... is then an error,
unless it ends in / or is a folder already). Without -o the detections go to stdout.

Every input goes the same way: its tissue is measured, it is cut into tiles when it is larger
than one (whole slides always are), each tile is detected, the profile's thresholds (or
--min-confidence) and --mask apply to every cell, and densities are per mm² of tissue.

[bold]Examples[/bold]

  mastctl detect tile.png                                  [dim]# JSON on stdout[/dim]
  mastctl detect tile.png -o tile.geojson                  [dim]# import into QuPath[/dim]
  mastctl detect tiles/ -o out/ --format overlay           [dim]# marked PNG per image[/dim]
  mastctl detect a.tif b.tif --backend hybrid --format csv > cells.csv
  mastctl detect tile.png --model model.json               [dim]# a classifier from finetune morphology[/dim]
  mastctl detect slide.svs -o slide.geojson --workers 2    [dim]# whole slide: tiles, heat map, hotspot[/dim]
  mastctl detect --manifest cohort.csv -o results/         [dim]# many slides, resumable[/dim]

Whole slides (SVS, NDPI, MRXS, OME-TIFF... or any image with --roi/--mask/--workers) also get
OUT.summary.json (tissue area, mast cells per mm², hotspot of 10 high-power fields) and
OUT.heatmap.png beside OUT.
"""

SLIDES = "Whole slides"


def detect(
    ctx: typer.Context,
    images: Annotated[list[Path] | None, typer.Argument(help="Image files, folders of images, or whole slides.", show_default=False)] = None,
    backend: O.Backend = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help="Output file (one image) or folder (several, or ending in /).", show_default=False)] = None,
    fmt: O.FormatOption = None,
    mpp: Annotated[float | None, O.mpp("Micrometres per pixel; overrides the file's own scale.")] = None,
    all_cells: Annotated[bool | None, typer.Option("--all-cells/--mast-cells", help="List every detected cell, not only mast cells.", show_default=False)] = None,
    min_confidence: Annotated[float | None, typer.Option("--min-confidence", min=0.0, max=1.0, help="One threshold for every kind of cell (default: the profile's detect.thresholds).", show_default=False)] = None,
    max_pixels: Annotated[int | None, typer.Option("--max-pixels", min=0, help="Decompression-bomb limit in pixels for any one decode; 0 = none (default: profile's detect.max_pixels).", show_default=False)] = None,
    model: Annotated[Path | None, typer.Option("--model", help="A trained model for the backend (e.g. from `mastctl finetune morphology`); same as -O model=PATH.", show_default=False)] = None,
    option: O.BackendOptions = None,
    force: Annotated[bool, O.force()] = False,
    workers: Annotated[int | None, O.workers("Tile processes (default: 1; slides: CPU cores).", SLIDES)] = None,
    executor: Annotated[O.Executor, typer.Option("--executor", help="Tiles in a local process pool or on a Dask cluster.", rich_help_panel=SLIDES)] = O.Executor.local,
    scheduler: Annotated[str | None, typer.Option("--scheduler", help="Dask scheduler address (tcp://host:8786).", show_default=False, rich_help_panel=SLIDES)] = None,
    roi: Annotated[str | None, typer.Option("--roi", help="Only x,y,w,h (level-0 pixels).", parser=O.parse_roi, metavar="X,Y,W,H", show_default=False, rich_help_panel=SLIDES)] = None,
    mask: Annotated[Path | None, typer.Option("--mask", help="Only inside these GeoJSON polygons (cells and tissue area).", show_default=False, rich_help_panel=SLIDES)] = None,
    hpf_mm2: Annotated[float, typer.Option("--hpf-mm2", min=0.01, max=10.0, help="Area of one high-power field for the hotspot (10 contiguous fields).", rich_help_panel=SLIDES)] = 0.237,
    keep_blurred: Annotated[bool, typer.Option("--keep-blurred", help="Analyse out-of-focus tiles too (skipped and reported by default).", rich_help_panel=SLIDES)] = False,
    manifest: Annotated[Path | None, typer.Option("--manifest", help="A cohort: CSV with a 'slide' column (and optional 'mpp'); -o is a folder; finished slides are skipped.", show_default=False, rich_help_panel=SLIDES)] = None,
) -> None:
    import os

    from mastctl import detection, registry
    from mastctl.wsi import cohort
    from mastctl.wsi.regions import Polygons

    if not images and manifest is None:
        raise UsageError("give images (or slides), or --manifest slides.csv")
    st = state(ctx)
    out = st.out
    profile = st.loaded.profile
    settings_d = profile.detect
    options = O.backend_options(option)
    if model is not None:
        if not model.is_file():
            raise InputError(f"{model}: no such model file")
        options["model"] = str(model)
    thresholds = settings_d.thresholds
    if min_confidence is not None:
        thresholds = thresholds.model_copy(update={"explicit": min_confidence, "implicit": min_confidence, "other": min_confidence})
    if out.json_mode and output is None and fmt is not None and fmt is not O.Format.json:
        raise UsageError(f"--json prints JSON on stdout, and --format {fmt.value} asks for {fmt.value} there: drop one, "
                         f"or write the {fmt.value} to a file with -o")
    slide_options = any(v is not None for v in (roi, mask, workers, manifest)) or executor is not O.Executor.local
    job_plan = detection.plan(images or [], output, fmt.value if fmt else None, settings_d.format, manifest=manifest,
                              slide_outputs=slide_options, force=force,
                              on_skip=lambda p, why: out.detail(f"{p}: skipped ({why})"))
    n_workers = workers or (max(1, min(os.cpu_count() or 1, 8)) if any(j.side_files for j in job_plan.jobs) else 1)
    settings = detection.Settings.from_profile(
        profile, backend=backend, options=options, mpp=mpp, max_pixels=max_pixels, thresholds=thresholds,
        all_cells=all_cells, roi=roi, mask=Polygons.read(mask) if mask else None, hpf_mm2=hpf_mm2,
        skip_blurred=not keep_blurred, workers=n_workers, executor=executor.value, scheduler=scheduler, force=force)
    detector = registry.create("detector", settings.backend, profile, **settings.options)
    out.detail(f"detector: {settings.backend}; format: {job_plan.fmt}; inputs: {len(job_plan.jobs)}")

    results = []
    with out.progress(len(job_plan.jobs), unit="images") as bar:
        task = bar.add_task("detect", total=len(job_plan.jobs))
        tile_tasks: dict = {}

        def on_tiles(job, done, total):
            if job not in tile_tasks:
                tile_tasks[job] = bar.add_task(job.image.name, total=total)
            bar.update(tile_tasks[job], completed=done, total=total)

        def on_result(result):
            bar.advance(task)
            if result.error is not None:
                out.error(str(result.error) if str(result.job.image) in str(result.error) else f"{result.job.image}: {result.error}")
            elif result.summary and result.summary.get("summary", {}).get("blurred_tiles"):
                s = result.summary["summary"]
                out.warn(f"{result.job.image}: {s['blurred_tiles']} out-of-focus tile(s) ({s['blurred_mm2']:.2f} mm²) skipped; "
                         "--keep-blurred analyses them")
            if result.summary and result.summary.get("backend_info") and not result.resumed:
                out.detail(f"{result.job.image}: {result.summary['backend_info']}")

        for result in detection.run(job_plan, settings, detector=detector, stream=sys.stdout,
                                    resume=manifest is not None, keep_going=manifest is not None,
                                    on_tiles=on_tiles, on_result=on_result):
            results.append(result)
    from mastctl.scale import unscaled_warning

    warning = unscaled_warning(r.job.image for r in results
                               if r.error is None and r.summary and r.summary.get("mpp") is None)
    if warning:
        out.warn(warning)
    already = sum(r.resumed for r in results)
    if already:
        out.info(f"{already} of {len(results)} slides already done; resumed")
    if job_plan.several and not job_plan.to_stdout and output is not None:
        cohort.write_table(Path(output) / "summary.csv", results)
    _report(st, job_plan, results)
    failed = [r for r in results if r.error is not None]
    if failed:
        raise typer.Exit(max(r.error.exit_code for r in failed) or EXIT_INPUT)


def _report(st, job_plan, results) -> None:
    out = st.out
    if job_plan.to_stdout:
        return  # the detections themselves are the result
    rows = []
    for r in results:
        if r.summary is None:
            continue
        s = r.summary["summary"]
        density = "" if s.get("mast_cells_per_mm2") is None else f"{s['mast_cells_per_mm2']:.1f}"
        tissue = "" if s.get("tissue_mm2") is None else f"{s['tissue_mm2']:.3f}"
        hot = (s.get("hotspot") or {}).get("count", "")
        rows.append([str(r.job.image), s["mast_cells"], s["explicit"], s["implicit"], tissue, density, hot, str(r.job.output)])
    if out.json_mode or (rows and not out.quiet):
        out.result([r.to_dict() for r in results],
                   table=(None, ["image", "mast cells", "explicit", "implicit", "tissue mm²", "per mm² tissue", "hotspot (10 HPF)",
                                 "written to"], rows))
