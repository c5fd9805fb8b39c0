"""A fourth synthetic renderer, written apart from ``mastctl.synth`` and the other bench renderers, from the criteria of
shared/docs/domain.md: one more rendering of them for a net to learn (``bench/train_mast_net.py --fourth-renderer``),
so that the third renderer (``bench/third_renderer.py``, REPORT only) still measures transfer.

Its primitives differ from the other three renderers':

- Colour: spectral. Each stain has an absorption spectrum (sums of Gaussians over 400-700 nm); the light through a
  pixel is integrated over wavelength against the camera's three channel sensitivities and a tilted illuminant, then
  a tone curve (gamma) is applied, as a scanner does. Optical density is then no longer a sum of fixed RGB vectors.
- Shapes: metaballs: a nucleus or a cell body is the level set of a sum of a few Gaussian blobs.
- Texture: noise shaped in the Fourier domain (a band of spatial frequencies, isotropic for chromatin and granules,
  elongated along a direction for collagen), drawn once per tile and read through each cell's shape.
- Layout: vessels as tubes along random curves, most mast cells beside them (mast cells sit around small vessels),
  lymphocytes partly in chains along a random walk, round glands of cuboidal cells.
- Camera: an astigmatic (elliptical) Gaussian focus, vignetting, read noise, JPEG on some tiles.

Truth files are ``mastctl/synth@1``, as the other renderers write.

    python bench/fourth_renderer.py OUT_DIR [--tiles 16] [--seed 0] [--mpp 0.5]
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

import rendered_tiles  # bench/ is the script's folder: the tile writer and command line, none of the drawing
from mastctl.cells import LABELS

VERSION = 1
WAVELENGTHS = np.arange(400, 701, 10, dtype=np.float64)
# absorption spectra: (peak nm, width nm, weight) terms
SPECTRA = {
    "h": ((555, 60, 0.8), (600, 35, 0.25)),  # hematoxylin: broad, blue-purple
    "e": ((522, 20, 1.0), (495, 18, 0.35)),  # eosin: narrow green absorption -> pink
    "mast": ((550, 35, 1.0), (595, 30, 0.45)),  # mast granules: purple-red
    "eos": ((490, 35, 1.0), (530, 25, 0.7)),  # eosinophil granules: orange-red
    "rbc": ((520, 30, 1.0), (430, 25, 0.8)),  # red cells (eosin-bright, absorbing blue too): orange-red
}
SENSORS = ((605, 32), (540, 32), (460, 28))  # R, G, B channel sensitivities (peak, width)
DENSITY = {"lymphocyte": 50, "plasma_cell": 22, "fibroblast": 20, "eosinophil": 6}  # per 0.1 mm^2 of stroma
MAST_PER_AREA = (6, 16)  # per 0.1 mm^2 of stroma
PERIVASCULAR = 0.65  # share of mast cells placed beside a vessel
IMPLICIT_SHARE = 0.45


def gaussian(x, peak, width):
    return np.exp(-0.5 * ((x - peak) / width) ** 2)


def spectrum(name: str, shift_nm: float = 0.0) -> np.ndarray:
    return sum(w * gaussian(WAVELENGTHS, p + shift_nm, s) for p, s, w in SPECTRA[name])


def band_noise(rng, n: int, low_px: float, high_px: float, angle: float | None = None, stretch: float = 1.0):
    """Unit-variance noise of spatial periods between ``low_px`` and ``high_px``; with ``angle``, its structures are
    ``stretch`` times longer along that direction than across it."""
    fy, fx = np.meshgrid(np.fft.fftfreq(n), np.fft.fftfreq(n), indexing="ij")
    if angle is not None:
        c, s = math.cos(angle), math.sin(angle)
        along, across = fx * c + fy * s, -fx * s + fy * c
        f = np.hypot(along * stretch, across)
    else:
        f = np.hypot(fx, fy)
    keep = (f >= 1.0 / high_px) & (f <= 1.0 / low_px)
    field = np.real(np.fft.ifft2(np.fft.fft2(rng.normal(size=(n, n))) * keep))
    return (field / max(float(field.std()), 1e-9)).astype(np.float32)


class FourthRenderer:
    def __init__(self, seed, size: int = 512, mpp: float = 0.5) -> None:
        self.rng = np.random.default_rng(seed)
        self.size, self.mpp = size, mpp
        self.pad = int(round(12 / mpp))
        n = self.n = size + 2 * self.pad
        self.amount = {k: np.zeros((n, n), np.float32) for k in SPECTRA}
        self.free = np.ones((n, n), bool)
        self.cells: list[dict] = []
        self.occupied: list[tuple[float, float, float]] = []
        rng = self.rng
        self.chromatin = band_noise(rng, n, self.px(0.7), self.px(2.0))
        self.speckle = band_noise(rng, n, self.px(0.4), self.px(1.0))
        self.fibre_angle = rng.uniform(0, math.pi)
        self.vessel_points: list[tuple[float, float]] = []

    def px(self, um: float) -> float:
        return um / self.mpp

    def window(self, x: float, y: float, r_um: float):
        return rendered_tiles.window(x, y, r_um, self.mpp, self.n)  # (rows, cols), um offsets x, y

    # ------------------------------------------------------------------ shapes

    def metaball(self, dx, dy, blobs, edge: float):
        """Soft inside-ness (0..1) of the level set 1 of a sum of Gaussian blobs (centre offsets and sigmas, um)."""
        field = sum(np.exp(-((dx - bx) ** 2 + (dy - by) ** 2) / (2 * s * s)) for bx, by, s in blobs)
        return np.clip((field - 0.5) / edge + 0.5, 0.0, 1.0)

    def blobs(self, a_um, b_um, angle, count, jitter):
        """``count`` blobs along an ellipse's long axis whose level set 1 is about ``a_um`` x ``b_um``."""
        rng = self.rng
        c, s = math.cos(angle), math.sin(angle)
        out = []
        for t in np.linspace(-1, 1, count) if count > 1 else [0.0]:
            u = t * (a_um - b_um) * 0.8 + rng.normal(0, jitter)
            v = rng.normal(0, jitter)
            out.append((u * c - v * s, u * s + v * c, b_um * 0.85 * rng.uniform(0.9, 1.1)))
        return out

    def body(self, x, y, a_um, b_um, angle, count=3, jitter=0.3, edge=0.25):
        w = self.window(x, y, a_um + 3)
        if w is None:
            return None
        sl, dx, dy = w
        return sl, dx, dy, self.metaball(dx, dy, self.blobs(a_um, b_um, angle, count, jitter), edge)

    def nucleus(self, x, y, a_um, b_um, angle, dense, count=3, chromatin=0.35, edge=0.2, clumps_at_rim=0.0):
        got = self.body(x, y, a_um, b_um, angle, count, jitter=0.25 * b_um, edge=edge)
        if got is None:
            return
        sl, dx, dy, inside = got
        tex = 1.0 + chromatin * self.chromatin[sl]
        if clumps_at_rim:
            rim = np.clip(1.0 - np.abs(inside - 0.55) / 0.35, 0, 1)
            tex = tex + clumps_at_rim * rim * np.clip(self.speckle[sl], 0, None)
        self.amount["h"][sl] += inside * dense * np.clip(tex, 0.2, None)

    def cytoplasm(self, x, y, a_um, b_um, angle, e, h=0.0, stain=None, granules=0.0, cover=0.5, edge=0.3):
        got = self.body(x, y, a_um, b_um, angle, count=2, jitter=0.3, edge=edge)
        if got is None:
            return None
        sl, dx, dy, inside = got
        self.amount["e"][sl] = self.amount["e"][sl] * (1 - inside) + inside * e
        self.amount["h"][sl] += inside * h
        if stain:
            dots = np.clip(self.speckle[sl] - (1.0 - 2 * cover), 0, None)
            self.amount[stain][sl] += inside * granules * dots
        return sl, dx, dy, inside

    # ------------------------------------------------------------------ tissue

    def stroma(self) -> None:
        rng, n = self.rng, self.n
        fibres = band_noise(rng, n, self.px(1.0), self.px(4.0), self.fibre_angle, rng.uniform(4, 9))
        coarse = band_noise(rng, n, self.px(20), self.px(80))
        self.amount["e"] += np.clip(0.3 + 0.18 * fibres + 0.1 * coarse, 0.02, None) * rng.uniform(0.8, 1.2)

    def vessels(self) -> None:
        rng, n = self.rng, self.n
        for _ in range(rng.integers(1, 4)):
            x, y = rng.uniform(0, n, 2)
            ang = rng.uniform(0, 2 * math.pi)
            radius = rng.uniform(3.5, 7.0)
            mask = np.zeros((n, n), bool)
            for _ in range(int(n / max(self.px(2.0), 1))):
                ang += rng.normal(0, 0.12)
                x, y = x + self.px(2.0) * math.cos(ang), y + self.px(2.0) * math.sin(ang)
                if not (0 <= x < n and 0 <= y < n):
                    break
                self.vessel_points.append((x, y))
                r = int(self.px(radius))
                mask[max(int(y) - r, 0):int(y) + r + 1, max(int(x) - r, 0):int(x) + r + 1] = True
            lumen = ndi.binary_opening(mask, iterations=1)
            self.amount["e"][lumen] *= 0.15
            reds = np.clip(band_noise(rng, n, self.px(4), self.px(10)) - 0.2, 0, 1) * lumen
            self.amount["rbc"] += reds * 1.2
            self.free &= ~ndi.binary_dilation(lumen, iterations=int(self.px(1.5)))
            edge = lumen & ~ndi.binary_erosion(lumen, iterations=2)
            ys, xs = np.nonzero(edge)
            for k in rng.choice(len(xs), size=min(len(xs), rng.integers(3, 8)), replace=False) if len(xs) else []:
                self.nucleus(xs[k], ys[k], rng.uniform(3.5, 5.0), rng.uniform(0.9, 1.3), ang, 0.7, count=6)
                self.record(xs[k], ys[k], "endothelial")

    def glands(self) -> None:
        rng, n = self.rng, self.n
        for _ in range(rng.poisson(self.area() * 0.8)):
            x, y = rng.uniform(0, n, 2)
            ra, rb = rng.uniform(18, 30), rng.uniform(14, 24)
            w = self.window(x, y, ra + 10)
            if w is None:
                continue
            sl, dx, dy = w
            rho = np.hypot(dx / ra, dy / rb)
            self.amount["e"][sl] = np.where(rho < 0.65, self.amount["e"][sl] * 0.1,
                                            np.where(rho < 1.15, 0.3, self.amount["e"][sl]))
            self.free[sl] &= rho > 1.3
            count = int(2 * math.pi * math.sqrt((ra * ra + rb * rb) / 2) / rng.uniform(4.5, 5.5))
            for t in np.linspace(0, 2 * math.pi, count, endpoint=False):
                cx, cy = x + self.px(ra * 0.98 * math.cos(t)), y + self.px(rb * 0.98 * math.sin(t))
                self.nucleus(cx, cy, rng.uniform(2.6, 3.4), rng.uniform(2.0, 2.6), t, rng.uniform(0.55, 0.75), count=2)
                self.record(cx, cy, "epithelial")

    def area(self) -> float:
        return float(self.free.mean()) * (self.n * self.mpp) ** 2 / 1e5

    # ------------------------------------------------------------------ cells

    def record(self, x, y, kind_of_cell, kind=None) -> None:
        self.cells.append({"x": float(x) - self.pad, "y": float(y) - self.pad, "type": kind_of_cell,
                           "label": kind_of_cell if kind_of_cell in LABELS else "other", "kind": kind})

    def spot(self, r_um, near=None, tries=40):
        rng = self.rng
        for _ in range(tries):
            if near is None:
                x, y = rng.uniform(0, self.n, 2)
            else:
                x, y = near[0] + rng.normal(0, self.px(near[2])), near[1] + rng.normal(0, self.px(near[2]))
            if not (0 <= x < self.n and 0 <= y < self.n) or not self.free[int(y), int(x)]:
                continue
            if all(math.hypot(x - ox, y - oy) >= self.px(r_um + orr) * 0.9 for ox, oy, orr in self.occupied):
                self.occupied.append((x, y, r_um))
                return x, y
        return None

    def mast_cell(self, x, y, implicit: bool) -> None:
        rng = self.rng
        a = rng.uniform(6.0, 8.5)
        b, ang = a * rng.uniform(0.7, 0.95), rng.uniform(0, math.pi)
        if implicit:  # a muddy pink halo with a few granules, a pale body with faint sparse granules, a soft border
            halo = self.window(x, y, a + 3)
            if halo is not None:
                sl, dx, dy = halo
                ring = np.clip(1.0 - np.abs(np.hypot(dx / (a + 1.2), dy / (b + 1.2)) - 1.0) / 0.25, 0, 1)
                self.amount["e"][sl] += ring * rng.uniform(0.08, 0.15)
                self.amount["mast"][sl] += ring * 0.05 * np.clip(self.speckle[sl], 0, None)
            self.cytoplasm(x, y, a, b, ang, rng.uniform(0.18, 0.28), stain="mast", granules=rng.uniform(0.08, 0.18),
                           cover=0.25, edge=0.6)
        else:  # a thin clear halo, a body packed with granules, a sharp border
            halo = self.window(x, y, a + 2)
            if halo is not None:
                sl, dx, dy = halo
                ring = np.hypot(dx / (a + 1.0), dy / (b + 1.0)) < 1.0
                self.amount["e"][sl] *= np.where(ring, 0.2, 1.0)
            self.cytoplasm(x, y, a, b, ang, rng.uniform(0.25, 0.4), stain="mast", granules=rng.uniform(0.35, 0.6),
                           cover=0.7, edge=0.15)
        r = rng.uniform(2.7, 3.5)
        self.nucleus(x, y, r, r * rng.uniform(0.8, 0.95), rng.uniform(0, math.pi), rng.uniform(0.9, 1.2), count=2)
        self.record(x, y, "mast_cell", "implicit" if implicit else "explicit")

    def lymphocyte(self, x, y) -> None:
        r = self.rng.uniform(2.7, 3.4)
        self.nucleus(x, y, r, r * self.rng.uniform(0.9, 1.0), 0.0, self.rng.uniform(1.0, 1.3), count=1, chromatin=0.25)
        self.record(x, y, "lymphocyte")

    def plasma_cell(self, x, y) -> None:
        rng = self.rng
        a, b, ang = rng.uniform(5.0, 6.5), rng.uniform(3.8, 4.6), rng.uniform(0, 2 * math.pi)
        self.cytoplasm(x, y, a, b, ang, 0.22, h=0.2)
        off = self.px((a - 2.9) * rng.uniform(0.75, 1.0))
        nx, ny = x + off * math.cos(ang), y + off * math.sin(ang)
        hof = self.window(x - self.px(0.8) * math.cos(ang), y - self.px(0.8) * math.sin(ang), 2.5)
        if hof is not None:
            sl, dx, dy = hof
            self.amount["h"][sl] *= 1 - 0.7 * np.exp(-(dx ** 2 + dy ** 2) / 2.5)
        r = rng.uniform(2.4, 3.0)
        self.nucleus(nx, ny, r, r * 0.95, ang, rng.uniform(0.5, 0.65), count=1, clumps_at_rim=0.5)
        self.record(x, y, "plasma_cell")

    def fibroblast(self, x, y) -> None:
        rng = self.rng
        self.nucleus(x, y, rng.uniform(5.0, 8.0), rng.uniform(0.9, 1.4), self.fibre_angle + rng.normal(0, 0.2),
                     rng.uniform(0.55, 0.8), count=9)
        self.record(x, y, "fibroblast")

    def eosinophil(self, x, y) -> None:
        rng = self.rng
        r = rng.uniform(5.5, 7.0)
        self.cytoplasm(x, y, r, r * 0.9, rng.uniform(0, math.pi), 0.2, stain="eos", granules=rng.uniform(0.5, 0.8),
                       cover=0.75)
        ang, gap = rng.uniform(0, math.pi), self.px(rng.uniform(1.5, 2.0))
        for sign in (-1, 1):
            self.nucleus(x + sign * gap * math.cos(ang), y + sign * gap * math.sin(ang), 2.1, 1.7, ang,
                         rng.uniform(0.9, 1.1), count=1)
        self.record(x, y, "eosinophil")

    def populate(self) -> None:
        rng = self.rng
        area = self.area()
        for _ in range(rng.poisson(area * rng.uniform(*MAST_PER_AREA))):
            near = None
            if self.vessel_points and rng.random() < PERIVASCULAR:
                vx, vy = self.vessel_points[rng.integers(len(self.vessel_points))]
                near = (vx, vy, 8.0)
            got = self.spot(8.5, near)
            if got:
                self.mast_cell(*got, implicit=rng.random() < IMPLICIT_SHARE)
        # a chain of lymphocytes along a random walk
        if rng.random() < 0.5:
            x, y, ang = *rng.uniform(0, self.n, 2), rng.uniform(0, 2 * math.pi)
            for _ in range(rng.integers(10, 30)):
                ang += rng.normal(0, 0.5)
                x, y = x + self.px(7) * math.cos(ang), y + self.px(7) * math.sin(ang)
                got = self.spot(3.5, (x, y, 1.5), tries=6)
                if got:
                    self.lymphocyte(*got)
        radius = {"lymphocyte": 3.6, "plasma_cell": 6.0, "fibroblast": 4.0, "eosinophil": 6.8}
        draw = {"lymphocyte": self.lymphocyte, "plasma_cell": self.plasma_cell, "fibroblast": self.fibroblast,
                "eosinophil": self.eosinophil}
        order = [k for k, d in DENSITY.items() for _ in range(rng.poisson(area * d * rng.uniform(0.7, 1.4)))]
        rng.shuffle(order)
        for k in order:
            got = self.spot(radius[k], tries=15)
            if got:
                draw[k](*got)

    # ------------------------------------------------------------------ camera

    def image(self) -> np.ndarray:
        rng = self.rng
        strength = {"h": rng.uniform(0.6, 1.2), "e": rng.uniform(0.5, 1.2), "mast": rng.uniform(0.8, 1.3), "eos": 1.0,
                    "rbc": 1.0}
        shift = {"h": rng.uniform(-15, 15), "e": rng.uniform(-8, 8), "mast": rng.uniform(-10, 10), "eos": 0.0,
                 "rbc": 0.0}
        od = np.zeros((self.n, self.n, len(WAVELENGTHS)), np.float32)
        for k, amt in self.amount.items():
            od += np.maximum(amt, 0)[..., None] * (strength[k] * spectrum(k, shift[k])).astype(np.float32)
        light = 1.0 + rng.uniform(-0.3, 0.3) * (WAVELENGTHS - 550) / 150  # a warmer or cooler lamp
        trans = 10.0 ** (-od)
        rgb = []
        for peak, width in SENSORS:
            weight = gaussian(WAVELENGTHS, peak + rng.uniform(-8, 8), width) * light
            rgb.append(trans @ (weight / weight.sum()).astype(np.float32))
        rgb = np.stack(rgb, axis=-1)
        sy, sx = self.px(rng.uniform(0.2, 0.9)), self.px(rng.uniform(0.2, 0.9))  # astigmatic focus
        rgb = ndi.gaussian_filter(rgb, (sy, sx, 0))
        yy, xx = np.mgrid[0:self.n, 0:self.n] / self.n - 0.5
        vignette = 1.0 - rng.uniform(0.0, 0.25) * (xx ** 2 + yy ** 2)
        gamma = rng.uniform(1.0, 1.3)
        white = rng.uniform(230, 252)
        out = white * (np.clip(rgb * vignette[..., None], 0, 1) ** (1.0 / gamma))
        out = out + rng.normal(0, rng.uniform(0.8, 2.5), out.shape)
        p = self.pad
        out = np.clip(out[p:p + self.size, p:p + self.size], 0, 255).astype(np.uint8)
        if rng.random() < 0.4:
            out = rendered_tiles.jpeg(out, int(rng.integers(55, 92)))
        return np.ascontiguousarray(out)

    def render(self):
        self.stroma()
        self.vessels()
        self.glands()
        self.populate()
        rgb = self.image()
        return rgb, rendered_tiles.inside(self.cells, self.size)


# render(seed, size=512, mpp=0.5) -> (H&E, true cells); stem(seed, index); generate(out, tiles, ...)
render, stem, generate = rendered_tiles.wiring(FourthRenderer, "fourth")


if __name__ == "__main__":
    raise SystemExit(rendered_tiles.main(generate, __doc__))
