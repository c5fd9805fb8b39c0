"""`gemini`: Google Gemini through google-genai, with examples retrieved from the knowledge base.

Per tile of the image (``tile_um`` wide at ``tile_mpp``): the morphology
detector proposes candidate cells, the knowledge base returns the example
cells most similar to those candidates *by image*, and the prompt shows them
(labelled crops, descriptions as delimited data) before the tile. The answer
is structured output (``response_schema``), mapped back to input pixels and
merged across tiles. Retries with backoff on 429/5xx/timeouts; answers cached
on disk by (tile, prompt, model, config); token usage and an estimated cost in
the detections' ``backend_info``. The API key comes only from the environment
variable the profile names (``gemini.api_key_env``).
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mastctl.cells import Detections
from mastctl.errors import BackendError, MastctlError, register_secret
from mastctl.scale import working

if TYPE_CHECKING:
    from mastctl.imaging import Image
    from mastctl.profile import Profile


class GeminiDetector:
    name = "gemini"
    requires = ("google.genai",)
    extra = "gemini"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        tile_um: float = Field(200.0, gt=10, description="Side of one request's tile, in micrometres.")
        tile_mpp: float = Field(0.5, gt=0, description="Resolution the tiles are sent at (finer images are downsampled).")
        overlap_um: float = Field(15.0, ge=0, description="Overlap of neighbouring tiles, in micrometres.")
        merge_um: float = Field(4.0, gt=0, description="Points closer than this (across tiles too) are one cell.")
        coordinates: Literal["normalized", "pixels"] = Field("normalized", description="Ask for Gemini's 0-1000 [y, x] or for pixel [y, x].")
        temperature: float = Field(0.1, ge=0, le=2)
        use_kb: bool = Field(True, description="Retrieve example cells from the knowledge base (kb section of the profile).")
        candidates_per_tile: int = Field(6, ge=0, description="Morphology candidates per tile whose look-alikes are retrieved.")
        cache_dir: str | None = Field("~/.cache/mastctl/gemini", description="Answer cache folder; null: no cache.")
        price_per_mtok: tuple[float, float] | None = Field(None, description="USD per million (input, output) tokens; null: list price of known models.")

    def __init__(self, options: Options | None = None, profile: Profile | None = None) -> None:
        from mastctl.profile import Profile as P

        self.options = options or self.Options()
        self.profile = profile or P()
        settings = self.profile.gemini
        self.model = settings.model
        key = os.environ.get(settings.api_key_env)
        if not key:
            raise BackendError(f"the gemini detector needs an API key in ${settings.api_key_env} "
                               "(gemini.api_key_env names the variable)")
        register_secret(key)  # never printed, whatever a server's error text quotes
        self._key = key
        self._client: Any = None
        self._kb: Any = None
        self._kb_note: str | None = None
        self._candidates: Any = None

    # ------------------------------------------------------------------ plumbing

    def client(self) -> Any:
        if self._client is None:
            from google import genai
            from google.genai import types

            s = self.profile.gemini
            http = types.HttpOptions(base_url=s.base_url, timeout=int(s.timeout_s * 1000),
                                     retry_options=types.HttpRetryOptions(attempts=1))  # mastctl retries itself
            self._client = genai.Client(api_key=self._key, http_options=http)
        return self._client

    def candidate_detector(self) -> Any:
        """The detector whose candidate cells pick the knowledge-base examples (the morphology detector)."""
        if self._candidates is None:
            from mastctl import registry
            from mastctl.protocols import CandidateDetector

            detector = registry.create("detector", "morphology", self.profile)
            if not isinstance(detector, CandidateDetector):
                raise BackendError("the gemini detector picks examples with a CandidateDetector ('morphology')")
            self._candidates = detector
        return self._candidates

    def knowledge_base(self) -> Any:
        """The profile's KB, or None (with the reason kept for the output)."""
        if self._kb is None and self._kb_note is None:
            if not self.options.use_kb or self.profile.gemini.examples_k == 0:
                self._kb_note = "off"
            else:
                from mastctl.kb.service import KnowledgeBase

                try:
                    self._kb = KnowledgeBase.open(self.profile)
                except MastctlError as exc:
                    self._kb_note = str(exc)
        return self._kb

    # ------------------------------------------------------------------ detection

    def detect(self, image: Image) -> Detections:
        from mastctl import gemini as G
        from mastctl import tiling

        mpp = working(image.mpp)
        o = self.options
        usage = G.Usage()
        cache = G.ResponseCache(Path(o.cache_dir).expanduser() if o.cache_dir else None)
        retry = G.Retry(max_retries=self.profile.gemini.max_retries)
        config = {"temperature": o.temperature, "coordinates": o.coordinates, "prompt": G.PROMPT_VERSION}
        t0 = time.perf_counter()
        cells, example_ids = [], set()
        for tile in tiling.plan_tiles(image.pixels, mpp, o.tile_um, o.overlap_um, o.tile_mpp):
            examples = self.examples_for(tile, mpp)
            example_ids.update(e.id for e in examples)
            png = _png(tile.pixels)
            h, w = tile.pixels.shape[:2]
            parts = [*G.example_block(examples), G.CRITERIA, G.task_text(o.coordinates, w, h)]
            key = G.cache_key(png, [G.SYSTEM, *parts], self.model, config)
            answer = cache.get(key)
            if answer is None:
                answer = retry.call(lambda: self._ask(parts, png), usage)
                usage.calls += 1
                cache.put(key, answer)
            else:
                usage.cached += 1
            usage.add(answer.get("usage") or {})
            parsed, repaired = G.parse_answer(answer.get("text"))
            usage.repaired_answers += int(repaired)
            found, dropped = G.to_cells(parsed, tile, o.coordinates)
            usage.dropped_points += dropped
            cells.extend(found)
        merged, _ = tiling.merge(cells, o.merge_um / mpp)
        price = o.price_per_mtok or G.PRICES.get(self.model)
        info = {"model": self.model, "usage": usage.to_dict(price), "examples": sorted(example_ids),
                "knowledge_base": "used" if self._kb is not None else (self._kb_note or "off")}
        return Detections(image=image.info, backend=self.name, cells=tuple(merged),
                          timing_s={"gemini": time.perf_counter() - t0}, info=info)

    def _ask(self, parts: list[Any], png: bytes) -> dict[str, Any]:
        from google.genai import types

        from mastctl import gemini as G

        contents = [types.Part.from_bytes(data=p[1], mime_type=p[0]) if isinstance(p, tuple) else p for p in parts]
        contents.append(types.Part.from_bytes(data=png, mime_type="image/png"))
        config = types.GenerateContentConfig(system_instruction=G.SYSTEM, response_mime_type="application/json",
                                             response_schema=G.GeminiAnswer, temperature=self.options.temperature)
        response = self.client().models.generate_content(model=self.model, contents=contents, config=config)
        meta = response.usage_metadata
        return {"text": response.text, "usage": {"input_tokens": getattr(meta, "prompt_token_count", 0) or 0,
                                                 "output_tokens": getattr(meta, "candidates_token_count", 0) or 0}}

    def examples_for(self, tile, mpp: float) -> list:
        """The KB cells most like this tile's candidate cells (by image), best first, at most examples_k."""
        from mastctl import gemini as G

        k = self.profile.gemini.examples_k
        kb = self.knowledge_base()
        if kb is None or k == 0 or self.options.candidates_per_tile == 0:
            return []
        from mastctl.imaging import Image
        from mastctl.kb import crops as C

        window = tile.pixels
        window_mpp = mpp * tile.scale
        cells = self.candidate_detector().candidates(Image(window, "tile", window_mpp))
        cells.sort(key=lambda c: -(c.features.get("p_explicit", 0) + c.features.get("p_implicit", 0)))
        best: dict[str, G.Example] = {}
        for cell in cells[: self.options.candidates_per_tile]:
            crop = C.cut(window, window_mpp, cell.x, cell.y, kb.crop_um)
            try:
                hits = kb.search(crop=crop, k=3)
            except MastctlError:
                continue  # a candidate without a central nucleus
            for hit in hits:
                r = hit.record
                if r.crop_png and (r.id not in best or best[r.id].score < hit.score):
                    best[r.id] = G.Example(r.id, r.cell_type, r.text(), r.crop_png, hit.score)
        return sorted(best.values(), key=lambda e: -e.score)[:k]


def _png(pixels) -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()
