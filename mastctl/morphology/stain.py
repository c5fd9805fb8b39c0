"""Stain separation for the morphology detector: hematoxylin, eosin and a residual at ~0.5 um/px.

Everything runs at a working scale of about 0.5 um/px (finer images are
averaged down in optical density, which is linear), and every size is given
in micrometres, so the same thresholds serve 20x and 40x scans. The stain
vectors are the image's own (Macenko), the standard ones on near-empty tissue,
or fixed ones a slide calibrated once for all its tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mastctl import stains

WORK_MPP = 0.5

@dataclass
class Stained:
    """Stain concentrations at the working scale."""

    h: np.ndarray
    e: np.ndarray
    r: np.ndarray  # residual: absorption neither stain explains
    mpp: float  # of the working scale
    factor: int  # input pixels per working pixel
    vectors: tuple[np.ndarray, np.ndarray]
    estimated: bool  # the image's own vectors (True) or the standard ones


def estimate_vectors(pixels: np.ndarray):
    """The image's H&E vectors (Macenko), or None for the standard ones."""
    estimate = stains.estimate_he(pixels)
    if estimate is not None and stains.angle_deg(estimate[1], stains.EOSIN) > 35:
        estimate = (estimate[0], stains.unit(stains.EOSIN))  # eosin pulled by other pigments: keep its standard
    return estimate


def separate(pixels: np.ndarray, mpp: float, vectors=None) -> Stained:
    """Deconvolution at ~0.5 um/px with ``vectors``, else the image's own (standard ones on near-empty tissue)."""
    estimate = estimate_vectors(pixels) if vectors is None else vectors
    chosen = estimate or (stains.unit(stains.HEMATOXYLIN), stains.unit(stains.EOSIN))
    return separate_with(pixels, mpp, chosen, estimated=estimate is not None)


def separate_with(pixels: np.ndarray, mpp: float, vectors, estimated: bool = True) -> Stained:
    """Deconvolution with given (first, second) stain vectors at ~0.5 um/px; the second lands in ``e``."""
    od = stains.od_lut(pixels)
    factor = max(1, int(round(WORK_MPP / mpp))) if mpp < 0.75 * WORK_MPP else 1
    if factor > 1:  # block means in OD (linear in the stains), as sums of strided views
        hh, ww = od.shape[0] // factor, od.shape[1] // factor
        rows = np.add(od[0 : hh * factor : factor, : ww * factor], od[1 : hh * factor : factor, : ww * factor])
        for i in range(2, factor):
            rows += od[i : hh * factor : factor, : ww * factor]
        od = np.add(rows[:, 0::factor], rows[:, 1::factor])
        for j in range(2, factor):
            od += rows[:, j::factor]
    inverse = np.linalg.inv(stains.stain_matrix(*vectors)) / (factor * factor)
    # concentrations = od @ inverse, plane by plane (elementwise work beats a 3x3 matmul per pixel)
    h, e, r = ((od[..., 0] * np.float32(inverse[0, k]) + od[..., 1] * np.float32(inverse[1, k])
                + od[..., 2] * np.float32(inverse[2, k])) for k in range(3))
    vectors = (np.asarray(vectors[0]), np.asarray(vectors[1]))
    return Stained(h, e, r, mpp * factor, factor, vectors, estimated)
