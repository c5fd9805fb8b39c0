"""The small protocols backends implement (see mastctl.registry for how they are found)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from mastctl.cells import Detections
    from mastctl.imaging import Image


@runtime_checkable
class Detector(Protocol):
    """Finds cells in one decoded image."""

    name: str

    def detect(self, image: Image) -> Detections: ...


@runtime_checkable
class Embedder(Protocol):
    """Turns items (texts, or crops for image embedders) into vectors."""

    name: str
    dim: int

    def embed(self, items: Sequence[Any]) -> np.ndarray:
        """float32 array of shape (len(items), dim), rows L2-normalised."""
        ...
