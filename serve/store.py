"""The service's durable books: one SQLite file in WAL mode, committed per request and made durable in groups.

Every change of state happens inside :meth:`Store.transaction` (``BEGIN IMMEDIATE`` ... ``COMMIT``), and the
server answers a request only after its transaction committed *and* the write-ahead log holding it was flushed to
disk (:meth:`Store.durable`). That flush is the group commit: SQLite runs with ``synchronous=NORMAL`` (a ``COMMIT``
writes the log but does not ``fsync`` it), and one ``fsync`` of the log, outside the server's lock, makes every
transaction committed before it durable, so requests that commit while a flush is under way share the next one.
Since the log is written in commit order, what is durable is always a prefix of what was committed, and nothing is
answered before it is on disk (a crash of the process alone loses nothing committed: the log is in the page
cache). Checkpoints (the log copied into the database) run on their own connection after a flush, not in a
request's ``COMMIT``. Tables:

``ledger``
    one row per :class:`~extractgym.envs.api.LedgerEntry` (``seq`` is the entry's own sequence number).
``query_data``
    the request batch behind each ``query`` entry (the full batch as sent, float32 bytes or JSON texts), which
    is what rebuilds the stateful detectors on restart (a digest cannot).
``rounds``
    each closed round and the ledger length when it closed (where the detectors' ``end_round`` fell).
``owners``
    owners created and budgets set by the admin (the latest row per owner wins).
``account_keys``, ``owner_keys``
    SHA-256 digests of the keys handed out; a key itself is never stored.
``revoked_keys``
    the digests of revoked keys (rotated or revoked owner keys, configured keys that replaced others).
``snapshots``
    the server's state at a ledger position (:mod:`extractgym.serve.snapshot`): a restart loads the newest one and
    replays only the entries after it.
``idempotency``
    the answer to each request sent with an ``Idempotency-Key``, so a retry is neither charged nor counted twice.
``submissions``
    contest-mode scores.
``meta``
    what the database was created for (scenario fingerprint, seed): a restart on another scenario is refused.

``ledger``, ``query_data``, ``rounds``, ``revoked_keys`` and ``submissions`` are append-only: triggers
``RAISE(ABORT)`` on any ``UPDATE`` or ``DELETE``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import astuple, fields
from pathlib import Path
from typing import Any

import numpy as np

from extractgym.envs.api import Budget, LedgerEntry
from extractgym.victims import files

SCHEMA_VERSION = 2  # 2: revoked_keys and snapshots added (a version-1 database is upgraded in place)
APPEND_ONLY = ("ledger", "query_data", "rounds", "revoked_keys", "submissions")
CHECKPOINT_COMMITS = 1000  # commits after which a flush also checkpoints (the log then restarts from its start)
ENTRY_FIELDS = tuple(f.name for f in fields(LedgerEntry))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (
    seq INTEGER PRIMARY KEY, round INTEGER NOT NULL, kind TEXT NOT NULL, owner TEXT NOT NULL,
    account TEXT NOT NULL, service TEXT NOT NULL, n INTEGER NOT NULL, charge REAL NOT NULL,
    digest TEXT NOT NULL, note TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS query_data (
    seq INTEGER PRIMARY KEY REFERENCES ledger(seq), kind TEXT NOT NULL, shape TEXT NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (round INTEGER PRIMARY KEY, ledger_len INTEGER NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS owners (
    id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, budget TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS account_keys (hash TEXT PRIMARY KEY, account TEXT NOT NULL UNIQUE, owner TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS owner_keys (hash TEXT PRIMARY KEY, owner TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revoked_keys (hash TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
    ledger_len INTEGER PRIMARY KEY, rounds INTEGER NOT NULL, code TEXT NOT NULL, at REAL NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS idempotency (
    account TEXT NOT NULL, key TEXT NOT NULL, request TEXT NOT NULL, response TEXT NOT NULL,
    PRIMARY KEY (account, key));
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL, service TEXT NOT NULL, arch TEXT NOT NULL,
    accuracy REAL NOT NULL, fidelity REAL NOT NULL, sha256 TEXT NOT NULL, at REAL NOT NULL);
"""


def key_hash(key: str) -> str:
    """How a key is stored and looked up: its SHA-256, hex."""
    return hashlib.sha256(key.encode()).hexdigest()


class StoreError(RuntimeError):
    """The database cannot serve this server (another scenario, a newer schema, a broken ledger)."""


class DurabilityError(OSError):
    """The log could not be flushed: what was committed may not be on disk, and nothing more may be answered."""


class Store:
    """The SQLite database behind one server. Not thread-safe by itself: the server serialises all calls but
    :meth:`durable`, which any number of threads may wait in at once."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"database {self.path}: cannot create its folder ({e.strerror or e})") from None
        files.sqlite_file(self.path, "database", StoreError)  # a folder, a FIFO or a non-SQLite file is named
        try:
            # autocommit mode: transactions are the explicit BEGIN IMMEDIATE / COMMIT of transaction()
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # COMMIT writes the log; durable() flushes it (group commit)
            self.db.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run after a flush, on their own connection
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(_SCHEMA)
            for table in APPEND_ONLY:
                for op in ("UPDATE", "DELETE"):
                    self.db.execute(f"CREATE TRIGGER IF NOT EXISTS {table}_no_{op.lower()} BEFORE {op} ON {table} "
                                    f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END")
        except sqlite3.Error as e:  # a damaged file behind a valid header, a read-only one, a locked one
            raise StoreError(f"database {self.path} cannot be used ({type(e).__name__}: {str(e)[:200]})") from None
        self.in_transaction = False
        self.wal = Path(f"{self.path}-wal")
        self._flush = threading.Condition()
        self._committed = self._flushed = 0  # commits made / commits known durable
        self._flushing, self._failed = False, False
        self._since_checkpoint = 0
        self._wal_fd: int | None = None
        self._checkpointer: sqlite3.Connection | None = None
        self.flushes = 0  # fsyncs done (what the benchmark reports as commits per flush)

    def close(self) -> None:
        with self._flush:
            if self._wal_fd is not None:
                os.close(self._wal_fd)
                self._wal_fd = None
            if self._checkpointer is not None:
                self._checkpointer.close()
                self._checkpointer = None
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` and re-raise on any error (the commit's included)."""
        if self.in_transaction:
            raise RuntimeError("transactions do not nest")
        self.db.execute("BEGIN IMMEDIATE")
        self.in_transaction = True
        try:
            yield
            self.commit()
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        finally:
            self.in_transaction = False

    def commit(self) -> None:
        self.db.execute("COMMIT")
        with self._flush:
            self._committed += 1

    @property
    def committed(self) -> int:
        """How many transactions were committed so far: :meth:`durable` of this makes all of them durable."""
        return self._committed

    def durable(self, upto: int | None = None) -> None:
        """Return once the first ``upto`` commits (default: all so far) are on disk.

        One caller at a time flushes the log (``fsync``) for every commit made before the flush began; the others
        wait for it and return if it covered them, so concurrent requests share flushes. Called without the
        server's lock. A failed flush raises :class:`DurabilityError` here and in every later call (after a failed
        ``fsync`` the kernel may have dropped the pages: retrying cannot tell).
        """
        with self._flush:
            target = self._committed if upto is None else upto
            while self._flushed < target:
                if self._failed:
                    raise DurabilityError("the write-ahead log could not be flushed to disk")
                if self._flushing:
                    self._flush.wait()
                    continue
                self._flushing, covered = True, self._committed
                self._flush.release()
                try:
                    ok = self._fsync()
                finally:
                    self._flush.acquire()
                    self._flushing = False
                    self._flush.notify_all()
                if not ok:
                    self._failed = True
                    raise DurabilityError("the write-ahead log could not be flushed to disk")
                self._flushed = max(self._flushed, covered)
                self.flushes += 1
            if self._failed:
                raise DurabilityError("the write-ahead log could not be flushed to disk")

    def _fsync(self) -> bool:
        """Flush the log (its current file: reopened if SQLite made a new one), then checkpoint now and then."""
        try:
            if self._wal_fd is not None and os.fstat(self._wal_fd).st_ino != os.stat(self.wal).st_ino:
                os.close(self._wal_fd)
                self._wal_fd = None
            if self._wal_fd is None:
                self._wal_fd = os.open(self.wal, os.O_RDONLY)
            os.fsync(self._wal_fd)
        except OSError:
            return False
        if self._committed - self._since_checkpoint >= CHECKPOINT_COMMITS:
            self._since_checkpoint = self._committed
            self.checkpoint()
        return True

    def checkpoint(self) -> None:
        """Copy the flushed log into the database on a connection of its own (``PASSIVE``: writers go on)."""
        if self._checkpointer is None:
            self._checkpointer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _require_transaction(self) -> None:
        if not self.in_transaction:
            raise RuntimeError("the books change only inside Store.transaction()")

    # -- meta ------------------------------------------------------------------------------------------
    def meta(self) -> dict[str, str]:
        return dict(self.db.execute("SELECT key, value FROM meta").fetchall())

    def set_meta(self, values: dict[str, str]) -> None:
        self._require_transaction()
        self.db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", sorted(values.items()))

    # -- ledger ----------------------------------------------------------------------------------------
    def add_entry(self, entry: LedgerEntry) -> None:
        self._require_transaction()
        self.db.execute(f"INSERT INTO ledger ({', '.join(ENTRY_FIELDS)}) VALUES ({', '.join('?' * len(ENTRY_FIELDS))})",
                        astuple(entry))

    def add_query_data(self, seq: int, x: np.ndarray) -> None:
        self._require_transaction()
        if x.dtype == object:
            row = ("text", "[]", json.dumps(list(x)).encode())
        else:
            row = ("float32", json.dumps(list(x.shape)), np.ascontiguousarray(x, dtype=np.float32).tobytes())
        self.db.execute("INSERT INTO query_data (seq, kind, shape, data) VALUES (?, ?, ?, ?)", (seq, *row))

    def entries(self, after: int = -1, limit: int | None = None) -> list[LedgerEntry]:
        sql = f"SELECT {', '.join(ENTRY_FIELDS)} FROM ledger WHERE seq > ? ORDER BY seq"
        rows = self.db.execute(sql + (" LIMIT ?" if limit is not None else ""),
                               (after, limit) if limit is not None else (after,)).fetchall()
        return [LedgerEntry(*row) for row in rows]

    def entries_between(self, start: int, stop: int) -> list[LedgerEntry]:
        """The entries with ``start <= seq < stop``."""
        sql = f"SELECT {', '.join(ENTRY_FIELDS)} FROM ledger WHERE seq >= ? AND seq < ? ORDER BY seq"
        return [LedgerEntry(*row) for row in self.db.execute(sql, (start, stop))]

    def query_data(self, start: int = 0, stop: int = 2**62) -> dict[int, np.ndarray]:
        """The stored batches of the query entries with ``start <= seq < stop``."""
        out = {}
        for seq, kind, shape, data in self.db.execute("SELECT seq, kind, shape, data FROM query_data "
                                                      "WHERE seq >= ? AND seq < ?", (start, stop)):
            if kind == "text":
                items = json.loads(data)
                arr = np.empty(len(items), dtype=object)
                arr[:] = items
            else:
                arr = np.frombuffer(data, dtype=np.float32).reshape(json.loads(shape))
            out[seq] = arr
        return out

    # -- rounds ----------------------------------------------------------------------------------------
    def add_round(self, round_index: int, ledger_len: int, at: float) -> None:
        self._require_transaction()
        self.db.execute("INSERT INTO rounds (round, ledger_len, at) VALUES (?, ?, ?)", (round_index, ledger_len, at))

    def rounds(self) -> list[tuple[int, int]]:
        return self.db.execute("SELECT round, ledger_len FROM rounds ORDER BY round").fetchall()

    # -- owners and keys -------------------------------------------------------------------------------
    def set_owner(self, owner: str, budget: Budget, created: bool) -> None:
        self._require_transaction()
        self.db.execute("INSERT INTO owners (owner, budget, created) VALUES (?, ?, ?)",
                        (owner, json.dumps(budget.__dict__), int(created)))

    def owners(self) -> list[tuple[str, Budget, bool]]:
        rows = self.db.execute("SELECT owner, budget, created FROM owners ORDER BY id").fetchall()
        return [(o, Budget(**json.loads(b)), bool(c)) for o, b, c in rows]

    def add_account_key(self, key: str, account: str, owner: str) -> None:
        self._require_transaction()
        self.db.execute("INSERT INTO account_keys (hash, account, owner) VALUES (?, ?, ?)", (key_hash(key), account, owner))

    def account_keys(self) -> dict[str, tuple[str, str]]:
        return {h: (a, o) for h, a, o in self.db.execute("SELECT hash, account, owner FROM account_keys")}

    def add_owner_key(self, key: str, owner: str) -> None:
        self._require_transaction()
        self.db.execute("INSERT OR IGNORE INTO owner_keys (hash, owner) VALUES (?, ?)", (key_hash(key), owner))

    def owner_keys(self) -> dict[str, str]:
        """Digest -> owner of every owner key that is not revoked."""
        return dict(self.db.execute("SELECT hash, owner FROM owner_keys WHERE hash NOT IN "
                                    "(SELECT hash FROM revoked_keys)").fetchall())

    def revoke_keys(self, hashes: list[str], at: float) -> None:
        self._require_transaction()
        self.db.executemany("INSERT OR IGNORE INTO revoked_keys (hash, at) VALUES (?, ?)", [(h, at) for h in hashes])

    def revoked(self, hash_: str) -> bool:
        return self.db.execute("SELECT 1 FROM revoked_keys WHERE hash = ?", (hash_,)).fetchone() is not None

    # -- snapshots -------------------------------------------------------------------------------------
    def add_snapshot(self, ledger_len: int, rounds: int, code: str, at: float, data: bytes, keep: int = 2) -> None:
        """Store a snapshot and drop all but the ``keep`` newest."""
        self._require_transaction()
        self.db.execute("INSERT OR REPLACE INTO snapshots (ledger_len, rounds, code, at, data) VALUES (?, ?, ?, ?, ?)",
                        (ledger_len, rounds, code, at, data))
        self.db.execute("DELETE FROM snapshots WHERE ledger_len NOT IN "
                        "(SELECT ledger_len FROM snapshots ORDER BY ledger_len DESC LIMIT ?)", (keep,))

    def snapshots(self) -> list[tuple[int, int, str]]:
        """``(ledger_len, rounds, code)`` of the stored snapshots, newest first."""
        return self.db.execute("SELECT ledger_len, rounds, code FROM snapshots ORDER BY ledger_len DESC").fetchall()

    def snapshot(self, ledger_len: int) -> bytes:
        return bytes(self.db.execute("SELECT data FROM snapshots WHERE ledger_len = ?", (ledger_len,)).fetchone()[0])

    def ledger_len(self) -> int:
        """How many entries the ledger holds (its last ``seq`` + 1)."""
        row = self.db.execute("SELECT MAX(seq) FROM ledger").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def query_counts(self, after: int = -1) -> dict[str, int]:
        """Per account, its ``query`` entries with ``seq > after``."""
        return dict(self.db.execute("SELECT account, COUNT(*) FROM ledger WHERE kind = 'query' AND seq > ? "
                                    "GROUP BY account", (after,)).fetchall())

    # -- idempotency -----------------------------------------------------------------------------------
    def idempotent(self, account: str, key: str) -> tuple[str, dict[str, Any]] | None:
        row = self.db.execute("SELECT request, response FROM idempotency WHERE account = ? AND key = ?",
                              (account, key)).fetchone()
        return (row[0], json.loads(row[1])) if row else None

    def add_idempotent(self, account: str, key: str, request: str, response: dict[str, Any]) -> None:
        self._require_transaction()
        self.db.execute("INSERT INTO idempotency (account, key, request, response) VALUES (?, ?, ?, ?)",
                        (account, key, request, json.dumps(response)))

    # -- submissions -----------------------------------------------------------------------------------
    def add_submission(self, owner: str, service: str, arch: str, accuracy: float, fidelity: float, sha256: str,
                       at: float) -> int:
        self._require_transaction()
        cur = self.db.execute("INSERT INTO submissions (owner, service, arch, accuracy, fidelity, sha256, at) "
                              "VALUES (?, ?, ?, ?, ?, ?, ?)", (owner, service, arch, accuracy, fidelity, sha256, at))
        return int(cur.lastrowid)

    def submissions(self, owner: str | None = None) -> list[dict[str, Any]]:
        cols = ("id", "owner", "service", "arch", "accuracy", "fidelity", "sha256", "at")
        sql = f"SELECT {', '.join(cols)} FROM submissions" + (" WHERE owner = ?" if owner is not None else "")
        return [dict(zip(cols, row, strict=True))
                for row in self.db.execute(sql + " ORDER BY id", (owner,) if owner is not None else ())]
