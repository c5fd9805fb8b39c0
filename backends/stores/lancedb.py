"""LanceDB store: embedded, a folder on disk, the default.

Every upsert is one ``merge_insert`` on the id: one Lance commit, so a batch
lands whole or not at all, a killed process leaves the last committed
version readable, and readers always see a complete version. Once the table
holds ``index_threshold`` rows an IVF index (inner product; flat, because
records share text vectors and graph or quantised indexes lose ties: see
bench/kb.py) is built on the vector, plus bitmap indexes on the filter fields
and a B-tree on the id; rows added later are folded in by ``optimize``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mastctl.errors import BackendError
from mastctl.kb.store import folder_lock, remove_if_empty, FILTER_FIELDS, META_ID, Filter, Hit, Row, local_location

if TYPE_CHECKING:
    import numpy as np

    from mastctl.profile import Profile


class LanceDBStore:
    name = "lancedb"
    requires = ("lancedb", "pyarrow")
    extra = "kb"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        index_threshold: int = Field(20_000, ge=256, description="Rows from which an ANN vector index is built.")
        reindex_after: int = Field(10_000, ge=1, description="Unindexed rows that trigger folding them into the index.")
        nprobes: int = Field(6, ge=1, description="IVF partitions searched per query.")
        ef: int = Field(80, ge=10, description="HNSW search breadth per partition.")
        refine_factor: int = Field(4, ge=1, description="Quantised indexes: candidates re-ranked exactly, as a multiple of k.")
        index_type: Literal["ivf_hnsw_sq", "ivf_sq", "ivf_flat"] = Field(
            "ivf_flat", description="Vector index: IVF partitions scanned whole (flat: exact vectors; sq: 8-bit), or searched by HNSW graphs.")

    def __init__(self, options: Options | None = None, profile: Profile | None = None, *, uri: str | None = None,
                 collection: str | None = None) -> None:
        self.options = options or self.Options()
        self.uri, self.collection = local_location(profile, uri, collection)
        self._db: Any = None
        self._table: Any = None

    # ------------------------------------------------------------------ connection

    def location(self) -> str:
        return f"{self.uri} (lancedb table {self.collection})"

    def lock_path(self) -> Path:
        return folder_lock(self.uri, self.collection)

    def remove_location(self) -> None:
        remove_if_empty(self.uri, self.collection)

    def _connect(self) -> Any:
        if self._db is None:
            import lancedb

            try:
                self._db = lancedb.connect(str(self.uri))
            except Exception as exc:
                raise BackendError(f"cannot open LanceDB at {self.uri}: {exc}") from exc
        return self._db

    def _names(self) -> set[str]:
        return set(self._connect().list_tables().tables)

    def open(self, dim: int | None, create: bool) -> bool:
        import pyarrow as pa

        db = self._connect()
        names = self._names()
        if self.collection in names:
            try:
                self._table = db.open_table(self.collection)
            except ValueError:  # listed, but its first version is not committed yet (a writer is creating it)
                if not create:
                    return False
                raise
            return True
        if not create:
            return False
        if dim is None:
            raise BackendError("creating a LanceDB table needs the vector width")
        self.uri.mkdir(parents=True, exist_ok=True)
        schema = pa.schema([
            ("id", pa.string()),
            *[(name, pa.string()) for name in FILTER_FIELDS],
            ("record_json", pa.string()),
            ("crop_png", pa.binary()),
            ("vector", pa.list_(pa.float32(), dim)),
        ])
        self._table = db.create_table(self.collection, schema=schema, exist_ok=True)
        return True

    @property
    def table(self) -> Any:
        if self._table is None:
            raise BackendError(f"the knowledge base at {self.location()} is not open")
        return self._table

    # ------------------------------------------------------------------ metadata

    def _meta_table(self, create: bool) -> Any:
        import pyarrow as pa

        name = f"{self.collection}__meta"
        db = self._connect()
        if name in self._names():
            return db.open_table(name)
        if not create:
            return None
        return db.create_table(name, schema=pa.schema([("id", pa.string()), ("value", pa.string())]), exist_ok=True)

    def read_meta(self) -> dict[str, Any] | None:
        table = self._meta_table(create=False)
        if table is None:
            return None
        rows = table.search().where(f"id = '{META_ID}'").limit(1).to_list()
        return json.loads(rows[0]["value"]) if rows else None

    def write_meta(self, meta: dict[str, Any]) -> None:
        table = self._meta_table(create=True)
        (table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all()
         .execute([{"id": META_ID, "value": json.dumps(meta, sort_keys=True)}]))

    # ------------------------------------------------------------------ rows

    def upsert(self, rows: Sequence[Row]) -> None:
        import pyarrow as pa

        if not rows:
            return
        data = pa.table({
            "id": [r.id for r in rows],
            **{name: [getattr(r, name) for r in rows] for name in FILTER_FIELDS},
            "record_json": [r.record_json for r in rows],
            "crop_png": [r.crop_png for r in rows],
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(_stack([r.vector for r in rows]).ravel()), len(rows[0].vector)),
        }, schema=self.table.schema)
        self.table.merge_insert("id").when_matched_update_all().when_not_matched_insert_all().execute(data)
        self._maintain_index()

    def _maintain_index(self) -> None:
        table = self.table
        indices = {ix.name: ix for ix in table.list_indices()}
        vector_index = next((n for n, ix in indices.items() if list(ix.columns) == ["vector"]), None)
        if vector_index is None:
            if table.count_rows() >= self.options.index_threshold:
                self.build_index()
            return
        stats = table.index_stats(vector_index)
        if stats is not None and stats.num_unindexed_rows >= self.options.reindex_after:
            table.optimize()

    def build_index(self) -> None:
        """(Re)build the vector index and the filter fields' bitmap indexes."""
        table = self.table
        rows = table.count_rows()
        partitions = max(1, min(256, rows // 2000))
        from lancedb.index import Bitmap, BTree, IvfFlat, IvfHnswSq, IvfSq

        # With a config, create_index's first argument is the column (lancedb >= 0.25).
        kind = {"ivf_hnsw_sq": IvfHnswSq, "ivf_sq": IvfSq, "ivf_flat": IvfFlat}[self.options.index_type]
        table.create_index("vector", config=kind(distance_type="dot", num_partitions=partitions), replace=True)
        for name in ("type", "label", "difficulty"):
            table.create_index(name, config=Bitmap(), replace=True)
        table.create_index("id", config=BTree(), replace=True)  # upserts look existing ids up

    def fetch(self, ids: Sequence[str]) -> list[Row]:
        if not ids:
            return []
        quoted = ", ".join("'" + i.replace("'", "''") + "'" for i in ids)
        table = self.table.search().where(f"id IN ({quoted})").limit(len(ids)).to_arrow()
        found = {r.id: r for r in _rows(table)}
        return [found[i] for i in ids if i in found]

    def delete(self, ids: Sequence[str]) -> int:
        existing = len(self.fetch(ids))
        if existing:
            quoted = ", ".join("'" + i.replace("'", "''") + "'" for i in ids)
            self.table.delete(f"id IN ({quoted})")
        return existing

    def query(self, vector: np.ndarray, k: int, where: Filter) -> list[Hit]:
        q = (self.table.search(vector, vector_column_name="vector").distance_type("dot")
             .select(["id", "_distance"]).limit(k))
        if self.table.list_indices():
            q = q.nprobes(self.options.nprobes)
            if self.options.index_type != "ivf_flat":
                q = q.refine_factor(self.options.refine_factor)
            if self.options.index_type == "ivf_hnsw_sq":
                q = q.ef(self.options.ef)
        if where:
            q = q.where(where.sql(), prefilter=True)
        result = q.to_arrow()
        # LanceDB's "dot" distance is 1 - dot product.
        return [Hit(i, 1.0 - float(d)) for i, d in zip(result["id"].to_pylist(), result["_distance"].to_pylist())]

    def scan(self, where: Filter, batch: int = 512) -> Iterator[list[Row]]:
        q = self.table.search().select(["id"]).limit(max(1, self.table.count_rows()))
        if where:
            q = q.where(where.sql())
        ids = sorted(q.to_arrow()["id"].to_pylist())
        for start in range(0, len(ids), batch):
            yield self.fetch(ids[start:start + batch])

    def count(self, where: Filter) -> int:
        return int(self.table.count_rows(where.sql()) if where else self.table.count_rows())

    def drop(self) -> None:
        db = self._connect()
        for name in (self.collection, f"{self.collection}__meta"):
            db.drop_table(name, ignore_missing=True)
        self._table = None


def _stack(vectors: Sequence[Any]) -> np.ndarray:
    import numpy as np

    return np.ascontiguousarray(np.stack(vectors).astype(np.float32))


def _rows(table: Any) -> list[Row]:
    import numpy as np

    cols = table.to_pydict()
    vec = table["vector"].combine_chunks()
    width = vec.type.list_size
    flat = vec.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width) if len(vec) else np.zeros((0, width))
    return [Row(id=cols["id"][i], **{name: cols[name][i] for name in FILTER_FIELDS}, record_json=cols["record_json"][i],
                crop_png=cols["crop_png"][i], vector=flat[i]) for i in range(len(cols["id"]))]
