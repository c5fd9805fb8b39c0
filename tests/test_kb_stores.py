"""One conformance suite, run against every store: LanceDB, Chroma, Pinecone (real client, fake server)."""

from __future__ import annotations

import numpy as np
import pytest

from mastctl.kb.store import Filter, Row
from tests.fakes.pinecone_server import FakePinecone

DIM = 12
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20


def make_row(i: int, rtype: str = "explicit", label: str = "mast_cell", difficulty: str = "easy", seed: int = 0) -> Row:
    v = np.random.default_rng(seed * 1000 + i).normal(size=DIM).astype(np.float32)
    return Row(f"r{i:03d}", rtype, label, difficulty, "test", f'{{"id": "r{i:03d}"}}', PNG + bytes([i % 256]), v / np.linalg.norm(v))


@pytest.fixture(params=["lancedb", "chroma", "pinecone"])
def store(request, tmp_path, monkeypatch):
    name = request.param
    if name == "lancedb":
        pytest.importorskip("lancedb")
        from mastctl.backends.stores.lancedb import LanceDBStore

        yield LanceDBStore(uri=str(tmp_path / "lance"), collection="cells")
    elif name == "chroma":
        pytest.importorskip("chromadb")
        from mastctl.backends.stores.chroma import ChromaStore

        yield ChromaStore(uri=str(tmp_path / "chroma"), collection="cells")
    else:
        pytest.importorskip("pinecone")
        from mastctl.backends.stores.pinecone import PineconeStore

        monkeypatch.setenv("PINECONE_API_KEY", "test-key")
        with FakePinecone(DIM) as server:
            store = PineconeStore(PineconeStore.Options(host=server.host), collection="cells")
            store.fake = server
            yield store


def test_missing_collection_is_reported_not_created(store):
    assert store.open(DIM, create=False) is False


def test_upsert_fetch_roundtrip_and_upsert_by_id(store):
    assert store.open(DIM, create=True)
    rows = [make_row(i) for i in range(5)]
    store.upsert(rows)
    store.upsert(rows[:2])  # again: replaces, adds nothing
    assert store.count(Filter()) == 5
    got = store.fetch(["r003", "r000", "nope"])
    assert [r.id for r in got] == ["r003", "r000"]
    assert got[0].crop_png == rows[3].crop_png and got[0].record_json == rows[3].record_json
    assert np.allclose(got[0].vector, rows[3].vector, atol=1e-6)
    changed = make_row(1, "implicit", difficulty="hard", seed=5)
    store.upsert([changed])
    assert store.fetch(["r001"])[0].type == "implicit"
    assert store.count(Filter()) == 5


def test_query_is_exact_inner_product_with_filters(store):
    store.open(DIM, create=True)
    rows = [make_row(i, "negative" if i % 3 == 0 else "explicit", "lymphocyte" if i % 3 == 0 else "mast_cell",
                     "hard" if i % 2 else "easy") for i in range(30)]
    store.upsert(rows)
    q = rows[7].vector
    hits = store.query(q, 5, Filter())
    expected = sorted(rows, key=lambda r: -float(np.dot(q, r.vector)))[:5]
    assert [h.id for h in hits] == [r.id for r in expected]
    assert hits[0].score == pytest.approx(1.0, abs=1e-4)
    where = Filter({"type": ("negative",), "difficulty": ("easy",)})
    hits = store.query(q, 30, where)
    assert hits and all(where.matches(r) for r in store.fetch([h.id for h in hits]))
    assert len(hits) == sum(where.matches(r) for r in rows)
    assert store.count(where) == len(hits)


def test_scan_delete_meta_and_drop(store):
    store.open(DIM, create=True)
    store.upsert([make_row(i) for i in range(12)])
    assert store.read_meta() is None
    store.write_meta({"schema_version": 2, "text_dim": 8})
    store.write_meta({"schema_version": 2, "text_dim": 8, "x": "y"})
    assert store.read_meta() == {"schema_version": 2, "text_dim": 8, "x": "y"}
    seen = [r.id for batch in store.scan(Filter(), batch=5) for r in batch]
    assert seen == sorted(f"r{i:03d}" for i in range(12))
    assert store.delete(["r000", "r001", "zzz"]) == 2
    assert store.count(Filter()) == 10
    store.drop()
    assert store.open(DIM, create=False) is False


def test_pinecone_key_only_from_environment_and_never_stored(tmp_path, monkeypatch):
    pytest.importorskip("pinecone")
    from mastctl.backends.stores.pinecone import PineconeStore

    from mastctl.errors import BackendError

    with FakePinecone(DIM, api_key="pcsk-secret-123") as server:
        store = PineconeStore(PineconeStore.Options(host=server.host), collection="cells")
        monkeypatch.delenv("PINECONE_API_KEY", raising=False)
        with pytest.raises(BackendError, match=r"\$PINECONE_API_KEY"):
            store.open(DIM, create=True)
        monkeypatch.setenv("PINECONE_API_KEY", "wrong")
        store = PineconeStore(PineconeStore.Options(host=server.host), collection="cells")
        with pytest.raises(BackendError) as err:
            store.open(DIM, create=True)
        assert "wrong" not in str(err.value)
        monkeypatch.setenv("PINECONE_API_KEY", "pcsk-secret-123")
        store = PineconeStore(PineconeStore.Options(host=server.host), collection="cells")
        store.open(DIM, create=True)
        store.upsert([make_row(1)])
        store.write_meta({"a": 1})
        stored = repr(server.spaces)
        assert "pcsk-secret-123" not in stored
    with pytest.raises(Exception, match="never hold the key"):
        PineconeStore.Options(api_key_env="pcsk_abc")


def test_pinecone_index_of_the_wrong_width_is_one_clear_error(monkeypatch):
    pytest.importorskip("pinecone")
    from mastctl.backends.stores.pinecone import PineconeStore

    from mastctl.errors import BackendError

    monkeypatch.setenv("PINECONE_API_KEY", "test-key")
    with FakePinecone(DIM + 1) as server:
        store = PineconeStore(PineconeStore.Options(host=server.host), collection="cells")
        with pytest.raises(BackendError, match=f"dimension {DIM + 1}.*needs {DIM}"):
            store.open(DIM, create=True)


def test_lancedb_builds_an_ann_index_and_keeps_recall(tmp_path):
    pytest.importorskip("lancedb")
    from mastctl.backends.stores.lancedb import LanceDBStore

    store = LanceDBStore(LanceDBStore.Options(index_threshold=2000, reindex_after=500), uri=str(tmp_path / "l"))
    store.open(DIM, create=True)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(20, DIM))
    rows = []
    for i in range(2400):
        v = centres[i % 20] + 0.3 * rng.normal(size=DIM)
        rows.append(Row(f"r{i:05d}", "explicit", "mast_cell", "easy", "t", "{}", b"", (v / np.linalg.norm(v)).astype(np.float32)))
    for start in range(0, len(rows), 600):
        store.upsert(rows[start:start + 600])
    assert any(list(ix.columns) == ["vector"] for ix in store.table.list_indices())
    V = np.stack([r.vector for r in rows])
    recalls = []
    for qi in range(0, 2400, 240):
        exact = set(np.argsort(-(V @ V[qi]))[:10])
        got = {int(h.id[1:]) for h in store.query(V[qi], 10, Filter())}
        recalls.append(len(exact & got) / 10)
    assert np.mean(recalls) >= 0.9
