"""Synthetic paired H&E / tryptase-IHC tiles with exact truth.

No public data set labels mast cells in H&E, so mastctl renders its own: a
patch of gut-like mucosa (fibrous stroma, crypts, fat, capillaries) with
every cell type a pathologist would weigh against a mast cell, drawn at its
size in micrometres and turned into colour by Beer-Lambert stain physics.

- H&E: hematoxylin (nuclei, some cytoplasm) + eosin (stroma, cytoplasm, red
  cells), per-slide stain-vector rotation and intensity, focus blur, sensor
  noise, optional JPEG artefacts.
- IHC (the next section, tryptase): hematoxylin counterstain on every nucleus +
  DAB on every mast cell, explicit or implicit, shifted by a known small rigid
  transform (``transform.matrix`` maps H&E pixels to IHC pixels).
- Look-alikes: lymphocytes (bare dark round nucleus, some with a retraction
  halo), plasma cells (eccentric clock-face nucleus, hof), fibroblasts (spindle
  nuclei along fibres), eosinophils (bilobed nucleus, coarse orange-red
  granules), endothelial cells and red cells in capillaries, epithelium.
- Mast cells: explicit ("fried egg": central round nucleus, abundant granular
  purple-pink cytoplasm, sharp border) and implicit (same nucleus, pale
  cytoplasm, blurred border, faint muddy "dirty halo"); they come in clusters
  (the law of neighbourhood).

Coordinates are continuous pixels with the top-left corner of the image at
(0, 0), so the centre of pixel (row r, col c) is (c + 0.5, r + 0.5).
Everything is drawn from ``numpy.random.default_rng(seed)``: same seed, same
tile, on every machine.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mastctl import stains
from mastctl.cells import LABELS

SCHEMA = "mastctl/synth@1"

# the cell types drawn here, named in mastctl's one vocabulary (mastctl.cells.LABELS)
TYPE_LABEL = {t: (t if t in LABELS else "other")
              for t in ("mast_cell", "lymphocyte", "plasma_cell", "fibroblast", "eosinophil", "endothelial", "epithelial")}

# Eosinophil granules look orange-red, not eosin's magenta: they absorb blue too.
EOSINOPHIL_GRANULE = (0.04, 0.72, 0.69)

# Cells per 0.1 mm^2 of stroma (lamina propria of the gut), low..high.
DENSITY = {
    "lymphocyte": (40, 80),
    "plasma_cell": (15, 30),
    "fibroblast": (14, 26),
    "eosinophil": (3, 9),
    "mast_cell": (10, 20),
}


@dataclass(frozen=True)
class Style:
    """How a tile is drawn: its tissue, its crowd, its stains and its camera.

    ``gut`` is the renderer as it always was (same seed, same tile). The others change what a model
    fitted on one rendering could learn by heart: a sheet of round cells (a mast cell tumour, a
    lymphoid aggregate), carcinoma nests of large pale nuclei, and ``faded`` — other stain vectors and
    intensities, a yellow cast, soft focus and JPEG, coarse irregular nuclei, a denser crowd — which
    no shipped model is trained on: scoring on it measures transfer, not memory. ``washed`` (weak
    hematoxylin, strong eosin, a blue cast, soft focus and JPEG) is not trained on either; choices
    between models are made on it, so that ``faded`` stays a measurement.
    """

    name: str
    crypts: float = 0.9  # per 0.1 mm^2
    fat: float = 0.35  # chance of a fat lobule
    nests: float = 0.0  # carcinoma nests per 0.1 mm^2
    sheet: bool = False  # a dense sheet of round cells over much of the tile
    crowd: float = 1.0  # density of the look-alikes
    rot_deg: tuple[float, float] = (5.0, 5.0)  # largest rotation of the hematoxylin, eosin vectors
    eosin_shift_deg: float = 0.0  # eosin turned towards purple by this much
    gains: tuple[tuple[float, float], tuple[float, float]] = ((0.75, 1.25), (0.7, 1.25))  # hematoxylin, eosin
    cast: tuple[float, float, float] | None = None  # white balance (R, G, B multipliers); None: a random neutral one
    blur_um: tuple[float, float] = (0.2, 0.7)
    jpeg: tuple[int, int] | None = None
    wobble: float = 1.0  # nucleus outline irregularity, relative
    chromatin: float = 1.0  # chromatin texture contrast, relative
    size: float = 1.0  # cell and nucleus sizes, relative


STYLES = {
    "gut": Style("gut"),
    "sheet": Style("sheet", crypts=0.2, fat=0.1, sheet=True, crowd=0.6, rot_deg=(7.0, 7.0), size=1.08),
    "carcinoma": Style("carcinoma", crypts=0.4, fat=0.1, nests=6.0, crowd=1.2, rot_deg=(6.0, 8.0),
                       gains=((0.9, 1.35), (0.5, 1.0))),
    "faded": Style("faded", crypts=0.6, fat=0.2, crowd=1.5, rot_deg=(8.0, 6.0), eosin_shift_deg=12.0,
                   gains=((1.0, 1.45), (0.4, 0.8)), cast=(1.0, 0.96, 0.84), blur_um=(0.5, 1.0), jpeg=(55, 80),
                   wobble=2.4, chromatin=1.7, size=1.1),
    "washed": Style("washed", crypts=0.7, fat=0.25, crowd=1.3, rot_deg=(7.0, 7.0), eosin_shift_deg=-8.0,
                    gains=((0.6, 0.9), (0.9, 1.4)), cast=(0.9, 0.97, 1.0), blur_um=(0.6, 1.1), jpeg=(50, 75),
                    wobble=1.8, chromatin=1.4, size=0.95),
}


def derived_style(base: str, name: str, **changes) -> str:
    """Register ``base`` with ``changes`` (``Style`` fields) as the style ``name``, and return the name: the renderer
    looks a style up by name (``SynthOptions.style``), so a bench can draw a variant of one."""
    STYLES[name] = replace(STYLES[base], name=name, **changes)
    return name


TRAINING_STYLES = ("gut", "sheet", "carcinoma")
HELD_OUT_STYLE = "faded"  # never in a shipped model's training data, and nothing is chosen on it
DEV_STYLE = "washed"  # never trained on either: the camera and focus shift the other way, to choose on


@dataclass(frozen=True)
class SynthOptions:
    size: int = 512  # pixels per side
    mpp: float = 0.5  # micrometres per pixel
    jpeg_quality: int | None = None  # None: lossless PNG; else JPEG artefacts at this quality
    style: str = "gut"  # one of STYLES

    @property
    def look(self) -> Style:
        if self.style not in STYLES:
            from mastctl.errors import UsageError

            raise UsageError(f"unknown synthetic style {self.style!r} (choose from {', '.join(STYLES)})")
        return STYLES[self.style]


@dataclass
class SynthCell:
    id: int
    type: str
    kind: str | None
    x: float  # H&E tile pixels
    y: float
    nucleus_um: tuple[float, float]  # nucleus semi-axes
    cell_um: tuple[float, float]  # cell semi-axes (nucleus for bare nuclei)
    angle: float = 0.0
    ihc: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return TYPE_LABEL[self.type]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["label"] = self.label
        d["x"], d["y"] = round(self.x, 2), round(self.y, 2)
        d["nucleus_um"] = [round(v, 2) for v in self.nucleus_um]
        d["cell_um"] = [round(v, 2) for v in self.cell_um]
        d["angle"] = round(self.angle, 4)
        return d


@dataclass
class SynthTile:
    he: np.ndarray  # H x W x 3 uint8
    ihc: np.ndarray
    cells: list[SynthCell]
    mpp: float
    transform: dict[str, Any]
    stain: dict[str, Any]
    seed: int | list[int]
    style: str = "gut"

    def truth(self, stem: str) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "he_image": f"{stem}_he.png",
            "ihc_image": f"{stem}_ihc.png",
            "width": int(self.he.shape[1]),
            "height": int(self.he.shape[0]),
            "mpp": self.mpp,
            "seed": self.seed,
            "style": self.style,
            "transform": self.transform,
            "stain": self.stain,
            "cells": [c.to_dict() for c in self.cells],
        }


# --------------------------------------------------------------------------- drawing helpers


class Canvas:
    """Concentration maps (hematoxylin, eosin, DAB, IHC counterstain) over a padded tile."""

    def __init__(self, size: int, pad: int, mpp: float) -> None:
        n = size + 2 * pad
        self.size, self.pad, self.mpp, self.n = size, pad, mpp, n
        # Background stroma (fibres, ground substance), shown where stroma_keep is 1 ...
        self.bg_h = np.zeros((n, n), np.float32)
        self.bg_e = np.zeros((n, n), np.float32)
        self.bg_ih = np.zeros((n, n), np.float32)
        self.stroma_keep = np.ones((n, n), np.float32)  # 0 where a cell or hole replaces stroma
        # ... and everything drawn on top of it: cells, epithelium, vessels.
        self.h = np.zeros((n, n), np.float32)  # H&E hematoxylin
        self.e = np.zeros((n, n), np.float32)  # H&E eosin
        self.ih = np.zeros((n, n), np.float32)  # IHC hematoxylin counterstain
        self.granule = np.zeros((n, n), np.float32)  # eosinophil granules (orange-red)
        self.dab = np.zeros((n, n), np.float32)
        self.occupied = np.zeros((n, n), bool)

    def px(self, um: float) -> float:
        return um / self.mpp

    def box(self, cx: float, cy: float, radius_px: float):
        """Index window around (cx, cy) in canvas pixels and its coordinate grids."""
        r = int(math.ceil(radius_px)) + 2
        x0, y0 = min(max(int(cx) - r, 0), self.n), min(max(int(cy) - r, 0), self.n)
        x1, y1 = max(min(int(cx) + r + 1, self.n), x0), max(min(int(cy) + r + 1, self.n), y0)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        return (slice(y0, y1), slice(x0, x1)), xx + 0.5, yy + 0.5


def ellipse_distance(xx, yy, cx, cy, a, b, angle, wobble=None):
    """Normalised elliptic radius (1 on the border); ``wobble`` makes the outline irregular."""
    c, s = math.cos(angle), math.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    d = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    if wobble is not None:
        theta = np.arctan2(v, u)
        amps, phases = wobble
        d = d / (1.0 + sum(amp * np.cos((k + 2) * theta + ph) for k, (amp, ph) in enumerate(zip(amps, phases))))
    return d


def soft(d, edge_frac):
    """1 inside, 0 outside, a linear ramp of relative width ``edge_frac`` across the border."""
    edge = max(edge_frac, 1e-3)
    return np.clip((1.0 - d) / edge + 0.5, 0.0, 1.0)


def texture(rng, shape, sigma_px, contrast=1.0):
    """Zero-mean, unit-ish granular texture: blurred white noise."""
    from scipy.ndimage import gaussian_filter

    noise = rng.normal(size=shape).astype(np.float32)
    if sigma_px > 0.3:
        noise = gaussian_filter(noise, sigma_px)
    std = float(noise.std()) or 1.0
    return contrast * noise / std


def smooth_field(rng, n, sigma_px, low=0.0, high=1.0):
    """A smooth random field scaled to [low, high]."""
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.normal(size=(n, n)).astype(np.float32), sigma_px, mode="wrap")
    f = (f - f.min()) / (f.max() - f.min() + 1e-6)
    return low + (high - low) * f


# --------------------------------------------------------------------------- renderer


class Renderer:
    def __init__(self, options: SynthOptions, seed: int | list[int]) -> None:
        self.o = options
        self.style = options.look
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        mpp = options.mpp
        pad = int(math.ceil(0.06 * options.size + 16.0 / mpp + 20.0 / mpp))
        self.cv = Canvas(options.size, pad, mpp)
        self.cells: list[SynthCell] = []
        self._cell_xy: list[tuple[float, float, float]] = []  # canvas x, y, radius px (for spacing)

    # ------------------------------------------------------------------ tissue

    def tissue(self) -> None:
        cv, rng = self.cv, self.rng
        n = cv.n
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        # Collagen: noise stretched along a slowly turning, wavy fibre direction
        # (long streaks along it, thin across it), in bundles with pale gaps.
        from scipy.ndimage import map_coordinates

        theta = rng.uniform(0, math.pi) + smooth_field(rng, n, cv.px(45), -0.5, 0.5)
        self.fibre_angle = theta
        wave = smooth_field(rng, n, cv.px(12), -1.0, 1.0) * cv.px(rng.uniform(2.0, 5.0))
        along = xx * np.cos(theta) + yy * np.sin(theta)
        across = -xx * np.sin(theta) + yy * np.cos(theta) + wave
        streaks = np.zeros((n, n), np.float32)
        for length_um, width_um, weight in ((25.0, 1.2, 0.6), (60.0, 3.5, 0.4)):
            grid = rng.normal(size=(int(n / cv.px(width_um)) + 8, int(n / cv.px(length_um)) + 8)).astype(np.float32)
            streaks += weight * map_coordinates(grid, [across / cv.px(width_um), along / cv.px(length_um)], order=3, mode="grid-wrap")
        bundles = np.clip(0.5 + 0.45 * streaks, 0, 1) ** 1.6
        patchy = smooth_field(rng, n, cv.px(30), 0.35, 1.0)  # loose (oedematous) vs dense stroma
        grain = texture(rng, (n, n), cv.px(0.6), 0.06)
        cv.bg_e += (0.06 + 0.55 * bundles * patchy + grain).clip(0.02, None) * (0.5 + 0.5 * patchy)
        cv.bg_h += 0.03 * patchy  # faint basophilia of the ground substance
        cv.bg_ih += 0.02 * patchy
        self._holes(xx, yy)

    def _holes(self, xx, yy) -> None:
        cv, rng = self.cv, self.rng
        n = cv.n
        area_mm2 = (n * cv.mpp / 1000.0) ** 2
        # Crypts: a lumen lined by epithelium with basal, elongated nuclei.
        for _ in range(rng.poisson(self.style.crypts * area_mm2 / 0.1)):
            cx, cy = rng.uniform(0, n, 2)
            a, b = cv.px(rng.uniform(18, 35)), cv.px(rng.uniform(14, 28))
            ang = rng.uniform(0, math.pi)
            thick = cv.px(rng.uniform(16, 24))
            d_lumen = ellipse_distance(xx, yy, cx, cy, a, b, ang)
            d_outer = ellipse_distance(xx, yy, cx, cy, a + thick, b + thick, ang)
            lumen = soft(d_lumen, 0.05)
            epi = soft(d_outer, 0.04) * (1 - lumen)
            cv.stroma_keep *= 1 - soft(d_outer, 0.04)
            mucin = texture(rng, (n, n), cv.px(1.5), 0.05)
            cv.e += epi * (0.38 + mucin) + lumen * 0.04
            cv.h += epi * 0.12 + lumen * 0.03
            cv.ih += epi * 0.06
            cv.occupied |= soft(ellipse_distance(xx, yy, cx, cy, a + thick + cv.px(3), b + thick + cv.px(3), ang), 0.01) > 0.5
            self._epithelial_nuclei(cx, cy, a, b, thick, ang)
        # Fat: a lobule of packed, polygonal empty cells with thin membranes.
        if rng.random() < self.style.fat:
            from scipy.spatial import cKDTree

            cx, cy = rng.uniform(0, n, 2)
            k = int(rng.integers(4, 10))
            seeds = np.column_stack([cx + rng.normal(0, cv.px(35), k), cy + rng.normal(0, cv.px(35), k)])
            dist, _ = cKDTree(seeds).query(np.column_stack([xx.ravel(), yy.ravel()]), k=2)
            d1, d2 = dist[:, 0].reshape(n, n), dist[:, 1].reshape(n, n)
            lobule = soft(d1 / cv.px(rng.uniform(22, 30)), 0.05)
            membrane = np.clip(1 - (d2 - d1) / cv.px(0.9), 0, 1) * lobule
            hole = lobule * (1 - membrane)
            cv.stroma_keep *= 1 - lobule
            cv.e += membrane * 0.4 + hole * 0.01
            cv.occupied |= lobule > 0.1
        # Clefts: thin tears of the section.
        for _ in range(rng.poisson(1.0)):
            cx, cy = rng.uniform(0, n, 2)
            d = ellipse_distance(xx, yy, cx, cy, cv.px(rng.uniform(15, 40)), cv.px(rng.uniform(1, 3)), rng.uniform(0, math.pi))
            cv.stroma_keep *= 1 - soft(d, 0.2)
        # Capillaries: a small lumen, red cells, flat endothelial nuclei.
        for _ in range(rng.poisson(3.0 * area_mm2 / 0.1)):
            self._capillary(xx, yy, *rng.uniform(0, n, 2))
        if self.style.nests:
            self._nests(xx, yy, area_mm2)
        if self.style.sheet:
            self._sheet_region(xx, yy)

    def _nests(self, xx, yy, area_mm2: float) -> None:
        """Carcinoma: nests of crowded epithelial cells, large pale vesicular nuclei with nucleoli (look-alikes)."""
        cv, rng = self.cv, self.rng
        n = cv.n
        for _ in range(rng.poisson(self.style.nests * area_mm2 / 0.1)):
            cx, cy = rng.uniform(0, n, 2)
            a, b = cv.px(rng.uniform(25, 55)), cv.px(rng.uniform(18, 40))
            ang = rng.uniform(0, math.pi)
            d = ellipse_distance(xx, yy, cx, cy, a, b, ang)
            nest = soft(d, 0.05)
            cv.stroma_keep *= 1 - nest
            cv.e += nest * (0.30 + texture(rng, (n, n), cv.px(1.2), 0.06))
            cv.h += nest * 0.06
            cv.ih += nest * 0.04
            cv.occupied |= nest > 0.5
            spacing = cv.px(rng.uniform(12.0, 15.0))
            for gy in np.arange(cy - b, cy + b, spacing):
                for gx in np.arange(cx - a, cx + a, spacing):
                    x, y = gx + rng.normal(0, spacing * 0.2), gy + rng.normal(0, spacing * 0.2)
                    if not (0 <= x < n and 0 <= y < n) or nest[int(y), int(x)] < 0.9:
                        continue
                    na = rng.uniform(3.8, 5.5) * self.style.size
                    self._nucleus(x, y, na, na * rng.uniform(0.6, 0.9), rng.uniform(0, math.pi), dark=rng.uniform(0.3, 0.45),
                                  chromatin="coarse", wobble=0.1)
                    win, bx, by = cv.box(x, y, cv.px(1.5))
                    cv.h[win] += soft(ellipse_distance(bx, by, x, y, cv.px(0.9), cv.px(0.9), 0), 0.3) * 0.8  # a nucleolus
                    self._record("epithelial", None, x, y, (na, na * 0.75), (na + 3, na + 3), 0.0, spacing=0.0)

    def _sheet_region(self, xx, yy) -> None:
        """A sheet of round cells replaces most of the stroma (the crowd is placed in populate)."""
        cv, rng = self.cv, self.rng
        c = cv.n / 2 + rng.normal(0, cv.n * 0.1, 2)
        a, b = cv.n * rng.uniform(0.35, 0.55), cv.n * rng.uniform(0.3, 0.5)
        d = ellipse_distance(xx, yy, c[0], c[1], a, b, rng.uniform(0, math.pi))
        self.sheet = soft(d, 0.15)
        cv.bg_e *= 1 - 0.7 * self.sheet  # few fibres inside a sheet
        self.sheet_centre, self.sheet_axes = c, (a, b)

    def _epithelial_nuclei(self, cx, cy, a, b, thick, ang) -> None:
        cv, rng = self.cv, self.rng
        perimeter = math.pi * (a + b + 2 * thick)
        count = int(perimeter / cv.px(rng.uniform(5.0, 6.5)))
        for k in range(count):
            t = 2 * math.pi * (k + rng.uniform(-0.2, 0.2)) / count
            ca, sa = math.cos(ang), math.sin(ang)
            depth = thick * rng.uniform(0.55, 0.8)  # basal half of the epithelium
            lx, ly = (a + depth) * math.cos(t), (b + depth) * math.sin(t)
            x, y = cx + lx * ca - ly * sa, cy + lx * sa + ly * ca
            normal = ang + math.atan2((a + depth) * math.sin(t), (b + depth) * math.cos(t))
            if not (0 <= x < cv.n and 0 <= y < cv.n):
                continue
            self._nucleus(x, y, rng.uniform(4.0, 5.5), rng.uniform(1.6, 2.2), normal, dark=rng.uniform(0.75, 1.0))
            self._record("epithelial", None, x, y, (5.0, 2.0), (5.0, 2.0), normal, spacing=0.0)

    def _capillary(self, xx_full, yy_full, cx, cy) -> None:
        cv, rng = self.cv, self.rng
        r = cv.px(rng.uniform(3.5, 6.5))
        win, xx, yy = cv.box(cx, cy, r + cv.px(4))
        if cv.occupied[win].any():
            return
        d = ellipse_distance(xx, yy, cx, cy, r, r * rng.uniform(0.6, 1.0), rng.uniform(0, math.pi))
        cv.stroma_keep[win] *= 1 - soft(d, 0.1)
        wall = np.clip(1 - np.abs(d - 1.0) / 0.25, 0, 1)
        cv.e[win] += wall * 0.3
        for _ in range(rng.integers(1, 4)):  # red cells: bright eosin discs, no nucleus
            rx, ry = cx + rng.normal(0, r * 0.3), cy + rng.normal(0, r * 0.3)
            rd = ellipse_distance(xx, yy, rx, ry, cv.px(3.5), cv.px(3.5) * rng.uniform(0.6, 1), rng.uniform(0, math.pi))
            cv.e[win] += soft(rd, 0.3) * rng.uniform(0.9, 1.3)
        for _ in range(rng.integers(1, 3)):
            t = rng.uniform(0, 2 * math.pi)
            ex, ey = cx + (r + cv.px(0.8)) * math.cos(t), cy + (r + cv.px(0.8)) * math.sin(t)
            tangent = t + math.pi / 2
            self._nucleus(ex, ey, rng.uniform(4.5, 6.0), rng.uniform(1.0, 1.5), tangent, dark=rng.uniform(0.7, 0.95))
            self._record("endothelial", None, ex, ey, (5.0, 1.2), (5.0, 1.2), tangent, spacing=0.0)
        cv.occupied[win] |= d < 1.6

    # ------------------------------------------------------------------ cells

    def _nucleus(self, x, y, a_um, b_um, angle, dark=1.0, chromatin="fine", wobble=0.06, ihc_gain=0.6):
        cv, rng = self.cv, self.rng
        a, b = cv.px(a_um), cv.px(b_um)
        win, xx, yy = cv.box(x, y, max(a, b) * 1.3)
        wob = (rng.normal(0, wobble * self.style.wobble, 3), rng.uniform(0, 2 * math.pi, 3))
        d = ellipse_distance(xx, yy, x, y, a, b, angle, wob)
        m = soft(d, 0.12 + 0.5 / max(b, 1.0))
        if chromatin == "clock":  # plasma cell: peripheral chromatin clumps
            theta = np.arctan2(yy - y, xx - x)
            clumps = 0.55 + 0.45 * np.clip(np.cos(6 * theta + rng.uniform(0, 6)), 0, 1) * np.clip((d - 0.35) / 0.4, 0, 1)
            conc = dark * (0.5 + 0.7 * clumps)
        else:
            conc = dark * (1.0 + texture(rng, m.shape, cv.px(0.35), (0.15 if chromatin == "fine" else 0.3) * self.style.chromatin))
        cv.h[win] += m * conc * 1.1
        cv.ih[win] += m * conc * ihc_gain
        cv.stroma_keep[win] *= 1 - 0.9 * m
        return m

    def _record(self, type_, kind, x, y, nucleus_um, cell_um, angle, spacing=1.0) -> None:
        pad = self.cv.pad
        self.cells.append(SynthCell(len(self.cells), type_, kind, x - pad, y - pad, tuple(nucleus_um), tuple(cell_um), angle))
        if spacing:
            self._cell_xy.append((x, y, self.cv.px(max(cell_um)) * spacing))

    def _free(self, x, y, r_px) -> bool:
        cv = self.cv
        if not (0 <= x < cv.n and 0 <= y < cv.n):
            return False
        if cv.occupied[int(y), int(x)] or cv.stroma_keep[int(y), int(x)] < 0.5:
            return False
        return all((x - ox) ** 2 + (y - oy) ** 2 > (r_px + orad) ** 2 for ox, oy, orad in self._cell_xy)

    def _place(self, r_um, near=None, spread_um=None, tries=60, inside_tile=False):
        cv, rng = self.cv, self.rng
        lo, hi = (cv.pad, cv.pad + cv.size) if inside_tile else (0, cv.n)
        for _ in range(tries):
            if near is None:
                x, y = rng.uniform(lo, hi, 2)
            else:
                x, y = near[0] + rng.normal(0, cv.px(spread_um)), near[1] + rng.normal(0, cv.px(spread_um))
            if self._free(x, y, cv.px(r_um)):
                return float(x), float(y)
        return None

    def populate(self) -> None:
        cv, rng = self.cv, self.rng
        area_01 = (cv.n * cv.mpp / 1000.0) ** 2 / 0.1 * float(cv.stroma_keep.mean())
        counts = {t: int(rng.poisson(rng.uniform(lo, hi) * area_01 * (1.0 if t == "mast_cell" else self.style.crowd)))
                  for t, (lo, hi) in DENSITY.items()}
        if self.style.sheet:
            self._populate_sheet()
        # Mast cells first (they cluster, and the tile, not its margin, should hold
        # them: the margin only keeps the borders realistic), then the crowd.
        explicit_share = rng.uniform(0.35, 0.65)
        tile_share = (cv.size / cv.n) ** 2
        remaining = max(int(rng.poisson(rng.uniform(*DENSITY["mast_cell"]) * area_01 * tile_share)), 1)
        while remaining > 0:
            seed_xy = self._place(8.0, inside_tile=True)
            if seed_xy is None:
                break
            group = min(remaining, int(rng.integers(1, 5)))
            for i in range(group):
                xy = seed_xy if i == 0 else self._place(8.0, near=seed_xy, spread_um=22.0)
                if xy is not None:
                    self.mast_cell(*xy, "explicit" if rng.random() < explicit_share else "implicit")
            remaining -= group
        for _ in range(counts["eosinophil"]):
            if (xy := self._place(7.0)) is not None:
                self.eosinophil(*xy)
        for _ in range(counts["plasma_cell"]):
            if (xy := self._place(6.5)) is not None:
                self.plasma_cell(*xy)
        for _ in range(counts["fibroblast"]):
            if (xy := self._place(3.0)) is not None:
                self.fibroblast(*xy)
        lymph_centres = [self._place(4.0) for _ in range(max(1, counts["lymphocyte"] // 12))]
        for i in range(counts["lymphocyte"]):
            centre = lymph_centres[i % len(lymph_centres)] if rng.random() < 0.4 else None
            if (xy := self._place(3.8, near=centre, spread_um=15.0) if centre else self._place(3.8)) is not None:
                self.lymphocyte(*xy)

    def _populate_sheet(self) -> None:
        """Round cells packed side by side: mostly mast cells (explicit ones outnumber implicit), with lymphocytes
        and eosinophils among them — what a pathologist sees in a cutaneous mast cell tumour."""
        cv, rng = self.cv, self.rng
        (cx, cy), (a, b) = self.sheet_centre, self.sheet_axes
        lo, hi = cv.pad, cv.pad + cv.size
        for _ in range(int(20 * a * b / cv.px(11.0) ** 2)):
            x, y = cx + rng.uniform(-a, a), cy + rng.uniform(-b, b)
            if not (lo <= x < hi and lo <= y < hi) or self.sheet[int(min(y, cv.n - 1)), int(min(x, cv.n - 1))] < 0.6:
                continue
            u = rng.random()
            if u < 0.72:
                if self._free(x, y, cv.px(4.0)):  # tightly packed: cells touch in a sheet
                    self.mast_cell(x, y, "explicit" if rng.random() < 0.7 else "implicit")
            elif u < 0.88:
                if self._free(x, y, cv.px(3.8)):
                    self.lymphocyte(x, y)
            elif self._free(x, y, cv.px(6.5)):
                self.eosinophil(x, y)

    def mast_cell(self, x, y, kind) -> None:
        cv, rng = self.cv, self.rng
        ca_um = rng.uniform(5.5, 8.0) * self.style.size
        cb_um = ca_um * rng.uniform(0.75, 1.0)
        angle = rng.uniform(0, math.pi)
        ca, cb = cv.px(ca_um), cv.px(cb_um)
        halo_um = rng.uniform(1.5, 3.0) if kind == "implicit" else 0.0
        win, xx, yy = cv.box(x, y, ca + cv.px(halo_um) + cv.px(2))
        wob = (rng.normal(0, 0.025, 3), rng.uniform(0, 2 * math.pi, 3))
        d = ellipse_distance(xx, yy, x, y, ca, cb, angle, wob)
        granules = texture(rng, d.shape, cv.px(0.3), 1.0)
        nx, ny = x + rng.normal(0, ca * 0.06), y + rng.normal(0, ca * 0.06)  # central nucleus
        if kind == "explicit":
            body = soft(d, 0.08)
            e = rng.uniform(0.55, 0.85) * (1 + 0.35 * granules)
            h = rng.uniform(0.16, 0.30) * (1 + 0.45 * granules)  # metachromatic purple
            cv.stroma_keep[win] *= 1 - body
        else:
            body = soft(d, rng.uniform(0.45, 0.7))  # blurred border
            e = rng.uniform(0.12, 0.26) * (1 + 0.25 * granules)
            h = rng.uniform(0.04, 0.09) * (1 + 0.25 * granules)
            dh = ellipse_distance(xx, yy, x, y, ca + cv.px(halo_um), cb + cv.px(halo_um), angle, wob)
            halo = soft(dh, 0.35) * (1 - body)
            muddy = np.clip(0.5 + 0.5 * texture(rng, d.shape, cv.px(0.8)), 0, 1)
            cv.stroma_keep[win] *= 1 - np.maximum(body, halo * 0.85)
            cv.e[win] += halo * rng.uniform(0.06, 0.14) * muddy  # the "dirty halo"
            cv.h[win] += halo * 0.02 * muddy
        cv.e[win] += body * e.clip(0, None)
        cv.h[win] += body * h.clip(0, None)
        cv.ih[win] += body * 0.03
        # Tryptase marks the whole cell, with a sharp border even where H&E shows it blurred.
        cv.dab[win] += soft(d, 0.1) * rng.uniform(0.7, 1.2) * (1 + 0.3 * granules).clip(0.2, None)
        na = rng.uniform(2.3, 3.2) * self.style.size
        nb = na * rng.uniform(0.8, 1.0)
        self._nucleus(nx, ny, na, nb, rng.uniform(0, math.pi), dark=rng.uniform(0.85, 1.15), ihc_gain=0.5)
        self._record("mast_cell", kind, nx, ny, (na, nb), (ca_um, cb_um), angle)
        cv.occupied[win] |= d < 1.0

    def lymphocyte(self, x, y) -> None:
        cv, rng = self.cv, self.rng
        r = rng.uniform(2.8, 3.6)
        if rng.random() < 0.35:  # retraction artefact: a clear halo around a bare nucleus
            win, xx, yy = cv.box(x, y, cv.px(r + 2.5))
            dh = ellipse_distance(xx, yy, x, y, cv.px(r + rng.uniform(1.0, 2.2)), cv.px(r + 1.2), 0)
            cv.stroma_keep[win] *= 1 - soft(dh, 0.3)
        self._nucleus(x, y, r, r * rng.uniform(0.88, 1.0), rng.uniform(0, math.pi), dark=rng.uniform(1.2, 1.6), chromatin="coarse")
        win, xx, yy = cv.box(x, y, cv.px(r + 1.0))
        rim = soft(ellipse_distance(xx, yy, x, y, cv.px(r + 0.6), cv.px(r + 0.6), 0), 0.2)
        cv.e[win] += rim * 0.08
        self._record("lymphocyte", None, x, y, (r, r), (r + 0.6, r + 0.6), 0.0)

    def plasma_cell(self, x, y) -> None:
        cv, rng = self.cv, self.rng
        ca_um, cb_um = rng.uniform(5.5, 7.5), rng.uniform(4.2, 5.5)
        angle = rng.uniform(0, 2 * math.pi)
        win, xx, yy = cv.box(x, y, cv.px(ca_um) + 3)
        d = ellipse_distance(xx, yy, x, y, cv.px(ca_um), cv.px(cb_um), angle)
        body = soft(d, 0.1)
        cv.stroma_keep[win] *= 1 - body
        cv.e[win] += body * rng.uniform(0.35, 0.55)
        cv.h[win] += body * rng.uniform(0.2, 0.32)  # basophilic (amphophilic) cytoplasm
        cv.ih[win] += body * 0.05
        shift = cv.px(ca_um) * rng.uniform(0.42, 0.55)  # eccentric nucleus
        nx, ny = x + shift * math.cos(angle), y + shift * math.sin(angle)
        hx, hy = x + 0.15 * shift * math.cos(angle), y + 0.15 * shift * math.sin(angle)  # hof beside it
        hof = soft(ellipse_distance(xx, yy, hx, hy, cv.px(2.0), cv.px(1.6), angle), 0.4)
        cv.e[win] -= hof * body * 0.25
        cv.h[win] -= hof * body * 0.15
        nr = rng.uniform(2.4, 3.0)
        self._nucleus(nx, ny, nr, nr * rng.uniform(0.85, 1.0), angle, dark=rng.uniform(0.95, 1.2), chromatin="clock")
        self._record("plasma_cell", None, nx, ny, (nr, nr), (ca_um, cb_um), angle)
        cv.occupied[win] |= d < 1.0

    def fibroblast(self, x, y) -> None:
        cv, rng = self.cv, self.rng
        angle = float(self.fibre_angle[int(y), int(x)]) + rng.normal(0, 0.15)
        a, b = rng.uniform(6.0, 9.5), rng.uniform(1.1, 1.8)
        win, xx, yy = cv.box(x, y, cv.px(a + 5))
        tails = soft(ellipse_distance(xx, yy, x, y, cv.px(a + 5), cv.px(b + 0.4), angle), 0.3)
        cv.e[win] += tails * 0.12
        self._nucleus(x, y, a, b, angle, dark=rng.uniform(0.75, 1.05), wobble=0.03)
        self._record("fibroblast", None, x, y, (a, b), (a + 5, b + 0.4), angle)

    def eosinophil(self, x, y) -> None:
        cv, rng = self.cv, self.rng
        r = rng.uniform(5.5, 7.0)
        win, xx, yy = cv.box(x, y, cv.px(r) + 3)
        d = ellipse_distance(xx, yy, x, y, cv.px(r), cv.px(r * rng.uniform(0.85, 1.0)), rng.uniform(0, math.pi))
        body = soft(d, 0.08)
        coarse = texture(rng, d.shape, cv.px(0.55), 1.0)
        cv.stroma_keep[win] *= 1 - body
        glow = body * (1 + 0.5 * coarse).clip(0.1, None)
        cv.granule[win] += glow * rng.uniform(0.8, 1.2)  # bright orange-red coarse granules
        cv.e[win] += glow * rng.uniform(0.3, 0.5)
        cv.ih[win] += body * 0.03
        angle = rng.uniform(0, math.pi)
        sep = rng.uniform(1.6, 2.2)
        for sign in (-1, 1):  # bilobed nucleus
            lx, ly = x + sign * cv.px(sep) * math.cos(angle), y + sign * cv.px(sep) * math.sin(angle)
            self._nucleus(lx, ly, rng.uniform(1.9, 2.4), rng.uniform(1.5, 1.9), angle + math.pi / 2, dark=rng.uniform(0.9, 1.2))
        self._record("eosinophil", None, x, y, (sep + 2.0, 2.0), (r, r), angle)
        cv.occupied[win] |= d < 1.0

    # ------------------------------------------------------------------ imaging

    def render(self) -> SynthTile:
        from scipy.ndimage import map_coordinates

        cv, rng, o = self.cv, self.rng, self.o
        self.tissue()
        self.populate()
        look = self.style
        eosin = _purpler(stains.EOSIN, look.eosin_shift_deg) if look.eosin_shift_deg else stains.EOSIN
        stain = {
            "hematoxylin": stains.rotate_vector(stains.HEMATOXYLIN, rng.uniform(0, look.rot_deg[0]), rng),
            "eosin": stains.rotate_vector(eosin, rng.uniform(0, look.rot_deg[1]), rng),
            "dab": stains.rotate_vector(stains.DAB, rng.uniform(0, 4), rng),
            "granule": stains.rotate_vector(EOSINOPHIL_GRANULE, rng.uniform(0, 4), rng),
            "ihc_hematoxylin": stains.rotate_vector(stains.HEMATOXYLIN, rng.uniform(0, 5), rng),
        }
        gains = {"h": rng.uniform(*look.gains[0]), "e": rng.uniform(*look.gains[1]), "ih": rng.uniform(0.55, 0.85),
                 "dab": rng.uniform(0.8, 1.2)}
        keep = np.clip(cv.stroma_keep, 0, 1)
        hema = np.clip(cv.bg_h * keep + cv.h, 0, None)
        eosin = np.clip(cv.bg_e * keep + cv.e, 0, None)
        p = cv.pad
        tile = (slice(p, p + o.size), slice(p, p + o.size))
        he_conc = {"hematoxylin": hema[tile] * gains["h"], "eosin": eosin[tile] * gains["e"],
                   "granule": cv.granule[tile] * gains["e"]}
        he = self._camera(stains.compose(he_conc, stain), rng)

        # IHC: the same tissue, warped by a known rigid transform.
        theta = math.radians(rng.uniform(-3.0, 3.0))
        t = rng.uniform(-8.0, 8.0, 2) / o.mpp
        c0 = o.size / 2.0
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        qy, qx = np.mgrid[0 : o.size, 0 : o.size].astype(np.float64) + 0.5
        inv = rot.T
        px_ = inv[0, 0] * (qx - c0 - t[0]) + inv[0, 1] * (qy - c0 - t[1]) + c0
        py_ = inv[1, 0] * (qx - c0 - t[0]) + inv[1, 1] * (qy - c0 - t[1]) + c0
        coords = [py_ + p - 0.5, px_ + p - 0.5]
        ihc_conc = {
            "ihc_hematoxylin": map_coordinates(np.clip(cv.bg_ih * keep + cv.ih, 0, None), coords, order=1, mode="nearest").astype(np.float32) * gains["ih"],
            "dab": map_coordinates(cv.dab, coords, order=1, mode="nearest").astype(np.float32) * gains["dab"],
        }
        ihc = self._camera(stains.compose(ihc_conc, stain), rng)

        matrix = np.hstack([rot, (np.array([c0, c0]) + t - rot @ np.array([c0, c0]))[:, None]])
        inside = [c for c in self.cells if 0 <= c.x < o.size and 0 <= c.y < o.size]
        for c in inside:
            qx_, qy_ = matrix @ np.array([c.x, c.y, 1.0])
            c.ihc = {"x": round(float(qx_), 2), "y": round(float(qy_), 2), "inside": bool(0 <= qx_ < o.size and 0 <= qy_ < o.size)}
        for i, c in enumerate(inside):
            c.id = i
        transform = {
            "kind": "rigid",
            "rotation_deg": round(math.degrees(theta), 4),
            "translation_px": [round(float(t[0]), 3), round(float(t[1]), 3)],
            "center_px": [c0, c0],
            "matrix": [[round(float(v), 8) for v in row] for row in matrix],
            "maps": "H&E pixel (x, y, 1) -> IHC pixel (x, y)",
        }
        stain_info = {k: [round(float(x), 4) for x in v] for k, v in stain.items()}
        stain_info["gains"] = {k: round(float(v), 3) for k, v in gains.items()}
        return SynthTile(he, ihc, inside, o.mpp, transform, stain_info, self.seed, self.style.name)

    def _camera(self, rgb: np.ndarray, rng) -> np.ndarray:
        """Focus blur, illumination, sensor noise; optional JPEG round trip."""
        from scipy.ndimage import gaussian_filter

        o, look = self.o, self.style
        sigma = rng.uniform(*look.blur_um) / o.mpp
        rgb = gaussian_filter(rgb, (sigma, sigma, 0))
        white = rng.uniform(0.93, 1.0, 3).astype(np.float32)
        if look.cast is not None:
            white = white * np.asarray(look.cast, np.float32)
        rgb = rgb * white
        rgb = rgb + rng.normal(0, 1, rgb.shape).astype(np.float32) * (0.8 + 0.12 * np.sqrt(np.clip(rgb, 0, None)))
        out = np.clip(np.round(rgb), 0, 255).astype(np.uint8)
        quality = o.jpeg_quality or (int(rng.integers(*look.jpeg)) if look.jpeg else None)
        if quality:
            import io

            from PIL import Image as PILImage

            buf = io.BytesIO()
            PILImage.fromarray(out).save(buf, format="JPEG", quality=int(quality))
            out = np.asarray(PILImage.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        return out


def _purpler(vector, degrees: float):
    """``vector`` turned by ``degrees`` towards hematoxylin (eosin that looks more purple)."""
    v, h = stains.unit(vector), stains.unit(stains.HEMATOXYLIN)
    axis = h - (h @ v) * v
    axis /= np.linalg.norm(axis)
    t = math.radians(degrees)
    return tuple(math.cos(t) * v + math.sin(t) * axis)


def render_tile(seed: int | list[int], options: SynthOptions | None = None) -> SynthTile:
    """One H&E/IHC pair with its truth, fully determined by ``seed``."""
    return Renderer(options or SynthOptions(), seed).render()


def tile_stem(seed: int, index: int) -> str:
    return f"synth_s{seed}_{index:04d}"


def generate(out_dir: Path, n: int, seed: int, options: SynthOptions, on_tile=None) -> list[dict[str, Path]]:
    """Render and write ``n`` tiles; tile i is drawn from the seed [seed, i]."""
    written = []
    for i in range(n):
        tile = render_tile([seed, i], options)
        written.append(write_tile(tile, out_dir, tile_stem(seed, i)))
        if on_tile:
            on_tile(i)
    return written


def write_tile(tile: SynthTile, out_dir: Path, stem: str) -> dict[str, Path]:
    from PIL import Image as PILImage

    from mastctl.writers import atomic_write

    out_dir.mkdir(parents=True, exist_ok=True)
    dpi = (25400.0 / tile.mpp,) * 2
    paths = {"he": out_dir / f"{stem}_he.png", "ihc": out_dir / f"{stem}_ihc.png", "truth": out_dir / f"{stem}.json"}
    for key in ("he", "ihc"):
        image = PILImage.fromarray(getattr(tile, key))
        atomic_write(paths[key], lambda fh, im=image: im.save(fh, format="PNG", dpi=dpi))
    text = json.dumps(tile.truth(stem), indent=1) + "\n"
    atomic_write(paths["truth"], lambda fh: fh.write(text.encode()))
    return paths
