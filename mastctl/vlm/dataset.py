"""`mastctl finetune prepare`: annotated images -> tiles + conversations in a model family's format.

Each annotated image is resampled to ``tile_mpp`` and cut into tiles of
``tile_um`` micrometres; each tile becomes one conversation (the user turn:
the image, referenced by path, and the detection prompt; the assistant turn:
every mast cell of the tile as JSON points in the family's convention).
Training tiles also get ``augment`` altered copies — brightness and contrast
x0.9-1.1, rotation -5..5 degrees with white fill, horizontal/vertical flips,
HED stain jitter — with the points moved exactly. Train and validation are
split by source image, so no image leaks across.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mastctl.errors import InputError, UsageError
from mastctl.vlm import formats as F

SCHEMA = "mastctl/vlm-dataset@1"


@dataclass
class TileSample:
    pixels: np.ndarray
    points: list[F.Point]
    source: str


def tiles_of(pixels: np.ndarray, mpp: float, cells, tile_um: float, tile_mpp: float, source: str) -> list[TileSample]:
    """Non-overlapping tiles (the last row/column shifted inside) with the mast cells inside each."""
    from mastctl.tiling import plan_tiles

    out = []
    for t in plan_tiles(pixels, mpp, tile_um, 0.0, tile_mpp):
        pts = [F.Point((c.x - t.x0) / t.scale, (c.y - t.y0) / t.scale, c.kind or "explicit")
               for c in cells if c.is_mast_cell and t.x0 <= c.x < t.x0 + t.width and t.y0 <= c.y < t.y0 + t.height]
        out.append(TileSample(t.pixels, pts, source))
    return out


def augment(sample: TileSample, rng: random.Random) -> TileSample:
    """One randomly altered copy; points follow every geometric change exactly."""
    from PIL import Image as PILImage

    from mastctl.stains import EOSIN, HEMATOXYLIN, compose, separate

    h, w = sample.pixels.shape[:2]
    img = sample.pixels.astype(np.float32)
    pts = [(p.x, p.y, p.kind) for p in sample.points]
    # HED stain jitter: scale and shift the stain amounts.
    conc = separate(sample.pixels, (HEMATOXYLIN, EOSIN))
    hem = np.clip(conc[..., 0] * rng.uniform(0.9, 1.1) + rng.uniform(-0.03, 0.03), 0, None)
    eos = np.clip(conc[..., 1] * rng.uniform(0.9, 1.1) + rng.uniform(-0.03, 0.03), 0, None)
    img = compose({"h": hem, "e": eos}, {"h": HEMATOXYLIN, "e": EOSIN}).astype(np.float32)
    # brightness and contrast
    img = img * rng.uniform(0.9, 1.1)
    mean = img.mean()
    img = (img - mean) * rng.uniform(0.9, 1.1) + mean
    img = np.clip(img, 0, 255).astype(np.uint8)
    # rotation about the centre, white fill
    angle = rng.uniform(-5, 5)
    img = np.asarray(PILImage.fromarray(img).rotate(angle, resample=PILImage.Resampling.BILINEAR, fillcolor=(255, 255, 255)))
    a = np.deg2rad(angle)
    cx, cy = w / 2, h / 2
    rotated = []
    for x, y, k in pts:  # PIL rotates counter-clockwise on screen: y points down
        dx, dy = x - cx, y - cy
        rotated.append((cx + dx * np.cos(a) + dy * np.sin(a), cy - dx * np.sin(a) + dy * np.cos(a), k))
    pts = rotated
    if rng.random() < 0.5:
        img = img[:, ::-1]
        pts = [(w - x, y, k) for x, y, k in pts]
    if rng.random() < 0.5:
        img = img[::-1]
        pts = [(x, h - y, k) for x, y, k in pts]
    kept = [F.Point(x, y, k) for x, y, k in pts if 0 <= x < w and 0 <= y < h]
    return TileSample(np.ascontiguousarray(img), kept, sample.source)


def conversation(image_rel: str, sample: TileSample, family: str) -> dict[str, Any]:
    h, w = sample.pixels.shape[:2]
    return {
        "image": image_rel, "width": w, "height": h, "source": sample.source,
        "points": [[round(p.x, 2), round(p.y, 2), p.kind] for p in sample.points],
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": F.prompt(family)}]},
            {"role": "assistant", "content": [{"type": "text", "text": F.answer(sample.points, family, w, h)}]},
        ],
    }


def prepare(images: list[Path], truth: Path, family: str, out: Path, *, tile_um: float = 128.0, tile_mpp: float = 0.5,
            augment_copies: int = 2, val_fraction: float = 0.2, seed: int = 0, mpp: float | None = None) -> dict[str, Any]:
    from PIL import Image as PILImage

    from mastctl import imaging
    from mastctl.detection import expand_inputs
    from mastctl.truth import image_key, load_truth

    if family not in F.FAMILIES:
        raise UsageError(f"--model must be one of {', '.join(F.FAMILIES)}, got {family!r}")
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} is not empty; choose a new folder")
    annotated = load_truth(truth)
    paths = [p for p in expand_inputs(images) if image_key(p) in annotated]
    if not paths:
        raise InputError(f"none of the images has annotations in {truth} (images and truth are joined by file stem)")
    keys = sorted({image_key(p) for p in paths})
    random.Random(seed).shuffle(keys)
    n_val = max(1, int(round(len(keys) * val_fraction))) if len(keys) > 1 else 0
    val_keys = set(keys[:n_val])
    (out / "images").mkdir(parents=True)
    rng = random.Random(seed)
    rows: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    mast_cells = 0
    for path in paths:
        key = image_key(path)
        image = imaging.load(path, mpp=mpp)
        use_mpp = mpp or annotated[key].mpp or image.mpp
        if not use_mpp:
            raise InputError(f"{path}: resolution unknown; give --mpp")
        split = "val" if key in val_keys else "train"
        for i, tile in enumerate(tiles_of(image.pixels, use_mpp, annotated[key].cells, tile_um, tile_mpp, key)):
            mast_cells += len(tile.points)
            variants = [tile] + ([augment(tile, rng) for _ in range(augment_copies)] if split == "train" else [])
            for j, sample in enumerate(variants):
                rel = f"images/{key}_t{i:03d}_a{j}.png"
                PILImage.fromarray(sample.pixels).save(out / rel)
                rows[split].append(conversation(rel, sample, family))
    for split, items in rows.items():
        with open(out / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(item) + "\n" for item in items)
    meta = {"schema": SCHEMA, "family": family, "convention": F.COORDS[family], "prompt_version": F.PROMPT_VERSION,
            "tile_um": tile_um, "tile_mpp": tile_mpp, "augment": augment_copies, "seed": seed,
            "train": len(rows["train"]), "val": len(rows["val"]), "train_images": len(keys) - n_val, "val_images": n_val,
            "mast_cell_points": mast_cells}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta


def load_rows(folder: Path, split: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        raise InputError(f"{folder}: not a dataset of `mastctl finetune prepare` (no meta.json)")
    meta = json.loads(meta_path.read_text())
    path = folder / f"{split}.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return meta, rows
