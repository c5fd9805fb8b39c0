"""`mastctl ihc detect | register | transfer`: IHC as the teacher of the H&E detectors."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Annotated

import typer

from mastctl.cli import state
from mastctl.errors import InputError, MastctlError, UsageError

app = typer.Typer(help="IHC (tryptase, CD117, Ki67...): DAB-positive cells, H&E<->IHC registration, label transfer.",
                  no_args_is_help=True)

MARKER_HELP = "tryptase or cd117 (positives are mast cells), ki67 or other."


def _marker(marker: str) -> str:
    from mastctl.ihc import MARKERS

    if marker not in MARKERS:
        raise UsageError(f"--marker must be one of {', '.join(MARKERS)}, got {marker!r}")
    return marker


@app.command("detect")
def detect(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="IHC images or folders.", show_default=False)],
    output: Annotated[str | None, typer.Option("--output", "-o", help="Output file (one image) or folder (several, or ending in /).", show_default=False)] = None,
    fmt: Annotated[str | None, typer.Option("--format", "-f", help="json | csv | geojson | overlay.", show_default=False)] = None,
    marker: Annotated[str, typer.Option("--marker", help=MARKER_HELP)] = "tryptase",
    all_cells: Annotated[bool, typer.Option("--all-cells", help="Add the negative cells (needed for a positive %).")] = False,
    dab_threshold: Annotated[float | None, typer.Option("--dab-threshold", min=0.0, help="Fixed mean-DAB OD for positive (default: adaptive).", show_default=False)] = None,
    mpp: Annotated[float | None, typer.Option("--mpp", help="Micrometres per pixel (overrides files).", show_default=False)] = None,
) -> None:
    """DAB-positive cells, written like `mastctl detect`; positive % with --all-cells.

    Examples:  mastctl ihc detect tile_ihc.png -o positives.geojson
               mastctl ihc detect ki67/ --marker ki67 --all-cells -o out/ --format csv
    """
    from mastctl import detection
    from mastctl.ihc import DabDetector, positive_summary

    st = state(ctx)
    out = st.out
    settings = st.loaded.profile.detect
    job_plan = detection.plan(images, output, fmt, settings.format)
    detector = DabDetector(_marker(marker), dab_threshold, all_cells)
    no_filter = settings.thresholds.model_copy(update={"explicit": 0.0, "implicit": 0.0, "other": 0.0})
    outcomes = list(detection.run(detector, job_plan, mpp=mpp, default_mpp=settings.mpp, max_pixels=settings.max_pixels,
                                  thresholds=no_filter, all_cells=True))
    for o in outcomes:
        if o.error is not None:
            typer.echo(f"mastctl: error: {o.error}", err=True)
    rows = [{"image": str(o.job.image), "output": str(o.job.output) if o.job.output else None,
             **positive_summary(o.detections)} for o in outcomes if o.detections is not None]
    if job_plan.jobs[0].output is None:
        from mastctl import writers
        import sys

        done = [o.detections for o in outcomes if o.detections is not None]
        if done:
            writers.dump(done, "json" if out.json_mode else job_plan.fmt, sys.stdout, all_cells=True)
    elif out.json_mode:
        out.data(rows)
    else:
        pct = (lambda r: "" if not all_cells or r["positive_pct"] is None else f"{r['positive_pct']:.1f}")
        out.table(None, ["image", "cells" if all_cells else "positive cells", "positive", "positive %", "written to"],
                  [[r["image"], r["cells"], r["positive"], pct(r), r["output"]] for r in rows])
    if any(o.error is not None for o in outcomes):
        raise typer.Exit(3)


@app.command("register")
def register(
    ctx: typer.Context,
    he: Annotated[Path, typer.Argument(help="H&E image.", show_default=False)],
    ihc: Annotated[Path, typer.Argument(help="IHC image of the same or the next section.", show_default=False)],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the transform as JSON.", show_default=False)] = None,
    max_rotation: Annotated[float, typer.Option("--max-rotation", min=0.0, max=180.0, help="Largest rotation searched, degrees.")] = 180.0,
    rigid: Annotated[bool, typer.Option("--rigid", help="Rigid only (no affine refinement).")] = False,
    mpp: Annotated[float | None, typer.Option("--mpp", help="Micrometres per pixel of both, when files carry none.", show_default=False)] = None,
) -> None:
    """Register H&E onto IHC: rigid then affine; prints the transform and a quality score.

    Examples:  mastctl ihc register he.png ihc.png   ·   mastctl --json ihc register he.tif ihc.tif -o t.json
    """
    from mastctl import imaging
    from mastctl.registration import register as register_pair

    st = state(ctx)
    out = st.out
    a, b = imaging.load(he, max_pixels=st.loaded.profile.detect.max_pixels), imaging.load(ihc, max_pixels=st.loaded.profile.detect.max_pixels)
    mpp_he = mpp or a.mpp or st.loaded.profile.detect.mpp or 0.5
    mpp_ihc = mpp or b.mpp or mpp_he
    reg = register_pair(a.pixels, b.pixels, mpp_he, mpp_ihc, max_rotation_deg=max_rotation, affine=not rigid)
    doc = {"he": str(he), "ihc": str(ihc), **reg.to_dict()}
    if output is not None:
        import json

        from mastctl.writers import atomic_write

        text = json.dumps(doc, indent=1) + "\n"
        atomic_write(output, lambda fh: fh.write(text.encode()))
    if out.json_mode:
        out.data(doc)
        return
    m = reg.matrix
    out.text(f"rotation {reg.rotation_deg:.2f} deg, translation ({m[0, 2]:.1f}, {m[1, 2]:.1f}) px\n"
             f"matrix  [[{m[0, 0]:.5f}, {m[0, 1]:.5f}, {m[0, 2]:.2f}], [{m[1, 0]:.5f}, {m[1, 1]:.5f}, {m[1, 2]:.2f}]]  (H&E px -> IHC px)\n"
             f"quality: correlation {reg.ncc_before:.3f} before -> {reg.ncc:.3f} after; overlap {reg.overlap:.0%}")


@app.command("transfer")
def transfer(
    ctx: typer.Context,
    he: Annotated[Path | None, typer.Argument(help="H&E image.", show_default=False)] = None,
    ihc: Annotated[Path | None, typer.Argument(help="IHC image of the same or the next section.", show_default=False)] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Labels JSON (one pair) or folder (--pairs).", show_default=False)] = None,
    pairs: Annotated[Path | None, typer.Option("--pairs", help="CSV with columns he, ihc: a batch, resumable.", show_default=False)] = None,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="H&E detector (default: the profile's).", show_default=False)] = None,
    marker: Annotated[str, typer.Option("--marker", help=MARKER_HELP)] = "tryptase",
    mpp: Annotated[float | None, typer.Option("--mpp", help="Micrometres per pixel when files carry none.", show_default=False)] = None,
) -> None:
    """IHC-positive cells onto H&E coordinates: labels for compare and finetune, no clicking.

    Each positive cell becomes a mast cell on the H&E image: explicit where the H&E detector
    sees a mast cell there, implicit where only IHC shows it. H&E "mast cells" without IHC
    support are listed under likely_false_positives. The file is a detections document, so
    `compare --truth` and `finetune morphology --truth` read it as it is.

    Examples:  mastctl ihc transfer he.png ihc.png -o labels.json
               mastctl ihc transfer --pairs pairs.csv -o labels/      (skips pairs already done)
    """
    from mastctl import imaging, registry
    from mastctl.ihc import transfer as transfer_pair

    st = state(ctx)
    out = st.out
    profile = st.loaded.profile
    if output is None:
        raise UsageError("transfer needs -o: a labels file (one pair) or a folder (--pairs)")
    if pairs is not None and (he or ihc):
        raise UsageError("give either HE IHC or --pairs, not both")
    if pairs is None and not (he and ihc):
        raise UsageError("give an H&E and an IHC image, or --pairs pairs.csv")
    jobs = _read_pairs(pairs, output) if pairs is not None else [(he, ihc, output)]
    detector = registry.create("detector", backend or profile.detect.backend, profile)
    max_pixels = profile.detect.max_pixels
    rows, failed = [], 0
    todo = [j for j in jobs if pairs is None or not j[2].exists()]
    if pairs is not None and len(todo) < len(jobs):
        out.info(f"{len(jobs) - len(todo)} of {len(jobs)} pairs already done; resuming")
    with out.progress(len(todo)) as bar:
        task = bar.add_task("transfer", total=len(todo))
        for he_path, ihc_path, target in todo:
            try:
                a = imaging.load(he_path, mpp=mpp, max_pixels=max_pixels)
                b = imaging.load(ihc_path, mpp=mpp, max_pixels=max_pixels)
                result = transfer_pair(a, b, detector, marker=_marker(marker))
                _write_json(target, result.to_dict())
                s = result.detections.summary()
                rows.append({"he": str(he_path), "ihc": str(ihc_path), "output": str(target), "mast_cells": s.mast_cells,
                             "explicit": s.explicit, "implicit": s.implicit, "ihc_positive": result.ihc_positive,
                             "likely_false_positives": len(result.likely_false_positives),
                             "registration_quality": round(result.registration.ncc, 3)})
            except MastctlError as exc:
                if pairs is None:
                    raise
                failed += 1
                typer.echo(f"mastctl: error: {he_path} + {ihc_path}: {exc}", err=True)
            bar.advance(task)
    if out.json_mode:
        out.data(rows)
    elif rows:
        out.table(None, ["H&E", "mast cells", "explicit", "implicit", "IHC+", "H&E-only", "quality", "written to"],
                  [[r["he"], r["mast_cells"], r["explicit"], r["implicit"], r["ihc_positive"], r["likely_false_positives"],
                    r["registration_quality"], r["output"]] for r in rows])
    if failed:
        raise typer.Exit(3)


def _read_pairs(pairs: Path, folder: Path) -> list[tuple[Path, Path, Path]]:
    if not pairs.is_file():
        raise InputError(f"{pairs}: no such pairs file")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"-o {folder}: with --pairs, -o is a folder")
    with open(pairs, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or not {"he", "ihc"} <= {k.strip().lower() for k in rows[0]}:
        raise InputError(f"{pairs}: needs columns he, ihc")
    base = pairs.parent
    jobs, seen = [], set()
    for row in rows:
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items()}
        he, ihc = (base / row["he"]), (base / row["ihc"])
        target = folder / f"{he.stem}.json"
        if target in seen:
            raise UsageError(f"two pairs would write {target}: H&E images need distinct names")
        seen.add(target)
        jobs.append((he, ihc, target))
    return jobs


def _write_json(path: Path, doc: dict) -> None:
    import json

    from mastctl.writers import atomic_write

    text = json.dumps(doc, indent=1) + "\n"
    atomic_write(path, lambda fh: fh.write(text.encode()))
