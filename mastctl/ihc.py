"""IHC as the teacher: DAB-positive cells, and their transfer onto the H&E section.

``detect_dab``: hematoxylin/DAB colour deconvolution with the image's own
vectors (standard ones as fallback), cells (nuclei and DAB-filled cell bodies)
from the summed optical density split by seeded watershed, each cell's mean
DAB over its object and a 3 um rim, and an adaptive positivity threshold
(Otsu between the cells' DAB means, never below ``min_dab``) — the way
QuPath's positive cell detection reports a positive percentage.

``transfer``: register the pair, map IHC-positive cells onto H&E pixels, and
label them with the H&E detector's view: explicit where it sees a mast cell,
implicit where IHC is positive but H&E evidence is weak; H&E "mast cells"
without IHC support are listed as likely false positives. The output is a
``mastctl/detections@1`` document, so compare and finetune read it as truth.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mastctl import stains
from mastctl.cells import Cell, Detections
from mastctl.morphology import segment, stain
from mastctl.registration import Registration, estimate_h_dab, register
from mastctl.scale import working

if TYPE_CHECKING:
    from mastctl.imaging import Image

MAST_MARKERS = ("tryptase", "cd117")
MARKERS = MAST_MARKERS + ("ki67", "other")
TRANSFER_RADIUS_UM = 4.0
MAX_THRESHOLD = 0.6  # OD; Otsu above this splits strong from very strong positives
# Brown objects are bigger than bare nuclei, so their watershed seeds lie further apart:
# whole mast cells (10-16 um) for cytoplasmic markers, nuclei (6-10 um) for the others.
SEED_SCALE = {"tryptase": 2.2, "cd117": 2.2}
DEFAULT_SEED_SCALE = 1.3
CELL_RIM_UM = 3.0  # DAB is measured over the object and this rim


@dataclass
class DabResult:
    cells: list[Cell]  # every cell; positive ones labelled per the marker
    positive: int
    total: int
    threshold: float
    vectors_estimated: bool

    @property
    def positive_pct(self) -> float | None:
        return 100.0 * self.positive / self.total if self.total else None


def detect_dab(pixels: np.ndarray, mpp: float, *, marker: str = "tryptase", min_dab: float = 0.15,
               threshold: float | None = None, min_area_um2: float = 12.0) -> DabResult:
    """Every cell with its mean DAB, positive ones marked (see the module doc)."""
    from scipy import ndimage as ndi

    est = estimate_h_dab(pixels)
    vectors = est or (stains.unit(stains.HEMATOXYLIN), stains.unit(stains.DAB))
    st = stain.separate_with(pixels, mpp, vectors)
    # Two kinds of object, each above its own threshold (strong DAB must not raise the bar for
    # pale negative nuclei): brown cells (DAB bodies, split by watershed) and blue nuclei; a
    # nucleus inside a brown cell is that cell's, not another one.
    dab_map = np.clip(st.e, 0, None)  # e holds DAB here
    d_thr = max(min_dab, segment.adaptive_threshold(dab_map))
    brown = segment.segment(dataclasses.replace(st, h=dab_map), min_area_um2=min_area_um2, threshold=d_thr,
                      scale=SEED_SCALE.get(marker, DEFAULT_SEED_SCALE))
    blue = segment.segment(st, min_area_um2=min_area_um2 * 0.6)
    if brown.count:
        # a blue nucleus mostly under a brown cell belongs to it
        covered = np.bincount(blue.labels.ravel(), weights=(brown.labels.ravel() > 0), minlength=blue.count + 1)[1:]
        size = np.bincount(blue.labels.ravel(), minlength=blue.count + 1)[1:]
        inside = covered > 0.3 * np.maximum(size, 1)
        keep = np.flatnonzero(~inside) + 1
        lut = np.zeros(blue.count + 1, np.int32)
        lut[keep] = np.arange(brown.count + 1, brown.count + 1 + len(keep), dtype=np.int32)
        labels = np.where(brown.labels > 0, brown.labels, lut[blue.labels])
        nuc = segment.Nuclei(labels, brown.count + len(keep), np.vstack([brown.xy, blue.xy[~inside]]))
    else:
        nuc = blue
    if nuc.count == 0:
        return DabResult([], 0, 0, threshold or min_dab, est is not None)
    # Mean DAB per cell, over the object and a rim around it (brown cytoplasm around a blue
    # nucleus counts). Measuring the nucleus alone for Ki67 scored worse on the DeepLIIF tiles.
    dist, (ir, ic) = ndi.distance_transform_edt(nuc.labels == 0, return_indices=True)
    owner = np.where(dist * st.mpp <= CELL_RIM_UM, nuc.labels[ir, ic], 0).ravel()
    n = np.bincount(owner, minlength=nuc.count + 1)[1:]
    mean_dab = np.bincount(owner, weights=dab_map.ravel(), minlength=nuc.count + 1)[1:] / np.maximum(n, 1)
    if threshold is None:
        threshold = adaptive_dab_threshold(mean_dab, min_dab)
    positive = mean_dab >= threshold
    xy = nuc.xy * st.factor
    area = np.bincount(nuc.labels.ravel(), minlength=nuc.count + 1)[1:] * st.mpp**2
    cells = []
    for (x, y), d, pos, a in zip(xy, mean_dab, positive, area):
        feats = {"dab_mean": float(d), "positive": 1.0 if pos else 0.0, "area_um2": float(a)}
        confidence = float(np.clip(0.5 + (d - threshold) / (2 * max(threshold, 1e-3)), 0.0, 1.0))
        label = "mast_cell" if pos and marker in MAST_MARKERS else "other"
        cells.append(Cell(float(x), float(y), label, None, confidence if pos else 1.0 - confidence, feats))
    return DabResult(cells, int(positive.sum()), nuc.count, float(threshold), est is not None)


def adaptive_dab_threshold(mean_dab: np.ndarray, min_dab: float) -> float:
    """Otsu between negative and positive cells' DAB, never below ``min_dab``; no DAB at all -> min_dab."""
    from skimage.filters import threshold_otsu

    if len(mean_dab) < 4 or float(mean_dab.max()) < min_dab or np.ptp(mean_dab) < 1e-6:
        return min_dab
    return float(min(max(threshold_otsu(mean_dab), min_dab), MAX_THRESHOLD))


@dataclass
class Transfer:
    detections: Detections  # on the H&E image: transferred mast cells (+ the H&E detector's other cells)
    registration: Registration
    ihc_positive: int
    likely_false_positives: list[Cell] = field(default_factory=list)
    ihc_path: str = ""

    def to_dict(self) -> dict[str, Any]:
        doc = self.detections.to_dict(all_cells=True)
        doc["ihc"] = {"path": self.ihc_path, "positive_cells": self.ihc_positive}
        doc["transform"] = self.registration.to_dict()
        doc["likely_false_positives"] = [c.to_dict() for c in self.likely_false_positives]
        return doc


def transfer(he: Image, ihc: Image, he_detections: Detections, *, marker: str = "tryptase",
             radius_um: float = TRANSFER_RADIUS_UM, keep_other_cells: bool = True) -> Transfer:
    """IHC-positive cells as labelled mast cells on the H&E image (see the module doc).

    ``he_detections``: every cell the H&E detector found (``mastctl.detection.detect_image``).
    """
    from mastctl.metrics import match

    mpp_he = working(he.mpp)
    mpp_ihc = ihc.mpp or mpp_he
    reg = register(he.pixels, ihc.pixels, mpp_he, mpp_ihc)
    dab = detect_dab(ihc.pixels, mpp_ihc, marker=marker)
    positives = [c for c in dab.cells if c.features.get("positive")]
    pos_he = reg.ihc_to_he([(c.x, c.y) for c in positives]) if positives else np.zeros((0, 2))
    inside = (pos_he[:, 0] >= 0) & (pos_he[:, 0] < he.width) & (pos_he[:, 1] >= 0) & (pos_he[:, 1] < he.height)
    he_cells = list(he_detections.cells)
    m = match(pos_he, [(c.x, c.y) for c in he_cells], radius_um / mpp_he)
    seen = {p: t for p, t in m.pairs}
    used_he: set[int] = set()
    cells: list[Cell] = []
    for i, ihc_cell in enumerate(positives):
        if not inside[i]:
            continue
        dab_feats = {"ihc_dab": ihc_cell.features["dab_mean"]}
        j = seen.get(i)
        if j is not None and he_cells[j].is_mast_cell and he_cells[j].kind != "implicit":
            c = he_cells[j]
            cells.append(Cell(c.x, c.y, "mast_cell", "explicit", c.confidence, {**dict(c.features), **dab_feats}))
            used_he.add(j)
        elif j is not None:
            c = he_cells[j]  # the H&E nucleus is there, but it does not look like a mast cell: implicit
            cells.append(Cell(c.x, c.y, "mast_cell", "implicit", ihc_cell.confidence, {**dict(c.features), **dab_feats}))
            used_he.add(j)
        else:
            x, y = pos_he[i]
            cells.append(Cell(float(x), float(y), "mast_cell", "implicit", ihc_cell.confidence, dab_feats))
    false_pos = [c for j, c in enumerate(he_cells) if c.is_mast_cell and j not in used_he]
    if keep_other_cells:
        cells += [c for j, c in enumerate(he_cells) if j not in used_he and not c.is_mast_cell]
    det = Detections(image=he.info, backend=f"ihc-transfer:{he_detections.backend}", cells=tuple(cells))
    return Transfer(det, reg, len(positives), false_pos, ihc.path)


class DabDetector:
    """DAB-positive cells as a Detector: positives only, or every cell with ``all_cells``."""

    def __init__(self, marker: str = "tryptase", threshold: float | None = None, all_cells: bool = False) -> None:
        self.name = f"ihc-dab:{marker}"
        self.marker, self.threshold, self.all_cells = marker, threshold, all_cells

    def detect(self, image: Image) -> Detections:
        result = detect_dab(image.pixels, working(image.mpp), marker=self.marker, threshold=self.threshold)
        cells = result.cells if self.all_cells else [c for c in result.cells if c.features.get("positive")]
        return Detections(image=image.info, backend=self.name, cells=tuple(cells))


def positive_summary(det: Detections) -> dict[str, Any]:
    """Counts of a DabDetector result (positive % needs every cell, i.e. --all-cells)."""
    positive = sum(1 for c in det.cells if c.features.get("positive"))
    total = len(det.cells)
    return {"cells": total, "positive": positive, "positive_pct": round(100 * positive / total, 2) if total else None}


# --------------------------------------------------------------------------- batches of pairs


@dataclass(frozen=True)
class PairJob:
    he: Path
    ihc: Path
    output: Path


def pair_jobs(pairs: Path, folder: Path) -> list[PairJob]:
    """One job per row of a pairs CSV (columns he, ihc; paths relative to the CSV): labels go to FOLDER/<he stem>.json."""
    from mastctl.errors import UsageError
    from mastctl.tables import read_table

    if folder.exists() and not folder.is_dir():
        raise UsageError(f"-o {folder}: with --pairs, -o is a folder")
    if not folder.exists() and folder.suffix.lower() == ".json":  # not a folder named labels.json
        raise UsageError(f"-o {folder} names one file, but --pairs writes a labels file per pair: give a folder "
                         f"(-o {folder.with_suffix('')}/)")
    jobs, seen = [], set()
    for row in read_table(pairs, ("he", "ihc")):
        he, ihc = pairs.parent / row.get("he"), pairs.parent / row.get("ihc")
        target = folder / f"{he.stem}.json"
        if target in seen:
            raise UsageError(f"{pairs}:{row.line}: two pairs would write {target}: H&E images need distinct names")
        seen.add(target)
        jobs.append(PairJob(he, ihc, target))
    return jobs


def run_pairs(jobs: list[PairJob], settings, detector, *, marker: str, keep_going: bool,
              on_error=None, on_done=None) -> list[dict[str, Any]]:
    """Transfer each pair (the H&E through the one detection flow), writing its labels; rows of what was found.

    With ``keep_going`` a failing pair is reported (``on_error(job, exc)``) and the others still run.
    """
    import json

    from mastctl import detection, imaging
    from mastctl.errors import MastctlError
    from mastctl.writers import atomic_write

    rows = []
    for job in jobs:
        try:
            he_det = detection.detect_image(job.he, settings, detector)
            a = imaging.load(job.he, mpp=settings.mpp, max_pixels=settings.max_pixels)
            if a.mpp is None:
                a = dataclasses.replace(a, mpp=he_det.image.mpp)
            b = imaging.load(job.ihc, mpp=settings.mpp, max_pixels=settings.max_pixels)
            result = transfer(a, b, he_det, marker=marker)
            text = json.dumps(result.to_dict(), indent=1) + "\n"
            atomic_write(job.output, lambda fh, text=text: fh.write(text.encode()))
            s = result.detections.summary()
            rows.append({"he": str(job.he), "ihc": str(job.ihc), "output": str(job.output), "mast_cells": s.mast_cells,
                         "explicit": s.explicit, "implicit": s.implicit, "ihc_positive": result.ihc_positive,
                         "likely_false_positives": len(result.likely_false_positives),
                         "registration_quality": round(result.registration.ncc, 3), "he_mpp": he_det.image.mpp})
        except MastctlError as exc:
            if not keep_going:
                raise
            if on_error:
                on_error(job, exc)
        if on_done:
            on_done(job)
    return rows
