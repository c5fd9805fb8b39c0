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
    ncc_null: float | None = None  # the best the same search reaches on the IHC mirrored (no true correspondence)

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
            "null_ncc": None if self.ncc_null is None else round(self.ncc_null, 4),
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


class _Sampler:
    """The fixed image's pixel centres (all, and a sparse lattice for the optimiser's many evaluations)."""

    def __init__(self, fixed: np.ndarray, stride: int = 2) -> None:
        self.fixed = fixed
        yy, xx = np.mgrid[0 : fixed.shape[0], 0 : fixed.shape[1]].astype(np.float64) + 0.5
        self.full = (xx.ravel(), yy.ravel(), fixed.ravel())
        sub = (slice(None, None, stride), slice(None, None, stride))
        self.sparse = (xx[sub].ravel(), yy[sub].ravel(), fixed[sub].ravel())

    def score(self, moving: np.ndarray, A: np.ndarray, t: np.ndarray, sparse: bool = True) -> tuple[float, float]:
        """(NCC over the overlap, overlap fraction) of ``moving`` sampled at A @ p + t; NCC -1 below MIN_OVERLAP."""
        from scipy.ndimage import map_coordinates

        xx, yy, f = self.sparse if sparse else self.full
        mx = A[0, 0] * xx + A[0, 1] * yy + t[0]
        my = A[1, 0] * xx + A[1, 1] * yy + t[1]
        inside = (mx >= 0) & (mx < moving.shape[1]) & (my >= 0) & (my < moving.shape[0])
        overlap = float(inside.mean())
        if overlap < MIN_OVERLAP or inside.sum() < 50:
            return -1.0, overlap  # a sliver of overlap can correlate by chance: never prefer it
        m = map_coordinates(moving, [my[inside] - 0.5, mx[inside] - 0.5], order=1, mode="constant", cval=0.0)
        x, y = f[inside] - f[inside].mean(), m - m.mean()
        denom = math.sqrt(float((x * x).sum() * (y * y).sum())) + 1e-12
        return float((x * y).sum() / denom), overlap


MIN_MARGIN = 0.25  # the pair must correlate this much better than a mismatched IHC can be made to


def _mismatched(image: np.ndarray, how: str, seed: int = 0) -> np.ndarray:
    """The image with its content rearranged so that nothing in it corresponds to the H&E any more.

    ``phase``: the same power spectrum (texture, blob sizes) with random phases (a surrogate);
    ``quarters``: the quarters swapped diagonally and mirrored (the same local structure).
    """
    if how == "quarters":
        h, w = image.shape[0] // 2, image.shape[1] // 2
        out = np.roll(np.roll(image, h, axis=0), w, axis=1)[:, ::-1]
    else:
        rng = np.random.default_rng(seed)
        spectrum = np.fft.rfft2(image - image.mean())
        noise = np.fft.rfft2(rng.standard_normal(image.shape))
        phases = noise / np.maximum(np.abs(noise), 1e-12)
        out = np.fft.irfft2(np.abs(spectrum) * phases, s=image.shape)
        out = (out - out.mean()) / (out.std() + 1e-12) * image.std() + image.mean()
    return np.ascontiguousarray(out, dtype=np.float32)


def register(
    he: np.ndarray,
    ihc: np.ndarray,
    mpp_he: float,
    mpp_ihc: float,
    *,
    max_rotation_deg: float = 180.0,
    affine: bool = True,
    fine_grid_um: float | None = None,
    significance: bool = True,
) -> Registration:
    """Register H&E pixels onto IHC pixels; InputError when the pair does not overlap.

    Whether the pair is the same tissue is judged against a null built from the data itself: the
    IHC image mirrored (the same stains, texture and overlap, but no true correspondence) goes
    through the same search, and the pair must correlate clearly better than the best the search
    finds for the mirror. So a small tile, a small overlap or a repetitive texture, where a chance
    alignment correlates well, raises the bar by itself. ``significance=False`` skips that test
    (a tissue-level registration of whole sections at low magnification, where the outline is all
    there is to match and chance fits nearly as well); the correlation and overlap limits still hold.
    """
    from scipy import ndimage as ndi

    h_fixed = nuclear_channel(he)
    h_moving = nuclear_channel(ihc, second=stains.DAB)
    extent_um = max(he.shape[0] * mpp_he, he.shape[1] * mpp_he, ihc.shape[0] * mpp_ihc, ihc.shape[1] * mpp_ihc)
    coarse_um = max(mpp_he, mpp_ihc, extent_um / 256.0)
    # Coarse: the tissue as a whole (all stains' optical density): sections of different stains
    # share their outline and architecture more than any one channel.
    fixed_c = ndi.gaussian_filter(resample(stains.od_lut(he).sum(axis=2), mpp_he, coarse_um), 1.0)
    moving_c = ndi.gaussian_filter(resample(stains.od_lut(ihc).sum(axis=2), mpp_ihc, coarse_um), 1.0)
    if h_fixed.std() < 1e-3 or h_moving.std() < 1e-3 or fixed_c.std() < 1e-3 or moving_c.std() < 1e-3:
        raise InputError("an image of the pair holds no tissue (no hematoxylin signal) to register on")
    # Fine: NCC of the nuclear channels on a finer grid.
    fine_um = fine_grid_um or max(mpp_he, mpp_ihc, extent_um / 384.0)
    fixed_f = ndi.gaussian_filter(resample(h_fixed, mpp_he, fine_um), 1.0)
    moving_f = ndi.gaussian_filter(resample(h_moving, mpp_ihc, fine_um), 1.0)
    sampler = _Sampler(fixed_f)
    k = coarse_um / fine_um

    c = np.array([fixed_f.shape[1], fixed_f.shape[0]]) / 2.0
    ident_A, ident_t = np.eye(2), (np.array([moving_f.shape[1], moving_f.shape[0]]) / 2.0) - c
    ncc_before = sampler.score(moving_f, ident_A, ident_t, sparse=False)[0]

    A, t, _ = _search(fixed_c, moving_c, moving_f, sampler, k, max_rotation_deg, candidates=3, maxfev=300)
    if affine:
        from scipy.optimize import minimize

        res = minimize(lambda p: -sampler.score(moving_f, A + p[:4].reshape(2, 2) * 0.05, t + p[4:])[0], np.zeros(6),
                       method="Powell", options={"xtol": 1e-2, "ftol": 1e-5, "maxfev": 600})
        cand_A, cand_t = A + res.x[:4].reshape(2, 2) * 0.05, t + res.x[4:]
        # an affine step that rescales the section by more than a few percent is overfitting, not tissue
        scale = math.sqrt(abs(np.linalg.det(cand_A)))
        if 0.9 < scale < 1.1 and sampler.score(moving_f, cand_A, cand_t)[0] > sampler.score(moving_f, A, t)[0]:
            A, t = cand_A, cand_t
    ncc, overlap = sampler.score(moving_f, A, t, sparse=False)
    # the null: the same search on IHC images with the same texture but no true correspondence (two
    # phase-randomised surrogates, and the quarters swapped); the largest chance correlation of the three
    null = max(_search(fixed_c, _mismatched(moving_c, how, seed), _mismatched(moving_f, how, seed), sampler, k,
                       max_rotation_deg, candidates=2, maxfev=150)[2]
               for how, seed in (("phase", 1), ("phase", 2), ("quarters", 0))) if significance else None
    if overlap < MIN_OVERLAP or ncc < MIN_NCC or (null is not None and ncc < null + MIN_MARGIN):
        why = (f"overlap {overlap:.0%}" if overlap < MIN_OVERLAP else
               f"best correlation {ncc:.2f}" + (f", not clearly above the {null:.2f} that the same IHC rearranged reaches"
                                                 if null is not None and ncc < null + MIN_MARGIN else ""))
        raise InputError(f"the H&E and IHC images do not overlap enough to register ({why}); check that they are "
                         "sections of the same tissue")
    # grid -> full-resolution pixels: p_he = p_grid * fine/mpp_he, p_ihc = q_grid * fine/mpp_ihc
    k_he, k_ihc = fine_um / mpp_he, fine_um / mpp_ihc
    A_full = A * (k_ihc / k_he)
    t_full = t * k_ihc
    matrix = np.hstack([A_full, t_full[:, None]])
    return Registration(matrix, ncc_before, ncc, overlap, math.degrees(math.atan2(A[1, 0], A[0, 0])), round(fine_um, 4),
                        ncc_null=null)


def _search(fixed_c, moving_c, moving_f, sampler: _Sampler, k: float, max_rotation_deg: float, *, candidates: int,
            maxfev: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(A, t, NCC) of the best rigid alignment: rotations by phase correlation on the coarse grid, the
    strongest few refined by NCC on the fine grid."""
    from scipy.optimize import minimize

    c_f = np.array([fixed_c.shape[1], fixed_c.shape[0]]) / 2.0
    c_m = np.array([moving_c.shape[1], moving_c.shape[0]]) / 2.0

    def coarse_at(theta: float):
        A = _rot(theta)
        t0 = c_m - A @ c_f
        warped, _ = _warp(moving_c, A, t0, fixed_c.shape)
        peak, s = _phase_correlation(fixed_c, warped)
        return peak, A, t0 - A @ s  # fixed(p) ~ warped(p - s) = moving(A (p - s) + t0)

    step = 3.0 if max_rotation_deg > 10 else 1.0
    angles = np.deg2rad(np.arange(-max_rotation_deg, max_rotation_deg + 1e-9, step))
    scored = sorted((coarse_at(a) + (a,) for a in angles), key=lambda r: -r[0])

    def refine(cand):
        around = np.deg2rad(np.rad2deg(cand[3]) + np.arange(-step, step + 1e-9, step / 6))
        return max([cand] + [coarse_at(a) + (a,) for a in around], key=lambda r: r[0])

    # A few distinct candidates (the strongest peaks at least 10 degrees apart, each refined, and no
    # rotation at all) go on to the fine step, which picks by correlation.
    chosen: list = []
    for cand in scored:
        if all(abs(math.degrees(cand[3] - c[3])) >= 10 for c in chosen):
            chosen.append(refine(cand))
        if len(chosen) == candidates:
            break
    if not any(abs(c[3]) < math.radians(5) for c in chosen):
        chosen.append(coarse_at(0.0) + (0.0,))

    def rigid(A0, t0):
        theta0 = math.atan2(A0[1, 0], A0[0, 0])
        res = minimize(lambda p: -sampler.score(moving_f, _rot(theta0 + p[0]), t0 + p[1:])[0], np.zeros(3), method="Powell",
                       options={"xtol": 1e-2, "ftol": 1e-5, "maxfev": maxfev})
        return -res.fun, _rot(theta0 + res.x[0]), t0 + res.x[1:]

    best, A, t = max((rigid(cand[1], cand[2] * k) for cand in chosen), key=lambda r: r[0])
    return A, t, float(best)
