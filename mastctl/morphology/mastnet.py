"""The mast-cell crop classifier: P(mast cell) of each nucleus from a 20 um crop of its stain maps.

A small CNN (3x3 convolutions with batch norm folded in, ReLU and 2x2 max-pools, 40 -> 20 -> 10 px;
the features are the means over the last level and over its centre; an older net may first average
the crop to 1 um/px, ``input_pool``) reads the hematoxylin, eosin and residual concentrations in a
40 x 40 px crop at 0.5 um/px around each nucleus, and gives one logit. The shipped net reads them
through fixed stain vectors once the image's colour cast is taken out (``basis = "reference"``,
``MastNet.maps``); nets before 2026-12-05 read the image's own Macenko vectors (``"image"``), whose
estimate jumps with what a crop holds (``BASES``). The detector takes it as a second opinion beside the criteria model (``classify``). It is trained by ``bench/train_mast_net.py`` on synthetic tiles of the
training styles, tiles of a second and a fourth renderer (``bench/other_renderer.py``, ``bench/fourth_renderer.py``,
since 2026-12-07) *and* real tissue (ccMCT
tumour sheets as weak positives, CRC nuclei as negatives),
because the criteria features alone learned the renderer (see the README). Inference needs numpy only;
torch, where installed, runs the same arithmetic faster (``MastNet.logits``). Weights are an ``.npz`` of plain arrays (never pickle) with a JSON header.
The detector reads a crop near the decision point in eight turns and flips and takes the mean logit (``views``,
``VIEWS``; since 2026-12-07: the net's threshold was chosen again for it, 0.4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mastctl.errors import InputError
from mastctl.morphology.stain import BASES, chroma_blurred, net_input
from mastctl.threads import net_precision, torch_installed, torch_runs_the_nets

SCHEMA = "mastctl/mast-net@1"
DEFAULT_NET = "mast_net.npz"
CROP_PX = 40
CROP_MPP = 0.5  # um per crop pixel: a crop is 20 um wide
TORCH_FROM = 64  # crops in one call from which torch (if installed) runs the net: its import (~1.5 s) then pays
# Torch runs the net on batches padded to a multiple of this many crops. Each new batch shape leaves memory behind in
# the process (torch's per-shape convolution state and the allocator's fragments), and a tile's last batch has whatever
# size its count of nuclei gives: detecting the 50 CRC tiles one after another (bench/score.py's memory line, a fresh
# process from 234 MB), the peak grew tile after tile, 357 MB after the first, 543 after all 50 (3.3 MB a tile over the
# second half; the same 50 again added nothing: it is per shape, not per tile). Padded to a multiple of 32 it levels
# off: 351, 387 after 10, 406 after 25 and after 50. The cost: at most 31 crops more a tile (70.7 against 69.1 ms a
# CRC tile, fastest of 3), and the same cells (confidences within 2e-8).
BATCH_QUANTUM = 32
TORCH_FOR_VIEWS = 1000  # crop views from which torch (if installed) reads a small run's other views: numpy takes about
# 0.85 ms a crop view on 2 cores, torch's import 0.7 s (a mast cell tumour sends nearly every crop to seven more views)


@dataclass
class MastNet:
    convs: list[tuple[np.ndarray, np.ndarray]]  # (weight (O, C, 3, 3), bias (O,)) with batch norm folded in
    pool_after: list[int]  # indices of convolutions followed by a 2x2 max-pool
    head_w: np.ndarray  # (outputs, features)
    head_b: np.ndarray
    logit_shift: float = 0.0  # subtracted from the logit: P = 0.5 is the decision point
    info: dict[str, Any] = field(default_factory=dict)
    input_pool: int = 1  # the crop is averaged over input_pool x input_pool pixels first
    basis: str = "image"  # one of BASES: the stain vectors the net reads the image through (``maps``)
    precision: str = "float32"  # what torch computes the convolutions in: threads.NET_PRECISIONS (the detector: auto)
    views: int = 1  # the mean logit over this many of the crop's turns and flips (VIEWS) near the decision point
    chroma_um: float = 0.0  # colour detail finer than this (a Gaussian's sigma, um) blurred first (``maps``); 0: none
    view_margin: float | None = None  # a mean logit at or past the decision point counts only where every view read lies
    # within this many logits short of it (``logits``); None: the mean alone
    _torch_weights: list | None = field(default=None, repr=False, compare=False)

    # ------------------------------------------------------------------ inference

    def maps(self, st, cast=None) -> np.ndarray:
        """(3, H, W) maps of a :class:`~mastctl.morphology.stain.Stained` image as this net reads them (``cast``: a colour
        cast fixed for a whole slide, optical density per RGB channel; None: the image's own)."""
        maps = net_input(st, self.basis, cast)
        return chroma_blurred(maps, self.chroma_um / st.mpp) if self.chroma_um > 0 else maps

    def logits(self, crops: np.ndarray, batch: int = 256) -> np.ndarray:
        """Mast logits (minus the decision shift) of (N, 3, 40, 40) float32 crops.

        With torch installed (the ``all`` and ``nuclei`` extras) and enough crops to repay its import, the
        same arithmetic runs through torch's convolutions (channels-last: twice as fast as the default layout
        for these few channels), about seven times faster than numpy, which runs otherwise. The two
        agree to float rounding (a test holds them to 1e-4).

        With ``views`` > 1, a crop whose logit lies within ``VIEW_GATE`` of the decision point gets the mean logit of
        its first ``views`` turns and flips (``VIEWS``): test-time augmentation, where it can change an answer. With
        ``view_margin`` m as well, such a crop whose mean reaches the decision point while one of its views lies more
        than m short of it is held just under the point (-0.001): views that disagree, as under a stain the net never
        saw, do not make a mast cell on their mean (README, the net's threshold).
        """
        import sys

        forward = self._forward
        if (len(crops) >= TORCH_FROM or "torch" in sys.modules) and torch_runs_the_nets(self.precision):
            forward = self._forward_torch  # (torch already imported, by the nucleus finder say: no import to repay)

        def run(x):
            return np.concatenate([forward(x[i:i + batch]) for i in range(0, len(x), batch)])

        if not len(crops):
            return np.zeros(0, np.float32)
        z = run(crops)
        near = np.flatnonzero(np.abs(z - self.logit_shift) < VIEW_GATE) if self.views > 1 else []
        if forward == self._forward and len(near) * (self.views - 1) >= TORCH_FOR_VIEWS and torch_installed():
            forward = self._forward_torch  # a small run's numpy nets, but views enough to repay torch's import
        if len(near):  # the other views of the crops near the decision point, and the mean of every view's logit: a
            # group of crops' views in one batch (a call per view cost a CRC tile 20 ms; a copy of every view of a
            # tile's crops at once held 100 MB more at the peak)
            per, total, low = max(1, batch // (self.views - 1)), z[near].astype(np.float64), z[near].copy()
            for i in range(0, len(near), per):
                group = crops[near[i:i + per]]
                views = np.concatenate([view(group) for view in VIEWS[1:self.views]])
                each = forward(views).reshape(self.views - 1, len(group))
                total[i:i + per] += each.sum(axis=0)
                low[i:i + per] = np.minimum(low[i:i + per], each.min(axis=0))
            z = z.copy()
            z[near] = total / self.views
            if self.view_margin is not None:  # (logits from the decision point)
                mean = z[near] - self.logit_shift
                doubted = (mean >= 0) & (mean < VIEW_GATE) & (low - self.logit_shift < -self.view_margin)
                z[near[doubted]] = self.logit_shift - 1e-3
        return z - self.logit_shift

    def _forward_torch(self, x: np.ndarray) -> np.ndarray:
        import torch

        f = torch.nn.functional
        dtype = getattr(torch, net_precision(self.precision))
        if self._torch_weights is None or self._torch_weights[0][0].dtype != dtype:
            self._torch_weights = [(torch.from_numpy(np.ascontiguousarray(w, np.float32)).to(dtype),
                                    torch.from_numpy(np.asarray(b, np.float32)).to(dtype)) for w, b in self.convs]
        n = len(x)
        x = np.ascontiguousarray(x, np.float32)
        if n % BATCH_QUANTUM:  # padded with zero crops to a shape torch has run before (BATCH_QUANTUM); dropped below
            x = np.concatenate([x, np.zeros((BATCH_QUANTUM - n % BATCH_QUANTUM, *x.shape[1:]), np.float32)])
        with torch.inference_mode():
            h = torch.from_numpy(x).to(dtype).contiguous(memory_format=torch.channels_last)
            if self.input_pool > 1:
                h = f.avg_pool2d(h, self.input_pool)
            for i, (w, b) in enumerate(self._torch_weights):
                h = f.conv2d(h, w, b, padding=1)
                # ReLU in place (one pass over memory fewer), after the pool where one follows: the two commute, and
                # it then runs on a quarter of the pixels
                h = (_max_pool2(h) if i in self.pool_after else h).relu_()
            h, c = h.float(), centre(h.shape[2])  # the means in float32: bfloat16 would round the features too
            feats = torch.cat([h.mean((2, 3)), h[:, :, c, c].mean((2, 3))], 1)[:n].numpy()
        return (feats @ self.head_w.T + self.head_b)[:, 0]

    def probability(self, crops: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.logits(crops), -30, 30)))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.input_pool > 1:
            k = self.input_pool
            n, c, hh, ww = x.shape
            x = x[:, :, : hh // k * k, : ww // k * k].reshape(n, c, hh // k, k, ww // k, k).mean(axis=(3, 5))
        h = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # NHWC
        for i, (w, b) in enumerate(self.convs):
            h = _conv3x3_relu(h, w, b)
            if i in self.pool_after:
                n, hh, ww, c = h.shape
                h = h[:, : hh // 2 * 2, : ww // 2 * 2].reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))
        c = centre(h.shape[1])
        feats = np.concatenate([h.mean(axis=(1, 2)), h[:, c, c].mean(axis=(1, 2))], axis=1)
        return (feats @ self.head_w.T + self.head_b)[:, 0]

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> Path:
        from mastctl.writers import atomic_write

        arrays = {f"conv{i}_w": w for i, (w, _) in enumerate(self.convs)}
        arrays.update({f"conv{i}_b": b for i, (_, b) in enumerate(self.convs)})
        header = {"schema": SCHEMA, "convs": len(self.convs), "pool_after": self.pool_after, "input_pool": self.input_pool,
                  "basis": self.basis, "logit_shift": self.logit_shift, "info": self.info}
        if self.chroma_um > 0:  # (a net without it keeps the header older mastctl versions read)
            header["chroma_um"] = self.chroma_um
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
                          float(header.get("logit_shift", 0.0)), header.get("info", {}), int(header.get("input_pool", 1)),
                          str(header.get("basis", "image")), chroma_um=float(header.get("chroma_um", 0.0)))
        except InputError:
            raise
        except FileNotFoundError:
            raise InputError(f"{p}: no such mast-cell net") from None
        except Exception as exc:  # zip, JSON, missing arrays: a damaged file
            raise InputError(f"{p}: not a readable mast-cell net ({type(exc).__name__}: {str(exc)[:200]})") from None
        if net.basis not in BASES:
            raise InputError(f"{p}: a mast-cell net reading an unknown stain basis {net.basis!r} (known: {', '.join(BASES)})")
        if net.chroma_um > 0 and net.basis != "reference":
            raise InputError(f"{p}: a mast-cell net blurring the colour of {net.basis!r} maps (only 'reference')")
        for w, b in net.convs:
            if w.ndim != 4 or w.shape[2:] != (3, 3) or b.shape != (w.shape[0],):
                raise InputError(f"{p}: a damaged mast-cell net (convolution of shape {w.shape})")
        return net


def _view(flip_rows: bool, flip_cols: bool, transpose: bool):
    def view(crops: np.ndarray) -> np.ndarray:
        c = crops.transpose(0, 1, 3, 2) if transpose else crops
        return np.ascontiguousarray(c[:, :, ::-1 if flip_rows else 1, ::-1 if flip_cols else 1])

    return view


# A crop's eight turns and flips (the net was trained on all of them: a cell has no up or left), in the order a
# detector with ``views`` = k reads the first k: itself, a half turn, the two mirror images, then the quarter turns'.
VIEWS = tuple(_view(*v) for v in ((False, False, False), (True, True, False), (True, False, False),
                                  (False, True, False), (False, False, True), (True, True, True), (True, False, True),
                                  (False, True, True)))
VIEW_GATE = 3.0  # logits from the decision point inside which a crop's other views are read: farther, one view decides
# (every rule of the detector, the veto at P 0.07, the sheet rule's 0.1 and 0.2, lies within 2.6 of it). Measured on
# bench/real_tissue.py --choose with eight views: a gate of 4 gave every figure of reading all eight views of every
# crop, and 3 the same but for 0.001-0.01 (tb2 0.769 against 0.770), with 6% of a CRC tile's crops read eight times
# against 15% (a mast cell tumour sends nearly all; bench/train_mast_net.py).
DEFAULT_VIEWS = 8  # the detector's (``-O mast_net_views``)


def _max_pool2(h):
    """torch's ``max_pool2d(h, 2)`` as the largest of four strided views: the same values, in half the time of the
    channels-last pool (2.5 -> 1.3 ms on 320 crops of 8 x 40 x 40 in float32, 3.7 -> 1.1 in bfloat16)."""
    import torch

    h = h[:, :, : h.shape[2] // 2 * 2, : h.shape[3] // 2 * 2]
    return torch.maximum(torch.maximum(h[:, :, 0::2, 0::2], h[:, :, 0::2, 1::2]),
                         torch.maximum(h[:, :, 1::2, 0::2], h[:, :, 1::2, 1::2]))


def centre(n: int) -> slice:
    """The middle of the last feature map, n x n: its centre 3 x 3 at n = 5, 4 x 4 at n = 10."""
    lo = (n - 1) // 3
    return slice(lo, n - lo)


def _conv3x3_relu(h: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1) -> np.ndarray:
    """ReLU(3x3 convolution, zero padding 1, ``stride``) of NHWC ``h`` (sides a multiple of the stride) with ``w``
    (O, C, 3, 3): nine shifted matrix products (1.5x faster than one product of the unfolded windows, which copies
    every pixel nine times)."""
    n, hh, ww, c = h.shape
    padded = np.zeros((n, hh + 2, ww + 2, c), np.float32)
    padded[:, 1:-1, 1:-1] = h
    taps = w.transpose(2, 3, 1, 0)  # (3, 3, C, O)
    out = np.empty((n, hh // stride, ww // stride, len(w)), np.float32)
    out[:] = b
    for dy in range(3):
        for dx in range(3):
            out += padded[:, dy:dy + hh:stride, dx:dx + ww:stride] @ taps[dy, dx]
    return np.maximum(out, 0, out=out)


def default_net() -> MastNet:
    with resources.as_file(resources.files("mastctl.morphology") / DEFAULT_NET) as path:
        return MastNet.load(path)


def linear_zoom(maps: np.ndarray, zoom: float) -> np.ndarray:
    """(C, H, W) maps resampled by ``zoom`` with linear interpolation, as ``scipy.ndimage.zoom(order=1)`` does
    per channel (same output shape and sample positions), as two sparse products: four times faster."""
    from scipy import sparse

    def weights(n_in: int) -> sparse.csr_matrix:
        n_out = max(1, int(round(n_in * zoom)))
        x = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        lo = np.clip(np.floor(x).astype(np.int64), 0, max(0, n_in - 2))
        w = (x - lo).astype(np.float32)
        hi = np.minimum(lo + 1, n_in - 1)
        rows = np.repeat(np.arange(n_out), 2)
        return sparse.csr_matrix((np.column_stack([1 - w, w]).ravel(), (rows, np.column_stack([lo, hi]).ravel())),
                                 shape=(n_out, n_in))

    ry, rx = weights(maps.shape[1]), weights(maps.shape[2])
    return np.stack([np.asarray((ry @ (rx @ ch.T).T), np.float32) for ch in maps.astype(np.float32)])


def stain_crops(stain_maps: np.ndarray, mpp: float, xy: np.ndarray, size: int = CROP_PX) -> np.ndarray:
    """(N, 3, size, size) crops at 0.5 um/px centred on ``xy`` (pixels of ``stain_maps``, (3, H, W) at ``mpp``)."""
    return crop_source(stain_maps, mpp, size)(xy)


def crop_source(stain_maps: np.ndarray, mpp: float, size: int = CROP_PX):
    """A function from ``xy`` (pixels of ``stain_maps``) to their crops, as :func:`stain_crops` cuts them: the maps are
    resampled to 0.5 um/px and padded once, for every call."""
    zoom = float(mpp) / CROP_MPP
    maps = stain_maps.astype(np.float32)
    if abs(zoom - 1.0) > 0.02:
        maps = linear_zoom(maps, zoom)
    half = size // 2
    padded = np.pad(maps, ((0, 0), (half + 1, half + 1), (half + 1, half + 1)))
    # every size x size window of the padded maps, as a view (top-left row, column, channel, size, size): a crop is one
    # index into it, copied as 3 x size rows of size pixels (ten times faster than gathering it pixel by pixel)
    windows = np.moveaxis(np.lib.stride_tricks.sliding_window_view(padded, (size, size), axis=(1, 2)), 0, 2)

    def cut(xy: np.ndarray) -> np.ndarray:
        pts = np.asarray(xy, np.float64).reshape(-1, 2) * zoom
        cx = np.clip(np.round(pts[:, 0]).astype(np.int64), 0, maps.shape[2]) + 1  # top-left corner in padded pixels
        cy = np.clip(np.round(pts[:, 1]).astype(np.int64), 0, maps.shape[1]) + 1
        return windows[cy, cx]

    return cut
