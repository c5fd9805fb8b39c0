"""`qwen` and `llava`: detection with a local vision-language model and, optionally, a LoRA adapter.

The image is cut into the tiles the adapter was trained on (its
``mastctl_adapter.json``: tile size in µm and resolution; 128 µm at 0.5 µm/px
without one), each tile gets the detection prompt, the answer is parsed
(JSON, partial JSON, Qwen box tokens, bare pairs), points are mapped back to
the input image and merged across tiles; invalid points are dropped and
counted in ``backend_info``. Weights load from local folders only.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from mastctl.cells import Cell, Detections
from mastctl.errors import BackendError
from mastctl.scale import working

if TYPE_CHECKING:
    from mastctl.imaging import Image
    from mastctl.profile import Profile


class _VlmDetector:
    name = "vlm"
    families: tuple[str, ...] = ()
    requires = ("torch", "transformers", "peft")
    extra = "vlm"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        base: str | None = Field(None, description="Local folder of the base model (default: vlm.<family>.base_model of the profile).")
        adapter: str | None = Field(None, description="LoRA adapter folder from `mastctl finetune train` (default: the profile's).")
        family: str | None = Field(None, description="qwen2-vl or qwen2.5-vl for `qwen` (default: from the adapter, else qwen2-vl).")
        tile_um: float | None = Field(None, gt=0, description="Tile side in µm (default: the adapter's).")
        tile_mpp: float | None = Field(None, gt=0)
        merge_um: float = Field(4.0, gt=0)
        quantize: str | None = Field(None, description="4bit or 8bit (bitsandbytes).")

    def __init__(self, options: Options | None = None, profile: Profile | None = None) -> None:
        from mastctl.profile import Profile as P

        self.options = options or self.Options()
        self.profile = profile or P()
        self.adapter_info: dict[str, Any] = {}
        adapter = self.options.adapter
        family = self.options.family
        if adapter:
            meta = Path(adapter) / "mastctl_adapter.json"
            if meta.is_file():
                self.adapter_info = json.loads(meta.read_text())
                family = family or self.adapter_info.get("family")
        family = family or self.families[0]
        if family not in self.families:
            raise BackendError(f"detector {self.name!r} runs {', '.join(self.families)}, not {family!r}")
        self.family = family
        section = getattr(self.profile.vlm, family.replace("-", "_").replace(".", "_"))
        self.base = self.options.base or section.base_model or self.adapter_info.get("base_model")
        self.adapter = adapter or section.adapter
        if not self.base:
            raise BackendError(f"detector {self.name!r} needs a local base model: --option base=DIR or "
                               f"vlm.{family.replace('-', '_').replace('.', '_')}.base_model in the profile (no downloads)")
        self._loaded: Any = None

    def loaded(self) -> Any:
        if self._loaded is None:
            from mastctl.devices import resolve_device
            from mastctl.vlm.models import load

            self._loaded = load(self.family, self.base, quantize=self.options.quantize,
                                device=resolve_device(self.profile.gpu_settings), adapter=self.adapter)
            self._loaded.model.eval()
        return self._loaded

    def detect(self, image: Image) -> Detections:
        from mastctl import tiling
        from mastctl.devices import resolve_device
        from mastctl.vlm import formats as F
        from mastctl.vlm.training import generate

        mpp = working(image.mpp)
        tile_um = self.options.tile_um or self.adapter_info.get("tile_um", 128.0)
        tile_mpp = self.options.tile_mpp or self.adapter_info.get("tile_mpp", 0.5)
        loaded = self.loaded()
        device = resolve_device(self.profile.gpu_settings)
        vlm = self.profile.vlm
        t0 = time.perf_counter()
        cells, invalid, answers = [], 0, 0
        for tile in tiling.plan_tiles(image.pixels, mpp, tile_um, 0.0, tile_mpp):
            h, w = tile.pixels.shape[:2]
            text = generate(loaded, tile.pixels, vlm.max_new_tokens, vlm.temperature, device)
            answers += 1
            points, bad = F.parse(text, self.family, w, h, loaded.seen_size(h, w))
            invalid += bad
            cells += [Cell(tile.x0 + p.x * tile.scale, tile.y0 + p.y * tile.scale, "mast_cell", p.kind, 0.5) for p in points]
        merged, _ = tiling.merge(cells, self.options.merge_um / mpp)
        info = {"family": self.family, "base": str(self.base), "adapter": str(self.adapter) if self.adapter else None,
                "tiles": answers, "invalid_points": invalid}
        return Detections(image=image.info, backend=self.name, cells=tuple(merged),
                          timing_s={"generate": time.perf_counter() - t0}, info=info)


class QwenDetector(_VlmDetector):
    name = "qwen"
    families = ("qwen2-vl", "qwen2.5-vl")


class LlavaDetector(_VlmDetector):
    name = "llava"
    families = ("llava",)
