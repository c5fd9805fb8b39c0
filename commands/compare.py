"""`mastctl compare`: every backend scored on the same annotated images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mastctl.cli import state
from mastctl.commands import options as O
from mastctl.errors import UsageError

HELP = """Run several backends on the same images and score them against truth.

Predicted and true cells are matched one to one within --radius-um
(Hungarian assignment). Mast cells are scored by default (precision, recall,
F1 with 95% bootstrap intervals over images, explicit/implicit recall, count
error); --all-cells scores every nucleus and reports label confusion.
Unavailable backends are skipped with the reason.

[bold]Examples[/bold]

  mastctl synth val/ --n 20 --seed 11
  mastctl compare val/*_he.png --truth val/ --backends log,morphology --report val.html
  mastctl compare crc/images --truth crc/points.csv --truth-class detection --all-cells --radius-px 6 --mpp 0.55 --backends log
"""


def compare(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Argument(help="Images or folders of images.", show_default=False)],
    truth: Annotated[Path, typer.Option("--truth", "-t", help="Truth: synth JSON, CSV points, QuPath GeoJSON, detections JSON, or a folder of them.", show_default=False)],
    backends: Annotated[list[str] | None, typer.Option("--backend", "--backends", "-b", help="Detector(s) to score: repeat, or comma-separate (default: the profile's detect.backend).", show_default=False)] = None,
    radius_um: Annotated[float, typer.Option("--radius-um", min=0.1, help="Match radius in micrometres.")] = 5.0,
    radius_px: Annotated[float | None, typer.Option("--radius-px", min=0.1, help="Match radius in pixels (overrides --radius-um).", show_default=False)] = None,
    all_cells: Annotated[bool, typer.Option("--all-cells", help="Score every cell (nucleus detection + label confusion), not only mast cells.")] = False,
    truth_class: Annotated[list[str] | None, typer.Option("--truth-class", help="Keep only truth rows of this class (repeatable), e.g. detection.", show_default=False)] = None,
    mpp: Annotated[float | None, O.mpp("Micrometres per pixel for every image (overrides files).")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write an HTML report with charts and overlays.", show_default=False)] = None,
) -> None:
    from mastctl import compare as compare_domain
    from mastctl import truth as truth_domain

    st = state(ctx)
    out = st.out
    profile = st.loaded.profile
    names = compare_domain.parse_backends(",".join(backends) if backends else profile.detect.backend)
    if report is not None and report.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--report writes HTML; name it *.html (got {report})")
    truth_sets = truth_domain.load_truth(truth, classes=truth_class)
    from mastctl.detection import expand_inputs

    n_images = len(expand_inputs(images))
    with out.progress(n_images) as bar:
        task = bar.add_task("compare", total=n_images)
        result = compare_domain.compare(
            images, truth_sets, names, profile, radius_um=radius_um, radius_px=radius_px,
            mode="cells" if all_cells else "mast", mpp=mpp, on_image=lambda p: bar.advance(task),
        )
    for run in result.runs:
        if run.skipped:
            out.warn(f"{run.name} skipped: {run.skipped}")
    if result.without_truth:
        out.warn(f"{len(result.without_truth)} image(s) have no truth and were not scored: {', '.join(result.without_truth[:3])}")
    if report is not None:
        from mastctl.report import write_html

        write_html(result, report)
        out.info(f"report: {report}")
    if out.json_mode:
        out.result(result.to_dict())
    else:
        _print_table(out, result)


HEADINGS = {"precision": "P [95% CI]", "recall": "R [95% CI]", "f1": "F1 [95% CI]", "explicit_recall": "explicit R",
            "implicit_recall": "implicit R", "count_mae": "count MAE", "seconds_per_mp": "s/MP"}


def _print_table(out, result) -> None:
    names = result.metric_names()
    rows = []
    for run, values in result.summary_rows():
        if run.skipped:
            rows.append([run.name, "skipped"] + [""] * (len(names) - 1))
            continue
        row = [run.name]
        for name in names:
            value = values[name]
            text = "–" if value is None else f"{value:.2f}" if name == "count_mae" else f"{value:.3f}"
            ci = run.evaluation.ci.get(name)
            row.append(text if ci is None else f"{text} [{ci[0]:.2f}-{ci[1]:.2f}]")
        rows.append(row)
    radius = f"{result.radius_um} um" if result.radius_um is not None else f"{result.radius_px} px"
    what = "mast cells" if result.mode == "mast" else "every cell"
    out.table(f"{len(result.images)} images, {what}, radius {radius}", ["backend"] + [HEADINGS[n] for n in names], rows)
