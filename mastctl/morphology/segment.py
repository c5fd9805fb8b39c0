"""Nuclei from the hematoxylin channel: an adaptive threshold, seeds, and a seeded watershed.

Seeds and the watershed's split lines use a 2x coarser copy (~1 um/px);
nucleus outlines keep the working scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mastctl.morphology.stain import Stained

@dataclass
class Nuclei:
    labels: np.ndarray  # int32 label image at the working scale, 0 = background
    count: int
    xy: np.ndarray  # (count, 2) centroids in working pixels (continuous coordinates)


def segment(st: Stained, min_area_um2: float = 9.0, threshold: float | None = None, scale: float = 1.0) -> Nuclei:
    """Nuclei: smoothed hematoxylin above an adaptive threshold, split by seeded watershed.

    ``scale`` stretches the seed detector for larger objects (e.g. 1.6 for whole DAB-filled cells).
    """
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    px = 1.0 / st.mpp  # pixels per um
    hs = smooth(st.h, 0.4 * px)
    if threshold is None:
        threshold = adaptive_threshold(hs)
    mask = _open_cross(hs > threshold)
    # Seeds and the watershed run on a half-resolution copy (nuclei are still 5+ pixels wide
    # there; 4x less work): difference of Gaussians at nucleus scale, local maxima at least
    # ~3 um apart. The split lines between touching nuclei are then drawn at half resolution;
    # every outline stays the full-resolution mask's.
    half = pool2(hs)
    half_mask = pool2(mask, "max")
    hpx = px / 2
    blob = ndi.gaussian_filter(half, 1.2 * scale * hpx, truncate=3.0) - ndi.gaussian_filter(half, 3.0 * scale * hpx, truncate=3.0)
    footprint = max(3, int(round(3.0 * scale * hpx)) | 1)
    peak_mask = (blob == maximum_filter(blob, footprint)) & (blob > 0.01)
    plateau, n_peaks = ndi.label(peak_mask, structure=np.ones((3, 3)))  # flat tops give one seed each
    centre = centroids(plateau, n_peaks)  # (x, y) + 0.5 in half-resolution pixels
    markers = np.zeros(half.shape, np.int32)
    n_seeds = 0
    if len(centre):
        rr = np.clip(centre[:, 1].astype(int), 0, half.shape[0] - 1)
        cc = np.clip(centre[:, 0].astype(int), 0, half.shape[1] - 1)
        keep = half_mask[rr, cc]
        n_seeds = int(keep.sum())
        markers[rr[keep], cc[keep]] = np.arange(1, n_seeds + 1, dtype=np.int32)
    half_labels = watershed(-half, markers, mask=half_mask).astype(np.int32)
    labels = np.zeros(hs.shape, np.int32)
    h2, w2 = half_labels.shape
    for i in (0, 1):
        for j in (0, 1):
            labels[i : 2 * h2 : 2, j : 2 * w2 : 2] = half_labels
    if hs.shape[0] > 2 * h2:  # odd edges take their neighbour's label
        labels[-1] = labels[-2]
    if hs.shape[1] > 2 * w2:
        labels[:, -1] = labels[:, -2]
    labels *= mask
    sizes = np.bincount(labels.ravel(), minlength=n_seeds + 1)
    # Drop fragments too small to be nuclei, renumber.
    keep = sizes >= min_area_um2 * px * px
    keep[0] = False
    lut = np.zeros(len(keep), np.int32)
    count = int(keep.sum())
    lut[keep] = np.arange(1, count + 1, dtype=np.int32)
    labels = lut[labels]
    return Nuclei(labels, count, centroids(labels, count))


def smooth(a: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian smoothing; for sigma 0.6-1 px the 3-tap binomial [1, 2, 1] / 4 (sigma 0.71 px, 5x cheaper)."""
    if not 0.6 <= sigma_px <= 1.0 or min(a.shape) < 3:
        from scipy import ndimage as ndi

        return ndi.gaussian_filter(a, sigma_px, truncate=3.0)
    rows = a.copy()
    rows[1:-1] = (a[:-2] + 2 * a[1:-1] + a[2:]) * 0.25
    out = rows.copy()
    out[:, 1:-1] = (rows[:, :-2] + 2 * rows[:, 1:-1] + rows[:, 2:]) * 0.25
    return out


def _open_cross(mask: np.ndarray) -> np.ndarray:
    """Binary opening with the 3x3 cross (ndi.binary_opening, iterations=1), as shifted ANDs/ORs."""
    eroded = mask.copy()
    eroded[1:] &= mask[:-1]
    eroded[:-1] &= mask[1:]
    eroded[:, 1:] &= mask[:, :-1]
    eroded[:, :-1] &= mask[:, 1:]
    eroded[0, :] = eroded[-1, :] = False  # scipy's border: outside counts as background for erosion
    eroded[:, 0] = eroded[:, -1] = False
    opened = eroded.copy()
    opened[1:] |= eroded[:-1]
    opened[:-1] |= eroded[1:]
    opened[:, 1:] |= eroded[:, :-1]
    opened[:, :-1] |= eroded[:, 1:]
    return opened


def adaptive_threshold(hs: np.ndarray) -> float:
    """Otsu between nuclei and the rest, over pixels with some hematoxylin; never below 0.18 OD."""
    from skimage.filters import threshold_otsu

    sample = hs[::2, ::2]
    values = sample[sample > 0.08]
    if values.size < 100:
        return 0.3
    return float(max(0.18, min(threshold_otsu(values), 0.6)))


def centroids(labels: np.ndarray, count: int) -> np.ndarray:
    if count == 0:
        return np.zeros((0, 2))
    idx = np.flatnonzero(labels)
    lab = labels.ravel()[idx]
    r, c = np.divmod(idx, labels.shape[1])
    n = np.bincount(lab, minlength=count + 1)[1:].astype(np.float64)
    cx = np.bincount(lab, weights=c, minlength=count + 1)[1:] / n + 0.5
    cy = np.bincount(lab, weights=r, minlength=count + 1)[1:] / n + 0.5
    return np.column_stack([cx, cy])


def maximum_filter(a: np.ndarray, size: int) -> np.ndarray:
    """``scipy.ndimage.maximum_filter(a, size)`` (a square window of odd ``size``, edges mirrored as its ``reflect``
    mode mirrors them), as the largest of shifted views of a padded copy, one axis after the other: the same values
    (a maximum rounds nothing), in a quarter of the time for the small windows the nuclei need."""
    r = size // 2
    if r == 0 or min(a.shape) <= r:
        from scipy import ndimage as ndi

        return ndi.maximum_filter(a, size=size)
    padded = np.pad(a, r, mode="symmetric")  # scipy's "reflect": d c b a | a b c d
    h, w = a.shape
    cols = padded[:, : w].copy()
    for k in range(1, size):
        np.maximum(cols, padded[:, k : k + w], out=cols)
    out = cols[: h].copy()
    for k in range(1, size):
        np.maximum(out, cols[k : k + h], out=out)
    return out


def pool2(a: np.ndarray, how: str = "mean") -> np.ndarray:
    """2x2 blocks -> one pixel (mean, or max for label images); odd edges dropped."""
    a = a[: a.shape[0] // 2 * 2, : a.shape[1] // 2 * 2]
    q = (a[0::2, 0::2], a[1::2, 0::2], a[0::2, 1::2], a[1::2, 1::2])
    if how == "max":
        return np.maximum(np.maximum(q[0], q[1]), np.maximum(q[2], q[3]))
    return (q[0] + q[1] + q[2] + q[3]) * 0.25


def nucleus_threshold(st: Stained) -> float:
    """The hematoxylin threshold segment() would choose for these stains."""
    return adaptive_threshold(smooth(st.h, 0.4 / st.mpp))
