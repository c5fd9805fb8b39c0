"""Rebuild the morphology detector's built-in model from synthetic training tiles.

The built-in "calibrated rules" are gradient-boosted trees (or, with --kind
logistic, a multinomial logistic regression) on the criteria features
(nucleus size and shape, cytoplasm rings, eccentricity, bilobation,
crowding, ...), fitted on tiles of training seeds (1000+; never the
development seeds 8000-8001 the mast threshold was chosen on, nor the validation
seed 9000 of bench/score.py), at 0.5 and 0.25 um/px, with a softmax
temperature fitted on a held-out fifth. Writes
mastctl/morphology/default_model.json (the shipped one: the defaults, ~20 min).

    python bench/calibrate_morphology.py [--tiles 320] [--kind gbm|logistic] [--out PATH]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from mastctl import synth
from mastctl.morphology import measure
from mastctl.morphology import training_set
from mastctl.morphology.model import CLASSES, fit

OUT = Path(__file__).resolve().parents[1] / "mastctl" / "morphology" / "default_model.json"


def samples(seed: int, tiles: int, size: int):
    for i in range(tiles):
        mpp = 0.5 if i % 2 == 0 else 0.25
        # the same tissue area at both scales: 0.25 um/px tiles are twice as wide in pixels
        tile = synth.render_tile([seed, i], synth.SynthOptions(size=size if mpp == 0.5 else 2 * size, mpp=mpp))
        from mastctl.cells import Cell

        yield tile.he, mpp, [Cell(c.x, c.y, c.label, c.kind, 1.0) for c in tile.cells]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=320)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--kind", default="gbm", choices=["gbm", "logistic"])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--mast-threshold", type=float, default=0.3,
                        help="P(mast) from which a nucleus is reported (chosen on development seeds 8000-8001)")
    args = parser.parse_args()
    t0 = time.perf_counter()
    X, y = training_set(samples(args.seed, args.tiles, args.size))
    print(f"{len(X)} nuclei from {args.tiles} tiles in {time.perf_counter() - t0:.1f} s:",
          ", ".join(f"{c} {int((y == i).sum())}" for i, c in enumerate(CLASSES)))
    model = fit(X, y, list(measure.FEATURE_NAMES), kind=args.kind)
    model.neighbour_boost = 2.0
    model.mast_threshold = args.mast_threshold
    model.info.update({"trained_on": f"synthetic tiles, seeds [{args.seed}, 0..{args.tiles - 1}], {args.size} px, 0.5 and 0.25 um/px (same area)"})
    pred = model.predict_proba(X).argmax(axis=1)
    print("training accuracy per class:", ", ".join(f"{c} {np.mean(pred[y == i] == i):.2f}" for i, c in enumerate(CLASSES) if (y == i).any()))
    print(f"temperature {model.temperature}")
    model.save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
