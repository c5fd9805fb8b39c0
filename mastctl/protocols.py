"""Every contract between mastctl and a backend, in one file: what a plugin implements, and what mastctl calls.

A backend is a class named by an entry point (``mastctl.detectors``,
``mastctl.embedders``, ``mastctl.stores``; see :mod:`mastctl.registry`),
constructed as ``Class(options, profile)`` where ``options`` is an instance of
its nested pydantic ``Options`` model (validated from ``backend_options.<name>``
and ``-O key=value``; a class without one takes none). Class attributes the
registry reads: ``name``, ``requires`` (modules it imports), ``install_hint`` or
``extra`` (what to ``pip install`` when they are missing).

Detectors
    :class:`Detector` is all a detector must be. The optional capabilities below
    are discovered with ``isinstance`` (the protocols are runtime-checkable), never
    by reaching into another backend's attributes:

    - :class:`SlideCalibrating`: fixes some options once per slide (stain vectors,
      a threshold), so every tile of the slide is cut the same way;
    - :class:`CandidateDetector`: reports *every* nucleus with its probability of
      being a mast cell (features ``p_explicit``/``p_implicit``) and the threshold it
      decides at: what ``hybrid`` asks second opinions about and ``gemini`` retrieves
      look-alikes for;
    - :class:`Identified`: names the model it runs (``model_id``), written into every
      output's provenance.

Embedders
    :class:`Embedder` turns texts or cell crops into unit vectors; ``modality`` says
    which. :class:`MeasuringEmbedder` also measures each crop's cell (features and
    class probabilities), which ``kb ingest`` uses to describe and grade records.

Stores
    :class:`Store` keeps knowledge-base rows (:class:`mastctl.kb.store.Row`).

Teachers
    :class:`Teacher` encodes texts for ``mastctl cube`` (see :mod:`mastctl.cube.teachers`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from mastctl.cells import Cell, Detections
    from mastctl.imaging import Image
    from mastctl.kb.store import Filter, Hit, Row


# --------------------------------------------------------------------------- detectors


@runtime_checkable
class Detector(Protocol):
    """Finds cells in one decoded image (RGB uint8 with its um/px, which may be unknown)."""

    name: str

    def detect(self, image: Image) -> Detections:
        """Cells in ``image``'s pixel coordinates. Raise MastctlError subclasses for expected failures."""
        ...


@runtime_checkable
class SlideCalibrating(Protocol):
    """A detector that fixes options once per slide, from a mosaic of a few of its tiles."""

    def slide_options(self, sample: np.ndarray, mpp: float) -> dict[str, Any]:
        """Options (as for ``-O``) that make every tile of this slide use the same settings."""
        ...


@runtime_checkable
class CandidateDetector(Protocol):
    """A detector that scores every nucleus it finds, mast cell or not."""

    @property
    def mast_threshold(self) -> float:
        """P(mast) from which this detector reports a candidate as a mast cell."""
        ...

    def candidates(self, image: Image) -> list[Cell]:
        """Every nucleus, each with features ``p_explicit`` and ``p_implicit``."""
        ...


@runtime_checkable
class Identified(Protocol):
    """A detector that can name the model (weights, classifier) it runs, for provenance."""

    @property
    def model_id(self) -> str:
        """e.g. ``built-in default_model.json sha256:1a2b3c4d5e6f`` or ``my_model.json sha256:...``."""
        ...


# --------------------------------------------------------------------------- embedders


@runtime_checkable
class Embedder(Protocol):
    """Turns items (texts, or crops for image embedders) into vectors."""

    name: str
    dim: int
    modality: Literal["text", "image"]

    def embed(self, items: Sequence[Any]) -> np.ndarray:
        """float32 array of shape (len(items), dim), rows L2-normalised."""
        ...


class Measure(Protocol):
    features: dict[str, float]
    probabilities: dict[str, float]


@runtime_checkable
class MeasuringEmbedder(Protocol):
    """An image embedder that also measures the cell at each crop's centre."""

    def embed_and_measure(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, list[Measure | None]]: ...


# --------------------------------------------------------------------------- stores


@runtime_checkable
class Store(Protocol):
    """A place that keeps knowledge-base rows. ``open`` creates the collection when asked to."""

    name: str

    def open(self, dim: int | None, create: bool) -> bool:
        """Connect; create the collection for vectors of ``dim`` when ``create``. False if it does not exist."""
        ...

    def read_meta(self) -> dict[str, Any] | None: ...

    def write_meta(self, meta: dict[str, Any]) -> None: ...

    def upsert(self, rows: Sequence[Row]) -> None:
        """Insert or replace by id, as one batch."""
        ...

    def fetch(self, ids: Sequence[str]) -> list[Row]: ...

    def delete(self, ids: Sequence[str]) -> int:
        """Remove these ids; how many existed."""
        ...

    def query(self, vector: np.ndarray, k: int, where: Filter) -> list[Hit]:
        """The k rows of largest inner product with ``vector``, best first."""
        ...

    def scan(self, where: Filter, batch: int = 512) -> Iterator[list[Row]]:
        """Every row (matching ``where``), in batches, ordered by id."""
        ...

    def count(self, where: Filter) -> int: ...

    def drop(self) -> None:
        """Remove the collection and its metadata."""
        ...

    def location(self) -> str:
        """Where the data lives, for messages."""
        ...

    def lock_path(self) -> Path | None:
        """The file writers lock while they write (None: the service serialises writes itself)."""
        ...

    def remove_location(self) -> None:
        """Remove what creating the store made (an empty folder), after :meth:`drop`."""
        ...


# --------------------------------------------------------------------------- teachers


@runtime_checkable
class Teacher(Protocol):
    """A text encoder of ``mastctl cube`` (a profile ``teacher_models`` entry)."""

    name: str
    embedding_dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """float32 (len(texts), embedding_dim)."""
        ...
