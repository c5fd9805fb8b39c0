"""Whole slides, measured: a real SVS end to end, and a synthetic ~1.6 gigapixel slide.

1. ../shared/data/wsi/cmu_small_region.svs (0.499 um/px): processed as a
   slide (tiles) and as one image with the same per-slide calibration; cells
   matched within 1 px, and where the differences lie.
2. A synthetic pyramidal tiled TIFF built here: 40,000 x 40,000 px at
   0.5 um/px (1.6 gigapixels; an elliptic section over ~60% of the glass,
   made of synthetic H&E tiles), JPEG tiles, 4 levels, read through OpenSlide.
   Wall time and peak memory (RSS of this process and of the largest worker).

    python bench/wsi.py [--size 40000] [--workers 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from mastctl import detection, imaging, metrics, registry, slides, synth
from mastctl.profile import Profile
from mastctl.wsi import tiles, tissue

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PROFILE = Profile()


def run_slide(path: Path, out: Path, **overrides) -> dict:
    """The one detection flow on one slide (as `mastctl detect SLIDE -o OUT` runs it)."""
    job_plan = detection.plan([path], str(out), None, slide_outputs=True, force=True)
    result = next(detection.run(job_plan, detection.Settings.from_profile(PROFILE, **overrides)))
    if result.error is not None:
        raise result.error
    return result.summary


def svs_check(workdir: Path) -> None:
    path = DATA / "wsi" / "cmu_small_region.svs"
    out = workdir / "cmu.geojson"
    t0 = time.perf_counter()
    s = run_slide(path, out, workers=2, all_cells=True)
    seconds = time.perf_counter() - t0
    tiled = [f["geometry"]["coordinates"] for f in json.loads(out.read_text())["features"] if f["geometry"]["type"] == "Point"]
    reader = slides.open_slide(path)
    mask, scale = tissue.tissue_mask(reader)
    detector = registry.create("detector", "morphology", PROFILE)
    calibration = tiles.calibrate(reader, detector, tiles.plan_tiles(reader, mask, scale))
    whole = registry.create("detector", "morphology", PROFILE, **calibration).detect(imaging.load(path)).cells
    m = metrics.match(tiled, [(c.x, c.y) for c in whole], 1.0)
    W, H = s["width"], s["height"]
    edge = lambda x, y: min(x, y, W - x, H - y) < 50  # noqa: E731
    odd = [tiled[i] for i in m.unmatched_pred] + [(whole[j].x, whole[j].y) for j in m.unmatched_true]
    c = s["summary"]
    print(f"SVS {W}x{H} @ {s['mpp']} um/px: {s['tiles']} tiles, {seconds:.1f} s; tissue {c['tissue_mm2']:.2f} mm2, "
          f"{c['mast_cells']} mast cells ({c['mast_cells_per_mm2']}/mm2), hotspot {(c['hotspot'] or {}).get('count')}")
    print(f"  tiled vs one image: {len(tiled)} vs {len(whole)} cells, {len(m.pairs)} the same within 1 px; "
          f"of the {len(odd)} others, {sum(edge(x, y) for x, y in odd)} lie within 25 um of the slide's edge and "
          f"{sum(not edge(x, y) for x, y in odd)} inside (where the tissue mask left out a speck)")


def build_slide(path: Path, size: int, mpp: float = 0.5, sources: int = 8) -> None:
    """A pyramidal JPEG-tiled TIFF of synthetic tissue, written tile by tile (bounded memory)."""
    import tifffile

    block = 1024
    base = np.stack([synth.render_tile([7000, i], synth.SynthOptions(size=block, mpp=mpp)).he for i in range(sources)])
    cx = cy = size / 2
    ax, ay = size * 0.46, size * 0.38
    rng = np.random.default_rng(0)
    ids = rng.integers(0, sources, size=(size // block + 64, size // block + 64))  # level tiles overhang the edge

    def level_tiles(d: int):
        b = block // d
        down = base.reshape(sources, b, d, b, d, 3).mean(axis=(2, 4)).astype(np.uint8) if d > 1 else base
        n = -(-size // d)
        for ty in range(0, n, 512):
            for tx in range(0, n, 512):
                Y = np.arange(ty, ty + 512)
                X = np.arange(tx, tx + 512)
                k = ids[(Y // b)[:, None], (X // b)[None, :]]
                tile = down[k, (Y % b)[:, None], (X % b)[None, :]]
                yy, xx = (Y[:, None] + 0.5) * d, (X[None, :] + 0.5) * d
                glass = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 > 1
                tile[glass] = 243
                yield tile

    res = 1e4 / mpp
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for i, d in enumerate((1, 4, 16, 64)):
            n = -(-size // d)
            tif.write(level_tiles(d), shape=(n, n, 3), dtype=np.uint8, tile=(512, 512), photometric="rgb",
                      compression="jpeg", compressionargs={"level": 85}, resolution=(res / d, res / d), resolutionunit="CENTIMETER",
                      subfiletype=0 if i == 0 else 1, description=f"mastctl synthetic slide level {i}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=40000, help="slide side in pixels (40000 = 1.6 gigapixels)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the built slide and outputs here")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="mastctl-wsi-"))
    workdir.mkdir(parents=True, exist_ok=True)
    if (DATA / "wsi").exists():
        svs_check(workdir)
    slide = workdir / f"synthetic-{args.size}.tif"
    if not slide.exists():
        t0 = time.perf_counter()
        build_slide(slide, args.size)
        print(f"built {slide.name}: {args.size}x{args.size} = {args.size**2 / 1e9:.2f} gigapixels, "
              f"{slide.stat().st_size / 1e6:.0f} MB, {time.perf_counter() - t0:.0f} s")
    reader = slides.open_slide(slide)
    print(f"  read through {type(reader).__name__}: levels {[(lv.width, lv.downsample) for lv in reader.levels]}, mpp {reader.mpp}")
    reader.close()
    t0 = time.perf_counter()
    s = run_slide(slide, workdir / "synthetic.geojson", workers=args.workers)
    wall = time.perf_counter() - t0
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    c = s["summary"]
    print(f"synthetic slide: {s['tiles']} tissue tiles of 1024 px, {wall:.0f} s wall ({args.workers} workers), "
          f"{s['tiles'] * 1024 * 1024 / 1e6 / wall:.1f} MP/s; tissue {c['tissue_mm2']:.0f} mm2, {c['mast_cells']} mast cells "
          f"({c['mast_cells_per_mm2']}/mm2), hotspot {(c['hotspot'] or {}).get('count')}")
    print(f"  peak RSS: main process {self_mb:.0f} MB, largest worker {child_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
