"""Score one detector the way every detector issue is measured.

1. A synthetic validation set: tiles rendered with a fixed seed (9000 by
   default; tune on other seeds) at 0.5 and 0.25 um/px, covering the same
   tissue area at both scales (--size px at 0.5 um/px). Mast cells are scored
   within 5 um (precision, recall, F1 with 95% bootstrap intervals over tiles,
   explicit and implicit recall), then every nucleus (label-agnostic).
2. Real nuclei: ../shared/data/crc_nuclei (Sirinukunwattana et al., IEEE TMI
   2016), every marked nucleus centre, a hit within 6 px as the data set's
   standard, at 0.55 um/px, with the detector's --all-cells output. With
   --crc-nuclei-steps N (morphology only), also two-fold cross-validated with
   a learned nucleus finder: the shipped finder's recipe
   (bench/train_nucleus_net.py, N steps) on the odd-numbered images scores
   the even-numbered ones and vice versa, summed. With --crc-nuclei-models A,B
   the two finders come from files instead (bench/train_nucleus_net.py
   --two-fold DIR; bench/nuclei_cv.py chooses recipes by nested
   cross-validation). The default detector's own finder was fitted on all 50
   images, so its all-images line is not a measure of transfer: the two-fold
   line is.
3. Speed: end-to-end detect time (decode + detection) over the time to
   merely decode the same PNGs, in the same run, one process, on the
   synthetic tiles and on the real CRC tiles (denser: 300-800 nuclei per
   500 px tile); each tile is
   timed --repeat times and its fastest run kept (a busy machine adds noise,
   never speed). With a learned nucleus finder (the default's), also the
   finder alone on the CRC tiles (stain split, proximity map, peaks; nothing
   classified): the floor of any detector built on it.
4. Memory: the peak memory (RSS) of a fresh process that detects the CRC
   tiles one after another, as `mastctl detect DIR` does, after the first
   tile, the tenth, the middle one and the last: a detector whose memory is
   bounded by the tile levels off, one that keeps something of every tile
   (or of every shape it met) grows, by the MB a tile the line prints.

    python bench/score.py --backend log
    python bench/score.py --backend morphology --tiles 12 --json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from mastctl import compare, imaging, registry, synth
from mastctl.profile import Profile
from mastctl.truth import load_truth
from nuclei_cv import CRC, crc_halves  # bench/ is the script's folder


def synthetic_set(workdir: Path, seed: int, tiles: int, size: int, mpp: float) -> Path:
    size = size if mpp >= 0.5 else int(round(size * 0.5 / mpp))  # the same tissue area at every scale
    folder = workdir / f"synth-s{seed}-n{tiles}-{size}px-{mpp}mpp"
    if not (folder / f"{synth.tile_stem(seed, tiles - 1)}.json").exists():
        synth.generate(folder, tiles, seed, synth.SynthOptions(size=size, mpp=mpp))
    return folder


def line(title: str, run: compare.BackendRun, kinds: bool) -> dict:
    if run.skipped:
        print(f"{title:<34} skipped: {run.skipped}")
        return {"skipped": run.skipped}
    ev = run.evaluation
    d = ev.detection
    ci = ev.ci["f1"]
    text = f"{title:<34} P {d.precision or 0:.3f}  R {d.recall or 0:.3f}  F1 {d.f1 or 0:.3f}"
    text += f" [{ci[0]:.3f}-{ci[1]:.3f}]" if ci else ""
    result = {"precision": d.precision, "recall": d.recall, "f1": d.f1, "f1_ci95": ci, "tp": d.tp, "fp": d.fp, "fn": d.fn}
    if kinds:
        ex, im = ev.kind("explicit"), ev.kind("implicit")
        found_ex = sum(1 for s in run.scores for p, t in s.match.pairs if s.true[t].kind == "explicit") / max(1, ex.tp + ex.fn)
        found_im = sum(1 for s in run.scores for p, t in s.match.pairs if s.true[t].kind == "implicit") / max(1, im.tp + im.fn)
        text += f"  explicit R {found_ex:.3f} (kind right {ex.recall or 0:.3f})  implicit R {found_im:.3f} (kind right {im.recall or 0:.3f})"
        result.update({"explicit_recall": found_ex, "implicit_recall": found_im,
                       "explicit_recall_right_kind": ex.recall, "implicit_recall_right_kind": im.recall})
        # Calibration: is a reported mast cell with confidence c right about c of the time?
        conf, right = [], []
        for sc in run.scores:
            hit = {p for p, _ in sc.match.pairs}
            conf += [c.confidence for c in sc.pred]
            right += [i in hit for i in range(len(sc.pred))]
        if conf:
            import numpy as np

            from mastctl.metrics import expected_calibration_error

            conf_a, right_a = np.array(conf), np.array(right, dtype=float)
            ece = expected_calibration_error(conf_a, right_a, bins=5)
            text += f"  calibration: mean conf {conf_a.mean():.2f} vs right {right_a.mean():.2f}, ECE {ece:.3f}"
            result.update({"mean_confidence": float(conf_a.mean()), "fraction_right": float(right_a.mean()), "ece": ece})
    print(text)
    return result


def speed(images: list[Path], detector, repeat: int) -> tuple[float, float, float]:
    """(decode seconds, decode + detect seconds, megapixels) over ``images``, each time the fastest of ``repeat`` runs."""
    from mastctl import detection

    return fastest(images, repeat, lambda image: detection.detect_one(detector, image))


def finder_speed(images: list[Path], detector, repeat: int) -> tuple[float, float] | None:
    """(decode seconds, decode + the learned nucleus finder alone seconds) over ``images``, timed as :func:`speed` times
    the whole detector: the stain split, the finder's proximity map and its peaks, with the BLAS threads the detector
    runs them with. No classification: the least any detector built on this finder can take (None: no finder).

    Time it after :func:`speed`, as ``main`` does: the whole detector's larger arrays raise glibc's mmap threshold, so
    that the finder's arrays then come from the heap instead of fresh pages. In a fresh process the finder alone takes
    about 25 ms a CRC tile against 17 (the same 17 with ``MALLOC_MMAP_THRESHOLD_=33554432``); the detector, 68 ms either
    way."""
    from mastctl.morphology import stain
    from mastctl.scale import working
    from mastctl.threads import blas_for_the_nets

    finder = getattr(detector, "nuclei_net", None)
    if finder is None:
        return None

    def find(image) -> None:
        st = stain.separate(image.pixels, working(image.mpp))
        finder.peaks(finder.proximity(st), st.mpp)

    with blas_for_the_nets():
        decode_s, whole_s, _ = fastest(images, repeat, find)
    return decode_s, whole_s


def memory(images: list[Path], backend: str, options: dict) -> dict:
    """Peak memory of detecting ``images`` one after another in a fresh process (``memory_probe``); it reads the
    kernel's /proc, so elsewhere than Linux the line is skipped."""
    if not Path("/proc/self/status").exists():
        return {"skipped": "needs Linux's /proc/self/status"}
    job = json.dumps([[str(p) for p in images], backend, options])
    out = subprocess.run([sys.executable, __file__, "--backend", backend, "--memory-probe"], input=job, capture_output=True,
                         text=True)
    if out.returncode:
        raise RuntimeError(f"the memory probe failed: {out.stderr.strip()[-2000:]}")
    probe = json.loads(out.stdout.splitlines()[-1])
    peaks = {int(k): v for k, v in probe["peak_mb_after_tiles"].items()}  # (JSON keys are strings)
    return {**probe, "peak_mb_after_tiles": peaks, "growth_mb_per_tile_second_half": growth_per_tile(peaks)}


def memory_probe(images: list[str], backend: str, options: dict) -> dict:
    """Build the detector (and load torch where it runs the nets, as a run of many tiles does), then decode and detect
    each image in turn: the RSS before the first, and the process's peak RSS after tile 1, 10, half and all (MB).

    The peak is the kernel's VmHWM, which starts afresh with the process's image; not ru_maxrss, which Linux carries
    over from the parent through fork and exec (under bench/score.py, itself some 440 MB by then, every mark read 441)."""
    from mastctl import detection
    from mastctl.threads import torch_runs_the_nets

    def status_mb(field: str) -> float:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith(field + ":")) / 1024  # kB

    profile = Profile.model_validate({"backend_options": {backend: options}} if options else {})
    detector = registry.create("detector", backend, profile)
    if torch_runs_the_nets():
        import torch  # noqa: F401  (loaded by the first tile otherwise: the line counts it before detection)
    before_mb = status_mb("VmRSS")
    marks = sorted({1, min(10, len(images)), max(1, len(images) // 2), len(images)})
    peaks = {}
    for k, path in enumerate(images, 1):
        detection.detect_one(detector, imaging.load(path))
        if k in marks:
            peaks[k] = status_mb("VmHWM")
    return {"before_mb": before_mb, "peak_mb_after_tiles": peaks}


def growth_per_tile(peaks: dict[int, float]) -> float:
    """MB the peak grew a tile over the second half of the run (half -> all): about 0 where memory is bounded by the tile."""
    marks = sorted(peaks)
    half, last = marks[-2] if len(marks) > 1 else marks[-1], marks[-1]
    return (peaks[last] - peaks[half]) / (last - half) if last > half else 0.0


def fastest(images: list[Path], repeat: int, work) -> tuple[float, float, float]:
    """(decode seconds, decode + ``work(image)`` seconds, megapixels) over ``images``, each image's fastest of
    ``repeat`` runs (a busy machine adds noise, never speed)."""
    decode = {p: float("inf") for p in images}
    whole = dict(decode)
    pixels = {}
    for _ in range(repeat):
        for p in images:
            t0 = time.perf_counter()
            image = imaging.load(p)
            t1 = time.perf_counter()
            work(image)
            t2 = time.perf_counter()
            decode[p], whole[p] = min(decode[p], t1 - t0), min(whole[p], t2 - t0)
            pixels[p] = image.width * image.height
    return sum(decode.values()), sum(whole.values()), sum(pixels.values()) / 1e6


def crc_two_fold(truth, steps: int, workdir: Path, models: list[Path] | None = None, folds: int | None = None,
                 options: dict | None = None) -> dict:
    """Nucleus F1 on each CRC half with a nucleus finder fitted on the other half (or ``models``, one per fold), the
    morphology detector run with ``options`` (the command line's ``-O``) besides."""
    from mastctl.morphology import nucleinet
    from mastctl.truth import image_key

    _, halves = crc_halves()
    tp = fp = fn = 0
    for k, held_out in enumerate(halves):
        train = halves[1 - k]
        t0 = time.perf_counter()
        if models:
            net = nucleinet.NucleusNet.load(models[k])
            path, steps = models[k], net.info.get("steps", "?")
        else:
            from train_nucleus_net import fit_on  # the shipped finder's recipe (``folds`` None: its own)

            net = fit_on(train, truth, steps=steps, **({} if folds is None else {"folds": folds}))
            path = net.save(workdir / f"crc-nuclei-fold{k}.safetensors")
        fit_s = time.perf_counter() - t0
        profile = Profile.model_validate({"backend_options": {"morphology": {**(options or {}), "nuclei": str(path)}}})
        result = compare.compare(held_out, {image_key(p): truth[image_key(p)] for p in held_out}, ["morphology"], profile,
                                 radius_px=6.0, mode="cells", mpp=0.55)
        d = result.runs[0].evaluation.detection
        tp, fp, fn = tp + d.tp, fp + d.fp, fn + d.fn
        how = f"loaded from {path}" if models else f"{len(train)} training images, {steps} steps, {fit_s:.0f} s"
        print(f"{'CRC fold ' + str(k) + ' (learned nuclei)':<34} P {d.precision:.3f}  R {d.recall:.3f}  F1 {d.f1:.3f}  "
              f"({how}; peak threshold {net.peak_threshold}, chosen on {net.info.get('threshold_chosen_on', '?')})")
    p, r = tp / max(1, tp + fp), tp / max(1, tp + fn)
    f1 = 2 * p * r / max(1e-9, p + r)
    print(f"{'CRC nuclei, 2-fold learned (6 px)':<34} P {p:.3f}  R {r:.3f}  F1 {f1:.3f}  (each image scored by a finder that never saw it)")
    return {"precision": p, "recall": r, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "steps": steps}


def main() -> int:
    parser = argparse.ArgumentParser(description="Score a detector on synthetic tiles and real nuclei.")
    parser.add_argument("--backend", required=True)
    parser.add_argument("-O", "--option", action="append", default=[], help="backend option KEY=VALUE (repeatable), "
                                                                          "e.g. -O nuclei=none")
    parser.add_argument("--tiles", type=int, default=16, help="tiles per scale (two scales)")
    parser.add_argument("--seed", type=int, default=9000, help="validation seed (do not tune on it)")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workdir", type=Path, default=Path.home() / ".cache" / "mastctl" / "bench")
    parser.add_argument("--repeat", type=int, default=3, help="speed: runs per tile, the fastest kept")
    parser.add_argument("--crc-nuclei-steps", type=int, default=0, help="also fit nucleus finders on CRC halves (2-fold)")
    parser.add_argument("--crc-nuclei-folds", type=int, default=None,
                        help="with --crc-nuclei-steps: choose each finder's threshold by K-fold out-of-fold maps (K+1 fits; "
                             "0: on a held-out fifth; default: the shipped recipe's, bench/train_nucleus_net.py)")
    parser.add_argument("--crc-nuclei-models", default="",
                        help="two nucleus models (comma-separated) fitted on the even and the odd CRC halves "
                             "(bench/nuclei_cv.py's selected-fold0/1): score them instead of fitting")
    parser.add_argument("--skip-crc", action="store_true")
    parser.add_argument("--json", action="store_true", help="also print one JSON summary line")
    parser.add_argument("--memory-probe", action="store_true", help=argparse.SUPPRESS)  # memory()'s process; JSON on stdin
    args = parser.parse_args()
    if args.memory_probe:
        print(json.dumps(memory_probe(*json.loads(sys.stdin.read()))))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)  # a fresh machine has no cache folder yet

    from mastctl.commands.options import backend_options

    options = backend_options(args.option)
    profile = Profile.model_validate({"backend_options": {args.backend: options}} if options else {})
    registry.create("detector", args.backend, profile)  # fail early, with the registry's message
    summary: dict = {"backend": args.backend}
    all_images: list[Path] = []
    for mpp in (0.5, 0.25):
        folder = synthetic_set(args.workdir, args.seed, args.tiles, args.size, mpp)
        images = sorted(folder.glob("*_he.png"))
        truth = load_truth(folder)
        all_images += images
        for mode, radius in (("mast", 5.0), ("cells", 5.0)):
            result = compare.compare(images, truth, [args.backend], profile, radius_um=radius, mode=mode)
            run = result.runs[0]
            title = f"synthetic {mpp} um/px, {'mast cells' if mode == 'mast' else 'all nuclei'}"
            summary[f"synthetic_{mpp}_{mode}"] = line(title, run, kinds=mode == "mast")
    decode_s, end_to_end_s, megapixels = speed(all_images, registry.create("detector", args.backend, profile), args.repeat)
    summary["detect_over_decode"] = end_to_end_s / decode_s
    summary["decode_s"], summary["detect_end_to_end_s"] = decode_s, end_to_end_s
    print(f"{'speed':<34} decode + detect {end_to_end_s:.2f} s / decode {decode_s:.2f} s = {summary['detect_over_decode']:.2f}x "
          f"({len(all_images)} tiles, {megapixels:.1f} MP, one process)")

    if not args.skip_crc:
        if not CRC.exists():
            print(f"{'CRC nuclei':<34} skipped: {CRC} not found")
        else:
            truth = load_truth(CRC / "points.csv", classes=["detection"])
            crc_images = sorted((CRC / "images").glob("*.png"))
            detector = registry.create("detector", args.backend, profile)
            decode_s, end_to_end_s, megapixels = speed(crc_images, detector, args.repeat)
            summary["crc_detect_over_decode"] = end_to_end_s / decode_s
            print(f"{'speed, CRC tiles':<34} decode + detect {end_to_end_s:.2f} s / decode {decode_s:.2f} s = "
                  f"{summary['crc_detect_over_decode']:.2f}x ({len(crc_images)} real tiles, {megapixels:.1f} MP, one process)")
            floor = finder_speed(crc_images, detector, args.repeat)  # after speed(): its docstring
            if floor is not None:  # what the 3x target leaves room for: the finder alone, nothing classified
                summary["crc_finder_alone_over_decode"] = floor[1] / floor[0]
                print(f"{'':<34} the nucleus finder alone (stain split, map, peaks; no classes): "
                      f"{floor[1]:.2f} s / {floor[0]:.2f} s = {summary['crc_finder_alone_over_decode']:.2f}x")
            summary["crc_memory"] = mem = memory(crc_images, args.backend, options)
            if "skipped" in mem:
                print(f"{'peak memory, CRC tiles':<34} skipped: {mem['skipped']}")
            else:
                peaks = sorted(mem["peak_mb_after_tiles"].items())
                marks = ", ".join(f"{k} tile{'s' * (k > 1)} {v:.0f}" for k, v in peaks)
                print(f"{'peak memory, CRC tiles':<34} {mem['before_mb']:.0f} MB before detection (imports, models); "
                      f"peak after {marks} MB: {mem['growth_mb_per_tile_second_half']:+.2f} MB a tile over the second "
                      "half (fresh process)")
            result = compare.compare([CRC / "images"], truth, [args.backend], profile, radius_px=6.0, mode="cells", mpp=0.55)
            own = getattr(getattr(detector, "options", None), "nuclei", None) == "builtin"
            # the shipped nucleus finder was fitted on these 50 images: only the two-fold line measures transfer
            summary["crc_nuclei"] = line("CRC nuclei (6 px, fitted on them)" if own else "CRC nuclei (6 px)", result.runs[0],
                                         kinds=False)
            if own and not (args.crc_nuclei_steps or args.crc_nuclei_models):
                print(f"{'':<34} (the default's finder learned these images: for transfer, --crc-nuclei-models with "
                      "bench/train_nucleus_net.py --two-fold DIR)")
            models = [Path(m) for m in args.crc_nuclei_models.split(",") if m]
            if models and len(models) != 2:
                parser.error("--crc-nuclei-models takes two files: the finders for fold 0 and fold 1")
            if args.crc_nuclei_steps or models:
                summary["crc_nuclei_2fold"] = crc_two_fold(truth, args.crc_nuclei_steps, args.workdir, models,
                                                           args.crc_nuclei_folds,
                                                           options if args.backend == "morphology" else None)
    if args.json:
        print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
