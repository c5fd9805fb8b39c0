"""The one protocol every knowledge-base store implements, and what travels through it.

A store keeps rows: the record's JSON (crop excluded), the crop's PNG bytes,
the filterable scalars, and one vector — the record's text and image
embeddings side by side, each of unit length::

    vector = [ text (t dims) | image (i dims) ]

so that one inner-product search serves every kind of query: a text query is
``[q_text | 0]``, an image query ``[0 | q_image]``, a mixed one
``[w q_text | (1-w) q_image]``, and the score is the (weighted) cosine
similarity. Stores know nothing of embedders or records.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mastctl.errors import guard

if TYPE_CHECKING:
    import numpy as np

FILTER_FIELDS = ("type", "label", "difficulty", "source")
META_ID = "__mastctl_meta__"


@dataclass
class Row:
    id: str
    type: str
    label: str
    difficulty: str
    source: str
    record_json: str
    crop_png: bytes
    vector: np.ndarray  # float32, text then image


@dataclass(frozen=True)
class Filter:
    """Rows whose field holds one of the listed values (all fields must match)."""

    values: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in self.values:
            if name not in FILTER_FIELDS:
                raise ValueError(f"cannot filter on {name!r} (only {', '.join(FILTER_FIELDS)})")

    def __bool__(self) -> bool:
        return bool(self.values)

    def matches(self, row: Row) -> bool:
        return all(getattr(row, name) in allowed for name, allowed in self.values.items())

    def sql(self) -> str | None:
        """A SQL WHERE clause (LanceDB); values are quoted, never interpolated raw."""
        if not self.values:
            return None
        quote = lambda v: "'" + v.replace("'", "''") + "'"
        return " AND ".join(f"{name} IN ({', '.join(quote(v) for v in allowed)})" for name, allowed in self.values.items())

    def mongo(self) -> dict[str, Any] | None:
        """A metadata filter of the Chroma / Pinecone kind."""
        parts = [{name: {"$in": list(allowed)}} for name, allowed in self.values.items()]
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else {"$and": parts}


@dataclass(frozen=True)
class Hit:
    id: str
    score: float


from mastctl.protocols import Store  # noqa: E402,F401  (the contract lives with the others)


class GuardedStore:
    """A store whose every call turns a library's exception (a damaged table, a bad manifest)
    into a one-line :class:`~mastctl.errors.InputError` naming the store."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if not callable(value):
            return value
        import inspect

        what = f"the knowledge base at {self._store.location()}"

        def call(*args: Any, **kwargs: Any) -> Any:
            with guard(what):
                result = value(*args, **kwargs)
            if inspect.isgenerator(result):
                return _guarded_iter(result, what)
            return result

        return call


def _guarded_iter(gen: Iterator[Any], what: str) -> Iterator[Any]:
    while True:
        with guard(what):
            try:
                item = next(gen)
            except StopIteration:
                return
        yield item


def folder_lock(folder: Path, collection: str) -> Path:
    """Where a store on local disk keeps its writers' lock."""
    return Path(folder) / f".mastctl-{collection}.lock"


def remove_if_empty(folder: Path, collection: str) -> None:
    """Remove a store folder that creating the store made and that holds nothing else now."""
    import contextlib

    lock = folder_lock(folder, collection)
    with contextlib.suppress(OSError):
        if folder.is_dir() and all(p == lock for p in folder.iterdir()):
            with contextlib.suppress(OSError):
                lock.unlink()
            folder.rmdir()


def to_metadata(row: Row) -> dict[str, str]:
    """A row as flat string metadata (stores without binary columns: Chroma, Pinecone)."""
    import base64

    return {**{name: getattr(row, name) for name in FILTER_FIELDS}, "record_json": row.record_json,
            "crop_png": base64.b64encode(row.crop_png).decode("ascii")}


def from_metadata(row_id: str, meta: dict[str, Any], vector: Any) -> Row:
    import base64

    import numpy as np

    return Row(row_id, *(str(meta.get(name, "")) for name in FILTER_FIELDS), record_json=str(meta["record_json"]),
               crop_png=base64.b64decode(meta.get("crop_png") or ""), vector=np.asarray(vector, np.float32))


def local_location(profile: Any, uri: str | None, collection: str | None) -> tuple[Any, str]:
    """(folder, collection) of a store on local disk: explicit values, else the profile's kb section."""
    kb = profile.kb if profile is not None else None
    folder = Path(uri or (kb.uri if kb else "~/.local/share/mastctl/kb")).expanduser()
    return folder, collection or (kb.collection if kb else "cells")
