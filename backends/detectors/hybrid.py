"""`hybrid`: morphology candidates, second opinions on the uncertain ones, fused.

1. The morphology detector finds every nucleus with P(mast) (its calibrated
   explicit + implicit probabilities).
2. Candidates with P(mast) >= ``certain_high`` are kept, <= ``certain_low``
   rejected, without asking anyone else: no paid call for what is clear.
3. Each uncertain candidate gets the configured second opinions:
   ``kb`` — the nearest knowledge-base cells to its crop vote, weighted by
   similarity; ``gemini`` — Gemini is run once over the image (tiled,
   retrieval-augmented, cached) and a candidate it marked within
   ``match_um`` gets Gemini's confidence, one it did not gets ``gemini_miss_p``.
4. Opinions are fused in log-odds with the profile's weights
   (:mod:`mastctl.fusion`); a fused P(mast) >= ``threshold`` is a mast cell.

Without an API key or a knowledge base the hybrid still runs with what it
has; ``backend_info.opinions`` says which opinions were used and why others
were not.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from mastctl.cells import Cell, Detections
from mastctl.errors import ConfigError, MastctlError
from mastctl.scale import working

if TYPE_CHECKING:
    from mastctl.imaging import Image
    from mastctl.profile import Profile

SECOND_OPINIONS = ("kb", "gemini", "vlm")


class HybridDetector:
    name = "hybrid"
    requires = ("scipy", "skimage")
    install_hint = "pip install scikit-image scipy"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        opinions: list[str] = Field(["kb", "gemini", "vlm"], description="Second opinions to ask, when available: kb, gemini, vlm.")
        vlm: str = Field("qwen", description="The VLM detector asked for the vlm opinion: qwen or llava (base/adapter from its options or the profile).")
        vlm_hit_p: float = Field(0.8, ge=0, le=1, description="P(mast) a VLM point near a candidate means (VLM answers carry no confidence).")
        vlm_miss_p: float = Field(0.3, ge=0, le=1, description="P(mast) the VLM's silence means.")
        weights: dict[str, float] = Field({"morphology": 1.0, "kb": 1.0, "gemini": 1.5, "vlm": 1.5},
                                          description="Trust in each source (log-odds weights; 0 ignores one).")
        certain_high: float = Field(0.85, ge=0, le=1, description="P(mast) from which morphology alone decides: mast cell.")
        certain_low: float = Field(0.15, ge=0, le=1, description="P(mast) up to which morphology alone decides: not a mast cell.")
        threshold: float | None = Field(None, gt=0, lt=1, description="Fused P(mast) from which a candidate is a mast cell (null: the morphology model's, 0.3 for the built-in one; 0.5 if it has none).")
        kb_k: int = Field(7, ge=1, description="Knowledge-base neighbours that vote.")
        match_um: float = Field(5.0, gt=0, description="A Gemini point this close to a candidate speaks for it.")
        gemini_miss_p: float = Field(0.2, ge=0, le=1, description="P(mast) Gemini's silence means for a candidate it did not mark.")

    def __init__(self, options: Options | None = None, profile: Profile | None = None) -> None:
        from mastctl import registry
        from mastctl.profile import Profile as P

        self.options = options or self.Options()
        unknown = [o for o in self.options.opinions if o not in SECOND_OPINIONS]
        if unknown:
            raise ConfigError(f"backend_options.hybrid.opinions: unknown opinion {unknown[0]!r} (choose from {', '.join(SECOND_OPINIONS)})")
        self.profile = profile or P()
        from mastctl.protocols import CandidateDetector

        self.morphology = registry.create("detector", "morphology", self.profile)
        if not isinstance(self.morphology, CandidateDetector):
            raise ConfigError("hybrid needs a candidate detector (mastctl.protocols.CandidateDetector) as 'morphology'")
        self.threshold = self.options.threshold or self.morphology.mast_threshold
        self.unavailable: dict[str, str] = {}
        self.kb = self._open_kb() if "kb" in self.options.opinions else None
        self.gemini = self._open_detector("gemini", "gemini") if "gemini" in self.options.opinions else None
        self.vlm = self._open_detector(self.options.vlm, "vlm") if "vlm" in self.options.opinions else None

    def _open_kb(self) -> Any:
        from mastctl.kb.service import KnowledgeBase

        try:
            return KnowledgeBase.open(self.profile)
        except MastctlError as exc:
            self.unavailable["kb"] = str(exc)
            return None

    def _open_detector(self, name: str, opinion: str) -> Any:
        from mastctl import registry

        try:
            return registry.create("detector", name, self.profile)
        except MastctlError as exc:
            self.unavailable[opinion] = str(exc)
            return None

    # ------------------------------------------------------------------ detection

    def detect(self, image: Image) -> Detections:
        from mastctl.fusion import Opinion, fuse, fuse_kind

        o = self.options
        w = o.weights
        t0 = time.perf_counter()
        t_base = time.perf_counter()
        base_cells = self.morphology.candidates(image)
        base_s = time.perf_counter() - t_base
        mpp = working(image.mpp)
        uncertain = [c for c in base_cells if o.certain_low < _p_mast(c) < o.certain_high]
        kb_votes = self._kb_votes(image, uncertain, mpp) if self.kb is not None and uncertain else {}
        gemini_points, gemini_info = self._points(self.gemini, "gemini", image) if self.gemini is not None and uncertain else ([], None)
        vlm_points, vlm_info = self._points(self.vlm, "vlm", image) if self.vlm is not None and uncertain else ([], None)
        t1 = time.perf_counter()
        cells: list[Cell] = []
        used = {"morphology"}
        for c in base_cells:
            p = _p_mast(c)
            p_exp = c.features.get("p_explicit", 0.0) / p if p > 0 else 0.5
            if not (o.certain_low < p < o.certain_high):
                cells.append(_relabel(c, p, c.kind or ("explicit" if p_exp >= 0.5 else "implicit"), {}) if p >= o.certain_high
                             else c)
                continue
            opinions = [Opinion("morphology", p, w.get("morphology", 1.0), p_exp)]
            if id(c) in kb_votes:
                opinions.append(kb_votes[id(c)])
            if gemini_info is not None:
                opinions.append(self._point_opinion("gemini", c, gemini_points, mpp, None, o.gemini_miss_p))
            if vlm_info is not None:
                opinions.append(self._point_opinion("vlm", c, vlm_points, mpp, o.vlm_hit_p, o.vlm_miss_p))
            used.update(op.source for op in opinions)
            fused = fuse(opinions)
            extra = {f"p_{op.source}": round(op.p_mast, 4) for op in opinions}
            if fused >= self.threshold:
                cells.append(_relabel(c, fused, fuse_kind(opinions), extra))
            elif c.is_mast_cell:  # overruled: report it as what morphology thought next
                cells.append(Cell(c.x, c.y, "other", None, round(1 - fused, 4), {**dict(c.features), **extra}))
            else:
                cells.append(c)
        info: dict[str, Any] = {"opinions": sorted(used), "unavailable": dict(self.unavailable),
                                "candidates": len(base_cells), "uncertain": len(uncertain),
                                "weights": {k: v for k, v in w.items() if k in used}}
        if gemini_info is not None:
            info["gemini"] = gemini_info
        if vlm_info is not None:
            info["vlm"] = vlm_info
        return Detections(image=image.info, backend=self.name, cells=tuple(cells),
                          timing_s={"candidates": base_s, "second_opinions": t1 - t0 - base_s}, info=info)

    def _kb_votes(self, image: Image, candidates: list[Cell], mpp: float) -> dict[int, Any]:
        from mastctl.fusion import Opinion
        from mastctl.kb import crops as C

        votes = {}
        for c in candidates:
            try:
                hits = self.kb.search(crop=C.cut(image.pixels, mpp, c.x, c.y, self.kb.crop_um), k=self.options.kb_k)
            except MastctlError:
                continue
            weights = [max(h.score, 0.0) for h in hits]
            mast = [wt for wt, h in zip(weights, hits) if h.record.type != "negative"]
            explicit = sum(wt for wt, h in zip(weights, hits) if h.record.type == "explicit")
            p = (sum(mast) + 0.5) / (sum(weights) + 1.0)  # similarity-weighted vote, shrunk towards 0.5
            p_exp = explicit / sum(mast) if mast and sum(mast) > 0 else None
            votes[id(c)] = Opinion("kb", p, self.options.weights.get("kb", 1.0), p_exp)
        return votes

    def _points(self, detector: Any, opinion: str, image: Image) -> tuple[list[Cell], dict[str, Any] | None]:
        """The detector's mast cells over the whole image (one run, however many candidates are uncertain)."""
        try:
            det = detector.detect(image)
        except MastctlError as exc:
            self.unavailable[opinion] = str(exc)
            return [], None
        return list(det.mast_cells), dict(det.info)

    def _point_opinion(self, source: str, cell: Cell, points: list[Cell], mpp: float, hit_p: float | None, miss_p: float) -> Any:
        """A point within match_um speaks for the candidate (its confidence, or ``hit_p``); none near, ``miss_p``."""
        from mastctl.fusion import Opinion

        weight = self.options.weights.get(source, 1.5)
        radius = self.options.match_um / mpp
        near = [g for g in points if (g.x - cell.x) ** 2 + (g.y - cell.y) ** 2 <= radius**2]
        if not near:
            return Opinion(source, miss_p, weight)
        best = max(near, key=lambda g: g.confidence)
        return Opinion(source, best.confidence if hit_p is None else hit_p, weight, 1.0 if best.kind == "explicit" else 0.0)


def _p_mast(cell: Cell) -> float:
    return float(cell.features.get("p_explicit", 0.0)) + float(cell.features.get("p_implicit", 0.0))


def _relabel(cell: Cell, p: float, kind: str, extra: dict[str, float]) -> Cell:
    return Cell(cell.x, cell.y, "mast_cell", kind, round(min(max(p, 0.0), 1.0), 4), {**dict(cell.features), **extra})
