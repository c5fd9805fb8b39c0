"""IHC as the teacher, measured: DAB detection, registration, label transfer.

1. DAB-positive cells on ../shared/data/ihc_ki67 (DeepLIIF; red = positive),
   40x taken as 0.25 um/px, a hit within 4 um: precision, recall, F1.
2. Positive % of OS-2 scanned twice (ndpi 0.227 um/px, vsi 0.346 um/px) beside
   QuPath's counts in the *results.tsv files.
3. Registration: synthetic pairs (seed 9100, both scales; error of the truth
   cells in um); ANHIR landmarks (median target registration error before and
   after, pixels of the 5% images); the same-section H&E/Ki67 pair (share of
   H&E nuclei with an IHC nucleus within 3 um, before and after).
4. Transfer on synthetic pairs: true mast cells recovered within 3 um.

    python bench/ihc.py [--pairs 6]
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from scipy import ndimage as ndi

from mastctl import imaging, metrics, registry, synth
from mastctl.cells import Cell
from mastctl.ihc import detect_dab, transfer
from mastctl.imaging import Image
from mastctl.morphology import analyse
from mastctl.profile import Profile
from mastctl.registration import register

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def deepliif() -> None:
    total = metrics.Counts()
    for path in sorted((DATA / "ihc_ki67").glob("*.png")):
        gt = np.asarray(PILImage.open(DATA / "ihc_ki67" / "groundtruth" / path.name).convert("RGB"))
        red = (gt[..., 0] > 200) & (gt[..., 1] < 50) & (gt[..., 2] < 50)
        lab, n = ndi.label(red)
        sizes = ndi.sum(red, lab, range(1, n + 1))
        truth = [Cell(c[1] + 0.5, c[0] + 0.5, "other") for c, s in zip(ndi.center_of_mass(red, lab, range(1, n + 1)), sizes) if s > 30]
        result = detect_dab(imaging.load(path, mpp=0.25).pixels, 0.25, marker="ki67")
        pred = [c for c in result.cells if c.features["positive"]]
        score = metrics.score_image(path.name, pred, truth, 4.0 / 0.25, mode="cells")
        total = total + score.detection
        print(f"  {path.name:<10} truth+ {len(truth):3d}  found+ {len(pred):3d}  F1 {score.detection.f1 or 0:.3f}")
    print(f"DeepLIIF Ki67 positive cells      P {total.precision:.3f}  R {total.recall:.3f}  F1 {total.f1:.3f}")


def scanners() -> None:
    pct = {}
    for name in ("OS-2-ndpi", "OS-2-vsi"):
        image = imaging.load(DATA / "openslide_crops" / f"images-{name}.ome.tif")
        result = detect_dab(image.pixels, image.mpp, marker="ki67")
        pct[name] = result.positive_pct
        rows = list(csv.DictReader(open(DATA / "openslide_crops" / f"Ki67_cell_detection-output-{name}-results.tsv"), delimiter="\t"))
        qupath = ", ".join(f"{float(r['Positive %']):.1f}% ({r['Num cells']} cells, det {r['Detection threshold']}/DAB {r['DAB threshold']})" for r in rows)
        print(f"  {name}: {result.total} cells, {result.positive} positive = {result.positive_pct:.1f}% (threshold {result.threshold:.2f});  QuPath: {qupath}")
    print(f"positive % across scanners        difference {abs(pct['OS-2-ndpi'] - pct['OS-2-vsi']):.1f} percentage points")


def registration(n_pairs: int) -> None:
    errors, seconds = [], []
    for i in range(n_pairs):
        mpp = 0.5 if i % 2 == 0 else 0.25
        tile = synth.render_tile([9100, i], synth.SynthOptions(size=512 if mpp == 0.5 else 1024, mpp=mpp))
        t0 = time.perf_counter()
        reg = register(tile.he, tile.ihc, mpp, mpp)
        seconds.append(time.perf_counter() - t0)
        he_xy = np.array([[c.x, c.y] for c in tile.cells])
        true = np.array([[c.ihc["x"], c.ihc["y"]] for c in tile.cells])
        errors.append(float(np.mean(np.hypot(*(reg.he_to_ihc(he_xy) - true).T)) * mpp))
    print(f"registration, synthetic pairs     mean error {np.mean(errors):.2f} um (worst pair {max(errors):.2f} um, {n_pairs} pairs); {np.mean(seconds):.1f} s per pair (256 um square, 512 px at 0.5 or 1024 px at 0.25 um/px)")
    base = DATA / "pairs" / "anhir_consecutive"
    if not base.exists() or not (DATA / "pairs" / "same_section_he_ki67").exists():
        print(f"registration, real pairs          skipped: {DATA / 'pairs'} not found")
        return
    for row in csv.DictReader(open(base / "pairs-imgs-lnds_histol.csv")):
        he, ihc = imaging.load(base / row["Target image"]).pixels, imaging.load(base / row["Source image"]).pixels
        lt = np.array([[float(r["X"]), float(r["Y"])] for r in csv.DictReader(open(base / row["Target landmarks"]))])
        ls = np.array([[float(r["X"]), float(r["Y"])] for r in csv.DictReader(open(base / row["Source landmarks"]))])
        k = min(len(lt), len(ls))
        t0 = time.perf_counter()
        reg = register(he, ihc, 1.0, 1.0, significance=False)  # whole sections at 5%: the outline is all there is
        took = time.perf_counter() - t0
        before = np.median(np.hypot(*(lt[:k] - ls[:k]).T))
        after = np.median(np.hypot(*(reg.he_to_ihc(lt[:k]) - ls[:k]).T))
        print(f"  ANHIR {row['Target image'].split('/')[0]:<12} median TRE {before:.1f} px -> {after:.1f} px (quality {reg.ncc:.2f}; {took:.1f} s)")
    he = imaging.load(DATA / "pairs" / "same_section_he_ki67" / "he.png")
    ki = imaging.load(DATA / "pairs" / "same_section_he_ki67" / "ki67.png")
    mpp = 0.25
    t0 = time.perf_counter()
    reg = register(he.pixels, ki.pixels, mpp, mpp)
    print(f"  same-section H&E/Ki67 registered in {time.perf_counter() - t0:.1f} s ({he.pixels.shape[1]} x {he.pixels.shape[0]} px)")
    he_nuclei = analyse(he.pixels, mpp).xy
    ihc_nuclei = np.array([[c.x, c.y] for c in detect_dab(ki.pixels, mpp, marker="ki67").cells])
    for name, mapped in (("before", he_nuclei), ("after", reg.he_to_ihc(he_nuclei))):
        m = metrics.match(mapped, ihc_nuclei, 3.0 / mpp)
        print(f"  same-section H&E/Ki67 {name:<6} {len(m.pairs) / len(he_nuclei):.1%} of {len(he_nuclei)} H&E nuclei have an IHC nucleus within 3 um")


def transfers(n_pairs: int) -> None:
    detector = registry.create("detector", "morphology", Profile())
    found = total = spurious = 0
    seconds = 0.0
    for i in range(n_pairs):
        mpp = 0.5 if i % 2 == 0 else 0.25
        tile = synth.render_tile([9200, i], synth.SynthOptions(size=512 if mpp == 0.5 else 1024, mpp=mpp))
        he_image = Image(tile.he, f"he{i}", mpp)
        t0 = time.perf_counter()
        result = transfer(he_image, Image(tile.ihc, f"ihc{i}", mpp), detector.detect(he_image))
        seconds += time.perf_counter() - t0
        mast = [c for c in result.detections.cells if c.is_mast_cell]
        true = [c for c in tile.cells if c.type == "mast_cell" and c.ihc["inside"]]
        m = metrics.match([(c.x, c.y) for c in mast], [(c.x, c.y) for c in true], 3.0 / mpp)
        found, total, spurious = found + len(m.pairs), total + len(true), spurious + len(m.unmatched_pred)
    print(f"transfer, synthetic pairs         {found}/{total} = {found / max(total, 1):.1%} true mast cells recovered within 3 um, "
          f"{spurious} spurious; {seconds / n_pairs:.1f} s per pair (H&E detection + registration + transfer)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=6)
    args = parser.parse_args()
    for part, folder in ((deepliif, "ihc_ki67"), (scanners, "openslide_crops")):
        if (DATA / folder).exists():
            part()
        else:
            print(f"{part.__name__:<34}skipped: {DATA / folder} not found")
    registration(args.pairs)
    transfers(args.pairs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
