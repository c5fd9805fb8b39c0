"""The knowledge base: records, their embeddings and a store, behind one object.

``KnowledgeBase.open(profile)`` connects the profile's store (``kb.store``),
checks that it was built with the configured embedders and schema (migrating
an older schema in place), and embeds lazily: listing, showing, deleting and
exporting never load a model.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mastctl.errors import InputError, UsageError
from mastctl.kb import crops as C
from mastctl.kb.records import SCHEMA_VERSION, CellRecord, now, parse
from mastctl.kb.store import Filter, GuardedStore, Row, Store

if TYPE_CHECKING:
    from mastctl.profile import Profile

BATCH = 256  # records per atomic write


@dataclass(frozen=True)
class SearchHit:
    record: CellRecord
    score: float


@dataclass
class WriteResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    ids: list[str] = field(default_factory=list)

    def __iadd__(self, other: WriteResult) -> WriteResult:
        self.added += other.added
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.ids.extend(other.ids)
        return self

    def to_dict(self) -> dict[str, int]:
        return {"added": self.added, "updated": self.updated, "unchanged": self.unchanged}


class KnowledgeBase:
    def __init__(self, store: Store, *, store_name: str, text_embedder: str, image_embedder: str, crop_um: float,
                 profile: Profile | None = None) -> None:
        self.store = GuardedStore(store)  # a damaged store is a one-line error, never a traceback
        self.store_name = store_name
        self.text_name = text_embedder
        self.image_name = image_embedder
        self.crop_um = crop_um
        self.profile = profile
        self._text: Any = None
        self._image: Any = None
        self._text_cache: dict[str, np.ndarray] = {}
        self.meta: dict[str, Any] = {}
        self.created = False  # this session made the store
        self._write_lock: Any = None

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, profile: Profile, *, create: bool = False, check: bool = True, write: bool = False,
             on_wait: Callable[[str], None] | None = None) -> KnowledgeBase:
        """Connect the profile's store; ``create`` makes an empty one; ``check`` refuses other embedders.

        A writer (``create`` or ``write``) first takes the store's lock and holds it until :meth:`close`
        (or the process ends): concurrent writers queue instead of each inserting what the other has
        not committed yet. Readers take no lock; every store shows them whole batches only.
        """
        from mastctl import registry

        settings = profile.kb
        store = registry.create("store", settings.store, profile)
        kb = cls(store, store_name=settings.store, text_embedder=settings.text_embedder,
                 image_embedder=settings.image_embedder, crop_um=settings.crop_um, profile=profile)
        if create or write:
            kb._lock(on_wait, settings.lock_timeout_s)
        try:
            kb._connect(create, check)
        except BaseException:
            kb.close()
            raise
        return kb

    @classmethod
    @contextmanager
    def session(cls, profile: Profile, *, create: bool = False, check: bool = True,
                on_wait: Callable[[str], None] | None = None):
        """A writer's knowledge base: locked while open; a store this session created and left empty is removed."""
        kb = cls.open(profile, create=create, check=check, write=True, on_wait=on_wait)
        try:
            yield kb
        except BaseException:
            kb.discard_if_new_and_empty()
            raise
        finally:
            kb.close()

    def _lock(self, on_wait: Callable[[str], None] | None, timeout_s: float) -> None:
        from mastctl.locks import FileLock

        path = self.store.lock_path()
        if path is not None:
            self._write_lock = FileLock(path, timeout_s=timeout_s, on_wait=on_wait).acquire()

    def close(self) -> None:
        """Release the writer's lock (if held)."""
        lock, self._write_lock = self._write_lock, None
        if lock is not None:
            lock.release()

    def discard_if_new_and_empty(self) -> None:
        """Undo the creation of a store that this session made and that holds no record."""
        if not self.created:
            return
        try:
            if self.store.count(Filter()) == 0:
                self.store.drop()
                self.store.remove_location()
        except Exception:  # the failure that got us here matters more than this cleanup
            pass

    def _connect(self, create: bool, check: bool) -> None:
        exists = self.store.open(None, create=False)
        if not exists:
            if not create:
                raise InputError(f"no knowledge base at {self.store.location()}: add records first "
                                 "(mastctl kb add / kb ingest / kb import)")
            self.meta = self._fresh_meta()
            self.store.open(self.meta["text_dim"] + self.meta["image_dim"], create=True)
            self.store.write_meta(self.meta)
            self.created = True
            return
        self.meta = self.store.read_meta() or {}
        if not self.meta:
            raise InputError(f"{self.store.location()} holds no mastctl metadata: not a mastctl knowledge base")
        version = int(self.meta.get("schema_version", 1))
        if version > SCHEMA_VERSION:
            raise InputError(f"the knowledge base at {self.store.location()} has schema version {version}, "
                             f"newer than this mastctl ({SCHEMA_VERSION}); upgrade mastctl")
        if version < SCHEMA_VERSION:
            if self._write_lock is None:  # a reader meets an old store: migrating writes, so queue like a writer
                self._lock(None, 600.0)
                self.store.open(None, create=False)  # the latest version, now that nobody else writes
            self.migrate()
        if check:
            self.check_embedders()

    def _fresh_meta(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "text_embedder": self.text_name, "text_dim": int(self.text_embedder().embed(["width probe"]).shape[1]),
                "image_embedder": self.image_name, "image_dim": self.image_embedder().dim, "crop_um": self.crop_um,
                "created_at": now().isoformat()}

    def check_embedders(self) -> None:
        stored = (self.meta.get("text_embedder"), self.meta.get("image_embedder"))
        wanted = (self.text_name, self.image_name)
        if stored != wanted:
            raise UsageError(
                f"the knowledge base at {self.store.location()} was built with text embedder {stored[0]!r} and image "
                f"embedder {stored[1]!r}; the profile asks for {wanted[0]!r} and {wanted[1]!r}: run `mastctl kb reindex` "
                "to rebuild it (or change the profile back)")
        width = self.image_embedder().dim
        if self.meta.get("image_dim") not in (None, width):
            raise UsageError(
                f"the knowledge base at {self.store.location()} holds {self.meta['image_dim']}-wide image vectors; this "
                f"mastctl's {self.image_name!r} embedder makes {width}-wide ones (it measures cells differently now): "
                "run `mastctl kb reindex` to rebuild it")

    def migrate(self) -> int:
        """Rewrite every record in the current schema (records migrate on parse); the vectors stay."""
        done = 0
        for rows in self.store.scan(Filter()):
            fixed = []
            for row in rows:
                record = self._record(row, crop=False)
                fixed.append(Row(row.id, row.type, record.label, record.difficulty, record.source,
                                 _record_json(record), row.crop_png, row.vector))
            self.store.upsert(fixed)
            done += len(fixed)
        self.meta["schema_version"] = SCHEMA_VERSION
        self.store.write_meta(self.meta)
        return done

    # ------------------------------------------------------------------ embedders

    def text_embedder(self) -> Any:
        if self._text is None:
            from mastctl import registry

            self._text = _of_modality(registry.create("embedder", self.text_name, self.profile), self.text_name, "text")
        return self._text

    def image_embedder(self) -> Any:
        if self._image is None:
            from mastctl import registry

            self._image = _of_modality(registry.create("embedder", self.image_name, self.profile), self.image_name, "image")
        return self._image

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Unit text vectors; each distinct text is embedded once per process."""
        todo = sorted({t for t in texts if t not in self._text_cache})
        if todo:
            for text, vec in zip(todo, self.text_embedder().embed(todo)):
                self._text_cache[text] = _unit(vec)
        return np.stack([self._text_cache[t] for t in texts]) if texts else np.zeros((0, self.meta["text_dim"]), np.float32)

    def embed_crops(self, crop_arrays: Sequence[np.ndarray]) -> np.ndarray:
        if not crop_arrays:
            return np.zeros((0, self.meta["image_dim"]), np.float32)
        return np.stack([_unit(v) for v in self.image_embedder().embed(list(crop_arrays))])

    # ------------------------------------------------------------------ writing

    def upsert(self, records: Iterable[CellRecord], *, image_vectors: Sequence[np.ndarray] | None = None,
               keep_times: bool = False, on_batch: Callable[[int], None] | None = None) -> WriteResult:
        """Insert or replace by id, BATCH records per atomic write; unchanged records are not rewritten."""
        vectors = iter(image_vectors) if image_vectors is not None else None
        pairs = ((r, next(vectors) if vectors is not None else None) for r in records)
        return self.upsert_pairs(pairs, keep_times=keep_times, on_batch=on_batch)

    def upsert_pairs(self, pairs: Iterable[tuple[CellRecord, np.ndarray | None]], *, keep_times: bool = False,
                     on_batch: Callable[[int], None] | None = None) -> WriteResult:
        """``upsert`` of (record, image vector or None) pairs from any number of images, in full batches."""
        total = WriteResult()
        batch: list[tuple[CellRecord, np.ndarray | None]] = []
        for pair in pairs:
            batch.append(pair)
            if len(batch) >= BATCH:
                total += self._write(batch, keep_times)
                if on_batch:
                    on_batch(len(batch))
                batch = []
        if batch:
            total += self._write(batch, keep_times)
            if on_batch:
                on_batch(len(batch))
        return total

    def _write(self, batch: list[tuple[CellRecord, np.ndarray | None]], keep_times: bool) -> WriteResult:
        latest: dict[str, tuple[CellRecord, np.ndarray | None]] = {}
        for record, vec in batch:  # the last of several records with one id wins, as in a file read in order
            latest[record.id] = (record, vec)
        existing = {row.id: row for row in self.store.fetch(list(latest))}
        result = WriteResult()
        pending: list[tuple[CellRecord, np.ndarray | None]] = []
        for rid, (record, vec) in latest.items():
            old = existing.get(rid)
            if old is not None and not keep_times:
                old_record = self._record(old, crop=False)
                if _same(old_record, record, old.crop_png):
                    result.unchanged += 1
                    continue
                record = record.model_copy(update={"created_at": old_record.created_at, "updated_at": now()})
            pending.append((record, vec))
            result.ids.append(rid)
            if old is None:
                result.added += 1
            else:
                result.updated += 1
        if pending:
            self.store.upsert(self._rows(pending))
        return result

    def _rows(self, items: list[tuple[CellRecord, np.ndarray | None]]) -> list[Row]:
        texts = self.embed_texts([r.text() for r, _ in items])
        image_dim = self.meta["image_dim"]
        need = [i for i, (r, v) in enumerate(items) if v is None and r.crop_png is not None]
        computed = dict(zip(need, self.embed_crops([C.from_png(items[i][0].crop_png) for i in need])))
        rows = []
        for i, (record, vec) in enumerate(items):
            image = vec if vec is not None else computed.get(i, np.zeros(image_dim, np.float32))
            rows.append(Row(record.id, record.type, record.label, record.difficulty, record.source, _record_json(record),
                            record.crop_png or b"", np.concatenate([texts[i], _unit(image)]).astype(np.float32)))
        return rows

    def delete(self, ids: Sequence[str]) -> int:
        return self.store.delete(list(ids))

    # ------------------------------------------------------------------ reading

    def _record(self, row: Row, crop: bool = True) -> CellRecord:
        data = json.loads(row.record_json)
        if crop and row.crop_png:
            data["crop_png"] = row.crop_png
        return parse(data, where=f"stored record {row.id}")

    def get(self, record_id: str) -> CellRecord:
        rows = self.store.fetch([record_id])
        if not rows:
            raise InputError(f"no record {record_id!r} in {self.store.location()}")
        return self._record(rows[0])

    def records(self, where: Filter | None = None, crop: bool = True) -> Iterator[CellRecord]:
        for rows in self.store.scan(where or Filter()):
            for row in rows:
                yield self._record(row, crop)

    def count(self, where: Filter | None = None) -> int:
        return self.store.count(where or Filter())

    def search(self, *, text: str | None = None, crop: np.ndarray | None = None, k: int = 5,
               where: Filter | None = None, text_weight: float = 0.5) -> list[SearchHit]:
        """Nearest records by text, by a crop (at CROP_MPP), or both weighted; scores are cosine similarities."""
        if text is None and crop is None:
            raise UsageError("search needs --text, --image or --cell")
        wt = (text_weight if crop is not None else 1.0) if text is not None else 0.0
        q_text = self.embed_texts([text])[0] * wt if text is not None else np.zeros(self.meta["text_dim"], np.float32)
        q_image = self.embed_crops([crop])[0] * (1.0 - wt) if crop is not None else np.zeros(self.meta["image_dim"], np.float32)
        if crop is not None and not q_image.any() and text is None:
            raise InputError("the query crop shows no nucleus at its centre: nothing to compare (is the cell centred?)")
        hits = self.store.query(np.concatenate([q_text, q_image]).astype(np.float32), k, where or Filter())
        rows = {r.id: r for r in self.store.fetch([h.id for h in hits])}
        return [SearchHit(self._record(rows[h.id]), h.score) for h in hits if h.id in rows]

    def stats(self) -> dict[str, Any]:
        counts: dict[str, dict[str, int]] = {"type": {}, "label": {}, "difficulty": {}, "source": {}}
        total = 0
        for rows in self.store.scan(Filter()):
            for row in rows:
                total += 1
                for name in counts:
                    value = getattr(row, name) or "(none)"
                    counts[name][value] = counts[name].get(value, 0) + 1
        return {"store": self.store_name, "location": self.store.location(), "records": total,
                **{f"by_{k}": dict(sorted(v.items())) for k, v in counts.items()},
                "schema_version": self.meta.get("schema_version"), "text_embedder": self.meta.get("text_embedder"),
                "image_embedder": self.meta.get("image_embedder"), "crop_um": self.meta.get("crop_um")}

    # ------------------------------------------------------------------ files

    def export(self, path: Path, where: Filter | None = None) -> int:
        """JSONL, one record per line with its crop, ordered by id; written atomically."""
        from mastctl.writers import atomic_write

        count = 0

        def fill(fh) -> None:
            nonlocal count
            for record in self.records(where):
                fh.write((json.dumps(record.to_json_dict(), ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
                count += 1

        atomic_write(path, fill)
        return count

    def reindex(self, on_batch: Callable[[int], None] | None = None) -> int:
        """Re-embed every record with the profile's embedders; rebuilds the collection when the width changes."""
        fresh = self._fresh_meta()
        old_dim = int(self.meta.get("text_dim", 0)) + int(self.meta.get("image_dim", 0))
        if fresh["text_dim"] + fresh["image_dim"] == old_dim:
            self.meta.update({k: fresh[k] for k in ("text_embedder", "text_dim", "image_embedder", "image_dim")})
            n = 0
            for rows in self.store.scan(Filter()):
                records = [self._record(r) for r in rows]
                self.store.upsert(self._rows([(r, None) for r in records]))
                n += len(records)
                if on_batch:
                    on_batch(len(records))
            self.store.write_meta(self.meta)
            return n
        # A new width: keep every record in a file beside the store until the rebuilt one holds them all.
        fd, name = tempfile.mkstemp(prefix="mastctl-kb-reindex-", suffix=".jsonl")
        os.close(fd)
        backup = Path(name)
        n = self.export(backup)
        self.store.drop()
        self.meta = fresh
        self.store.open(fresh["text_dim"] + fresh["image_dim"], create=True)
        self.store.write_meta(self.meta)
        try:
            self.upsert(read_jsonl(backup), keep_times=True, on_batch=on_batch)
        except BaseException as exc:
            raise InputError(f"reindex stopped ({exc}); every record is kept in {backup}: "
                             f"`mastctl kb import {backup}` restores them") from exc
        backup.unlink()
        return n


def read_jsonl(path: Path) -> Iterator[CellRecord]:
    """Records of a JSONL file (export format or hand-written), any schema version."""
    from mastctl.jsonl import objects

    for n, raw in objects(path):
        yield parse(raw, where=f"{path}:{n}")


def _of_modality(embedder: Any, name: str, modality: str) -> Any:
    """Embedders say what they embed (``modality``); a text embedder cannot embed crops, nor the reverse."""
    declared = getattr(embedder, "modality", modality)
    if declared != modality:
        from mastctl.errors import ConfigError

        raise ConfigError(f"kb.{modality}_embedder: {name!r} embeds {declared}, not {modality}")
    return embedder


def _record_json(record: CellRecord) -> str:
    return json.dumps(record.to_json_dict(crop=False), ensure_ascii=False, sort_keys=True)


def _same(old: CellRecord, new: CellRecord, old_crop: bytes) -> bool:
    skip = {"created_at", "updated_at", "crop_png"}
    return old.model_dump(exclude=skip) == new.model_dump(exclude=skip) and (old_crop or None) == new.crop_png


def _unit(v: Any) -> np.ndarray:
    v = np.asarray(v, np.float32)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


