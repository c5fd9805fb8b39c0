"""Stain separation, nucleus segmentation and per-nucleus features for the morphology detector.

Everything runs at a working scale of about 0.5 um/px (finer images are
averaged down in optical density, which is linear), and every size is given
in micrometres, so the same thresholds serve 20x and 40x scans.

Per nucleus (one row of :class:`Features`), following the criteria of
docs/domain.md:

- nucleus: area (um^2), elongation (major/minor axis), roundness
  (4 pi area / perimeter^2), hematoxylin density and texture (std);
- cytoplasm rings around the nucleus border (0.5-2.5 um, 2.5-5 um) and the
  stroma beyond (6-9 um): eosin, hematoxylin (the purple of mast-cell
  granules) and the stain residual (orange-red eosinophil granules), their
  granularity (std), contrast of the cytoplasm to the stroma, and border
  sharpness (eosin gradient at the cell's edge);
- where the nucleus sits in its cell: the offset of the cytoplasm's centre
  from the nucleus centre, in nucleus radii (eccentric in plasma cells);
- bilobation: another small nucleus closer than 5 um;
- neighbourhood: nuclei within 20 um.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mastctl import stains

WORK_MPP = 0.5

FEATURE_NAMES = (
    "area_um2", "elongation", "roundness", "h_mean", "h_std",
    "ring1_e", "ring1_h", "ring1_r", "ring1_e_std",
    "ring2_e", "ring2_h", "ring2_r", "ring2_e_std",
    "stroma_e", "stroma_h", "contrast1", "contrast2", "border_grad",
    "offset", "lobe_partner", "neighbours_20um",
)


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


def separate(pixels: np.ndarray, mpp: float) -> Stained:
    """Macenko vectors (standard ones on near-empty tissue), then deconvolution at ~0.5 um/px."""
    estimate = stains.estimate_he(pixels)
    if estimate is not None and stains.angle_deg(estimate[1], stains.EOSIN) > 35:
        estimate = (estimate[0], stains.unit(stains.EOSIN))  # eosin pulled by other pigments: keep its standard
    vectors = estimate or (stains.unit(stains.HEMATOXYLIN), stains.unit(stains.EOSIN))
    od = stains.od_lut(pixels)
    factor = max(1, int(round(WORK_MPP / mpp))) if mpp < 0.75 * WORK_MPP else 1
    if factor > 1:
        hh, ww = (od.shape[0] // factor) * factor, (od.shape[1] // factor) * factor
        od = od[:hh, :ww].reshape(hh // factor, factor, ww // factor, factor, 3).mean(axis=(1, 3))
    matrix = stains.stain_matrix(*vectors)
    conc = od.reshape(-1, 3) @ np.linalg.inv(matrix).astype(np.float32)
    conc = conc.reshape(od.shape[0], od.shape[1], 3)
    return Stained(conc[..., 0], conc[..., 1], conc[..., 2], mpp * factor, factor, vectors, estimate is not None)


@dataclass
class Nuclei:
    labels: np.ndarray  # int32 label image at the working scale, 0 = background
    count: int
    xy: np.ndarray  # (count, 2) centroids in working pixels (continuous coordinates)


def segment(st: Stained, min_area_um2: float = 9.0, threshold: float | None = None) -> Nuclei:
    """Nuclei: smoothed hematoxylin above an adaptive threshold, split by seeded watershed."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    px = 1.0 / st.mpp  # pixels per um
    hs = ndi.gaussian_filter(st.h, 0.4 * px)
    if threshold is None:
        threshold = adaptive_threshold(hs)
    mask = hs > threshold
    mask = ndi.binary_opening(mask, iterations=1)
    mask = ndi.binary_fill_holes(mask)
    # Seeds: scale-normalised blob response at nucleus scale, local maxima at least ~3 um apart.
    sigma = 1.8 * px
    blob = -(sigma**2) * ndi.gaussian_laplace(hs, sigma)
    footprint = max(3, int(round(3.0 * px)) | 1)
    peaks = (blob == ndi.maximum_filter(blob, size=footprint)) & mask & (blob > 0.02)
    markers, n = ndi.label(peaks)
    labels = watershed(-hs, markers, mask=mask).astype(np.int32)
    # Drop fragments too small to be nuclei, then renumber.
    sizes = np.bincount(labels.ravel())
    small = sizes < min_area_um2 * px * px
    small[0] = False
    labels[small[labels]] = 0
    labels, count = _renumber(labels)
    xy = centroids(labels, count)
    return Nuclei(labels, count, xy)


def adaptive_threshold(hs: np.ndarray) -> float:
    """Otsu between nuclei and the rest, over pixels with some hematoxylin; never below 0.18 OD."""
    from skimage.filters import threshold_otsu

    values = hs[hs > 0.08]
    if values.size < 100:
        return 0.3
    return float(max(0.18, min(threshold_otsu(values), 0.6)))


def _renumber(labels: np.ndarray) -> tuple[np.ndarray, int]:
    present = np.unique(labels)
    present = present[present > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[present] = np.arange(1, len(present) + 1, dtype=np.int32)
    return lut[labels], len(present)


def centroids(labels: np.ndarray, count: int) -> np.ndarray:
    if count == 0:
        return np.zeros((0, 2))
    rows, cols = np.indices(labels.shape)
    flat = labels.ravel()
    n = np.bincount(flat, minlength=count + 1)[1:].astype(np.float64)
    cx = np.bincount(flat, weights=cols.ravel(), minlength=count + 1)[1:] / n + 0.5
    cy = np.bincount(flat, weights=rows.ravel(), minlength=count + 1)[1:] / n + 0.5
    return np.column_stack([cx, cy])


def _means(flat_labels, values, count, mask=None):
    """Per-label mean and std of ``values`` over pixels (optionally only where ``mask``)."""
    lab = flat_labels if mask is None else np.where(mask, flat_labels, 0)
    v = values.ravel()
    n = np.bincount(lab, minlength=count + 1)[1:].astype(np.float64)
    s = np.bincount(lab, weights=v, minlength=count + 1)[1:]
    s2 = np.bincount(lab, weights=v * v, minlength=count + 1)[1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, s / np.maximum(n, 1), np.nan)
        std = np.sqrt(np.maximum(s2 / np.maximum(n, 1) - mean**2, 0))
    return mean, np.where(n > 0, std, np.nan), n


def features(st: Stained, nuc: Nuclei) -> np.ndarray:
    """The (count x len(FEATURE_NAMES)) feature matrix, NaN-free."""
    from scipy import ndimage as ndi
    from scipy.spatial import cKDTree

    count = nuc.count
    if count == 0:
        return np.zeros((0, len(FEATURE_NAMES)), np.float32)
    um = st.mpp
    labels = nuc.labels
    flat = labels.ravel()
    rows, cols = np.indices(labels.shape)
    area_px = np.bincount(flat, minlength=count + 1)[1:].astype(np.float64)
    area_um2 = area_px * um * um
    # Second moments -> axes.
    cx, cy = nuc.xy[:, 0] - 0.5, nuc.xy[:, 1] - 0.5
    dx = cols.ravel() - cx[np.maximum(flat - 1, 0)]
    dy = rows.ravel() - cy[np.maximum(flat - 1, 0)]
    inside = flat > 0
    mxx = np.bincount(flat[inside], weights=(dx * dx)[inside], minlength=count + 1)[1:] / area_px
    myy = np.bincount(flat[inside], weights=(dy * dy)[inside], minlength=count + 1)[1:] / area_px
    mxy = np.bincount(flat[inside], weights=(dx * dy)[inside], minlength=count + 1)[1:] / area_px
    common = np.sqrt(((mxx - myy) / 2) ** 2 + mxy**2)
    lam1, lam2 = (mxx + myy) / 2 + common, np.maximum((mxx + myy) / 2 - common, 1e-6)
    elongation = np.sqrt(lam1 / lam2)
    # Perimeter: nucleus pixels with a 4-neighbour outside the nucleus.
    edge = labels != ndi.grey_erosion(labels, footprint=[[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    perim = np.bincount(flat[edge.ravel() & inside], minlength=count + 1)[1:].astype(np.float64) * 1.1 + 1
    roundness = np.clip(4 * math.pi * area_px / perim**2, 0, 1.5)
    h_mean, h_std, _ = _means(flat, st.h, count)

    # Rings: distance to the nearest nucleus pixel, and which nucleus that is.
    dist, (ir, ic) = ndi.distance_transform_edt(labels == 0, return_indices=True)
    owner = labels[ir, ic].ravel()
    d_um = dist.ravel() * um
    grad = np.hypot(ndi.sobel(st.e, 0), ndi.sobel(st.e, 1)) / 8.0
    out = {}
    for name, lo, hi in (("ring1", 0.3, 2.5), ("ring2", 2.5, 5.0), ("stroma", 6.0, 9.0)):
        band = (d_um > lo) & (d_um <= hi)
        out[name + "_e"], out[name + "_e_std"], _ = _means(owner, st.e, count, band)
        out[name + "_h"], _, _ = _means(owner, st.h, count, band)
        out[name + "_r"], _, _ = _means(owner, st.r, count, band)
    edge_band = (d_um > 4.0) & (d_um <= 7.0)
    border_grad, _, _ = _means(owner, grad, count, edge_band)
    # Where the nucleus sits in its cell: centre of the cytoplasm-like ring pixels.
    cyto = (d_um > 0.3) & (d_um <= 6.0)
    stroma_level = np.nan_to_num(out["stroma_e"], nan=0.3)[np.maximum(owner - 1, 0)]
    weight = np.clip(st.e.ravel() + 1.5 * st.h.ravel() - stroma_level, 0, None) * cyto
    wsum = np.bincount(owner, weights=weight, minlength=count + 1)[1:] + 1e-6
    wx = np.bincount(owner, weights=weight * (cols.ravel() + 0.5), minlength=count + 1)[1:] / wsum
    wy = np.bincount(owner, weights=weight * (rows.ravel() + 0.5), minlength=count + 1)[1:] / wsum
    radius_px = np.sqrt(area_px / math.pi)
    offset = np.hypot(wx - nuc.xy[:, 0], wy - nuc.xy[:, 1]) / radius_px
    offset = np.where(wsum > 1e-3, offset, 0.0)

    tree = cKDTree(nuc.xy * um)
    pairs = tree.query_pairs(5.0, output_type="ndarray")
    lobe = np.zeros(count)
    small = area_um2 < 22
    for a, b in pairs:
        if small[a] and small[b]:
            lobe[a] = lobe[b] = 1.0
    neighbours = np.array([len(n) - 1 for n in tree.query_ball_point(nuc.xy * um, 20.0)], dtype=np.float64)

    contrast1 = out["ring1_e"] + out["ring1_h"] - out["stroma_e"] - out["stroma_h"]
    contrast2 = out["ring2_e"] + out["ring2_h"] - out["stroma_e"] - out["stroma_h"]
    columns = {
        "area_um2": area_um2, "elongation": elongation, "roundness": roundness, "h_mean": h_mean, "h_std": h_std,
        "ring1_e": out["ring1_e"], "ring1_h": out["ring1_h"], "ring1_r": out["ring1_r"], "ring1_e_std": out["ring1_e_std"],
        "ring2_e": out["ring2_e"], "ring2_h": out["ring2_h"], "ring2_r": out["ring2_r"], "ring2_e_std": out["ring2_e_std"],
        "stroma_e": out["stroma_e"], "stroma_h": out["stroma_h"], "contrast1": contrast1, "contrast2": contrast2,
        "border_grad": border_grad, "offset": offset, "lobe_partner": lobe, "neighbours_20um": neighbours,
    }
    matrix = np.column_stack([columns[n] for n in FEATURE_NAMES]).astype(np.float32)
    return np.nan_to_num(matrix, nan=0.0, posinf=0.0, neginf=0.0)
