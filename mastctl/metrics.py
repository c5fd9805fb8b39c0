"""Point matching and detection metrics, shared by compare, bench and every detector issue.

Matching is one-to-one within a radius: the assignment that first maximises
the number of matched pairs, then minimises their total distance (Hungarian
method, solved per connected group of candidate pairs so whole slides with
many thousands of points stay fast).

Mast-cell scores ignore the predicted kind for detection (a mast cell found is
found); per-kind scores then ask for the right kind as well:
recall(k) = true cells of kind k matched by a prediction of kind k / true of k,
precision(k) = predictions of kind k matched to a true cell of kind k / predicted of k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mastctl.cells import KINDS, Cell

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class Match:
    pairs: tuple[tuple[int, int], ...]  # (predicted index, true index)
    unmatched_pred: tuple[int, ...]
    unmatched_true: tuple[int, ...]
    distances: tuple[float, ...] = ()


def match(pred: np.ndarray | Sequence, true: np.ndarray | Sequence, radius: float) -> Match:
    """One-to-one matching of predicted to true points (N x 2, M x 2) within ``radius``."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    P = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    T = np.asarray(true, dtype=np.float64).reshape(-1, 2)
    if len(P) == 0 or len(T) == 0:
        return Match((), tuple(range(len(P))), tuple(range(len(T))))
    candidates = cKDTree(P).sparse_distance_matrix(cKDTree(T), radius, output_type="ndarray")
    rows, cols, dists = candidates["i"], candidates["j"], candidates["v"]
    pairs: list[tuple[int, int]] = []
    pair_d: list[float] = []
    if len(rows):
        n_p, n_t = len(P), len(T)
        graph = coo_matrix((np.ones(len(rows)), (rows, cols + n_p)), shape=(n_p + n_t, n_p + n_t))
        _, component = connected_components(graph, directed=False)
        edge_component = component[rows]
        alone = np.bincount(edge_component)[edge_component] == 1  # a point and its only candidate: paired as they are
        pairs += zip(rows[alone].tolist(), cols[alone].tolist())
        pair_d += dists[alone].tolist()
        groups: dict[int, list[int]] = {}
        for k in np.flatnonzero(~alone).tolist():
            groups.setdefault(int(edge_component[k]), []).append(k)
        for edge_ids in groups.values():
            pr = sorted({int(rows[k]) for k in edge_ids})
            tc = sorted({int(cols[k]) for k in edge_ids})
            big = radius * (min(len(pr), len(tc)) + 1) + 1.0
            cost = np.full((len(pr), len(tc)), big)
            pi, ti = {p: i for i, p in enumerate(pr)}, {t: i for i, t in enumerate(tc)}
            for k in edge_ids:
                cost[pi[int(rows[k])], ti[int(cols[k])]] = dists[k]
            r_idx, c_idx = linear_sum_assignment(cost)
            for a, b in zip(r_idx, c_idx):
                if cost[a, b] <= radius:
                    pairs.append((pr[a], tc[b]))
                    pair_d.append(float(cost[a, b]))
    order = sorted(range(len(pairs)), key=lambda i: pairs[i])
    pairs = [pairs[i] for i in order]
    pair_d = [pair_d[i] for i in order]
    mp = {p for p, _ in pairs}
    mt = {t for _, t in pairs}
    return Match(
        tuple(pairs),
        tuple(i for i in range(len(P)) if i not in mp),
        tuple(j for j in range(len(T)) if j not in mt),
        tuple(pair_d),
    )


@dataclass(frozen=True)
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    @property
    def f1(self) -> float | None:
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else None

    def to_dict(self) -> dict[str, Any]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": _r(self.precision), "recall": _r(self.recall), "f1": _r(self.f1)}


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


@dataclass
class ImageScore:
    """How one detector did on one image."""

    image: str
    detection: Counts  # mast cells (or every cell, for nucleus scoring)
    by_kind: dict[str, Counts]
    true_count: int
    pred_count: int
    match: Match
    pred: tuple[Cell, ...]
    true: tuple[Cell, ...]
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def count_error(self) -> int:
        return self.pred_count - self.true_count


def score_image(image: str, pred: Sequence[Cell], true: Sequence[Cell], radius_px: float, mode: str = "mast") -> ImageScore:
    """Score one image. ``mode``: 'mast' (mast cells, kinds), 'cells' (every cell, label confusion)."""
    if mode == "mast":
        pred = [c for c in pred if c.is_mast_cell]
        true = [c for c in true if c.is_mast_cell]
    m = match([(c.x, c.y) for c in pred], [(c.x, c.y) for c in true], radius_px)
    detection = Counts(len(m.pairs), len(m.unmatched_pred), len(m.unmatched_true))
    by_kind: dict[str, Counts] = {}
    if mode == "mast":
        for kind in KINDS:
            right = sum(1 for p, t in m.pairs if pred[p].kind == kind and true[t].kind == kind)
            n_pred = sum(1 for c in pred if c.kind == kind)
            n_true = sum(1 for c in true if c.kind == kind)
            by_kind[kind] = Counts(right, n_pred - right, n_true - right)
    confusion: dict[str, dict[str, int]] = {}
    if mode == "cells":
        for p, t in m.pairs:
            row = confusion.setdefault(true[t].label, {})
            row[pred[p].label] = row.get(pred[p].label, 0) + 1
        for t in m.unmatched_true:
            row = confusion.setdefault(true[t].label, {})
            row["(missed)"] = row.get("(missed)", 0) + 1
        for p in m.unmatched_pred:
            row = confusion.setdefault("(none)", {})
            row[pred[p].label] = row.get(pred[p].label, 0) + 1
    return ImageScore(image, detection, by_kind, len(true), len(pred), m, tuple(pred), tuple(true), confusion)


@dataclass
class Evaluation:
    """Scores over a set of images, micro-averaged, with bootstrap 95% intervals over images."""

    images: list[ImageScore]
    ci: dict[str, tuple[float, float] | None]
    mode: str

    @property
    def detection(self) -> Counts:
        return sum((s.detection for s in self.images), Counts())

    def kind(self, kind: str) -> Counts:
        return sum((s.by_kind.get(kind, Counts()) for s in self.images), Counts())

    @property
    def count_mae(self) -> float | None:
        return sum(abs(s.count_error) for s in self.images) / len(self.images) if self.images else None

    @property
    def confusion(self) -> dict[str, dict[str, int]]:
        total: dict[str, dict[str, int]] = {}
        for s in self.images:
            for t, row in s.confusion.items():
                for p, n in row.items():
                    total.setdefault(t, {})[p] = total.setdefault(t, {}).get(p, 0) + n
        return total

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "detection": self.detection.to_dict(),
                               "ci95": {k: None if v is None else [round(v[0], 4), round(v[1], 4)] for k, v in self.ci.items()},
                               "count_mae": _r(self.count_mae)}
        if self.mode == "mast":
            out["by_kind"] = {k: self.kind(k).to_dict() for k in KINDS}
        else:
            out["confusion"] = self.confusion
        out["images"] = [
            {"image": s.image, "true": s.true_count, "found": s.pred_count, "count_error": s.count_error, **s.detection.to_dict()}
            for s in self.images
        ]
        return out


def evaluate(scores: list[ImageScore], mode: str = "mast", n_boot: int = 1000, seed: int = 0) -> Evaluation:
    return Evaluation(scores, bootstrap_ci(scores, n_boot=n_boot, seed=seed), mode)


def bootstrap_ci(scores: list[ImageScore], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float] | None]:
    """Percentile intervals of micro-averaged precision, recall and F1, resampling images (None for each with fewer
    than two images: resampling one image gives it back every time, an interval of zero width that would claim a
    certainty nothing measured)."""
    import numpy as np

    if len(scores) < 2:
        return {"precision": None, "recall": None, "f1": None}
    counts = np.array([[s.detection.tp, s.detection.fp, s.detection.fn] for s in scores], dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(scores), size=(n_boot, len(scores)))
    tp, fp, fn = (counts[idx, k].sum(axis=1) for k in range(3))
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = {"precision": tp / (tp + fp), "recall": tp / (tp + fn), "f1": 2 * tp / (2 * tp + fp + fn)}
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    out: dict[str, tuple[float, float] | None] = {}
    for name, values in stats.items():
        values = values[np.isfinite(values)]
        out[name] = (float(np.percentile(values, lo)), float(np.percentile(values, hi))) if len(values) else None
    return out



def expected_calibration_error(confidence, correct, bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by count."""
    import numpy as np

    confidence, correct = np.asarray(confidence, dtype=float), np.asarray(correct, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    total, ece = len(confidence), 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (confidence > lo) & (confidence <= hi)
        if sel.any():
            ece += sel.sum() / total * abs(correct[sel].mean() - confidence[sel].mean())
    return float(ece)
