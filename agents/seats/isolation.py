"""Isolated attacker bodies: a body that runs in its own process and reaches the API only over a pipe.

In-process bodies are trusted code: Python cannot stop a body from walking from its channel to the API object
behind it (``channel._client._api``), from reading the garbage collector's objects, or from patching a module. A
seat with ``isolate: true`` runs its body in a child process instead (a fresh interpreter,
``python -m extractgym.agents.seats.isolation``, so nothing of the parent's memory is inherited, and no ``__main__``
guard is needed in the user's script), talking over a socket pair. The child holds no API, ledger, victim, referee or test
set: it gets the seat's generator and a :class:`ChannelProxy` whose every call (``send``, ``service_info``,
``left``, ...) is a message to the parent, answered by the seat's real channel there (tactics and budgets stay
in the parent). At the end of each round the parent asks for the surrogate's snapshot, which crosses the pipe as
safetensors bytes (:meth:`~extractgym.victims.snapshot.ModelSnapshot.to_bytes`) and is validated on arrival.

What isolation does not cover: the body's module is imported by the parent too (that is how it registers its
name), so its import-time code runs in both processes; and a child can use the machine's resources. For a
contestant you do not trust at all, run it on another machine against the HTTP service's contest mode.

The same seed gives the same figures isolated or in-process: the child draws from an identical generator and
computes the same surrogate (tests/test_trust.py checks a digits episode).
"""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import traceback
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from extractgym.envs.protocols import Knob
from extractgym.victims.snapshot import ModelSnapshot, ScriptSnapshot, SnapshotError

CHANNEL_CALLS = ("send", "service_info", "service_terms", "left", "round", "service_names", "last")


class IsolationError(RuntimeError):
    """The isolated body failed or broke the protocol; the message carries its traceback."""


class ChannelProxy:
    """What an isolated body holds instead of a channel: the same methods, each a request to the parent."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def _call(self, name: str, *args: Any) -> Any:
        self._conn.send(("call", name, args))
        kind, value = self._conn.recv()
        if kind == "error":
            raise value if isinstance(value, Exception) else RuntimeError(str(value))
        return value

    def send(self, service: str, x: Any, adaptive: bool = True) -> tuple[np.ndarray, np.ndarray]:
        return self._call("send", service, x, adaptive)

    def service_info(self, name: str) -> tuple[int, Any]:
        return self._call("service_info", name)

    def service_terms(self, name: str) -> Any:
        return self._call("service_terms", name)

    def left(self, what: str) -> float:
        return self._call("left", what)

    @property
    def round(self) -> int:
        return self._call("round")

    @property
    def service_names(self) -> tuple[str, ...]:
        return self._call("service_names")

    @property
    def last(self) -> Any:
        """How the last send ended (:class:`~extractgym.agents.seats.channel.Delivery`)."""
        return self._call("last")


def _snapshot_bytes(snapshot: Any) -> tuple[str, Any]:
    if isinstance(snapshot, ModelSnapshot):
        return "model", snapshot.to_bytes()
    if isinstance(snapshot, ScriptSnapshot):
        return "script", (snapshot.data, snapshot.n_classes, snapshot.featurizer)
    raise SnapshotError(f"snapshot() must return a ModelSnapshot or ScriptSnapshot, got {type(snapshot).__name__}")


def _child(conn: Any) -> None:
    """The child's loop: build the body, then serve bind / play_round / snapshot requests."""
    try:
        path, blob = conn.recv()  # the parent's import path first, so a body class defined in its modules unpickles
        sys.path[:] = [p for p in path if p not in sys.path] + sys.path
        import extractgym.agents  # noqa: F401  (the registry)

        entry, params = pickle.loads(blob)
        body = entry(**params)
        conn.send(("ok", (tuple(body.knobs), getattr(body, "target", ""), tuple(getattr(body, "inputs", ())))))
    except Exception:
        conn.send(("error", traceback.format_exc()))
        return
    proxy = ChannelProxy(conn)
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        kind, args = msg[0], msg[1:]
        try:
            if kind == "exit":
                return
            if kind == "bind":
                body.bind(proxy, args[0])
                conn.send(("ok", getattr(body, "target", "")))
            elif kind == "play":
                body.play_round(*args)
                conn.send(("ok", None))
            elif kind == "snapshot":
                conn.send(("ok", _snapshot_bytes(body.snapshot())))
            else:
                conn.send(("error", f"unknown request {kind!r}"))
        except Exception:
            conn.send(("error", traceback.format_exc()))


class IsolatedBody:
    """An attacker body running in a child process (see the module docstring).

    Args:
        entry: a registry name (``"random"``), or an importable body class or registry entry.
        params: its constructor keywords.
        timeout: seconds to wait for the child to start (imports) before giving up.
    """

    def __init__(self, entry: Any, params: dict[str, Any] | None = None, timeout: float = 120.0) -> None:
        self.name = entry if isinstance(entry, str) else getattr(entry, "__name__", str(entry))
        if isinstance(entry, str):  # the registry entry itself crosses (by reference), so bodies registered by
            from extractgym.agents.registry import ATTACKERS  # the user's own modules are found in the child too

            entry = ATTACKERS[entry]
        mine, theirs = socket.socketpair()
        self._process = subprocess.Popen([sys.executable, "-m", "extractgym.agents.seats.isolation", str(theirs.fileno())],
                                         pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
        theirs.close()
        self._conn = Connection(os.dup(mine.fileno()))
        mine.close()
        self._conn.send((list(sys.path), pickle.dumps((entry, dict(params or {})))))
        if not self._conn.poll(timeout):
            self.close()
            raise IsolationError(f"isolated body {self.name!r} did not start within {timeout:g} s")
        kind, value = self._conn.recv()
        if kind != "ok":
            self.close()
            raise IsolationError(f"isolated body {self.name!r} failed to build:\n{value}")
        knobs, self.target, inputs = value
        self.knobs: tuple[Knob, ...] = tuple(knobs)
        self.inputs = inputs or ("image", "text")
        self._channel: Any = None

    # -- the body protocol ---------------------------------------------------------------------------------
    def bind(self, channel: Any, rng: np.random.Generator) -> None:
        self._channel = channel
        self.target = self._request("bind", rng)

    def play_round(self, knobs: dict[str, Any], round_index: int) -> None:
        self._request("play", dict(knobs), int(round_index))

    def snapshot(self) -> Any:
        kind, payload = self._request("snapshot")
        if kind == "model":
            return ModelSnapshot.from_bytes(payload)
        data, n_classes, featurizer = payload
        return ScriptSnapshot(bytes(data), int(n_classes), featurizer)

    # -- the pipe ----------------------------------------------------------------------------------------------
    def _request(self, kind: str, *args: Any) -> Any:
        if self._process.poll() is not None:
            raise IsolationError(f"isolated body {self.name!r} is not running")
        self._conn.send((kind, *args))
        while True:
            try:
                msg = self._conn.recv()
            except EOFError:
                raise IsolationError(f"isolated body {self.name!r} died during {kind!r}") from None
            if msg[0] == "call":
                self._conn.send(self._serve(msg[1], msg[2]))
            elif msg[0] == "ok":
                return msg[1]
            else:
                raise IsolationError(f"isolated body {self.name!r} failed during {kind!r}:\n{msg[1]}")

    def _serve(self, name: str, args: tuple) -> tuple[str, Any]:
        """Answer one channel call from the child with the seat's real channel (only these names)."""
        if name not in CHANNEL_CALLS or self._channel is None:
            return "error", RuntimeError(f"no channel call {name!r}")
        try:
            attr = getattr(self._channel, name)
            return "ok", (attr(*args) if callable(attr) else attr)
        except Exception as e:  # the body sees the error's kind and message (e.g. an invalid query), nothing more
            return "error", ValueError(str(e)) if isinstance(e, ValueError) else RuntimeError(str(e))

    def close(self) -> None:
        """Stop the child (also at garbage collection)."""
        if self._process.poll() is None:
            try:
                self._conn.send(("exit",))
                self._process.wait(timeout=5)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait(timeout=5)
        if not self._conn.closed:
            self._conn.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


if __name__ == "__main__":  # the child: python -m extractgym.agents.seats.isolation FD
    _child(Connection(int(sys.argv[1])))
