"""Isolated attacker bodies: a body that runs in its own sandboxed process and reaches the API only over a pipe.

In-process bodies are trusted code: Python cannot stop a body from walking from its channel to the API object
behind it (``channel._client._api``), from reading the garbage collector's objects, or from patching a module. A
seat with ``isolate: true`` runs its body in a child process instead: a fresh interpreter
(``python -m extractgym.agents.seats.isolation``) inside a bubblewrap sandbox (:mod:`~extractgym.agents.seats.sandbox`:
no network, a read-only view of the code, no model cache, no raw dataset files, no environment, CPU and memory
limits). ``isolate: process`` is the weaker mode without the sandbox, for machines without bubblewrap.

**The referee's process never runs the body's code.** It never imports a body given as a file (``code:``), never
calls the body's constructor (its knobs come from the child: :func:`probe`), and never unpickles anything: the two
processes speak the data-only protocol of :mod:`~extractgym.agents.seats.wire` (JSON headers, safetensors arrays,
bounded frames, deadlines). The child holds no API, ledger, victim, referee or test set: it gets the seat's
generator (its state, as numbers) and a :class:`ChannelProxy` whose every call (``send``, ``service_info``,
``left``, ...) is a message to the referee's side, answered by the seat's real channel there (tactics and budgets
stay there). Datasets reach it the same way, public splits only: a dataset's ``test`` split is withheld and a secret
task (``digits-secret``) is refused. At the end of each round the referee's side asks for the surrogate's snapshot,
which crosses as safetensors bytes of a registered architecture (never TorchScript, which is a program) and is
validated, built and tried on one input before it is accepted.

**A body that breaks the rules forfeits; the run goes on.** A malformed frame, a message the schema does not allow,
a frame larger than ``limits.max_frame_mb``, a round not finished within ``limits.round_seconds`` (a snapshot within
``limits.snapshot_seconds``), a crash, the CPU limit: the child is killed, the seat stops buying, its last good
snapshot (or, with none, an untrained model's) is what the referee scores, and the reason is in
``summary.json``'s ``forfeits`` (``extractgym run`` exits 2 naming it after writing the summary).

The same seed gives the same figures isolated or in-process: the child draws from an identical generator and
computes the same surrogate (tests/test_trust.py checks a digits episode).
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from extractgym.agents.seats.sandbox import Launched, Limits, launch, sandbox_problem
from extractgym.agents.seats.wire import (
    MAX_TEXT_ITEMS,
    Wire,
    WireError,
    WireTimeout,
    expect,
    pack_arrays,
    short_str,
    str_list,
    unpack_arrays,
)
from extractgym.envs.protocols import Knob
from extractgym.victims.snapshot import ModelSnapshot, ScriptSnapshot, SnapshotError, check_fits, null_snapshot

MODES = {True: "bwrap", "sandbox": "bwrap", "process": "process"}
CHANNEL_CALLS = ("send", "service_info", "service_terms", "left", "round", "service_names", "last", "dataset")
CHILD_MAX_BLOB = 1 << 31  # what the child accepts from the referee's side (trusted): datasets


class IsolationError(RuntimeError):
    """The isolated body failed or broke the protocol; the message says how."""


def isolation_mode(isolate: Any) -> str | None:
    """``bwrap`` for ``isolate: true``, ``process`` for ``isolate: process``, None for in-process."""
    return MODES.get(isolate) if isolate not in (False, None) else None


def mode_problem(mode: str) -> str | None:
    """Why ``mode`` cannot run here (None: it can)."""
    if mode != "bwrap":
        return None
    why = sandbox_problem()
    return None if why is None else (f"isolate: true runs the body in a bubblewrap sandbox, and {why}; say "
                                     f"'isolate: process' to run it in a plain child process without the sandbox "
                                     f"(the body then sees this machine's files and network)")


def body_ref(name: str, entry: Any = None, code: str | None = None) -> dict[str, Any]:
    """What names the body across the pipe: the registry name and where the child finds it (a module it imports,
    or a ``.py`` file it runs; the referee's process imports neither for a file)."""
    if code is not None:
        return {"name": name, "module": None, "file": os.path.abspath(code)}
    from extractgym.agents.registry import body_class

    module = body_class(entry).__module__ if entry is not None else "extractgym.agents"
    if module == "__main__":
        raise IsolationError(f"body {name!r} is defined in the script being run (__main__): an isolated body must "
                             f"live in an importable module, or be given as a file with 'code:'")
    return {"name": name, "module": module, "file": None}


# -- the child ---------------------------------------------------------------------------------------------------
class ChannelProxy:
    """What an isolated body holds instead of a channel: the same methods, each a request to the referee's side."""

    def __init__(self, wire: Wire) -> None:
        self._wire = wire

    def _call(self, fields: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None,
              names: tuple[str, ...] = ()) -> tuple[Any, dict[str, np.ndarray]]:
        self._wire.send({"op": "call", **fields}, pack_arrays(arrays or {}))
        header, blob = self._wire.recv()
        if header.get("op") != "reply":
            raise RuntimeError(f"unexpected answer {header.get('op')!r} from the referee's side")
        if not header.get("ok"):
            kind = ValueError if header.get("error") == "ValueError" else RuntimeError
            raise kind(str(header.get("message", "")))
        return header.get("value"), unpack_arrays(blob, names) if names else {}

    def send(self, service: str, x: Any, adaptive: bool = True) -> tuple[np.ndarray, np.ndarray]:
        text = isinstance(x, list | tuple) or (isinstance(x, np.ndarray) and x.dtype.kind in "OUS")
        if text:
            items = list(x)
            bad = next((i for i, s in enumerate(items) if not isinstance(s, str)), None)
            if bad is not None:
                raise ValueError(f"queries must be a numpy array, or a list of str for text (item {bad} is "
                                 f"{type(items[bad]).__name__})")
            fields = {"name": "send", "service": service, "adaptive": bool(adaptive),
                      "text": [str.__str__(s) for s in items]}  # exact str: what a subclass says of itself is not sent
            arrays = None
        elif isinstance(x, np.ndarray):
            fields = {"name": "send", "service": service, "adaptive": bool(adaptive), "text": None}
            arrays = {"x": np.asarray(x)}
        else:
            raise ValueError(f"queries must be a numpy array, or a list of str for text, got {type(x).__name__}")
        try:
            _, got = self._call(fields, arrays, ("idx", "out"))
        except WireError as e:
            raise ValueError(str(e)) from None
        return got["idx"], got["out"]

    def service_info(self, name: str) -> tuple[int, Any]:
        from extractgym.victims.base import InputSpec

        value, _ = self._call({"name": "service_info", "service": name})
        spec = value["spec"]
        return int(value["n_classes"]), InputSpec(spec["kind"], tuple(spec["shape"]), spec["low"], spec["high"],
                                                  spec["max_chars"])

    def service_terms(self, name: str) -> Any:
        from extractgym.envs.api import ServiceConfig

        value, _ = self._call({"name": "service_terms", "service": name})
        return ServiceConfig(**value)

    def left(self, what: str) -> float:
        value, _ = self._call({"name": "left", "what": what})
        return float("inf") if value is None else float(value)

    @property
    def round(self) -> int:
        return int(self._call({"name": "round"})[0])

    @property
    def service_names(self) -> tuple[str, ...]:
        return tuple(self._call({"name": "service_names"})[0])

    @property
    def last(self) -> Any:
        """How the last send ended (:class:`~extractgym.agents.seats.channel.Delivery`)."""
        from extractgym.agents.seats.channel import Delivery

        value, _ = self._call({"name": "last"})
        return Delivery(**{k: int(value[k]) for k in ("asked", "answered", "withheld", "refused", "unsent")})


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """A generator as numbers (PCG64 state and its seed sequence): the child rebuilds an identical one."""
    bg = rng.bit_generator
    if type(bg).__name__ != "PCG64":
        raise IsolationError(f"isolated seats need a PCG64 generator, got {type(bg).__name__}")
    ss = bg.seed_seq
    entropy = ss.entropy if isinstance(ss.entropy, int) else [int(e) for e in np.atleast_1d(ss.entropy)]
    return {"state": bg.state, "entropy": entropy, "spawn_key": [int(k) for k in ss.spawn_key],
            "pool_size": int(ss.pool_size), "children": int(ss.n_children_spawned)}


def _rng_from(state: Mapping[str, Any]) -> np.random.Generator:
    ss = np.random.SeedSequence(state["entropy"], spawn_key=tuple(state["spawn_key"]), pool_size=state["pool_size"],
                                n_children_spawned=state["children"])
    bg = np.random.PCG64(ss)
    bg.state = state["state"]
    return np.random.Generator(bg)


def _fetch_dataset(wire: Wire, name: str) -> Any:
    """A dataset's public splits from the referee's side (an isolated body's ``get_dataset``)."""
    from extractgym.victims.base import InputSpec
    from extractgym.victims.datasets import Dataset

    wire.send({"op": "call", "name": "dataset", "dataset": name})
    header, blob = wire.recv()
    if not header.get("ok"):
        raise ValueError(str(header.get("message", "")))
    v = header["value"]
    spec = InputSpec(v["spec"]["kind"], tuple(v["spec"]["shape"]), v["spec"]["low"], v["spec"]["high"],
                     v["spec"]["max_chars"])
    arrays = unpack_arrays(blob, tuple(v["arrays"]))
    parts = {}
    for split in ("train", "pool"):
        if spec.kind == "text":
            x = np.empty(len(v["text"][split]), dtype=object)
            x[:] = v["text"][split]
        else:
            x = arrays[f"x_{split}"]
        parts[f"x_{split}"], parts[f"y_{split}"] = x, arrays[f"y_{split}"]
    empty_x = np.empty(0, dtype=object) if spec.kind == "text" else np.zeros((0, *spec.shape), np.float32)
    return Dataset(name=name, spec=spec, n_classes=int(v["n_classes"]), **parts, x_test=empty_x,
                   y_test=np.zeros(0, np.int64), class_names=tuple(v["class_names"]), withheld=frozenset({"test"}))


def _import_body(ref: Mapping[str, Any]) -> Any:
    import importlib
    import importlib.util

    import extractgym.agents  # noqa: F401  (the registry's built-in bodies)
    from extractgym.agents.registry import ATTACKERS

    if ref.get("file"):
        spec = importlib.util.spec_from_file_location("extractgym_contestant", ref["file"])
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot load {ref['file']} as Python code")
        module = importlib.util.module_from_spec(spec)
        sys.modules["extractgym_contestant"] = module
        spec.loader.exec_module(module)
    elif ref.get("module"):
        importlib.import_module(ref["module"])
    if ref["name"] not in ATTACKERS:
        where = ref.get("file") or ref.get("module")
        raise ValueError(f"no attacker {ref['name']!r} is registered after loading {where} "
                         f"(register it with @register_attacker({ref['name']!r}))")
    return ATTACKERS[ref["name"]]


def _knob_record(knobs: tuple[Knob, ...]) -> list[dict[str, Any]]:
    return [{"name": k.name, "choices": list(k.choices), "default": k.default} for k in knobs]


def _child(fd: int) -> None:
    """The child's loop: build the body, then serve bind / play / snapshot requests until told to exit."""
    wire = Wire(socket.socket(fileno=fd), CHILD_MAX_BLOB, strict=False)
    header, _ = wire.recv()
    try:
        sys.path[:0] = [p for p in header["path"] if p not in sys.path]
        from extractgym.agents.registry import build, params_model
        from extractgym.victims import datasets

        datasets.set_source(lambda name: _fetch_dataset(wire, name))
        if header.get("threads"):
            import torch

            torch.set_num_threads(int(header["threads"]))
        entry = _import_body(header["body"])
        from pydantic import ValidationError

        try:
            model = params_model(entry).model_validate(header["params"])
        except ValidationError as e:
            problems = [[".".join(map(str, err["loc"])), err["msg"] if err["type"] != "extra_forbidden"
                         else "unknown parameter"] for err in e.errors()]
            wire.send({"op": "error", "message": "invalid parameters", "problems": problems})
            return
        params = {k: getattr(model, k) for k in header["params"]}
        body = build({header["body"]["name"]: entry}, "attacker", header["body"]["name"], params)
        wire.send({"op": "ok", "knobs": _knob_record(tuple(body.knobs)), "target": str(getattr(body, "target", "")),
                   "inputs": list(getattr(body, "inputs", ("image", "text")))})
    except Exception as e:
        wire.send(_error(e))
        return
    proxy = ChannelProxy(wire)
    while True:
        try:
            msg, _ = wire.recv()
        except WireError:
            return
        op = msg["op"]
        try:
            if op == "exit":
                return
            if op == "bind":
                body.bind(proxy, _rng_from(msg["rng"]))
                wire.send({"op": "ok", "target": str(getattr(body, "target", ""))})
            elif op == "play":
                body.play_round(msg["knobs"], int(msg["round"]))
                wire.send({"op": "ok"})
            elif op == "snapshot":
                snap = body.snapshot()
                if isinstance(snap, ScriptSnapshot):
                    raise SnapshotError("an isolated seat hands over a registered architecture's weights "
                                        "(ModelSnapshot); TorchScript is a program and is not accepted")
                if not isinstance(snap, ModelSnapshot):
                    raise SnapshotError(f"snapshot() must return a ModelSnapshot, got {type(snap).__name__}")
                wire.send({"op": "ok", "kind": "model"}, snap.to_bytes())
            else:
                wire.send({"op": "error", "message": f"unknown request {op!r}"})
        except Exception as e:
            wire.send(_error(e))


def _error(e: BaseException) -> dict[str, Any]:
    return {"op": "error", "error": f"{type(e).__name__}: {str(e)[:2000]}", "message": traceback.format_exc()[-8000:]}


# -- the referee's side ------------------------------------------------------------------------------------------
def _short(text: Any, limit: int = 1500) -> str:
    """What the body said, bounded and printable (no terminal control sequences from untrusted text)."""
    text = "".join(c if c.isprintable() or c == "\n" else "?" for c in str(text)[-4 * limit:])
    return text if len(text) <= limit else "..." + text[-limit:]


_KNOB = {"name": short_str(100), "choices": list, "default": int}
_INIT_OK = {"knobs": list, "target": short_str(200), "inputs": str_list(4, 20)}


def _check_knobs(raw: list) -> tuple[Knob, ...]:
    if len(raw) > 64:
        raise WireError(f"malformed start reply: {len(raw)} knobs (at most 64)")
    knobs = []
    for i, k in enumerate(raw):
        if not isinstance(k, dict):
            raise WireError(f"malformed start reply: knob {i} is not an object")
        k = expect({"op": "", **k}, _KNOB, f"knob {i}")
        choices = k["choices"]
        if not 1 <= len(choices) <= 1024 or any(not isinstance(c, str | int | float | bool | type(None)) or
                                                (isinstance(c, str) and len(c) > 200) for c in choices):
            raise WireError(f"malformed start reply: knob {k['name']!r} needs 1-1024 choices, each a number, "
                            f"a short string, true, false or null")
        try:
            knobs.append(Knob(k["name"], tuple(choices), k["default"]))
        except ValueError as e:
            raise WireError(f"malformed start reply: {e}") from None
    return tuple(knobs)


@dataclass(frozen=True)
class Probe:
    """What the child says about a body it built: the seat's knobs, target and input kinds; or ``problems``
    (``(parameter, message)`` pairs) or ``error``."""

    knobs: tuple[Knob, ...] = ()
    target: str = ""
    inputs: tuple[str, ...] = ("image", "text")
    problems: tuple[tuple[str, str], ...] = ()
    error: str = ""


class IsolatedBody:
    """An attacker body running in a child process (see the module docstring).

    Args:
        ref: what names the body (:func:`body_ref`).
        params: its constructor keywords (plain data: numbers, strings, lists, maps).
        limits: what the body may use and how long each step may take.
        mode: ``bwrap`` (the sandbox) or ``process``.
        hidden: more paths the sandbox hides.
    """

    def __init__(self, ref: Mapping[str, Any], params: Mapping[str, Any] | None = None, limits: Limits = Limits(),
                 mode: str = "bwrap", hidden: tuple[str, ...] = ()) -> None:
        self.ref, self.name, self.limits, self.mode = dict(ref), str(ref["name"]), limits, mode
        self.params = dict(params or {})
        self.forfeited: str | None = None
        self._channel: Any = None
        self._served: set[str] = set()
        self._last: ModelSnapshot | None = None
        self._null: ModelSnapshot | None = None
        self._launched: Launched | None = None
        self._wire: Wire | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  # the child's stdout/stderr (closed in close())
        try:
            encoded = json.dumps(self.params, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise IsolationError(f"isolated body {self.name!r}: parameters must be plain data ({e})") from None
        mine, theirs = socket.socketpair()
        try:
            self._launched = launch(mode, theirs.fileno(), limits, readable=(ref["file"],) if ref.get("file") else (),
                                    hidden=hidden, log=self._log.fileno())
        except (OSError, RuntimeError, ValueError) as e:
            mine.close()
            raise IsolationError(f"isolated body {self.name!r} could not be started: {e}") from None
        finally:
            theirs.close()
        self._wire = Wire(mine, limits.max_frame_mb * 2**20, strict=True)
        self.probe = self._start(json.loads(encoded))
        self.knobs: tuple[Knob, ...] = self.probe.knobs
        self.target = self.probe.target
        self.inputs = self.probe.inputs

    def _start(self, params: dict[str, Any]) -> Probe:
        import torch

        init = {"op": "init", "body": self.ref, "params": params, "path": [p for p in sys.path if p],
                "threads": torch.get_num_threads()}
        try:
            header, _ = self._request(init, self.limits.start_seconds, "start", {**_INIT_OK})
        except _BodyFailed as e:
            self.close()
            return Probe(problems=e.problems) if e.problems else Probe(error=str(e))
        except (IsolationError, WireError) as e:
            self.close()
            return Probe(error=str(e))
        try:
            return Probe(_check_knobs(header["knobs"]), header["target"], tuple(header["inputs"]))
        except WireError as e:
            self.close()
            return Probe(error=str(e))

    # -- the body protocol ---------------------------------------------------------------------------------
    def bind(self, channel: Any, rng: np.random.Generator) -> None:
        self._channel = channel
        self._null = None
        if self.probe.error or self.probe.problems:
            self._forfeit(self.probe.error or "invalid parameters")
            return
        self._guard(lambda: self._bind(rng), "bind")

    def _bind(self, rng: np.random.Generator) -> None:
        header, _ = self._request({"op": "bind", "rng": _rng_state(rng)}, self.limits.round_seconds, "bind",
                                  {"target": short_str(200)})
        self.target = header["target"]

    def play_round(self, knobs: Mapping[str, Any], round_index: int) -> None:
        if self.forfeited is None:
            self._guard(lambda: self._request({"op": "play", "knobs": dict(knobs), "round": int(round_index)},
                                              self.limits.round_seconds, f"round {round_index}", {}), "play")

    def snapshot(self) -> ModelSnapshot:
        """The body's surrogate, validated; after a forfeit, its last good one (or an untrained model's)."""
        if self.forfeited is None:
            self._guard(self._snapshot, "snapshot")
        if self._last is not None:
            return self._last
        if self._null is None:
            self._null = null_snapshot(*self._target_info())
        return self._null

    def _snapshot(self) -> None:
        header, blob = self._request({"op": "snapshot"}, self.limits.snapshot_seconds, "snapshot",
                                     {"kind": lambda v: None if v == "model" else "must be 'model'"})
        snap = ModelSnapshot.from_bytes(blob)
        n_classes, spec = self._target_info()
        check_fits(snap, n_classes, spec)
        self._last = snap

    def _target_info(self) -> tuple[int, Any]:
        names = tuple(self._channel.service_names) if self._channel is not None else ()
        target = self.target if self.target in names else (names[0] if names else "")
        return self._channel.service_info(target)

    def _guard(self, step: Any, what: str) -> None:
        try:
            step()
        except _BodyFailed as e:
            self._forfeit(str(e))
        except (IsolationError, WireError, SnapshotError) as e:
            self._forfeit(str(e))

    def _forfeit(self, reason: str) -> None:
        if self.forfeited is None:
            self.forfeited = _short(reason, 2000)
        if self._launched is not None:  # no goodbye: a body that broke the rules may not be listening
            self._launched.kill()
        self.close()

    # -- the pipe ----------------------------------------------------------------------------------------------
    def _request(self, header: dict[str, Any], seconds: float, what: str,
                 schema: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
        if self._wire is None or self._launched is None or self._launched.process.poll() is not None:
            raise IsolationError(f"isolated body {self.name!r} is not running ({self._ended() or 'closed'})")
        deadline = time.monotonic() + seconds
        limit = {"start": "start_seconds", "snapshot": "snapshot_seconds"}.get(what, "round_seconds")
        try:
            self._wire.send(header, deadline=deadline)
            while True:
                msg, blob = self._wire.recv(deadline)
                op = msg["op"]
                if op == "call":
                    reply, data = self._serve(msg, blob)
                    self._wire.send(reply, data, deadline=deadline)
                elif op == "ok":
                    return expect(msg, schema, f"answer to {what}"), blob
                elif op == "error":
                    problems = msg.get("problems")
                    if what == "start" and isinstance(problems, list):
                        raise _BodyFailed("invalid parameters", _problems(problems))
                    raise _BodyFailed(f"isolated body {self.name!r} failed during {what}: "
                                      f"{_short(msg.get('error', ''), 500)}\n{_short(msg.get('message', ''))}")
                else:
                    raise WireError(f"unexpected message {_short(op, 40)!r} during {what}")
        except WireTimeout:
            raise IsolationError(f"isolated body {self.name!r} did not finish {what} within {seconds:g} s "
                                 f"(limits.{limit})") from None
        except WireError as e:
            ended = self._ended()
            if ended:
                raise IsolationError(f"isolated body {self.name!r} ended during {what}: {ended}") from None
            raise IsolationError(f"isolated body {self.name!r} broke the protocol during {what}: {e}") from None

    def _ended(self) -> str:
        """How the child's process ended ("" while it runs)."""
        proc = self._launched.process if self._launched is not None else None
        if proc is None:
            return ""
        try:
            code = proc.wait(timeout=1)
        except Exception:  # still running
            return ""
        signum = -code if code < 0 else code - 128 if self.mode == "bwrap" and code > 128 else 0  # bwrap: 128 + signal
        if signum == signal.SIGXCPU:
            return f"it used up its CPU time ({self.limits.cpu_seconds} s: limits.cpu_seconds)"
        why = f"signal {signum}" if signum else f"exit code {code}"
        tail = self._log_tail()
        return f"its process ended with {why}" + (f"; its last output:\n{tail}" if tail else "")

    def _log_tail(self) -> str:
        try:
            self._log.seek(0, os.SEEK_END)
            size = self._log.tell()
            self._log.seek(max(0, size - 1500))
            return self._log.read().decode(errors="replace").strip()
        except (OSError, ValueError):
            return ""

    def _serve(self, msg: Mapping[str, Any], blob: bytes) -> tuple[dict[str, Any], bytes]:
        """Answer one call from the child with the seat's real channel, or a dataset's public splits."""
        name = msg.get("name")
        if name not in CHANNEL_CALLS:
            raise WireError(f"no call {_short(name, 40)!r}; calls: {', '.join(CHANNEL_CALLS)}")
        if name == "dataset":
            return self._serve_dataset(expect(msg, {"name": str, "dataset": short_str(100)}, "dataset call"), blob)
        if self._channel is None:
            unpack_arrays(blob, ())
            return {"op": "reply", "ok": False, "error": "RuntimeError",
                    "message": "the channel is not connected yet (constructors get no channel: use setup())"}, b""
        try:
            if name == "send":
                m = expect(msg, {"name": str, "service": short_str(200), "adaptive": bool,
                                 "text": lambda v: None if v is None else str_list(MAX_TEXT_ITEMS)(v)}, "send call")
                x = np.asarray(m["text"], dtype=object) if m["text"] is not None else \
                    unpack_arrays(blob, ("x",))["x"]
                if m["text"] is not None:
                    unpack_arrays(blob, ())
                idx, out = self._channel.send(m["service"], x, m["adaptive"])
                return {"op": "reply", "ok": True, "value": None}, pack_arrays(
                    {"idx": np.asarray(idx, dtype=np.int64), "out": np.asarray(out, dtype=np.float64)})
            unpack_arrays(blob, ())
            if name in ("service_info", "service_terms"):
                m = expect(msg, {"name": str, "service": short_str(200)}, f"{name} call")
                if name == "service_terms":
                    return {"op": "reply", "ok": True, "value": asdict(self._channel.service_terms(m["service"]))}, b""
                n_classes, spec = self._channel.service_info(m["service"])
                return {"op": "reply", "ok": True, "value": {"n_classes": int(n_classes), "spec": {
                    "kind": spec.kind, "shape": list(spec.shape), "low": spec.low, "high": spec.high,
                    "max_chars": spec.max_chars}}}, b""
            if name == "left":
                m = expect(msg, {"name": str, "what": short_str(20)}, "left call")
                left = float(self._channel.left(m["what"]))
                return {"op": "reply", "ok": True, "value": None if left == float("inf") else left}, b""
            expect(msg, {"name": str}, f"{name} call")
            if name == "last":
                return {"op": "reply", "ok": True, "value": asdict(self._channel.last)}, b""
            value = self._channel.round if name == "round" else list(self._channel.service_names)
            return {"op": "reply", "ok": True, "value": value}, b""
        except WireError:
            raise
        except Exception as e:  # the body sees the error's kind and message (e.g. an invalid query), nothing more
            return {"op": "reply", "ok": False, "error": "ValueError" if isinstance(e, ValueError) else "RuntimeError",
                    "message": _short(e, 2000)}, b""

    def _serve_dataset(self, m: Mapping[str, Any], blob: bytes) -> tuple[dict[str, Any], bytes]:
        from extractgym.victims.datasets import DATASETS, SECRET_DATASETS, get_dataset

        unpack_arrays(blob, ())
        name = m["dataset"]
        if name in self._served:
            raise WireError(f"dataset {name!r} was already sent")  # the child keeps what it got: no reason to ask again
        if name not in DATASETS:
            return _refusal(f"unknown dataset {name!r}")
        if name in SECRET_DATASETS:
            return _refusal(f"{name!r} is a secret task: an isolated body never sees its data; its public inputs are "
                            f"{get_dataset(name).public!r}")
        ds = get_dataset(name)
        self._served.add(name)
        arrays = {f"y_{s}": np.asarray(getattr(ds, f"y_{s}"), dtype=np.int64) for s in ("train", "pool")}
        text = None
        if ds.spec.kind == "text":
            text = {s: [str(t) for t in getattr(ds, f"x_{s}")] for s in ("train", "pool")}
        else:
            arrays.update({f"x_{s}": np.asarray(getattr(ds, f"x_{s}")) for s in ("train", "pool")})
        value = {"spec": {"kind": ds.spec.kind, "shape": list(ds.spec.shape), "low": ds.spec.low, "high": ds.spec.high,
                          "max_chars": ds.spec.max_chars}, "n_classes": ds.n_classes,
                 "class_names": list(ds.class_names), "arrays": sorted(arrays), "text": text}
        return {"op": "reply", "ok": True, "value": value}, pack_arrays(arrays)

    def close(self) -> None:
        """Stop the child (also at garbage collection)."""
        if self._wire is not None and self._launched is not None and self._launched.process.poll() is None:
            try:
                self._wire.send({"op": "exit"}, deadline=time.monotonic() + 2)
                self._launched.process.wait(timeout=5)
            except Exception:  # a child that does not leave is killed
                pass
        if self._launched is not None:
            self._launched.kill()
        if self._wire is not None:
            self._wire.close()

    def __del__(self) -> None:
        try:
            self.close()
            self._log.close()
        except Exception:
            pass


class _BodyFailed(IsolationError):
    """The body's own code raised (a traceback from the child), or its parameters are invalid."""

    def __init__(self, message: str, problems: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems


def _problems(raw: list) -> tuple[tuple[str, str], ...]:
    out = []
    for item in raw[:50]:
        if isinstance(item, list) and len(item) == 2 and all(isinstance(s, str) for s in item):
            out.append((_short(item[0], 200), _short(item[1], 400)))
    return tuple(out) or (("", "invalid parameters"),)


def _refusal(message: str) -> tuple[dict[str, Any], bytes]:
    return {"op": "reply", "ok": False, "error": "ValueError", "message": message}, b""


# -- probing (validation and seat discovery start the child, never the body in this process) -----------------------
_WARM: dict[str, IsolatedBody] = {}  # started children kept for the next start() of the same body (insertion order)
_PROBES: dict[str, Probe] = {}
MAX_WARM = 4  # idle children kept at once (a league validates many contestants: the oldest are stopped)


def _key(ref: Mapping[str, Any], params: Mapping[str, Any], limits: Limits, mode: str,
         hidden: tuple[str, ...]) -> str:
    return json.dumps([ref, params, repr(limits), mode, list(hidden)], sort_keys=True, default=repr)


def probe(ref: Mapping[str, Any], params: Mapping[str, Any], limits: Limits = Limits(), mode: str = "bwrap",
          hidden: tuple[str, ...] = ()) -> Probe:
    """Start the body's child and ask what it built (cached per process; the started child is kept for the next
    :func:`start` of the same body, so validating and then playing starts one child, not two)."""
    key = _key(ref, params, limits, mode, hidden)
    if key not in _PROBES:
        body = IsolatedBody(ref, params, limits, mode, hidden)
        _PROBES[key] = body.probe
        if not (body.probe.error or body.probe.problems):
            old = _WARM.pop(key, None)
            if old is not None:
                old.close()
            _WARM[key] = body
            while len(_WARM) > MAX_WARM:
                _WARM.pop(next(iter(_WARM))).close()
        else:
            body.close()
    return _PROBES[key]


def start(ref: Mapping[str, Any], params: Mapping[str, Any], limits: Limits = Limits(), mode: str = "bwrap",
          hidden: tuple[str, ...] = ()) -> IsolatedBody:
    """A started, unbound body: the one :func:`probe` kept, or a new child."""
    body = _WARM.pop(_key(ref, params, limits, mode, hidden), None)
    return body if body is not None else IsolatedBody(ref, params, limits, mode, hidden)


@atexit.register
def _close_warm() -> None:
    for body in list(_WARM.values()):
        body.close()
    _WARM.clear()


if __name__ == "__main__":  # the child: python -m extractgym.agents.seats.isolation FD
    _child(int(sys.argv[1]))
