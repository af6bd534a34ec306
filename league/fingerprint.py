"""What played a row: a fingerprint of the code behind an episode, and the lock that keeps one run per folder.

A tournament's rows are only comparable when the same code played them. A cell's id is a hash of what it plays
(:mod:`extractgym.league.cells`: the resolved scenario, seeds, policy files); the *code* that plays it is keyed
here: the sha256 of every source file of the layers an episode runs (``victims``, ``envs``, ``agents``,
``scenarios``, and the league's ``runner.py``, which turns an episode into a row; ``tests/test_layers.py``
guarantees they import nothing above them; ``cells.py`` is left out: all it decides is in the cell's key) and the
versions of the libraries that compute its numbers (torch, numpy, scikit-learn, stable-baselines3, transformers,
scipy, gymnasium, pettingzoo) and of Python. Every row records the fingerprint of the
process that played it; the output folder keeps the manifest of each fingerprint it has seen
(``OUT/fingerprints.json``), so a resume that meets rows from other code can say which files and versions changed.

Code outside those layers (the report, the CLI, the HTTP service, training) cannot change a row, so editing it
keeps every row valid. A body imported from outside the package is not covered: pin its version in its params.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from extractgym.league.spec import LeagueError

PACKAGE = Path(__file__).resolve().parent.parent
# the layers an episode runs, and the league files that turn a cell into a row
PLAYING = ("__init__.py", "victims", "envs", "agents", "scenarios", "league/runner.py")
SOURCE_SUFFIXES = (".py",)  # scenario YAML is part of the cell key already (its resolved contents)
LIBRARIES = ("torch", "numpy", "scikit-learn", "scipy", "stable-baselines3", "sb3-contrib", "transformers",
             "gymnasium", "pettingzoo")
MANIFESTS = "fingerprints.json"
LOCK = ".lock"


@dataclass(frozen=True)
class Fingerprint:
    """``digest`` (16 hex digits) of ``files`` (relative path -> sha256 prefix) and ``versions``."""

    digest: str
    files: dict[str, str]
    versions: dict[str, str | None]

    def manifest(self) -> dict[str, Any]:
        return {"files": self.files, "versions": self.versions}


def _files(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in PLAYING:
        top = root / part
        paths = [top] if top.is_file() else sorted(top.rglob("*")) if top.is_dir() else []
        for p in paths:
            if p.is_file() and p.suffix in SOURCE_SUFFIXES and "__pycache__" not in p.parts:
                out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
    return out


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def compute(root: Path | None = None) -> Fingerprint:
    """The fingerprint of the package at ``root`` (default: this one), read from disk now."""
    files, versions = _files(Path(root or PACKAGE)), _versions()
    digest = hashlib.sha256(json.dumps({"files": files, "versions": versions}, sort_keys=True).encode()).hexdigest()
    return Fingerprint(digest[:16], files, versions)


@lru_cache(maxsize=1)
def current() -> Fingerprint:
    """This process's fingerprint (computed once: a worker records it in every row it plays)."""
    return compute()


# -- the manifests of an output folder -----------------------------------------------------------
def load_manifests(out_dir: Path) -> dict[str, dict[str, Any]]:
    path = Path(out_dir) / MANIFESTS
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record(out_dir: Path, fp: Fingerprint) -> None:
    """Add ``fp``'s manifest to ``OUT/fingerprints.json`` (once)."""
    manifests = load_manifests(out_dir)
    if fp.digest in manifests:
        return
    manifests[fp.digest] = {**fp.manifest(), "first_seen": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())}
    tmp = Path(out_dir) / (MANIFESTS + ".tmp")
    tmp.write_text(json.dumps(manifests, indent=1, sort_keys=True) + "\n")
    tmp.replace(Path(out_dir) / MANIFESTS)


def changes(old: dict[str, Any] | None, new: Fingerprint, limit: int = 8) -> str:
    """What differs between a stored manifest and ``new``, in words (files changed, added, removed; versions)."""
    if not old:
        return "no manifest of the older code is kept here (rows from before fingerprints, or played elsewhere)"
    parts = []
    for key, label in (("versions", "version"), ("files", "file")):
        a, b = old.get(key) or {}, new.manifest()[key]
        changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
        if not changed:
            continue
        if key == "versions":
            parts += [f"{k} {a.get(k)} -> {b.get(k)}" for k in changed]
        else:
            shown = [f"{k} ({'added' if k not in a else 'removed' if k not in b else 'changed'})"
                     for k in changed[:limit]]
            more = f" and {len(changed) - limit} more" if len(changed) > limit else ""
            parts.append(f"{len(changed)} source {label}(s): {', '.join(shown)}{more}")
    return "; ".join(parts) or "nothing recorded differs"


def stale_message(out_dir: Path, stale: dict[str, int], total: int, fp: Fingerprint) -> str:
    """The refusal of a resume that meets rows from other code: which fingerprints, what changed, what to do."""
    manifests = load_manifests(out_dir)
    lines = [f"{sum(stale.values())} of {total} rows in {out_dir} were played by other code than this "
             f"(fingerprint {fp.digest}); mixing them with new rows would compare different games:"]
    for digest, n in sorted(stale.items(), key=lambda kv: -kv[1]):
        lines.append(f"  - {n} row(s) from {digest or 'no fingerprint'}: {changes(manifests.get(digest), fp)}")
    lines.append("Play them again with --rerun-stale, or keep them with --reuse-stale (the report then says so).")
    return "\n".join(lines)


# -- one run per output folder -------------------------------------------------------------------
class FolderLock:
    """An exclusive ``flock`` on ``OUT/.lock`` for the life of a run: a second run on the same folder is refused
    (:class:`LeagueError`, naming the holder) instead of playing every cell twice. The kernel drops the lock when
    the holder exits, even on ``kill -9``."""

    def __init__(self, out_dir: Path) -> None:
        self.path = Path(out_dir) / LOCK
        self.fd: int | None = None

    def __enter__(self) -> FolderLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LeagueError(f"{self.path.parent} is in use by another tournament ({holder}); wait for it to "
                              f"finish or give another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}".encode())
        self.fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


__all__ = ["Fingerprint", "FolderLock", "changes", "compute", "current", "load_manifests", "record",
           "stale_message"]
