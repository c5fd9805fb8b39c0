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


def stain_input(st: Stained) -> np.ndarray:
    """(3, H, W) float32: hematoxylin, eosin and residual concentrations, clipped to their useful range."""
    return _clipped(st.h, st.e, st.r).astype(np.float32)


def _clipped(h: np.ndarray, e: np.ndarray, r: np.ndarray) -> np.ndarray:
    """(..., 3, H, W): the three concentration maps stacked, each clipped to its useful range."""
    return np.stack([np.clip(h, -0.2, 3.0), np.clip(e, -0.2, 3.0), np.clip(r, -1.0, 1.0)], -3)


CAST_SHARE = 0.005  # the brightest share of pixels: the image's background (glass, lumen), for its colour cast
MAX_CAST_OD = 0.25  # the most optical density per channel taken for a cast (a tile with no glass: faint tissue)


def cast_od(st: Stained) -> np.ndarray:
    """The image's colour cast: the mean optical density (R, G, B) of its brightest pixels (``CAST_SHARE``: the glass
    or a lumen), each channel at most ``MAX_CAST_OD`` (a tile with no glass offers faint tissue)."""
    m = stains.stain_matrix(*st.vectors).astype(np.float32)
    step = 2 if st.h.size > 40_000 else 1
    c = np.stack([st.h[::step, ::step], st.e[::step, ::step], st.r[::step, ::step]], -1).reshape(-1, 3)
    od = c @ m
    total = od.sum(1)
    bright = od[total <= np.quantile(total, CAST_SHARE)]
    return np.clip(bright.mean(0), 0.0, MAX_CAST_OD).astype(np.float32) if len(bright) else np.zeros(3, np.float32)


def without_cast(st: Stained, cast=None) -> Stained:
    """``st`` with a colour cast taken from every pixel: ``cast`` (optical density per RGB channel; a slide measures it
    once for all its tiles), else the image's own (:func:`cast_od`). A white balance or a tinted background adds the
    same absorption everywhere; through fixed stain vectors it reads as a film of stain over the tissue (a blue cast
    as hematoxylin, 0.26 per pixel: the purple of mast-cell granules on every cell)."""
    od = cast_od(st) if cast is None else np.asarray(cast, np.float32)
    offset = (od @ np.linalg.inv(stains.stain_matrix(*st.vectors))).astype(np.float32)  # as concentrations of these vectors
    return Stained(st.h - offset[0], st.e - offset[1], st.r - offset[2], st.mpp, st.factor, st.vectors, st.estimated)


def in_basis(st: Stained, vectors) -> Stained:
    """The same absorption expressed in other (hematoxylin, eosin) vectors: exact, since optical density is linear in
    the concentrations (OD = C @ M for the stain matrix M). A net reads the image through fixed vectors this way:
    through the image's own, its input would jump with the estimate (a crop of one kind of tissue pulls Macenko's
    eosin towards it, and the estimate falls back to the standard vectors when it strays), and a net can learn the
    jump instead of the cells."""
    to = stains.stain_matrix(*vectors)
    m = (stains.stain_matrix(*st.vectors) @ np.linalg.inv(to)).astype(np.float32)  # C_new = C_own @ M_own @ M_new^-1
    h, e, r = ((st.h * m[0, k] + st.e * m[1, k] + st.r * m[2, k]) for k in range(3))
    return Stained(h, e, r, st.mpp, st.factor, (np.asarray(to[0]), np.asarray(to[1])), st.estimated)


# The stain vectors a net reads an image through: "reference" (fixed: Macenko's reference H&E, whatever the image,
# once its colour cast is taken out) or "image" (the image's own estimate; the nets before 2026-12-05). The image's
# own estimate jumps with what a crop holds: in sheets of purple tumour cells Macenko's "eosin" extreme is no eosin
# at all, and the estimate falls back to the standard vector. In real mast cell tumour that regime held 62% of the
# crops the crop net was trained on (tb0/tb1) and 14% of the CRC negatives, and the net learned it: 0.6-0.8 of a
# tumour crop's cells called mast cells in that regime, 0.02-0.2 outside it (vb0).
# "od" reads no stain vectors at all: the image's absorption per RGB channel (the nucleus finder since 2026-12-06; its
# training varies each stain's strength and hue instead, nucleinet._od_augmented). The image's own Macenko eosin falls
# back to the standard vector past 35 degrees, and a CRC image just past it (img18) lost 330 of its 345 nuclei to a
# finder reading that estimate.
BASES = ("reference", "image", "od")


def net_input(st: Stained, basis: str, cast=None) -> np.ndarray:
    """The (3, H, W) maps a net of this ``basis`` (``BASES``) reads (:func:`stain_input`); through fixed vectors after
    the colour cast (``cast``, else the image's own) is taken out."""
    if basis == "image":
        return stain_input(st)
    if basis == "od":
        return optical_density(st)
    if basis != "reference":
        raise ValueError(f"unknown stain basis {basis!r}")
    return stain_input(in_basis(without_cast(st, cast), stains.REFERENCE_HE))


def chroma_blurred(maps: np.ndarray, sigma_px: float) -> np.ndarray:
    """Reference-basis maps (``net_input``'s, (..., 3, H, W)) with their colour blurred by a Gaussian of ``sigma_px``
    and their brightness kept: the concentrations back to light through the reference vectors, its two colour
    differences (JPEG's Cb and Cr, up to scale) blurred, and split again. A PNG and a JPEG of the same slide, whose
    chroma the JPEG had already halved, then reach a net alike (most scanners save JPEG with its colour at half
    resolution, 4:2:0, which spreads a nucleus's hematoxylin over the cytoplasm around it, the purple of a mast cell's
    granules, while a lossless image keeps it sharp). Clipped as ``stain_input`` clips."""
    from scipy import ndimage as ndi

    m = stains.stain_matrix(*stains.REFERENCE_HE)
    inverse = np.linalg.inv(m)
    c = np.asarray(maps, np.float32)
    h, e, r = c[..., 0, :, :], c[..., 1, :, :], c[..., 2, :, :]
    # RGB transmission (pixel / 255, as od_lut's natural-log optical density reads it), plane by plane
    red, green, blue = (np.exp(-(h * np.float32(m[0, k]) + e * np.float32(m[1, k]) + r * np.float32(m[2, k])))
                        for k in range(3))
    y = np.float32(0.299) * red + np.float32(0.587) * green + np.float32(0.114) * blue
    sigma = (0,) * (y.ndim - 2) + (sigma_px, sigma_px)
    red = y + ndi.gaussian_filter(red - y, sigma, mode="nearest")
    blue = y + ndi.gaussian_filter(blue - y, sigma, mode="nearest")
    green = (y - np.float32(0.299) * red - np.float32(0.114) * blue) / np.float32(0.587)
    floor = np.float32(np.exp(-6.0))
    od = [-np.log(np.maximum(plane, floor)) for plane in (red, green, blue)]
    h, e, r = (od[0] * np.float32(inverse[0, j]) + od[1] * np.float32(inverse[1, j]) + od[2] * np.float32(inverse[2, j])
               for j in range(3))
    return _clipped(h, e, r)


def optical_density(st: Stained) -> np.ndarray:
    """(3, H, W) float32: the image's absorption (optical density per RGB channel) at the working scale, whatever
    vectors ``st`` was separated with (exact: OD = C @ M), clipped to its useful range."""
    m = stains.stain_matrix(*st.vectors).astype(np.float32)
    od = [st.h * m[0, k] + st.e * m[1, k] + st.r * m[2, k] for k in range(3)]
    return np.clip(np.stack(od), 0.0, 3.0).astype(np.float32)
