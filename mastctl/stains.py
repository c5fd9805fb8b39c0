"""Stain physics shared by the renderer, the detectors and IHC.

Brightfield microscopy follows Beer-Lambert: the light left after a stain of
concentration c is I = I0 * exp(-c * v), with v the stain's optical-density
(OD) vector over R, G, B. Mixtures add in OD space, so colour deconvolution
is a linear solve there (Ruifrok & Johnston, Anal Quant Cytol Histol 2001).
"""

from __future__ import annotations

import math

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

# Unit OD vectors (R, G, B) of Ruifrok & Johnston, as in QuPath / scikit-image.
HEMATOXYLIN = (0.650, 0.704, 0.286)
EOSIN = (0.072, 0.990, 0.105)
DAB = (0.268, 0.570, 0.776)

OD_FLOOR = 1.0 / 255.0


def unit(vector) -> np.ndarray:
    import numpy as np

    v = np.asarray(vector, dtype=np.float64)
    return v / np.linalg.norm(v)


def rgb_to_od(rgb: np.ndarray, background: float = 255.0) -> np.ndarray:
    """RGB (uint8 or float 0..255) -> optical density, float32, >= 0."""
    import numpy as np

    intensity = np.maximum(np.asarray(rgb, dtype=np.float32), 1.0) / np.float32(background)
    return np.maximum(-np.log(intensity), 0.0).astype(np.float32)


def od_to_rgb(od: np.ndarray, background: float = 255.0) -> np.ndarray:
    """Optical density -> RGB float 0..background (not yet rounded)."""
    import numpy as np

    return background * np.exp(-np.asarray(od, dtype=np.float32))


def stain_matrix(*vectors) -> np.ndarray:
    """Rows = unit stain vectors; a third row completes a two-stain basis."""
    import numpy as np

    rows = [unit(v) for v in vectors]
    if len(rows) == 2:
        third = np.cross(rows[0], rows[1])
        rows.append(third / np.linalg.norm(third))
    return np.vstack(rows)


def separate(rgb: np.ndarray, vectors=(HEMATOXYLIN, EOSIN)) -> np.ndarray:
    """Per-pixel stain concentrations (H x W x n_stains) by colour deconvolution."""
    import numpy as np

    matrix = stain_matrix(*vectors)
    od = rgb_to_od(rgb)
    conc = od.reshape(-1, 3) @ np.linalg.pinv(matrix).astype(np.float32)
    return conc.reshape(od.shape[:2] + (matrix.shape[0],))[..., : len(vectors)]


def compose(concentrations: dict[str, np.ndarray], vectors: dict[str, np.ndarray], background: float = 255.0) -> np.ndarray:
    """Concentration maps + stain vectors -> RGB float (Beer-Lambert)."""
    import numpy as np

    first = next(iter(concentrations.values()))
    od = np.zeros(first.shape + (3,), dtype=np.float32)
    for name, conc in concentrations.items():
        od += conc[..., None].astype(np.float32) * np.asarray(vectors[name], dtype=np.float32)
    return od_to_rgb(od, background)


def rotate_vector(vector, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """The unit vector turned by ``degrees`` about a random axis, kept in the positive octant."""
    import numpy as np

    v = unit(vector)
    axis = rng.normal(size=3)
    axis -= axis.dot(v) * v
    axis /= np.linalg.norm(axis)
    theta = np.deg2rad(degrees)
    turned = v * np.cos(theta) + axis * np.sin(theta)
    turned = np.clip(turned, 0.02, None)
    return turned / np.linalg.norm(turned)


def angle_deg(a, b) -> float:
    import numpy as np

    cos = float(np.clip(unit(a).dot(unit(b)), -1.0, 1.0))
    return float(np.degrees(np.arccos(cos)))


_OD_LUT = None


def od_lut(rgb: np.ndarray) -> np.ndarray:
    """rgb_to_od for uint8 images through a 256-entry table (several times faster)."""
    import numpy as np

    global _OD_LUT
    if _OD_LUT is None:
        _OD_LUT = np.maximum(-np.log(np.maximum(np.arange(256, dtype=np.float64), 1.0) / 255.0), 0.0).astype(np.float32)
    return np.take(_OD_LUT, rgb)  # faster than fancy indexing


def estimate_he(rgb: np.ndarray, beta: float = 0.15, alpha: float = 1.0, min_pixels: int = 300, sample: int = 10000, seed: int = 0):
    """Macenko et al. (ISBI 2009): the image's own hematoxylin and eosin OD vectors.

    Pixels with OD above ``beta`` in every channel (tissue) are projected on the
    plane of their two main directions; the robust extremes of the angle
    (``alpha`` / 100 - ``alpha`` percentiles) are the two stains, the bluer one
    being hematoxylin. Returns None when there is too little tissue to tell,
    so callers fall back to the standard vectors.
    """
    import numpy as np

    step = max(1, math.ceil((rgb.shape[0] * rgb.shape[1] / (2 * sample)) ** 0.5))  # a strided sample is plenty
    rgb = rgb[::step, ::step]
    od = od_lut(rgb).reshape(-1, 3) if rgb.dtype == np.uint8 else rgb_to_od(rgb).reshape(-1, 3)
    tissue = od[np.sqrt((od * od).sum(axis=1)) > 2 * beta]  # by OD norm: pure eosin is faint in red
    if len(tissue) < min_pixels:
        return None
    if len(tissue) > sample:
        tissue = tissue[np.random.default_rng(seed).choice(len(tissue), sample, replace=False)]
    _, vecs = np.linalg.eigh(np.cov(tissue.T))
    plane = vecs[:, 1:3]  # the two largest eigenvectors
    proj = tissue @ plane
    phi = np.arctan2(proj[:, 1], proj[:, 0])
    lo, hi = np.percentile(phi, [alpha, 100 - alpha])
    v1 = plane @ np.array([np.cos(lo), np.sin(lo)])
    v2 = plane @ np.array([np.cos(hi), np.sin(hi)])
    v1, v2 = (v if v.sum() >= 0 else -v for v in (v1, v2))
    if np.any(v1 < -0.05) or np.any(v2 < -0.05) or angle_deg(v1, v2) < 10:
        return None  # not an H&E-like pair of directions
    v1, v2 = np.clip(v1, 1e-3, None), np.clip(v2, 1e-3, None)
    # hematoxylin absorbs more red relative to green than eosin does
    hema, eosin = (v1, v2) if v1[0] / v1[1] > v2[0] / v2[1] else (v2, v1)
    return unit(hema), unit(eosin)


# The reference of Macenko normalisation as torchstain and the original code use it: the stain
# vectors of one reference slide (columns of HERef) and that slide's 99th-percentile concentrations
# (maxCRef) measured with *those* vectors. The two belong together: maxima from one reference with
# another reference's vectors re-stain to the wrong intensities.
REFERENCE_HE = ((0.5626, 0.7201, 0.4062), (0.2159, 0.8012, 0.5581))
REFERENCE_MAX = (1.9705, 1.0308)


def normalize(rgb: np.ndarray, reference=REFERENCE_HE, reference_max=REFERENCE_MAX) -> np.ndarray:
    """Macenko normalisation: re-stain ``rgb`` with the reference vectors and intensities.

    The image's own vectors are estimated, its concentrations scaled so their
    99th percentiles match ``reference_max``, and the image recomposed with
    the reference vectors (``reference_max`` must have been measured with them).
    Near-empty images come back unchanged.
    """
    import numpy as np

    own = estimate_he(rgb)
    if own is None:
        return rgb
    conc = separate(rgb, own)
    tissue = conc[..., 0] + conc[..., 1] > 0.15
    if tissue.sum() < 100:
        return rgb
    maxima = np.percentile(conc[tissue], 99, axis=0)
    scale = np.asarray(reference_max, dtype=np.float32) / np.maximum(maxima, 1e-3).astype(np.float32)
    conc = np.clip(conc * scale, 0, None)
    out = compose({"h": conc[..., 0], "e": conc[..., 1]}, {"h": unit(reference[0]), "e": unit(reference[1])})
    return np.clip(np.round(out), 0, 255).astype(np.uint8)
