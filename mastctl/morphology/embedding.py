"""Cell-crop embeddings from the morphology detector's own measurements.

A crop's vector describes the nucleus nearest its centre: the detector's
stain-normalised features (nucleus size and shape, hematoxylin density,
cytoplasm rings, granularity, border, eccentricity, lobes) and the log class
probabilities of the built-in model, standardised with constants fitted on
synthetic crops (``bench/kb.py --fit-image-embedder``) and scaled to unit
length. Same-type cells land near each other; no weights are downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np

from mastctl.kb.crops import CROP_MPP
from mastctl.morphology import analyse, default_model
from mastctl.morphology.measure import FEATURE_NAMES
from mastctl.morphology.model import CLASSES

CONSTANTS = "crop_embedding.json"
CENTRE_UM = 5.0  # the described nucleus lies this close to the crop's centre
DIM = len(FEATURE_NAMES) + len(CLASSES)


@dataclass(frozen=True)
class CropMeasure:
    """What the embedding was made of, for describing a record."""

    found: bool  # a nucleus near the centre
    features: dict[str, float]
    probabilities: dict[str, float]


def raw_rows(crops: list[np.ndarray]) -> tuple[np.ndarray, list[CropMeasure]]:
    """Unstandardised rows (features + log probabilities); zeros where no nucleus is near the centre."""
    model = default_model()
    rows = np.zeros((len(crops), DIM), np.float64)
    measures: list[CropMeasure] = []
    for i, crop in enumerate(crops):
        a = analyse(np.ascontiguousarray(crop[..., :3]), CROP_MPP)
        h, w = crop.shape[:2]
        if a.nuclei.count:
            d = np.hypot(a.xy[:, 0] - w / 2, a.xy[:, 1] - h / 2) * CROP_MPP
            j = int(np.argmin(d))
            if d[j] <= CENTRE_UM:
                p = model.predict_proba(model.select(a.X[j:j + 1], FEATURE_NAMES))[0]
                rows[i] = np.concatenate([a.X[j], np.log(p + 1e-3)])
                measures.append(CropMeasure(True, dict(zip(FEATURE_NAMES, map(float, a.X[j]))), dict(zip(CLASSES, map(float, p)))))
                continue
        measures.append(CropMeasure(False, {}, {}))
    return rows, measures


@cache
def constants() -> tuple[np.ndarray, np.ndarray]:
    with resources.as_file(resources.files("mastctl.morphology") / CONSTANTS) as path:
        data = json.loads(path.read_text())
    return np.asarray(data["mean"]), np.asarray(data["scale"])


def standardise(rows: np.ndarray, found: np.ndarray) -> np.ndarray:
    mean, scale = constants()
    z = (rows - mean) / scale
    z[~found] = 0.0
    norm = np.linalg.norm(z, axis=1, keepdims=True)
    return (z / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def embed(crops: list[np.ndarray]) -> tuple[np.ndarray, list[CropMeasure]]:
    """Unit vectors (all zero where the crop shows no nucleus at its centre) and what they measured."""
    rows, measures = raw_rows(crops)
    found = np.array([m.found for m in measures], bool)
    return standardise(rows, found), measures
