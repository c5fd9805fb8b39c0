"""What the bench renderers (other_renderer.py, third_renderer.py, fourth_renderer.py) share, none of it drawing: writing
their tiles with ``mastctl synth``'s truth files, and their command line."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

def write_tiles(out: Path, tiles: int, seed: int, size: int, mpp: float, draw, name, style: str) -> Path:
    """Tiles ``draw([seed, i], size, mpp)`` -> (RGB, cells) written as ``name(seed, i)``: an H&E PNG and a
    ``mastctl/synth@1`` truth file each."""
    from PIL import Image

    from mastctl.synth import SCHEMA

    out.mkdir(parents=True, exist_ok=True)
    for i in range(tiles):
        stem_i = name(seed, i)
        rgb, cells = draw([seed, i], size, mpp)
        Image.fromarray(rgb).save(out / f"{stem_i}_he.png", dpi=(25400.0 / mpp,) * 2)
        truth = {"schema": SCHEMA, "he_image": f"{stem_i}_he.png", "width": size, "height": size, "mpp": mpp,
                 "seed": [seed, i], "style": style,
                 "cells": [{**c, "x": round(c["x"], 2), "y": round(c["y"], 2)} for c in cells]}
        (out / f"{stem_i}.json").write_text(json.dumps(truth, indent=1) + "\n")
    return out


def inside(cells: list[dict], size: int) -> list[dict]:
    """The cells whose centre lies on a ``size`` x ``size`` tile (a renderer draws on a padded canvas)."""
    return [c for c in cells if 0 <= c["x"] < size and 0 <= c["y"] < size]


def window(x: float, y: float, r_um: float, mpp: float, n: int):
    """The pixels of an n x n canvas within ``r_um`` (and 2 px) of (x, y), cut to the canvas: (rows, cols) slices and
    each pixel's centre offset from (x, y) in um (x, then y); None where nothing of it is on the canvas."""
    import numpy as np

    r = int(math.ceil(r_um / mpp)) + 2
    x0, y0 = max(int(x) - r, 0), max(int(y) - r, 0)
    x1, y1 = min(int(x) + r + 1, n), min(int(y) + r + 1, n)
    if x1 <= x0 or y1 <= y0:
        return None
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    return (slice(y0, y1), slice(x0, x1)), (xx + 0.5 - x) * mpp, (yy + 0.5 - y) * mpp


def jpeg(rgb, quality: int):
    """``rgb`` (uint8) once through a JPEG encoder at ``quality``: a scanner's compression."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def stems(prefix: str):
    """A renderer's file stems: ``stem(seed, index)`` -> ``{prefix}_s{seed}_{index:04d}``."""
    def stem(seed: int, index: int) -> str:
        return f"{prefix}_s{seed}_{index:04d}"

    return stem


def generator(draw, name, style: str):
    """A renderer's ``generate(out, tiles, seed=0, size=512, mpp=0.5)``: ``tiles`` tiles drawn from the seeds
    [seed, i], each an H&E PNG and a ``mastctl/synth@1`` truth file (``write_tiles``)."""
    def generate(out: Path, tiles: int, seed: int = 0, size: int = 512, mpp: float = 0.5) -> Path:
        return write_tiles(out, tiles, seed, size, mpp, draw, name, style)

    return generate


def wiring(renderer, prefix: str):
    """A renderer module's ``render(seed, size=512, mpp=0.5)`` (an H x W x 3 uint8 H&E tile and its true cells as dicts
    of x, y, label, kind, ...; ``renderer(seed, size, mpp).render()``), its file ``stem`` (``stems``) and its
    ``generate`` (``generator``, style ``{prefix}-renderer``)."""
    def render(seed, size: int = 512, mpp: float = 0.5):
        return renderer(seed, size, mpp).render()

    stem = stems(prefix)
    return render, stem, generator(render, stem, f"{prefix}-renderer")


def main(generate, doc: str) -> int:
    """A renderer's command line: OUT_DIR [--tiles N] [--seed S] [--mpp M] (a tile covers 256 um at any scale)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--tiles", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mpp", type=float, default=0.5)
    a = ap.parse_args()
    generate(a.out, a.tiles, a.seed, int(round(512 * 0.5 / a.mpp)), a.mpp)
    print(f"{a.tiles} tiles in {a.out}")
    return 0
