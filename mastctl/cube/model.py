"""The reshaper and the 3D cubic core (torch).

``EmbeddingReshaper``: a D-dim embedding <-> a (d, h, w) lattice, lossless:
the lattice holds exactly D cells when D factors well (384 -> 6x8x8,
768 -> 12x8x8), else it is zero-padded and the padding dropped on the way back.

``CubicCore``: every lattice cell holds ``channels`` numbers and follows one
local rule shared by all cells and all steps — a 3x3x3 convolution of its
neighbourhood proposes an update, a gate (sigmoid of another 3x3x3
convolution) decides how much of it to take — repeated ``steps`` times; a
1x1x1 read-out returns one number per cell, added to the input (residual),
then a learned global linear map mixes distant cells (``mix``), also residual.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def lattice_shape(dim: int) -> tuple[int, int, int]:
    """The most cube-like (d, h, w) with d*h*w == dim; for awkward dims the smallest cube-like box above it."""
    best = None
    for d in range(1, dim + 1):
        if dim % d:
            continue
        for h in range(1, dim // d + 1):
            if (dim // d) % h:
                continue
            w = dim // d // h
            shape = tuple(sorted((d, h, w)))
            score = shape[2] / shape[0]
            if best is None or score < best[0]:
                best = (score, shape)
    if best is not None and best[0] <= 4:
        return best[1]
    side = math.ceil(dim ** (1 / 3))
    return (side, side, math.ceil(dim / side / side))


class EmbeddingReshaper:
    def __init__(self, dim: int, shape: tuple[int, int, int] | None = None) -> None:
        self.dim = dim
        self.shape = tuple(shape) if shape else lattice_shape(dim)
        self.cells = self.shape[0] * self.shape[1] * self.shape[2]
        if self.cells < dim:
            raise ValueError(f"a {self.shape} lattice has {self.cells} cells, fewer than the {dim} dimensions")

    def to_lattice(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, dim) -> (batch, 1, d, h, w)."""
        if self.cells > self.dim:
            x = torch.nn.functional.pad(x, (0, self.cells - self.dim))
        return x.reshape(x.shape[0], 1, *self.shape)

    def to_embedding(self, lattice: torch.Tensor) -> torch.Tensor:
        return lattice.reshape(lattice.shape[0], -1)[:, : self.dim]


class CubicCore(nn.Module):
    def __init__(self, dim: int, shape: tuple[int, int, int] | None = None, channels: int = 16, steps: int = 4,
                 mix: bool = True) -> None:
        super().__init__()
        self.reshaper = EmbeddingReshaper(dim, shape)
        self.steps = steps
        self.lift = nn.Conv3d(1, channels, kernel_size=1)
        self.rule = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.gate = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm = nn.GroupNorm(1, channels)
        self.readout = nn.Conv3d(channels, 1, kernel_size=1)
        nn.init.zeros_(self.readout.weight)  # starts as the identity map
        nn.init.zeros_(self.readout.bias)
        self.mix = nn.Linear(dim, dim) if mix else None
        if self.mix is not None:
            nn.init.zeros_(self.mix.weight)
            nn.init.zeros_(self.mix.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lattice = self.reshaper.to_lattice(x)
        h = self.lift(lattice)
        for _ in range(self.steps):
            update = torch.tanh(self.rule(self.norm(h)))
            gate = torch.sigmoid(self.gate(h))
            h = h + gate * update
        y = x + self.reshaper.to_embedding(self.readout(h))
        if self.mix is not None:
            y = y + self.mix(y)
        return y

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
