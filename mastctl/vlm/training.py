"""`mastctl finetune train`: LoRA (or QLoRA) on a prepared data set, with checkpoints, resume and validation.

A plain torch loop: batches of conversations, loss on the answer tokens only,
gradient accumulation, AdamW; after each epoch the validation loss and the
point-F1 of generated answers on the validation split (matched within
``radius_um``), and a checkpoint (adapter + optimizer state + RNG, safetensors
and JSON) that ``--resume`` continues from. The result is a peft adapter folder
with ``mastctl_adapter.json`` (base model, family, coordinate convention,
prompt version, scores).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mastctl.errors import InputError, UsageError
from mastctl.vlm import formats as F

META = "mastctl_adapter.json"


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class TrainSettings:
    epochs: int = 3
    batch_size: int = 2
    grad_accum: int = 4
    lr: float = 2e-4
    max_new_tokens: int = 256
    radius_um: float = 5.0
    seed: int = 0
    quantize: str | None = None  # 4bit | 8bit
    dtype: str = "float32"
    device: str = "cpu"
    eval_generate: bool = True


def train(data: Path, base: Path, out: Path, lora: LoraSettings, settings: TrainSettings, *, resume: bool = False,
          on_step: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    from mastctl.hf import quiet
    from mastctl.vlm.models import load

    quiet()
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from mastctl.vlm.dataset import load_rows

    meta, train_rows = load_rows(data, "train")
    _, val_rows = load_rows(data, "val")
    if not train_rows:
        raise InputError(f"{data}: the training split is empty")
    family = meta["family"]
    ckpt = out / "checkpoint"
    if resume and not (ckpt / "state.json").is_file():
        raise InputError(f"{out}: nothing to resume (no checkpoint)")
    if not resume and out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty; use --resume to continue its run, or another -o")
    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    loaded = load(family, base, quantize=settings.quantize, dtype=settings.dtype, device=settings.device,
                  adapter=ckpt if resume else None, trainable_adapter=True)
    model = loaded.model
    if not resume:
        if settings.quantize:
            model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        config = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=lora.target_modules,
                            bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, config)
    loaded.model = model
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr)
    state = {"epoch": 0, "step": 0, "history": []}
    if resume:
        state = json.loads((ckpt / "state.json").read_text())
        _load_optimizer(opt, ckpt / "optimizer.safetensors", state)
    images = _image_cache(data)
    order_rng = random.Random(settings.seed + 1000 * state["epoch"])
    while state["epoch"] < settings.epochs:
        t0 = time.perf_counter()
        model.train()
        order = list(range(len(train_rows)))
        order_rng.shuffle(order)
        losses = []
        opt.zero_grad()
        for b, start in enumerate(range(0, len(order), settings.batch_size)):
            rows = [train_rows[i] for i in order[start:start + settings.batch_size]]
            batch = _batch(loaded, rows, images, settings.device)
            loss = model(**batch).loss / settings.grad_accum
            loss.backward()
            losses.append(float(loss.detach()) * settings.grad_accum)
            if (b + 1) % settings.grad_accum == 0 or start + settings.batch_size >= len(order):
                opt.step()
                opt.zero_grad()
                state["step"] += 1
            if on_step:
                on_step({"epoch": state["epoch"] + 1, "loss": losses[-1]})
        state["epoch"] += 1
        record = {"epoch": state["epoch"], "train_loss": float(np.mean(losses)), "seconds": time.perf_counter() - t0}
        if val_rows:
            record["val_loss"] = evaluate_loss(loaded, val_rows, images, settings)
            if settings.eval_generate:
                record["val_point_f1"] = evaluate_f1(loaded, val_rows, images, settings, meta)
        state["history"].append(record)
        _save_checkpoint(model, opt, state, ckpt)
        if on_step:
            on_step({**record, "end_of_epoch": True})
    model.save_pretrained(str(out))
    info = {"schema": "mastctl/vlm-adapter@1", "family": family, "base_model": str(base), "convention": F.COORDS[family],
            "prompt_version": F.PROMPT_VERSION, "tile_um": meta["tile_um"], "tile_mpp": meta["tile_mpp"],
            "lora": asdict(lora), "train": {k: v for k, v in asdict(settings).items()}, "history": state["history"]}
    (out / META).write_text(json.dumps(info, indent=1))
    return info


def _image_cache(data: Path) -> Callable[[str], np.ndarray]:
    from PIL import Image as PILImage

    cache: dict[str, np.ndarray] = {}

    def get(rel: str) -> np.ndarray:
        if rel not in cache:
            with PILImage.open(data / rel) as im:
                cache[rel] = np.asarray(im.convert("RGB"))
        return cache[rel]

    return get


def _batch(loaded, rows: list[dict[str, Any]], images, device: str, with_answers: bool = True) -> dict[str, Any]:
    prompts = [r["messages"][0]["content"][1]["text"] for r in rows]
    answers = [r["messages"][1]["content"][0]["text"] for r in rows] if with_answers else None
    batch = loaded.encode([images(r["image"]) for r in rows], prompts, answers)
    return {k: v.to(device) for k, v in batch.items()}


def evaluate_loss(loaded, rows, images, settings: TrainSettings) -> float:
    import torch

    loaded.model.eval()
    losses = []
    with torch.no_grad():
        for start in range(0, len(rows), settings.batch_size):
            losses.append(float(loaded.model(**_batch(loaded, rows[start:start + settings.batch_size], images, settings.device)).loss))
    return float(np.mean(losses))


def generate(loaded, pixels: np.ndarray, max_new_tokens: int, temperature: float = 0.0, device: str = "cpu") -> str:
    import torch

    batch = {k: v.to(device) for k, v in loaded.encode([pixels], [F.prompt(loaded.family)]).items()}
    with torch.no_grad():
        out = loaded.model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=temperature > 0,
                                    temperature=temperature if temperature > 0 else None, pad_token_id=loaded.tokenizer.pad_token_id)
    return loaded.tokenizer.decode(out[0, batch["input_ids"].shape[1]:], skip_special_tokens=False)


def evaluate_f1(loaded, rows, images, settings: TrainSettings, meta: dict[str, Any]) -> dict[str, float]:
    """Point-F1 of generated answers against the split's points, one-to-one within radius_um."""
    from mastctl.metrics import match

    tp = fp = fn = invalid = 0
    radius_px = settings.radius_um / meta["tile_mpp"]
    for r in rows:
        pixels = images(r["image"])
        h, w = pixels.shape[:2]
        text = generate(loaded, pixels, settings.max_new_tokens, device=settings.device)
        points, bad = F.parse(text, loaded.family, w, h, loaded.seen_size(h, w))
        invalid += bad
        truth = np.array([[p[0], p[1]] for p in r["points"]]).reshape(-1, 2)
        found = np.array([[p.x, p.y] for p in points]).reshape(-1, 2)
        m = match(found, truth, radius_px)
        tp += len(m.pairs)
        fp += len(m.unmatched_pred)
        fn += len(m.unmatched_true)
    p = tp / (tp + fp) if tp + fp else 0.0
    rcl = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": p, "recall": rcl, "f1": 2 * p * rcl / (p + rcl) if p + rcl else 0.0, "invalid_points": invalid}


def _save_checkpoint(model, opt, state: dict[str, Any], ckpt: Path) -> None:
    from safetensors.torch import save_file

    ckpt.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(ckpt))
    tensors, groups = {}, opt.state_dict()
    for pid, st in groups["state"].items():
        for key, value in st.items():
            tensors[f"{pid}.{key}"] = value.detach().cpu().reshape(-1) if value.ndim == 0 else value.detach().cpu().contiguous()
    save_file(tensors, str(ckpt / "optimizer.safetensors"), metadata={"param_groups": json.dumps(groups["param_groups"])})
    (ckpt / "state.json").write_text(json.dumps(state))


def _load_optimizer(opt, path: Path, state: dict[str, Any]) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as fh:
        groups = json.loads(fh.metadata()["param_groups"])
    st: dict[int, dict[str, Any]] = {}
    for k, v in tensors.items():
        pid, key = k.split(".", 1)
        st.setdefault(int(pid), {})[key] = v.reshape(()) if key == "step" else v
    opt.load_state_dict({"state": st, "param_groups": groups})
