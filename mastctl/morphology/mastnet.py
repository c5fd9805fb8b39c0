"""The mast-cell crop classifier: P(mast cell) of each nucleus from a 20 um crop of its stain maps.

A small CNN (the crop averaged to 1 um/px, then 3x3 convolutions with batch norm folded in, ReLU
and 2x2 max-pools down to 5 x 5; the features are the means over the whole crop and over its
centre) reads the hematoxylin, eosin and residual concentrations (the image's own Macenko vectors)
in a 40 x 40 px crop at 0.5 um/px around each nucleus, and gives one logit. It is trained by ``bench/train_mast_net.py`` on synthetic tiles of the
training styles *and* real tissue (ccMCT tumour sheets as weak positives, CRC nuclei as negatives),
because the criteria features alone learned the renderer (see the README). Inference is numpy only:
no torch at run time. Weights are an ``.npz`` of plain arrays (never pickle) with a JSON header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mastctl.errors import InputError

SCHEMA = "mastctl/mast-net@1"
DEFAULT_NET = "mast_net.npz"
CROP_PX = 40
CROP_MPP = 0.5  # um per crop pixel: a crop is 20 um wide


@dataclass
class MastNet:
    convs: list[tuple[np.ndarray, np.ndarray]]  # (weight (O, C, 3, 3), bias (O,)) with batch norm folded in
    pool_after: list[int]  # indices of convolutions followed by a 2x2 max-pool
    head_w: np.ndarray  # (outputs, features)
    head_b: np.ndarray
    logit_shift: float = 0.0  # subtracted from the logit: P = 0.5 is the decision point
    info: dict[str, Any] = field(default_factory=dict)
    input_pool: int = 1  # the crop is averaged over input_pool x input_pool pixels first

    # ------------------------------------------------------------------ inference

    def logits(self, crops: np.ndarray, batch: int = 256) -> np.ndarray:
        """Mast logits (minus the decision shift) of (N, 3, 40, 40) float32 crops."""
        out = [self._forward(crops[i:i + batch]) for i in range(0, len(crops), batch)]
        return np.concatenate(out) - self.logit_shift if out else np.zeros(0, np.float32)

    def probability(self, crops: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.logits(crops), -30, 30)))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        from numpy.lib.stride_tricks import sliding_window_view

        x = np.asarray(x, dtype=np.float32)
        if self.input_pool > 1:
            k = self.input_pool
            n, c, hh, ww = x.shape
            x = x[:, :, : hh // k * k, : ww // k * k].reshape(n, c, hh // k, k, ww // k, k).mean(axis=(3, 5))
        h = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # NHWC
        for i, (w, b) in enumerate(self.convs):
            n, hh, ww, c = h.shape
            padded = np.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)))
            cols = sliding_window_view(padded, (3, 3), axis=(1, 2))  # (N, H, W, C, 3, 3)
            h = cols.reshape(n * hh * ww, c * 9) @ w.reshape(len(w), c * 9).T + b
            np.maximum(h, 0, out=h)
            h = h.reshape(n, hh, ww, len(w))
            if i in self.pool_after:
                h = h[:, : hh // 2 * 2, : ww // 2 * 2].reshape(n, hh // 2, 2, ww // 2, 2, len(w)).max(axis=(2, 4))
        feats = np.concatenate([h.mean(axis=(1, 2)), h[:, 1:4, 1:4].mean(axis=(1, 2))], axis=1)
        return (feats @ self.head_w.T + self.head_b)[:, 0]

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> Path:
        from mastctl.writers import atomic_write

        arrays = {f"conv{i}_w": w for i, (w, _) in enumerate(self.convs)}
        arrays.update({f"conv{i}_b": b for i, (_, b) in enumerate(self.convs)})
        header = {"schema": SCHEMA, "convs": len(self.convs), "pool_after": self.pool_after, "input_pool": self.input_pool,
                  "logit_shift": self.logit_shift, "info": self.info}
        arrays.update(head_w=self.head_w, head_b=self.head_b,
                      header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8))

        def write(fh):
            np.savez_compressed(fh, **{k: np.asarray(v, np.float32) if k != "header" else v for k, v in arrays.items()})

        atomic_write(Path(path), write)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> MastNet:
        p = Path(path)
        try:
            with np.load(p, allow_pickle=False) as z:
                header = json.loads(bytes(z["header"]).decode())
                if header.get("schema") != SCHEMA:
                    raise InputError(f"{p}: not a mastctl mast-cell net ({SCHEMA})")
                convs = [(z[f"conv{i}_w"], z[f"conv{i}_b"]) for i in range(int(header["convs"]))]
                net = cls(convs, [int(i) for i in header["pool_after"]], z["head_w"], z["head_b"],
                          float(header.get("logit_shift", 0.0)), header.get("info", {}), int(header.get("input_pool", 1)))
        except InputError:
            raise
        except FileNotFoundError:
            raise InputError(f"{p}: no such mast-cell net") from None
        except Exception as exc:  # zip, JSON, missing arrays: a damaged file
            raise InputError(f"{p}: not a readable mast-cell net ({type(exc).__name__}: {str(exc)[:200]})") from None
        for w, b in net.convs:
            if w.ndim != 4 or w.shape[2:] != (3, 3) or b.shape != (w.shape[0],):
                raise InputError(f"{p}: a damaged mast-cell net (convolution of shape {w.shape})")
        return net


def default_net() -> MastNet:
    with resources.as_file(resources.files("mastctl.morphology") / DEFAULT_NET) as path:
        return MastNet.load(path)


def stain_crops(stain_maps: np.ndarray, mpp: float, xy: np.ndarray, size: int = CROP_PX) -> np.ndarray:
    """(N, 3, size, size) crops at 0.5 um/px centred on ``xy`` (pixels of ``stain_maps``, (3, H, W) at ``mpp``)."""
    from scipy import ndimage as ndi

    zoom = float(mpp) / CROP_MPP
    maps = stain_maps.astype(np.float32)
    if abs(zoom - 1.0) > 0.02:
        maps = np.stack([ndi.zoom(ch, zoom, order=1) for ch in maps])
    pts = np.asarray(xy, np.float64).reshape(-1, 2) * zoom
    half = size // 2
    padded = np.pad(maps, ((0, 0), (half + 1, half + 1), (half + 1, half + 1)))
    out = np.empty((len(pts), 3, size, size), np.float32)
    for i, (px, py) in enumerate(pts):
        cx = min(max(int(round(px)), 0), maps.shape[2]) + half + 1
        cy = min(max(int(round(py)), 0), maps.shape[1]) + half + 1
        out[i] = padded[:, cy - half: cy + half, cx - half: cx + half]
    return out
