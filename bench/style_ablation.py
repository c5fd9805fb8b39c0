"""Which of a synthetic style's settings costs a detector its mast F1: each in turn set back to the training style's.

A style that no model was trained on (``synth.DEV_STYLE``, ``washed``) differs from the renderer's classic ``gut`` in
ten settings at once: its stains' strengths and eosin's hue, a colour cast, focus, JPEG, nucleus outlines, chromatin,
cell size, how crowded the look-alikes are and the tissue around them. This script draws the style again with one of
them set to ``gut``'s (the same seeds: the tiles differ only where that setting does; ``crowd`` and ``tissue`` place
other cells) and scores the detector on each, beside the style as drawn, so that a remedy is aimed at what costs most.

What the data are for: the development style is a CHOOSE set (bench/real_tissue.py), so this is a diagnosis on it. The
held-out style ``faded`` is REPORTED only and is refused here: a diagnosis on it would be a choice made on it.

    python bench/style_ablation.py                          # the default detector, washed, seeds 8000-8002
    python bench/style_ablation.py -O mast_net=none         # the criteria alone
    python bench/style_ablation.py --factors blur,gains --seeds 8000

Measured 2026-12-07 (the default detector, 16 tiles at each of seeds 8000-8002; mast F1, then P / R, means of the
three draws): as drawn 0.859 (0.798 / 0.931); set back to gut's: focus 0.899 (0.848 / 0.957), crowd 0.895 (0.871 /
0.921), stain strengths 0.891 (0.862 / 0.923), tissue 0.877, cast 0.871, eosin's hue 0.858, nucleus outlines 0.858,
JPEG 0.855, chromatin 0.854, size 0.838. The criteria alone (``-O mast_net=none``): as drawn 0.814 (0.832 / 0.796),
focus 0.891 (0.901 / 0.882), stain strengths 0.866. One draw of 16 tiles moves by about 0.016 (SD): only focus, crowd
and the stains' strengths lie beyond it. A blurrier camera than the training's costs the criteria both precision
(lymphocytes and plasma cells called mast) and recall; the crop net wins the recall back (the finder's nuclei the
seeds miss) but not the precision.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mastctl import synth
from mastctl.commands.options import backend_options

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_tissue  # noqa: E402  (the same scoring as the choose sets')

TRAINING = synth.STYLES["gut"]
FACTORS = {  # a style's settings, grouped as a remedy would address them, and gut's values for them
    "gains": {"gains": TRAINING.gains},
    "eosin_hue": {"eosin_shift_deg": TRAINING.eosin_shift_deg},
    "cast": {"cast": TRAINING.cast},
    "focus": {"blur_um": TRAINING.blur_um},
    "jpeg": {"jpeg": TRAINING.jpeg},
    "outlines": {"wobble": TRAINING.wobble},
    "chromatin": {"chromatin": TRAINING.chromatin},
    "size": {"size": TRAINING.size},
    "crowd": {"crowd": TRAINING.crowd},
    "tissue": {"crypts": TRAINING.crypts, "fat": TRAINING.fat, "rot_deg": TRAINING.rot_deg},
}


def variant(style: str, factor: str | None) -> str:
    """The name of ``style`` with ``factor`` set back to gut's (registered in ``synth.STYLES``); None: as drawn."""
    return style if factor is None else synth.derived_style(style, f"{style}-as-gut-{factor}", **FACTORS[factor])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="morphology")
    ap.add_argument("-O", "--option", action="append", default=[], help="backend option KEY=VALUE (repeatable)")
    ap.add_argument("--style", default=synth.DEV_STYLE, help=f"the style to take apart (default {synth.DEV_STYLE})")
    ap.add_argument("--factors", default=",".join(FACTORS), help="comma list of " + ", ".join(FACTORS))
    ap.add_argument("--seeds", default="8000,8001,8002", help="comma list of draws (16 tiles each by default)")
    ap.add_argument("--tiles", type=int, default=16)
    ap.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "mastctl" / "bench")
    a = ap.parse_args()
    if a.style == synth.HELD_OUT_STYLE:
        ap.error(f"{a.style!r} is the held-out style: it is reported, never diagnosed or chosen on")
    if a.style not in synth.STYLES:
        ap.error(f"unknown style {a.style!r} (choose from {', '.join(synth.STYLES)})")
    factors = [f for f in a.factors.split(",") if f]
    unknown = sorted(set(factors) - set(FACTORS))
    if unknown:
        ap.error(f"unknown factor {', '.join(unknown)} (choose from {', '.join(FACTORS)})")
    seeds = [int(s) for s in a.seeds.split(",") if s]
    options = backend_options(a.option)
    a.workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"{a.backend} {options or ''} on {a.style}, {a.tiles} tiles at seeds {', '.join(map(str, seeds))}; "
          "mast F1 (P / R), mean of the draws, then each draw")
    for factor in [None, *factors]:
        name = variant(a.style, factor)
        runs = [real_tissue.synthetic(a.backend, options, a.workdir, a.tiles, name, seed=s) for s in seeds]
        if any("skipped" in r for r in runs):
            print(f"{factor or 'as drawn':<12} skipped: {runs[0].get('skipped')}")
            continue
        mean = {k: sum(r[k] or 0.0 for r in runs) / len(runs) for k in ("f1", "precision", "recall")}
        label = "as drawn" if factor is None else f"gut's {factor}"
        print(f"{label:<16} {mean['f1']:.3f} ({mean['precision']:.3f} / {mean['recall']:.3f})  "
              + " ".join(f"{r['f1'] or 0:.3f}" for r in runs), flush=True)
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
