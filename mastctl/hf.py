"""Hugging Face libraries, quietly and offline: no hub, no progress bars, no install hints on the user's terminal."""

from __future__ import annotations


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
