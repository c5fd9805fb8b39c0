"""VLM fine-tuning without a hub: tiny Qwen2-VL and LLaVA built from configs, the real prepare/train/detect code."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from mastctl.vlm import formats as F

pytest.importorskip("peft")
pytest.importorskip("transformers")
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("MASTCTL_VLM__MAX_NEW_TOKENS", "24")  # random tiny models ramble until the limit


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from tests.vlm_tiny import build_llava, build_qwen2_5_vl, build_qwen2_vl

    root = tmp_path_factory.mktemp("tiny")
    try:
        return {"qwen2-vl": build_qwen2_vl(root / "qwen"), "qwen2.5-vl": build_qwen2_5_vl(root / "qwen25"),
                "llava": build_llava(root / "llava")}
    except RuntimeError as exc:
        pytest.skip(str(exc))


# --------------------------------------------------------------------------- conventions and parsing


@pytest.mark.parametrize("family", F.FAMILIES)
def test_answers_round_trip_in_each_convention(family):
    pts = [F.Point(10.0, 20.0, "explicit"), F.Point(150.0, 90.0, "implicit")]
    text = F.answer(pts, family, 200, 100, seen=(112, 196))
    back, invalid = F.parse(text, family, 200, 100, seen=(112, 196))
    assert invalid == 0 and [p.kind for p in back] == ["explicit", "implicit"]
    assert all(abs(a.x - b.x) < 1.1 and abs(a.y - b.y) < 1.1 for a, b in zip(sorted(pts, key=lambda p: p.y), back))
    if family == "qwen2-vl":
        assert json.loads(text)[0] == {"x": 50, "y": 200, "type": "explicit"}


def test_parsing_partial_json_box_tokens_pairs_and_invalid_points():
    partial = '[{"x": 500, "y": 500, "type": "implicit"}, {"x": 100, "y": 9000, "type": "explicit"}, {"x": 3'
    pts, invalid = F.parse(partial, "qwen2-vl", 200, 200)
    assert [(p.x, p.y, p.kind) for p in pts] == [(100.0, 100.0, "implicit")] and invalid == 1
    boxes = "<|box_start|>(400,400),(600,600)<|box_end|> and <|box_start|>(0,0),(100,100)<|box_end|>"
    pts, _ = F.parse(boxes, "qwen2-vl", 100, 100)
    assert [(round(p.x), round(p.y)) for p in pts] == [(50, 50), (5, 5)]
    pts, _ = F.parse("mast cells at (120, 40) and (10, 10)", "qwen2.5-vl", 224, 112, seen=(112, 224))
    assert [(p.x, p.y) for p in pts] == [(120.0, 40.0), (10.0, 10.0)]
    assert F.parse("no idea", "llava", 10, 10) == ([], 0)
    assert F.parse('[{"x": "left", "y": 2}]', "llava", 10, 10)[1] == 1


def test_augmentation_moves_points_exactly():
    from mastctl.vlm.dataset import TileSample, augment

    img = np.full((120, 160, 3), 235, np.uint8)
    img[38:43, 98:103] = (40, 20, 90)  # a dark dot centred at (100.5, 40.5)
    sample = TileSample(img, [F.Point(100.5, 40.5)], "s")
    rng = random.Random(3)
    for _ in range(8):
        out = augment(sample, rng)
        assert out.pixels.shape == img.shape
        (p,) = out.points
        dark = np.argwhere(out.pixels.sum(-1) < 350)
        assert abs(dark[:, 1].mean() + 0.5 - p.x) < 1.5 and abs(dark[:, 0].mean() + 0.5 - p.y) < 1.5


def test_prepare_splits_by_source_image_and_writes_paths_not_pixels(tmp_path, cli):
    import shutil

    from mastctl import synth

    synth.generate(tmp_path / "src", 3, 21, synth.SynthOptions(size=256))
    r = cli("finetune", "prepare", "-i", tmp_path / "src", "-t", tmp_path / "src", "-m", "qwen2.5-vl", "-o", tmp_path / "data",
            "--tile-um", "64", "--augment", "1", "--val-fraction", "0.34", "--json")
    assert r.exit_code == 0, r.stderr
    meta = r.json()
    assert meta["train_images"] == 2 and meta["val_images"] == 1 and meta["train"] == 2 * 2 * 4 and meta["val"] == 4
    rows = [json.loads(x) for x in (tmp_path / "data" / "train.jsonl").read_text().splitlines()]
    vals = [json.loads(x) for x in (tmp_path / "data" / "val.jsonl").read_text().splitlines()]
    assert not {r["source"] for r in rows} & {v["source"] for v in vals}
    assert all((tmp_path / "data" / r["image"]).is_file() and "base64" not in json.dumps(r) for r in rows)
    assert "pixels of the image" in rows[0]["messages"][0]["content"][1]["text"]
    r = cli("finetune", "prepare", "-i", tmp_path / "src", "-t", tmp_path / "src", "-m", "gpt", "-o", tmp_path / "x")
    assert r.exit_code == 2 and "--model" in r.stderr
    shutil.rmtree(tmp_path / "src")


# --------------------------------------------------------------------------- training and detection with tiny models


@pytest.mark.slow
@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl", "llava"])
def test_prepare_train_resume_detect(family, tiny_models, tmp_path, cli):
    from mastctl import synth

    base = tiny_models[family]
    data, adapter = tmp_path / "data", tmp_path / "adapter"
    synth.generate(tmp_path / "src", 3, 31, synth.SynthOptions(size=192))
    assert cli("finetune", "prepare", "-i", tmp_path / "src", "-t", tmp_path / "src", "-m", family, "-o", data, "--tile-um", "96",
               "--augment", "1", "--val-fraction", "0.34").exit_code == 0
    r = cli("finetune", "train", "-d", data, "--base", base, "-o", adapter, "--epochs", "2", "--lora-r", "4", "--lora-alpha", "8",
            "--lora-dropout", "0", "--grad-accum", "1", "--lr", "5e-3", "--json")
    assert r.exit_code == 0, r.stderr
    info = r.json()
    losses = [h["train_loss"] for h in info["history"]]
    assert losses[1] < losses[0]  # it learns the tiny set
    assert info["family"] == family and info["prompt_version"] == F.PROMPT_VERSION
    f1 = info["history"][-1]["val_point_f1"]  # validation by generation ran on the held-out image
    assert set(f1) == {"precision", "recall", "f1", "invalid_points"} and "val_loss" in info["history"][-1]
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "mastctl_adapter.json").is_file()
    # resume continues from the checkpoint (epoch 3 only)
    r = cli("finetune", "train", "-d", data, "--base", base, "-o", adapter, "--epochs", "3", "--lora-r", "4", "--resume", "--json",
            "--grad-accum", "1", "--lr", "5e-3")
    assert r.exit_code == 0, r.stderr
    hist = r.json()["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3] and hist[2]["train_loss"] < hist[0]["train_loss"]
    # reload and merge: the merged model gives the adapter model's logits
    from mastctl.vlm.models import load

    loaded = load(family, base, adapter=adapter)
    batch = loaded.encode([np.full((64, 64, 3), 200, np.uint8)], ["hi"], ["[]"])
    import torch

    with torch.no_grad():
        a = loaded.model(**batch).logits
        b = loaded.model.merge_and_unload()(**batch).logits
    assert torch.allclose(a, b, atol=1e-4)
    # detect with the adapter: runs, parses, writes
    backend = "llava" if family == "llava" else "qwen"
    r = cli("detect", EXAMPLES / "synth_s9_0000_he.png", "--backend", backend, "-O", f"adapter={adapter}", "--json")
    assert r.exit_code == 0, r.stderr
    det = r.json()
    assert det["backend_info"]["tiles"] == 4 and det["backend_info"]["family"] == family


def test_training_masks_everything_but_the_answer(tiny_models):
    from mastctl.vlm.models import IGNORE, load

    loaded = load("qwen2-vl", tiny_models["qwen2-vl"])
    batch = loaded.encode([np.full((56, 56, 3), 200, np.uint8)] * 2, ["find", "find them all"], ['[{"x": 1}]', "[]"])
    labels, ids = batch["labels"], batch["input_ids"]
    image_id = loaded.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (labels[ids == image_id] == IGNORE).all()
    for i, answer in enumerate(['[{"x": 1}]', "[]"]):
        kept = ids[i][labels[i] != IGNORE]
        assert loaded.tokenizer.decode(kept) == answer + "<|im_end|>"


def test_qlora_4bit_trains_on_cpu(tiny_models, tmp_path, cli):
    pytest.importorskip("bitsandbytes")
    data = tmp_path / "data"
    cli("finetune", "prepare", "-i", EXAMPLES, "-t", EXAMPLES, "-m", "qwen2-vl", "-o", data, "--tile-um", "96", "--augment", "0")
    r = cli("finetune", "train", "-d", data, "--base", tiny_models["qwen2-vl"], "-o", tmp_path / "q", "--epochs", "1",
            "--quantize", "4bit", "--lora-r", "4", "--grad-accum", "1", "--json")
    assert r.exit_code == 0, r.stderr
    assert r.json()["train"]["quantize"] == "4bit" and (tmp_path / "q" / "adapter_model.safetensors").is_file()


def test_missing_base_names_what_to_download(cli, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "meta.json").write_text(json.dumps({"family": "qwen2-vl", "tile_um": 96, "tile_mpp": 0.5}))
    (tmp_path / "data" / "train.jsonl").write_text(json.dumps({"image": "x.png", "messages": [], "points": []}) + "\n")
    r = cli("finetune", "train", "-d", tmp_path / "data", "--base", tmp_path / "nope", "-o", tmp_path / "a")
    assert r.exit_code == 4 and "never downloads" in r.stderr and "Qwen2-VL-2B-Instruct" in r.stderr
    r = cli("detect", EXAMPLES / "synth_s9_0000_he.png", "--backend", "qwen")
    assert r.exit_code == 4 and "base model" in r.stderr


def test_hybrid_asks_the_vlm_about_uncertain_cells(tiny_models, cli, monkeypatch, tmp_path):
    monkeypatch.setenv("MASTCTL_VLM__QWEN2_VL__BASE_MODEL", str(tiny_models["qwen2-vl"]))
    monkeypatch.setenv("MASTCTL_KB__URI", str(tmp_path / "nokb"))
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.setenv("MASTCTL_BACKEND_OPTIONS__HYBRID__CERTAIN_HIGH", "0.99")
    monkeypatch.setenv("MASTCTL_BACKEND_OPTIONS__HYBRID__CERTAIN_LOW", "0.01")
    r = cli("detect", EXAMPLES / "synth_s9_0000_he.png", "--backend", "hybrid", "--json", "--all-cells")
    assert r.exit_code == 0, r.stderr
    info = r.json()["backend_info"]
    assert info["opinions"] == ["morphology", "vlm"] and info["vlm"]["tiles"] == 4
    assert any("p_vlm" in c.get("features", {}) for c in r.json()["cells"])


def test_prepare_reads_a_kb_export_as_truth(cli, tmp_path, monkeypatch):
    pytest.importorskip("lancedb")
    monkeypatch.setenv("MASTCTL_KB__URI", str(tmp_path / "kb"))
    assert cli("kb", "ingest", EXAMPLES / "synth_s9_0000.json", "--images", EXAMPLES).exit_code == 0
    assert cli("kb", "export", tmp_path / "kb.jsonl").exit_code == 0
    r = cli("finetune", "prepare", "-i", EXAMPLES, "-t", tmp_path / "kb.jsonl", "-m", "llava", "-o", tmp_path / "d",
            "--tile-um", "96", "--augment", "0", "--json")
    assert r.exit_code == 0, r.stderr
    truth = json.loads((EXAMPLES / "synth_s9_0000.json").read_text())
    assert r.json()["mast_cell_points"] == sum(c["label"] == "mast_cell" for c in truth["cells"])
