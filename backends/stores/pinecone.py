"""Pinecone store: the real ``pinecone`` client against an existing index.

The index (metric ``dotproduct``, dimension = text + image embedding widths)
is created by you in Pinecone's console or API; mastctl uses its data plane
only: records in namespace ``<collection>``, the knowledge base's metadata in
``<collection>__meta``. The API key is read from the environment variable
named by ``api_key_env`` and goes nowhere else (not to the store, not to logs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mastctl.errors import BackendError, register_secret
from mastctl.kb.store import META_ID, Filter, Hit, Row, from_metadata, to_metadata

if TYPE_CHECKING:
    import numpy as np

    from mastctl.profile import Profile

FETCH_BATCH = 100


class PineconeStore:
    name = "pinecone"
    requires = ("pinecone",)
    extra = "pinecone"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        host: str | None = Field(None, description="The index host (https://<index>-<project>.svc.<region>.pinecone.io); null: kb.uri.")
        api_key_env: str = Field("PINECONE_API_KEY", description="Environment variable holding the API key.")
        timeout_s: float = Field(30.0, gt=0)

        @field_validator("api_key_env")
        @classmethod
        def _env_name(cls, value: str) -> str:
            if not value.replace("_", "").isalnum() or value.startswith("pcsk_"):
                raise ValueError("must name an environment variable (e.g. PINECONE_API_KEY), never hold the key itself")
            return value

    def __init__(self, options: Options | None = None, profile: Profile | None = None, *, collection: str | None = None) -> None:
        self.options = options or self.Options()
        kb = profile.kb if profile is not None else None
        self.host = self.options.host or (kb.uri if kb else None)
        if not self.host or not str(self.host).startswith(("http://", "https://")):
            raise BackendError("the pinecone store needs the index host: set kb.uri (or backend_options.pinecone.host) "
                               "to https://<index host> from Pinecone's console")
        self.namespace = collection or (kb.collection if kb else "cells")
        self._index: Any = None
        self.dim: int | None = None

    def location(self) -> str:
        return f"{self.host} (pinecone namespace {self.namespace})"

    def lock_path(self) -> None:
        return None  # a service: upserts by id are atomic there

    def remove_location(self) -> None:
        return None

    @property
    def index(self) -> Any:
        if self._index is None:
            key = os.environ.get(self.options.api_key_env)
            register_secret(key)
            if not key:
                raise BackendError(f"the pinecone store needs an API key in ${self.options.api_key_env}")
            from pinecone import Pinecone

            try:
                self._index = Pinecone(api_key=key).Index(host=self.host)
            except Exception as exc:
                raise BackendError(f"cannot reach Pinecone at {self.host}: {_short(exc)}") from None
        return self._index

    def _call(self, what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except BackendError:
            raise
        except Exception as exc:  # network, HTTP status: one line, never the key
            raise BackendError(f"pinecone {what} failed at {self.host}: {_short(exc)}") from None

    def open(self, dim: int | None, create: bool) -> bool:
        stats = self._call("describe_index_stats", self.index.describe_index_stats)
        self.dim = int(stats.dimension)
        spaces = dict(stats.namespaces or {})
        exists = f"{self.namespace}__meta" in spaces or self.namespace in spaces
        if exists or not create:
            return exists
        if dim is not None and dim != self.dim:
            raise BackendError(f"the Pinecone index has dimension {self.dim}; this knowledge base needs {dim} "
                               "(text + image embeddings): create an index of that dimension, metric dotproduct")
        return True

    def read_meta(self) -> dict[str, Any] | None:
        got = self._call("fetch", self.index.fetch, ids=[META_ID], namespace=f"{self.namespace}__meta")
        vec = (got.vectors or {}).get(META_ID)
        return json.loads(vec.metadata["value"]) if vec is not None else None

    def write_meta(self, meta: dict[str, Any]) -> None:
        values = [1.0] + [0.0] * ((self.dim or 1) - 1)
        self._call("upsert", self.index.upsert, vectors=[{"id": META_ID, "values": values,
                   "metadata": {"value": json.dumps(meta, sort_keys=True)}}], namespace=f"{self.namespace}__meta")

    def upsert(self, rows: Sequence[Row]) -> None:
        for start in range(0, len(rows), FETCH_BATCH):
            part = rows[start:start + FETCH_BATCH]
            self._call("upsert", self.index.upsert, namespace=self.namespace, vectors=[
                {"id": r.id, "values": [float(v) for v in r.vector], "metadata": to_metadata(r)} for r in part])

    def fetch(self, ids: Sequence[str]) -> list[Row]:
        found: dict[str, Row] = {}
        for start in range(0, len(ids), FETCH_BATCH):
            got = self._call("fetch", self.index.fetch, ids=list(ids[start:start + FETCH_BATCH]), namespace=self.namespace)
            for i, vec in (got.vectors or {}).items():
                found[i] = from_metadata(i, vec.metadata or {}, vec.values)
        return [found[i] for i in ids if i in found]

    def delete(self, ids: Sequence[str]) -> int:
        existing = [r.id for r in self.fetch(ids)]
        if existing:
            self._call("delete", self.index.delete, ids=existing, namespace=self.namespace)
        return len(existing)

    def query(self, vector: np.ndarray, k: int, where: Filter) -> list[Hit]:
        got = self._call("query", self.index.query, vector=[float(v) for v in vector], top_k=k, namespace=self.namespace,
                         filter=where.mongo(), include_values=False, include_metadata=False)
        return [Hit(m.id, float(m.score)) for m in got.matches]

    def _all_ids(self) -> list[str]:
        ids: list[str] = []
        for page in self._call("list", lambda: list(self.index.list(namespace=self.namespace))):
            ids.extend(page if isinstance(page, list) and page and isinstance(page[0], str) else
                       [getattr(v, "id", v) for v in getattr(page, "vectors", page)])
        return sorted(ids)

    def scan(self, where: Filter, batch: int = 512) -> Iterator[list[Row]]:
        ids = self._all_ids()
        for start in range(0, len(ids), batch):
            rows = self.fetch(ids[start:start + batch])
            yield [r for r in rows if where.matches(r)] if where else rows

    def count(self, where: Filter) -> int:
        if where:
            return sum(len(rows) for rows in self.scan(where))
        stats = self._call("describe_index_stats", self.index.describe_index_stats)
        space = (stats.namespaces or {}).get(self.namespace)
        return int(space.vector_count) if space is not None else 0

    def drop(self) -> None:
        for ns in (self.namespace, f"{self.namespace}__meta"):
            try:
                self.index.delete(delete_all=True, namespace=ns)
            except Exception as exc:
                if "not found" not in str(exc).lower() and "404" not in str(exc):
                    raise BackendError(f"pinecone delete failed at {self.host}: {_short(exc)}") from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else text or type(exc).__name__
