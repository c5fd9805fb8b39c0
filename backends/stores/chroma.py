"""Chroma store: a local persistent folder (``chromadb.PersistentClient``).

The collection uses inner-product space; Chroma never embeds anything here
(``embedding_function=None`` always: its default embedder downloads a model).
Rows travel as metadata (the crop as base64) with the record JSON.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mastctl.errors import BackendError
from mastctl.kb.store import folder_lock, remove_if_empty, META_ID, Filter, Hit, Row, from_metadata, local_location, to_metadata

if TYPE_CHECKING:
    import numpy as np

    from mastctl.profile import Profile


class ChromaStore:
    name = "chroma"
    requires = ("chromadb",)
    extra = "chroma"

    def __init__(self, options: None = None, profile: Profile | None = None, *, uri: str | None = None,
                 collection: str | None = None) -> None:
        self.uri, self.collection = local_location(profile, uri, collection)
        if len(self.collection) < 3:
            raise BackendError(f"Chroma needs a collection name of 3 or more characters, got {self.collection!r}")
        self._client: Any = None
        self._col: Any = None

    def location(self) -> str:
        return f"{self.uri} (chroma collection {self.collection})"

    def lock_path(self) -> Path:
        return folder_lock(self.uri, self.collection)

    def remove_location(self) -> None:
        remove_if_empty(self.uri, self.collection)

    def _connect(self) -> Any:
        if self._client is None:
            import chromadb
            from chromadb.config import Settings

            try:
                self._client = chromadb.PersistentClient(path=str(self.uri), settings=Settings(anonymized_telemetry=False))
            except Exception as exc:
                raise BackendError(f"cannot open Chroma at {self.uri}: {exc}") from exc
        return self._client

    def _get(self, name: str, create: bool) -> Any:
        client = self._connect()
        if name in {c.name for c in client.list_collections()}:
            return client.get_collection(name, embedding_function=None)
        if not create:
            return None
        return client.get_or_create_collection(name, embedding_function=None, configuration={"hnsw": {"space": "ip"}})

    def open(self, dim: int | None, create: bool) -> bool:
        if not create and not self.uri.exists():
            return False
        self._col = self._get(self.collection, create)
        return self._col is not None

    @property
    def col(self) -> Any:
        if self._col is None:
            raise BackendError(f"the knowledge base at {self.location()} is not open")
        return self._col

    def read_meta(self) -> dict[str, Any] | None:
        meta = self._get(f"{self.collection}__meta", create=False)
        if meta is None:
            return None
        got = meta.get(ids=[META_ID], include=["documents"])
        return json.loads(got["documents"][0]) if got["ids"] else None

    def write_meta(self, meta: dict[str, Any]) -> None:
        col = self._get(f"{self.collection}__meta", create=True)
        col.upsert(ids=[META_ID], embeddings=[[1.0]], documents=[json.dumps(meta, sort_keys=True)])

    def upsert(self, rows: Sequence[Row]) -> None:
        if rows:
            self.col.upsert(ids=[r.id for r in rows], embeddings=[r.vector for r in rows],
                            metadatas=[to_metadata(r) for r in rows])

    def fetch(self, ids: Sequence[str]) -> list[Row]:
        if not ids:
            return []
        got = self.col.get(ids=list(ids), include=["metadatas", "embeddings"])
        found = {i: from_metadata(i, m, v) for i, m, v in zip(got["ids"], got["metadatas"], got["embeddings"])}
        return [found[i] for i in ids if i in found]

    def delete(self, ids: Sequence[str]) -> int:
        existing = self.col.get(ids=list(ids), include=[])["ids"] if ids else []
        if existing:
            self.col.delete(ids=existing)
        return len(existing)

    def query(self, vector: np.ndarray, k: int, where: Filter) -> list[Hit]:
        n = min(k, self.col.count())
        if n == 0:
            return []
        got = self.col.query(query_embeddings=[vector], n_results=n, where=where.mongo(), include=["distances"])
        return [Hit(i, 1.0 - float(d)) for i, d in zip(got["ids"][0], got["distances"][0])]  # ip distance = 1 - dot

    def _ids(self, where: Filter) -> list[str]:
        return sorted(self.col.get(where=where.mongo(), include=[])["ids"])

    def scan(self, where: Filter, batch: int = 512) -> Iterator[list[Row]]:
        ids = self._ids(where)
        for start in range(0, len(ids), batch):
            yield self.fetch(ids[start:start + batch])

    def count(self, where: Filter) -> int:
        return len(self._ids(where)) if where else int(self.col.count())

    def drop(self) -> None:
        client = self._connect()
        names = {c.name for c in client.list_collections()}
        for name in (self.collection, f"{self.collection}__meta"):
            if name in names:
                client.delete_collection(name)
        self._col = None
