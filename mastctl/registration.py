"""Registration of an H&E section with its IHC partner (consecutive or restained).

Both images are reduced to their hematoxylin (nuclear) channel — the one
stain they share — on a common grid in micrometres. Then:

1. coarse: rotations over ``max_rotation_deg`` each matched by phase
   correlation (a translation for every angle, the strongest peak wins), then
   refined around the best angle;
2. fine: rigid, then affine, refinement by maximising the normalised cross
   correlation (NCC) of the two channels (Powell's method).

The result maps H&E pixels to IHC pixels (``matrix``: 2 x 3, like the
synthetic tiles' truth). The quality score is the NCC after registration over
the overlap; a pair whose best NCC stays low, or which barely overlaps, is
refused with a clear message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mastctl import stains
from mastctl.errors import InputError

MIN_NCC = 0.35  # unrelated tissue reaches about 0.25; real pairs here 0.65-0.99
MIN_OVERLAP = 0.2


@dataclass
class Registration:
    matrix: np.ndarray  # 2 x 3: H&E pixel (x, y, 1) -> IHC pixel (x, y)
    ncc_before: float
    ncc: float  # after, over the overlap: the quality score
    overlap: float  # fraction of the H&E image that falls inside the IHC image
    rotation_deg: float
    grid_um: float

    def he_to_ihc(self, xy) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return xy @ self.matrix[:, :2].T + self.matrix[:, 2]

    def ihc_to_he(self, xy) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        inv = np.linalg.inv(self.matrix[:, :2])
        return (xy - self.matrix[:, 2]) @ inv.T

    def to_dict(self) -> dict:
        return {
            "matrix": [[round(float(v), 8) for v in row] for row in self.matrix],
            "maps": "H&E pixel (x, y, 1) -> IHC pixel (x, y)",
            "rotation_deg": round(self.rotation_deg, 3),
            "quality_ncc": round(self.ncc, 4),
            "ncc_before": round(self.ncc_before, 4),
            "overlap": round(self.overlap, 4),
            "grid_um": self.grid_um,
        }


def nuclear_channel(pixels: np.ndarray, second=stains.EOSIN) -> np.ndarray:
    """Hematoxylin concentration with the image's own vectors (standard ones as fallback)."""
    est = stains.estimate_he(pixels) if second is stains.EOSIN else estimate_h_dab(pixels)
    vectors = est if est is not None else (stains.HEMATOXYLIN, second)
    return stains.separate(pixels, vectors)[..., 0]


def estimate_h_dab(pixels: np.ndarray):
    """Hematoxylin and DAB vectors of an IHC image (Macenko), or None to use the standard ones."""
    est = stains.estimate_he(pixels)  # the two extreme directions; the bluer-absorbing one is DAB
    if est is None:
        return None
    a, b = est
    dab, hema = (a, b) if a[2] / a[0] > b[2] / b[0] else (b, a)
    if stains.angle_deg(hema, stains.HEMATOXYLIN) > 30 or stains.angle_deg(dab, stains.DAB) > 30:
        return None
    return hema, dab


def resample(channel: np.ndarray, mpp: float, grid_um: float) -> np.ndarray:
    """The channel on a grid of ``grid_um`` micrometres per pixel (area average when shrinking)."""
    from scipy import ndimage as ndi

    zoom = mpp / grid_um
    if abs(zoom - 1) < 1e-6:
        return channel.astype(np.float32)
    if zoom < 1:
        channel = ndi.gaussian_filter(channel, 0.5 / zoom)
    return ndi.zoom(channel, zoom, order=1).astype(np.float32)


def _phase_correlation(a: np.ndarray, b: np.ndarray) -> tuple[float, np.ndarray]:
    """(peak strength, shift s) with a(p) ~ b(p - s); images of equal shape."""
    win = np.outer(np.hanning(a.shape[0]), np.hanning(a.shape[1])).astype(np.float32)
    fa = np.fft.rfft2((a - a.mean()) * win)
    fb = np.fft.rfft2((b - b.mean()) * win)
    r = fa * np.conj(fb)
    r /= np.abs(r) + 1e-9
    corr = np.fft.irfft2(r, s=a.shape)
    corr = np.fft.fftshift(corr)
    idx = np.unravel_index(int(np.argmax(corr)), corr.shape)
    shift = np.array([idx[1] - a.shape[1] // 2, idx[0] - a.shape[0] // 2], dtype=np.float64)  # (x, y)
    return float(corr[idx]), shift


def _warp(moving: np.ndarray, A: np.ndarray, t: np.ndarray, shape) -> tuple[np.ndarray, np.ndarray]:
    """moving sampled at A @ p + t for every fixed-grid pixel centre p; and the inside mask."""
    from scipy.ndimage import map_coordinates

    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float64) + 0.5
    mx = A[0, 0] * xx + A[0, 1] * yy + t[0]
    my = A[1, 0] * xx + A[1, 1] * yy + t[1]
    inside = (mx >= 0) & (mx < moving.shape[1]) & (my >= 0) & (my < moving.shape[0])
    warped = map_coordinates(moving, [my - 0.5, mx - 0.5], order=1, mode="constant", cval=0.0)
    return warped.astype(np.float32), inside


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    if mask.sum() < 50:
        return -1.0
    x, y = a[mask], b[mask]
    x = x - x.mean()
    y = y - y.mean()
    denom = math.sqrt(float((x * x).sum() * (y * y).sum())) + 1e-12
    return float((x * y).sum() / denom)


def _rot(theta: float) -> np.ndarray:
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def register(
    he: np.ndarray,
    ihc: np.ndarray,
    mpp_he: float,
    mpp_ihc: float,
    *,
    max_rotation_deg: float = 180.0,
    affine: bool = True,
    fine_grid_um: float | None = None,
) -> Registration:
    """Register H&E pixels onto IHC pixels; InputError when the pair does not overlap."""
    from scipy import ndimage as ndi
    from scipy.optimize import minimize

    h_fixed = nuclear_channel(he)
    h_moving = nuclear_channel(ihc, second=stains.DAB)
    extent_um = max(he.shape[0] * mpp_he, he.shape[1] * mpp_he, ihc.shape[0] * mpp_ihc, ihc.shape[1] * mpp_ihc)
    coarse_um = max(mpp_he, mpp_ihc, extent_um / 256.0)
    # Coarse: the tissue as a whole (all stains' optical density): sections of different stains
    # share their outline and architecture more than any one channel.
    fixed = ndi.gaussian_filter(resample(stains.od_lut(he).sum(axis=2), mpp_he, coarse_um), 1.0)
    moving = ndi.gaussian_filter(resample(stains.od_lut(ihc).sum(axis=2), mpp_ihc, coarse_um), 1.0)
    if h_fixed.std() < 1e-3 or h_moving.std() < 1e-3 or fixed.std() < 1e-3 or moving.std() < 1e-3:
        raise InputError("an image of the pair holds no tissue (no hematoxylin signal) to register on")

    c_f = np.array([fixed.shape[1], fixed.shape[0]]) / 2.0
    c_m = np.array([moving.shape[1], moving.shape[0]]) / 2.0

    def coarse_at(theta: float):
        A = _rot(theta)
        t0 = c_m - A @ c_f
        warped, inside = _warp(moving, A, t0, fixed.shape)
        peak, s = _phase_correlation(fixed, warped)
        return peak, A, t0 - A @ s  # fixed(p) ~ warped(p - s) = moving(A (p - s) + t0)

    step = 3.0 if max_rotation_deg > 10 else 1.0
    angles = np.deg2rad(np.arange(-max_rotation_deg, max_rotation_deg + 1e-9, step))
    scored = sorted((coarse_at(a) + (a,) for a in angles), key=lambda r: -r[0])
    # A few distinct candidates (the three strongest peaks at least 10 degrees apart, each refined,
    # and no rotation at all) go on to the fine step, which picks by correlation.
    def refine(cand):
        around = np.deg2rad(np.rad2deg(cand[3]) + np.arange(-step, step + 1e-9, step / 6))
        return max([cand] + [coarse_at(a) + (a,) for a in around], key=lambda r: r[0])

    candidates: list = []
    for cand in scored:
        if all(abs(math.degrees(cand[3] - c[3])) >= 10 for c in candidates):
            candidates.append(refine(cand))
        if len(candidates) == 3:
            break
    if not any(abs(c[3]) < math.radians(5) for c in candidates):
        candidates.append(coarse_at(0.0) + (0.0,))

    # Fine: NCC on a finer grid, rigid from each candidate, then affine from the best.
    fine_um = fine_grid_um or max(mpp_he, mpp_ihc, extent_um / 384.0)
    k = coarse_um / fine_um
    fixed = ndi.gaussian_filter(resample(h_fixed, mpp_he, fine_um), 1.0)
    moving = ndi.gaussian_filter(resample(h_moving, mpp_ihc, fine_um), 1.0)

    def score(A_, t_) -> float:
        warped, inside = _warp(moving, A_, t_, fixed.shape)
        if inside.mean() < MIN_OVERLAP:
            return -1.0  # a sliver of overlap can correlate by chance: never prefer it
        return _ncc(fixed, warped, inside)

    c = np.array([fixed.shape[1], fixed.shape[0]]) / 2.0
    ident = _warp(moving, np.eye(2), (np.array([moving.shape[1], moving.shape[0]]) / 2.0) - c, fixed.shape)
    ncc_before = _ncc(fixed, ident[0], ident[1])

    def rigid(A0, t0):
        theta0 = math.atan2(A0[1, 0], A0[0, 0])
        res = minimize(lambda p: -score(_rot(theta0 + p[0]), t0 + p[1:]), np.zeros(3), method="Powell",
                       options={"xtol": 1e-3, "ftol": 1e-5, "maxfev": 300})
        return -res.fun, _rot(theta0 + res.x[0]), t0 + res.x[1:]

    _, A, t = max((rigid(cand[1], cand[2] * k) for cand in candidates), key=lambda r: r[0])
    if affine:
        res = minimize(lambda p: -score(A + p[:4].reshape(2, 2) * 0.05, t + p[4:]), np.zeros(6), method="Powell",
                       options={"xtol": 1e-3, "ftol": 1e-5, "maxfev": 800})
        cand_A, cand_t = A + res.x[:4].reshape(2, 2) * 0.05, t + res.x[4:]
        if score(cand_A, cand_t) > score(A, t):
            A, t = cand_A, cand_t
    warped, inside = _warp(moving, A, t, fixed.shape)
    ncc = _ncc(fixed, warped, inside)
    overlap = float(inside.mean())
    if overlap < MIN_OVERLAP or ncc < MIN_NCC:
        raise InputError(
            f"the H&E and IHC images do not overlap enough to register (best correlation {ncc:.2f}, "
            f"overlap {overlap:.0%}); check that they are sections of the same tissue"
        )
    # grid -> full-resolution pixels: p_he = p_grid * fine/mpp_he, p_ihc = q_grid * fine/mpp_ihc
    k_he, k_ihc = fine_um / mpp_he, fine_um / mpp_ihc
    A_full = A * (k_ihc / k_he)
    t_full = t * k_ihc
    matrix = np.hstack([A_full, t_full[:, None]])
    return Registration(matrix, ncc_before, ncc, overlap, math.degrees(math.atan2(A[1, 0], A[0, 0])), round(fine_um, 4))
