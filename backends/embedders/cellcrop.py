"""Offline image embedder of cell crops (the knowledge base's default).

Input: RGB crops at the knowledge base's scale (0.5 µm/px) with the cell at
the centre. Output: unit vectors from the morphology detector's stain-aware
measurements of the central nucleus and its cytoplasm
(:mod:`mastctl.morphology.embedding`); numpy and scipy only, no weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from mastctl.morphology.embedding import CropMeasure
    from mastctl.profile import Profile


class CellCropEmbedder:
    name = "cellcrop"
    modality = "image"

    def __init__(self, options: None = None, profile: Profile | None = None) -> None:
        from mastctl.morphology.embedding import DIM

        self.dim = DIM

    def embed(self, items: Sequence[np.ndarray]) -> np.ndarray:
        return self.embed_and_measure(items)[0]

    def embed_and_measure(self, items: Sequence[np.ndarray]) -> tuple[np.ndarray, list[CropMeasure]]:
        from mastctl.morphology.embedding import embed

        return embed(list(items))
