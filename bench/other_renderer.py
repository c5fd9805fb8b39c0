"""A second synthetic renderer, written apart from ``mastctl.synth`` from the criteria of shared/docs/domain.md.

``mastctl synth`` draws all its styles with one drawing code: a model fitted on some of its styles and scored on
another (``faded``) still meets the same nucleus outlines, chromatin, granules and stroma. The issue that asked for a
detector that transfers measured it on an independent renderer; this is one: other primitives for every part of a
tile, so that its score says how far the detector's idea of a mast cell is the criteria's and not ``synth``'s.

- Stroma: eosin from straight fibre segments of random length and width (anti-aliased, then blurred) over a coarse
  fractal field; a few capillaries (an ellipse of flat endothelial nuclei around red cells); glands of columnar
  epithelium around a clear lumen.
- Nuclei: polar outlines r(theta) with a few random harmonics; chromatin as clumps (point sprites) over a flat fill
  with a darker membrane.
- Cells (per 0.1 mm^2 of stroma, as the criteria give them): lymphocytes (bare round dark nuclei), plasma cells
  (eccentric nucleus with rim clumps, purple cytoplasm, a pale hof), fibroblasts (spindles along the fibres),
  eosinophils (two lobes, orange-red coarse granules), explicit mast cells (central plump nucleus, abundant
  granular purple-pink cytoplasm, a sharp border and a thin clear halo) and implicit ones (the same nucleus, pale
  sparse granules, a blurred border and a "dirty" pink halo), mast cells in small groups (the law of neighbourhood).
- Camera: per tile stain vectors turned up to 10 degrees, stain strengths, a white point, a Gaussian focus, sensor
  noise and, on half the tiles, JPEG.

Its tiles are written with the same truth files as ``mastctl synth`` (``mastctl/synth@1``), so ``mastctl compare``
scores them, and ``bench/real_tissue.py`` prints the mast F1 of 16 of them: seed 1 REPORTED, seed 0 (``--choose``)
to CHOOSE on. The shipped models were trained on none of its tiles.

    python bench/other_renderer.py OUT_DIR [--tiles 16] [--seed 0] [--mpp 0.5]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

import rendered_tiles  # bench/ is the script's folder: the tile writer and command line, none of the drawing
from mastctl.cells import LABELS

VERSION = 1  # of the drawing: a folder of tiles rendered by another version is rendered again (bench/real_tissue.py)
H_VEC = (0.650, 0.704, 0.286)  # Ruifrok & Johnston's hematoxylin
E_VEC = (0.072, 0.990, 0.105)  # ... and eosin
G_VEC = (0.10, 0.70, 0.71)  # eosinophil granules: orange-red, they absorb blue as well as green
RBC_VEC = (0.05, 0.80, 0.60)
DENSITY = {"lymphocyte": 55, "plasma_cell": 20, "fibroblast": 22, "eosinophil": 6}  # per 0.1 mm^2 of stroma
MAST_GROUPS = (2, 5)  # groups of mast cells per 0.1 mm^2 of stroma ...
MAST_PER_GROUP = (1, 4)  # ... of this many
IMPLICIT_SHARE = 0.45


@dataclass
class Layers:
    n: int
    mpp: float
    h: np.ndarray = field(init=False)
    e: np.ndarray = field(init=False)
    g: np.ndarray = field(init=False)
    rbc: np.ndarray = field(init=False)
    taken: np.ndarray = field(init=False)  # where a gland or vessel is: no stromal cell there

    def __post_init__(self) -> None:
        self.h, self.e, self.g, self.rbc = (np.zeros((self.n, self.n), np.float32) for _ in range(4))
        self.taken = np.zeros((self.n, self.n), bool)

    def px(self, um: float) -> float:
        return um / self.mpp

    def window(self, x: float, y: float, r_um: float):
        return rendered_tiles.window(x, y, r_um, self.mpp, self.n)  # (rows, cols), um offsets x, y


def polar_shape(rng, a_um: float, b_um: float, roughness: float):
    """A closed outline as a function of (dx, dy) in um: its normalised radius (1 on the border) for an ellipse turned
    by a random angle whose radius carries a few random harmonics (roughness: their summed amplitude)."""
    angle = rng.uniform(0, math.pi)
    amps = rng.dirichlet(np.ones(3)) * roughness
    phases = rng.uniform(0, 2 * math.pi, 3)
    c, s = math.cos(angle), math.sin(angle)

    def radius(dx, dy):
        u, v = dx * c + dy * s, -dx * s + dy * c
        theta = np.arctan2(v / b_um, u / a_um)
        bump = 1.0 + sum(amp * np.sin((k + 2) * theta + ph) for k, (amp, ph) in enumerate(zip(amps, phases)))
        return np.sqrt((u / a_um) ** 2 + (v / b_um) ** 2) / bump

    return radius


def edge(r, soft_um: float, scale_um: float):
    """1 inside the outline, 0 outside, a ramp of ``soft_um`` across it (r: normalised radius, scale: its um)."""
    return np.clip((1.0 - r) * scale_um / max(soft_um, 1e-3) + 0.5, 0.0, 1.0)


def sprinkle(rng, layer: np.ndarray, sl, mask: np.ndarray, density_per_um2: float, size_um: float, amount: float,
             mpp: float) -> None:
    """Point sprites (granules, chromatin clumps): Poisson points inside ``mask`` blurred to ``size_um``."""
    dots = (rng.random(mask.shape) < density_per_um2 * mpp * mpp) & (mask > 0.3)
    if dots.any():
        blurred = ndi.gaussian_filter(dots.astype(np.float32), size_um / mpp)
        layer[sl] += blurred * amount * (2 * math.pi) * (size_um / mpp) ** 2  # each sprite peaks at about ``amount``


class OtherRenderer:
    def __init__(self, seed, size: int = 512, mpp: float = 0.5) -> None:
        self.rng = np.random.default_rng(seed)
        self.size, self.mpp = size, mpp
        self.pad = int(round(15 / mpp))
        self.L = Layers(size + 2 * self.pad, mpp)
        self.cells: list[dict] = []
        self.centres: list[tuple[float, float, float]] = []  # x, y, radius um (spacing)

    # ---------------------------------------------------------------- tissue

    def stroma(self) -> None:
        L, rng = self.L, self.rng
        n = L.n
        fibres = np.zeros((n, n), np.float32)
        area_um2 = (n * L.mpp) ** 2
        base = rng.uniform(0, math.pi)
        for _ in range(int(area_um2 / 60)):
            x, y = rng.uniform(0, n, 2)
            ang = base + rng.normal(0, 0.5)
            length = L.px(rng.uniform(8, 40))
            steps = max(2, int(length))
            t = np.linspace(-0.5, 0.5, steps) * length
            xs, ys = (x + t * math.cos(ang)).astype(int), (y + t * math.sin(ang)).astype(int)
            ok = (xs >= 0) & (xs < n) & (ys >= 0) & (ys < n)
            fibres[ys[ok], xs[ok]] += rng.uniform(0.3, 1.0)
        fibres = ndi.gaussian_filter(fibres, L.px(0.9))
        fibres /= max(float(np.percentile(fibres, 99)), 1e-6)
        coarse = sum(ndi.gaussian_filter(rng.normal(size=(n, n)).astype(np.float32), L.px(s)) * w
                     for s, w in ((25, 1.0), (8, 0.5), (2.5, 0.25)))
        coarse = (coarse - coarse.min()) / (np.ptp(coarse) + 1e-6)
        L.e += np.clip(0.06 + 0.22 * fibres * (0.4 + coarse) + 0.1 * coarse, 0, 1.0)
        L.h += 0.02 + 0.03 * coarse

    def glands(self) -> None:
        L, rng = self.L, self.rng
        area = (L.n * L.mpp) ** 2 / 1e5
        for _ in range(rng.poisson(0.8 * area)):
            x, y = rng.uniform(0, L.n, 2)
            outer = polar_shape(rng, rng.uniform(20, 40), rng.uniform(15, 30), 0.12)
            w = L.window(x, y, 48)
            if w is None:
                continue
            sl, dx, dy = w
            r = outer(dx, dy)
            gland = edge(r, 0.8, 25)
            lumen = edge(r / 0.55, 0.8, 14)
            L.e[sl] = L.e[sl] * (1 - gland) + gland * (1 - lumen) * rng.uniform(0.25, 0.4)
            L.h[sl] = L.h[sl] * (1 - gland) + gland * (1 - lumen) * 0.05
            L.taken[sl] |= gland > 0.2
            # columnar nuclei along the base: every ~5 um of the border
            rim = 25 * 2 * math.pi / 5  # nuclei along the border (a fixed count, whatever the gland's size)
            for k in range(int(rim)):
                th = 2 * math.pi * k / rim + rng.normal(0, 0.03)
                # find the border radius along this direction by stepping out
                for d in np.arange(5, 48, 0.5):
                    px_, py_ = x + L.px(d * math.cos(th)), y + L.px(d * math.sin(th))
                    if not (0 <= px_ < L.n and 0 <= py_ < L.n):
                        break
                    if outer(np.float32(d * math.cos(th)), np.float32(d * math.sin(th))) >= 0.93:
                        self.nucleus(px_ - L.px(1.5 * math.cos(th)), py_ - L.px(1.5 * math.sin(th)), 3.5, 1.6,
                                     th, rng.uniform(0.55, 0.8), 0.1, "epithelial", None, spacing=0)
                        break

    def vessels(self) -> None:
        L, rng = self.L, self.rng
        area = (L.n * L.mpp) ** 2 / 1e5
        for _ in range(rng.poisson(1.5 * area)):
            x, y = rng.uniform(0, L.n, 2)
            a, b = rng.uniform(4, 9), rng.uniform(3, 6)
            outline = polar_shape(rng, a, b, 0.05)
            w = L.window(x, y, a + 3)
            if w is None:
                continue
            sl, dx, dy = w
            r = outline(dx, dy)
            inside = edge(r, 0.5, a)
            L.e[sl] *= 1 - 0.85 * inside
            L.taken[sl] |= inside > 0.2
            for _ in range(rng.integers(0, 5)):  # red cells
                rx, ry = rng.normal(0, a / 3, 2)
                w2 = L.window(x + L.px(rx), y + L.px(ry), 4)
                if w2 is not None:
                    sl2, dx2, dy2 = w2
                    L.rbc[sl2] += 0.55 * edge(np.hypot(dx2, dy2) / 3.6, 0.6, 3.6)
            for _ in range(rng.integers(1, 3)):  # flat endothelial nuclei on the wall
                th = rng.uniform(0, 2 * math.pi)
                cx, cy = x + L.px(a * math.cos(th)), y + L.px(b * math.sin(th))
                self.nucleus(cx, cy, 3.5, 1.0, th + math.pi / 2, 0.7, 0.05, "endothelial", None, spacing=0)

    # ---------------------------------------------------------------- cells

    def free(self, x: float, y: float, r_um: float) -> bool:
        if not (0 <= x < self.L.n and 0 <= y < self.L.n) or self.L.taken[int(y), int(x)]:
            return False
        return all(math.hypot(x - cx, y - cy) * self.L.mpp >= r_um + cr for cx, cy, cr in self.centres)

    def nucleus(self, x, y, a_um, b_um, angle, darkness, roughness, label, kind, spacing: float = 3.0,
                clumps: float = 0.4, rim_clumps: bool = False) -> bool:
        L, rng = self.L, self.rng
        if spacing and not self.free(x, y, spacing):
            return False
        outline = polar_shape(rng, a_um, b_um, roughness)
        c, s = math.cos(angle), math.sin(angle)

        def turned(dx, dy):  # the polar shape's own angle is random: turn it onto ``angle``
            return outline(dx * c + dy * s, -dx * s + dy * c)

        w = L.window(x, y, max(a_um, b_um) * 1.4)
        if w is None:
            return False
        sl, dx, dy = w
        r = turned(dx, dy)
        body = edge(r, 0.35, max(a_um, b_um))
        membrane = np.clip(1 - np.abs(r - 0.9) / 0.12, 0, 1) * body
        L.h[sl] += body * darkness * 0.75 + membrane * darkness * 0.35
        inner = body if not rim_clumps else membrane
        sprinkle(rng, L.h, sl, inner, 0.9, 0.35, darkness * clumps, L.mpp)
        L.e[sl] *= 1 - 0.7 * body
        if spacing:
            self.centres.append((x, y, max(a_um, b_um)))
        if label is not None:
            self.cells.append({"x": x - self.pad, "y": y - self.pad, "type": label,
                               "label": label if label in LABELS else "other", "kind": kind})
        return True

    def cytoplasm(self, x, y, a_um, b_um, angle, h, e, soft_um, granules=(0.0, 0.0, 0.0), halo=0.0, dirty=0.0):
        """A cell body; granules: (per um^2, size um, amount of each of H and E); halo: a clear ring's width (um);
        dirty: a muddy pink ring's strength."""
        L, rng = self.L, self.rng
        outline = polar_shape(rng, a_um, b_um, 0.06)
        w = L.window(x, y, max(a_um, b_um) + 5)
        if w is None:
            return
        sl, dx, dy = w
        c, s = math.cos(angle), math.sin(angle)
        r = outline(dx * c + dy * s, -dx * s + dy * c)
        scale = max(a_um, b_um)
        body = edge(r, soft_um, scale)
        if halo:
            ring = edge(r / (1 + halo / scale), 0.4, scale + halo) * (1 - body)
            L.e[sl] *= 1 - 0.8 * ring
        if dirty:
            ring = edge(r / (1 + 3.5 / scale), 2.0, scale + 3.5) * (1 - body)
            noise = 0.5 + ndi.gaussian_filter(rng.random(ring.shape).astype(np.float32), 0.6 / L.mpp) * 1.0
            L.e[sl] += ring * dirty * noise
            L.h[sl] += ring * dirty * 0.3 * noise
        L.e[sl] = L.e[sl] * (1 - body) + body * e
        L.h[sl] += body * h
        if granules[0]:
            density, size, amount = granules
            sprinkle(rng, L.h, sl, body, density, size, amount, L.mpp)
            sprinkle(rng, L.e, sl, body, density * 0.6, size, amount * 0.8, L.mpp)

    def place(self, r_um: float, near=None, tries: int = 60):
        for _ in range(tries):
            if near is None:
                x, y = self.rng.uniform(0, self.L.n, 2)
            else:
                x, y = near[0] + self.L.px(self.rng.normal(0, 12)), near[1] + self.L.px(self.rng.normal(0, 12))
            if self.free(x, y, r_um):
                return x, y
        return None

    def populate(self) -> None:
        L, rng = self.L, self.rng
        stroma_um2 = float((~L.taken).sum()) * L.mpp ** 2
        per = stroma_um2 / 1e5
        fibre = rng.uniform(0, math.pi)
        for _ in range(rng.poisson(rng.uniform(*MAST_GROUPS) * per)):
            at = self.place(8)
            for k in range(rng.integers(MAST_PER_GROUP[0], MAST_PER_GROUP[1] + 1)):
                p = at if k == 0 else self.place(8, near=at)
                if p is not None:
                    self.mast(*p, implicit=bool(rng.random() < IMPLICIT_SHARE))
        for label, density in DENSITY.items():
            for _ in range(rng.poisson(density * rng.uniform(0.7, 1.3) * per)):
                p = self.place({"lymphocyte": 3.2, "plasma_cell": 5.0, "fibroblast": 3.0, "eosinophil": 6.0}[label])
                if p is not None:
                    getattr(self, label)(*p, fibre=fibre)

    def mast(self, x, y, implicit: bool) -> None:
        rng = self.rng
        a = rng.uniform(5.5, 8.0)
        b = a * rng.uniform(0.75, 1.0)
        ang = rng.uniform(0, math.pi)
        nr = rng.uniform(2.4, 3.3)
        if implicit:
            self.cytoplasm(x, y, a, b, ang, 0.04, rng.uniform(0.1, 0.2), soft_um=rng.uniform(1.2, 2.0),
                           granules=(0.35, 0.35, rng.uniform(0.06, 0.12)), dirty=rng.uniform(0.08, 0.16))
        else:
            self.cytoplasm(x, y, a, b, ang, 0.06, rng.uniform(0.3, 0.5), soft_um=0.4,
                           granules=(1.2, 0.4, rng.uniform(0.12, 0.22)), halo=rng.uniform(0.5, 1.2))
        self.centres.append((x, y, a))
        nx, ny = x + self.L.px(rng.normal(0, 0.4)), y + self.L.px(rng.normal(0, 0.4))
        self.nucleus(nx, ny, nr, nr * rng.uniform(0.8, 1.0), ang, rng.uniform(0.9, 1.25), 0.05, "mast_cell",
                     "implicit" if implicit else "explicit", spacing=0)

    def lymphocyte(self, x, y, fibre) -> None:
        r = self.rng.uniform(2.2, 3.1)
        self.cytoplasm(x, y, r + 0.5, r + 0.4, 0.0, 0.05, 0.12, soft_um=0.4)
        self.nucleus(x, y, r, r * self.rng.uniform(0.85, 1.0), 0.0, self.rng.uniform(1.1, 1.5), 0.06, "lymphocyte",
                     None, spacing=r + 0.5, clumps=0.2)

    def plasma_cell(self, x, y, fibre) -> None:
        rng = self.rng
        a, b = rng.uniform(5.0, 6.5), rng.uniform(3.6, 4.6)
        ang = rng.uniform(0, 2 * math.pi)
        self.cytoplasm(x, y, a, b, ang, rng.uniform(0.18, 0.28), rng.uniform(0.18, 0.3), soft_um=0.5)
        nr = rng.uniform(2.2, 2.8)
        off = self.L.px(a - nr - 0.6)
        nx, ny = x + off * math.cos(ang), y + off * math.sin(ang)
        hof = self.L.window(x + 0.45 * off * math.cos(ang), y + 0.45 * off * math.sin(ang), 2.5)
        if hof is not None:  # the pale zone beside the nucleus
            sl, dx, dy = hof
            pale = edge(np.hypot(dx, dy) / 1.6, 0.8, 1.6)
            self.L.h[sl] *= 1 - 0.6 * pale
            self.L.e[sl] *= 1 - 0.4 * pale
        self.centres.append((x, y, a))
        self.nucleus(nx, ny, nr, nr * rng.uniform(0.85, 1.0), ang, rng.uniform(0.8, 1.1), 0.04, "plasma_cell", None,
                     spacing=0, clumps=0.8, rim_clumps=True)
        self.cells[-1]["x"], self.cells[-1]["y"] = x - self.pad, y - self.pad  # the cell, not its nucleus

    def fibroblast(self, x, y, fibre) -> None:
        rng = self.rng
        self.nucleus(x, y, rng.uniform(4.5, 8.0), rng.uniform(0.9, 1.5), fibre + rng.normal(0, 0.25),
                     rng.uniform(0.6, 0.9), 0.08, "fibroblast", None, spacing=3.0)

    def eosinophil(self, x, y, fibre) -> None:
        rng, L = self.rng, self.L
        r = rng.uniform(5.0, 6.5)
        self.cytoplasm(x, y, r, r * rng.uniform(0.85, 1.0), rng.uniform(0, math.pi), 0.02, 0.25, soft_um=0.4)
        w = L.window(x, y, r + 1)
        if w is not None:
            sl, dx, dy = w
            sprinkle(rng, L.g, sl, edge(np.hypot(dx, dy) / r, 0.4, r), 1.4, 0.45, rng.uniform(0.35, 0.55), L.mpp)
        self.centres.append((x, y, r))
        ang, gap = rng.uniform(0, math.pi), rng.uniform(1.3, 1.8)
        for sign in (-1, 1):
            lr = rng.uniform(1.7, 2.2)
            self.nucleus(x + sign * L.px(gap) * math.cos(ang), y + sign * L.px(gap) * math.sin(ang), lr, lr * 0.85,
                         ang, rng.uniform(0.9, 1.2), 0.05, "eosinophil" if sign < 0 else None, None, spacing=0)
        self.cells[-1]["x"], self.cells[-1]["y"] = x - self.pad, y - self.pad

    # ---------------------------------------------------------------- camera

    def image(self, jpeg: int | None) -> np.ndarray:
        L, rng = self.L, self.rng

        def turned(v, deg):
            v = np.asarray(v, float) / np.linalg.norm(v)
            axis = rng.normal(size=3)
            axis -= axis.dot(v) * v
            axis /= np.linalg.norm(axis)
            t = math.radians(deg)
            out = np.abs(v * math.cos(t) + axis * math.sin(t))
            return out / np.linalg.norm(out)

        vh, ve = turned(H_VEC, rng.uniform(0, 10)), turned(E_VEC, rng.uniform(0, 10))
        gh, ge = rng.uniform(0.75, 1.3), rng.uniform(0.6, 1.3)
        od = (L.h[..., None] * vh * gh + L.e[..., None] * ve * ge + L.g[..., None] * np.asarray(G_VEC)
              + L.rbc[..., None] * np.asarray(RBC_VEC))
        od = ndi.gaussian_filter(od, (L.px(rng.uniform(0.25, 0.8)),) * 2 + (0,))
        white = rng.uniform(232, 252) * np.array([1.0, rng.uniform(0.97, 1.01), rng.uniform(0.95, 1.02)])
        rgb = white * 10.0 ** (-od) + rng.normal(0, rng.uniform(1.0, 3.0), od.shape)
        p = self.pad
        rgb = np.clip(rgb[p:p + self.size, p:p + self.size], 0, 255).astype(np.uint8)
        if jpeg:
            rgb = rendered_tiles.jpeg(rgb, jpeg)
        return rgb

    def render(self):
        self.stroma()
        self.glands()
        self.vessels()
        self.populate()
        jpeg = int(self.rng.integers(60, 91)) if self.rng.random() < 0.5 else None
        rgb = self.image(jpeg)
        return rgb, rendered_tiles.inside(self.cells, self.size)


# render(seed, size=512, mpp=0.5) -> (H&E, true cells); stem(seed, index); generate(out, tiles, ...)
render, stem, generate = rendered_tiles.wiring(OtherRenderer, "other")


if __name__ == "__main__":
    raise SystemExit(rendered_tiles.main(generate, __doc__))
