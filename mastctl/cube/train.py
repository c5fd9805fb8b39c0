"""Training, evaluation, baselines and checkpoints of the cube.

Inputs are the primary teacher's question embeddings; targets are the answer
embeddings of every configured teacher, each projected into the primary
teacher's space by a closed-form ridge map fitted on the training answers.
Teachers are weighted adaptively: after each epoch, each teacher's score is
how closely the student's validation predictions follow that teacher's
targets, averaged over the last ``window`` epochs; weights are a softmax of
the scores over ``distill_temperature``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mastctl.cube.losses import LossWeights
from mastctl.errors import InputError

CHECKPOINT = "checkpoint.safetensors"
BEST = "cube.safetensors"
META = "cube.json"


@dataclass
class TrainConfig:
    epochs: int = 60
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    patience: int = 10
    channels: int = 16
    steps: int = 4
    shape: tuple[int, int, int] | None = None
    mix: bool = True
    curriculum_epochs: int = 5
    seed: int = 0
    distill_temperature: float = 0.05
    window: int = 3
    losses: LossWeights = field(default_factory=LossWeights)


@dataclass
class Encoded:
    """A split as arrays: inputs X, one target array per teacher, difficulty, answer index (for negatives/retrieval)."""

    X: np.ndarray
    targets: dict[str, np.ndarray]
    difficulty: np.ndarray
    answer_index: np.ndarray
    answers: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- closed-form pieces


def ridge_fit(X: np.ndarray, Y: np.ndarray, alpha: float) -> np.ndarray:
    """W minimising |[X 1] W - Y|^2 + alpha |W|^2 (bias not penalised)."""
    Xb = np.hstack([X, np.ones((len(X), 1), X.dtype)])
    reg = alpha * np.eye(Xb.shape[1])
    reg[-1, -1] = 0
    return np.linalg.solve(Xb.T @ Xb + reg, Xb.T @ Y)


def ridge_predict(W: np.ndarray, X: np.ndarray) -> np.ndarray:
    return np.hstack([X, np.ones((len(X), 1), X.dtype)]) @ W


def unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1)


def scores(pred: np.ndarray, target: np.ndarray, answer_index: np.ndarray, bank: np.ndarray) -> dict[str, float]:
    """Q->A similarity (mean cosine to the true answer) and retrieval accuracy @1/@5 among ``bank`` (unique answers)."""
    p, t, b = unit(pred), unit(target), unit(bank)
    sims = p @ b.T
    rank = (sims > sims[np.arange(len(p)), answer_index][:, None]).sum(1)
    return {"qa_similarity": float((p * t).sum(1).mean()), "retrieval_at_1": float((rank < 1).mean()),
            "retrieval_at_5": float((rank < 5).mean())}


def ridge_baseline(train: Encoded, val: Encoded, primary: str) -> tuple[np.ndarray, float]:
    """Ridge from questions to answers, alpha chosen by validation Q->A similarity."""
    best = None
    for alpha in (0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0):
        W = ridge_fit(train.X, train.targets[primary], alpha)
        s = float((unit(ridge_predict(W, val.X)) * unit(val.targets[primary])).sum(1).mean())
        if best is None or s > best[1]:
            best = (W, s, alpha)
    return best[0], best[2]


# --------------------------------------------------------------------------- training


class Trainer:
    def __init__(self, config: TrainConfig, dim: int, teachers: list[str], device: str = "cpu", mixed_precision: bool = False) -> None:
        import torch

        from mastctl.cube.losses import NegativeSampler
        from mastctl.cube.model import CubicCore

        self.config = config
        self.teachers = teachers
        self.device = device
        self.amp = mixed_precision and device.startswith("cuda")
        torch.manual_seed(config.seed)
        self.model = CubicCore(dim, config.shape, config.channels, config.steps, config.mix).to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.gen = torch.Generator().manual_seed(config.seed)
        self.sampler = NegativeSampler(seed=config.seed)
        self.epoch = 0
        self.best = float("inf")
        self.bad_epochs = 0
        self.history: list[dict[str, Any]] = []
        self.teacher_scores: dict[str, list[float]] = {t: [] for t in teachers}

    def teacher_weights(self) -> dict[str, float]:
        w = self.config.window
        means = np.array([np.mean(self.teacher_scores[t][-w:]) if self.teacher_scores[t] else 0.0 for t in self.teachers])
        z = np.exp((means - means.max()) / self.config.distill_temperature)
        return {t: float(v) for t, v in zip(self.teachers, z / z.sum())}

    def predict(self, X: np.ndarray) -> np.ndarray:
        import torch

        self.model.eval()
        with torch.no_grad():
            out = [self.model(torch.from_numpy(X[i:i + 512]).to(self.device)).float().cpu().numpy() for i in range(0, len(X), 512)]
        return np.concatenate(out) if out else np.zeros_like(X)

    def fit(self, train: Encoded, val: Encoded, on_epoch: Callable[[dict[str, Any]], None] | None = None,
            checkpoint_dir: Path | None = None) -> dict[str, Any]:
        import torch

        from mastctl.cube.losses import combined, curriculum_weights

        c = self.config
        X = torch.from_numpy(train.X).to(self.device)
        T = {t: torch.from_numpy(train.targets[t]).to(self.device) for t in self.teachers}
        banks = {t: torch.from_numpy(_bank(train.targets[t], train.answer_index)).to(self.device) for t in self.teachers}
        own = torch.from_numpy(train.answer_index).long().to(self.device)
        diff = torch.from_numpy(train.difficulty).to(self.device)
        while self.epoch < c.epochs and self.bad_epochs < c.patience:
            t0 = time.perf_counter()
            self.model.train()
            weights = self.teacher_weights()
            order = torch.randperm(len(X), generator=self.gen)
            total, parts_sum = 0.0, {}
            for start in range(0, len(X), c.batch_size):
                idx = order[start:start + c.batch_size].to(self.device)
                cw = curriculum_weights(diff[idx], self.epoch, c.curriculum_epochs)
                with torch.autocast("cuda", enabled=self.amp):
                    pred = self.model(X[idx]).float()
                loss = pred.new_zeros(())
                for t in self.teachers:
                    part, parts = combined(pred, T[t][idx], banks[t], own[idx], self.sampler, c.losses, cw)
                    loss = loss + weights[t] * part
                    for k, v in parts.items():
                        parts_sum[k] = parts_sum.get(k, 0.0) + weights[t] * v * len(idx)
                self.opt.zero_grad()
                loss.backward()
                self.opt.step()
                total += float(loss.detach()) * len(idx)
            val_pred = self.predict(val.X)
            for t in self.teachers:
                self.teacher_scores[t].append(float((unit(val_pred) * unit(val.targets[t])).sum(1).mean()))
            primary = self.teachers[0]
            val_loss = float(1 - (unit(val_pred) * unit(val.targets[primary])).sum(1).mean())
            self.epoch += 1
            improved = val_loss < self.best - 1e-5
            if improved:
                self.best, self.bad_epochs = val_loss, 0
            else:
                self.bad_epochs += 1
            record = {"epoch": self.epoch, "train_loss": total / len(X), "val_loss": val_loss,
                      "parts": {k: v / len(X) for k, v in parts_sum.items()}, "teacher_weights": weights,
                      "seconds": time.perf_counter() - t0}
            self.history.append(record)
            if checkpoint_dir is not None:
                if improved:
                    self.save_model(checkpoint_dir / BEST)
                self.save_checkpoint(checkpoint_dir / CHECKPOINT)
            if on_epoch:
                on_epoch(record)
        return {"epochs": self.epoch, "best_val_loss": self.best, "stopped_early": self.bad_epochs >= c.patience}

    # ------------------------------------------------------------------ checkpoints (safetensors + JSON, no pickle)

    def save_model(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}, str(path))

    def save_checkpoint(self, path: Path) -> None:
        from safetensors.torch import save_file

        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        opt = self.opt.state_dict()
        for pid, state in opt["state"].items():
            for key, value in state.items():
                tensors[f"opt.{pid}.{key}"] = value.detach().cpu().reshape(-1) if value.ndim == 0 else value.detach().cpu().contiguous()
        tensors["rng.shuffle"] = self.gen.get_state()
        tensors["rng.sampler"] = self.sampler.gen.get_state()
        meta = {"epoch": self.epoch, "best": self.best, "bad_epochs": self.bad_epochs, "history": self.history,
                "teacher_scores": self.teacher_scores, "param_groups": opt["param_groups"]}
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata={"state": json.dumps(meta)})
        tmp.replace(path)

    def load_checkpoint(self, path: Path) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        if not path.is_file():
            raise InputError(f"{path}: no checkpoint to resume from")
        tensors = load_file(str(path))
        with safe_open(str(path), "pt") as fh:
            meta = json.loads(fh.metadata()["state"])
        self.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        state: dict[int, dict[str, Any]] = {}
        for k, v in tensors.items():
            if k.startswith("opt."):
                _, pid, key = k.split(".", 2)
                state.setdefault(int(pid), {})[key] = v.reshape(()) if key == "step" else v
        self.opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
        self.gen.set_state(tensors["rng.shuffle"])
        self.sampler.gen.set_state(tensors["rng.sampler"])
        self.epoch, self.best, self.bad_epochs = meta["epoch"], meta["best"], meta["bad_epochs"]
        self.history, self.teacher_scores = meta["history"], meta["teacher_scores"]


def _bank(targets: np.ndarray, answer_index: np.ndarray) -> np.ndarray:
    """One target per distinct answer, in answer-index order."""
    bank = np.zeros((int(answer_index.max()) + 1, targets.shape[1]), np.float32)
    bank[answer_index] = targets
    return bank
