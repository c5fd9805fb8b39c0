"""Regenerate examples/he_tile.png: a small stand-in H&E tile (256 x 256 px, 0.5 um/px).

Stain physics in one line each: optical density = stain vector x concentration
(hematoxylin for nuclei, eosin for stroma and cytoplasm), then Beer-Lambert
I = 255 * exp(-OD). Two "fried egg" mast cells (round central nucleus, granular
pink cytoplasm), lymphocytes and spindle fibroblasts. Until `mastctl synth`
exists this is the bundled example the README runs on.
"""

from pathlib import Path

import numpy as np
from PIL import Image

H = np.array([0.65, 0.70, 0.29])  # Ruifrok & Johnston hematoxylin OD vector
E = np.array([0.07, 0.99, 0.11])  # eosin
MPP = 0.5
rng = np.random.default_rng(7)
n = 256
yy, xx = np.mgrid[0:n, 0:n]
hem = np.zeros((n, n))
eos = 0.25 + 0.15 * np.sin(xx / 9.0 + np.sin(yy / 23.0) * 3) ** 2  # fibrous stroma


def blob(cx, cy, rx, ry, angle=0.0):
    c, s = np.cos(angle), np.sin(angle)
    u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
    return np.clip(1.2 - np.hypot(u / rx, v / ry), 0, 1) ** 0.5


for cx, cy in [(70, 80), (175, 160)]:  # mast cells: 12 um granular cytoplasm, 6 um nucleus
    eos += 0.9 * blob(cx, cy, 12 / MPP, 11 / MPP) * (0.7 + 0.3 * rng.random((n, n)))
    hem += 1.1 * blob(cx, cy, 3.2 / MPP, 2.8 / MPP)
for _ in range(14):  # lymphocytes: bare dark round nuclei
    hem += 1.3 * blob(*rng.uniform(15, n - 15, 2), 3.0 / MPP, 3.0 / MPP)
for _ in range(8):  # fibroblasts: spindle nuclei along the fibres
    hem += 0.9 * blob(*rng.uniform(15, n - 15, 2), 7 / MPP, 1.5 / MPP, angle=rng.uniform(-0.4, 0.4))
od = hem[..., None] * H + eos[..., None] * E
rgb = 255 * np.exp(-od) + rng.normal(0, 3, (n, n, 3))
Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(
    Path(__file__).with_name("he_tile.png"), dpi=(25400 / MPP, 25400 / MPP), optimize=True
)
