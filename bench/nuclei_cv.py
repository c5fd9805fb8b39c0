"""Nested cross-validation of nucleus-finder recipes on ../shared/data/crc_nuclei.

Which training recipe for `finetune nuclei` (width, batch, steps) should a user
run? Choosing by the CRC test halves would tune on the test set, and a
5-image held-out split proved too noisy to choose by. So, for each outer fold
of bench/score.py's two-fold split (train on one half, test on the other):

1. inner: the 25 training images in K folds (K = 5); for every recipe, K fits
   on K-1 folds each map the held-out fold, so every training image gets an
   out-of-fold map; peaks are counted at each threshold of
   ``nucleinet.THRESHOLDS`` (hit within 3 um) and summed over the 25 images;
2. a recipe's inner score is the F1 at its best threshold; the recipe with the
   best inner score is selected (a cheaper one wins within 0.002);
3. final: every recipe is fitted once more on all 25 training images, with the
   threshold from its inner maps (``nucleinet.fit(folds=K)`` does 1-3 for one
   recipe); its models are saved, and each one's raw-peak F1 on the other,
   untouched half is printed for information only.

The test halves choose nothing. Score the selected models with the whole
detector (the issue's measure, 6 px): ``python bench/score.py --backend
morphology --crc-nuclei-models OUT/selected-fold0.safetensors,OUT/selected-fold1.safetensors``.

Every fit is independent, so they run in parallel worker processes sharing one
GPU. Measured on one H100 with 8 workers: a 3000-step fit of the shipped recipe
takes 81 s while 8 run at once (each small step is launch-bound), so the first
two recipes (24 fits) took 9.5 minutes; on this project's 2-core laptops one
such fit takes about 11 minutes. --deadline-s stops starting fits, and a recipe
whose inner folds did not all finish is not a candidate.

    python bench/nuclei_cv.py --out /tmp/cv --workers 6 [--deadline-s 420]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import sys
import tarfile
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

CRC = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "crc_nuclei"


@dataclass(frozen=True)
class Recipe:
    name: str
    width: int
    batch: int
    steps: int

    @property
    def cost(self) -> float:  # patches x channels^2, a rough order of training work
        return self.steps * self.batch * self.width**2


# Declared before any run; "w16-b8-3k" is the recipe shipped so far.
RECIPES = [Recipe("w16-b8-3k", 16, 8, 3000), Recipe("w16-b16-6k", 16, 16, 6000),
           Recipe("w32-b8-3k", 32, 8, 3000), Recipe("w32-b16-6k", 32, 16, 6000)]

_EXAMPLES: list = []


def crc_halves(folder: Path = CRC) -> tuple[list[Path], list[list[Path]]]:
    """The CRC images in number order, and the two halves: fold k is scored on halves[k] and fitted on the other."""
    images = sorted((folder / "images").glob("*.png"), key=lambda p: int("".join(c for c in p.stem if c.isdigit()) or 0))
    return images, [images[1::2], images[0::2]]


def _init(examples_path: str, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _EXAMPLES.extend(pickle.loads(Path(examples_path).read_bytes()))  # our own file, written by main() just now


def _job(recipe: Recipe, train_idx: list[int], eval_idx: list[int], seed: int, device: str, keep_model: bool) -> dict:
    """Fit ``recipe`` on ``train_idx``; match counts on ``eval_idx``; the weights when asked."""
    from mastctl.morphology import nucleinet as N

    t0 = time.perf_counter()
    module = N.train([_EXAMPLES[i] for i in train_idx], steps=recipe.steps, width=recipe.width, batch=recipe.batch,
                     seed=seed, device=device)
    fit_s = time.perf_counter() - t0
    net = N.NucleusNet.from_module(module, recipe.width, float(np.median([e.st.mpp for e in _EXAMPLES])), 0.3)
    counts = N.match_counts(net, [_EXAMPLES[i] for i in eval_idx])
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()} if keep_model else None
    return {"counts": counts, "fit_s": fit_s, "state": state}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=CRC)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--recipes", default=",".join(r.name for r in RECIPES))
    parser.add_argument("--inner-folds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) // 2))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply every recipe's steps (smoke tests)")
    parser.add_argument("--deadline-s", type=float, default=0, help="start no fit after this many seconds (0: none)")
    args = parser.parse_args()

    from mastctl.morphology import nucleinet as N
    from mastctl.truth import load_truth

    t_start = time.perf_counter()
    declared = {r.name: r for r in RECIPES}
    unknown = [n for n in args.recipes.split(",") if n not in declared]
    if unknown:
        parser.error(f"no recipe {', '.join(unknown)}; declared: {', '.join(declared)}")
    recipes = [Recipe(r.name, r.width, r.batch, max(1, int(r.steps * args.steps_scale)))
               for r in (declared[n] for n in args.recipes.split(","))]
    cost = {r.name: r.cost for r in recipes}
    args.out.mkdir(parents=True, exist_ok=True)
    truth = load_truth(args.data / "points.csv", classes=["detection"])
    images, image_halves = crc_halves(args.data)
    examples = N.examples_from_annotations(images, truth, mpp=0.55)
    index = {e.name: i for i, e in enumerate(examples)}
    halves = [[index[p.name] for p in half] for half in image_halves]
    pickled = Path(tempfile.mkdtemp()) / "examples.pkl"  # for the workers; never left in --out
    pickled.write_bytes(pickle.dumps(examples))
    device = N.device_for(args.device)
    print(f"{len(examples)} images prepared in {time.perf_counter() - t_start:.0f} s; device {device}, "
          f"{args.workers} workers", flush=True)

    jobs = []  # (recipe, outer fold, inner fold or None, train, eval)
    for recipe in recipes:
        for k in (0, 1):
            test, train = halves[k], halves[1 - k]
            for j, (rest, held) in enumerate(N.fold_splits(len(train), args.inner_folds)):  # as fit(folds=K) splits
                jobs.append((recipe, k, j, [train[i] for i in rest], [train[i] for i in held]))
            jobs.append((recipe, k, None, train, test))

    results: dict = {}
    states: dict = {}
    counts_so_far: dict[str, list] = {}  # what a cut-off run still leaves, in counts.json
    skipped = 0
    spawn = multiprocessing.get_context("spawn")  # never fork a process that has torch (or CUDA) loaded
    with ProcessPoolExecutor(args.workers, mp_context=spawn, initializer=_init, initargs=(str(pickled), 2)) as pool:
        pending = {}
        queue = list(jobs)
        while queue or pending:
            while queue and len(pending) < args.workers:
                if args.deadline_s and time.perf_counter() - t_start > args.deadline_s:
                    skipped += len(queue)
                    queue.clear()
                    break
                recipe, k, j, train, ev = queue.pop(0)
                seed = 0 if j is None else 1 + j
                pending[pool.submit(_job, recipe, train, ev, seed, device, j is None)] = (recipe, k, j)
            if not pending:
                break
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                recipe, k, j = pending.pop(fut)
                out = fut.result()
                key = (recipe.name, k)
                slot = results.setdefault(key, {"inner": {}, "final": None, "fit_s": []})
                slot["fit_s"].append(out["fit_s"])
                if j is None:
                    slot["final"] = out["counts"]
                    states[key] = out["state"]
                else:
                    slot["inner"][j] = out["counts"]
                counts_so_far[f"{recipe.name} {k} {'final' if j is None else f'inner{j}'}"] = out["counts"].tolist()
                (args.out / "counts.json").write_text(json.dumps(counts_so_far))
                print(f"[{time.perf_counter() - t_start:5.0f} s] {recipe.name} outer {k} "
                      f"{'final' if j is None else 'inner ' + str(j)}: fit {out['fit_s']:.0f} s", flush=True)
    pickled.unlink()

    summary = {"recipes": [asdict(r) for r in recipes], "inner_folds": args.inner_folds, "device": device,
               "thresholds": N.THRESHOLDS.tolist(), "skipped_jobs": skipped, "folds": {}}
    models = []
    for k in (0, 1):
        fold = {}
        for recipe in recipes:
            slot = results.get((recipe.name, k))
            if not slot or len(slot["inner"]) < args.inner_folds:
                continue
            inner = sum(slot["inner"].values())
            threshold, inner_f1 = N.best_threshold(inner)
            entry = {"inner_f1": inner_f1, "threshold": threshold, "inner_f1_curve": N.f1_by_threshold(inner).round(4).tolist(),
                     "mean_fit_s": float(np.mean(slot["fit_s"]))}
            if slot["final"] is not None:
                i = N.THRESHOLDS.tolist().index(threshold)
                entry["test_peak_f1_info_only"] = float(N.f1_by_threshold(slot["final"])[i])
                work_mpp = float(np.median([examples[i].st.mpp for i in halves[1 - k]]))
                state = {name: t.numpy() for name, t in states[(recipe.name, k)].items()}
                net = N.NucleusNet(state, recipe.width, work_mpp, threshold,
                                   {"recipe": recipe.name, "steps": recipe.steps, "batch": recipe.batch,
                                    "folds": args.inner_folds, "val_f1": round(inner_f1, 4),
                                    "val_radius_um": N.VAL_RADIUS_UM, "train_images": len(halves[1 - k]),
                                    "threshold_chosen_on": f"{args.inner_folds}-fold out-of-fold maps (bench/nuclei_cv.py)"})
                models.append(net.save(args.out / f"{recipe.name}-fold{k}.safetensors"))
            fold[recipe.name] = entry
        ranked = sorted(fold, key=lambda n: -fold[n]["inner_f1"])
        best = fold[ranked[0]]["inner_f1"] if fold else 0
        pick = min((n for n in fold if fold[n]["inner_f1"] >= best - 0.002), key=lambda n: cost[n], default=None)
        summary["folds"][k] = {"recipes": fold, "ranked_by_inner_f1": ranked, "selected": pick}
        for name in ranked:
            entry = fold[name]
            print(f"outer fold {k}  {name:<12} inner F1 {entry['inner_f1']:.4f} at {entry['threshold']:.2f}  "
                  f"(test peaks, info only: {entry.get('test_peak_f1_info_only', float('nan')):.4f})"
                  f"{'  <- selected' if name == pick else ''}")
        if pick and (args.out / f"{pick}-fold{k}.safetensors").exists():
            (args.out / f"selected-fold{k}.safetensors").write_bytes((args.out / f"{pick}-fold{k}.safetensors").read_bytes())
    with tarfile.open(args.out / "models.tar", "w") as tar:
        for path in models:
            tar.add(path, arcname=path.name)
            path.unlink()
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"done in {time.perf_counter() - t_start:.0f} s; {skipped} fits skipped by the deadline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
