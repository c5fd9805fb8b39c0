"""Loading a base model from a local folder (never the hub), and turning conversations into tensors.

The image processing and the expansion of the image placeholder into the
model's image tokens are done here, not by the families' ``Processor``
classes, which need torchvision (a video processor) just to be built.
Labels are -100 everywhere but the assistant's answer (and its end token):
the loss sees neither the prompt nor the image tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mastctl.errors import BackendError, UsageError

IGNORE = -100


@dataclass
class Loaded:
    family: str
    model: Any
    tokenizer: Any
    image_processor: Any
    path: Path

    # ------------------------------------------------------------------ text

    def prompt_text(self, prompt: str) -> str:
        if self.family == "llava":
            return f"USER: <image>\n{prompt} ASSISTANT:"
        return f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{prompt}<|im_end|>\n<|im_start|>assistant\n"

    def answer_suffix(self) -> str:
        return (self.tokenizer.eos_token or "</s>") if self.family == "llava" else "<|im_end|>"

    # ------------------------------------------------------------------ tensors

    def encode(self, images: list[np.ndarray], prompts: list[str], answers: list[str] | None = None) -> dict[str, Any]:
        """Model inputs for a batch (right-padded); with ``answers``, labels on the answers only."""
        from PIL import Image as PILImage

        pil = [PILImage.fromarray(im) for im in images]
        vision = self.image_processor(images=pil, return_tensors="pt")
        texts, prompt_lens = [], []
        for i, prompt in enumerate(prompts):
            head = self._expand(self.prompt_text(prompt), vision, i)
            prompt_lens.append(len(self.tokenizer(head, add_special_tokens=False)["input_ids"]))
            texts.append(head + (" " if self.family == "llava" else "") + answers[i] + self.answer_suffix() if answers else head)
        self.tokenizer.padding_side = "right" if answers else "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "pixel_values": vision["pixel_values"]}
        if self.family != "llava":
            batch["image_grid_thw"] = vision["image_grid_thw"]
            image_id = self.tokenizer.convert_tokens_to_ids("<|image_pad|>")
            batch["mm_token_type_ids"] = (enc["input_ids"] == image_id).long()
        if answers:
            labels = enc["input_ids"].clone()
            for i, n in enumerate(prompt_lens):
                labels[i, :n] = IGNORE
            labels[enc["attention_mask"] == 0] = IGNORE
            batch["labels"] = labels
        return batch

    def _expand(self, text: str, vision: Any, i: int) -> str:
        if self.family == "llava":
            cfg = self.model.config
            size = self.image_processor.crop_size["height"] if hasattr(self.image_processor, "crop_size") and self.image_processor.crop_size else cfg.vision_config.image_size
            n = (size // cfg.vision_config.patch_size) ** 2 + (1 if getattr(cfg, "vision_feature_select_strategy", "default") == "full" else 0)
            return text.replace("<image>", "<image>" * n)
        merge = self.image_processor.merge_size ** 2
        n = int(vision["image_grid_thw"][i].prod()) // merge
        return text.replace("<|image_pad|>", "<|image_pad|>" * n)

    def seen_size(self, height: int, width: int) -> tuple[int, int]:
        """The (h, w) the model sees an image of this size at (Qwen's resize; LLaVA's square)."""
        if self.family == "llava":
            size = self.model.config.vision_config.image_size
            return size, size
        from mastctl.vlm.formats import smart_resize

        ip = self.image_processor
        return smart_resize(height, width, ip.patch_size * ip.merge_size, _pixels(ip, "min"), _pixels(ip, "max"))


def _pixels(ip: Any, which: str) -> int:
    size = getattr(ip, "size", None) or {}
    key = "shortest_edge" if which == "min" else "longest_edge"
    return int(size.get(key) or getattr(ip, f"{which}_pixels"))


def load(family: str, path: str | Path, *, quantize: str | None = None, dtype: str = "float32", device: str = "cpu",
         adapter: str | Path | None = None, trainable_adapter: bool = False) -> Loaded:
    """A base model (and optionally a LoRA adapter) from local folders; a clear error when the folder is not one."""
    from mastctl.hf import quiet

    quiet()
    import torch
    from transformers import AutoTokenizer

    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file():
        raise BackendError(f"{folder} is not a local model folder (no config.json). mastctl never downloads weights: "
                           f"download the base model elsewhere (e.g. `hf download Qwen/Qwen2-VL-2B-Instruct --local-dir DIR`) "
                           "and pass --base DIR")
    import json

    model_type = json.loads((folder / "config.json").read_text()).get("model_type")
    expected = {"qwen2-vl": "qwen2_vl", "qwen2.5-vl": "qwen2_5_vl", "llava": "llava"}.get(family)
    if expected and model_type != expected:
        raise BackendError(f"{folder} holds a {model_type!r} model, not {family} ({expected})")
    torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto"}[dtype]
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "local_files_only": True}
    if quantize:
        from transformers import BitsAndBytesConfig

        if quantize == "4bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                               bnb_4bit_compute_dtype=torch.float32 if device == "cpu" else torch.bfloat16)
        elif quantize == "8bit":
            kwargs["quantization_config"] = BitsAndBytesConfig(load_in_8bit=True)
        else:
            raise UsageError(f"--quantize must be 4bit or 8bit, got {quantize!r}")
    if family == "qwen2-vl":
        from transformers import Qwen2VLForConditionalGeneration as Model
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil as Images
    elif family == "qwen2.5-vl":
        from transformers import Qwen2_5_VLForConditionalGeneration as Model
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil as Images
    elif family == "llava":
        from transformers import LlavaForConditionalGeneration as Model
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as Images
    else:
        raise UsageError(f"unknown model family {family!r} (choose from qwen2-vl, qwen2.5-vl, llava)")
    try:
        model = Model.from_pretrained(str(folder), **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        images = Images.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise BackendError(f"cannot load a {family} model from {folder}: {str(exc).splitlines()[0]}") from None
    if not quantize:
        model = model.to(device)
    if adapter is not None:
        from peft import PeftModel

        if not (Path(adapter) / "adapter_config.json").is_file():
            raise BackendError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json)")
        model = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable_adapter)
    return Loaded(family, model, tokenizer, images, folder)
