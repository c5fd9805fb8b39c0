"""Datasets of the cube trainer: dialogue Q->A pairs, autoencoder texts, paired embedding files."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path

import numpy as np

from mastctl.errors import InputError

BUILTIN = "mast-cell-dialogue"  # the shipped set: mastctl/cube/dialogue.jsonl
DIFFICULTY = {"easy": 0, "medium": 1, "hard": 2}


@dataclass(frozen=True)
class Pair:
    id: str  # the original question's id; paraphrases share it (splits never separate them)
    question: str
    answer: str
    difficulty: str = "medium"
    quality: float = 1.0
    paraphrase: bool = False


def load_pairs(source: str | Path = BUILTIN) -> list[Pair]:
    """Pairs of a JSONL file ({question, answer, [id, difficulty, quality]}) or the built-in set."""
    if str(source) == BUILTIN:
        text = (resources.files("mastctl.cube") / "dialogue.jsonl").read_text(encoding="utf-8")
        where = BUILTIN
    else:
        try:
            text = Path(source).read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(f"{source}: cannot read: {exc.strerror or exc}") from None
        where = str(source)
    pairs = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pair = Pair(str(row.get("id") or f"line{n}"), str(row["question"]).strip(), str(row["answer"]).strip(),
                        str(row.get("difficulty", "medium")), float(row.get("quality", 1.0)))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}:{n}: a pair needs question and answer (and numeric quality): {exc}") from None
        if pair.difficulty not in DIFFICULTY:
            raise InputError(f"{where}:{n}: difficulty must be easy, medium or hard, got {pair.difficulty!r}")
        if not pair.question or not pair.answer:
            raise InputError(f"{where}:{n}: empty question or answer")
        pairs.append(pair)
    if not pairs:
        raise InputError(f"{where}: no question/answer pairs")
    return pairs


def filter_quality(pairs: list[Pair], threshold: float) -> list[Pair]:
    return [p for p in pairs if p.quality >= threshold]


# Rule-based paraphrases of questions: new wording, same answer.
_REWRITES = [
    (r"^What does (.+) look like in H&E\?$", ["How does {0} appear in H&E?", "Describe {0} in an H&E section."]),
    (r"^How do you tell (.+) from (.+)\?$", ["How can {0} be distinguished from {1}?", "What separates {0} from {1}?"]),
    (r"^What is (.+)\?$", ["Could you explain {0}?", "Define {0}."]),
    (r"^Why (.+)\?$", ["What is the reason {0}?"]),
    (r"^Where (.+)\?$", ["In which place {0}?"]),
    (r"^How (.+)\?$", ["Explain how {0}."]),
    (r"^(Is|Are|Do|Does|Can) (.+)\?$", ["Tell me: {0} {1}?"]),
]


def paraphrases(question: str) -> list[str]:
    for pattern, templates in _REWRITES:
        m = re.match(pattern, question)
        if m:
            groups = [g[0].lower() + g[1:] if g and g[:2] != g[:2].upper() else g for g in m.groups()]
            return [t.format(*groups) for t in templates]
    return []


def augment(pairs: list[Pair], per_pair: int = 1, seed: int = 0) -> list[Pair]:
    """The pairs plus up to ``per_pair`` paraphrased questions each (same id, same answer)."""
    rng = random.Random(seed)
    out = list(pairs)
    for p in pairs:
        options = paraphrases(p.question)
        rng.shuffle(options)
        out.extend(replace(p, question=q, paraphrase=True) for q in options[:per_pair])
    return out


def split(pairs: list[Pair], val: float = 0.15, test: float = 0.2, seed: int = 0) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """Train/validation/test by question id: a question and its paraphrases land in one split; test holds originals only."""
    ids = sorted({p.id for p in pairs})
    random.Random(seed).shuffle(ids)
    n_test, n_val = int(round(len(ids) * test)), int(round(len(ids) * val))
    test_ids, val_ids = set(ids[:n_test]), set(ids[n_test:n_test + n_val])
    train = [p for p in pairs if p.id not in test_ids and p.id not in val_ids]
    valid = [p for p in pairs if p.id in val_ids and not p.paraphrase]
    tst = [p for p in pairs if p.id in test_ids and not p.paraphrase]
    return train, valid, tst


def load_embedding_pairs(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Paired embeddings from an .npz with arrays X and Y (e.g. H&E crop -> IHC crop embeddings)."""
    try:
        with np.load(path) as data:
            X, Y = np.asarray(data["X"], np.float32), np.asarray(data["Y"], np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"{path}: expected an .npz with arrays X and Y: {exc}") from None
    if X.ndim != 2 or Y.ndim != 2 or len(X) != len(Y) or len(X) == 0:
        raise InputError(f"{path}: X and Y must be 2-D arrays with the same number of rows, got {X.shape} and {Y.shape}")
    return X, Y
