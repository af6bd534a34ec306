"""On-disk cache for trained victims, owner and detector models, parsed datasets and encoder outputs.

Location: ``$EXTRACTGYM_CACHE`` or ``~/.cache/extractgym``. Never committed; everything in it is rebuilt from seeds,
keyed by everything that determines it.

The cache is an optimisation, never a source of failure:

* a folder that cannot be created or written (read-only, a file in the way) is replaced by a private temporary
  folder for the rest of the process, with one warning naming the folder and the reason;
* an entry that cannot be read back (truncated, empty, garbage, written by another version) is deleted and
  rebuilt, with a warning naming the file;
* entries are written to a unique temporary name and renamed into place, so a crash or two processes writing the
  same entry never leave a half-written file; a temporary file left by a process that died mid-write (``kill -9``)
  is removed the next time a process uses that folder;
* the private temporary folder of the first point is removed when the process exits.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch

# Bump when a change to data, architectures or training would make old cache entries wrong.
CACHE_VERSION = 2

T = TypeVar("T")
_FALLBACK: Path | None = None
_SWEPT: set[Path] = set()
STALE_SECONDS = 6 * 3600  # a temporary file this old is stale even if its writer's pid is in use again


def cache_root() -> Path:
    return Path(os.environ.get("EXTRACTGYM_CACHE") or Path.home() / ".cache" / "extractgym")


def cache_dir(*parts: str) -> Path:
    """The cache folder ``parts`` (created), or a private temporary one if the cache cannot be written."""
    global _FALLBACK
    path = cache_root().joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise PermissionError(f"{path} is not writable")
        if path not in _SWEPT:
            _SWEPT.add(path)
            sweep(path)
        return path
    except OSError as e:
        if _FALLBACK is None:
            _FALLBACK = Path(tempfile.mkdtemp(prefix="extractgym-cache-"))
            atexit.register(shutil.rmtree, _FALLBACK, True)
            warnings.warn(f"cache folder {cache_root()} cannot be used ({e.strerror or e}); caching in "
                          f"{_FALLBACK} for this process (set EXTRACTGYM_CACHE to a writable folder)", stacklevel=2)
        path = _FALLBACK.joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path


def sweep(folder: Path) -> int:
    """Remove the temporary files of :func:`write_atomic` that a dead process left in ``folder``; how many."""
    removed = 0
    try:
        candidates = [p for p in folder.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    except OSError:
        return 0
    for p in candidates:
        parts = p.name.split(".")  # ".NAME.PID.HEX8.tmp", as write_atomic names them; other files are left alone
        if len(parts) < 5 or not parts[-3].isdigit() or len(parts[-2]) != 8:
            continue
        try:
            old = time.time() - p.stat().st_mtime > STALE_SECONDS
            if old or not _alive(int(parts[-3])):
                p.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists, owned by someone else
        return True
    return True


def cache_key(**fields: object) -> str:
    """A short stable hash of ``fields`` (JSON-serialisable values) plus :data:`CACHE_VERSION`."""
    blob = json.dumps({"_v": CACHE_VERSION, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def write_atomic(path: Path, save: Callable[[Path], None]) -> None:
    """Write ``path`` via ``save(tmp)`` to a unique temporary name, then rename it into place (a failed write of a
    cache entry only warns: the value is still returned to the caller, just not kept)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        save(tmp)
        os.replace(tmp, path)
    except OSError as e:
        warnings.warn(f"could not write cache entry {path} ({e.strerror or e}); continuing without it", stacklevel=3)
        tmp.unlink(missing_ok=True)


def read_or_rebuild(path: Path, read: Callable[[Path], T], build: Callable[[], T], save: Callable[[T, Path], None]) -> T:
    """``read(path)`` if the entry exists and reads back; otherwise ``build()``, saved with ``save(value, tmp)``.

    An entry that fails to read (truncated, empty, garbage) is removed and rebuilt, with a warning naming it.
    """
    if path.exists():
        try:
            return read(path)
        except Exception as e:  # any unreadable entry: the cache must never be why a run fails
            warnings.warn(f"cache entry {path} is unreadable ({type(e).__name__}: {str(e)[:120]}); rebuilding it",
                          stacklevel=2)
            try:
                path.unlink()
            except OSError:
                pass
    value = build()
    write_atomic(path, lambda tmp: save(value, tmp))
    return value


def cached_weights(path: Path, model: torch.nn.Module, train: Callable[[torch.nn.Module], None]) -> torch.nn.Module:
    """Load ``model``'s weights from ``path``, or train it (``train(model)``) and keep its weights there."""

    def read(p: Path) -> torch.nn.Module:
        model.load_state_dict(torch.load(p, weights_only=True))
        return model

    def build() -> torch.nn.Module:
        with torch.enable_grad():  # callers may be inside no_grad (e.g. encoding queries on first use)
            train(model)
        return model

    def save(m: torch.nn.Module, tmp: Path) -> None:
        with open(tmp, "wb") as f:
            torch.save(m.state_dict(), f)

    return read_or_rebuild(path, read, build, save)


def cached_model(kind: str, build: Callable[[], torch.nn.Module], train: Callable[[torch.nn.Module], None],
                 **key: object) -> torch.nn.Module:
    """Build a model, train it once and keep its weights under ``cache_dir("detectors")`` (keyed by ``key``);
    what detectors and attacker tactics train on their own data (encoders, auto-encoders). Loaded once per process
    and shared: callers only read it."""
    path = cache_dir("detectors") / f"{kind}-{cache_key(kind=kind, **key)}.pt"
    model = _MODELS.get(path)
    if model is None:  # once per process: every episode's detector reads the same weights (none trains them further)
        model = _MODELS[path] = cached_weights(path, build(), train).eval()
    return model


_MODELS: dict[Path, torch.nn.Module] = {}
