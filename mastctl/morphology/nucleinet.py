"""The learned nucleus finder of the morphology detector (the default; numpy to run it, torch to fit one).

The built-in nucleus proposals (hematoxylin threshold, difference-of-Gaussians
seeds, watershed) are tuned to the stromal cells a mast-cell count is about;
real tumour epithelium — large, pale, vesicular, crowded nuclei — defeats
them. A small U-Net (``build``: about 30k weights at width 8, 120k at 16; or, fitted with ``--arch strided``,
a net whose every layer works at half the scale or less) maps
the image's absorption (optical density per RGB channel, basis ``"od"``; older
finders read stain concentrations, ``stain.BASES``), at the detector's working
scale (an image far from the scale it was fitted at is resampled to it and
back), to a proximity map, exp(-(d / r)^2) of the distance to the
nearest nucleus centre; its peaks are nuclei, above a threshold chosen on
held-out images. The detector reports a cell at each peak and takes its class
from the seeded region under it (``morphology.placed_by_the_finder``). The
shipped finder (``nucleus_net.safetensors``, the strided net at width 16 since 2026-12-06, fitted on 16 patches a
step since 2026-12-07) is fitted by ``bench/train_nucleus_net.py`` on real colorectal nuclei; ``mastctl finetune
nuclei`` fits one to your point annotations (``-O nuclei=nuclei.safetensors``; ``--batch 16`` as the shipped one, at
twice the time of its default 8).
Files are safetensors with a JSON header (never pickle), read and written here
with numpy alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mastctl.errors import BackendError, InputError
from mastctl.morphology.mastnet import _conv3x3_relu, linear_zoom
from mastctl.morphology.stain import BASES, Stained, net_input, stain_input  # noqa: F401 (stain_input: imported from here too)
from mastctl.threads import net_precision, torch_runs_the_nets

SCHEMA = "mastctl/nucleus-net@1"
PATCH = 128  # training patch side, working pixels
RADIUS_UM = 1.8  # proximity-map radius r
MIN_PEAK_UM = 2.5  # two nuclei closer than this are one
VAL_RADIUS_UM = 3.0  # a found peak this close to an annotated centre is a hit (threshold choice)
DEFAULT_NET = "nucleus_net.safetensors"
THRESHOLDS = np.round(np.arange(0.05, 0.71, 0.05), 2)  # peak thresholds tried
# Stain augmentation of the training patches through fixed vectors (basis "reference"): strength (log scale) of
# hematoxylin, eosin, residual, cross-talk between the channels (a stain vector that differs), and a colour cast (optical
# density per RGB channel). Through the image's own vectors, a uniform 0.8-1.2 gain: these wider ones there too were
# tried and not shipped (bench/train_nucleus_net.py).
REF_GAIN_SD = (0.25, 0.6, 0.35)
REF_MIX_SD = 0.15
CAST_SD = 0.04


def _torch():
    try:
        import torch
    except ImportError:
        raise BackendError("the learned nucleus finder needs torch: pip install torch==2.13.0 (CPU) and "
                           "pip install 'mastctl[nuclei]'") from None
    return torch


ARCHS = ("unet", "strided")
# The strided finder's 3x3 convolutions in order: (input channels, output channels, stride) in units of its width c
# (0: the image's three channels).
# How they connect: ``strided_net``; the 1x1 head reads its output, and its logit is resampled (bilinear) to the
# input's size.
STRIDED = ((0, 1, 2), (1, 1, 1), (1, 2, 2), (2, 2, 1), (2, 2, 1), (2, 2, 1), (2, 2, 2), (2, 2, 1), (2, 2, 1), (4, 2, 1),
           (3, 1, 1))


def build(width: int = 16, arch: str = "unet"):
    """The finder's torch module: 3 input channels, one proximity logit out, at the input's size.

    ``unet``: a three-level U-Net at full scale. ``strided``: the same idea with its first convolution at stride 2,
    so that every layer works at half the scale or less (at width 16, under half the time of the U-Net at width 8);
    its logit map is resampled to the input's size. The built-in finder is the strided net at width 16 (since
    2026-12-06; bench/train_nucleus_net.py)."""
    torch = _torch()
    nn = torch.nn
    if arch == "strided":
        return _build_strided(torch, width)

    def block(i: int, o: int):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                             nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c = width
            self.e1, self.e2, self.e3 = block(3, c), block(c, 2 * c), block(2 * c, 4 * c)
            self.d2, self.d1 = block(6 * c, 2 * c), block(3 * c, c)
            self.out = nn.Conv2d(c, 1, 1)

        def forward(self, x):
            f = torch.nn.functional
            a = self.e1(x)
            b = self.e2(f.max_pool2d(a, 2))
            c = self.e3(f.max_pool2d(b, 2))
            b = self.d2(torch.cat([f.interpolate(c, scale_factor=2), b], 1))
            a = self.d1(torch.cat([f.interpolate(b, scale_factor=2), a], 1))
            return self.out(a)

    return UNet()


def strided_net(x, conv, up, cat):
    """The strided finder's wiring (``STRIDED``) whatever runs it: ``conv(t, i)`` the i-th convolution (with its
    ReLU), ``up`` doubles both sides (nearest), ``cat`` joins two maps' channels; returns the last feature map (half
    the input's scale), which the 1x1 head reads."""
    a = conv(conv(x, 0), 1)
    b = conv(conv(conv(conv(a, 2), 3), 4), 5)
    c = conv(conv(conv(b, 6), 7), 8)
    b = conv(cat(b, up(c)), 9)
    return conv(cat(a, up(b)), 10)


def _build_strided(torch, width: int):
    nn, f = torch.nn, torch.nn.functional

    def conv(i: int, o: int, stride: int):
        return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

    class Strided(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.convs = nn.ModuleList([conv(i * width or 3, o * width, st) for i, o, st in STRIDED])
            self.out = nn.Conv2d(width, 1, 1)

        def forward(self, x):
            a = strided_net(x, lambda t, i: self.convs[i](t), lambda t: f.interpolate(t, scale_factor=2),
                            lambda s, t: torch.cat([s, t], 1))
            return f.interpolate(self.out(a), size=x.shape[2:], mode="bilinear", align_corners=False)

    return Strided()


def _upsample2_linear(m: np.ndarray, axis: int) -> np.ndarray:
    """``m`` twice as long along ``axis``, by linear interpolation at torch's sample positions
    (``interpolate(scale 2, mode="bilinear", align_corners=False)``, one axis)."""
    n = m.shape[axis]
    src = np.maximum((np.arange(2 * n) + 0.5) / 2 - 0.5, 0.0)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n - 1)
    w = (src - lo).astype(np.float32)
    shape = [1] * m.ndim
    shape[axis] = -1
    w = w.reshape(shape)
    return np.take(m, lo, axis=axis) * (1 - w) + np.take(m, hi, axis=axis) * w


def target_map(shape: tuple[int, int], points_px: np.ndarray, radius_px: float) -> np.ndarray:
    """exp(-(d / r)^2), d = distance of each pixel centre to the nearest point."""
    from scipy.spatial import cKDTree

    if len(points_px) == 0:
        return np.zeros(shape, np.float32)
    yy, xx = np.mgrid[: shape[0], : shape[1]] + 0.5
    d, _ = cKDTree(points_px).query(np.column_stack([xx.ravel(), yy.ravel()]))
    return np.exp(-((d / radius_px) ** 2)).reshape(shape).astype(np.float32)


BN_EPS = 1e-5  # torch's BatchNorm2d default
BLOCKS = ("e1", "e2", "e3", "d2", "d1")
MAX_UNSCALED = 1.33  # an image this close to the fitted scale (either way) is read as it is; otherwise resampled


@dataclass
class NucleusNet:
    """A fitted finder (``arch``: a U-Net or the strided net): its weights (a torch-style state dict as numpy arrays),
    scale and peak threshold.

    Inference needs numpy only (batch norm folded into the convolutions); torch, where installed, runs the
    same arithmetic (channels-last convolutions, about 3x faster). ``flips`` averages the map over the four
    flips of the image: measured on CRC (width 8, fold 0) it raised the detector's nucleus F1 from 0.803
    to 0.814 at 2.7x the time, so it is off unless asked for.
    """

    state: dict[str, np.ndarray]
    width: int
    work_mpp: float  # scale it was fitted at (um/px)
    peak_threshold: float
    info: dict[str, Any] = field(default_factory=dict)
    flips: bool = False
    basis: str = "image"  # the stain vectors it reads images through (stain.BASES)
    arch: str = "unet"  # ARCHS
    precision: str = "float32"  # what torch computes the convolutions in: threads.NET_PRECISIONS (the detector: auto)
    _folded: list | None = field(default=None, repr=False, compare=False)
    _torch_folded: list | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_module(cls, module, width: int, work_mpp: float, peak_threshold: float, info: dict | None = None,
                    basis: str = "image", arch: str = "unet") -> NucleusNet:
        state = {k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}
        return cls(state, width, work_mpp, peak_threshold, dict(info or {}), basis=basis, arch=arch)

    def folded(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """(weight (O, C, k, k), bias (O,)) of every convolution in order, batch norm folded in; the 1x1 head last."""
        if self._folded is None:
            s, convs = self.state, []
            if self.arch == "strided":
                pairs = [(f"convs.{i}.0", f"convs.{i}.1") for i in range(len(STRIDED))]
            else:
                pairs = [(f"{name}.{conv}", f"{name}.{bn}") for name in BLOCKS for conv, bn in ((0, 1), (3, 4))]
            for conv, bn in pairs:
                w, b = s[f"{conv}.weight"], s[f"{conv}.bias"]
                gain = s[f"{bn}.weight"] / np.sqrt(s[f"{bn}.running_var"] + BN_EPS)
                convs.append(((w * gain[:, None, None, None]).astype(np.float32),
                              ((b - s[f"{bn}.running_mean"]) * gain + s[f"{bn}.bias"]).astype(np.float32)))
            convs.append((s["out.weight"].astype(np.float32), s["out.bias"].astype(np.float32)))
            self._folded = convs
        return self._folded

    def proximity(self, st: Stained) -> np.ndarray:
        """The proximity map at the working scale of ``st`` (an image at another scale is resampled to the net's and back)."""
        x = net_input(st, self.basis)
        h, w = x.shape[1:]
        zoom = st.mpp / self.work_mpp
        if not 1 / MAX_UNSCALED <= zoom <= MAX_UNSCALED:
            if min(h, w) * zoom < 8:
                raise InputError(f"this image is too small for the nucleus model at {self.work_mpp:.2f} um/px")
            back = linear_zoom(self._map(linear_zoom(x, zoom))[None], 1 / zoom)[0][:h, :w]
            # the round trip may be a pixel short: the edge repeats
            return np.pad(back, ((0, h - back.shape[0]), (0, w - back.shape[1])), mode="edge")
        return self._map(x)

    def _map(self, x: np.ndarray) -> np.ndarray:
        h, w = x.shape[1:]
        m = 8 if self.arch == "strided" else 4  # each side a multiple of the coarsest scale's step
        x = np.pad(x, ((0, 0), (0, (-h) % m), (0, (-w) % m)), mode="reflect")
        forward = self._forward_torch if torch_runs_the_nets(self.precision) else self._forward
        if not self.flips:
            return forward(x)[:h, :w]
        total = np.zeros(x.shape[1:], np.float32)  # the mean over the four flips (a nucleus has no up or left)
        for axes in ((), (1,), (2,), (1, 2)):
            out = forward(np.ascontiguousarray(np.flip(x, axes) if axes else x))
            total += np.flip(out, tuple(a - 1 for a in axes)) if axes else out
        return total[:h, :w] / 4

    def _forward(self, x: np.ndarray) -> np.ndarray:
        """sigmoid(net(x)) of (3, H, W) float32 (H, W multiples of 4, of 8 for the strided net), with numpy: NHWC, one
        image."""
        convs = self.folded()
        if self.arch == "strided":
            return self._forward_strided(x, convs)

        def block(h, i):
            return _conv3x3_relu(_conv3x3_relu(h, *convs[2 * i]), *convs[2 * i + 1])

        def pool(h):
            n, hh, ww, c = h.shape
            return h.reshape(n, hh // 2, 2, ww // 2, 2, c).max(axis=(2, 4))

        def up(h):
            return h.repeat(2, axis=1).repeat(2, axis=2)

        a = block(np.ascontiguousarray(x.transpose(1, 2, 0))[None], 0)
        b = block(pool(a), 1)
        c = block(pool(b), 2)
        b = block(np.concatenate([up(c), b], axis=3), 3)
        a = block(np.concatenate([up(b), a], axis=3), 4)
        w, bias = convs[-1]
        logit = a[0] @ w[:, :, 0, 0].T + bias
        return (1.0 / (1.0 + np.exp(-np.clip(logit[:, :, 0], -30, 30)))).astype(np.float32)

    @staticmethod
    def _forward_strided(x: np.ndarray, convs) -> np.ndarray:
        a = strided_net(np.ascontiguousarray(x.transpose(1, 2, 0))[None],
                        lambda h, i: _conv3x3_relu(h, *convs[i], stride=STRIDED[i][2]),
                        lambda h: h.repeat(2, axis=1).repeat(2, axis=2), lambda g, h: np.concatenate([g, h], axis=3))
        w, bias = convs[-1]
        logit = a[0] @ w[:, :, 0, 0].T + bias
        logit = _upsample2_linear(_upsample2_linear(logit[:, :, 0], 0), 1)
        return (1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30)))).astype(np.float32)

    def _forward_torch(self, x: np.ndarray) -> np.ndarray:
        import torch

        f = torch.nn.functional
        dtype = getattr(torch, net_precision(self.precision))
        if self._torch_folded is None or self._torch_folded[0][0].dtype != dtype:
            self._torch_folded = [(torch.from_numpy(np.ascontiguousarray(w)).to(dtype), torch.from_numpy(b).to(dtype))
                                  for w, b in self.folded()]
        convs = self._torch_folded
        if self.arch == "strided":
            head = [t.float() for t in convs[-1]]  # the 1x1 head and the upsampling in float32: a smooth map to peak
            with torch.inference_mode():
                h = torch.from_numpy(np.ascontiguousarray(x))[None].to(dtype)
                h = h.contiguous(memory_format=torch.channels_last)
                a = strided_net(h, lambda t, i: f.conv2d(t, *convs[i], stride=STRIDED[i][2], padding=1).relu_(),
                                lambda t: f.interpolate(t, scale_factor=2), lambda s, t: torch.cat([s, t], 1))
                logit = f.interpolate(f.conv2d(a.float(), *head), scale_factor=2, mode="bilinear", align_corners=False)
                return torch.sigmoid(logit)[0, 0].numpy()

        def block(h, i):
            for w, b in convs[2 * i : 2 * i + 2]:
                h = f.conv2d(h, w, b, padding=1).relu_()  # in place: one pass over memory fewer
            return h

        with torch.inference_mode():
            h = torch.from_numpy(np.ascontiguousarray(x))[None].to(dtype).contiguous(memory_format=torch.channels_last)
            a = block(h, 0)
            b = block(f.max_pool2d(a, 2), 1)
            c = block(f.max_pool2d(b, 2), 2)
            b = block(torch.cat([f.interpolate(c, scale_factor=2), b], 1), 3)
            a = block(torch.cat([f.interpolate(b, scale_factor=2), a], 1), 4)
            w, bias = (t.float() for t in convs[-1])
            return torch.sigmoid(f.conv2d(a.float(), w, bias))[0, 0].numpy()

    def peaks(self, proximity: np.ndarray, mpp: float, threshold: float | None = None) -> np.ndarray:
        """Nucleus centres (x, y, continuous working pixels): local maxima of the smoothed map above the threshold."""
        return find_peaks(proximity, mpp, self.peak_threshold if threshold is None else threshold)

    def header(self) -> dict[str, Any]:
        return {"schema": SCHEMA, "width": self.width, "work_mpp": self.work_mpp, "peak_threshold": self.peak_threshold,
                "basis": self.basis, "arch": self.arch, "info": self.info}

    def save(self, path: Path) -> Path:
        from mastctl.writers import atomic_write

        path = Path(path)
        data = safetensors_bytes(self.state, {"mastctl": json.dumps(self.header())})
        atomic_write(path, lambda fh: fh.write(data))
        return path

    @classmethod
    def load(cls, path: str | Path) -> NucleusNet:
        """A model file (safetensors; read with numpy: neither torch nor the safetensors package is needed)."""
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: no such nucleus model file")
        try:
            metadata, state = read_safetensors(p)
            header = json.loads(metadata.get("mastctl", "{}"))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{p}: not a readable nucleus model: {exc}") from None
        if header.get("schema") != SCHEMA:
            raise InputError(f"{p}: not a mastctl nucleus model ({SCHEMA}); fit one with `mastctl finetune nuclei`")
        net = cls(state, int(header["width"]), float(header["work_mpp"]), float(header["peak_threshold"]), header.get("info", {}),
                  basis=str(header.get("basis", "image")), arch=str(header.get("arch", "unet")))
        if net.arch not in ARCHS:
            raise InputError(f"{p}: a nucleus model of an unknown architecture {net.arch!r} "
                             f"(known: {', '.join(ARCHS)})")
        if net.basis not in BASES:
            raise InputError(f"{p}: a nucleus model reading an unknown stain basis {net.basis!r} (known: {', '.join(BASES)})")
        try:
            net.folded()
        except KeyError as exc:
            raise InputError(f"{p}: a damaged nucleus model (no {exc} weights)") from None
        return net


DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: Path) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """(metadata, arrays) of a safetensors file: 8 bytes of header length, a JSON header, raw little-endian data."""
    data = Path(path).read_bytes()
    if len(data) < 8:
        raise ValueError("too short for a safetensors file")
    n = int.from_bytes(data[:8], "little")
    if not 2 <= n <= len(data) - 8:
        raise ValueError("not a safetensors file (bad header length)")
    header = json.loads(data[8 : 8 + n])
    body = memoryview(data)[8 + n :]
    metadata = header.pop("__metadata__", {}) or {}
    arrays = {}
    for name, spec in header.items():
        lo, hi = spec["data_offsets"]
        if spec["dtype"] not in DTYPES or not 0 <= lo <= hi <= len(body):
            raise ValueError(f"tensor {name}: unsupported dtype {spec['dtype']} or offsets out of range")
        arrays[name] = np.frombuffer(body[lo:hi], dtype=np.dtype(DTYPES[spec["dtype"]]).newbyteorder("<")).reshape(spec["shape"]).copy()
    return metadata, arrays


def safetensors_bytes(arrays: dict[str, np.ndarray], metadata: dict[str, str]) -> bytes:
    """The safetensors encoding of ``arrays`` (what ``safetensors.numpy.save`` writes, without the package)."""
    names = {np.dtype(v): k for k, v in DTYPES.items()}
    header: dict[str, Any] = {"__metadata__": metadata}
    chunks, offset = [], 0
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        raw = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": names[a.dtype], "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((-len(text)) % 8)  # the data starts 8-byte aligned
    return len(text).to_bytes(8, "little") + text + b"".join(chunks)


def default_net() -> NucleusNet:
    """The shipped nucleus finder (``bench/train_nucleus_net.py``; README)."""
    from importlib import resources

    with resources.as_file(resources.files("mastctl.morphology") / DEFAULT_NET) as path:
        return NucleusNet.load(path)


def find_peaks(proximity: np.ndarray, mpp: float, threshold: float) -> np.ndarray:
    from scipy import ndimage as ndi

    from mastctl.morphology.segment import centroids, maximum_filter

    smooth = ndi.gaussian_filter(proximity, 0.5 / mpp)
    size = max(3, int(round(MIN_PEAK_UM / mpp)) | 1)
    peak = (smooth == maximum_filter(smooth, size)) & (smooth > threshold)
    plateau, n = ndi.label(peak, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros((0, 2))
    return centroids(plateau, n)


@dataclass
class Example:
    """One annotated image at the working scale."""

    name: str
    stains: np.ndarray  # (3, H, W)
    target: np.ndarray  # (H, W)
    points: np.ndarray  # (n, 2) working pixels
    st: Stained


def example(name: str, st: Stained, points_px: np.ndarray, basis: str = "od") -> Example:
    pts = np.asarray(points_px, float).reshape(-1, 2) / st.factor
    return Example(name, net_input(st, basis), target_map(st.h.shape, pts, RADIUS_UM / st.mpp), pts, st)


def device_for(device: str | None = None, gpu=None) -> str:
    """The torch device for fitting: ``device`` (a --device value) if given, else the profile's gpu_settings."""
    from mastctl.devices import resolve_device

    _torch()
    if device is None and gpu is None:
        device = "auto"
    return resolve_device(gpu, device)


def train(examples: list[Example], *, steps: int = 3000, width: int = 16, batch: int = 8, seed: int = 0,
          device: str | None = None, on_step: Callable[[int, float], None] | None = None, basis: str = "od",
          arch: str = "unet"):
    """A finder (``build(width, arch)``) fitted on ``batch`` random PATCH crops of ``examples`` per step
    (cross-entropy, cosine schedule).

    Through fixed vectors (``basis`` "reference") each patch also gets a colour cast the image's own correction may
    have left (an optical density offset, ``CAST_SD`` per RGB channel)."""
    torch = _torch()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    dev = device_for(device)
    module = build(width, arch).to(dev)
    opt = torch.optim.Adam(module.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps), eta_min=2e-4)
    module.train()
    for step in range(steps):
        xb, yb = zip(*(_patch(examples[rng.integers(len(examples))], rng, basis) for _ in range(batch)), strict=True)
        x, y = torch.from_numpy(np.stack(xb)).to(dev), torch.from_numpy(np.stack(yb)[:, None]).to(dev)
        # cross-entropy against the soft target: steeper than squared error where the map should peak
        loss = torch.nn.functional.binary_cross_entropy_with_logits(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if on_step:
            on_step(step + 1, float(loss.detach()))
    return module.eval()


def fit(examples: list[Example], *, steps: int = 3000, width: int = 16, batch: int = 8, seed: int = 0,
        val_fraction: float = 0.2, folds: int = 0, device: str | None = None,
        on_step: Callable[[int, float], None] | None = None, basis: str = "od", arch: str = "unet") -> NucleusNet:
    """Fit the finder (``arch``) to ``examples`` and choose its peak threshold on images it did not see.

    ``folds`` < 2: a ``val_fraction`` of the images is held out and the threshold chosen on them.
    ``folds`` = K >= 2: K fits on (K-1)/K of the images each map the rest, the threshold is chosen on
    those out-of-fold maps of every image, and the model kept is one more fit on all of them
    (K + 1 fits; ``on_step`` counts the steps of all). ``basis``: the stain vectors it reads images through
    (``stain.BASES``).
    """
    from dataclasses import replace

    if not examples:
        raise InputError("no annotated image to learn nuclei from")
    examples = [replace(e, stains=net_input(e.st, basis)) for e in examples]
    if folds >= 2 and len(examples) < folds:
        raise InputError(f"{folds}-fold threshold choice needs at least {folds} images (got {len(examples)})")
    work_mpp = float(np.median([e.st.mpp for e in examples]))
    done = 0

    def counted(step: int, loss: float) -> None:
        if on_step:
            on_step(done + step, loss)

    recipe = {"steps": steps, "width": width, "batch": batch, "basis": basis, "arch": arch}
    shape = {"basis": basis, "arch": arch}
    if folds >= 2:
        counts = np.zeros((len(THRESHOLDS), 3), np.int64)
        for j, (rest, held) in enumerate(fold_splits(len(examples), folds, seed)):
            module = train([examples[i] for i in rest], seed=seed + 1 + j, device=device, on_step=counted, **recipe)
            inner = NucleusNet.from_module(module, width, work_mpp, 0.3, **shape)
            counts += match_counts(inner, [examples[i] for i in held])
            done += steps
        module = train(examples, seed=seed, device=device, on_step=counted, **recipe)
        threshold, f1 = best_threshold(counts)
        info = {"train_images": len(examples), "val_images": len(examples),
                "threshold_chosen_on": f"{folds}-fold out-of-fold maps of all {len(examples)} images"}
    else:
        order = np.random.default_rng(seed).permutation(len(examples))
        n_val = int(round(len(examples) * val_fraction)) if len(examples) >= 4 else 0
        val, rest = [examples[i] for i in order[:n_val]], [examples[i] for i in order[n_val:]]
        module = train(rest, seed=seed, device=device, on_step=counted, **recipe)
        fitted = NucleusNet.from_module(module, width, work_mpp, 0.3, **shape)
        threshold, f1 = best_threshold(match_counts(fitted, val or rest))
        info = {"train_images": len(rest), "val_images": len(val),
                "threshold_chosen_on": "held-out images" if val else "training images (too few to hold out)"}
    info.update({"steps": steps, "batch": batch, "folds": folds, "val_f1": round(f1, 4), "val_radius_um": VAL_RADIUS_UM})
    return NucleusNet.from_module(module, width, work_mpp, threshold, info, **shape)


def fold_splits(n: int, folds: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """(fitted on, held out) image indices of each of ``folds`` folds: a seeded permutation cut in ``folds``."""
    order = np.random.default_rng(seed).permutation(n)
    return [(sorted(set(range(n)) - set(held.tolist())), held.tolist()) for held in np.array_split(order, folds)]


def _patch(ex: Example, rng: np.random.Generator, basis: str = "od") -> tuple[np.ndarray, np.ndarray]:
    """A random PATCH-square crop (reflect-padded when the image is smaller), rotated, flipped, stain-jittered."""
    x, y = ex.stains, ex.target
    h, w = y.shape
    if h < PATCH or w < PATCH:
        ph, pw = max(0, PATCH - h), max(0, PATCH - w)
        x = np.pad(x, ((0, 0), (0, ph), (0, pw)), mode="reflect")
        y = np.pad(y, ((0, ph), (0, pw)), mode="reflect")
        h, w = y.shape
    r0, c0 = rng.integers(0, h - PATCH + 1), rng.integers(0, w - PATCH + 1)
    xp, yp = x[:, r0 : r0 + PATCH, c0 : c0 + PATCH], y[r0 : r0 + PATCH, c0 : c0 + PATCH]
    k = int(rng.integers(4))
    xp, yp = np.rot90(xp, k, axes=(1, 2)), np.rot90(yp, k)
    if rng.random() < 0.5:
        xp, yp = xp[:, :, ::-1], yp[:, ::-1]
    if basis == "od":
        return _od_augmented(xp, ex.st.vectors, rng), np.ascontiguousarray(yp, dtype=np.float32)
    if basis != "reference":
        gain = rng.uniform(0.8, 1.2, size=(3, 1, 1)).astype(np.float32)  # staining strength varies by lab and slide
        return np.ascontiguousarray(xp * gain, dtype=np.float32), np.ascontiguousarray(yp, dtype=np.float32)
    # through fixed vectors each laboratory's stains show: their strength (eosin most), their hue (cross-talk between
    # the channels) and the camera's cast the image's own correction left
    from mastctl.stains import REFERENCE_HE, stain_matrix

    gain = np.exp(rng.normal(0, 1, 3) * np.asarray(REF_GAIN_SD)).astype(np.float32)
    mixing = np.eye(3) + rng.normal(0, REF_MIX_SD, (3, 3)) * (1 - np.eye(3))
    xp = np.einsum("ij,jhw->ihw", (mixing * gain[:, None]).T.astype(np.float32), xp.astype(np.float32))
    xp = xp + (rng.normal(0, CAST_SD, 3) @ np.linalg.inv(stain_matrix(*REFERENCE_HE))).astype(np.float32)[:, None, None]
    return np.ascontiguousarray(xp, dtype=np.float32), np.ascontiguousarray(yp, dtype=np.float32)


OD_GAIN_SD = (0.2, 0.35)  # hematoxylin, eosin strength (log scale) of an "od" finder's training patches
OD_TURN_DEG = (6.0, 10.0)  # ... and how far their hues turn
OD_CAST_SD = 0.03


def _od_augmented(od: np.ndarray, vectors, rng: np.random.Generator) -> np.ndarray:
    """A patch's absorption re-stained: split into its stains (the image's vectors), each stain's strength and hue
    changed, recomposed, and a colour cast added."""
    from mastctl.stains import rotate_vector, stain_matrix

    own = stain_matrix(*vectors)
    conc = np.einsum("jhw,jk->khw", od, np.linalg.inv(own).astype(np.float32))
    gain = np.exp(np.append(rng.normal(0, 1, 2) * np.asarray(OD_GAIN_SD), 0.0))
    turned = stain_matrix(*(rotate_vector(v, abs(rng.normal(0, d)), rng) for v, d in zip(own[:2], OD_TURN_DEG)))
    out = np.einsum("khw,kj->jhw", conc, (turned * gain[:, None]).astype(np.float32))
    out += rng.normal(0, OD_CAST_SD, 3).astype(np.float32)[:, None, None]
    return np.ascontiguousarray(np.clip(out, 0.0, 3.0), dtype=np.float32)


def match_counts(net: NucleusNet, examples: Iterable[Example], radius_um: float = VAL_RADIUS_UM) -> np.ndarray:
    """(len(THRESHOLDS), 3): true positives, false positives, misses over ``examples`` at each peak threshold."""
    from mastctl.metrics import match

    counts = np.zeros((len(THRESHOLDS), 3), np.int64)
    for e in examples:
        prox = net.proximity(e.st)
        for i, t in enumerate(THRESHOLDS):
            found = find_peaks(prox, e.st.mpp, float(t))
            hits = len(match(found, e.points, radius_um / e.st.mpp).pairs)
            counts[i] += (hits, len(found) - hits, len(e.points) - hits)
    return counts


def f1_by_threshold(counts: np.ndarray) -> np.ndarray:
    """F1 at each row of :func:`match_counts`."""
    tp, fp, fn = np.asarray(counts).T
    return 2 * tp / np.maximum(1, 2 * tp + fp + fn)


def best_threshold(counts: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) of the best row of :func:`match_counts` (the lowest threshold on a tie)."""
    f1 = f1_by_threshold(counts)
    i = int(np.argmax(f1))
    return float(THRESHOLDS[i]), float(f1[i])


def examples_from_annotations(images, truth, *, mpp: float | None = None, max_pixels: int | None = None) -> list[Example]:
    """Examples from annotated images (``truth``: key -> TruthImage); every truth point is a nucleus centre."""
    from mastctl.morphology import annotated_images
    from mastctl.morphology import stain

    return [example(Path(path).name, stain.separate(pixels, scale), np.array([(c.x, c.y) for c in cells], float).reshape(-1, 2))
            for path, pixels, scale, cells in annotated_images(images, truth, mpp=mpp, max_pixels=max_pixels)]
