"""Play a league's cells: a local process pool ('spawn') by default, Ray to scale out; rows to ``results.jsonl``.

* Each finished cell appends one JSON line to ``OUT/results.jsonl`` (written whole, flushed and fsynced), so a
  ``kill -9`` loses at most the cells in flight. On the next run a partial last line is detected and cut off
  (earlier rows are never touched) and the cells whose ids have a row are skipped.
* A row holds the cell (ids, names, seed), every referee figure (the episode summary as it is, numbers and all),
  per-round curves of every seat (what ``on_round`` reports), the scenario played, the ``fingerprint`` of the code
  that played it (:mod:`extractgym.league.fingerprint`) and the provenance (versions, git sha, config hash, worker,
  wall times). Everything outside ``provenance`` is a function of the cell and the code alone: the same spec gives
  identical rows whatever the worker count or backend.
* A resume never mixes code: rows whose fingerprint is not this process's are *stale*; by default the run is
  refused with a message naming the files and versions that changed (``stale="rerun"`` plays them again,
  ``stale="reuse"`` keeps them). One run at a time per output folder (a lock on ``OUT/.lock``).
* A cell that raises becomes a failed row with its error, and the league goes on. Pool workers watch their parent
  and exit when it dies (even by ``kill -9``), so no orphan keeps playing.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import platform
import socket
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from extractgym.league import fingerprint as fingerprints
from extractgym.league.cells import Cell, canonical_json, package_version, sha256_text
from extractgym.league.spec import LeagueError

RESULTS = "results.jsonl"
BACKENDS = ("local", "ray")
STALE = ("refuse", "rerun", "reuse")


# -- one cell, in a worker -----------------------------------------------------------------------
def clean(value: Any) -> Any:
    """JSON-safe: numpy scalars and arrays to Python, NaN/inf to ``None``, tuples to lists, keys to strings."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar / array
        return clean(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, (int, float)) or (hasattr(v, "dtype") and getattr(v, "ndim", 1) == 0)


class CurveRecorder:
    """``on_round`` callback: every numeric per-round info of every seat, as lists indexed by round."""

    def __init__(self) -> None:
        self.curves: dict[str, dict[str, list[Any]]] = {}

    def __call__(self, round_: int, infos: dict[str, dict[str, Any]]) -> None:
        for seat, info in infos.items():
            per = self.curves.setdefault(seat, {})
            for key, value in info.items():
                if key != "round" and _is_number(value):
                    per.setdefault(key, []).append(value)
            per.setdefault("round", []).append(round_)


def run_cell(payload: dict[str, Any]) -> dict[str, Any]:
    """Play one cell (in a worker process, a Ray task or this process); return its row. Never raises."""
    started = time.time()
    t0, cpu0 = time.perf_counter(), time.process_time()
    row: dict[str, Any] = {k: payload[k] for k in ("id", "scenario", "attacker", "defender", "replicate", "seed")}
    prov: dict[str, Any] = {**payload.get("provenance", {}), "worker": f"{socket.gethostname()}:{os.getpid()}",
                            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(started))}
    env = None
    try:
        from extractgym.scenarios import make_env
        from extractgym.scenarios.runner import play_episode

        env = make_env(payload["config"])
        curves = CurveRecorder()
        t_play = time.perf_counter()
        summary = play_episode(env, seed=payload["seed"], on_round=curves)
        prov["episode_seconds"] = summary.pop("wall_seconds", time.perf_counter() - t_play)
        row.update(status="ok", error=None, summary=clean(summary), curves=clean(curves.curves))
    except Exception as e:  # noqa: BLE001 -- a failing cell is a row, not the end of the league
        row.update(status="failed", error=f"{type(e).__name__}: {e}", summary=None, curves=None)
        prov["traceback"] = traceback.format_exc(limit=20)
    finally:
        if env is not None:
            env.close()  # an isolated contestant's process ends with its cell
    row["config"] = payload["config"]
    row["fingerprint"] = fingerprints.current().digest
    prov["wall_seconds"] = time.perf_counter() - t0
    prov["cpu_seconds"] = time.process_time() - cpu0  # this worker's CPU: what a cell costs, whatever the load
    row["provenance"] = prov
    return row


def failed_row(payload: dict[str, Any], error: BaseException, provenance: dict[str, Any]) -> dict[str, Any]:
    """The row of a cell whose worker died or whose task failed outside :func:`run_cell`."""
    row = {k: payload[k] for k in ("id", "scenario", "attacker", "defender", "replicate", "seed")}
    row.update(status="failed", error=f"{type(error).__name__}: {error}", summary=None, curves=None,
               config=payload["config"], fingerprint=fingerprints.current().digest, provenance=dict(provenance))
    return row


def _watch_parent(parent: int, every: float = 0.5) -> None:
    """Exit this process as soon as ``parent`` is gone (this process is re-parented): a pool worker must not
    outlive the league that started it (a ``kill -9`` of the main process runs no clean-up of its own)."""
    while True:
        if os.getppid() != parent:
            os._exit(3)
        time.sleep(every)


def _init_worker(parent: int | None = None) -> None:
    """A worker is one core's slot: one torch thread (the library pins its small models anyway); it dies with its
    parent (a watcher thread; ``prctl(PR_SET_PDEATHSIG)`` would follow the spawning *thread*, not the process)."""
    if parent is not None:
        if os.getppid() != parent:
            os._exit(3)
        threading.Thread(target=_watch_parent, args=(parent,), name="watch-parent", daemon=True).start()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


# -- provenance ----------------------------------------------------------------------------------
def git_sha() -> str | None:
    """The commit of the package's source tree, if it is a git checkout (``+dirty`` with local changes)."""
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("+dirty" if dirty else "") if sha else None


def base_provenance() -> dict[str, Any]:
    """Versions and the source commit, computed once per league run."""
    from importlib import metadata

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    return {"extractgym": package_version(), "python": platform.python_version(), "torch": version("torch"),
            "numpy": version("numpy"), "gymnasium": version("gymnasium"), "git_sha": git_sha(),
            "platform": platform.platform()}


# -- the results file ----------------------------------------------------------------------------
class ResultsFile:
    """``results.jsonl``: one row per line, appended whole, flushed and fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self, repair: bool = True) -> tuple[dict[str, dict[str, Any]], list[str]]:
        """Rows by cell id (a later row of an id replaces an earlier one) and warnings.

        A last line without its newline is what a kill during a write leaves: it is cut off (``repair``) so
        the next append starts on a clean line. A complete line that does not parse is skipped with a warning
        and left in place.
        """
        if not self.path.exists():
            return {}, []
        data = self.path.read_bytes()
        warnings: list[str] = []
        end = data.rfind(b"\n") + 1
        if end < len(data):
            warnings.append(f"{self.path}: dropped a partial last line ({len(data) - end} bytes, a write cut short)")
            if repair:
                with open(self.path, "r+b") as f:
                    f.truncate(end)
                    f.flush()
                    os.fsync(f.fileno())
        rows: dict[str, dict[str, Any]] = {}
        for n, line in enumerate(data[:end].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                rows[row["id"]] = row
            except (ValueError, KeyError, TypeError):
                warnings.append(f"{self.path}:{n}: skipped a line that is not a row")
        return rows, warnings

    def append(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, sort_keys=True, allow_nan=False, separators=(",", ":")) + "\n"
        with open(self.path, "ab") as f:
            f.write(line.encode())
            f.flush()
            os.fsync(f.fileno())


# -- backends ------------------------------------------------------------------------------------
def _inline_rows(payloads: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for p in payloads:
        yield run_cell(p)


def _local_rows(payloads: list[dict[str, Any]], workers: int) -> Iterator[dict[str, Any]]:
    ex = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(os.getpid(),))
    try:
        futures = {ex.submit(run_cell, p): p for p in payloads}
        for fut in as_completed(futures):
            try:
                yield fut.result()
            except Exception as e:  # noqa: BLE001 -- e.g. BrokenProcessPool: a worker died (OOM, signal)
                yield failed_row(futures[fut], e, futures[fut].get("provenance", {}))
    finally:
        ex.shutdown(wait=True, cancel_futures=True)


def ray_init_kwargs(workers: int, address: str | None) -> dict[str, Any]:
    """Ray quietly: no dashboard, workers' logs not streamed to the driver, its temp files under /tmp."""
    env = {k: os.environ[k] for k in ("EXTRACTGYM_CACHE", "EXTRACTGYM_TORCH_THREADS", "HF_HUB_OFFLINE")
           if k in os.environ}
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": "ERROR",
                              "runtime_env": {"env_vars": {"OMP_NUM_THREADS": "1", **env}}}
    if address:
        kwargs["address"] = address
    else:
        import tempfile

        kwargs.update(num_cpus=workers, _temp_dir=str(Path(tempfile.gettempdir()) / "extractgym-ray"))
    return kwargs


def _ray_rows(payloads: list[dict[str, Any]], workers: int, address: str | None) -> Iterator[dict[str, Any]]:
    try:
        import ray
    except ImportError:
        raise RuntimeError("the ray backend needs Ray: pip install -e '.[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(**ray_init_kwargs(workers, address))
    try:
        task = ray.remote(num_cpus=1, max_retries=0)(run_cell)
        refs = {task.remote(p): p for p in payloads}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                yield ray.get(done[0])
            except Exception as e:  # noqa: BLE001 -- a lost worker or node
                yield failed_row(refs[done[0]], e, refs[done[0]].get("provenance", {}))
    finally:
        if started_here:
            ray.shutdown()


# -- the league ----------------------------------------------------------------------------------
@dataclass
class RunStats:
    total: int       # cells in the league
    skipped: int     # already in results.jsonl
    ran: int         # played now
    failed: int      # of those, failed
    wall_seconds: float
    warnings: list[str]
    stale: int = 0   # rows of other code: played again (stale="rerun") or kept (stale="reuse")


def stale_rows(cells: list[Cell], rows: dict[str, dict[str, Any]], digest: str) -> dict[str, int]:
    """Fingerprint -> how many of the league's rows were played by that code, for every fingerprint but
    ``digest`` (a row from before fingerprints counts under ``""``)."""
    out: dict[str, int] = {}
    for cid in {c.id for c in cells}:
        row = rows.get(cid)
        if row is not None and row.get("fingerprint") != digest:
            key = row.get("fingerprint") or ""
            out[key] = out.get(key, 0) + 1
    return out


def pending(cells: list[Cell], rows: dict[str, dict[str, Any]], retry_failed: bool = False,
            fingerprint: str | None = None) -> list[Cell]:
    """Cells without a row (or whose row failed, with ``retry_failed``; or whose row another code played, given
    the ``fingerprint`` rows must have), in spec order, each id once."""
    seen: set[str] = set()
    out = []
    for c in sorted(cells, key=lambda c: c.order):
        row = rows.get(c.id)
        redo = row is None or (retry_failed and row.get("status") != "ok") or \
            (fingerprint is not None and row.get("fingerprint") != fingerprint)
        if c.id in seen or not redo:
            continue
        seen.add(c.id)
        out.append(c)
    return out


def run_league(cells: list[Cell], out_dir: Path, workers: int | None = None, backend: str = "local",
               address: str | None = None, max_cells: int | None = None, retry_failed: bool = False,
               league: str = "", on_row: Callable[[dict[str, Any], int, int], None] | None = None,
               stale: str = "refuse", on_start: Callable[[], None] | None = None) -> RunStats:
    """Play every cell without a row in ``out_dir/results.jsonl``; append each row as it finishes.

    Args:
        cells: from :func:`extractgym.league.cells.expand`.
        out_dir: created if missing.
        workers: parallel episodes (default: the machine's cores); ``0`` plays them in this process.
        backend: ``local`` (a process pool, 'spawn') or ``ray``.
        address: a Ray cluster's address (default: a local ``ray.init()``).
        max_cells: play at most this many of the missing cells (in spec order).
        retry_failed: play again the cells whose row failed.
        league: the league's name, recorded in the rows' provenance.
        on_row: called with each row, the number done so far and the number to do (progress bars).
        stale: what to do with rows another code played (another fingerprint): ``refuse`` (raise
            :class:`LeagueError` naming what changed, before anything is played), ``rerun`` (play those cells
            again; the new row replaces the old) or ``reuse`` (keep them).
        on_start: called once the folder is locked and the rows checked, before any cell is played (e.g. to
            save the spec beside the rows).

    Raises:
        LeagueError: another run holds the folder, or stale rows under ``stale="refuse"``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if stale not in STALE:
        raise ValueError(f"unknown stale policy {stale!r}; known: {', '.join(STALE)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with fingerprints.FolderLock(out_dir):
        return _run_locked(cells, out_dir, workers, backend, address, max_cells, retry_failed, league, on_row, stale,
                           on_start)


def _run_locked(cells: list[Cell], out_dir: Path, workers: int | None, backend: str, address: str | None,
                max_cells: int | None, retry_failed: bool, league: str,
                on_row: Callable[[dict[str, Any], int, int], None] | None, stale: str,
                on_start: Callable[[], None] | None) -> RunStats:
    results = ResultsFile(out_dir / RESULTS)
    rows, warnings = results.load(repair=True)
    fp = fingerprints.current()
    old = stale_rows(cells, rows, fp.digest)
    if old and stale == "refuse":
        raise LeagueError(fingerprints.stale_message(out_dir, old, len({c.id for c in cells}), fp))
    fingerprints.record(out_dir, fp)
    if on_start is not None:
        on_start()
    if old:
        warnings.append(fingerprints.stale_message(out_dir, old, len({c.id for c in cells}), fp).splitlines()[0]
                        + (" -- played again" if stale == "rerun" else " -- kept (--reuse-stale)"))
    todo = pending(cells, rows, retry_failed, fp.digest if stale == "rerun" else None)
    skipped = len({c.id for c in cells}) - len(todo)
    if max_cells is not None:
        todo = todo[:max(0, max_cells)]
    workers = (os.cpu_count() or 1) if workers is None else workers
    prov = {**base_provenance(), "league": league, "backend": backend if workers else "inline"}
    payloads = [{**c.payload(), "provenance": {**prov, "config_hash": sha256_text(canonical_json(c.config))}}
                for c in todo]
    start = time.perf_counter()
    failed = 0
    if not payloads:
        stream: Iterable[dict[str, Any]] = ()
    elif backend == "ray":
        stream = _ray_rows(payloads, max(1, workers), address)
    elif workers == 0:
        stream = _inline_rows(payloads)
    else:
        stream = _local_rows(payloads, min(workers, len(payloads)))
    foreign = 0
    for done, row in enumerate(stream, start=1):
        results.append(row)
        failed += row.get("status") != "ok"
        foreign += row.get("fingerprint") != fp.digest
        if on_row:
            on_row(row, done, len(payloads))
    if foreign:  # e.g. Ray workers on a node with other code: the next resume will treat these rows as stale
        warnings.append(f"{foreign} row(s) were played by workers whose code differs from this process's "
                        f"(fingerprint {fp.digest}): check that every node runs the same extractgym")
    return RunStats(total=len({c.id for c in cells}), skipped=skipped, ran=len(payloads), failed=failed,
                    wall_seconds=time.perf_counter() - start, warnings=warnings, stale=sum(old.values()))


def comparable(row: dict[str, Any]) -> dict[str, Any]:
    """A row without its provenance (timings, worker, versions): what must match across workers and backends."""
    return {k: v for k, v in row.items() if k != "provenance"}


__all__ = ["BACKENDS", "RESULTS", "STALE", "CurveRecorder", "ResultsFile", "RunStats", "comparable", "failed_row",
           "pending", "run_cell", "run_league", "stale_rows"]
