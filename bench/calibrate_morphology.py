"""Rebuild the morphology detector's built-in model from synthetic tiles and, with --real, real tissue.

The built-in "calibrated rules" are gradient-boosted trees (or, with --kind
logistic, a multinomial logistic regression) on the criteria features
(nucleus size and shape, cytoplasm rings, eccentricity, bilobation,
crowding, ...), with a softmax temperature fitted on a held-out fifth.
Writes mastctl/morphology/default_model.json by default; the defaults rebuild the shipped model bit for bit (since
2026-12-07: 320 gut tiles drawn with a camera blur of 0.2-1.2 um, ``--focus-um``, below; about 19 minutes to render
and 3.5 to fit on 2 cores). The model shipped before it (fitted 2026-11-25 on the style's own blur, 0.2-0.7) could no
longer be rebuilt bit for bit: the tiles' seeded nuclei had changed a little since (rebuilt 2026-12-06: 6,994 nuclei
against 6,973, the same class for 98% of them; on the choose sets below: tb2 0.671 against 0.623, the CRC threshold
images' cells called mast 0.47% against 0.21%, dev gut 0.966 against 0.975, washed 0.866 against 0.864).
``--real`` is an experiment that did not ship: with the ccMCT and CRC nuclei below
the trees called 88% of ccMCT vb0 cells mast cells but also 12% of the CRC cells they were fitted on,
and the held-out synthetic style fell to F1 0.19 (the criteria features do not separate real mast
cells from carcinoma cells; see bench/train_mast_net.py for the crop classifier). Nor does style
variety alone: ``--styles gut,sheet,carcinoma --tiles 192`` (rendering: 21 min on 2 cores) gave ccMCT vb0
0.080, CRC 5.3% of all cells and 4.7% of epithelial nuclei called mast, synthetic gut 0.947 and faded
0.52 — worse than the shipped gut-only model on all but ccMCT. Nor do criteria measured against the
image's own nuclei (tried 2026-12-06, not kept): each stain amount and size over the median of the
image's nuclei, the residual and the contrasts less it (a stain's strength, the camera and the focus
move every nucleus of an image together). Fitted on the same 320 gut tiles, with the shipped crop net,
on the choose sets (ccMCT tb2 / CRC threshold images' cells called mast / skin choose half's mast
calls / dev gut / dev washed): the absolute criteria 0.671 / 0.47% / 9 / 0.966 / 0.866; absolute and
relative 0.685 / 0.21% / 4 / 0.967 / 0.810; relative in place of the absolute stain amounts 0.677 /
0.41% / 11 / 0.954 / 0.757 — the unseen style they were meant for lost. Nor does a randomised camera
(tried then, not kept): the 320 gut tiles drawn again with the eosin turned -10..10 degrees, hematoxylin
gain 0.55-1.4, eosin 0.45-1.4, focus 0.2-1.1 um and JPEG 50-95 on half of them: alone 0.647 / 0.38%
(epithelium 0.07%) / 4 / 0.966 / 0.794; with the gut tiles 0.682 / 0.32% / 12 / 0.979 / 0.821. Nor a
stricter criteria threshold (the model's ``mast_threshold`` 0.35 / 0.4 / 0.5 against 0.3, the crop net
still deciding at its own 0.5): washed 0.864 / 0.860 / 0.858 against 0.864, tb2 0.623 throughout — the
look-alikes the criteria call in the development style they call with confidence (and half of that
style's false calls are the crop net's, at its own P just over 0.5); both experts stricter (``-O
mast_threshold=0.35`` / ``0.4``) buy washed 0.875 / 0.878 with tb2 0.554 / 0.493. Nor a blurred copy of every
training tile (tried 2026-12-06, later; a Gaussian of 0-1.3 um, the crop net's focus augmentation: on the development
style a blurrier camera than the training's turned the criteria's lymphocytes into implicit mast cells, criteria alone
F1 0.876 sharp against 0.802 as drawn). Fitted beside the recipe rebuilt from the same 320 tiles, with the shipped
crop net, on the choose sets (tb2 / washed, mean of seeds 8000-8005 / dev gut seeds 8000, 8001 / skin calls / all 50
CRC images' cells called mast, for information): rebuilt 0.698 / 0.894 / 0.966, 0.973 / 8 / 0.68%; with the blurred
copies 0.720 / 0.888 / 0.970, 0.977 / 9 / 0.37%; the shipped model 0.671 / 0.893 / 0.970, 0.969 / 4 / 0.40%. The
development style did not gain.
Nor a simpler criteria model (tried 2026-12-06, last), for a model that learns less of the renderer's detail: fitted
on the same 320 gut tiles' nuclei, with the shipped crop net and its veto (``-O net_veto=0.07``), on the choose sets
(tb2 / washed, mean of seeds 8000-8005 / skin calls / all 50 CRC images' cells called mast, for information): the
recipe rebuilt 0.698 / 0.894 / 8 / 0.68%; trees of depth 2 0.696 / 0.879 / 4 / 0.38%; leaves of at least 100 nuclei
0.704 / 0.891 / 4 / 0.36%; 50 trees in place of 150 0.708 / 0.885 / 13 / 1.26%; ``--kind logistic`` 0.692 / 0.845 / 6 /
0.39%. The unseen style gained from none.
Nor criteria measured once the image's colour cast is taken out (``stain.without_cast``, as the crop net reads an
image; the finder still reading the image as it is), fitted on the same 320 gut tiles drawn again that way: 0.651 /
0.841 / 3 / 0.30% — the development style, whose blue cast it was meant for, lost 0.05.

A blurrier camera in the training tiles (2026-12-07; ``--focus-um 0.2,1.2``: the 320 gut tiles rendered again with
a camera blur of 0.2-1.2 um in place of 0.2-0.7; shipped with the crop net's view margin, below), with or without a
feature that says how sharp each image is (the
steepest edges of hematoxylin + eosin, per um, over their range: on rendered tiles of four styles 0.79 / 0.61 / 0.46 /
0.40 at a blur of 0.2 / 0.5 / 0.8 / 1.1 um, within 0.1 across styles and scales; CRC, tb2 and vb0 0.82 / 0.76 / 0.78),
so that the trees could judge a nucleus by the focus it was imaged at. Why: ``bench/style_ablation.py`` found the
development style's camera blur its largest single cost (the criteria alone 0.814 -> 0.891 with gut's focus).
Declared before: shipped if washed (mean of seeds 8000-8005) >= 0.880 with tb2 >= 0.70, the second renderer's seed 0
>= 0.80, skin <= 10 calls, the 50 CRC images <= 0.5%, and the feature beating the blur alone by 0.005. With the
shipped crop net and its veto (``-O net_veto=0.07``), on the choose sets (tb2 / skin calls / the 50 CRC images' cells
called mast / dev gut / the second renderer's seed 0 / washed): the blur alone 0.761 / 4 / 0.24% / 0.962 / 0.823 /
0.871; with the sharpness feature 0.777 / 4 / 0.35% / 0.956 / 0.823 / 0.863; the shipped model 0.738 / 5 / 0.23% /
0.947 / 0.825 / 0.870. The unseen style gained from neither (the trees split on the feature 195 times of 7,932), so the
feature was taken out again (it also changed the cell-crop embedding's width). But the blur alone held every choose
set with more of tb2, and the crop net's view margin (``-O mast_net_view_margin``, bench/train_mast_net.py's lead)
had bought washed with some of tb2, so the two together were declared next, before they ran: shipped if washed >=
0.880, tb2 >= 0.72, the second renderer's seed 0 >= 0.80, skin <= 10 calls, the 50 CRC images <= 0.5%, gut >= 0.93,
and no washed draw more than 0.01 under the shipped detector's. Together, in the columns above: 0.745 / 2 / 0.17% /
0.968 / 0.829 / 0.885 (draws 0.874 0.908 0.867 0.877 0.884 0.900 against 0.836 0.878 0.864 0.874 0.861 0.907): every
bar met, shipped (the crop net unchanged, its threshold rule not run again). Reported once, after: ccMCT vb0 0.741
(0.744 before), CRC two-fold 0.36% of cells, 0.02% of epithelium (0.43%, 0.05%), gut 0.968 (0.947), the third renderer
0.896 (0.882), but faded 0.762 (0.788; precision 0.817 against 0.771, recall 0.713 against 0.807) and the second
renderer's report seed 0.749 (0.769): the development style's gain did not carry to the held-out style (README).

Two more trainings for the criteria (2026-12-08; each declared before it ran, with the shipped crop net and its veto, on
the same choose sets: tb2 / skin / the 50 CRC images / dev gut / the second renderer's seed 0 / washed, mean of six):
- stain strengths drawn from 0.5-1.5 for both stains (``--gains 0.5,1.5,0.5,1.5``: the smallest round range holding
  every training and development style's; bench/style_ablation.py put washed's stain strengths third among its costs):
  0.754 / 0 / 0.18% / 0.959 / 0.824 / 0.878, washed's recall down (seed 8000: 0.902 against 0.929). Not shipped; like
  the randomised camera above, the development style lost.
- each tile pair drawn with a nucleus outline wobble of 0.6, 1.1, 1.7, 2.2 in turn (``--wobble``: the span of the
  training styles' 1.0 and washed's 1.8, widened by half of it each side). Why: washed drawn with its outlines pushed
  further (wobble 2.7, three draws) cost the criteria alone 0.043 (0.812 -> 0.769) and the default 0.025 (0.883 ->
  0.858), where chromatin 1.8 and size 1.1 cost either little. Fitted so: 0.736 / 1 / 0.17% / 0.962 / 0.832 / 0.886,
  the criteria alone 0.837 on washed as drawn and 0.805 with wobble 2.7 — but the default on wobble 2.7 took 0.872
  against the declared bar of 0.873 (the other bars met), so it was not shipped and not reported.

What each data set is for is declared here, before anything is measured:

- synthetic tiles of seeds 1000+ in the chosen training styles (any of ``synth.TRAINING_STYLES``: gut,
  sheet, carcinoma), at 0.5 and 0.25 um/px: TRAIN. Never the development seeds 8000-8001, the validation
  seed 9000 of bench/score.py, or the held-out style ``faded``.
- with ``--other-renderer N``, N tiles of bench/other_renderer.py (seeds [1000, 21, i], 0.5 um/px): TRAIN. The
  shipped criteria model uses none; its seeds 0 and 1 are CHOOSE and REPORT sets. Tried 2026-12-07, not kept: the
  recipe rebuilt on that day's machine, with the shipped crop net (tb2 / washed, mean of seeds 8000-8005 / skin
  calls / the 50 CRC images' cells called mast / the second renderer's seed 0): without it 0.702 / 0.862 / 131 of
  1,054 / 2.22%; with 120 tiles 0.708 / 0.837 / 130 / 1.02% / 0.912 (0.557 without; the shipped model 0.640 / 0.883
  / 4 / 0.28% / 0.745). The second renderer's tiles were learned and the development style lost; and that machine's
  rebuild of the recipe itself is far from the shipped model on the skin and CRC (another CPU, another draw of the
  trees), so the shipped JSON stays.
- with --real, ccMCT ``tb0_*``/``tb1_*`` (../shared/data/ccmct; augmented mosaics of a canine mast
  cell tumour whose scale is unknown, so each crop is used at 0.25, 0.35 and 0.45 um/px): TRAIN, every
  nucleus weakly labelled an explicit mast cell (most nucleated cells of these sheets are neoplastic
  mast cells; the lymphocytes, eosinophils and endothelium among them are label noise).
  ``tb2_*`` is the set to CHOOSE on and ``vb0_*`` only REPORTED (bench/real_tissue.py); neither is used.
- with --real, the CRC nuclei (../shared/data/crc_nuclei, colorectal adenocarcinoma): TRAIN on the
  classified nuclei (epithelial -> other, fibroblast, inflammatory -> lymphocyte, others -> other; a
  found nucleus within 6 px of no marked nucleus -> spurious). ``--two-fold DIR`` also writes two
  models, each without one CRC half, which bench/real_tissue.py --crc-fold model=... scores on the half it left
  out; the shipped model uses all 50 images, so its own CRC figures are not a measure of transfer.

    python bench/calibrate_morphology.py [--tiles 320] [--styles gut] [--focus-um LO,HI] [--gains HLO,HHI,ELO,EHI]
                                         [--wobble W1,W2,...] [--real [--two-fold DIR]] [--out PATH]
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np

from mastctl import synth
from mastctl.cells import Cell
from mastctl.morphology import analyse, measure, training_set
from mastctl.morphology.model import CLASSES, fit
from nuclei_cv import crc_halves  # bench/ is the script's folder; the halves bench/real_tissue.py scores

OUT = Path(__file__).resolve().parents[1] / "mastctl" / "morphology" / "default_model.json"
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CCMCT_TRAIN = ("tb0_*.png", "tb1_*.png")
CCMCT_SCALES = (0.25, 0.35, 0.45)
CRC_MPP = 0.55
CRC_LABELS = {"epithelial": "other", "fibroblast": "fibroblast", "inflammatory": "lymphocyte", "others": "other"}


def synthetic_samples(seed: int, tiles: int, size: int, styles: tuple[str, ...],
                      focus_um: tuple[float, float] | None = None, gains: tuple[float, float, float, float] | None = None,
                      wobble: tuple[float, ...] = ()):
    """Rendered tiles with their truth; ``focus_um``: each style's camera blur drawn from this range instead;
    ``gains`` (hematoxylin low, high, eosin low, high): its stain strengths; ``wobble``: each style drawn with each of
    these nucleus outline irregularities in turn (a tile pair each)."""
    changes = {"blur_um": focus_um} if focus_um is not None else {}
    if gains is not None:
        changes["gains"] = (gains[:2], gains[2:])
    if changes:
        styles = tuple(synth.derived_style(name, f"{name}-{'-'.join(changes)}", **changes) for name in styles)
    if wobble:
        styles = tuple(synth.derived_style(name, f"{name}-wobble{w:g}", wobble=w) for name in styles for w in wobble)
    for i in range(tiles):
        mpp = 0.5 if i % 2 == 0 else 0.25
        style = styles[(i // 2) % len(styles)]
        # the same tissue area at both scales: 0.25 um/px tiles are twice as wide in pixels
        tile = synth.render_tile([seed, i], synth.SynthOptions(size=size if mpp == 0.5 else 2 * size, mpp=mpp, style=style))
        yield tile.he, mpp, [Cell(c.x, c.y, c.label, c.kind, 1.0) for c in tile.cells]


def other_renderer_set(workdir: Path, tiles: int) -> tuple[np.ndarray, np.ndarray]:
    """Features and classes of the nuclei of ``tiles`` tiles of bench/other_renderer.py (cached)."""
    import other_renderer

    cache = workdir / f"calibrate-other-renderer-v{other_renderer.VERSION}-n{tiles}-f{len(measure.FEATURE_NAMES)}.npz"
    if cache.exists():
        with np.load(cache, allow_pickle=False) as z:
            return z["X"], z["y"]

    def samples():
        for i in range(tiles):
            rgb, cells = other_renderer.render([1000, 21, i])
            yield rgb, 0.5, [Cell(c["x"], c["y"], c["label"], c["kind"], 1.0) for c in cells]

    X, y = training_set(samples())
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, X=X, y=y)
    return X, y


def ccmct_set(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    from mastctl import imaging

    files = sorted(f for pattern in CCMCT_TRAIN for f in folder.glob(pattern))
    xs = []
    for f in files:
        pixels = imaging.load(f).pixels
        for mpp in CCMCT_SCALES:
            xs.append(analyse(pixels, mpp).X)
    X = np.vstack(xs) if xs else np.zeros((0, len(measure.FEATURE_NAMES)), np.float32)
    return X, np.full(len(X), CLASSES.index("mast_explicit"), np.int64)


def crc_set(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, classes and CRC half (0 or 1) of every classified or spurious nucleus."""
    from mastctl import imaging
    from mastctl.metrics import match

    truth: dict[str, dict[str, list]] = {}
    with open(folder / "points.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            truth.setdefault(r["image"], {}).setdefault(r["class"], []).append((float(r["x"]), float(r["y"])))
    xs, ys, hs = [], [], []
    for half, path in ((h, p) for h, paths in enumerate(crc_halves(folder)[1]) for p in paths):
        a = analyse(imaging.load(path, mpp=CRC_MPP).pixels, CRC_MPP)
        t = truth.get(path.stem, {})
        y = np.full(len(a.X), -1, np.int64)  # -1: a marked nucleus of no known class (left out)
        marked = {p for p, _ in match(a.xy, t.get("detection", []), 6.0).pairs}
        y[[i for i in range(len(y)) if i not in marked]] = CLASSES.index("spurious")
        for cls, label in CRC_LABELS.items():
            for p, _ in match(a.xy, t.get(cls, []), 6.0).pairs:
                y[p] = CLASSES.index(label)
        keep = y >= 0
        xs.append(a.X[keep])
        ys.append(y[keep])
        hs.append(np.full(int(keep.sum()), half))
    return np.vstack(xs), np.concatenate(ys), np.concatenate(hs)


def numbers(parser: argparse.ArgumentParser, flag: str, text: str, usage: str, count: int | None,
            valid) -> tuple[float, ...]:
    """The comma-separated numbers of ``flag`` (empty: none), ``count`` of them and ``valid``, else a usage error."""
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = None
    if values is None or values and ((count is not None and len(values) != count) or not valid(values)):
        parser.error(f"{flag} takes {usage}")
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=320)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--styles", default="gut", help=f"synthetic styles (any of {', '.join(synth.TRAINING_STYLES)}; "
                                                         "the shipped model: gut)")
    parser.add_argument("--real", action="store_true", help="also ccMCT tb0/tb1 and the CRC nuclei (../shared/data)")
    parser.add_argument("--two-fold", type=Path, default=None,
                        help="also write DIR/crc-fold0.json and crc-fold1.json, each without that CRC half (for "
                             "bench/real_tissue.py --crc-fold model=DIR/crc-fold0.json,DIR/crc-fold1.json)")
    parser.add_argument("--other-renderer", type=int, default=0, help="also this many tiles of bench/other_renderer.py")
    parser.add_argument("--kind", default="gbm", choices=["gbm", "logistic"])
    parser.add_argument("--focus-um", default="0.2,1.2", metavar="LO,HI",
                        help="render the synthetic tiles with a camera blur drawn from LO-HI um (default 0.2-1.2, the "
                             "shipped model's since 2026-12-07; '' for the styles' own, gut 0.2-0.7)")
    parser.add_argument("--gains", default="", metavar="HLO,HHI,ELO,EHI",
                        help="render the synthetic tiles with hematoxylin and eosin strengths drawn from these ranges "
                             "('', the default: the styles' own, gut 0.75-1.25 and 0.7-1.25)")
    parser.add_argument("--wobble", default="", metavar="W1,W2,...",
                        help="draw each style's tiles with these nucleus outline irregularities in turn, a tile pair "
                             "each ('', the default: the styles' own, gut 1.0)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "mastctl" / "bench",
                        help="where the synthetic tiles' features are cached")
    parser.add_argument("--mast-threshold", type=float, default=0.3,
                        help="P(mast) from which a nucleus is reported (chosen on development seeds 8000-8001)")
    args = parser.parse_args()
    styles = tuple(s for s in args.styles.split(",") if s)
    if synth.HELD_OUT_STYLE in styles:
        parser.error(f"the {synth.HELD_OUT_STYLE!r} style is held out of every training run")
    t0 = time.perf_counter()
    focus_um = numbers(parser, "--focus-um", args.focus_um, "two numbers: LO,HI with 0 <= LO < HI", 2,
                       lambda v: 0 <= v[0] < v[1]) or None
    gains = numbers(parser, "--gains", args.gains, "four numbers: HLO,HHI,ELO,EHI with 0 < low < high", 4,
                    lambda v: all(0 < lo < hi for lo, hi in (v[:2], v[2:]))) or None
    wobble = numbers(parser, "--wobble", args.wobble, "positive numbers", None, lambda v: all(w > 0 for w in v))
    draw_tag = "".join(f"-{name}{'-'.join(f'{v:g}' for v in values)}"
                       for name, values in (("focus", focus_um), ("gains", gains), ("wobble", wobble)) if values)
    cache = args.workdir / (f"calibrate-synthetic-s{args.seed}-n{args.tiles}-{args.size}-{'-'.join(styles)}{draw_tag}"
                            f"-f{len(measure.FEATURE_NAMES)}.npz")
    if cache.exists():  # features of rendered tiles: rendering is most of the time
        with np.load(cache, allow_pickle=False) as z:
            X, y = z["X"], z["y"]
    else:
        X, y = training_set(synthetic_samples(args.seed, args.tiles, args.size, styles, focus_um, gains, wobble))
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, X=X, y=y)
    sources = [f"synthetic tiles, seeds [{args.seed}, 0..{args.tiles - 1}], styles {', '.join(styles)}, {args.size} px, "
               "0.5 and 0.25 um/px (same area)"
               + (f", camera blur {focus_um[0]:g}-{focus_um[1]:g} um" if focus_um else "")
               + (f", stain strengths H {gains[0]:g}-{gains[1]:g}, E {gains[2]:g}-{gains[3]:g}" if gains else "")
               + (f", nucleus outline wobble {', '.join(f'{w:g}' for w in wobble)} in turn" if wobble else "")]
    print(f"{len(X)} synthetic nuclei from {args.tiles} tiles in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.other_renderer:
        Xo, yo = other_renderer_set(args.workdir, args.other_renderer)
        X, y = np.vstack([X, Xo]), np.concatenate([y, yo])
        sources.append(f"bench/other_renderer.py tiles, seeds [1000, 21, 0..{args.other_renderer - 1}], 0.5 um/px")
        print(f"{len(Xo)} nuclei of the other renderer's {args.other_renderer} tiles", flush=True)
    crc_half = np.full(len(X), -1)
    if args.real:
        if not (DATA / "ccmct").exists() or not (DATA / "crc_nuclei").exists():
            parser.error(f"--real needs {DATA / 'ccmct'} and {DATA / 'crc_nuclei'}")
        Xm, ym = ccmct_set(DATA / "ccmct")
        Xc, yc, hc = crc_set(DATA / "crc_nuclei")
        print(f"{len(Xm)} ccMCT nuclei (tb0, tb1 at {CCMCT_SCALES} um/px), {len(Xc)} CRC nuclei; "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
        X, y = np.vstack([X, Xm, Xc]), np.concatenate([y, ym, yc])
        crc_half = np.concatenate([crc_half, np.full(len(Xm), -1), hc])
        sources += [f"ccMCT tb0/tb1 crops at {CCMCT_SCALES} um/px, every nucleus an explicit mast cell (weak labels; "
                    "Bertram et al. 2019)", "CRCHistoPhenotypes classified nuclei (Sirinukunwattana et al. 2016)"]
    print(", ".join(f"{c} {int((y == i).sum())}" for i, c in enumerate(CLASSES)), flush=True)
    plans = [(args.out, np.ones(len(X), bool), sources)]
    if args.two_fold and args.real:
        args.two_fold.mkdir(parents=True, exist_ok=True)
        plans += [(args.two_fold / f"crc-fold{k}.json", crc_half != k, sources[:-1] + [sources[-1] + f", half {k} left out"])
                  for k in (0, 1)]
    for out, rows, used in plans:
        model = fit(X[rows], y[rows], list(measure.FEATURE_NAMES), kind=args.kind)
        model.neighbour_boost = 2.0
        model.mast_threshold = args.mast_threshold
        model.info.update({"trained_on": "; ".join(used)})
        pred = model.predict_proba(X[rows]).argmax(axis=1)
        print("training accuracy per class:", ", ".join(f"{c} {np.mean(pred[y[rows] == i] == i):.2f}"
                                                       for i, c in enumerate(CLASSES) if (y[rows] == i).any()))
        print(f"temperature {model.temperature}; {time.perf_counter() - t0:.0f} s")
        model.save(out)
        print(f"wrote {out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
