"""`mastctl ihc detect | register | transfer`: IHC as the teacher of the H&E detectors."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from mastctl.cli import state
from mastctl.commands import options as O
from mastctl.errors import UsageError
from mastctl import scale
from mastctl.scale import working

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
    fmt: O.FormatOption = None,
    marker: Annotated[str, typer.Option("--marker", help=MARKER_HELP)] = "tryptase",
    all_cells: Annotated[bool, typer.Option("--all-cells", help="Add the negative cells (needed for a positive %).")] = False,
    dab_threshold: Annotated[float | None, typer.Option("--dab-threshold", min=0.0, help="Fixed mean-DAB OD for positive (default: adaptive).", show_default=False)] = None,
    mpp: Annotated[float | None, O.mpp("Micrometres per pixel (overrides files).")] = None,
) -> None:
    """DAB-positive cells, written like `mastctl detect`; positive % with --all-cells.

    Examples:  mastctl ihc detect tile_ihc.png -o positives.geojson
               mastctl ihc detect ki67/ --marker ki67 --all-cells -o out/ --format csv
    """
    from mastctl import detection
    from mastctl.ihc import DabDetector, positive_summary

    st = state(ctx)
    out = st.out
    profile = st.loaded.profile
    if out.json_mode and output is None and fmt is not None and fmt is not O.Format.json:
        raise UsageError(f"--json prints JSON on stdout, and --format {fmt.value} asks for {fmt.value} there: drop one, "
                         f"or write the {fmt.value} to a file with -o")
    job_plan = detection.plan(images, output, fmt.value if fmt else None, profile.detect.format)
    detector = DabDetector(_marker(marker), dab_threshold, all_cells)
    settings = detection.Settings.from_profile(profile, backend=detector.name, mpp=mpp, all_cells=True)
    settings = dataclasses.replace(settings, thresholds=None)  # every positive the detector reports
    import sys

    results = list(detection.run(job_plan, settings, detector=detector, stream=sys.stdout, collect=True,
                                 on_result=lambda r: r.error is not None and out.error(str(r.error))))
    rows = [{"image": str(r.job.image), "output": str(r.job.output) if r.job.output else None,
             **positive_summary(r.detections)} for r in results if r.detections is not None]
    if not job_plan.to_stdout:  # (to stdout, the detections themselves are the result)
        pct = (lambda r: "" if not all_cells or r["positive_pct"] is None else f"{r['positive_pct']:.1f}")
        out.result(rows, table=(None, ["image", "cells" if all_cells else "positive cells", "positive", "positive %", "written to"],
                                [[r["image"], r["cells"], r["positive"], pct(r), r["output"]] for r in rows]))
    if any(r.error is not None for r in results):
        raise typer.Exit(3)


@app.command("register")
def register(
    ctx: typer.Context,
    he: Annotated[Path, typer.Argument(help="H&E image.", show_default=False)],
    ihc: Annotated[Path, typer.Argument(help="IHC image of the same or the next section.", show_default=False)],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the transform as JSON.", show_default=False)] = None,
    max_rotation: Annotated[float, typer.Option("--max-rotation", min=0.0, max=180.0, help="Largest rotation searched, degrees.")] = 180.0,
    rigid: Annotated[bool, typer.Option("--rigid", help="Rigid only (no affine refinement).")] = False,
    weak: Annotated[bool, typer.Option("--accept-weak", help="Keep a registration that is not clearly better than chance (whole sections at low magnification, where only the outline matches); the correlation and overlap limits still hold.")] = False,
    mpp: Annotated[float | None, O.mpp("Micrometres per pixel of both, when files carry none.")] = None,
) -> None:
    """Register H&E onto IHC: rigid then affine; prints the transform and a quality score.

    Examples:  mastctl ihc register he.png ihc.png   ·   mastctl --json ihc register he.tif ihc.tif -o t.json
    """
    from mastctl import imaging
    from mastctl.registration import register as register_pair

    st = state(ctx)
    out = st.out
    a, b = imaging.load(he, max_pixels=st.loaded.profile.detect.max_pixels), imaging.load(ihc, max_pixels=st.loaded.profile.detect.max_pixels)
    mpp_he = working(scale.resolve(mpp, a.mpp, st.loaded.profile.detect.mpp)[0])
    mpp_ihc = mpp or b.mpp or mpp_he
    reg = register_pair(a.pixels, b.pixels, mpp_he, mpp_ihc, max_rotation_deg=max_rotation, affine=not rigid,
                        significance=not weak)
    doc = {"he": str(he), "ihc": str(ihc), **reg.to_dict()}
    if output is not None:
        import json

        from mastctl.writers import atomic_write

        text = json.dumps(doc, indent=1) + "\n"
        atomic_write(output, lambda fh: fh.write(text.encode()))
    m = reg.matrix
    out.result(doc, text=f"rotation {reg.rotation_deg:.2f} deg, translation ({m[0, 2]:.1f}, {m[1, 2]:.1f}) px\n"
             f"matrix  [[{m[0, 0]:.5f}, {m[0, 1]:.5f}, {m[0, 2]:.2f}], [{m[1, 0]:.5f}, {m[1, 1]:.5f}, {m[1, 2]:.2f}]]  (H&E px -> IHC px)\n"
             f"quality: correlation {reg.ncc_before:.3f} before -> {reg.ncc:.3f} after; overlap {reg.overlap:.0%}"
             + ("" if reg.ncc_null is None else f"; chance (the IHC rearranged) reaches {reg.ncc_null:.3f}"))


@app.command("transfer")
def transfer(
    ctx: typer.Context,
    he: Annotated[Path | None, typer.Argument(help="H&E image.", show_default=False)] = None,
    ihc: Annotated[Path | None, typer.Argument(help="IHC image of the same or the next section.", show_default=False)] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Labels JSON (one pair) or folder (--pairs).", show_default=False)] = None,
    pairs: Annotated[Path | None, typer.Option("--pairs", help="CSV with columns he, ihc: a batch, resumable.", show_default=False)] = None,
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="H&E detector (default: the profile's).", show_default=False)] = None,
    marker: Annotated[str, typer.Option("--marker", help=MARKER_HELP)] = "tryptase",
    mpp: Annotated[float | None, O.mpp("Micrometres per pixel when files carry none.")] = None,
) -> None:
    """IHC-positive cells onto H&E coordinates: labels for compare and finetune, no clicking.

    Each positive cell becomes a mast cell on the H&E image: explicit where the H&E detector
    sees a mast cell there, implicit where only IHC shows it. H&E "mast cells" without IHC
    support are listed under likely_false_positives. The file is a detections document, so
    `compare --truth` and `finetune morphology --truth` read it as it is.

    Examples:  mastctl ihc transfer he.png ihc.png -o labels.json
               mastctl ihc transfer --pairs pairs.csv -o labels/      (skips pairs already done)
    """
    from mastctl import detection, registry
    from mastctl.ihc import PairJob, pair_jobs, run_pairs

    st = state(ctx)
    out = st.out
    profile = st.loaded.profile
    if output is None:
        raise UsageError("transfer needs -o: a labels file (one pair) or a folder (--pairs)")
    if pairs is not None and (he or ihc):
        raise UsageError("give either HE IHC or --pairs, not both")
    if pairs is None and not (he and ihc):
        raise UsageError("give an H&E and an IHC image, or --pairs pairs.csv")
    jobs = pair_jobs(pairs, output) if pairs is not None else [PairJob(he, ihc, output)]
    settings = detection.Settings.from_profile(profile, backend=backend, mpp=mpp, all_cells=True)
    detector = registry.create("detector", settings.backend, profile)
    todo = [j for j in jobs if pairs is None or not j.output.exists()]
    if pairs is not None and len(todo) < len(jobs):
        out.info(f"{len(jobs) - len(todo)} of {len(jobs)} pairs already done; resuming")
    failed = []
    with out.progress(len(todo)) as bar:
        task = bar.add_task("transfer", total=len(todo))

        def on_error(job, exc):
            failed.append(job)
            out.error(f"{job.he} + {job.ihc}: {exc}")

        rows = run_pairs(todo, settings, detector, marker=_marker(marker), keep_going=pairs is not None,
                         on_error=on_error, on_done=lambda job: bar.advance(task))
    out.result(rows, table=(None, ["H&E", "mast cells", "explicit", "implicit", "IHC+", "H&E-only", "quality", "written to"],
                            [[r["he"], r["mast_cells"], r["explicit"], r["implicit"], r["ihc_positive"], r["likely_false_positives"],
                              r["registration_quality"], r["output"]] for r in rows]))
    from mastctl.scale import unscaled_warning

    warning = unscaled_warning(r["he"] for r in rows if r["he_mpp"] is None)
    if warning:
        out.warn(warning)
    if failed:
        raise typer.Exit(3)
