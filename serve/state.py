"""The served prediction API: a scenario's own API and defenders, with durable books (no HTTP here).

:class:`ServiceServer` builds the scenario's game with :class:`~extractgym.scenarios.factory.ScenarioFactory`,
exactly as ``make_env`` does (same services, prices, free quotas, rate limits, defender objects, calibration and
seeds), and keeps its :class:`~extractgym.envs.api.PredictionAPI` and bound defenders. The attacker seats' bodies
are never played: each seat is an *owner* (``attacker_0``, ...) with the scenario's budget, which real clients
act for with an owner key. Benign customers are simulated only when asked (``benign=True``), at each round's end.

Every request runs under one process-wide lock (the API is single-threaded) as:
``BEGIN IMMEDIATE`` -> the simulator's gate (:meth:`PredictionAPI.query`: validation, rate limit, budgets, the
defenders' screen and shape) -> the ledger rows and the request's batch -> ``COMMIT``; then, without the lock, the
wait until the log holding that commit is flushed (group commit, :meth:`~extractgym.serve.store.Store.durable`:
one ``fsync`` for every request committed meanwhile) -> the answer. The server
plugs into the API's own seams: the ledger's ``sink`` writes each entry into the open transaction, and the API's
``on_query`` hook stores each query's batch beside its entry. If anything fails after the gate changed state (the
commit included), the transaction rolls back and the in-memory state is rebuilt from the database before the next
request. Rounds open and close with the game's own :meth:`~extractgym.envs.game.Game.begin_round` and
:meth:`~extractgym.envs.game.Game.end_round`.

A restart (or that rebuild) builds a fresh game from the same scenario and seed and restores it from the
database: from the newest snapshot of the state (:mod:`extractgym.serve.snapshot`, taken every
``snapshot_every`` entries), then, for the entries after it (all of them without a snapshot),
:func:`~extractgym.serve.replay.replay` applies the stored ledger entries to accounts, wallets and bans;
:func:`~extractgym.serve.replay.replay_defences` feeds the stored requests to the defenders through the API's own
:meth:`~extractgym.envs.api.PredictionAPI.defend`, with the game's ``end_round`` at the stored round boundaries
(why replay is the definition: see :mod:`extractgym.serve.replay`). Simulated benign customers' own generator is
re-seeded on restart and their utility tally restarts (their accounts and traffic are in the ledger like anyone's).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from extractgym.envs.api import Account, Budget, LedgerEntry
from extractgym.envs.errors import InvalidQuery, QueryRefused
from extractgym.envs.game import Game, observation_size
from extractgym.envs.protocols import DEFENDER, SeatInfo, knob_values
from extractgym.scenarios.factory import ScenarioFactory
from extractgym.scenarios.schema import Scenario, load_scenario
from extractgym.serve.replay import replay, replay_defences
from extractgym.serve.snapshot import Shared, StoredLedger, code_fingerprint, dump, load
from extractgym.serve.store import SCHEMA_VERSION, DurabilityError, Store, key_hash
from extractgym.victims.base import InputSpec

SERVABLE_BRAINS = ("preset", "random")  # brains that read no observation (the server has no game observations)


class ServiceError(Exception):
    """A request the server refuses outside the simulator's own refusals, with its HTTP status."""

    def __init__(self, status: int, reason: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.reason, self.message = status, reason, message
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class ServerConfig:
    """How to serve a scenario.

    Attributes:
        scenario: shipped name, YAML path, dict or :class:`Scenario`.
        db: the SQLite file (created if missing; a restart on it restores the books).
        seed: the game's seed (default: the scenario's).
        benign: simulate the scenario's benign customers at each round's end.
        owner_keys: ``{owner: key}`` to accept (hashed into the database); a key given here for an owner revokes
            that owner's other keys, so a restart with a new key locks the old one out.
        admin_key: the admin endpoints' key.
        round_seconds: close a round every this many seconds (``None``: only ``POST /v1/admin/rounds/next``; a
            rate-limited request then gets no ``Retry-After``, since nobody knows when the operator closes it).
        max_batch: most queries in one request.
        max_submissions: contest snapshots scored per owner (each score reveals a little about the test set).
        max_upload: largest contest upload, bytes.
        max_tensors: most tensors in a contest upload (counted in its safetensors header before it is parsed).
        upload_burst, upload_seconds: the upload rate per owner: ``upload_burst`` uploads at once, then one more
            every ``upload_seconds`` (every upload counts, scored or refused).
        snapshot_every: ledger entries between snapshots of the server's state (a restart replays at most about
            this many entries); 0: never (a restart replays the whole ledger).
    """

    scenario: str | Path | Scenario | dict[str, Any]
    db: str | Path
    seed: int | None = None
    benign: bool = False
    owner_keys: Mapping[str, str] = field(default_factory=dict)
    admin_key: str | None = None
    round_seconds: float | None = None
    max_batch: int = 1024
    max_submissions: int = 10
    max_upload: int = 16 * 2**20
    max_tensors: int = 64
    upload_burst: int = 10
    upload_seconds: float = 10.0
    snapshot_every: int = 5000


@dataclass(frozen=True)
class Caps:
    """What a request body may hold, counted by :class:`~extractgym.serve.app.Gate` as it streams, before parsing.

    Attributes:
        bytes: most bytes.
        items: most occurrences of ``tokens`` (a batch's separators and brackets, or a text batch's quotes) less
            those of ``escape`` (``\\"``: a quote inside a string); ``None``: not counted.
        tokens, escape: what is counted.
        safetensors: ``(most header bytes, most tensors)`` of a safetensors upload.
    """

    bytes: int
    items: int | None = None
    tokens: tuple[bytes, ...] = ()
    escape: bytes | None = None
    safetensors: tuple[int, int] | None = None

    def at_most(self, n: int) -> Caps:
        return replace(self, bytes=min(self.bytes, n))

    def counter(self) -> BodyCounter:
        return BodyCounter(self)


class BodyCounter:
    """Counts a body's chunks against :class:`Caps` (C-speed ``bytes.count``; no parsing). ``feed`` and ``end``
    return ``(status, reason, detail)`` on the first limit crossed, else ``None``."""

    def __init__(self, caps: Caps) -> None:
        self.caps, self.size, self.items, self.last = caps, 0, 0, b""
        self.head = bytearray() if caps.safetensors else None

    def feed(self, chunk: bytes) -> tuple[int, str, str] | None:
        c = self.caps
        self.size += len(chunk)
        if self.size > c.bytes:
            return 413, "too-large", f"request body over the limit of {c.bytes} bytes"
        if c.items is not None:
            self.items += sum(chunk.count(t) for t in c.tokens)
            if c.escape is not None:
                joined = self.last + chunk[:1]
                self.items -= chunk.count(c.escape) + (joined == c.escape)
                self.last = chunk[-1:] or self.last
            if self.items > c.items:
                return 413, "too-many-items", (f"request body holds more items than {c.items} (what the largest "
                                               f"allowed batch can hold), counted before parsing")
        if self.head is not None and c.safetensors is not None:
            max_header, max_tensors = c.safetensors
            need = 8 + (int.from_bytes(self.head[:8], "little") if len(self.head) >= 8 else max_header)
            if len(self.head) < need:
                self.head += chunk[:need - len(self.head)]
            if len(self.head) >= 8:
                n = int.from_bytes(self.head[:8], "little")
                if n > max_header:
                    return 422, "invalid-snapshot", (f"not a safetensors snapshot the server reads: its header "
                                                     f"claims {n} bytes (at most {max_header})")
                if len(self.head) >= 8 + n:
                    tensors = bytes(self.head[8:8 + n]).count(b'"dtype"')
                    if tensors > max_tensors:
                        return 422, "too-many-tensors", (f"snapshot of {tensors} tensors; at most {max_tensors} "
                                                         f"are accepted")
                    self.head = None  # checked
        return None

    def end(self) -> tuple[int, str, str] | None:
        return None


def to_batch(inputs: list[Any], spec: InputSpec, max_batch: int) -> np.ndarray:
    """JSON inputs as the simulator's query types (floats or str); the simulator validates them further."""
    if not isinstance(inputs, list) or not inputs:
        raise InvalidQuery("inputs must be a non-empty list (a batch of queries)")
    if len(inputs) > max_batch:
        raise InvalidQuery(f"at most {max_batch} queries per request, got {len(inputs)}")
    if spec.kind == "text":
        bad = next((i for i, s in enumerate(inputs) if not isinstance(s, str)), None)
        if bad is not None:
            raise InvalidQuery(f"text query {bad} is {type(inputs[bad]).__name__}, not str")
        out = np.empty(len(inputs), dtype=object)
        out[:] = inputs
        return out
    shape = f"(batch, {', '.join(map(str, spec.shape))})"
    try:
        arr = np.asarray(inputs)
    except (ValueError, TypeError):
        raise InvalidQuery(f"inputs must be a rectangular nested list of numbers of shape {shape}") from None
    if arr.dtype.kind not in "iuf":
        raise InvalidQuery(f"inputs must be a nested list of numbers of shape {shape} "
                           f"(found {'strings' if arr.dtype.kind in 'US' else 'mixed or non-numeric items'})")
    return arr.astype(np.float64, copy=False)


class ServiceServer:
    """One served scenario: the game's API and defenders, the lock, the database. Thread-safe."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        scenario = load_scenario(config.scenario)
        if not config.benign:
            scenario = load_scenario(scenario, benign=[])
        remote = [s.name for s in scenario.services if getattr(s, "remote", None) is not None]
        if remote:
            raise ValueError(f"services {remote} are remote: serve a scenario whose victims are local")
        for i, d in enumerate(scenario.defenders):
            if d.brain.kind not in SERVABLE_BRAINS:
                raise ValueError(f"defenders.{i}.brain.kind: the server plays only {', '.join(SERVABLE_BRAINS)} "
                                 f"brains (they read no observation), got {d.brain.kind!r}")
        self.scenario = scenario
        self.seed = scenario.seed if config.seed is None else config.seed
        self.factory = ScenarioFactory(scenario)
        from extractgym.serve.contest import secret_ids

        self.fingerprint = hashlib.sha256(json.dumps(  # a secret task's books hold only under the same secret
            {"scenario": scenario.model_dump(mode="json"), "seed": self.seed, **secret_ids(scenario)},
            sort_keys=True).encode()).hexdigest()
        self.store = Store(config.db)
        self.lock = threading.Lock()
        self.admin_hash = key_hash(config.admin_key) if config.admin_key else None
        self._dirty = False
        self.broken: str | None = None  # why the books can no longer be made durable (then everything is 503)
        self._timer: threading.Thread | None = None
        self._stop = threading.Event()
        self.next_round_at: float | None = None
        self._uploads: dict[str, tuple[float, float]] = {}  # owner -> (tokens, at): the upload rate's buckets
        self._uploads_lock = threading.Lock()
        self.restore_seconds = 0.0
        with self.lock:
            self._load()
            self._add_owner_keys(config.owner_keys)

    @property
    def round(self) -> int:
        """The round being played (the game's own counter)."""
        return self.game.round

    # -- building and restoring ------------------------------------------------------------------
    def _load(self) -> None:
        """A fresh game from the scenario and seed, restored from the database (or the database initialised): from
        the newest usable snapshot and the entries after it, or by replaying every entry
        (:mod:`extractgym.serve.snapshot`)."""
        t0 = time.perf_counter()
        self.game: Game = self.factory.build(self.seed)
        api = self.api = self.game.api
        built = list(api.ledger)  # accounts opened while building (benign customers)
        seats = list(self.factory.seats())
        self.brains = self.factory.brains(self.seed)
        self.brains = {seat: self.brains[seat] for seat in seats if seat in self.game.defenders}
        self.shared = Shared((self.game, self.brains)) if self.config.snapshot_every else None

        meta = self.store.meta()
        if not meta:
            with self.store.transaction():
                self.store.set_meta({"schema": str(SCHEMA_VERSION), "fingerprint": self.fingerprint,
                                     "scenario": self.scenario.name, "seed": str(self.seed)})
                for e in built:
                    self.store.add_entry(e)
        elif meta.get("schema") not in ("1", str(SCHEMA_VERSION)):
            raise ValueError(f"{self.store.path} has database schema {meta.get('schema')}; this version reads "
                             f"{SCHEMA_VERSION}")
        elif meta.get("fingerprint") != self.fingerprint:
            raise ValueError(f"{self.store.path} holds the books of scenario {meta.get('scenario')!r} seed "
                             f"{meta.get('seed')} (another scenario, seed or benign setting): use another --db")
        if self.store.entries(-1, len(built)) != built:
            raise ValueError(f"{self.store.path}: the stored ledger does not start with this scenario's own entries")
        total = self.store.ledger_len()
        rounds = self.store.rounds()
        self.requests: dict[str, int] = {}
        self.snapshot_at = 0
        if not self._restore_snapshot(total, len(rounds)):
            self.game.api.ledger = StoredLedger(self.store.entries_between, 0, self.store.path)
            self.game.api.ledger._entries.extend(built)
            self.defenders = [(seat, self.game.defenders[seat]) for seat in seats if seat in self.game.defenders]
            self._set_knobs()
            self._register_owners()
        api = self.api = self.game.api
        # the entries after the snapshot (or after the build), with the rounds that closed among them
        pos = len(api.ledger)
        for r, ledger_len in rounds[self.round:]:
            self._replay(pos, ledger_len)
            pos = ledger_len
            self._close_round(live=False)
            if r != self.round - 1:
                raise ValueError(f"{self.store.path}: round {r} is out of order in the stored rounds")
        self._replay(pos, total)
        if rounds and self.game.benign is not None:  # fresh draws, not a repeat of the first rounds' samples
            self.game.benign.rng = np.random.default_rng([self.seed, total, len(rounds)])
        api.ledger.sink = self._persist  # from here on, every entry is written in the request's transaction
        api.on_query = self._persist_batch
        self.account_keys = self.store.account_keys()
        self.owner_keys = self.store.owner_keys()
        self._dirty = False
        self.replayed = total - self.snapshot_at
        if self.config.snapshot_every and self.replayed >= self.config.snapshot_every:
            self._snapshot()  # the next restart starts from here
        self.restore_seconds = time.perf_counter() - t0
        api.ledger.start_hashing()  # the older entries' digest, in the background from now on

    def _register_owners(self) -> None:
        api = self.api
        for owner, budget, _ in self.store.owners():
            if owner not in api.wallets:
                api.register_owner(owner, budget)
            api.wallets[owner].budget = budget

    def _restore_snapshot(self, total: int, rounds: int) -> bool:
        """Load the newest snapshot this code wrote that the stored books cover; ``False`` if there is none."""
        if self.shared is None:
            return False
        code = code_fingerprint()
        for ledger_len, at_round, made_by in self.store.snapshots():
            if made_by != code or ledger_len > total or at_round > rounds:
                continue
            ledger = StoredLedger(self.store.entries_between, ledger_len, self.store.path)
            try:
                game, brains, knobs, requests = load(self.store.snapshot(ledger_len), self.shared, ledger, self)
            except Exception:  # noqa: BLE001  # an unreadable snapshot is skipped: the replay is the definition
                continue
            self.game, self.brains, self.knobs, self.requests = game, brains, knobs, requests
            self.api = game.api
            self.defenders = [(seat, game.defenders[seat]) for seat in self.factory.seats() if seat in game.defenders]
            self._register_owners()  # budgets the admin set after the snapshot
            self.snapshot_at = ledger_len
            return True
        return False

    def _snapshot(self) -> None:
        """Store the state as it is now (after a commit; under the lock) as the next restart's starting point."""
        if self.shared is None:
            return
        api, sink, on_query = self.api, self.api.ledger.sink, self.api.on_query
        api.ledger.sink = api.on_query = None  # the server's hooks are not state
        try:
            data = dump((self.game, self.brains, self.knobs, self.requests), self.shared, self)
        except Exception:  # noqa: BLE001  # e.g. a body holding a process: no snapshots, restarts replay everything
            self.shared = None
            return
        finally:
            api.ledger.sink, api.on_query = sink, on_query
        with self.store.transaction():
            self.store.add_snapshot(len(api.ledger), self.round, code_fingerprint(), time.time(), data)
        self.snapshot_at = len(api.ledger)

    def _replay(self, start: int, stop: int, chunk: int = 10_000) -> None:
        """Stored entries ``start <= seq < stop`` in order: each query's stored batch through the defenders first,
        then the entry itself."""
        for lo in range(start, stop, chunk):
            entries = self.store.entries_between(lo, min(stop, lo + chunk))
            data = self.store.query_data(lo, min(stop, lo + chunk))
            for e in entries:
                if e.kind == "query":
                    if e.seq in data:
                        replay_defences(self.api, e, data[e.seq])
                    self.requests[e.account] = self.requests.get(e.account, 0) + 1
                replay(self.api, [e])

    def _persist(self, entry: LedgerEntry) -> None:
        """The ledger's sink: each entry, inside the open database transaction."""
        self.store.add_entry(entry)

    def _persist_batch(self, entry: LedgerEntry, x: np.ndarray) -> None:
        """The API's query hook: the batch a query entry was asked, stored with it (the same transaction)."""
        if x.dtype == object:
            arr = np.empty(len(x), dtype=object)
            arr[:] = list(x)
        else:
            arr = np.asarray(x, dtype=np.float32)
        self.store.add_query_data(entry.seq, arr)

    def _set_knobs(self) -> None:
        """This round's knob values from each defender's brain, and the round opened with them
        (:meth:`Game.begin_round`; the brains read no observation, as :data:`SERVABLE_BRAINS` requires)."""
        self.knobs = {}
        for seat, body in self.defenders:
            obs = np.zeros(observation_size(SeatInfo(DEFENDER, body.knobs)), dtype=np.float32)
            self.knobs[seat] = knob_values(body.knobs, self.brains[seat](obs))
        self.game.begin_round(self.knobs)

    def _close_round(self, live: bool) -> None:
        """The end of a round as :meth:`Game.step` plays it, minus the attackers (:meth:`Game.end_round`: benign
        traffic live only, since on replay it is in the ledger), then the next round opened with its knobs."""
        self.game.end_round(self.knobs, benign=live)
        self._set_knobs()

    @contextmanager
    def _books(self) -> Iterator[None]:
        """One transaction around one change of the in-memory state; on failure the state is rebuilt."""
        before = len(self.api.ledger)
        try:
            with self.store.transaction():
                yield
            every = self.config.snapshot_every
            if every and len(self.api.ledger) - self.snapshot_at >= every:
                self._snapshot()
        except (QueryRefused, InvalidQuery, ServiceError):
            if len(self.api.ledger) != before:  # refusals come before any change; if not, do not trust memory
                self._dirty = True
            raise
        except BaseException:
            self._dirty = True
            raise

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """The lock, with memory rebuilt first if a failure left it untrusted, and a round that is due closed
        first (so a retry at the ``Retry-After`` a 429 gave finds the new round)."""
        self.check_open()
        with self.lock:
            if self._dirty:
                self._load()
            due = self.next_round_at
            if due is not None and time.monotonic() >= due:
                self._advance()
            yield

    def _add_owner_keys(self, keys: Mapping[str, str], replace_others: bool = True) -> None:
        """Accept ``keys`` (owner -> key); with ``replace_others``, every other key of those owners is revoked."""
        for owner, key in keys.items():
            if owner not in self.api.wallets:
                raise ValueError(f"owner key for {owner}: unknown owner {owner!r}; owners: "
                                 f"{', '.join(self.api.wallets)}")
            if self.owner_keys.get(key_hash(key), owner) != owner:
                raise ValueError(f"owner key for {owner}: that key already belongs to another owner")
            if not key or len(key) < 8:
                raise ValueError(f"owner key for {owner}: keys must have at least 8 characters")
            if self.store.revoked(key_hash(key)):
                raise ValueError(f"owner key for {owner}: that key was revoked; issue a new one")
        others = [h for h, o in self.owner_keys.items() if o in keys and h not in {key_hash(k) for k in keys.values()}]
        with self.store.transaction():
            for owner, key in keys.items():
                self.store.add_owner_key(key, owner)
            if replace_others and others:
                self.store.revoke_keys(others, time.time())
        self.store.durable()
        self.owner_keys = self.store.owner_keys()

    def rotate_owner_key(self, owner: str) -> dict[str, Any]:
        """A new key for ``owner``; its earlier keys are revoked in the same transaction."""
        key = secrets.token_urlsafe(24)
        with self._locked():
            if owner not in self.api.wallets or owner == "benign":
                raise ServiceError(404, "unknown-owner", f"no owner {owner!r}")
            old = [h for h, o in self.owner_keys.items() if o == owner]
            with self._books():
                self.store.add_owner_key(key, owner)
                self.store.revoke_keys(old, time.time())
            for h in old:
                del self.owner_keys[h]
            self.owner_keys[key_hash(key)] = owner
            ticket = self.store.committed
        self._sync(ticket)
        return {"owner": owner, "owner_key": key, "revoked": len(old)}

    def revoke_owner_keys(self, owner: str) -> dict[str, Any]:
        """Revoke every key of ``owner`` (at once, and in the books for every restart)."""
        with self._locked():
            if owner not in self.api.wallets or owner == "benign":
                raise ServiceError(404, "unknown-owner", f"no owner {owner!r}")
            old = [h for h, o in self.owner_keys.items() if o == owner]
            with self._books():
                self.store.revoke_keys(old, time.time())
            for h in old:
                del self.owner_keys[h]
            ticket = self.store.committed
        self._sync(ticket)
        return {"owner": owner, "revoked": len(old)}

    def _sync(self, ticket: int) -> None:
        """Wait (without the lock) until the first ``ticket`` commits are on disk; 503 from then on if they cannot
        be (a failed flush leaves no way to tell what reached the disk)."""
        try:
            self.store.durable(ticket)
        except DurabilityError as e:
            self.broken = str(e)
            raise ServiceError(503, "not-durable", f"{e}: this answer may not be in the books; the server refuses "
                                                   f"every request until it is restarted") from None

    def check_open(self) -> None:
        """503 once a flush failed."""
        if self.broken is not None:
            raise ServiceError(503, "not-durable", f"{self.broken}; the server refuses every request until it is "
                                                   f"restarted")

    def ensure_owner_keys(self) -> dict[str, str]:
        """A new key for each scenario owner that has none (returned once, for the operator to hand out)."""
        with self._locked():
            have = set(self.owner_keys.values())
            new = {o: secrets.token_urlsafe(24) for o in self.api.wallets if o not in have and o != "benign"}
            if new:
                self._add_owner_keys(new)
            return new

    # -- authentication --------------------------------------------------------------------------
    def authenticate(self, kind: str, key: str | None) -> Any:
        """The caller of a key of ``kind`` (``account``: ``(account, owner)``, ``owner``: the owner, ``admin``:
        ``None``), or 401: from the headers alone, in O(1) (the gate calls this before reading the body)."""
        if kind == "account":
            return self.account_for(key)
        if kind == "owner":
            return self.owner_for(key)
        return self.check_admin(key)

    def account_for(self, key: str | None) -> tuple[str, str]:
        """``(account id, owner)`` of an account key; 401 if unknown."""
        found = self.account_keys.get(key_hash(key)) if key else None
        if found is None:
            raise ServiceError(401, "unknown-key", "missing, unknown or revoked API key (header X-API-Key)")
        return found

    def owner_for(self, key: str | None) -> str:
        found = self.owner_keys.get(key_hash(key)) if key else None
        if found is None:
            raise ServiceError(401, "unknown-key", "missing, unknown or revoked owner key (header X-Owner-Key)")
        return found

    def check_admin(self, key: str | None) -> None:
        if not key or self.admin_hash is None or not hmac.compare_digest(key_hash(key), self.admin_hash):
            raise ServiceError(401, "unknown-key", "missing or unknown admin key (header X-Admin-Key)")

    # -- customers -------------------------------------------------------------------------------
    def services(self) -> list[dict[str, Any]]:
        return [self.service_info(name) for name in self.api.services]

    def service_info(self, name: str) -> dict[str, Any]:
        svc = self.api.service(name)  # QueryRefused("unknown-service") -> 404
        spec = svc.victim.input_spec
        return {**asdict(svc.config), "n_classes": svc.victim.n_classes,
                "input": {"kind": spec.kind, "shape": list(spec.shape), "low": spec.low, "high": spec.high,
                          "max_chars": spec.max_chars}}

    def open_account(self, owner: str, service: str) -> dict[str, Any]:
        key = secrets.token_urlsafe(32)
        with self._locked():
            with self._books():
                acc = self.api.open_account(owner, service)
                self.store.add_account_key(key, acc.id, owner)
            charge = self.api.ledger[len(self.api.ledger) - 1].charge
            self.account_keys[key_hash(key)] = (acc.id, owner)
            answer = {"account": acc.id, "service": acc.service, "api_key": key, "charge": charge,
                      "round": self.round}
            ticket = self.store.committed
        self._sync(ticket)
        return answer

    def predict_caps(self, service: str) -> Caps:
        """What a predict body for ``service`` may hold: twice what ``max_batch`` queries need (room for long
        number spellings and indentation; a near-miss still gets the simulator's own message), counted before
        parsing. An unknown service gets a small body (the route answers 404)."""
        svc = self.api.services.get(service)
        n = self.config.max_batch
        if svc is None:
            return Caps(2**16)
        spec = svc.victim.input_spec
        if spec.kind == "text":  # a string's two quotes; escaped quotes inside it are not counted
            return Caps(2 * n * (6 * spec.max_chars + 16) + 2**16, 4 * n + 64, (b'"',), b'\\"')
        per = math.prod(spec.shape)
        lists = sum(math.prod(spec.shape[:i]) for i in range(len(spec.shape)))  # brackets of one query
        return Caps(2 * n * per * 32 + 2**16, 2 * n * (per + lists + 1) + 64, (b",", b"["))

    def upload_caps(self, owner: str) -> Caps:
        """Count an upload against the owner's upload rate (429 with a true ``Retry-After`` when it is spent),
        and the limits its body is counted against: ``max_upload`` bytes, a bounded safetensors header,
        ``max_tensors`` tensors."""
        c = self.config
        with self._uploads_lock:  # not the server's lock: the gate runs on the event loop and must not wait for it
            now = time.monotonic()
            tokens, at = self._uploads.get(owner, (float(c.upload_burst), now))
            tokens = min(float(c.upload_burst), tokens + (now - at) / c.upload_seconds)
            if tokens < 1.0:
                wait = math.ceil((1.0 - tokens) * c.upload_seconds)
                self._uploads[owner] = (tokens, now)
                raise ServiceError(429, "upload-rate", f"{owner} has used its {c.upload_burst} uploads; one more "
                                                       f"every {c.upload_seconds:g} s", {"Retry-After": str(wait)})
            self._uploads[owner] = (tokens - 1.0, now)
        return Caps(c.max_upload, safetensors=(2**16 + 256 * c.max_tensors, c.max_tensors))

    def predict_json(self, account: str, owner: str, service: str, raw: bytes, idempotency_key: str | None,
                     model: Any) -> tuple[bytes, bool]:
        """Parse a predict body with ``model`` (pydantic's JSON parser; raises its ``ValidationError``), serve it,
        and return the answer as JSON bytes, once durable, with whether it was a replayed earlier answer."""
        body = model.model_validate_json(raw)
        answer, replayed = self.predict(account, owner, service, body.inputs, idempotency_key)
        return json.dumps(answer).encode(), replayed

    def predict(self, account: str, owner: str, service: str, inputs: list[Any],
                idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
        """Serve a batch; returns ``(answer, replayed)`` (``replayed``: the stored answer to an earlier try), once
        the request's transaction (and every one before it) is on disk."""
        svc = self.api.service(service)
        x = to_batch(inputs, svc.victim.input_spec, self.config.max_batch)
        request = hashlib.sha256(service.encode() + b"\0" + (x.tobytes() if x.dtype != object
                                                              else json.dumps(list(x)).encode())).hexdigest()
        replayed = None
        with self._locked():
            acc = self.api.accounts[account]
            if acc.service != service:
                raise ServiceError(403, "wrong-service", f"account {account!r} is for service {acc.service!r}, "
                                                         f"not {service!r}")
            if idempotency_key is not None:
                done = self.store.idempotent(account, idempotency_key)
                if done is not None:
                    if done[0] != request:
                        raise ServiceError(422, "idempotency-key-reused",
                                           f"Idempotency-Key {idempotency_key!r} was used for a different request")
                    replayed, ticket = done[1], self.store.committed  # it may have been committed, not yet flushed
            if replayed is None:
                with self._books():
                    r = self.api.query(owner, account, x)
                    answer = {"outputs": r.outputs.tolist(), "n_answered": r.n_answered, "charge": r.charge,
                              "banned": r.banned, "request": self.requests.get(account, 0), "round": self.round}
                    if idempotency_key is not None:
                        self.store.add_idempotent(account, idempotency_key, request, answer)
                    self.requests[account] = answer["request"] + 1  # before the commit: a snapshot may follow it
                ticket = self.store.committed
        self._sync(ticket)
        return (replayed, True) if replayed is not None else (answer, False)

    def account_info(self, account: str) -> dict[str, Any]:
        with self._locked():
            acc = self.api.accounts[account]
            return {**self._account(acc), "wallet": self._wallet(acc.owner)}

    def owner_info(self, owner: str) -> dict[str, Any]:
        with self._locked():
            return {"owner": owner, "wallet": self._wallet(owner),
                    "accounts": [self._account(a) for a in self.api.accounts.values() if a.owner == owner]}

    def owner_account(self, owner: str, account: str) -> dict[str, Any]:
        with self._locked():
            acc = self.api.accounts.get(account)
            if acc is None or acc.owner != owner:  # another owner's account is as unknown as a missing one
                raise ServiceError(404, "unknown-account", f"{owner} has no account {account!r}")
            return self._account(acc)

    def _account(self, acc: Account) -> dict[str, Any]:
        cfg = self.api.services[acc.service].config
        return {"account": acc.id, "owner": acc.owner, "service": acc.service, "opened_round": acc.opened_round,
                "queries": acc.queries, "round_queries": acc.round_queries, "free_left": acc.free_left,
                "rate_limit_left": None if cfg.rate_limit is None else cfg.rate_limit - acc.round_queries,
                "banned": acc.banned, "banned_round": acc.banned_round}

    def _wallet(self, owner: str) -> dict[str, Any]:
        w = self.api.wallets[owner]

        def left(what: str) -> float | None:
            v = w.left(what)
            return None if math.isinf(v) else v

        return {"budget": asdict(w.budget), "spent": {"queries": w.queries, "money": w.money, "accounts": w.accounts},
                "left": {"queries": left("queries"), "money": left("money"), "accounts": left("accounts")},
                "credit": left("money")}

    def retry_after(self) -> int | None:
        """Seconds until the round closes (a rate-limited request can succeed then: the first request at or after
        that time closes the round before it is served); ``None`` when only the operator closes rounds."""
        due = self.next_round_at
        if due is None:
            return None
        return max(1, math.ceil(due - time.monotonic()))

    # -- admin -----------------------------------------------------------------------------------
    def owners(self) -> list[dict[str, Any]]:
        with self._locked():
            return [{"owner": o, "wallet": self._wallet(o)} for o in self.api.wallets]

    def add_owner(self, owner: str, budget: Budget) -> dict[str, Any]:
        key = secrets.token_urlsafe(24)
        with self._locked():
            if owner in self.api.wallets:
                raise ServiceError(409, "owner-exists", f"owner {owner!r} already exists")
            with self._books():
                self.api.register_owner(owner, budget)
                self.store.set_owner(owner, budget, created=True)
                self.store.add_owner_key(key, owner)
            self.owner_keys[key_hash(key)] = owner
            answer, ticket = {"owner": owner, "owner_key": key, "wallet": self._wallet(owner)}, self.store.committed
        self._sync(ticket)
        return answer

    def set_budget(self, owner: str, budget: Budget) -> dict[str, Any]:
        with self._locked():
            if owner not in self.api.wallets:
                raise ServiceError(404, "unknown-owner", f"no owner {owner!r}")
            with self._books():
                self.api.wallets[owner].budget = budget
                self.store.set_owner(owner, budget, created=False)
            answer, ticket = {"owner": owner, "wallet": self._wallet(owner)}, self.store.committed
        self._sync(ticket)
        return answer

    def ban(self, account: str, note: str) -> dict[str, Any]:
        with self._locked():
            if account not in self.api.accounts:
                raise ServiceError(404, "unknown-account", f"no account {account!r}")
            with self._books():
                self.api.ban(account, note=note or "banned by the admin")
            answer, ticket = self._account(self.api.accounts[account]), self.store.committed
        self._sync(ticket)
        return answer

    def ledger(self, after: int = -1, limit: int = 1000) -> dict[str, Any]:
        with self._locked():
            entries = self.store.entries(after, limit)
            return {"entries": [asdict(e) for e in entries], "total": len(self.api.ledger),
                    "digest": self.api.ledger.digest()}

    def advance_round(self) -> dict[str, Any]:
        with self._locked():
            self._advance()
            answer, ticket = {"round": self.round}, self.store.committed
        self._sync(ticket)
        return answer

    def _advance(self) -> None:
        """Close the round (under the lock), and schedule the next one on the timer."""
        with self._books():
            closed = self.round
            self._close_round(live=True)
            self.store.add_round(closed, len(self.api.ledger), time.time())
        if self.config.round_seconds and self.next_round_at is not None:
            self.next_round_at = time.monotonic() + self.config.round_seconds

    def summary(self) -> dict[str, Any]:
        """The referee's figures for the defending side (what ``summary.json`` holds for defenders)."""
        with self._locked():
            b = self.game.benign
            ref = self.game.referee
            return {"scenario": self.scenario.name, "seed": self.seed, "round": self.round,
                    "victim_accuracy": float(np.mean([ref.victim_accuracy(s) for s in ref.test_sets])),
                    "defended_accuracy": self.game.defended_accuracy(),
                    "utility": b.total.utility if b else 1.0,
                    "benign_accounts": b.accounts if b else 0, "benign_accounts_banned": b.banned if b else 0,
                    "false_positive_rate": (b.banned / b.accounts) if b and b.accounts else 0.0,
                    "accounts": len(self.api.accounts),
                    "accounts_banned": sum(a.banned for a in self.api.accounts.values()),
                    "ledger_entries": len(self.api.ledger), "ledger_digest": self.api.ledger.digest()}

    # -- contest mode ----------------------------------------------------------------------------
    def submit(self, owner: str, service: str | None, data: bytes) -> dict[str, Any]:
        """Score a surrogate snapshot (safetensors of a registered architecture) on the hidden test set."""
        from extractgym.serve.contest import score_snapshot

        with self._locked():
            service = service or next(iter(self.api.services))
            self.api.service(service)
            if service not in self.game.referee.test_sets:
                raise ServiceError(404, "unknown-service", f"service {service!r} has no test set")
            if len(self.store.submissions(owner)) >= self.config.max_submissions:
                raise ServiceError(403, "submission-limit", f"{owner} has used all {self.config.max_submissions} "
                                                            f"submissions (for good)")
        # scoring reads only the referee's fixed test set and victim labels: no need to hold the API's lock
        snap, accuracy, fidelity = score_snapshot(self.game.referee, service, data)
        with self._locked():
            if len(self.store.submissions(owner)) >= self.config.max_submissions:  # a concurrent submission won
                raise ServiceError(403, "submission-limit", f"{owner} has used all {self.config.max_submissions} "
                                                            f"submissions (for good)")
            with self._books():
                sid = self.store.add_submission(owner, service, snap.arch, accuracy, fidelity,
                                                hashlib.sha256(data).hexdigest(), time.time())
            left, ticket = self.config.max_submissions - len(self.store.submissions(owner)), self.store.committed
        self._sync(ticket)
        return {"id": sid, "service": service, "arch": snap.arch, "accuracy": accuracy, "fidelity": fidelity,
                "submissions_left": left,
                "baseline": self.game.referee.no_query_baseline(service),
                "threat_model": self.game.referee.threat_model(service)}

    def submissions(self, owner: str) -> list[dict[str, Any]]:
        with self._locked():
            return self.store.submissions(owner)

    # -- round timer -----------------------------------------------------------------------------
    def start_timer(self) -> None:
        seconds = self.config.round_seconds
        if not seconds or self._timer is not None:
            return
        self._stop.clear()

        self.next_round_at = time.monotonic() + seconds

        def tick() -> None:
            while not self._stop.wait(max(0.0, (self.next_round_at or 0.0) - time.monotonic())):
                try:
                    with self._locked():  # closes the round if it is due (a request may have closed it already)
                        ticket = self.store.committed
                    self._sync(ticket)
                except Exception:  # noqa: BLE001  # a failed round is rebuilt from the books; keep ticking
                    self._stop.wait(min(seconds, 1.0))

        self._timer = threading.Thread(target=tick, name="extractgym-rounds", daemon=True)
        self._timer.start()

    def stop_timer(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.join()
            self._timer = None
        self.next_round_at = None

    def close(self) -> None:
        self.stop_timer()
        if isinstance(self.api.ledger, StoredLedger):
            self.api.ledger.close()
        self.store.close()
