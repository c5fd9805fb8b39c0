"""`mastctl finetune`: learn from annotations (the morphology classifier now; VLM LoRA later)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mastctl.cli import state
from mastctl.errors import UsageError

app = typer.Typer(help="Learn from annotated images: `morphology` fits the default detector's classifier.", no_args_is_help=True)


@app.command("morphology")
def morphology(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Option("--images", "-i", help="Annotated images or folders (repeatable).", show_default=False)],
    truth: Annotated[Path, typer.Option("--truth", "-t", help="Truth: synth JSON, CSV points, QuPath GeoJSON, detections JSON, or a folder.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model file to write (JSON).", show_default=False)],
    kind: Annotated[str, typer.Option("--kind", help="gbm (gradient-boosted trees) or logistic.")] = "gbm",
    truth_class: Annotated[list[str] | None, typer.Option("--truth-class", help="Keep only truth rows of this class (repeatable).", show_default=False)] = None,
    mpp: Annotated[float | None, typer.Option("--mpp", help="Micrometres per pixel when files carry none.", show_default=False)] = None,
    normalize: Annotated[bool, typer.Option("--normalize", help="Re-stain images to the reference H&E before learning (and when detecting with this model).")] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model file.")] = False,
) -> None:
    """Fit the morphology detector's per-nucleus classifier to your annotations (saved as JSON, no pickle).

    Every nucleus the detector finds takes the class of an annotated cell within 3.5 um
    (explicit / implicit mast cell, lymphocyte, plasma cell, fibroblast, eosinophil,
    other), or 'spurious' when no annotated cell is there (so annotate every cell). Use the model with: mastctl detect IMG --option model=model.json

    Examples:  mastctl synth train/ --n 40 --seed 5
               mastctl finetune morphology --images train/ --truth train/ -o model.json
    """
    from mastctl import morphology
    from mastctl.detection import expand_inputs
    from mastctl.truth import load_truth

    out = state(ctx).out
    if kind not in ("gbm", "logistic"):
        raise UsageError(f"--kind must be gbm or logistic, got {kind!r}")
    if output.exists() and not force:
        raise UsageError(f"{output} already exists; pass --force to replace it")
    if output.suffix.lower() != ".json":
        raise UsageError(f"the model is written as JSON; name it *.json (got {output})")
    paths = expand_inputs(images)
    truth_sets = load_truth(truth, classes=truth_class)
    with out.progress(len(paths)) as bar:
        task = bar.add_task("features", total=len(paths))
        model = morphology.fit_from_annotations(paths, truth_sets, mpp=mpp, kind=kind, normalize=normalize,
                                               on_image=lambda p: bar.advance(task))
    model.info["trained_on"] = f"{len(paths)} images, truth {truth}"
    model.save(output)
    if out.json_mode:
        out.data({"model": str(output), **model.info})
        return
    hold = model.info["holdout"]
    counts = ", ".join(f"{k} {v}" for k, v in model.info["per_class"].items())
    out.info(f"wrote {output}: {kind}, {model.info['samples']} nuclei ({counts})")
    out.info(f"held-out accuracy {hold['accuracy']:.3f}, calibration error {hold['expected_calibration_error']:.3f} "
             f"on {hold['samples']} nuclei; use it with: mastctl detect IMAGE --option model={output}")


def _not_yet(what: str):
    def command(ctx: typer.Context) -> None:
        raise UsageError(f"{what} is not part of this version of mastctl yet")

    return command


for _name, _what in (("prepare", "VLM dataset preparation (finetune prepare)"), ("train", "VLM LoRA training (finetune train)")):
    app.command(_name, help=f"{_what} [dim](not in this version yet)[/dim]",
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(_not_yet(_what))
