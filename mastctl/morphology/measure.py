"""Per-nucleus features of the morphology detector, following the criteria of docs/domain.md.

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
- neighbourhood: nuclei within 20 um; the nearest one's distance, and
  whether it lies on the thin side of the cytoplasm (crowded mast cells look
  one-sided without being plasma cells).
"""
from __future__ import annotations

import math

import numpy as np

from mastctl.morphology.segment import Nuclei, pool2
from mastctl.morphology.stain import Stained

FEATURE_NAMES = (
    "area_um2", "elongation", "roundness", "h_mean", "h_std",
    "ring1_e", "ring1_h", "ring1_r", "ring1_e_std",
    "ring2_e", "ring2_h", "ring2_r", "ring2_e_std",
    "stroma_e", "stroma_h", "contrast1", "contrast2", "border_grad",
    "offset", "symmetry", "lobe_partner", "neighbours_20um", "nearest_um", "thin_side_neighbour",
)


def features(st: Stained, nuc: Nuclei) -> np.ndarray:
    """The (count x len(FEATURE_NAMES)) feature matrix, NaN-free.

    Nucleus size, shape and hematoxylin come from the working scale; what lies
    around the nucleus (rings, stroma, where the cytoplasm sits) from a 2x
    coarser copy (~1 um/px), which is plenty for bands 2-3 um wide and 4x cheaper.
    """
    count = nuc.count
    if count == 0:
        return np.zeros((0, len(FEATURE_NAMES)), np.float32)
    columns = _nucleus_columns(st, nuc)
    columns.update(_surround_columns(st, nuc, columns["area_um2"]))
    matrix = np.column_stack([columns[n] for n in FEATURE_NAMES]).astype(np.float32)
    return np.nan_to_num(matrix, nan=0.0, posinf=0.0, neginf=0.0)


def _nucleus_columns(st: Stained, nuc: Nuclei) -> dict[str, np.ndarray]:
    """Size, shape, hematoxylin density and texture of each nucleus; bilobation and neighbours."""
    from scipy.spatial import cKDTree

    count, um, labels = nuc.count, st.mpp, nuc.labels
    inside = np.flatnonzero(labels)
    lab_in = labels.ravel()[inside]
    area_px = np.bincount(lab_in, minlength=count + 1)[1:].astype(np.float64)
    area_um2 = area_px * um * um
    # Second moments -> axes.
    in_rows, in_cols = np.divmod(inside, labels.shape[1])
    dx = in_cols - (nuc.xy[:, 0] - 0.5)[lab_in - 1]
    dy = in_rows - (nuc.xy[:, 1] - 0.5)[lab_in - 1]
    mxx = np.bincount(lab_in, weights=dx * dx, minlength=count + 1)[1:] / area_px
    myy = np.bincount(lab_in, weights=dy * dy, minlength=count + 1)[1:] / area_px
    mxy = np.bincount(lab_in, weights=dx * dy, minlength=count + 1)[1:] / area_px
    common = np.sqrt(((mxx - myy) / 2) ** 2 + mxy**2)
    lam1, lam2 = (mxx + myy) / 2 + common, np.maximum((mxx + myy) / 2 - common, 1e-6)
    # Perimeter: nucleus pixels with a 4-neighbour of another label (or background).
    padded = np.pad(labels, 1)
    lab_at = padded.ravel()
    width = labels.shape[1] + 2
    at = (in_rows + 1) * width + in_cols + 1
    edge = ((lab_at[at - 1] != lab_in) | (lab_at[at + 1] != lab_in)
            | (lab_at[at - width] != lab_in) | (lab_at[at + width] != lab_in))
    perim = np.bincount(lab_in[edge], minlength=count + 1)[1:].astype(np.float64) * 1.1 + 1
    hv = st.h.ravel()[inside]
    h_mean = np.bincount(lab_in, weights=hv, minlength=count + 1)[1:] / area_px
    h_std = np.sqrt(np.maximum(np.bincount(lab_in, weights=hv * hv, minlength=count + 1)[1:] / area_px - h_mean**2, 0))

    tree = cKDTree(nuc.xy * um)
    lobe = np.zeros(count)
    small = area_um2 < 22
    for a, b in tree.query_pairs(5.0, output_type="ndarray"):
        if small[a] and small[b]:
            lobe[a] = lobe[b] = 1.0
    neighbours = np.array([len(n) - 1 for n in tree.query_ball_point(nuc.xy * um, 20.0)], dtype=np.float64)
    return {"area_um2": area_um2, "elongation": np.sqrt(lam1 / lam2),
            "roundness": np.clip(4 * math.pi * area_px / perim**2, 0, 1.5), "h_mean": h_mean, "h_std": h_std,
            "lobe_partner": lobe, "neighbours_20um": neighbours}


def _surround_columns(st: Stained, nuc: Nuclei, area_um2: np.ndarray) -> dict[str, np.ndarray]:
    """Rings, stroma, border sharpness, and where the cytoplasm sits around each nucleus (at ~1 um/px)."""
    from scipy import ndimage as ndi

    count = nuc.count
    labels = pool2(nuc.labels, "max")  # a coarse pixel touching a nucleus is nucleus: rings stay clean
    e, h, r = pool2(st.e), pool2(st.h), pool2(st.r)
    um = 2 * st.mpp
    # Distance to the nearest nucleus pixel, and which nucleus that is; all band statistics
    # in one pass per channel, indexed by (nucleus, band).
    dist, (ir, ic) = ndi.distance_transform_edt(labels == 0, return_indices=True)
    owner = labels[ir, ic].ravel()
    d_um = dist.ravel() * um - 0.5 * um  # from the coarse pixel's centre to the nucleus's edge
    bands = ((0.3, 2.5), (2.5, 5.0), (6.0, 9.0))  # ring1, ring2, stroma
    nb = len(bands) + 1
    band_of = np.zeros(d_um.shape, np.int64)
    for k, (lo, hi) in enumerate(bands, start=1):
        band_of[(d_um > lo) & (d_um <= hi)] = k
    sel = np.flatnonzero(band_of)
    index = owner[sel] * nb + band_of[sel]
    size = (count + 1) * nb
    n = np.bincount(index, minlength=size).reshape(count + 1, nb)[1:]
    ev = e.ravel()[sel]
    sums = {"e": np.bincount(index, weights=ev, minlength=size), "e2": np.bincount(index, weights=ev * ev, minlength=size),
            "h": np.bincount(index, weights=h.ravel()[sel], minlength=size),
            "r": np.bincount(index, weights=r.ravel()[sel], minlength=size)}
    out = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for k, name in enumerate(("ring1", "ring2", "stroma"), start=1):
            cnt = n[:, k]
            mean = {key: np.where(cnt > 0, v.reshape(count + 1, nb)[1:, k] / np.maximum(cnt, 1), np.nan) for key, v in sums.items()}
            out[name + "_e"], out[name + "_h"], out[name + "_r"] = mean["e"], mean["h"], mean["r"]
            out[name + "_e_std"] = np.sqrt(np.maximum(mean["e2"] - mean["e"] ** 2, 0))
    # Border sharpness: the eosin gradient where the cell's edge usually is (4-7 um out).
    grad = np.zeros_like(e)
    grad[1:-1] += np.abs(e[2:] - e[:-2]) / 2
    grad[:, 1:-1] += np.abs(e[:, 2:] - e[:, :-2]) / 2
    edge = np.flatnonzero((d_um > 4.0) & (d_um <= 7.0))
    edge_n = np.bincount(owner[edge], minlength=count + 1)[1:]
    edge_g = np.bincount(owner[edge], weights=grad.ravel()[edge], minlength=count + 1)[1:]
    out["border_grad"] = np.where(edge_n > 0, edge_g / np.maximum(edge_n, 1), np.nan)
    # Where the nucleus sits in its cell: centre of the cytoplasm-like ring pixels.
    cyto = np.flatnonzero((d_um > 0.3) & (d_um <= 6.0))
    cyto_owner = owner[cyto]
    stroma_level = np.nan_to_num(out["stroma_e"], nan=0.3)[cyto_owner - 1]
    weight = np.clip(e.ravel()[cyto] + 1.5 * h.ravel()[cyto] - stroma_level, 0, None)
    wsum = np.bincount(cyto_owner, weights=weight, minlength=count + 1)[1:] + 1e-6
    cyto_rows, cyto_cols = np.divmod(cyto, labels.shape[1])
    # coarse pixel (i, j) covers working pixels 2i..2i+2: its centre is at 2i + 1
    px, py = 2.0 * cyto_cols + 1.0, 2.0 * cyto_rows + 1.0
    wx = np.bincount(cyto_owner, weights=weight * px, minlength=count + 1)[1:] / wsum
    wy = np.bincount(cyto_owner, weights=weight * py, minlength=count + 1)[1:] / wsum
    # Symmetry: the thinnest of 8 sectors of cytoplasm over the thickest (1 for a fried egg).
    centre = nuc.xy[cyto_owner - 1]
    sector = ((np.arctan2(py - centre[:, 1], px - centre[:, 0]) + math.pi) / (2 * math.pi) * 8).astype(np.int64) % 8
    sec_index = cyto_owner * 8 + sector
    sec_sum = np.bincount(sec_index, weights=weight, minlength=(count + 1) * 8).reshape(count + 1, 8)[1:]
    sec_n = np.bincount(sec_index, minlength=(count + 1) * 8).reshape(count + 1, 8)[1:]
    sec_mean = sec_sum / np.maximum(sec_n, 1)
    out["symmetry"] = sec_mean.min(axis=1) / (sec_mean.max(axis=1) + 1e-3)
    radius_px = np.sqrt(area_um2 / math.pi) / st.mpp
    out["offset"] = np.where(wsum > 1e-3, np.hypot(wx - nuc.xy[:, 0], wy - nuc.xy[:, 1]) / radius_px, 0.0)
    # Crowding explains a one-sided cytoplasm: is the nearest nucleus on the thin side?
    # (cosine between the direction to it and the direction to the cytoplasm's centre: -1 if so)
    out["nearest_um"], out["thin_side_neighbour"] = _nearest_neighbour(nuc.xy, st.mpp, wx - nuc.xy[:, 0], wy - nuc.xy[:, 1])
    out["contrast1"] = out["ring1_e"] + out["ring1_h"] - out["stroma_e"] - out["stroma_h"]
    out["contrast2"] = out["ring2_e"] + out["ring2_h"] - out["stroma_e"] - out["stroma_h"]
    return out


def _nearest_neighbour(xy: np.ndarray, um_per_px: float, off_x: np.ndarray, off_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (um, capped at 30) to the nearest other nucleus, and the cosine between the way to it and ``off``."""
    from scipy.spatial import cKDTree

    if len(xy) < 2:
        return np.full(len(xy), 30.0), np.zeros(len(xy))
    d, j = cKDTree(xy).query(xy, k=2)
    to = xy[j[:, 1]] - xy
    norm = np.hypot(to[:, 0], to[:, 1]) * np.hypot(off_x, off_y)
    cosine = np.where(norm > 1e-9, (to[:, 0] * off_x + to[:, 1] * off_y) / np.maximum(norm, 1e-9), 0.0)
    return np.minimum(d[:, 1] * um_per_px, 30.0), cosine
