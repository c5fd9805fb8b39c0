"""Knowledge-base benchmarks (issue: `mastctl kb`), printed as measured numbers.

    python bench/kb.py --fit-image-embedder      # refit mastctl/morphology/crop_embedding.json
    python bench/kb.py quality                   # precision@5 of same cell type, held-out synthetic crops
    python bench/kb.py ingest --records 3000     # records/s with both embeddings, per store
    python bench/kb.py search --records 100000   # LanceDB p50 latency and recall@10 against exact search

Fitting uses seeds 2000+ (training tiles); quality is measured on seeds 9000+
at 0.5 and 0.25 µm/px, never seen by the fit.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mastctl import synth
from mastctl.kb import crops as C

CELL_TYPES = ("explicit", "implicit", "lymphocyte", "plasma_cell", "fibroblast", "eosinophil", "other")


def synthetic_crops(seeds, mpp: float, crop_um: float = 30.0):
    """(crops at CROP_MPP, cell type, source key) of every cell of the synthetic tiles that fits whole."""
    out, types, keys = [], [], []
    for seed in seeds:
        tile = synth.render_tile(seed, synth.SynthOptions(mpp=mpp, size=512 if mpp >= 0.5 else 1024))
        h, w = tile.he.shape[:2]
        margin = crop_um / mpp / 2
        for c in tile.cells:
            if not (margin <= c.x < w - margin and margin <= c.y < h - margin):
                continue
            out.append(C.cut(tile.he, mpp, c.x, c.y, crop_um))
            types.append(c.kind if c.label == "mast_cell" else c.label)
            keys.append(f"s{seed}")
    return out, np.array(types), np.array(keys)


def fit(seeds) -> None:
    from mastctl.morphology import embedding

    rows, found = [], []
    for mpp in (0.5, 0.25):
        crops, _, _ = synthetic_crops(seeds, mpp)
        r, measures = embedding.raw_rows(crops)
        rows.append(r)
        found.extend(m.found for m in measures)
    X = np.concatenate(rows)[np.array(found)]
    mean, scale = X.mean(0), X.std(0) + 1e-6
    path = Path(embedding.__file__).with_name(embedding.CONSTANTS)
    path.write_text(json.dumps({"schema": "mastctl/crop-embedding@1", "fitted_on": f"synthetic seeds {seeds.start}..{seeds.stop - 1}, "
                                "0.5 and 0.25 um/px", "rows": len(X), "mean": [round(float(v), 6) for v in mean],
                                "scale": [round(float(v), 6) for v in scale]}, indent=1) + "\n")
    print(f"fitted {path.name} on {len(X)} crops")


def precision_at_5(vectors: np.ndarray, types: np.ndarray, keys: np.ndarray) -> dict:
    """Each crop queries all others (not from its own tile): share of the top 5 of its own type."""
    S = vectors @ vectors.T
    S[keys[:, None] == keys[None, :]] = -np.inf
    top = np.argsort(-S, axis=1)[:, :5]
    hit = (types[top] == types[:, None]).mean(1)
    return {"all": round(float(hit.mean()), 3), **{t: round(float(hit[types == t].mean()), 3) for t in CELL_TYPES if (types == t).any()}}


def quality(args) -> None:
    from mastctl.morphology import embedding

    for mpp in (0.5, 0.25):
        crops, types, keys = synthetic_crops(range(args.seed, args.seed + args.tiles), mpp)
        t0 = time.perf_counter()
        vectors, measures = embedding.embed(crops)
        dt = time.perf_counter() - t0
        ok = np.array([m.found for m in measures])
        p5 = precision_at_5(vectors[ok], types[ok], keys[ok])
        print(f"image retrieval, {mpp} um/px: {len(crops)} crops ({(~ok).sum()} without a central nucleus), "
              f"{1000 * dt / len(crops):.2f} ms/crop; precision@5 same type {p5['all']:.3f}  {p5}")


def _open_kb(store: str, folder: Path, text_embedder: str = "minilm"):
    from mastctl.kb.service import KnowledgeBase
    from mastctl.profile import Profile

    profile = Profile.model_validate({"kb": {"store": store, "uri": str(folder), "text_embedder": text_embedder}})
    return KnowledgeBase.open(profile, create=True)


def ingest(args) -> None:
    """`kb ingest` of synthetic annotation files, timed per store (model loading excluded, reported apart)."""
    from mastctl.kb.sources import truth_batches

    work = Path(args.workdir).expanduser()
    tiles = max(1, args.records // 38)
    folder = work / f"kb-ingest-s{args.seed}-n{tiles}"
    if not (folder / f"{synth.tile_stem(args.seed, tiles - 1)}.json").exists():
        synth.generate(folder, tiles, args.seed, synth.SynthOptions())
    for store in args.stores.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            kb = _open_kb(store, Path(tmp) / "kb")
            load_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            batches = truth_batches(folder, [folder], embedder=kb.image_embedder(), mpp=None, crop_um=kb.crop_um,
                                    workers=args.workers)
            added = kb.upsert_pairs((r, v) for _, records, vectors in batches for r, v in zip(records, vectors)).added
            dt = time.perf_counter() - t0
            texts = len(kb._text_cache)
            t0 = time.perf_counter()
            again = kb.upsert_pairs((r, v) for _, records, vectors in truth_batches(
                folder, [folder], embedder=kb.image_embedder(), mpp=None, crop_um=kb.crop_um, workers=args.workers)
                for r, v in zip(records, vectors)).unchanged
            dt2 = time.perf_counter() - t0
        print(f"ingest {store}: {added} records from {tiles} tiles in {dt:.1f} s = {added / dt:.0f} records/s with both "
              f"embeddings ({texts} distinct texts; opening + model load {load_s:.1f} s); re-ingest {again} unchanged "
              f"in {dt2:.1f} s = {again / dt2:.0f} records/s")


def realistic_vectors(args, n: int):
    """n record vectors (text | image) of real synthetic cells: every cell twice (its crop, and its crop mirrored
    and shifted by a pixel), the text that of the record `kb ingest` would write for it."""
    from concurrent.futures import ProcessPoolExecutor

    from mastctl.kb.describe import describe

    work = Path(args.workdir).expanduser()
    work.mkdir(parents=True, exist_ok=True)  # a fresh machine has no cache folder yet
    cache = work / f"kb-vectors-{n}.npz"
    if cache.exists():
        data = np.load(cache)
        return data["vectors"], data["types"]
    image, types, texts, seed = [], [], [], 5000
    with ProcessPoolExecutor(2) as pool:
        while len(types) < n:
            batch = max(2, min(40, -(-(n - len(types)) // 150)))  # a tile gives ~150 vectors
            for vecs, tps, feats in pool.map(_tile_vectors, range(seed, seed + batch)):
                image.append(vecs)
                types.extend(tps)
                for t, f in zip(tps, feats):
                    morph, dist, words = describe(t, f)
                    texts.append(". ".join([t, *morph.model_dump().values(), *dist.model_dump().values(), *words]))
            seed += batch
            print(f"  {len(types)} cell vectors", file=sys.stderr)
    kb = _open_kb("lancedb", Path(tempfile.mkdtemp()) / "kb")
    text = kb.embed_texts(texts[:n])
    vectors = np.concatenate([text, np.concatenate(image)[:n]], axis=1).astype(np.float32)
    types_arr = np.array(types[:n])
    np.savez(cache, vectors=vectors, types=types_arr)
    print(f"  {len(set(texts[:n]))} distinct texts", file=sys.stderr)
    return vectors, types_arr


def _tile_vectors(seed: int):
    from mastctl.morphology.embedding import embed

    tile = synth.render_tile(seed)
    crops, types = [], []
    for c in tile.cells:
        t = c.kind if c.label == "mast_cell" else c.label
        crops.append(C.cut(tile.he, tile.mpp, c.x, c.y, 30.0))
        crops.append(np.ascontiguousarray(C.cut(tile.he, tile.mpp, min(c.x + 1, 511), min(c.y + 1, 511), 30.0)[:, ::-1]))
        types += [t, t]
    vectors, measures = embed(crops)
    return vectors, types, [m.features for m in measures]


def search(args) -> None:
    """LanceDB at --records rows: p50/p95 latency and recall@10 against exact search, image, text and mixed queries."""
    from mastctl.backends.stores.lancedb import LanceDBStore
    from mastctl.kb.store import Filter, Row

    n = args.records
    vectors, types = realistic_vectors(args, n + 300)
    db_vecs, queries = vectors[:n], vectors[n:]
    crop = C.to_png(np.full((60, 60, 3), 230, np.uint8))
    with tempfile.TemporaryDirectory() as tmp:
        opts = LanceDBStore.Options(**{k: v for k, v in (("nprobes", args.nprobes), ("ef", args.ef),
                                                           ("refine_factor", args.refine),
                                                           ("index_type", args.index_type)) if v})
        store = LanceDBStore(opts, uri=str(Path(tmp) / "kb"))
        store.open(vectors.shape[1], create=True)
        t0 = time.perf_counter()
        for start in range(0, n, 5000):
            rows = [Row(f"r{i:07d}", "negative", str(types[i]), "easy", "bench", "{}", crop, db_vecs[i])
                    for i in range(start, min(n, start + 5000))]
            store.upsert(rows)
        build_s = time.perf_counter() - t0
        indexed = [list(ix.columns) for ix in store.table.list_indices()]
        text_dim = 384
        for kind in ("image", "text", "mixed"):
            lat, recall = [], []
            for q in queries[:200]:
                qv = q.copy()
                if kind == "image":
                    qv[:text_dim] = 0
                elif kind == "text":
                    qv[text_dim:] = 0
                else:
                    qv *= 0.5
                scores = db_vecs @ qv
                tenth = np.partition(-scores, 9)[9] * -1
                t0 = time.perf_counter()
                hits = store.query(qv, 10, Filter())
                lat.append(time.perf_counter() - t0)
                # A hit is right when it truly belongs to the top 10 (ties with the 10th count: equal texts tie).
                recall.append(sum(scores[int(h.id[1:])] >= tenth - 1e-5 for h in hits) / 10)
            lat_ms = np.array(lat) * 1000
            print(f"search lancedb {n} records, {kind} queries: p50 {np.median(lat_ms):.1f} ms, p95 "
                  f"{np.percentile(lat_ms, 95):.1f} ms, recall@10 vs exact {np.mean(recall):.3f}")
        print(f"(built in {build_s:.0f} s; indexes: {indexed}; {opts.index_type}, nprobes {opts.nprobes}, ef {opts.ef}, refine {opts.refine_factor})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", choices=["quality", "ingest", "search"], default="quality")
    ap.add_argument("--fit-image-embedder", action="store_true")
    ap.add_argument("--seed", type=int, default=9000)
    ap.add_argument("--tiles", type=int, default=16)
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--stores", default="lancedb,chroma")
    ap.add_argument("--workdir", default="~/.cache/mastctl-bench")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--nprobes", type=int, help="LanceDB search: IVF partitions probed (default: the store's)")
    ap.add_argument("--ef", type=int, help="LanceDB search: HNSW breadth")
    ap.add_argument("--refine", type=int, help="LanceDB search: exact re-ranking factor")
    ap.add_argument("--index-type", help="LanceDB vector index: ivf_hnsw_sq, ivf_sq, ivf_flat")
    args = ap.parse_args()
    if args.fit_image_embedder:
        fit(range(2000, 2040))
        return 0
    {"quality": quality, "ingest": ingest, "search": search}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
