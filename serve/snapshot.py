"""Snapshots of a served game, so that a restart replays only the ledger's tail.

A restart used to rebuild everything by replay (:mod:`extractgym.serve.replay`): every stored entry applied to the
books and every stored request fed again through the defenders, so its time grew with the ledger. Now the server
also stores, every ``snapshot_every`` entries, its whole mutable state as it stands after a commit (the game: the
API's accounts, wallets, round and knobs, every defender with its detectors' histories, counters and random
generators, the benign customers, the referee's audit; the brains and their generators; per-account request
counts), and a restart loads the newest snapshot, then replays only the entries after it, exactly as before. The
replay stays the definition (a test checks that a restart from a snapshot equals a full replay and a server that
never stopped), and the fallback whenever a snapshot cannot be used.

What a snapshot does not hold: the ledger itself (it is in its table; the server's ledger reads old entries from
there, :class:`StoredLedger`), and what the build makes and never changes, which the fresh build of the restart
already has: models (``torch.nn.Module``: victims, encoders) and large arrays (data sets, test sets, training
data). Those are pickled as references (:class:`Shared`): their position in a deterministic walk of the freshly
built game, so a snapshot stays small and the restart's own build supplies them. A large array that changed since
the build is pickled by value (each is fingerprinted at the build and checked at every snapshot); a model is
assumed fixed after the build (no shipped defender trains during play).

Pickle, and the trust it needs: a snapshot is the server's own bytes in the server's own database, read back only
by the server. It is also signed: an HMAC of the bytes under the operator's secret (:func:`extractgym.victims.secret.
secret_key`, a file outside the database), checked before anything is unpickled, so a database file handed over by
someone else (``serve --db their.db``) can rewrite the books, which the replay then rebuilds, but cannot run code in
the server: its snapshots fail the check and are skipped. A snapshot written by other code (any change to the
package's source) is ignored too: ``code`` fingerprints the source, and the restart replays instead.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import pickle
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from extractgym.envs.api import Ledger, LedgerEntry

LARGE = 64 * 2**10  # arrays from this many bytes on are shared with the build, not pickled
_CODE: str | None = None


def code_fingerprint() -> str:
    """SHA-256 of the package's Python source: a snapshot is read only by the code that wrote it."""
    global _CODE
    if _CODE is None:
        root = Path(__file__).resolve().parents[1]
        h = hashlib.sha256()
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(root).as_posix()
            if rel.startswith(("tests/", "benchmarks/", ".")) or "/." in rel:
                continue
            h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
        _CODE = h.hexdigest()
    return _CODE


def _fingerprint(arr: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(arr).view(np.uint8).reshape(-1).data, digest_size=16).hexdigest()


class Shared:
    """The objects a freshly built game shares with any later state of it: its models and large arrays, in the
    order a pickle of the fresh game meets them (the same order for every build of the same scenario and seed)."""

    def __init__(self, game: Any) -> None:
        import torch

        self.objects: list[Any] = []
        self.index: dict[int, int] = {}
        self.prints: dict[int, str] = {}

        def persistent_id(obj: Any) -> Any:
            if isinstance(obj, torch.nn.Module) or (isinstance(obj, np.ndarray) and obj.nbytes >= LARGE
                                                    and obj.dtype != object):
                i = self.index.get(id(obj))
                if i is None:
                    i = self.index[id(obj)] = len(self.objects)
                    self.objects.append(obj)
                    if isinstance(obj, np.ndarray):
                        self.prints[i] = _fingerprint(obj)
                return ("shared", i)
            if isinstance(obj, Ledger):
                return ("ledger",)
            return None

        pickler = pickle.Pickler(_Null(), protocol=pickle.HIGHEST_PROTOCOL)
        pickler.persistent_id = persistent_id  # type: ignore[method-assign]
        pickler.dump(game)


class _Null(io.RawIOBase):
    def write(self, b: Any) -> int:
        return len(b)


def dump(state: Any, shared: Shared, owner: Any) -> bytes:
    """Pickle ``state``: ``shared``'s unchanged objects, the ledger and ``owner`` (the server) as references."""
    changed = {i for i, p in shared.prints.items() if _fingerprint(shared.objects[i]) != p}

    def persistent_id(obj: Any) -> Any:
        i = shared.index.get(id(obj))
        if i is not None and shared.objects[i] is obj and i not in changed:
            return ("shared", i)
        if isinstance(obj, Ledger):
            return ("ledger",)
        if obj is owner:
            return ("owner",)
        return None

    out = io.BytesIO()
    pickler = pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.persistent_id = persistent_id  # type: ignore[method-assign]
    pickler.dump(state)
    body = out.getvalue()
    return _mac(body) + body


class UnsignedSnapshot(ValueError):
    """A snapshot whose signature does not match this operator's secret: never unpickled."""


def _mac(body: bytes) -> bytes:
    from extractgym.victims.secret import secret_key

    return hmac.new(secret_key(), b"extractgym serve snapshot\0" + body, hashlib.sha256).digest()


def load(data: bytes, shared: Shared, ledger: Ledger, owner: Any) -> Any:
    """Unpickle what :func:`dump` wrote, with ``shared`` from a fresh build of the same scenario and seed.

    Raises:
        UnsignedSnapshot: the bytes were not signed under this operator's secret (checked before unpickling).
    """
    mac, data = data[:32], data[32:]
    if len(mac) != 32 or not hmac.compare_digest(mac, _mac(data)):
        raise UnsignedSnapshot("the snapshot is not signed by this server's secret: it is not read")

    def persistent_load(pid: Any) -> Any:
        if pid[0] == "shared":
            return shared.objects[pid[1]]
        return ledger if pid[0] == "ledger" else owner

    unpickler = pickle.Unpickler(io.BytesIO(data))
    unpickler.persistent_load = persistent_load  # type: ignore[method-assign]
    return unpickler.load()


class StoredLedger(Ledger):
    """The server's ledger: entries before ``base`` stay in the database (read when asked for), later ones are in
    memory as in :class:`~extractgym.envs.api.Ledger`. The whole ledger's digest is the same as a ledger holding
    every entry; its prefix (``base`` entries) is hashed by a thread of its own once the restart is done
    (:meth:`start_hashing`), so a restart does not wait for it (the first digest asked for does, if it is not
    done)."""

    def __init__(self, read: Callable[[int, int], list[LedgerEntry]], base: int = 0, db: Path | None = None,
                 sink: Callable[[LedgerEntry], None] | None = None) -> None:
        super().__init__(sink)
        self._read, self._base = read, base
        self._hasher = hashlib.sha256()
        self._hashed = 0  # entries in _hasher
        self._prefix: threading.Thread | None = None
        self._stop, self._hurry = threading.Event(), threading.Event()
        self._db = db

    def start_hashing(self, share: float = 0.25) -> None:
        """Hash the prefix in a thread of its own, taking about ``share`` of one core (it yields the interpreter
        between chunks, so requests served meanwhile are barely slowed); call once the restart is done."""
        if self._base and self._db is not None and self._prefix is None and self._hashed < self._base:
            self._prefix = threading.Thread(target=self._hash_prefix, args=(self._db, share), name="ledger-digest",
                                            daemon=True)
            self._prefix.start()

    def _hash_prefix(self, db: Path, share: float) -> None:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, check_same_thread=False)
        try:
            hasher = self._hasher
            for rows in _chunks(conn, 0, self._base, size=2000):
                t0 = time.perf_counter()
                if self._stop.is_set():
                    return
                for e in rows:
                    hasher.update(repr(e).encode())
                if not self._hurry.is_set():
                    self._stop.wait((time.perf_counter() - t0) * (1.0 - share) / share)
            self._hashed = self._base
        finally:
            conn.close()

    def close(self) -> None:
        """Stop hashing the prefix (the server is closing; a later digest would hash it here)."""
        if self._prefix is not None:
            self._stop.set()
            self._prefix.join()
            self._prefix = None
            if self._hashed < self._base:
                self._hasher, self._hashed = hashlib.sha256(), 0

    def append(self, **fields: Any) -> LedgerEntry:
        entry = LedgerEntry(seq=len(self), **fields)
        if self.sink is not None:
            self.sink(entry)
        self._entries.append(entry)
        return entry

    def since(self, start: int) -> tuple[LedgerEntry, ...]:
        if start >= self._base:
            return tuple(self._entries[start - self._base:])
        return (*self._read(start, self._base), *self._entries)

    def __len__(self) -> int:
        return self._base + len(self._entries)

    def __iter__(self) -> Iterator[LedgerEntry]:
        return iter(self.since(0))

    def __getitem__(self, i: int) -> LedgerEntry:
        i = i + len(self) if i < 0 else i
        if i >= self._base:
            return self._entries[i - self._base]
        if i < 0:
            raise IndexError(i)
        return self._read(i, i + 1)[0]

    def digest(self) -> str:
        if self._prefix is not None:
            self._hurry.set()  # someone is waiting: no more pauses
            self._prefix.join()
            self._prefix = None
            if self._hashed < self._base:  # stopped half-way: start over
                self._hasher, self._hashed = hashlib.sha256(), 0
        if self._hashed < self._base:  # no thread (no database path given): hash the prefix here
            for e in self._read(self._hashed, self._base):
                self._hasher.update(repr(e).encode())
            self._hashed = self._base
        for e in self._entries[self._hashed - self._base:]:
            self._hasher.update(repr(e).encode())
        self._hashed = len(self)
        return self._hasher.copy().hexdigest()


def _chunks(conn: sqlite3.Connection, start: int, stop: int, size: int = 50_000) -> Iterator[list[LedgerEntry]]:
    from extractgym.serve.store import ENTRY_FIELDS

    sql = f"SELECT {', '.join(ENTRY_FIELDS)} FROM ledger WHERE seq >= ? AND seq < ? ORDER BY seq"
    for lo in range(start, stop, size):
        yield [LedgerEntry(*row) for row in conn.execute(sql, (lo, min(stop, lo + size)))]
