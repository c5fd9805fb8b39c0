"""A third-party plugin, registered only through its entry points (tests/plugins on sys.path)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from mastctl.cells import Cell, Detections


class PointsDetector:
    """Reports the cells its options list: [x, y, label, kind, confidence] each."""

    name = "points"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        cells: list[list] = Field(default_factory=list)
        gain: float = Field(1.0, ge=0, description="Confidences are multiplied by this (at most 1).")

    def __init__(self, options: Options, profile=None) -> None:
        self.options = options
        self.profile = profile

    def detect(self, image) -> Detections:
        cells = [
            Cell(x=float(x), y=float(y), label=label, kind=kind or None, confidence=min(1.0, float(conf) * self.options.gain),
                 features={"mean_red": float(image.pixels[int(y), int(x), 0])})
            for x, y, label, kind, conf in self.options.cells
            if 0 <= x < image.width and 0 <= y < image.height  # a region of a slide holds only some of them
        ]
        return Detections(image=image.info, backend=self.name, cells=cells, timing_s={"model": 0.0})


class NeedsMissingDependency:
    name = "needs-missing"
    requires = ("mastctl_no_such_module_xyz",)
    install_hint = "pip install mastctl-testplugin[fancy]"


class CrashingDetector:
    name = "crashing"

    def __init__(self, options=None, profile=None) -> None:
        pass

    def detect(self, image):
        raise RuntimeError("model exploded")


class ShadowingEmbedder:
    """Tries to take the built-in name 'minilm'; mastctl's own must win."""

    name = "minilm"


class HashingTextEmbedder:
    """A tiny text embedder (hashed words, 64-d): a second text embedder for reindex tests."""

    name = "hashtext"
    modality = "text"
    dim = 64

    def __init__(self, options=None, profile=None) -> None:
        pass

    def embed(self, items):
        import zlib

        import numpy as np

        out = np.zeros((len(items), self.dim), np.float32)
        for i, text in enumerate(items):
            for word in str(text).lower().split():
                out[i, zlib.crc32(word.encode()) % self.dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms > 0, norms, 1)
