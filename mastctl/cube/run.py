"""What the `mastctl cube` commands do: prepare data, train a run folder, evaluate it, predict with it.

A run folder holds ``cube.json`` (config, teachers, dims, data source and
split, history, test scores), ``cube.safetensors`` (the best model) and
``checkpoint.safetensors`` (the last epoch, with optimizer and RNG state, for
``--resume``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mastctl.cube import data as D
from mastctl.cube.train import (
    BEST,
    CHECKPOINT,
    META,
    Encoded,
    TrainConfig,
    Trainer,
    ridge_baseline,
    ridge_fit,
    ridge_predict,
    scores,
    unit,
)
from mastctl.errors import InputError, UsageError


@dataclass
class DataSpec:
    source: str = D.BUILTIN  # built-in dialogue set, a JSONL of pairs or texts, or an .npz of paired embeddings
    task: str = "qa"  # qa | autoencoder | pairs
    quality: float = 0.0
    paraphrases: int = 1
    seed: int = 0


def task_for(source: str, task: str | None) -> str:
    if task:
        return task
    return "pairs" if str(source).endswith(".npz") else "qa"


def encode_splits(spec: DataSpec, teachers: list[Any], cache: Any) -> tuple[Encoded, Encoded, Encoded, dict[str, Any]]:
    """Train/val/test arrays; targets of extra teachers are projected (ridge on train answers) into the primary's space."""
    if spec.task == "pairs":
        X, Y = D.load_embedding_pairs(spec.source)
        rng = np.random.default_rng(spec.seed)
        order = rng.permutation(len(X))
        n_test, n_val = int(round(0.2 * len(X))), int(round(0.15 * len(X)))
        parts = (order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test])
        made = [Encoded(X[i], {"file": Y[i]}, np.zeros(len(i), np.int64), np.arange(len(i))) for i in parts]
        return (*made, {"rows": len(X), "train": len(parts[0]), "val": len(parts[1]), "test": len(parts[2])})
    pairs = D.load_pairs(spec.source) if spec.task == "qa" else _texts_as_pairs(spec.source)
    kept = D.filter_quality(pairs, spec.quality)
    if len({p.id for p in kept}) < 10:
        raise InputError(f"{spec.source}: only {len(kept)} pairs reach quality {spec.quality:g}; need at least 10")
    train, val, test = D.split(kept, seed=spec.seed)
    train = D.augment(train, spec.paraphrases, spec.seed) if spec.task == "qa" else train
    primary = teachers[0]
    out = []
    for part in (train, val, test):
        answers = sorted({p.answer for p in part})
        index = {a: i for i, a in enumerate(answers)}
        X = cache.encode(primary, [p.question for p in part])
        targets = {}
        for t in teachers:
            targets[t.name] = cache.encode(t, [p.answer for p in part])
        out.append(Encoded(X, targets, np.array([D.DIFFICULTY[p.difficulty] for p in part]),
                           np.array([index[p.answer] for p in part]), answers))
    for t in teachers[1:]:  # project every other teacher into the primary's space
        W = ridge_fit(out[0].targets[t.name], out[0].targets[primary.name], 1.0)
        for enc in out:
            enc.targets[t.name] = unit(ridge_predict(W, enc.targets[t.name])).astype(np.float32)
    info = {"pairs": len(pairs), "kept": len(kept), "train": len(train), "val": len(val), "test": len(test),
            "paraphrases": sum(p.paraphrase for p in train)}
    return (*out, info)


def _texts_as_pairs(source: str) -> list[D.Pair]:
    """Autoencoder: each text is its own target (JSONL with 'text', or plain lines)."""
    try:
        lines = [line.strip() for line in Path(source).read_text(encoding="utf-8").splitlines() if line.strip()]
    except OSError as exc:
        raise InputError(f"{source}: cannot read: {exc.strerror or exc}") from None
    texts = []
    for line in lines:
        if line.startswith("{"):
            row = json.loads(line)
            texts.append(str(row.get("text") or row.get("question") or ""))
        else:
            texts.append(line)
    return [D.Pair(f"t{i}", t, t) for i, t in enumerate(texts) if t]


def teachers_for(names: list[str] | None, profile: Any) -> list[Any]:
    from mastctl.cube.teachers import load_teacher

    names = names or [profile.teacher_models.primary_model]
    return [load_teacher(n, profile) for n in names]


def train(out: Path, spec: DataSpec, config: TrainConfig, profile: Any, teacher_names: list[str] | None, *,
          resume: bool = False, cache_path: Path | None = None, on_epoch=None) -> dict[str, Any]:
    from mastctl.cube.teachers import EmbeddingCache
    from mastctl.devices import resolve_device

    meta_path = out / META
    if resume:
        if not meta_path.is_file():
            raise InputError(f"{out}: nothing to resume (no {META})")
        saved = json.loads(meta_path.read_text())
        spec, teacher_names = DataSpec(**saved["data"]), saved["teachers"]
        config = _config_from(saved["config"], epochs=config.epochs)
    elif (out / CHECKPOINT).exists():
        raise UsageError(f"{out} already holds a run: use --resume to continue it, or another -o")
    teachers = [] if spec.task == "pairs" else teachers_for(teacher_names, profile)
    train_set, val_set, test_set, info = encode_splits(spec, teachers, EmbeddingCache(cache_path))
    names = list(train_set.targets)
    device = resolve_device(profile.gpu_settings)
    trainer = Trainer(config, train_set.X.shape[1], names, device, profile.gpu_settings.mixed_precision)
    if resume:
        trainer.load_checkpoint(out / CHECKPOINT)
    out.mkdir(parents=True, exist_ok=True)
    meta = {"schema": "mastctl/cube-run@1", "data": asdict(spec), "teachers": names, "config": asdict(config),
            "dim": int(train_set.X.shape[1]), "shape": list(trainer.model.reshaper.shape),
            "parameters": trainer.model.parameter_count(), "splits": info}
    _write_json(meta_path, meta)
    result = trainer.fit(train_set, val_set, on_epoch=on_epoch, checkpoint_dir=out)
    meta.update({"result": result, "history": trainer.history, "teacher_weights": trainer.teacher_weights()})
    meta["test"] = evaluate_arrays(out, trainer, train_set, val_set, test_set, names[0])
    _write_json(meta_path, meta)
    return meta


def evaluate_arrays(out: Path, trainer: Trainer, train_set: Encoded, val_set: Encoded, test_set: Encoded, primary: str) -> dict[str, Any]:
    """The best model, identity and ridge on the test split, side by side."""
    from safetensors.torch import load_file

    if (out / BEST).is_file():
        trainer.model.load_state_dict(load_file(str(out / BEST)))
    bank = np.zeros((int(test_set.answer_index.max()) + 1, test_set.X.shape[1]), np.float32)
    bank[test_set.answer_index] = test_set.targets[primary]
    W, alpha = ridge_baseline(train_set, val_set, primary)
    truth = test_set.targets[primary]
    result = {
        "cube": scores(trainer.predict(test_set.X), truth, test_set.answer_index, bank),
        "identity": scores(test_set.X, truth, test_set.answer_index, bank),
        "ridge": scores(ridge_predict(W, test_set.X), truth, test_set.answer_index, bank),
    }
    result["ridge"]["alpha"] = alpha
    result["test_items"] = len(test_set.X)
    result["test_answers"] = len(bank)
    return result


def load_run(run: Path, profile: Any) -> tuple[dict[str, Any], Trainer]:
    from safetensors.torch import load_file

    meta_path = run / META
    if not meta_path.is_file():
        raise InputError(f"{run}: not a cube run folder (no {META})")
    meta = json.loads(meta_path.read_text())
    if not (run / BEST).is_file():
        raise InputError(f"{run}: the run has no trained model yet ({BEST})")
    trainer = Trainer(_config_from(meta["config"]), meta["dim"], meta["teachers"], "cpu")
    trainer.model.load_state_dict(load_file(str(run / BEST)))
    return meta, trainer


def evaluate(run: Path, profile: Any, cache_path: Path | None = None) -> dict[str, Any]:
    from mastctl.cube.teachers import EmbeddingCache

    meta, trainer = load_run(run, profile)
    spec = DataSpec(**meta["data"])
    teachers = [] if spec.task == "pairs" else teachers_for(meta["teachers"], profile)
    train_set, val_set, test_set, _ = encode_splits(spec, teachers, EmbeddingCache(cache_path))
    return evaluate_arrays(run, trainer, train_set, val_set, test_set, meta["teachers"][0])


def predict(run: Path, profile: Any, text: str, k: int = 5, cache_path: Path | None = None) -> list[tuple[str, float]]:
    """The k answers of the run's data set nearest to the cube's output for ``text``."""
    from mastctl.cube.teachers import EmbeddingCache

    meta, trainer = load_run(run, profile)
    spec = DataSpec(**meta["data"])
    if spec.task == "pairs":
        raise UsageError("this run maps embedding files; predict takes text runs only")
    teachers = teachers_for(meta["teachers"][:1], profile)
    cache = EmbeddingCache(cache_path)
    pairs = D.load_pairs(spec.source) if spec.task == "qa" else _texts_as_pairs(spec.source)
    answers = sorted({p.answer for p in pairs})
    bank = unit(cache.encode(teachers[0], answers))
    pred = unit(trainer.predict(cache.encode(teachers[0], [text])))[0]
    sims = bank @ pred
    top = np.argsort(-sims)[:k]
    return [(answers[i], float(sims[i])) for i in top]


def _config_from(saved: dict[str, Any], epochs: int | None = None) -> TrainConfig:
    from mastctl.cube.losses import LossWeights

    values = dict(saved)
    values["losses"] = LossWeights(**values["losses"])
    values["shape"] = tuple(values["shape"]) if values.get("shape") else None
    if epochs is not None:
        values["epochs"] = epochs
    return TrainConfig(**values)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    from mastctl.writers import atomic_write

    atomic_write(path, lambda fh: fh.write(json.dumps(data, indent=1, default=float).encode("utf-8")))
