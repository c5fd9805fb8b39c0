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
  from the nucleus centre, in nucleus radii, and the symmetry of the
  cytoplasm around it (thinnest of 8 sectors over the thickest): eccentric
  in plasma cells, central in the "fried egg";
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
    "offset", "symmetry", "lobe_partner", "neighbours_20um",
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


def nucleus_threshold(st: Stained) -> float:
    """The hematoxylin threshold segment() would choose for these stains."""
    from scipy import ndimage as ndi

    return adaptive_threshold(ndi.gaussian_filter(st.h, 0.4 / st.mpp))


def separate_with(pixels: np.ndarray, mpp: float, vectors, estimated: bool = True) -> Stained:
    """Deconvolution with given (first, second) stain vectors at ~0.5 um/px; the second lands in ``e``."""
    od = stains.od_lut(pixels)
    factor = max(1, int(round(WORK_MPP / mpp))) if mpp < 0.75 * WORK_MPP else 1
    if factor > 1:
        hh, ww = (od.shape[0] // factor) * factor, (od.shape[1] // factor) * factor
        od = od[:hh, :ww].reshape(hh // factor, factor, ww // factor, factor, 3).mean(axis=(1, 3))
    matrix = stains.stain_matrix(*vectors)
    conc = od.reshape(-1, 3) @ np.linalg.inv(matrix).astype(np.float32)
    conc = conc.reshape(od.shape[0], od.shape[1], 3)
    vectors = (np.asarray(vectors[0]), np.asarray(vectors[1]))
    return Stained(conc[..., 0], conc[..., 1], conc[..., 2], mpp * factor, factor, vectors, estimated)


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
    hs = ndi.gaussian_filter(st.h, 0.4 * px)
    if threshold is None:
        threshold = adaptive_threshold(hs)
    mask = ndi.binary_opening(hs > threshold, iterations=1)
    # Seeds: difference of Gaussians at nucleus scale, local maxima at least ~3 um apart,
    # found on a half-resolution copy (nuclei are still 5+ pixels wide there; 4x less work).
    half = hs[: hs.shape[0] // 2 * 2, : hs.shape[1] // 2 * 2]
    half = half.reshape(half.shape[0] // 2, 2, half.shape[1] // 2, 2).mean(axis=(1, 3))
    hpx = px / 2
    blob = ndi.gaussian_filter(half, 1.2 * scale * hpx) - ndi.gaussian_filter(half, 3.0 * scale * hpx)
    footprint = max(3, int(round(3.0 * scale * hpx)) | 1)
    peak_mask = (blob == ndi.maximum_filter(blob, size=footprint)) & (blob > 0.01)
    plateau, n_peaks = ndi.label(peak_mask, structure=np.ones((3, 3)))  # flat tops give one seed each
    markers = np.zeros(hs.shape, np.int32)
    if n_peaks:
        centre = np.asarray(ndi.center_of_mass(peak_mask, plateau, range(1, n_peaks + 1)))
        rr = np.minimum(np.round(centre[:, 0] * 2 + 0.5).astype(int), hs.shape[0] - 1)
        cc = np.minimum(np.round(centre[:, 1] * 2 + 0.5).astype(int), hs.shape[1] - 1)
        keep = mask[rr, cc]
        markers[rr[keep], cc[keep]] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
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

    sample = hs[::2, ::2]
    values = sample[sample > 0.08]
    if values.size < 100:
        return 0.3
    return float(max(0.18, min(threshold_otsu(values), 0.6)))


def _renumber(labels: np.ndarray) -> tuple[np.ndarray, int]:
    present = np.bincount(labels.ravel()) > 0
    present[0] = False
    lut = np.zeros(len(present), np.int32)
    lut[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    return lut[labels], int(present.sum())


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
    area_px = np.bincount(flat, minlength=count + 1)[1:].astype(np.float64)
    area_um2 = area_px * um * um
    # Second moments -> axes.
    cx, cy = nuc.xy[:, 0] - 0.5, nuc.xy[:, 1] - 0.5
    inside = flat > 0
    lab_in = flat[inside]
    in_rows, in_cols = np.divmod(np.flatnonzero(inside), labels.shape[1])
    dx = in_cols - cx[lab_in - 1]
    dy = in_rows - cy[lab_in - 1]
    mxx = np.bincount(lab_in, weights=dx * dx, minlength=count + 1)[1:] / area_px
    myy = np.bincount(lab_in, weights=dy * dy, minlength=count + 1)[1:] / area_px
    mxy = np.bincount(lab_in, weights=dx * dy, minlength=count + 1)[1:] / area_px
    common = np.sqrt(((mxx - myy) / 2) ** 2 + mxy**2)
    lam1, lam2 = (mxx + myy) / 2 + common, np.maximum((mxx + myy) / 2 - common, 1e-6)
    elongation = np.sqrt(lam1 / lam2)
    # Perimeter: nucleus pixels with a 4-neighbour outside the nucleus.
    edge = np.zeros(labels.shape, bool)  # a 4-neighbour with another label (or background)
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    perim = np.bincount(flat[edge.ravel() & inside], minlength=count + 1)[1:].astype(np.float64) * 1.1 + 1
    roundness = np.clip(4 * math.pi * area_px / perim**2, 0, 1.5)
    hv = st.h.ravel()[inside]
    h_mean = np.bincount(lab_in, weights=hv, minlength=count + 1)[1:] / area_px
    h_std = np.sqrt(np.maximum(np.bincount(lab_in, weights=hv * hv, minlength=count + 1)[1:] / area_px - h_mean**2, 0))

    # Rings: distance to the nearest nucleus pixel, and which nucleus that is; all band
    # statistics in one pass per channel, indexed by (nucleus, band).
    dist, (ir, ic) = ndi.distance_transform_edt(labels == 0, return_indices=True)
    owner = labels[ir, ic].ravel()
    d_um = dist.ravel() * um
    bands = ((0.3, 2.5), (2.5, 5.0), (6.0, 9.0), (4.0, 7.0))  # ring1, ring2, stroma, cell edge
    grad = np.zeros_like(st.e)
    grad[1:-1] += np.abs(st.e[2:] - st.e[:-2]) / 2
    grad[:, 1:-1] += np.abs(st.e[:, 2:] - st.e[:, :-2]) / 2
    nb = len(bands) + 1
    band_of = np.zeros(d_um.shape, np.int64)
    for k, (lo, hi) in enumerate(bands[:3], start=1):
        band_of[(d_um > lo) & (d_um <= hi)] = k
    sel = (band_of > 0) & (owner > 0)
    index = owner[sel] * nb + band_of[sel]
    size = (count + 1) * nb
    n = np.bincount(index, minlength=size).astype(np.float64)
    stats = {}
    for name, values in (("e", st.e.ravel()[sel]), ("h", st.h.ravel()[sel]), ("r", st.r.ravel()[sel])):
        stats[name] = np.bincount(index, weights=values, minlength=size)
        if name == "e":
            stats["e2"] = np.bincount(index, weights=values * values, minlength=size)
    edge_sel = (d_um > bands[3][0]) & (d_um <= bands[3][1]) & (owner > 0)
    edge_n = np.bincount(owner[edge_sel], minlength=count + 1)[1:]
    edge_g = np.bincount(owner[edge_sel], weights=grad.ravel()[edge_sel], minlength=count + 1)[1:]
    border_grad = np.where(edge_n > 0, edge_g / np.maximum(edge_n, 1), np.nan)
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k, name in enumerate(("ring1", "ring2", "stroma"), start=1):
            cnt = n.reshape(count + 1, nb)[1:, k]
            mean = lambda key: np.where(cnt > 0, stats[key].reshape(count + 1, nb)[1:, k] / np.maximum(cnt, 1), np.nan)  # noqa: E731
            out[name + "_e"], out[name + "_h"], out[name + "_r"] = mean("e"), mean("h"), mean("r")
            out[name + "_e_std"] = np.sqrt(np.maximum(mean("e2") - out[name + "_e"] ** 2, 0))
    # Where the nucleus sits in its cell: centre of the cytoplasm-like ring pixels.
    cyto = np.flatnonzero((d_um > 0.3) & (d_um <= 6.0) & (owner > 0))
    cyto_owner = owner[cyto]
    stroma_level = np.nan_to_num(out["stroma_e"], nan=0.3)[cyto_owner - 1]
    weight = np.clip(st.e.ravel()[cyto] + 1.5 * st.h.ravel()[cyto] - stroma_level, 0, None)
    wsum = np.bincount(cyto_owner, weights=weight, minlength=count + 1)[1:] + 1e-6
    cyto_rows, cyto_cols = np.divmod(cyto, labels.shape[1])
    wx = np.bincount(cyto_owner, weights=weight * (cyto_cols + 0.5), minlength=count + 1)[1:] / wsum
    wy = np.bincount(cyto_owner, weights=weight * (cyto_rows + 0.5), minlength=count + 1)[1:] / wsum
    # Symmetry: the thinnest of 8 sectors of cytoplasm over the thickest (1 for a fried egg).
    sector = ((np.arctan2(cyto_rows + 0.5 - nuc.xy[cyto_owner - 1, 1], cyto_cols + 0.5 - nuc.xy[cyto_owner - 1, 0]) + math.pi)
              / (2 * math.pi) * 8).astype(np.int64) % 8
    sec_index = cyto_owner * 8 + sector
    sec_sum = np.bincount(sec_index, weights=weight, minlength=(count + 1) * 8).reshape(count + 1, 8)[1:]
    sec_n = np.bincount(sec_index, minlength=(count + 1) * 8).reshape(count + 1, 8)[1:]
    sec_mean = sec_sum / np.maximum(sec_n, 1)
    symmetry = sec_mean.min(axis=1) / (sec_mean.max(axis=1) + 1e-3)
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
        "border_grad": border_grad, "offset": offset, "symmetry": symmetry, "lobe_partner": lobe, "neighbours_20um": neighbours,
    }
    matrix = np.column_stack([columns[n] for n in FEATURE_NAMES]).astype(np.float32)
    return np.nan_to_num(matrix, nan=0.0, posinf=0.0, neginf=0.0)
