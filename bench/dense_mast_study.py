"""Could one dense pass replace the criteria model and the crop net? A study toward issue #18's speed target.

The default detector takes about 12x the PNG decode of a CRC tile (bench/score.py) against a target of 3x. No one
stage holds the gap (per CRC tile on 2 cores: crop net about 50 ms with its views, criteria features 20, watershed
seeds 18, finder map 15, forest 12, peaks 11, stain split 9): the nucleus finder alone already takes 3.7x. So the
target needs fewer stages, not faster ones. This script asks whether a net that reads the whole tile once, as the
finder does, can say which of the finder's nuclei are mast cells as well as the criteria model and the crop net do.

The student is the finder's strided net (``nucleinet.build(width, "strided")``: its cost is the finder's) with its
own weights, reading the crop net's maps (``MastNet.maps``: reference stain vectors, the image's colour cast taken
out), one logit per pixel, fitted with binary cross-entropy at the labelled nuclei of 96 x 96 px patches (turns,
flips, stain strength and cross-talk as the crop net's training draws them, and with ``--focus`` a Gaussian of
0-1.3 um on 80% of patches).

What each data set is for, declared before anything was measured (nothing here is a report set):

- TRAIN: synthetic tiles of the training styles (gut, sheet, carcinoma; seeds 1000, 1007, 1014, 0.5 um/px) with
  their truth (mast cell or not at every true centre; ``--labels teacher``: the default detector's calls instead);
  ccMCT ``tb0_*``/``tb1_*`` at 0.25, 0.35 and 0.45 um/px, CRC images that are not the crop net's threshold images,
  and the top half of the normal skin, each labelled by the default detector's calls (the teacher: its real-tissue
  behaviour is what a replacement must keep).
- CHOOSE (printed): ccMCT ``tb2_*`` (share of the teacher's cells the student calls mast), the CRC threshold images
  and the skin's choose half (shares and calls), and the development style ``washed`` at seeds 8000-8005 (mast F1
  against the truth, at the teacher's cells). ``vb0``, ``faded`` and the other renderers are not read.

The student is read at the teacher's cells (the finder's nuclei and its few seeded-only mast calls), so only the
mast decision is compared. The speed line times, on the 50 CRC tiles, the stain split, the finder and its peaks,
the collagen check and the student's map together against the PNG decode and the default detector, in one process.

Measured on 2026-12-07 (2 cores; teacher: the default detector of commit cfc8427). This script at its defaults
(synthetic truth, focus, 3,000 steps, seed 0; 13 minutes; twice, the same figures to the last digit): tb2 0.730 of the
teacher's cells called mast (the teacher 0.738), the CRC threshold images 0.06% (0.20%), the skin's choose half 14
calls (5), washed mast F1 0.739 over six draws (0.726-0.802; the teacher 0.870). Earlier drafts of it (other batch
draws): the teacher's labels on the synthetic tiles too, 2,000 steps, no focus: 0.690 / 0.03% / 2 / 0.679; synthetic
truth without focus: 0.811 / 0.23% / 11 / 0.742; with focus: 0.728 / 0.06% / 6 / 0.729 (seed 8000: P 0.81, R 0.66).
A head on the shipped finder's own feature maps (logistic, or 64 hidden units, on its five last maps sampled at the
cells) did not learn the task: washed 0.27 / 0.33, 31% / 14% of the skin's cells called mast.
Nor is this student a stand-in for the crop net inside the default detector (its P at each nucleus as the net's, its
logit lowered by 0 / 1 / 2; the veto and sheet rule's bounds were set on the crop net's scale): tb2 0.847 / 0.735 /
0.466, the CRC threshold images 0.60% / 0.06% / 0.00%, the skin's calls 182 / 44 / 9, washed 0.813 / 0.763 / 0.685.
Speed, the 50 CRC tiles in one process, fastest of two passes: the finder and this student (its map drawn as the
finder's is: bfloat16 on AMX) 52.5 ms a tile, 5.47x the decode, where the default detector took 179 ms, 16.2x (it
takes about 12x in bench/score.py's fresh process; the machine's hour and the order move it).

With ``--shared-trunk`` (a second output fitted to the shipped finder's map, so that one pass would give both; 3,000
steps, seed 0, 14 minutes): tb2 0.730, CRC 0.03%, skin 8 calls, washed 0.736 — the mast calls as before — but the
nuclei were not kept: nucleus F1 0.462 on the CRC threshold images against the shipped finder's 0.826 there (the
finder was fitted on them: a yardstick), and the one pass with its stain split, peaks and collagen check still took
4.77x the decode (55.5 ms a tile; the default 14.0x in that run): the stages around the nets cost as much as a net.

With ``--basis image`` (2026-12-07, later: the maps through the image's own Macenko vectors, as the criteria read it,
in place of the crop net's fixed ones; the defaults otherwise, 12 minutes): far worse everywhere. tb2 0.266 of the
teacher's cells, the CRC threshold images 0.00%, the skin's choose half 39 calls, washed 0.207 over six draws
(0.174-0.231). The criteria's own vectors serve hand-made measurements; a net fitted through them learns each
style's estimate.

So a dense pass keeps the real-tissue behaviour (the mast cell tumour, colorectal cancer, normal skin) but not the
unseen synthetic style, whose mast cells it misses (the implicit cells, which H&E barely shows and the criteria
find), and the finder and a second dense net still cost 5x the decode: the 3x target needs one trunk shared with
the finder that finds the implicit cells too, and cheaper peaks and stain split besides. Not shipped.

    python bench/dense_mast_study.py                 # about 13 minutes on 2 cores
    python bench/dense_mast_study.py --limit 2 --steps 5 --no-speed   # a smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import real_tissue as rt  # noqa: E402

from mastctl import detection, imaging, registry, synth  # noqa: E402
from mastctl.metrics import Counts, match  # noqa: E402
from mastctl.morphology import stain  # noqa: E402
from mastctl.profile import Profile  # noqa: E402

PATCH = 96  # working pixels a side
TRAIN_SHARE = {"synthetic": 0.35, "ccmct": 0.25, "crc": 0.3, "skin": 0.1}  # of each batch's patches
GAIN_SD = (0.35, 0.6, 0.35)  # as bench/train_mast_net.py draws stain strength ...
MIX_SD = 0.2  # ... and cross-talk
SYNTH_SEEDS = {"gut": 1000, "sheet": 1007, "carcinoma": 1014}
CCMCT_SCALES = (0.25, 0.35, 0.45)  # the tb mosaics' scale is unknown (bench/train_mast_net.py)
WASHED_RADIUS_PX = 10.0  # 5 um at 0.5 um/px: a call within it of a true mast cell finds it (bench/real_tissue.py)


@dataclasses.dataclass
class Tile:
    """One image at the working scale: the crop net's maps, the cells to decide and their labels."""

    source: str
    name: str
    maps: np.ndarray  # (3, H, W) float16
    xy: np.ndarray  # (n, 2) working pixels
    mast: np.ndarray  # (n,) bool: the label (TRAIN) or the teacher's call (CHOOSE)
    factor: int  # input pixels per working pixel
    truth: np.ndarray | None = None  # (m, 2) true mast cells, input pixels (synthetic CHOOSE tiles)
    proximity: np.ndarray | None = None  # (H, W) float16: the shipped finder's map (``--shared-trunk``'s second target)


def tiles(workdir: Path, labels: str, limit: int | None, proximity: bool = False, basis: str = "reference") -> list[Tile]:
    teacher = registry.create("detector", "morphology", Profile())
    net = teacher.mast_net
    out: list[Tile] = []

    def add(image, source: str, truth_json: Path | None = None, choose_truth: bool = False):
        cells = detection.detect_one(teacher, image).cells
        st = stain.separate(image.pixels, image.mpp)
        xy = np.array([(c.x, c.y) for c in cells], np.float64).reshape(-1, 2)
        mast = np.array([c.is_mast_cell for c in cells], bool)
        truth = None
        if truth_json is not None:
            true_cells = json.loads(truth_json.read_text())["cells"]
            true_mast = np.array([(c["x"], c["y"]) for c in true_cells if c["type"] == "mast_cell"]).reshape(-1, 2)
            if choose_truth:
                truth = true_mast
            elif labels == "truth":
                xy = np.array([(c["x"], c["y"]) for c in true_cells], np.float64).reshape(-1, 2)
                mast = np.array([c["type"] == "mast_cell" for c in true_cells], bool)
        near = teacher.nuclei_net.proximity(st).astype(np.float16) if proximity else None
        maps = net.maps(st, stain.cast_od(st)) if basis == net.basis else stain.net_input(st, basis)
        out.append(Tile(source, image.path, maps.astype(np.float16), xy / st.factor, mast, st.factor, truth, near))

    def at(path, mpp):
        return dataclasses.replace(imaging.load(path), mpp=mpp, mpp_source="option")

    def first(items):
        return list(items)[:limit] if limit else list(items)

    for style, seed in SYNTH_SEEDS.items():
        folder = workdir / f"dense-mast-study-{style}-s{seed}"
        n = limit or 40
        if not (folder / f"{synth.tile_stem(seed, n - 1)}.json").exists():
            synth.generate(folder, n, seed, synth.SynthOptions(size=512, mpp=0.5, style=style))
        for i in range(n):
            stem = folder / synth.tile_stem(seed, i)
            add(imaging.load(f"{stem}_he.png"), "synthetic", Path(f"{stem}.json"))
    ccmct = rt.DATA / "ccmct"
    for p in first(sorted(ccmct.glob("tb0_*.png")) + sorted(ccmct.glob("tb1_*.png"))):
        for mpp in CCMCT_SCALES:
            add(at(p, mpp), "ccmct")
    for p in first(sorted(ccmct.glob("tb2_*.png"))):
        add(at(p, rt.CCMCT_MPP), "tb2")
    _, halves = rt.crc_halves()
    crc = [(p, rt.is_threshold_image(j)) for half in halves for j, p in enumerate(half)]
    for p, held in first(crc):
        add(at(p, rt.CRC_MPP), "crc-threshold" if held else "crc")
    if rt.SKIN.exists():
        skin = imaging.load(rt.SKIN)
        top = skin.pixels[: skin.pixels.shape[0] // 2, :, :3]
        add(imaging.Image(np.ascontiguousarray(top), f"{rt.SKIN.stem}-top-half.png", skin.mpp), "skin")
        add(rt.skin_choose_half(), "skin-choose")
    for seed in range(rt.DEV_SEED, rt.DEV_SEED + 6):
        folder = rt.synthetic_folder(workdir, limit or 16, synth.DEV_STYLE, seed)
        for i in range(limit or 16):
            stem = folder / synth.tile_stem(seed, i)
            add(imaging.load(f"{stem}_he.png"), f"washed-{seed}", Path(f"{stem}.json"), choose_truth=True)
    return out


def patch(tile: Tile, rng, focus: bool):
    from scipy import ndimage as ndi

    x = tile.maps.astype(np.float32)
    if tile.proximity is not None:  # a fourth plane, cut, turned and flipped with the maps, split off below
        x = np.concatenate([x, tile.proximity[None].astype(np.float32)])
    pad = ((0, 0), (0, max(0, PATCH - x.shape[1])), (0, max(0, PATCH - x.shape[2])))
    x = np.pad(x, pad, mode="reflect") if any(p[1] for p in pad) else x
    r0, c0 = rng.integers(0, x.shape[1] - PATCH + 1), rng.integers(0, x.shape[2] - PATCH + 1)
    x = x[:, r0:r0 + PATCH, c0:c0 + PATCH]
    pts = tile.xy - [c0, r0]
    inside = np.all((pts >= 0) & (pts < PATCH), axis=1)
    pts, label = pts[inside], tile.mast[inside].astype(np.float32)
    for _ in range(int(rng.integers(4))):  # a quarter turn: (x, y) -> (y, PATCH - 1 - x)
        x, pts = np.rot90(x, 1, axes=(1, 2)), np.column_stack([pts[:, 1], PATCH - 1 - pts[:, 0]])
    if rng.random() < 0.5:
        x, pts = x[:, :, ::-1], np.column_stack([PATCH - 1 - pts[:, 0], pts[:, 1]])
    x, near = x[:3], (np.ascontiguousarray(x[3]) if len(x) > 3 else None)
    gain = np.exp(rng.normal(0, 1, 3) * np.asarray(GAIN_SD))
    mixing = np.eye(3) + rng.normal(0, MIX_SD, (3, 3)) * (1 - np.eye(3))
    x = np.einsum("ij,jhw->ihw", (mixing * gain[:, None]).T, x)
    if focus and rng.random() < 0.8:
        sigma = rng.uniform(0, 1.3) / stain.WORK_MPP
        x = ndi.gaussian_filter(x, (0, sigma, sigma))
    return np.ascontiguousarray(x, np.float32), pts, label, near


def train(train_tiles: list[Tile], steps: int, width: int, focus: bool, seed: int = 0, batch: int = 16,
          shared_trunk: bool = False):
    """The student; with ``shared_trunk`` a second output, the shipped finder's proximity map (soft cross-entropy over
    every pixel), so that one pass would give both the nuclei and their mast calls."""
    import torch

    from mastctl.morphology import nucleinet

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    by_source = {s: [t for t in train_tiles if t.source == s] for s in TRAIN_SHARE}
    sources = [s for s in TRAIN_SHARE if by_source[s]]
    share = np.array([TRAIN_SHARE[s] for s in sources])
    model = nucleinet.build(width, "strided")
    if shared_trunk:
        model.out = torch.nn.Conv2d(width, 2, 1)  # 0: mast logit, 1: proximity logit
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, steps), eta_min=2e-4)
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        drawn = [patch(by_source[s][rng.integers(len(by_source[s]))], rng, focus)
                 for s in rng.choice(sources, size=batch, p=share / share.sum())]
        out = model(torch.from_numpy(np.stack([d[0] for d in drawn])))
        logits = out[:, 0]
        terms = []
        for i, (_, pts, label, _) in enumerate(drawn):
            if len(pts):
                ij = np.clip(np.round(pts).astype(int), 0, PATCH - 1)
                terms.append(torch.nn.functional.binary_cross_entropy_with_logits(
                    logits[i, ij[:, 1], ij[:, 0]], torch.from_numpy(label), reduction="sum"))
        if not terms:
            continue
        loss = torch.stack(terms).sum() / sum(len(d[1]) for d in drawn)
        if shared_trunk:
            target = torch.from_numpy(np.stack([d[3] for d in drawn]))
            loss = loss + torch.nn.functional.binary_cross_entropy_with_logits(out[:, 1], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 500 == 0 or step == steps - 1:
            print(f"  step {step} loss {loss.item():.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
    return model.eval()


def outputs(model, tile: Tile) -> np.ndarray:
    """The student's logit maps of a tile, (outputs, H, W): 0 the mast logit, 1 (``--shared-trunk``) the proximity's."""
    import torch

    x = tile.maps.astype(np.float32)
    h, w = x.shape[1:]
    x = np.pad(x, ((0, 0), (0, (-h) % 8), (0, (-w) % 8)), mode="reflect")  # the strided net's sides: multiples of 8
    with torch.inference_mode():
        return model(torch.from_numpy(x)[None])[0, :, :h, :w].numpy()


def student_calls(model, tile: Tile) -> np.ndarray:
    z = outputs(model, tile)[0]
    ij = np.clip(np.round(tile.xy).astype(int), 0, [z.shape[1] - 1, z.shape[0] - 1])
    return z[ij[:, 1], ij[:, 0]] > 0


def hits(found: np.ndarray, truth: np.ndarray, radius_px: float) -> Counts:
    m = match(found, truth, radius_px)
    return Counts(len(m.pairs), len(m.unmatched_pred), len(m.unmatched_true))


def nuclei(model, choose: list[Tile]) -> dict:
    """``--shared-trunk``: nucleus F1 (6 px) on the CRC threshold images of the second output's peaks and of the shipped
    finder's (which was fitted on every CRC image: a yardstick, not a transfer figure), each against the marked
    centres."""
    from mastctl.morphology import nucleinet
    from mastctl.truth import image_key, load_truth

    threshold = nucleinet.default_net().peak_threshold
    marked = load_truth(rt.DATA / "crc_nuclei" / "points.csv", classes=["detection"])
    counts = {"student": Counts(), "finder": Counts()}
    for t in (t for t in choose if t.source == "crc-threshold"):
        near = 1.0 / (1.0 + np.exp(-outputs(model, t)[1]))
        truth = np.array([(c.x, c.y) for c in marked[image_key(t.name)].cells], np.float64).reshape(-1, 2)
        for who, m in (("student", near), ("finder", t.proximity.astype(np.float32))):
            found = nucleinet.find_peaks(m, rt.CRC_MPP * t.factor, threshold) * t.factor
            counts[who] += hits(found, truth, 6.0)
    f1 = {who: c.f1 or 0.0 for who, c in counts.items()}
    print(f"CRC threshold images, nucleus F1 (6 px): the shared trunk's {f1['student']:.3f}, the shipped finder's "
          f"{f1['finder']:.3f}")
    return f1


def report(model, choose: list[Tile]) -> dict:
    results = {}
    for source in ("tb2", "crc-threshold", "skin-choose"):
        group = [t for t in choose if t.source == source]
        if group:
            student = np.concatenate([student_calls(model, t) for t in group])
            teacher = np.concatenate([t.mast for t in group])
            results[source] = {"cells": len(student), "student": float(student.mean()),
                               "teacher": float(teacher.mean()), "student_calls": int(student.sum()),
                               "teacher_calls": int(teacher.sum())}
            print(f"{source:<14} called mast: student {student.mean():.4f} ({student.sum()}), teacher "
                  f"{teacher.mean():.4f} ({teacher.sum()}) of {len(student)} cells")
    f1 = {"student": [], "teacher": []}
    for seed in sorted({t.source for t in choose if t.source.startswith("washed")}):
        counts = {k: Counts() for k in f1}
        for t in (t for t in choose if t.source == seed):
            for who, calls in (("student", student_calls(model, t)), ("teacher", t.mast)):
                counts[who] += hits(t.xy[calls] * t.factor, t.truth, WASHED_RADIUS_PX)
        for who, c in counts.items():
            f1[who].append(c.f1 or 0.0)
    if f1["student"]:
        results["washed"] = {k: float(np.mean(v)) for k, v in f1.items()}
        print(f"washed         mast F1, mean of {len(f1['student'])} draws: student {np.mean(f1['student']):.3f} "
              f"({' '.join(f'{v:.3f}' for v in f1['student'])}), teacher {np.mean(f1['teacher']):.3f}")
    return results


def speed(model, width: int, repeat: int = 2, shared_trunk: bool = False, basis: str = "reference") -> dict:
    """Per CRC tile: decode, the dense pipeline (stain split, finder and peaks, collagen check, the student's map) and
    the default detector, each the fastest of ``repeat`` passes over the 50 tiles in this process. With
    ``shared_trunk`` the finder is not run: one pass of the student, and the peaks searched on a map of it (the same
    work as on its proximity output)."""
    from mastctl.morphology import hematoxylin_over_eosin, nucleinet
    from mastctl.threads import one_blas_thread

    teacher = registry.create("detector", "morphology", Profile())
    finder, net = teacher.nuclei_net, teacher.mast_net
    _, halves = rt.crc_halves()
    paths = [p for half in halves for p in half]
    images = [imaging.load(p, mpp=rt.CRC_MPP) for p in paths]

    # the student drawn as the finder's map is (nucleinet.NucleusNet: batch norm folded, channels-last, bfloat16 on a
    # CPU with AMX tiles), through the maps it was fitted on (``net_input`` of its basis)
    student = nucleinet.NucleusNet({k: v.numpy() for k, v in model.state_dict().items()}, width, stain.WORK_MPP, 0.5,
                                   basis=basis, arch="strided", precision="auto")

    def dense(image):
        st = stain.separate(image.pixels, image.mpp)
        p = student.proximity(st)
        found = finder.peaks(p if shared_trunk else finder.proximity(st), st.mpp)
        found = found[hematoxylin_over_eosin(st, found) >= 0.5]
        ij = np.clip(np.round(found).astype(int), 0, [p.shape[1] - 1, p.shape[0] - 1])
        return found, p[ij[:, 1], ij[:, 0]] >= 0.5

    def timed(work, items):
        best = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            for item in items:
                work(item)
            best = min(best, time.perf_counter() - t0)
        return best / len(items)

    with one_blas_thread():
        for image in images[:3]:  # warm: torch's first convolutions of each shape
            dense(image)
            detection.detect_one(teacher, image)
        decode = timed(imaging.load, paths)
        fast, default = timed(dense, images), timed(lambda im: detection.detect_one(teacher, im), images)
    print(f"speed (50 CRC tiles) decode {decode * 1e3:.1f} ms/tile; dense pipeline {fast * 1e3:.1f} ms "
          f"({(decode + fast) / decode:.2f}x the decode); default detector {default * 1e3:.1f} ms "
          f"({(decode + default) / decode:.2f}x)")
    return {"decode_s": decode, "dense_s": fast, "default_s": default}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--labels", choices=("truth", "teacher"), default="truth", help="synthetic training labels")
    ap.add_argument("--no-focus", dest="focus", action="store_false", help="no blur augmentation")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="at most this many images of each source (a smoke run)")
    ap.add_argument("--no-speed", dest="speed", action="store_false")
    ap.add_argument("--shared-trunk", action="store_true",
                    help="a second output fitted to the shipped finder's map: nuclei and mast calls from one pass")
    ap.add_argument("--basis", choices=("reference", "image"), default="reference",
                    help="the maps the student reads: the crop net's (fixed vectors, the cast out) or the image's own "
                         "vectors' (as the criteria read it)")
    ap.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "mastctl" / "bench")
    ap.add_argument("--json", type=Path, help="write the figures here")
    a = ap.parse_args(argv)
    if not (rt.DATA / "ccmct").exists():
        print(f"needs ../shared/data ({rt.DATA})", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    everything = tiles(a.workdir, a.labels, a.limit, proximity=a.shared_trunk, basis=a.basis)
    print(f"{len(everything)} images labelled ({time.perf_counter() - t0:.0f} s)", flush=True)
    model = train([t for t in everything if t.source in TRAIN_SHARE], a.steps, a.width, a.focus, a.seed,
                  shared_trunk=a.shared_trunk)
    results = {"recipe": {k: v for k, v in vars(a).items() if k not in ("workdir", "json")}}
    choose = [t for t in everything if t.source not in TRAIN_SHARE]
    results.update(report(model, choose))
    if a.shared_trunk:
        results["nucleus_f1"] = nuclei(model, choose)
    if a.speed:
        results["speed"] = speed(model, a.width, shared_trunk=a.shared_trunk, basis=a.basis)
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=str))
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
