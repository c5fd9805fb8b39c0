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


def _records(n: int, seed: int):
    """Realistic records: truth-derived from synthetic tiles (crops, descriptions), many tiles."""
    from mastctl.kb import sources

    rng_seed = seed
    made = 0
    while made < n:
        tile = synth.render_tile(rng_seed, synth.SynthOptions(mpp=0.5))
        yield from (r for r in sources.synth_tile_records(tile, f"bench_{rng_seed}"))
        made += len(tile.cells)
        rng_seed += 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", choices=["quality", "ingest", "search"], default="quality")
    ap.add_argument("--fit-image-embedder", action="store_true")
    ap.add_argument("--seed", type=int, default=9000)
    ap.add_argument("--tiles", type=int, default=16)
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--stores", default="lancedb,chroma")
    args = ap.parse_args()
    if args.fit_image_embedder:
        fit(range(2000, 2040))
        return 0
    {"quality": quality}[args.what](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
