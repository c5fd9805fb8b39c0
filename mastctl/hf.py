"""Hugging Face libraries, quietly and offline: no hub, no progress bars, no install hints on the user's terminal."""

from __future__ import annotations

from functools import cache
from typing import Any


def quiet() -> None:
    import logging
    import os
    import warnings

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # "pip install kernels" on every CPU import
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft)\b.*")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


@cache
def sentence_model(path: str, device: str) -> Any:
    """One loaded sentence-transformers model per (folder, device) and process: embedders and teachers share it."""
    quiet()  # never the hub, whatever the model folder says
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=device, local_files_only=True)


def sentence_dim(model: Any) -> int:
    """The embedding width (sentence-transformers renamed the method in 5.x)."""
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())
