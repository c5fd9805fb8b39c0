"""`mastctl finetune`: learn from annotations — the morphology classifier, and VLM LoRA adapters."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mastctl.cli import state
from mastctl.commands import options as O
from mastctl.errors import UsageError

app = typer.Typer(help="Learn from annotated images: `morphology` fits the default detector's classifier, `nuclei` its nucleus finder; `prepare` and `train` fine-tune a VLM with LoRA.", no_args_is_help=True)


@app.command("morphology")
def morphology(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Option("--images", "-i", help="Annotated images or folders (repeatable).", show_default=False)],
    truth: Annotated[Path, typer.Option("--truth", "-t", help="Truth: synth JSON, CSV points, QuPath GeoJSON, detections JSON, or a folder.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model file to write (JSON).", show_default=False)],
    kind: Annotated[str, typer.Option("--kind", help="gbm (gradient-boosted trees) or logistic.")] = "gbm",
    truth_class: Annotated[list[str] | None, typer.Option("--truth-class", help="Keep only truth rows of this class (repeatable).", show_default=False)] = None,
    mpp: Annotated[float | None, O.mpp("Micrometres per pixel when files carry none.")] = None,
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
    hold = model.info["holdout"]
    counts = ", ".join(f"{k} {v}" for k, v in model.info["per_class"].items())
    out.result({"model": str(output), **model.info}, message=f"wrote {output}: {kind}, {model.info['samples']} nuclei ({counts})\n"
               f"held-out accuracy {hold['accuracy']:.3f}, calibration error {hold['expected_calibration_error']:.3f} "
             f"on {hold['samples']} nuclei; use it with: mastctl detect IMAGE --option model={output}")


@app.command("nuclei")
def nuclei(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Option("--images", "-i", help="Images with every nucleus annotated, or folders (repeatable).", show_default=False)],
    truth: Annotated[Path, typer.Option("--truth", "-t", help="Nucleus centres: CSV points, QuPath GeoJSON, synth JSON, detections JSON, or a folder.", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model file to write (*.safetensors).", show_default=False)],
    steps: Annotated[int, typer.Option("--steps", min=1, help="Training steps (--batch patches of 128 px each); ~4 steps/s on 2 CPU cores at the defaults.")] = 3000,
    width: Annotated[int, typer.Option("--width", min=4, max=64, help="Channels of the net's first level.")] = 16,
    arch: Annotated[str, typer.Option("--arch", help="unet (every level at full scale down to a quarter) or strided (its first convolution at stride 2: every layer at half the scale or less; at width 16 under half the time of a U-Net of width 8; the built-in finder is one).")] = "unet",
    batch: Annotated[int, typer.Option("--batch", min=1, help="Patches per training step.")] = 8,
    folds: Annotated[int, typer.Option("--folds", min=0, help="Choose the peak threshold on K-fold out-of-fold maps of every image (K+1 fits) instead of a held-out fifth; 0: hold out.")] = 0,
    device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps (default: the profile's gpu_settings).", show_default=False)] = None,
    truth_class: Annotated[list[str] | None, typer.Option("--truth-class", help="Keep only truth rows of this class (repeatable).", show_default=False)] = None,
    mpp: Annotated[float | None, O.mpp("Micrometres per pixel when files carry none.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    basis: Annotated[str, typer.Option("--basis", help="What the finder reads: od (the image's absorption per RGB channel, with stain strength and hue varied in training, as the built-in finder), image (stain concentrations through each image's own Macenko estimate: its input jumps where the estimate falls back) or reference (through fixed vectors after the colour cast is taken out).")] = "od",
    force: Annotated[bool, typer.Option("--force", help="Replace an existing model file.")] = False,
) -> None:
    """Fit a small nucleus finder (a U-Net or a strided net, torch, CPU minutes) to point annotations of nuclei.

    For tissue whose nuclei the built-in seeds miss (large, pale, crowded tumour nuclei).
    Saved as safetensors (no pickle); a fifth of the images (from 4 on) is held out to choose
    the peak threshold, or, with --folds K, K fits each map the images they did not see and one
    more fit on all is kept. Use it with: mastctl detect IMG -O nuclei=nuclei.safetensors

    Examples:  mastctl finetune nuclei -i crc/images -t crc/points.csv --truth-class detection --mpp 0.55 -o nuclei.safetensors
    """
    from mastctl.detection import expand_inputs
    from mastctl.morphology import nucleinet
    from mastctl.truth import load_truth

    out = state(ctx).out
    if output.exists() and not force:
        raise UsageError(f"{output} already exists; pass --force to replace it")
    if output.suffix.lower() != ".safetensors":
        raise UsageError(f"the nucleus model is written as safetensors; name it *.safetensors (got {output})")
    if basis not in nucleinet.BASES:
        raise UsageError(f"--basis {basis}: choose from {', '.join(nucleinet.BASES)}")
    if arch not in nucleinet.ARCHS:
        raise UsageError(f"--arch {arch}: choose from {', '.join(nucleinet.ARCHS)}")
    nucleinet._torch()  # fail before reading anything
    paths = expand_inputs(images)
    truth_sets = load_truth(truth, classes=truth_class)
    examples = nucleinet.examples_from_annotations(paths, truth_sets, mpp=mpp)
    if not examples or sum(len(e.points) for e in examples) < 20:
        raise UsageError("too little to learn from: need images whose names match the truth, with at least 20 nuclei in all")
    if folds == 1 or folds > len(examples):
        raise UsageError(f"--folds {folds}: use 0 (hold out a fifth) or 2 to {len(examples)} (the number of images)")
    dev = nucleinet.device_for(device, state(ctx).loaded.profile.gpu_settings)
    total = steps * (folds + 1 if folds else 1)
    with out.progress(total) as bar:
        task = bar.add_task(f"training ({dev})", total=total)
        net = nucleinet.fit(examples, steps=steps, width=width, batch=batch, folds=folds, seed=seed, device=dev,
                            on_step=lambda i, loss: bar.advance(task), basis=basis, arch=arch)
    net.info["trained_on"] = f"{len(examples)} images, truth {truth}"
    net.save(output)
    out.result({"model": str(output), "peak_threshold": net.peak_threshold, **net.info}, message=f"wrote {output}: {len(examples)} images, {sum(len(e.points) for e in examples)} nuclei, {steps} steps; "
             f"peak threshold {net.peak_threshold} (F1 {net.info['val_f1']:.3f} within 3 um on "
             f"{net.info['threshold_chosen_on']}); use it with: mastctl detect IMAGE -O nuclei={output}")


@app.command("prepare")
def prepare(
    ctx: typer.Context,
    images: Annotated[list[Path], typer.Option("--images", "-i", help="Annotated images or folders (repeatable).", show_default=False)],
    truth: Annotated[Path, typer.Option("--truth", "-t", help="Truth: synth JSON, CSV points, QuPath GeoJSON, `ihc transfer` output, kb export, or a folder.", show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", help="qwen2-vl | qwen2.5-vl | llava (sets the coordinate convention).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="New folder for images/, train.jsonl, val.jsonl, meta.json.", show_default=False)],
    tile_um: Annotated[float, typer.Option("--tile-um", min=10.0, help="Tile side in micrometres.")] = 128.0,
    tile_mpp: Annotated[float, typer.Option("--tile-mpp", min=0.05, help="Resolution of the tiles (µm/px).")] = 0.5,
    augment: Annotated[int, typer.Option("--augment", min=0, help="Augmented copies per training tile.")] = 2,
    val_fraction: Annotated[float, typer.Option("--val-fraction", min=0.0, max=0.9, help="Share of source images held out.")] = 0.2,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    mpp: Annotated[float | None, O.mpp("Micrometres per pixel when files carry none.")] = None,
) -> None:
    """Turn annotated images into a VLM data set: tiles + one conversation each, in the model's coordinate convention.

    Examples:  mastctl finetune prepare --images examples --truth examples -m qwen2-vl -o data/
               mastctl finetune prepare -i slides/ -t labels/ -m llava --tile-um 200 --augment 4 -o data-llava/
    """
    from mastctl.vlm.dataset import prepare as run_prepare

    out = state(ctx).out
    meta = run_prepare(images, truth, model, output, tile_um=tile_um, tile_mpp=tile_mpp, augment_copies=augment,
                       val_fraction=val_fraction, seed=seed, mpp=mpp)
    out.result(meta, message=f"wrote {output}: {meta['train']} training and {meta['val']} validation conversations from "
             f"{meta['train_images']} + {meta['val_images']} images ({meta['mast_cell_points']} mast-cell points in the original tiles; edge tiles overlap), {model} convention")


@app.command("train")
def train(
    ctx: typer.Context,
    data: Annotated[Path, typer.Option("--data", "-d", help="Folder from `finetune prepare`.", show_default=False)],
    base: Annotated[Path, typer.Option("--base", help="Local folder of the base model (no downloads).", show_default=False)],
    output: Annotated[Path, typer.Option("--output", "-o", help="Adapter folder to write.", show_default=False)],
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 3,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 2,
    grad_accum: Annotated[int, typer.Option("--grad-accum", min=1, help="Batches per optimizer step.")] = 4,
    lr: Annotated[float, typer.Option("--lr", min=0.0)] = 2e-4,
    rank: Annotated[int, typer.Option("--lora-r", min=1)] = 16,
    alpha: Annotated[int, typer.Option("--lora-alpha", min=1)] = 32,
    dropout: Annotated[float, typer.Option("--lora-dropout", min=0.0, max=0.9)] = 0.05,
    target: Annotated[list[str] | None, typer.Option("--target-module", help="LoRA target module (repeatable; default q/k/v/o_proj).", show_default=False)] = None,
    quantize: Annotated[str | None, typer.Option("--quantize", help="4bit (QLoRA) or 8bit, through bitsandbytes.", show_default=False)] = None,
    dtype: Annotated[str, typer.Option("--dtype", help="float32 | bfloat16 | float16 weights.")] = "float32",
    no_generate: Annotated[bool, typer.Option("--no-eval-generate", help="Skip the validation point-F1 (generation is slow).")] = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in -o from its last checkpoint.")] = False,
    seed: Annotated[int, typer.Option("--seed")] = 0,
) -> None:
    """LoRA / QLoRA fine-tuning of a local Qwen2-VL, Qwen2.5-VL or LLaVA on a prepared data set.

    Examples:  mastctl finetune train -d data/ --base ~/models/Qwen2-VL-2B-Instruct -o adapter/
               mastctl finetune train -d data/ --base ~/models/Qwen2-VL-2B-Instruct -o adapter/ --quantize 4bit
               mastctl finetune train -d data/ --base ~/models/Qwen2-VL-2B-Instruct -o adapter/ --resume --epochs 5
    """
    from mastctl.devices import resolve_device
    from mastctl.vlm.training import LoraSettings, TrainSettings
    from mastctl.vlm.training import train as run_train

    st = state(ctx)
    if dtype not in ("float32", "bfloat16", "float16"):
        raise UsageError(f"--dtype must be float32, bfloat16 or float16, got {dtype!r}")
    lora = LoraSettings(rank, alpha, dropout, list(target) if target else LoraSettings().target_modules)
    settings = TrainSettings(epochs=epochs, batch_size=batch_size, grad_accum=grad_accum, lr=lr, quantize=quantize, dtype=dtype,
                             device=resolve_device(st.loaded.profile.gpu_settings), eval_generate=not no_generate, seed=seed,
                             max_new_tokens=st.loaded.profile.vlm.max_new_tokens)
    with st.out.progress(epochs, unit="epochs") as bar:
        task = bar.add_task("train", total=epochs)

        def on_step(record):
            if record.get("end_of_epoch"):
                bar.update(task, completed=record["epoch"])
                st.out.detail(f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}"
                              + (f", val loss {record['val_loss']:.4f}" if "val_loss" in record else "")
                              + (f", val point-F1 {record['val_point_f1']['f1']:.3f}" if "val_point_f1" in record else ""))
            else:
                bar.update(task, description=f"epoch {record['epoch']} loss {record['loss']:.4f}")

        info = run_train(data, base, output, lora, settings, resume=resume, on_step=on_step)
    last = info["history"][-1]
    st.out.result(info, message=f"wrote adapter {output} ({info['family']}, {len(info['history'])} epochs, last train loss "
                f"{last['train_loss']:.4f}); detect with: mastctl detect IMAGE --backend "
                f"{'llava' if info['family'] == 'llava' else 'qwen'} -O adapter={output}")
