"""Losses of the cube trainer: each on (predictions, targets) of shape (batch, dim), both compared by direction."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def cosine_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    per = 1 - F.cosine_similarity(pred, target, dim=-1)
    return _mean(per, weight)


def mse_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    per = ((F.normalize(pred, dim=-1) - F.normalize(target, dim=-1)) ** 2).sum(-1)
    return _mean(per, weight)


def infonce_loss(pred: torch.Tensor, target: torch.Tensor, temperature: float = 0.07,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Each prediction should be nearest its own target among the batch's targets."""
    logits = F.normalize(pred, dim=-1) @ F.normalize(target, dim=-1).T / temperature
    per = F.cross_entropy(logits, torch.arange(len(pred), device=pred.device), reduction="none")
    return _mean(per, weight)


def triplet_loss(pred: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float = 0.2,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    p, pos, neg = (F.normalize(t, dim=-1) for t in (pred, positive, negative))
    per = F.relu(margin - (p * pos).sum(-1) + (p * neg).sum(-1))
    return _mean(per, weight)


def diversity_penalty(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """How much more alike the predictions are to each other than the targets are (0 when not): against collapse."""
    if len(pred) < 2:
        return pred.new_zeros(())
    off = ~torch.eye(len(pred), dtype=torch.bool, device=pred.device)
    p = F.normalize(pred, dim=-1)
    t = F.normalize(target, dim=-1)
    return F.relu((p @ p.T)[off].mean() - (t @ t.T)[off].mean())


class NegativeSampler:
    """For each row, a wrong target: the most similar one to the prediction (hard) or a random one, mixed."""

    def __init__(self, hard_fraction: float = 0.5, seed: int = 0) -> None:
        self.hard_fraction = hard_fraction
        self.gen = torch.Generator().manual_seed(seed)

    def sample(self, pred: torch.Tensor, targets: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        """``targets``: a bank of candidate targets (n, dim); ``own``: each row's index of its own target in the bank."""
        n = len(targets)
        with torch.no_grad():
            sims = F.normalize(pred, dim=-1) @ F.normalize(targets, dim=-1).T
            sims[torch.arange(len(pred)), own] = -float("inf")
            hard = sims.argmax(dim=1)
            rand = torch.randint(0, n - 1, (len(pred),), generator=self.gen).to(pred.device)
            rand = rand + (rand >= own).long()  # never the own target
            use_hard = torch.rand(len(pred), generator=self.gen).to(pred.device) < self.hard_fraction
            index = torch.where(use_hard, hard, rand)
        return targets[index]


def curriculum_weights(difficulty: torch.Tensor, epoch: int, ramp_epochs: int) -> torch.Tensor:
    """Easy (0) examples weigh 1 from the start; medium (1) and hard (2) ramp up to 1 over ``ramp_epochs``."""
    if ramp_epochs <= 0:
        return torch.ones_like(difficulty, dtype=torch.float32)
    progress = min(1.0, (epoch + 1) / ramp_epochs)
    return torch.clamp(1.0 - difficulty.float() / 2.0 * (1.0 - progress), min=0.05)


@dataclass
class LossWeights:
    # Defaults from bench/cube.py on the built-in set: contrastive terms buy retrieval@1 at the price of mean
    # cosine (InfoNCE 0.2: 0.46 / 0.38; triplet 0.1: 0.515 / 0.38; cosine alone: 0.52 / 0.35).
    cosine: float = 1.0
    mse: float = 0.0
    infonce: float = 0.0
    triplet: float = 0.1
    diversity: float = 0.02
    temperature: float = 0.07
    margin: float = 0.2


def combined(pred, target, bank, own, sampler: NegativeSampler, w: LossWeights, weight=None) -> tuple[torch.Tensor, dict[str, float]]:
    parts: dict[str, torch.Tensor] = {}
    if w.cosine:
        parts["cosine"] = w.cosine * cosine_loss(pred, target, weight)
    if w.mse:
        parts["mse"] = w.mse * mse_loss(pred, target, weight)
    if w.infonce and len(pred) > 1:
        parts["infonce"] = w.infonce * infonce_loss(pred, target, w.temperature, weight)
    if w.triplet and len(bank) > 1:
        parts["triplet"] = w.triplet * triplet_loss(pred, target, sampler.sample(pred, bank, own), w.margin, weight)
    if w.diversity:
        parts["diversity"] = w.diversity * diversity_penalty(pred, target)
    total = sum(parts.values())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def _mean(per: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return per.mean()
    return (per * weight).sum() / weight.sum().clamp(min=1e-8)
