"""A third synthetic renderer, written apart from ``mastctl.synth`` and ``bench/other_renderer.py``, from the criteria
of shared/docs/domain.md: a measurement of transfer that no model trains on.

The crop net learned the second renderer's tiles (since 2026-12-07), so its score there mixes memory and transfer. This
one is never trained on or chosen on: its 16 tiles (seed 0) are REPORTED by ``bench/real_tissue.py``, and nothing
else reads them. Every part of a tile is drawn with other primitives than the other two renderers':

- Colour: each stain is an RGB *transmittance* at unit amount (a pale colour filter), and the image is the white
  point times the product of the filters raised to the amounts; a tile's stains are varied by mixing each filter
  towards a random tint, not by turning optical-density vectors.
- Texture: value noise (a coarse lattice of random values, zoomed cubically) and Worley noise (the distance to the
  nearest of random points): collagen as wavy bands along a warped flow field, chromatin and granules as Worley
  cells.
- Layout: regions from thresholded value noise (loose stroma, a lymphoid patch, an epithelial band along a curve,
  clear spaces), cells placed by dart throwing so that no two overlap.
- Shapes: superellipses whose border is warped by value noise.
- Cells: lymphocytes (round dense nuclei, scant rim), plasma cells (eccentric nucleus with dark rim chromatin, purple
  cytoplasm, a pale hof beside the nucleus), fibroblasts (pointed spindles along the flow), eosinophils (two lobes,
  coarse orange-red granules), endothelium (flat nuclei along vessels holding red cells), columnar epithelium, and
  mast cells: explicit (central plump hyperchromatic nucleus, abundant cytoplasm packed with purple granules, a sharp
  border, a thin clear halo) and implicit (the same nucleus, faint sparse granules, a pale blurred border, a muddy
  pink "dirty halo"), placed near each other (the law of neighbourhood).
- Camera: a disk (defocus) point spread instead of a Gaussian, uneven illumination, lateral chromatic shift, shot
  noise, and on some tiles a resolution loss or JPEG.

Truth files are ``mastctl/synth@1``, as the other renderers write, so ``mastctl compare`` scores its tiles.

    python bench/third_renderer.py OUT_DIR [--tiles 16] [--seed 0] [--mpp 0.5]
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

import rendered_tiles  # bench/ is the script's folder: the tile writer and command line, none of the drawing
from mastctl.cells import LABELS

VERSION = 1  # of the drawing: a folder of tiles rendered by another version is rendered again (bench/real_tissue.py)
# Transmittance (R, G, B) of a unit amount of each stain.
HEMATOXYLIN = (0.30, 0.26, 0.62)
EOSIN = (0.93, 0.42, 0.66)
MAST_GRANULE = (0.55, 0.30, 0.68)  # metachromatic-looking purple: hematoxylin-like, redder
EOS_GRANULE = (0.96, 0.40, 0.30)  # orange-red: absorbs green and blue
RED_CELL = (0.90, 0.35, 0.35)
# cells per 0.1 mm^2 of loose stroma
DENSITY = {"lymphocyte": 45, "plasma_cell": 25, "fibroblast": 18, "eosinophil": 7}
MAST_CLUSTERS = (2, 6)  # per 0.1 mm^2 of stroma ...
MAST_PER_CLUSTER = (1, 4)
IMPLICIT_SHARE = 0.5


def value_noise(rng, shape: tuple[int, int], cell_px: float) -> np.ndarray:
    """Smooth noise in [0, 1]: random values on a lattice ``cell_px`` apart, zoomed with cubic splines."""
    gh, gw = (max(2, int(math.ceil(s / cell_px)) + 3) for s in shape)
    lattice = rng.random((gh, gw)).astype(np.float32)
    zoom = (shape[0] / (gh - 3) * 1.0001, shape[1] / (gw - 3) * 1.0001)
    out = ndi.zoom(lattice, zoom, order=3)[: shape[0], : shape[1]]
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def worley(rng, shape: tuple[int, int], points: int) -> np.ndarray:
    """Distance (pixels) from each pixel to the nearest of ``points`` random points."""
    pts = rng.random((max(points, 1), 2)) * np.asarray(shape, float)
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    d, _ = cKDTree(pts).query(np.column_stack([yy.ravel(), xx.ravel()]) + 0.5)
    return d.reshape(shape).astype(np.float32)


def superellipse(dx, dy, a, b, p, angle):
    """|u/a|^p + |v/b|^p over the offsets (1 on the border)."""
    c, s = math.cos(angle), math.sin(angle)
    u, v = dx * c + dy * s, -dx * s + dy * c
    return np.abs(u / a) ** p + np.abs(v / b) ** p


def smooth_inside(level, soft):
    """1 well inside (level < 1), 0 outside, a smoothstep ``soft`` wide (in level units) across the border."""
    t = np.clip((1.0 + soft - level) / (2 * soft), 0.0, 1.0)
    return t * t * (3 - 2 * t)


class Canvas:
    """Stain amounts over the padded tile; each cell is painted in a square window around it."""

    def __init__(self, rng, n: int, mpp: float) -> None:
        self.rng, self.n, self.mpp = rng, n, mpp
        self.amount = {k: np.zeros((n, n), np.float32) for k in ("h", "e", "mast", "eos", "rbc")}

    def px(self, um: float) -> float:
        return um / self.mpp

    def window(self, x: float, y: float, r_um: float):
        return rendered_tiles.window(x, y, r_um, self.mpp, self.n)  # (rows, cols), um offsets x, y

    def warped(self, dx, dy, strength_um: float):
        """Offsets pushed about by value noise: a border that is not a clean curve."""
        if strength_um <= 0:
            return dx, dy
        shape = dx.shape
        cell = max(2.0, self.px(1.5))
        return (dx + (value_noise(self.rng, shape, cell) - 0.5) * 2 * strength_um,
                dy + (value_noise(self.rng, shape, cell) - 0.5) * 2 * strength_um)

    def texture(self, shape, grain_um: float) -> np.ndarray:
        """Worley cells of about ``grain_um``: 1 at a grain's centre, 0 between grains."""
        area = shape[0] * shape[1] * self.mpp ** 2
        d = worley(self.rng, shape, int(area / (grain_um ** 2) * 1.3) + 1) * self.mpp
        return np.clip(1.0 - d / (0.6 * grain_um), 0.0, 1.0)


class ThirdRenderer:
    def __init__(self, seed, size: int = 512, mpp: float = 0.5) -> None:
        self.rng = np.random.default_rng(seed)
        self.size, self.mpp = size, mpp
        self.pad = int(round(12 / mpp))
        self.n = size + 2 * self.pad
        self.c = Canvas(self.rng, self.n, mpp)
        self.cells: list[dict] = []
        self.placed: list[tuple[float, float, float]] = []  # x, y (pixels), radius (um)
        self.free = np.ones((self.n, self.n), bool)  # stroma where a stromal cell may go
        self.flow = np.zeros((self.n, self.n), np.float32)  # local fibre direction (radians)

    # ------------------------------------------------------------------ placement

    def fits(self, x: float, y: float, r_um: float) -> bool:
        if not (0 <= x < self.n and 0 <= y < self.n) or not self.free[int(y), int(x)]:
            return False
        return all((x - px) ** 2 + (y - py) ** 2 >= (self.c.px(r_um + pr) * 0.92) ** 2 for px, py, pr in self.placed)

    def dart(self, r_um: float, tries: int = 60, near: tuple[float, float, float] | None = None):
        """A free spot for a cell of radius ``r_um`` (None: none found), anywhere or within near=(x, y, um)."""
        for _ in range(tries):
            if near is None:
                x, y = self.rng.uniform(0, self.n, 2)
            else:
                ang = self.rng.uniform(0, 2 * math.pi)
                dist = self.c.px(math.sqrt(self.rng.uniform(0.02, 1.0)) * near[2])
                x, y = near[0] + dist * math.cos(ang), near[1] + dist * math.sin(ang)
            if self.fits(x, y, r_um):
                self.placed.append((x, y, r_um))
                return x, y
        return None

    def record(self, x: float, y: float, kind_of_cell: str, kind: str | None = None) -> None:
        self.cells.append({"x": x - self.pad, "y": y - self.pad, "type": kind_of_cell,
                           "label": kind_of_cell if kind_of_cell in LABELS else "other", "kind": kind})

    # ------------------------------------------------------------------ tissue

    def tissue(self) -> None:
        rng, c, n = self.rng, self.c, self.n
        # the fibre flow: a random mean direction, bent by coarse noise; collagen is noise on a lattice stretched
        # along it (long and thin), so that its fibres follow the flow
        self.flow = (rng.uniform(0, math.pi) + (value_noise(rng, (n, n), c.px(60)) - 0.5) * 0.8).astype(np.float32)
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32) * self.mpp
        bend = (value_noise(rng, (n, n), c.px(50)) - 0.5) * 12.0  # um
        along = xx * np.cos(self.flow) + yy * np.sin(self.flow)
        across = -xx * np.sin(self.flow) + yy * np.cos(self.flow) + bend
        lattice = rng.random((96, 96)).astype(np.float32)
        fibres = ndi.map_coordinates(lattice, [across / rng.uniform(1.2, 2.0), along / rng.uniform(12, 25)], order=3,
                                     mode="wrap")
        fibres = np.clip((fibres - 0.35) / 0.5, 0, 1)
        loose = value_noise(rng, (n, n), c.px(25))
        collagen = fibres ** rng.uniform(1.0, 2.0) * (0.3 + 0.7 * loose)
        c.amount["e"] += collagen * rng.uniform(0.4, 0.65) + 0.06
        # clear spaces (oedema, tears)
        spaces = value_noise(rng, (n, n), c.px(35)) > rng.uniform(0.82, 0.95)
        c.amount["e"][spaces] *= 0.15
        self.free &= ~ndi.binary_dilation(spaces, iterations=int(c.px(2)))
        self.epithelium()
        self.vessels()

    def epithelium(self) -> None:
        rng, c, n = self.rng, self.c, self.n
        if rng.random() < 0.35:
            return
        # a band of columnar cells along a curve y = y0 + A sin(...) (or the same in x)
        y0, amp, period = rng.uniform(0.15, 0.85) * n, c.px(rng.uniform(5, 25)), c.px(rng.uniform(80, 200))
        width = c.px(rng.uniform(18, 26))
        xs = np.arange(n, dtype=np.float32)
        centre = y0 + amp * np.sin(xs / period * 2 * math.pi + rng.uniform(0, 6.3))
        yy = np.arange(n, dtype=np.float32)[:, None]
        band = np.abs(yy - centre[None, :]) < width / 2
        c.amount["e"][band] = c.amount["e"][band] * 0.3 + 0.22  # pink columnar cytoplasm
        lumen_side = rng.choice([-1, 1])
        lumen = (yy - centre[None, :]) * lumen_side > width / 2
        lumen &= (yy - centre[None, :]) * lumen_side < width / 2 + c.px(rng.uniform(10, 30))
        c.amount["e"][lumen] *= 0.1
        self.free &= ~ndi.binary_dilation(band | lumen, iterations=int(c.px(3)))
        step = c.px(rng.uniform(3.8, 4.8))
        for x in np.arange(rng.uniform(0, step), n, step):
            cy = float(centre[int(x)]) - lumen_side * width * rng.uniform(0.12, 0.25)  # nuclei towards the base
            slope = math.atan(amp * 2 * math.pi / period * math.cos(x / period * 2 * math.pi))
            self.nucleus(x, cy, rng.uniform(3.5, 5.0), rng.uniform(1.5, 2.1), slope + math.pi / 2, 2.2,
                         rng.uniform(0.45, 0.7), grain_um=0.7, warp_um=0.3)
            self.record(x, cy, "epithelial")

    def vessels(self) -> None:
        rng, c = self.rng, self.c
        for _ in range(rng.poisson(self.stroma_area() * 1.5)):
            r_um = rng.uniform(5, 11)
            spot = self.dart(r_um + 3)
            if spot is None:
                continue
            x, y = spot
            w = c.window(x, y, r_um + 3)
            sl, dx, dy = w
            ring = np.hypot(dx, dy)
            c.amount["e"][sl] *= np.where(ring < r_um, 0.2, 1.0)
            for _ in range(int(r_um)):  # red cells inside
                a, d = rng.uniform(0, 2 * math.pi), rng.uniform(0, r_um - 3)
                wx, wy = x + c.px(d * math.cos(a)), y + c.px(d * math.sin(a))
                ww = c.window(wx, wy, 4)
                if ww is not None:
                    s2, ex, ey = ww
                    disc = smooth_inside(superellipse(ex, ey, 3.4, 3.4, 2, 0), 0.15)
                    c.amount["rbc"][s2] += disc * (0.6 - 0.25 * np.exp(-(ex ** 2 + ey ** 2) / 2.0))
            for k in range(rng.integers(2, 5)):  # flat endothelial nuclei on the wall
                a = rng.uniform(0, 2 * math.pi)
                ex, ey = x + c.px(r_um * math.cos(a)), y + c.px(r_um * math.sin(a))
                self.nucleus(ex, ey, rng.uniform(3.5, 5.5), rng.uniform(0.8, 1.2), a + math.pi / 2, 2.0,
                             rng.uniform(0.55, 0.8), grain_um=0.8, warp_um=0.2)
                self.record(ex, ey, "endothelial")

    def stroma_area(self) -> float:
        """Free stroma in units of 0.1 mm^2."""
        return float(self.free.mean()) * (self.n * self.mpp) ** 2 / 1e5

    # ------------------------------------------------------------------ cells

    def nucleus(self, x, y, a_um, b_um, angle, p, density, grain_um=0.8, warp_um=0.25, rim=0.0) -> None:
        """A nucleus: a warped superellipse of hematoxylin, Worley chromatin, and ``rim`` more at its border."""
        c = self.c
        w = c.window(x, y, max(a_um, b_um) + 1.5)
        if w is None:
            return
        sl, dx, dy = w
        dx, dy = c.warped(dx, dy, warp_um)
        level = superellipse(dx, dy, a_um, b_um, p, angle)
        inside = smooth_inside(level, 0.12)
        grains = c.texture(level.shape, grain_um)
        border = np.clip(1.0 - np.abs(level - 0.85) / 0.25, 0, 1) * inside
        c.amount["h"][sl] += inside * density * (0.7 + 0.6 * grains) + border * (0.25 + rim)

    def cytoplasm(self, x, y, a_um, b_um, angle, e, h=0.0, soft=0.1, stain="mast", granules=0.0, grain_um=0.5,
                  fill=0.6):
        """A cell body: eosin (and a little hematoxylin) in a superellipse, with Worley granules of ``stain``
        covering about ``fill`` of it."""
        c = self.c
        w = c.window(x, y, max(a_um, b_um) * (1 + soft) + 1)
        if w is None:
            return None
        sl, dx, dy = w
        level = superellipse(dx, dy, a_um, b_um, 2.0, angle)
        body = smooth_inside(level, soft)
        c.amount["e"][sl] = c.amount["e"][sl] * (1 - body) + body * e  # the cell replaces the stroma under it
        c.amount["h"][sl] += body * h
        if granules > 0:
            g = c.texture(level.shape, grain_um)
            c.amount[stain][sl] += body * granules * (g > 1 - fill) * g
        return sl, dx, dy, level

    def lymphocyte(self, x, y) -> None:
        r = self.rng.uniform(2.6, 3.4)
        self.cytoplasm(x, y, r + 0.4, r + 0.3, 0, 0.15, h=0.05)
        self.nucleus(x, y, r, r * self.rng.uniform(0.88, 1.0), self.rng.uniform(0, math.pi), 2.0,
                     self.rng.uniform(0.95, 1.25), grain_um=0.9)
        self.record(x, y, "lymphocyte")

    def plasma_cell(self, x, y) -> None:
        rng = self.rng
        a, b, ang = rng.uniform(5.0, 6.5), rng.uniform(3.8, 4.8), rng.uniform(0, math.pi)
        self.cytoplasm(x, y, a, b, ang, 0.30, h=0.22)
        off = (a - 2.8) * rng.uniform(0.7, 0.95)
        nx, ny = x + self.c.px(off * math.cos(ang)), y + self.c.px(off * math.sin(ang))
        hx, hy = x - self.c.px(0.6 * math.cos(ang)), y - self.c.px(0.6 * math.sin(ang))  # the hof, beside the nucleus
        w = self.c.window(hx, hy, 2.5)
        if w is not None:
            sl, dx, dy = w
            self.c.amount["h"][sl] -= np.minimum(self.c.amount["h"][sl], 0.18 * np.exp(-(dx ** 2 + dy ** 2) / 2.0))
        r = rng.uniform(2.5, 3.1)
        self.nucleus(nx, ny, r, r * rng.uniform(0.9, 1.0), ang, 2.0, rng.uniform(0.5, 0.7), grain_um=1.1, rim=0.45)
        self.record(x, y, "plasma_cell")

    def fibroblast(self, x, y) -> None:
        rng = self.rng
        ang = float(self.flow[int(y), int(x)]) + rng.normal(0, 0.15)
        self.nucleus(x, y, rng.uniform(5.0, 8.0), rng.uniform(0.9, 1.5), ang, 1.4, rng.uniform(0.55, 0.85),
                     grain_um=0.7, warp_um=0.2)
        self.record(x, y, "fibroblast")

    def eosinophil(self, x, y) -> None:
        rng = self.rng
        r = rng.uniform(5.5, 7.0)
        self.cytoplasm(x, y, r, r * rng.uniform(0.85, 1.0), rng.uniform(0, math.pi), 0.25, stain="eos",
                       granules=rng.uniform(0.5, 0.8), grain_um=0.8, fill=0.7)
        ang, gap = rng.uniform(0, math.pi), rng.uniform(1.4, 2.0)
        for sign in (-1, 1):
            lr = rng.uniform(1.7, 2.3)
            self.nucleus(x + sign * self.c.px(gap) * math.cos(ang), y + sign * self.c.px(gap) * math.sin(ang), lr,
                         lr * 0.8, ang, 2.0, rng.uniform(0.85, 1.1), grain_um=0.9)
        self.record(x, y, "eosinophil")

    def mast_cell(self, x, y, implicit: bool) -> None:
        rng, c = self.rng, self.c
        a = rng.uniform(6.0, 8.0)
        b, ang = a * rng.uniform(0.75, 0.95), rng.uniform(0, math.pi)
        halo = c.window(x, y, a + 2.5)
        if halo is not None:  # the clear space around the cell (explicit), or a muddy pink one (implicit)
            sl, dx, dy = halo
            ring = smooth_inside(superellipse(dx, dy, a + 1.8, b + 1.8, 2.0, ang), 0.15)
            if implicit:
                c.amount["e"][sl] = c.amount["e"][sl] * (1 - ring) + ring * rng.uniform(0.25, 0.4)
                c.amount["mast"][sl] += ring * rng.uniform(0.03, 0.08) * value_noise(rng, ring.shape, c.px(1.2))
            else:
                c.amount["e"][sl] *= 1 - 0.8 * ring
        if implicit:
            self.cytoplasm(x, y, a, b, ang, rng.uniform(0.2, 0.32), soft=rng.uniform(0.25, 0.45),
                           granules=rng.uniform(0.12, 0.25), grain_um=0.55, fill=0.3)
        else:
            self.cytoplasm(x, y, a, b, ang, rng.uniform(0.3, 0.45), soft=0.06, granules=rng.uniform(0.45, 0.8),
                           grain_um=0.5, fill=0.75)
        r = rng.uniform(2.7, 3.6)
        self.nucleus(x, y, r, r * rng.uniform(0.8, 0.95), rng.uniform(0, math.pi), 2.2, rng.uniform(0.9, 1.2),
                     grain_um=1.0, warp_um=0.2)
        self.record(x, y, "mast_cell", "implicit" if implicit else "explicit")

    def populate(self) -> None:
        rng, c = self.rng, self.c
        area = self.stroma_area()
        # a lymphoid patch on some tiles: many lymphocytes in one place
        if rng.random() < 0.4:
            px, py, pr = rng.uniform(0, self.n, 2).tolist() + [rng.uniform(25, 50)]
            for _ in range(int(pr * pr / 12)):
                spot = self.dart(3.4, tries=8, near=(px, py, pr))
                if spot:
                    self.lymphocyte(*spot)
        for _ in range(rng.poisson(area * rng.uniform(*MAST_CLUSTERS))):
            first = self.dart(8.5)
            if first is None:
                continue
            cluster = [first]
            for _ in range(int(rng.integers(MAST_PER_CLUSTER[0], MAST_PER_CLUSTER[1] + 1)) - 1):
                spot = self.dart(8.5, near=(first[0], first[1], 25.0))
                if spot:
                    cluster.append(spot)
            for spot in cluster:
                self.mast_cell(*spot, implicit=rng.random() < IMPLICIT_SHARE)
        kinds = [(k, rng.poisson(area * d * rng.uniform(0.7, 1.4))) for k, d in DENSITY.items()]
        radius = {"lymphocyte": 3.6, "plasma_cell": 6.2, "fibroblast": 4.0, "eosinophil": 6.8}
        draw = {"lymphocyte": self.lymphocyte, "plasma_cell": self.plasma_cell, "fibroblast": self.fibroblast,
                "eosinophil": self.eosinophil}
        order = [k for k, count in kinds for _ in range(count)]
        rng.shuffle(order)
        for k in order:
            spot = self.dart(radius[k], tries=20)
            if spot:
                draw[k](*spot)

    # ------------------------------------------------------------------ camera

    def image(self) -> np.ndarray:
        rng, c = self.rng, self.c

        def tinted(filt, amount):
            tint = rng.uniform(0.2, 0.9, 3)
            return np.clip((1 - amount) * np.asarray(filt) + amount * tint, 0.05, 0.99)

        filters = {"h": tinted(HEMATOXYLIN, rng.uniform(0, 0.15)), "e": tinted(EOSIN, rng.uniform(0, 0.15)),
                   "mast": tinted(MAST_GRANULE, rng.uniform(0, 0.1)), "eos": np.asarray(EOS_GRANULE),
                   "rbc": np.asarray(RED_CELL)}
        strength = {"h": rng.uniform(0.7, 1.35), "e": rng.uniform(0.55, 1.3), "mast": rng.uniform(0.8, 1.3),
                    "eos": 1.0, "rbc": 1.0}
        log_t = np.zeros((self.n, self.n, 3), np.float32)
        for k, amt in c.amount.items():
            log_t += np.maximum(amt, 0)[..., None] * strength[k] * np.log(filters[k]).astype(np.float32)
        # defocus: a disk point spread of radius 0.3-1.0 um
        r = max(c.px(rng.uniform(0.3, 1.0)), 0.6)
        k = int(math.ceil(r))
        yy, xx = np.mgrid[-k:k + 1, -k:k + 1]
        disk = (np.hypot(xx, yy) <= r).astype(np.float32)
        disk /= disk.sum()
        trans = np.stack([ndi.convolve(np.exp(log_t[..., ch]), disk, mode="reflect") for ch in range(3)], axis=-1)
        light = 1.0 - rng.uniform(0.0, 0.12) * value_noise(rng, (self.n, self.n), c.px(120))
        white = rng.uniform(225, 250) * np.array([rng.uniform(0.96, 1.02), 1.0, rng.uniform(0.93, 1.03)])
        rgb = white * trans * light[..., None]
        shift = rng.uniform(-0.8, 0.8)  # lateral chromatic aberration: red and blue off by a fraction of a pixel
        rgb[..., 0] = ndi.shift(rgb[..., 0], (0, shift), order=1, mode="nearest")
        rgb[..., 2] = ndi.shift(rgb[..., 2], (0, -shift), order=1, mode="nearest")
        rgb = rgb + rng.normal(0, 1, rgb.shape) * np.sqrt(np.maximum(rgb, 1) * rng.uniform(0.02, 0.08))
        p = self.pad
        rgb = np.clip(rgb[p:p + self.size, p:p + self.size], 0, 255).astype(np.uint8)
        from PIL import Image

        if rng.random() < 0.3:  # a scanner's resolution loss
            small = Image.fromarray(rgb).resize((int(self.size * 0.7),) * 2, Image.BILINEAR)
            rgb = np.asarray(small.resize((self.size, self.size), Image.BICUBIC))
        if rng.random() < 0.4:
            rgb = rendered_tiles.jpeg(rgb, int(rng.integers(50, 90)))
        return np.ascontiguousarray(rgb)

    def render(self):
        self.tissue()
        self.populate()
        rgb = self.image()
        return rgb, rendered_tiles.inside(self.cells, self.size)


# render(seed, size=512, mpp=0.5) -> (H&E, true cells); stem(seed, index); generate(out, tiles, ...)
render, stem, generate = rendered_tiles.wiring(ThirdRenderer, "third")


if __name__ == "__main__":
    raise SystemExit(rendered_tiles.main(generate, __doc__))
