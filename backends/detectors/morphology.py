"""`morphology`: the default detector — offline, CPU, no downloaded weights.

Stain separation with the image's own H&E vectors (Macenko; standard vectors on
near-empty tissue), nuclei found by a small learned finder fitted on real
colorectal nuclei (``nuclei``; ``-O nuclei=none``: the seeds alone), regions
from the hematoxylin channel split by seeded watershed, criteria features per
region (see mastctl/morphology/measure.py),
and a calibrated per-nucleus classifier: the built-in criteria model, or one
fitted to your annotations with `mastctl finetune morphology` and passed as
``--option model=model.json`` (or ``backend_options.morphology.model``), with a
second opinion from the built-in mast-cell crop net (``mast_net``; ``-O
mast_net=none`` turns it off): a nucleus is a mast cell when either is sure (and the net does
not veto it: ``net_veto``, ``net_veto_explicit``), or
when the net half-believes it among neighbours it believes (``sheet``).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mastctl.cells import Detections
from mastctl.errors import InputError
from mastctl.scale import working

# The crop net's view margin (``-O mast_net_view_margin``; ``MastNet.view_margin``): a mast call on its views' mean holds
# only where every view lies within this many logits of the decision point. Shipped on 2026-12-07 with the criteria model
# fitted on a blurrier camera (bench/calibrate_morphology.py --focus-um), the pair chosen together by a rule declared
# before it ran (README, "What the development style's errors come from"). Swept again with those criteria on 2026-12-08
# (0.5, 1.0, 1.5, none; the second renderer's choose seed weighed as much as washed): only 0.5 did better on the synthetic
# sets, and it cost the ccMCT tb2 (0.714 against 0.745; README, "Tried next").
VIEW_MARGIN = 0.75

MAX_MPP = 1.2  # coarser than this (below about 8x), a 7 um nucleus spans fewer than 6 pixels

if TYPE_CHECKING:
    from mastctl.imaging import Image
    from mastctl.profile import Profile


class MorphologyDetector:
    name = "morphology"
    requires = ("scipy", "skimage")
    install_hint = "pip install scikit-image scipy"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model: str | None = Field(None, description="Model JSON from `mastctl finetune morphology`; null: the built-in criteria model.")
        normalize: bool = Field(False, description="Re-stain each image to the reference H&E first (Macenko); a model fitted with --normalize turns it on.")
        stain_vectors: list[list[float]] | None = Field(None, description="Fixed [hematoxylin, eosin] OD vectors (a slide sets them once for all its tiles).")
        nucleus_threshold: float | None = Field(None, gt=0, description="Fixed hematoxylin threshold of nuclei (likewise).")
        cast_od: list[float] | None = Field(None, min_length=3, max_length=3, description="Fixed colour cast, optical density of R, G, B (0-0.25), taken out before the mast-cell net reads an image (likewise; null: each image's own, from its brightest pixels).")
        nuclei: str | None = Field("builtin", description="The nucleus finder: 'builtin' (the shipped learned finder, fitted on real colorectal nuclei; README), a model from `mastctl finetune nuclei` (safetensors), or 'none' (-O nuclei=none; null in a profile): the stain threshold and seeds alone (faster; they miss pale, crowded tumour nuclei).")
        nuclei_flips: bool = Field(False, description="Average the learned nucleus finder's map over the four flips of each image: more nuclei found right (CRC two-fold nucleus F1 0.798 -> 0.803, README) for three times the finder's work (detection about 1.6x as slow).")
        found_min_h_over_e: float = Field(0.5, ge=0, description="A nucleus only the learned finder found (no stain-threshold region under it) is kept when its centre reads at least this much hematoxylin per eosin: the finder, fitted on colorectal cancer, also fires on the eosin-dense collagen of a dermis (README). 0: keep them all.")
        net_veto: float = Field(0.07, ge=0, lt=0.5, description="The mast-cell net overrules a mast call of the built-in criteria classifier when its own P(mast) is below this: the criteria learned the synthetic renderer and, on stains they never saw, take lymphocytes and plasma cells for mast cells (README). 0: never; off with a `model` of your own unless set.")
        net_veto_explicit: float = Field(0.3, ge=0, le=0.5, description="The mast-cell net overrules an explicit mast call of the built-in criteria classifier (a cell they say H&E shows: granular, purple cytoplasm; the net should see it too) when its own P(mast) is below this, or below net_veto if larger; implicit calls (the IHC shows them, H&E barely) keep net_veto. Applies where the veto is on (net_veto > 0; README).")
        mast_threshold: float | None = Field(None, gt=0, le=1, description="Report a mast cell from this probability on (null: the model's; the mast-cell net's own decision point is moved onto it); higher = fewer, surer cells.")
        sheet: bool = Field(True, description="The sheet rule: a cell the mast-cell net half-believes (P >= 0.1 on its own scale) among neighbours it believes (median >= 0.2 of its 6 nearest within 20 um) is a mast cell: neoplastic mast cells grow in sheets where the net is short of sure of each (README). -O sheet=false: each cell on its own.")
        mast_net: str | None = Field("builtin", description="The mast-cell crop net, a second opinion on which nuclei are mast cells (a cell is one when the net or the criteria classifier is sure of it): 'builtin' (trained on synthetic and real tissue; README), an .npz from bench/train_mast_net.py, or 'none' (-O mast_net=none; null in a profile): the criteria classifier alone (faster; it does not recognise real mast cell tumour cells).")
        mast_net_views: Literal[1, 2, 4, 8] = Field(8, description="The crop net's opinion of a cell it is unsure of (within 3 logits of its decision point) is the mean over this many of the crop's turns and flips (1: the crop as it is; 2: and its half turn; 4: and its mirror images; 8: and the quarter turns'). The built-in net's threshold (0.4) was chosen by its rule for eight; against one view at its old threshold (0.5) the detector calls 0.770 of the ccMCT tb2 cells mast against 0.640 and scores 0.871 against 0.883 on the development style, at about 1.4 times the crop net's work on a CRC tile and up to eight times on a mast cell tumour's (README).")
        mast_net_threshold: float | None = Field(None, gt=0, lt=1, description="The crop net's own decision point, its P(mast) on the scale it was trained on (null: the net's own; 0.4 for the built-in, chosen by its rule). Its veto and the sheet rule's bounds, set on that scale, move with it as they move with mast_threshold. Higher = the net promotes and upholds fewer cells: fewer calls in normal tissue and fewer real tumour cells (0.5: the normal skin's calls 5 -> 2 and ccMCT vb0 0.744 -> 0.614 of the cells), while the styles no model saw barely gain (README).")
        mast_net_view_margin: float | None = Field(VIEW_MARGIN, gt=0, description="The crop net makes or upholds a mast call on the mean of its views only where every view it read lies within this many logits of its decision point; otherwise it is held just short of it (still a half-believed cell for the sheet rule). Views that disagree are the net unsure, as under a stain it never saw. 0.75 (since 2026-12-07, chosen with the criteria model fitted on a blurrier camera; README); none: the mean alone. Needs the views (mast_net_views > 1): with one view it does not apply.")
        net_precision: Literal["auto", "float32", "bfloat16"] = Field("auto", description="What torch computes the nets (the finder, the crop net) in: 'auto' is bfloat16 on a CPU with AMX tiles (Intel Sapphire Rapids and later: the nets several times faster, detection of CRC tiles about a quarter faster; 99.5% or more of the cells within 1 px with the same label; README) and float32 elsewhere; 'float32' gives the same cells on every machine. numpy (no torch, or a run of a megapixel or less) always computes in float32.")

        @field_validator("mast_net", "nuclei", "mast_net_view_margin", mode="before")
        @classmethod
        def _none_is_off(cls, value):
            return None if isinstance(value, str) and value.strip().lower() in ("none", "off", "") else value

    def __init__(self, options: Options | None = None, profile: Profile | None = None) -> None:
        from mastctl.morphology import model_path_or_default

        self.options = options or self.Options()
        self.model = model_path_or_default(self.options.model)
        self._normalize = self.options.normalize or bool(self.model.info.get("normalize"))
        self.mast_net = None
        choice = self.options.mast_net
        if choice == "builtin":
            from mastctl.morphology.mastnet import default_net

            self.mast_net = default_net()
        elif choice is not None:
            from mastctl.morphology.mastnet import MastNet

            self.mast_net = MastNet.load(choice)
        self.nuclei_net = None
        if self.options.nuclei == "builtin":
            from mastctl.morphology.nucleinet import default_net as default_nuclei

            self.nuclei_net = default_nuclei()
        elif self.options.nuclei is not None:
            from mastctl.morphology.nucleinet import NucleusNet

            self.nuclei_net = NucleusNet.load(self.options.nuclei)
        for net in (self.mast_net, self.nuclei_net):
            if net is not None:
                net.precision = self.options.net_precision  # resolved where torch runs them (threads.net_precision)
        if self.mast_net is not None:
            self.mast_net.views = self.options.mast_net_views
            if self.options.mast_net_threshold is not None:  # logit_shift is the logit of the net's decision point
                t = self.options.mast_net_threshold
                self.mast_net.logit_shift = math.log(t / (1 - t))
            margin = self.options.mast_net_view_margin
            if margin is not None and self.options.mast_net_views == 1 and self._set("mast_net_view_margin"):
                raise InputError("mast_net_view_margin compares the crop net's views, and mast_net_views=1 reads one")
            self.mast_net.view_margin = margin  # (the default's: it applies only where views are read)
        elif self.options.mast_net_threshold is not None or (self.options.mast_net_view_margin is not None
                                                               and self._set("mast_net_view_margin")):
            raise InputError("mast_net_threshold and mast_net_view_margin set how the crop net decides, and mast_net=none "
                             "turns the net off")
        if self.nuclei_net is not None:
            self.nuclei_net.flips = self.options.nuclei_flips
        elif self.options.nuclei_flips:
            raise InputError("nuclei_flips averages the learned nucleus finder's map, and nuclei=none turns the finder off")

    def _set(self, option: str) -> bool:
        """Whether ``option`` was given (a profile or -O), not left at its default."""
        return option in self.options.model_fields_set

    @property
    def net_veto(self) -> float:
        """The crop net's veto over the classifier's mast calls: the built-in criteria learned the renderer, a model
        fitted to your own labels did not, so with ``model`` it is off unless ``net_veto`` is set."""
        o = self.options
        return o.net_veto if o.model is None or "net_veto" in o.model_fields_set else 0.0

    @property
    def mast_threshold(self) -> float:
        """P(mast) from which a nucleus is reported as a mast cell (CandidateDetector)."""
        if self.options.mast_threshold:
            return self.options.mast_threshold
        return self.model.mast_threshold or 0.5  # the net's opinion is moved onto this scale (classify)

    @functools.cached_property
    def model_id(self) -> str:
        """The classifier (and nucleus finder) this detector runs, with a content digest (Identified)."""
        from mastctl.morphology import DEFAULT_MODEL, model_digest
        from mastctl.morphology.mastnet import DEFAULT_NET

        parts = [f"{Path(self.options.model).name} sha256:{model_digest(self.options.model)}" if self.options.model
                 else f"built-in {DEFAULT_MODEL} sha256:{model_digest(None)}"]
        if self.mast_net is not None:
            net = self.options.mast_net
            parts.append(f"mast net {Path(net).name} sha256:{model_digest(net)}" if net != "builtin"
                         else f"mast net built-in {DEFAULT_NET} sha256:{model_digest(None, DEFAULT_NET)}")
            if self.options.mast_net_threshold is not None:
                parts[-1] += f" (threshold {self.options.mast_net_threshold:g})"
            margin = self.mast_net.view_margin
            if margin != VIEW_MARGIN:
                parts[-1] += f" (view margin {margin:g})" if margin is not None else " (no view margin)"
        if self.options.nuclei == "builtin":
            from mastctl.morphology.nucleinet import DEFAULT_NET as DEFAULT_NUCLEI

            parts.append(f"nuclei built-in {DEFAULT_NUCLEI} sha256:{model_digest(None, DEFAULT_NUCLEI)}")
        elif self.options.nuclei:
            parts.append(f"nuclei {Path(self.options.nuclei).name} sha256:{model_digest(self.options.nuclei)}")
        if self.nuclei_net is not None and self.options.nuclei_flips:
            parts[-1] += " (four flips)"
        return "; ".join(parts)

    def candidates(self, image: Image) -> list:
        """Every nucleus with its p_explicit / p_implicit (CandidateDetector): what hybrid fuses opinions on."""
        return list(self.detect(image).cells)

    def slide_options(self, sample, mpp: float) -> dict:
        """Options that make every tile of one slide use the same stains and threshold."""
        from mastctl.morphology import calibrate

        return calibrate(sample, mpp, self._normalize)

    def detect(self, image: Image) -> Detections:
        mpp = working(image.mpp)
        if mpp > MAX_MPP:
            raise InputError(f"{image.path}: {mpp:g} um/px is too coarse to see cells (nuclei would be under "
                             f"{7 / mpp:.1f} px); the morphology detector needs {MAX_MPP:g} um/px or finer (10x or more)")
        if _colourless(image.pixels):
            raise InputError(f"{image.path}: a greyscale image (no pixel has any colour): the morphology detector reads "
                             "hematoxylin and eosin from colour, so it cannot tell mast cells in it; give it the H&E in colour")
        with self._threads():
            return self._detect(image, mpp)

    def _threads(self):
        """One BLAS thread while torch runs the nets (``mastctl.threads``: the two pools fought over the cores)."""
        from contextlib import nullcontext

        from mastctl.threads import blas_for_the_nets

        if self.nuclei_net is None and self.mast_net is None:
            return nullcontext()
        return blas_for_the_nets(self.options.net_precision)

    def _detect(self, image: Image, mpp: float) -> Detections:
        import time

        import numpy as np

        from mastctl.morphology import SHEET_RULE, analyse, classify
        from mastctl.morphology.stain import cast_od

        t0 = time.perf_counter()
        o = self.options
        vectors = [np.asarray(v, dtype=np.float64) for v in o.stain_vectors] if o.stain_vectors else None
        analysis = analyse(image.pixels, mpp, normalize=self._normalize, vectors=vectors, threshold=o.nucleus_threshold,
                           nuclei_net=self.nuclei_net)
        t1 = time.perf_counter()
        p_net = None
        # the colour cast the net's maps and the collagen check read the stains without: the slide's, else the image's own
        asks = len(analysis.X) and (self.mast_net is not None or analysis.found is not None)
        cast = cast_od(analysis.stained) if o.cast_od is None and asks else o.cast_od
        if self.mast_net is not None and len(analysis.X):
            from mastctl.morphology.mastnet import crop_source

            net = self.mast_net
            crops = crop_source(net.maps(analysis.stained, cast), analysis.stained.mpp)

            def p_net(xy):  # P(mast) of the nuclei at these working-pixel positions (maps resampled once)
                return net.probability(crops(xy))
        cells = classify(analysis, self.model, o.mast_threshold, p_net=p_net, sheet=SHEET_RULE if o.sheet else None,
                         found_min_h_over_e=o.found_min_h_over_e, cast=cast, net_veto=self.net_veto,
                         net_veto_explicit=o.net_veto_explicit)
        t2 = time.perf_counter()
        return Detections(image=image.info, backend=self.name, cells=cells, timing_s={"nuclei_features": t1 - t0, "classify": t2 - t1})


def _colourless(pixels) -> bool:
    """Whether every pixel is grey (R = G = B) and the image shows something darker than glass: a greyscale picture, in
    which the stains cannot be told apart (the detector called a fifth of a greyscale CRC tile's cells mast cells). A
    blank or flat tile (white, black, one grey) is not refused: it has no cells either way."""
    import numpy as np

    if pixels.ndim != 3 or pixels.shape[2] < 3:
        return True
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return bool(np.array_equal(r, g) and np.array_equal(g, b) and r.min() < 220 and int(r.max()) - int(r.min()) >= 32)

