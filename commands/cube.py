"""`mastctl cube ...`: the embedding-to-embedding trainer (3D Cubic Core)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mastctl.cli import state
from mastctl.errors import UsageError

app = typer.Typer(help="The embedding-to-embedding trainer (3D Cubic Core): teachers -> reshaper -> cube -> embedding.",
                  no_args_is_help=True)

CACHE = Annotated[Path | None, typer.Option("--cache", help="Embedding cache (SQLite; default ~/.cache/mastctl/embeddings.sqlite; '-' for none).", show_default=False)]


def _cache(path: Path | None) -> Path | None:
    if path is not None and str(path) == "-":
        return None
    return path or Path("~/.cache/mastctl/embeddings.sqlite").expanduser()


def _losses(spec: str | None):
    from mastctl.cube.losses import LossWeights

    weights = LossWeights()
    if not spec:
        return weights
    for item in spec.split(","):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in weights.__dataclass_fields__:
            raise UsageError(f"--loss: unknown term {name!r} (choose from {', '.join(weights.__dataclass_fields__)})")
        try:
            setattr(weights, name, float(value))
        except ValueError:
            raise UsageError(f"--loss: {name} needs a number, got {value!r}") from None
    return weights


@app.command("train")
def train(
    ctx: typer.Context,
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder (model, checkpoint, cube.json).", show_default=False)],
    data: Annotated[str, typer.Option("--data", help="mast-cell-dialogue (built in), a JSONL of {question, answer, quality, difficulty}, "
                                      "texts for --task autoencoder, or an .npz of paired embeddings X, Y.")] = "mast-cell-dialogue",
    task: Annotated[str | None, typer.Option("--task", help="qa | autoencoder | pairs (default: from --data).", show_default=False)] = None,
    teacher: Annotated[list[str] | None, typer.Option("--teacher", help="Teacher of teacher_models (repeatable; first = input space; "
                                                      "default: primary_model).", show_default=False)] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 60,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2)] = 32,
    lr: Annotated[float, typer.Option("--lr", min=0.0)] = 2e-3,
    channels: Annotated[int, typer.Option("--channels", min=1, help="Numbers per lattice cell.")] = 16,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Propagation steps of the local rule.")] = 4,
    shape: Annotated[str | None, typer.Option("--shape", help="Lattice DxHxW (default: from the embedding width, e.g. 6x8x8 for 384).", show_default=False)] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="Loss weights, e.g. cosine=1,infonce=0.2,triplet=0.1,diversity=0.02,temperature=0.07.", show_default=False)] = None,
    quality: Annotated[float, typer.Option("--quality", min=0.0, max=1.0, help="Drop pairs under this quality score.")] = 0.0,
    paraphrases: Annotated[int, typer.Option("--paraphrases", min=0, help="Paraphrased questions added per training pair.")] = 1,
    patience: Annotated[int, typer.Option("--patience", min=1, help="Epochs without validation gain before stopping.")] = 10,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in -o from its last checkpoint.")] = False,
    cache: CACHE = None,
) -> None:
    """Train the cube on a data set; test scores beside the identity and ridge baselines at the end.

    Examples:  mastctl cube train -o runs/qa
               mastctl cube train -o runs/qa --resume --epochs 120
               mastctl cube train --data he_to_ihc.npz -o runs/he2ihc
    """
    from mastctl.cube import run
    from mastctl.cube.train import TrainConfig

    st = state(ctx)
    lattice = None
    if shape:
        try:
            lattice = tuple(int(v) for v in shape.lower().split("x"))
            assert len(lattice) == 3 and min(lattice) > 0
        except (ValueError, AssertionError):
            raise UsageError(f"--shape must look like 6x8x8, got {shape!r}") from None
    spec = run.DataSpec(data, run.task_for(data, task), quality, paraphrases, seed)
    if spec.task not in ("qa", "autoencoder", "pairs"):
        raise UsageError(f"--task must be qa, autoencoder or pairs, got {spec.task!r}")
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, channels=channels, steps=steps, shape=lattice,
                         losses=_losses(loss), patience=patience, seed=seed)
    with st.out.progress(epochs, unit="epochs") as bar:
        task_id = bar.add_task("train", total=epochs)

        def on_epoch(record):
            bar.update(task_id, completed=record["epoch"], description=f"train loss {record['train_loss']:.4f} val {record['val_loss']:.4f}")
            st.out.detail(f"epoch {record['epoch']}: train {record['train_loss']:.4f} val {record['val_loss']:.4f} "
                          f"weights {record['teacher_weights']} ({record['seconds']:.2f} s)")

        meta = run.train(output, spec, config, st.loaded.profile, teacher, resume=resume, cache_path=_cache(cache), on_epoch=on_epoch)
    _print_scores(st, meta["test"], f"{output}: {meta['result']['epochs']} epochs, {meta['parameters']} parameters, lattice "
                  f"{'x'.join(map(str, meta['shape']))}", extra=meta)


def _print_scores(st, test: dict, title: str, extra: dict | None = None) -> None:
    rows = [[name, f"{test[name]['qa_similarity']:.3f}", f"{test[name]['retrieval_at_1']:.3f}", f"{test[name]['retrieval_at_5']:.3f}"]
            for name in ("cube", "identity", "ridge")]
    st.out.result(extra if extra is not None else test,
                  table=(f"{title}\ntest split: {test['test_items']} questions, {test['test_answers']} answers",
                         ["model", "Q->A similarity", "retrieval@1", "retrieval@5"], rows))


@app.command("eval")
def evaluate(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="Run folder of `cube train`.", show_default=False)],
    cache: CACHE = None,
) -> None:
    """Test-split scores of a trained run beside the identity and ridge baselines."""
    from mastctl.cube import run

    st = state(ctx)
    _print_scores(st, run.evaluate(run_dir, st.loaded.profile, _cache(cache)), str(run_dir))


@app.command("predict")
def predict(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="Run folder of `cube train`.", show_default=False)],
    text: Annotated[str, typer.Option("--text", help="A question.", show_default=False)],
    k: Annotated[int, typer.Option("-k", min=1, help="How many answers.")] = 3,
    cache: CACHE = None,
) -> None:
    """The answers of the run's data set nearest to the cube's output for a question.

    Example:  mastctl cube predict runs/qa --text "How do I tell a mast cell from a plasma cell?"
    """
    from mastctl.cube import run

    st = state(ctx)
    hits = run.predict(run_dir, st.loaded.profile, text, k, _cache(cache))
    st.out.result([{"answer": a, "score": round(s, 4)} for a, s in hits],
                  table=(None, ["score", "answer"], [[f"{s:.3f}", a] for a, s in hits]))


@app.command("info")
def info(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="Run folder of `cube train`.", show_default=False)],
) -> None:
    """What a run is: data, teachers, lattice, parameters, epochs, teacher weights, test scores."""
    import json

    from mastctl.cube.train import META
    from mastctl.errors import InputError

    st = state(ctx)
    path = run_dir / META
    if not path.is_file():
        raise InputError(f"{run_dir}: not a cube run folder (no {META})")
    meta = json.loads(path.read_text())
    summary = {k: meta.get(k) for k in ("data", "teachers", "dim", "shape", "parameters", "splits", "result", "teacher_weights", "test")}
    summary["config"] = meta.get("config")
    st.out.data(summary)
