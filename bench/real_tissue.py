"""Real tissue beside the renderer: does a detector find mast cells where there are many, and none where there are none?

Weak labels nobody on the team drew (../shared/data, see its README):

1. ccMCT (canine cutaneous mast cell tumour, Bertram et al., Sci Data 2019): in tumour sheets most
   nucleated cells are neoplastic mast cells, so the share of found cells called `mast_cell` should be
   high. The labels are weak: the cells are neoplastic and canine, and sheets also hold lymphocytes,
   eosinophils ("granulocyte" boxes), endothelium and stroma (two of the 16 crops are mostly stroma).
   `vb0_*` (16 clean 40x crops, ~0.25 um/px) is the REPORT set; `tb2_*` (augmented mosaics) is the set
   to CHOOSE on (`--choose`); `tb0_*`/`tb1_*` may be trained on.
2. CRC (CRCHistoPhenotypes, Sirinukunwattana et al., IEEE TMI 2016; the even-numbered half of the set
   we hold): colorectal adenocarcinoma with classified nuclei. Mast cells are rare there (well under 2%
   of cells), and epithelial nuclei are never mast cells: the share of each class's nuclei called mast
   (a mast detection within 6 px) should be near zero.
3. Synthetic: mast-cell F1 on validation seed 9000 in the classic style, and in the held-out style no
   shipped model was trained on (`mastctl synth --style faded`; REPORT only). With ``--choose``, also the
   development style ``washed`` at seed 8000 (never trained on either; the one to CHOOSE on), and with
   ``--dev-draws K`` at seeds 8000 to 8000 + K - 1 as well, with their mean and spread: one draw of 16 tiles
   moves by about 0.016 (SD), more than many a choice gains. Also the mast F1 on 16 tiles of a second renderer
   (bench/other_renderer.py, none of ``mastctl.synth``'s code): seed 1 REPORTED, seed 0 (``--choose``) to CHOOSE on;
   the shipped crop net learned 120 tiles of other seeds of it (since 2026-12-07; before, the detector scored 0.519).
   And on 48 tiles of a third renderer (bench/third_renderer.py, none of either renderer's drawing code): seed 0,
   REPORTED only; no model trains on any of its tiles and nothing is chosen on it, so it stays a measure of transfer.
4. With ``--choose``, normal skin: the bottom half of ``wsi/cmu_small_region.svs`` (epidermis and dermis,
   no tumour), the share of its cells called mast. A normal dermis holds a few real mast cells (tens to a
   hundred per mm^2): a CHOOSE set (the crop net's threshold rule reads it; its top half may be trained on).
5. With ``--choose``, JPEG: that skin half and the CRC threshold images (every fifth of each half, which the crop net
   never trains on) as PNG and saved as JPEG of quality 90 and 70, the mast calls of each: a scanner's JPEG should not
   change a count (a CHOOSE line; bench/train_mast_net.py).

Any backend and options:

    python bench/real_tissue.py                              # the default detector
    python bench/real_tissue.py --backend log                # a nucleus baseline (calls nothing mast)
    python bench/real_tissue.py -O mast_threshold=0.5 --choose
    python bench/real_tissue.py --crc-fold model=f0.json,f1.json   # CRC scored two-fold by models fitted on the other half
    python bench/real_tissue.py --crc-fold mast_net=OUT/crc-fold0.npz,OUT/crc-fold1.npz \
        --crc-fold nuclei=DIR/crc-nuclei-fold0.safetensors,DIR/crc-nuclei-fold1.safetensors   # the default's two-fold

With --crc-fold OPTION=A,B (repeatable: any backend option that takes a fitted file, e.g. ``model`` from
``bench/calibrate_morphology.py --crc-half``, ``mast_net`` from ``bench/train_mast_net.py --two-fold``,
``nuclei`` from ``bench/train_nucleus_net.py --two-fold``), each CRC half is scored by the files that never
saw it; without, the one detector scores all 50 images, and where its shipped models were fitted on them
(the default's nucleus finder and mast-cell net are) the CRC line is not a measurement of transfer.
"""

from __future__ import annotations

import argparse
import csv
import functools
import json
import sys
import time
from pathlib import Path

import numpy as np

from mastctl import compare, detection, registry, synth
from mastctl.metrics import match
from mastctl.profile import Profile
from mastctl.truth import load_truth
from nuclei_cv import crc_halves  # bench/ is the script's folder

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CCMCT_MPP = 0.25  # vb0: 40x crops (the tb mosaics' scale varies, ~0.2-0.6)
CRC_MPP = 0.55
SKIN = DATA / "wsi" / "cmu_small_region.svs"  # normal skin: its top half TRAIN, bottom half CHOOSE (``skin_choose_half``)
CRC_CLASSES = ("epithelial", "fibroblast", "inflammatory", "others")
DEV_SEED = 8000  # the development style's first seed (CHOOSE; --dev-draws adds the next ones)
OTHER_CHOOSE_SEED, OTHER_REPORT_SEED = 0, 1  # bench/other_renderer.py's tiles: seed 0 CHOOSE (--choose), seed 1 REPORT
THIRD_REPORT_SEED = 0  # bench/third_renderer.py's tiles: REPORT only (no model trains or is chosen on any of its tiles)
THIRD_TILES = 3  # times --synthetic-tiles: its tiles hold about five mast cells each, a third of the others'


def _options(pairs: list[str]) -> dict:
    from mastctl.commands.options import backend_options

    return backend_options(pairs)


def ccmct(backend: str, options: dict, pattern: str) -> dict:
    files = sorted((DATA / "ccmct").glob(pattern))
    if not files:
        return {"skipped": f"no {pattern} in {DATA / 'ccmct'}"}
    settings = detection.Settings.from_profile(Profile(), backend=backend, options=options, mpp=CCMCT_MPP, all_cells=True)
    detector = registry.create("detector", backend, Profile(), **options)
    total = mast = 0
    labels: dict[str, int] = {}
    per_crop = []
    for f in files:
        det = detection.detect_image(f, settings, detector)
        n_mast = sum(c.is_mast_cell for c in det.cells)
        total += len(det.cells)
        mast += n_mast
        per_crop.append(round(n_mast / max(1, len(det.cells)), 3))
        for c in det.cells:
            labels[c.label] = labels.get(c.label, 0) + 1
    return {"crops": len(files), "cells": total, "mast_fraction": mast / max(1, total), "labels": labels,
            "per_crop_mast_fraction": per_crop}


@functools.cache
def skin_choose_half():
    """The bottom half of ``SKIN`` as an image (None where the slide is absent): the CHOOSE half (the top half may
    be trained on, by bench/train_mast_net.py). Read once (the skin and JPEG lines both read it)."""
    from mastctl import imaging

    if not SKIN.exists():
        return None
    image = imaging.load(SKIN)
    half = image.pixels.shape[0] // 2
    return imaging.Image(np.ascontiguousarray(image.pixels[half:, :, :3]), f"{SKIN.stem}-choose-half.png", image.mpp)


def normal_skin(backend: str, options: dict) -> dict:
    """The bottom half of the normal skin of ``wsi/cmu_small_region.svs`` (epidermis and dermis): the share of its
    cells called mast. A normal dermis holds tens to a hundred mast cells per mm^2, a few percent of its cells at
    most. A CHOOSE set (the crop net's threshold rule reads it), never a report."""
    bottom = skin_choose_half()
    if bottom is None:
        return {"skipped": f"{SKIN} not found"}
    cells = registry.create("detector", backend, Profile(), **options).detect(bottom).cells
    mast = sum(c.is_mast_cell for c in cells)
    return {"cells": len(cells), "mast": mast, "mast_fraction": mast / max(1, len(cells))}


JPEG_QUALITIES = (90, 70)  # the JPEG choose line: a scanner's usual quality, and a low one


def saved_as_jpeg(pixels: np.ndarray, quality: int) -> np.ndarray:
    """``pixels`` as a JPEG of ``quality`` (Pillow's defaults: 4:2:0 chroma) reads them back."""
    import io

    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(np.ascontiguousarray(pixels[:, :, :3])).save(buffer, "JPEG", quality=quality)
    return np.asarray(PILImage.open(buffer).convert("RGB"))


def is_threshold_image(j: int) -> bool:
    """Whether the ``j``-th image of a CRC half is one of the threshold's: every fifth, which bench/train_mast_net.py
    keeps out of training for its threshold rule."""
    return j % 5 == 4


def crc_threshold_images() -> list[Path]:
    """The threshold's CRC images (``is_threshold_image``) of both halves."""
    _, halves = crc_halves()
    return [p for half in halves for j, p in enumerate(half) if is_threshold_image(j)]


def jpeg_choose(backend: str, options: dict) -> dict:
    """What a scanner's JPEG does to the calls where there are next to no mast cells: the skin's choose half (its mast
    calls) and the CRC threshold images (the share of their cells called mast), as PNG and saved at
    ``JPEG_QUALITIES``. A CHOOSE line (--choose): the shipped crop net reads a JPEG copy as more mast-like
    (bench/train_mast_net.py)."""
    from mastctl import imaging

    detector = registry.create("detector", backend, Profile(), **options)
    skin, crc_images = skin_choose_half(), [imaging.load(p, mpp=CRC_MPP) for p in crc_threshold_images()]
    if skin is None or not crc_images:
        return {"skipped": "needs wsi/cmu_small_region.svs and crc_nuclei/ in ../shared/data"}
    out: dict = {"qualities": ["png", *JPEG_QUALITIES], "skin_mast": [], "crc_mast_fraction": []}
    for quality in (None, *JPEG_QUALITIES):
        def read(image):
            pixels = image.pixels if quality is None else saved_as_jpeg(image.pixels, quality)
            return detector.detect(imaging.Image(pixels, image.path, image.mpp)).cells

        out["skin_mast"].append(sum(c.is_mast_cell for c in read(skin)))
        cells = [c for image in crc_images for c in read(image)]
        out["crc_mast_fraction"].append(sum(c.is_mast_cell for c in cells) / max(1, len(cells)))
    return out


def crc(backend: str, options: dict, folds: dict[str, list[str]] | None = None) -> dict:
    folder = DATA / "crc_nuclei"
    if not folder.exists():
        return {"skipped": f"{folder} not found"}
    rows = list(csv.DictReader(open(folder / "points.csv")))
    by_image: dict[str, dict[str, list]] = {}
    for r in rows:
        by_image.setdefault(r["image"], {}).setdefault(r["class"], []).append((float(r["x"]), float(r["y"])))
    images, halves = crc_halves(folder)  # fold k scores halves[k], fitted on the other
    plans = ([(halves[k], {**options, **{o: files[k] for o, files in folds.items()}}) for k in range(2)] if folds
             else [(images, options)])
    called = {c: 0 for c in CRC_CLASSES}
    counts = {c: 0 for c in CRC_CLASSES}
    cells = mast_cells = tp = fp = fn = 0
    for paths, opts in plans:
        settings = detection.Settings.from_profile(Profile(), backend=backend, options=opts, mpp=CRC_MPP, all_cells=True)
        detector = registry.create("detector", backend, Profile(), **opts)
        for p in paths:
            det = detection.detect_image(p, settings, detector)
            xy = np.array([(c.x, c.y) for c in det.cells]).reshape(-1, 2)
            is_mast = np.array([c.is_mast_cell for c in det.cells], bool)
            cells += len(xy)
            mast_cells += int(is_mast.sum())
            truth = by_image.get(p.stem, {})
            m = match(xy, truth.get("detection", []), 6.0)
            tp, fp, fn = tp + len(m.pairs), fp + len(xy) - len(m.pairs), fn + len(truth.get("detection", [])) - len(m.pairs)
            for cls in CRC_CLASSES:
                pts = truth.get(cls, [])
                if not pts:
                    continue
                mm = match(xy, pts, 6.0)
                counts[cls] += len(pts)
                called[cls] += sum(int(is_mast[a]) for a, _ in mm.pairs)
    precision, recall = tp / max(1, tp + fp), tp / max(1, tp + fn)
    return {"images": len(images), "protocol": f"two-fold: each half scored by the {', '.join(folds)} fitted on the other" if folds
            else "one model on all 50 images", "cells": cells, "mast_fraction_all_cells": mast_cells / max(1, cells),
            **{f"mast_fraction_{c}": called[c] / max(1, counts[c]) for c in CRC_CLASSES},
            "nucleus_f1_6px": 2 * precision * recall / max(1e-9, precision + recall), "nucleus_precision": precision,
            "nucleus_recall": recall}


def synthetic_folder(workdir: Path, tiles: int, style: str, seed: int = 9000) -> Path:
    """A folder of ``tiles`` synthetic tiles of ``style`` at 0.5 um/px from ``seed`` with their truth, rendered once."""
    folder = workdir / f"real-tissue-synth-{style}-s{seed}-n{tiles}"
    if not (folder / f"{synth.tile_stem(seed, tiles - 1)}.json").exists():
        synth.generate(folder, tiles, seed, synth.SynthOptions(size=512, mpp=0.5, style=style))
    return folder


def synthetic(backend: str, options: dict, workdir: Path, tiles: int, style: str, seed: int = 9000) -> dict:
    return scored(backend, options, synthetic_folder(workdir, tiles, style, seed), style, tiles)


def other_rendering(backend: str, options: dict, workdir: Path, tiles: int, seed: int, renderer: str = "other_renderer",
                    title: str = "other renderer") -> dict:
    """Mast F1 on ``tiles`` tiles of a bench renderer (``bench/{renderer}.py``) from ``seed`` (rendered once): another
    renderer's idea of the same criteria (shared/docs/domain.md), drawn with none of ``mastctl.synth``'s code."""
    import importlib

    module = importlib.import_module(renderer)
    folder = workdir / f"{renderer.replace('_', '-')}-v{module.VERSION}-s{seed}-n{tiles}"
    if not (folder / f"{module.stem(seed, tiles - 1)}.json").exists():
        module.generate(folder, tiles, seed)
    return scored(backend, options, folder, title, tiles)


def scored(backend: str, options: dict, folder: Path, style: str, tiles: int) -> dict:
    """Mast F1 (5 um) of ``backend`` on a folder of synthetic tiles and their truth, with its bootstrap interval."""
    profile = Profile.model_validate({"backend_options": {backend: options}} if options else {})
    run = compare.compare([folder], load_truth(folder), [backend], profile, radius_um=5.0, mode="mast").runs[0]
    if run.evaluation is None:
        return {"skipped": run.skipped}
    d = run.evaluation.detection
    return {"style": style, "tiles": tiles, "f1": d.f1, "f1_ci95": run.evaluation.ci["f1"], "precision": d.precision,
            "recall": d.recall}


def draws_summary(draws: list[dict]) -> dict:
    """The development style's F1 at consecutive seeds from DEV_SEED (``synthetic``'s results), their mean and SD, and
    the mean precision and recall (a rule may bound what a choice costs either: the held-out style failed by each)."""
    f1 = np.array([d["f1"] or 0.0 for d in draws])
    return {"seeds": [DEV_SEED + k for k in range(len(draws))], "f1": [float(v) for v in f1], "mean": float(f1.mean()),
            "sd": float(f1.std(ddof=1)) if len(f1) > 1 else 0.0,
            "precision": float(np.mean([d.get("precision") or 0.0 for d in draws])),
            "recall": float(np.mean([d.get("recall") or 0.0 for d in draws]))}


def synthetic_text(r: dict) -> str:
    """A synthetic set's mast F1 with its 95% bootstrap interval over tiles, precision and recall: with 16 tiles (about
    110 mast cells) the interval is some 0.07 wide (six draws of the development style's 16 tiles, seeds 8000-8005:
    0.876-0.919, SD 0.016)."""
    ci = r.get("f1_ci95")
    interval = f" [{ci[0]:.3f}-{ci[1]:.3f}]" if ci else ""
    return f"mast F1 {r['f1'] or 0:.3f}{interval} (P {r['precision'] or 0:.3f}, R {r['recall'] or 0:.3f})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default=None, help="detector (default: the profile's default, morphology)")
    ap.add_argument("-O", "--option", action="append", default=[], help="backend option KEY=VALUE (repeatable)")
    ap.add_argument("--choose", action="store_true", help="also the ccMCT tb2 crops (the set to choose on)")
    ap.add_argument("--dev-draws", type=int, default=1, help="with --choose: the development style at this many seeds "
                                                              "(8000 on), with their mean and standard deviation")
    ap.add_argument("--crc-fold", action="append", default=[], metavar="OPTION=A,B",
                    help="a backend option's two files, fitted without CRC half 0 and without half 1: score CRC two-fold "
                         "(repeatable)")
    ap.add_argument("--synthetic-tiles", type=int, default=16, help="tiles per synthetic style (0: skip)")
    ap.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "mastctl" / "bench")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    a.workdir.mkdir(parents=True, exist_ok=True)
    backend = a.backend or Profile().detect.backend
    options = _options(a.option)
    registry.create("detector", backend, Profile(), **options)  # fail early with the registry's message
    folds = {}
    for pair in a.crc_fold:
        option, _, files = pair.partition("=")
        folds[option.strip()] = [f for f in files.split(",") if f]
        if len(folds[option.strip()]) != 2:
            ap.error(f"--crc-fold {pair}: give OPTION=A,B, the files fitted without CRC half 0 and without half 1")
    for k in range(2 if folds else 0):
        registry.create("detector", backend, Profile(), **{**options, **{o: f[k] for o, f in folds.items()}})
    t0 = time.perf_counter()
    out: dict = {"backend": backend, "options": options}
    out["ccmct_vb0_report"] = r = ccmct(backend, options, "vb0_*.png")
    if "skipped" in r:
        print(f"ccMCT vb0 (report)           skipped: {r['skipped']}")
    else:
        print(f"ccMCT vb0 (report)           mast fraction {r['mast_fraction']:.3f} of {r['cells']} cells in {r['crops']} crops "
              f"(weak labels: neoplastic canine mast cells in sheets; lymphocytes, eosinophils and stroma mixed in)")
        print(f"  labels {r['labels']}")
    if a.choose:
        out["ccmct_tb2_choose"] = r = ccmct(backend, options, "tb2_*.png")
        if "skipped" not in r:
            print(f"ccMCT tb2 (choose)           mast fraction {r['mast_fraction']:.3f} of {r['cells']} cells")
        out["normal_skin_choose"] = r = normal_skin(backend, options)
        if "skipped" not in r:
            print(f"normal skin (choose)         mast fraction {r['mast_fraction']:.3f} ({r['mast']} of {r['cells']} cells; "
                  f"a normal dermis: a few percent at most)")
        out["jpeg_choose"] = r = jpeg_choose(backend, options)
        if "skipped" not in r:
            print("JPEG (choose)                skin mast calls " + " / ".join(str(n) for n in r["skin_mast"])
                  + ", CRC threshold images' cells called mast "
                  + " / ".join(f"{v:.2%}" for v in r["crc_mast_fraction"])
                  + f" (PNG / saved as JPEG of quality {' / '.join(map(str, JPEG_QUALITIES))})")
    out["crc"] = r = crc(backend, options, folds)
    if "skipped" in r:
        print(f"CRC                          skipped: {r['skipped']}")
    else:
        shares = "  ".join(f"{c} {r[f'mast_fraction_{c}']:.2%}" for c in CRC_CLASSES)
        print(f"CRC ({r['protocol']})")
        print(f"  called mast: all cells {r['mast_fraction_all_cells']:.2%}  {shares}")
        print(f"  nuclei F1 {r['nucleus_f1_6px']:.3f} (P {r['nucleus_precision']:.3f}, R {r['nucleus_recall']:.3f}, within 6 px)")
    if a.synthetic_tiles:
        for style in ("gut", synth.HELD_OUT_STYLE):
            out[f"synthetic_{style}"] = r = synthetic(backend, options, a.workdir, a.synthetic_tiles, style)
            if "skipped" in r:
                print(f"synthetic {style:<10}         skipped: {r['skipped']}")
            else:
                note = " (held out of every shipped model's training)" if style == synth.HELD_OUT_STYLE else ""
                print(f"synthetic {style:<10}         {synthetic_text(r)}{note}")
    if a.synthetic_tiles:
        for seed, role in ([(OTHER_CHOOSE_SEED, "choose")] if a.choose else []) + [(OTHER_REPORT_SEED, "report")]:
            out[f"other_renderer_{role}"] = r = other_rendering(backend, options, a.workdir, a.synthetic_tiles, seed)
            if "skipped" not in r:
                print(f"other renderer ({role}, seed {seed}) {synthetic_text(r)} "
                      "(bench/other_renderer.py; the shipped crop net learned other seeds)")
        out["third_renderer_report"] = r = other_rendering(backend, options, a.workdir, THIRD_TILES * a.synthetic_tiles,
                                                           THIRD_REPORT_SEED, "third_renderer", "third renderer")
        if "skipped" not in r:
            print(f"third renderer (report, seed {THIRD_REPORT_SEED}) {synthetic_text(r)} "
                  "(bench/third_renderer.py; no model trained or chosen on it)")
    if a.choose and a.synthetic_tiles:
        draws = [synthetic(backend, options, a.workdir, a.synthetic_tiles, synth.DEV_STYLE, seed=DEV_SEED + k)
                 for k in range(max(1, a.dev_draws))]
        out["synthetic_dev_choose"] = r = draws[0]
        if "skipped" not in r:
            print(f"synthetic {synth.DEV_STYLE:<10} (choose) {synthetic_text(r)} (development seed 8000; never trained on)")
        if len(draws) > 1 and not any("skipped" in d for d in draws):
            out["synthetic_dev_draws"] = d = draws_summary(draws)
            print(f"  over seeds {d['seeds'][0]}-{d['seeds'][-1]}: mean {d['mean']:.3f} (SD {d['sd']:.3f}; "
                  + " ".join(f"{v:.3f}" for v in d["f1"]) + f"; mean P {d['precision']:.3f}, R {d['recall']:.3f})")
    print(f"({time.perf_counter() - t0:.0f} s)")
    if a.json:
        print(json.dumps(out, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
