"""The cube trainer: reshaper, core, losses, distillation weights, checkpoints, data, teachers, end to end."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mastctl.cube import data as D
from mastctl.cube.losses import (
    NegativeSampler,
    cosine_loss,
    curriculum_weights,
    diversity_penalty,
    infonce_loss,
    triplet_loss,
)
from mastctl.cube.model import CubicCore, EmbeddingReshaper, lattice_shape
from mastctl.cube.train import Encoded, TrainConfig, Trainer


@pytest.mark.parametrize("dim, shape", [(384, (6, 8, 8)), (768, (8, 8, 12)), (4096, (16, 16, 16))])
def test_reshaper_round_trip_is_lossless(dim, shape):
    assert lattice_shape(dim) == shape
    r = EmbeddingReshaper(dim)
    x = torch.randn(3, dim)
    lat = r.to_lattice(x)
    assert lat.shape == (3, 1, *shape) and torch.equal(r.to_embedding(lat), x)


def test_reshaper_pads_awkward_widths_and_refuses_small_lattices():
    r = EmbeddingReshaper(389)  # prime
    x = torch.randn(2, 389)
    assert r.cells >= 389 and torch.equal(r.to_embedding(r.to_lattice(x)), x)
    with pytest.raises(ValueError, match="fewer than"):
        EmbeddingReshaper(384, (4, 4, 4))


def test_core_starts_as_identity_and_every_parameter_learns():
    core = CubicCore(384, channels=4, steps=3)
    x = torch.randn(5, 384)
    assert torch.allclose(core(x), x)
    target = torch.randn(5, 384)
    for _ in range(2):  # the zero-initialised read-out opens the path on the first step
        loss = cosine_loss(core(x), target)
        core.zero_grad()
        loss.backward()
        torch.optim.SGD(core.parameters(), lr=0.1).step()
    loss = cosine_loss(core(x), target)
    core.zero_grad()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in core.parameters())
    assert core.parameter_count() == sum(p.numel() for p in core.parameters())


def test_losses_on_hand_made_cases():
    a = torch.eye(4)
    shuffled = a[[1, 2, 3, 0]]
    assert cosine_loss(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert infonce_loss(a, a, 0.1) < infonce_loss(a, shuffled, 0.1)
    assert triplet_loss(a, a, shuffled, margin=0.2).item() == 0.0  # aligned: margin met
    assert triplet_loss(a, shuffled, a, margin=0.2).item() > 1.0
    collapsed = torch.ones(4, 4)
    assert diversity_penalty(collapsed, a) > 0.9 and diversity_penalty(a, a).item() == 0.0
    w = curriculum_weights(torch.tensor([0, 1, 2]), epoch=0, ramp_epochs=4)
    assert w[0] == 1.0 and w[0] > w[1] > w[2]
    assert torch.all(curriculum_weights(torch.tensor([0, 1, 2]), epoch=3, ramp_epochs=4) == 1.0)


def test_negative_sampler_never_returns_the_own_target_and_hard_ones_are_nearest():
    bank = torch.nn.functional.normalize(torch.randn(20, 8), dim=-1)
    own = torch.arange(20)
    pred = bank + 0.01
    hard = NegativeSampler(hard_fraction=1.0).sample(pred, bank, own)
    sims = pred @ bank.T
    sims[own, own] = -9
    assert torch.equal(hard, bank[sims.argmax(1)])
    mixed = NegativeSampler(hard_fraction=0.0, seed=3).sample(pred, bank, own)
    assert not any(torch.equal(mixed[i], bank[i]) for i in range(20))


def _synthetic(n: int, dim: int = 24, seed: int = 0, noise_teacher: bool = False) -> Encoded:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dim)).astype(np.float32)
    M = np.random.default_rng(99).normal(size=(dim, dim)).astype(np.float32) / dim**0.5
    targets = {"good": (X @ M).astype(np.float32)}
    if noise_teacher:
        targets["noisy"] = rng.normal(size=(n, dim)).astype(np.float32)
    return Encoded(X, targets, rng.integers(0, 3, n), np.arange(n))


@pytest.mark.slow
def test_distillation_weights_move_towards_the_better_teacher():
    train, val = _synthetic(256, noise_teacher=True), _synthetic(64, seed=1, noise_teacher=True)
    trainer = Trainer(TrainConfig(epochs=8, patience=99, channels=4, steps=2, shape=(2, 3, 4)), 24, ["good", "noisy"])
    assert trainer.teacher_weights() == {"good": 0.5, "noisy": 0.5}
    trainer.fit(train, val)
    weights = trainer.teacher_weights()
    assert weights["good"] > 0.9 > weights["noisy"]
    assert trainer.history[-1]["teacher_weights"]["good"] > trainer.history[0]["teacher_weights"]["good"]


def test_checkpoint_resume_equals_an_uninterrupted_run(tmp_path):
    train, val = _synthetic(96), _synthetic(32, seed=1)
    config = TrainConfig(epochs=4, patience=99, channels=4, steps=2, shape=(2, 3, 4), batch_size=16)
    straight = Trainer(config, 24, ["good"])
    straight.fit(train, val)
    first = Trainer(TrainConfig(**{**config.__dict__, "epochs": 2}), 24, ["good"])
    first.fit(train, val, checkpoint_dir=tmp_path)
    resumed = Trainer(config, 24, ["good"])
    resumed.load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert resumed.epoch == 2
    resumed.fit(train, val)
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), k
    assert [h["val_loss"] for h in straight.history] == pytest.approx([h["val_loss"] for h in resumed.history])


def test_builtin_dialogue_set_quality_paraphrases_and_split():
    pairs = D.load_pairs()
    assert len(pairs) >= 150 and len({p.id for p in pairs}) == len(pairs)
    assert all(0 < p.quality <= 1 for p in pairs) and {p.difficulty for p in pairs} == {"easy", "medium", "hard"}
    assert len(D.filter_quality(pairs, 0.8)) < len(pairs)
    assert D.paraphrases("How do you tell a mast cell from a lymphocyte?") == [
        "How can a mast cell be distinguished from a lymphocyte?", "What separates a mast cell from a lymphocyte?"]
    train, val, test = D.split(D.augment(pairs, 1), seed=0)
    ids = [{p.id for p in part} for part in (train, val, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert any(p.paraphrase for p in train) and not any(p.paraphrase for p in test)


def test_bad_pair_files_are_one_line_errors(tmp_path):
    from mastctl.errors import InputError

    bad = tmp_path / "p.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(InputError, match="p.jsonl:1"):
        D.load_pairs(bad)


def test_local_transformers_teacher_with_mean_pooling_and_the_cache(tmp_path):
    transformers = pytest.importorskip("transformers")
    from mastctl.cube.teachers import EmbeddingCache, Teacher

    folder = tmp_path / "tiny-bert"
    config = transformers.BertConfig(vocab_size=120, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32)
    transformers.BertModel(config).save_pretrained(folder)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", "mast", "cell", "nucleus"]
    (folder / "vocab.txt").write_text("\n".join(vocab))
    transformers.BertTokenizer(str(folder / "vocab.txt")).save_pretrained(folder)
    teacher = Teacher("tiny", folder, 16, "cpu")
    cache = EmbeddingCache(tmp_path / "emb.sqlite")
    v = cache.encode(teacher, ["mast cell", "nucleus", "mast cell"])
    assert v.shape == (3, 16) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5) and np.allclose(v[0], v[2])
    teacher.encode = lambda texts: pytest.fail("cached texts must not be encoded again")
    assert np.allclose(EmbeddingCache(tmp_path / "emb.sqlite").encode(teacher, ["nucleus"]), v[1])


@pytest.mark.slow
def test_cube_commands_end_to_end_beat_the_identity_baseline(cli, tmp_path):
    pytest.importorskip("sentence_transformers")
    run = tmp_path / "run"
    r = cli("cube", "train", "-o", run, "--epochs", "20", "--cache", tmp_path / "c.sqlite", "--json")
    assert r.exit_code == 0, r.stderr
    test = r.json()["test"]
    assert test["cube"]["qa_similarity"] > test["identity"]["qa_similarity"]
    assert test["cube"]["retrieval_at_1"] >= test["identity"]["retrieval_at_1"]
    assert (run / "cube.safetensors").is_file() and (run / "checkpoint.safetensors").is_file()
    info = cli("cube", "info", run).json()
    assert info["shape"] == [6, 8, 8] and info["teachers"] == ["minilm"]
    again = cli("cube", "eval", run, "--cache", tmp_path / "c.sqlite", "--json").json()
    assert again["cube"] == pytest.approx(test["cube"])
    hits = cli("cube", "predict", run, "--text", "How do I tell a mast cell from a plasma cell?", "--cache", tmp_path / "c.sqlite", "--json").json()
    assert "plasma" in hits[0]["answer"]
    r = cli("cube", "train", "-o", run)
    assert r.exit_code == 2 and "--resume" in r.stderr


@pytest.mark.slow
def test_paired_embedding_files_train_too(cli, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 24)).astype(np.float32)
    Y = X @ rng.normal(size=(24, 24)).astype(np.float32)
    np.savez(tmp_path / "pairs.npz", X=X, Y=Y)
    r = cli("cube", "train", "--data", tmp_path / "pairs.npz", "-o", tmp_path / "run", "--epochs", "30", "--json")
    assert r.exit_code == 0, r.stderr
    test = r.json()["test"]
    assert test["cube"]["qa_similarity"] > test["identity"]["qa_similarity"] + 0.2
    r = cli("cube", "train", "--data", tmp_path / "missing.npz", "-o", tmp_path / "r2")
    assert r.exit_code == 3 and "Traceback" not in r.stderr
