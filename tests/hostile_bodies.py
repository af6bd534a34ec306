"""Hostile attacker bodies for the isolation tests (an importable module: an isolated body's child imports it).

Each one does, inside its child process, what issue 22 found an isolated body could do to the referee: send code
through the pipe (a pickle, as the old protocol unpickled), break the framing, hang, crash, hog CPU or memory, hand
over something that is not a snapshot. ``CONSTRUCTED`` counts the constructors run in *this* process: the referee's
process must never run one. (What a body must never see is looked for by a contestant's file: tests/test_isolation.py.)
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
import time
from typing import Any

import numpy as np

from extractgym.agents.attackers.random_sampling import RandomAttacker
from extractgym.agents.registry import register_attacker

CONSTRUCTED = 0


class Payload:
    """Unpickling this runs code: it marks the module that unpickled it (the old protocol's hole)."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return exec, ("import extractgym; extractgym.PWNED = True",)


def _raw(body: Any) -> socket.socket:
    return body.channel._wire.sock  # what a hostile body can reach: its end of the pipe


def _frame(header: bytes, blob: bytes = b"", n_head: int | None = None, n_blob: int | None = None) -> bytes:
    return struct.pack("<4sIQ", b"EGW1", len(header) if n_head is None else n_head,
                       len(blob) if n_blob is None else n_blob) + header + blob


ATTACKS = {
    # the old exploit: multiprocessing's framing around a pickle whose __reduce__ runs code
    "pickle": lambda: struct.pack("!i", len(p := pickle.dumps(("call", "send", ("api", Payload(), True))))) + p,
    # a pickle where the protocol expects safetensors arrays
    "pickle-in-blob": lambda: _frame(b'{"op":"call","name":"send","service":"api","adaptive":true,"text":null}',
                                     pickle.dumps(Payload())),
    "huge-header": lambda: _frame(b"", n_head=2**31),
    "huge-blob": lambda: _frame(b'{"op":"ok"}', n_blob=2**40),
    "garbage": lambda: bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)),
    "int-header": lambda: _frame(b"5"),
    "nan": lambda: _frame(b'{"op":"call","name":"left","what":NaN}'),
    "unknown-call": lambda: _frame(b'{"op":"call","name":"__class__"}'),
    "short": lambda: _frame(b'{"op":"call","name":"round"}')[:10],
}


@register_attacker("test-hostile")
class HostileAttacker(RandomAttacker):
    """Random sampling that turns hostile in round ``at`` (``attack``: a key of :data:`ATTACKS`, or ``sleep``,
    ``sleep-snapshot``, ``dict-snapshot``, ``script-snapshot``, ``crash``, ``spin``, ``memory``; ``none``, the
    default, plays honestly: the registry-wide tests play every registered body with its defaults)."""

    def __init__(self, attack: str = "none", at: int = 1, queries_per_round: int = 30) -> None:
        global CONSTRUCTED
        CONSTRUCTED += 1
        super().__init__(queries_per_round=queries_per_round)
        self.attack, self.at = attack, at

    def play_round(self, knobs: dict[str, Any], round_index: int) -> None:
        if self.attack == "none" or round_index != self.at:
            super().play_round(knobs, round_index)
            return
        if self.attack in ATTACKS:
            sock = _raw(self)
            sock.sendall(ATTACKS[self.attack]())
            if self.attack == "short":
                sock.shutdown(socket.SHUT_WR)
            time.sleep(3600)  # the referee's side ends this process
        elif self.attack == "sleep":
            time.sleep(3600)
        elif self.attack == "crash":
            os._exit(3)
        elif self.attack == "spin":
            while True:
                pass
        elif self.attack == "memory":
            self.hoard = np.ones(2**40, dtype=np.uint8)

    def snapshot(self) -> Any:
        if self.attack == "sleep-snapshot" and self.channel.round > self.at:
            time.sleep(3600)
        if self.attack == "dict-snapshot":
            return {"arch": "mlp"}
        if self.attack == "script-snapshot":
            import torch

            from extractgym.victims.snapshot import ScriptSnapshot

            return ScriptSnapshot.of(torch.nn.Flatten(), torch.zeros(1, 1, 8, 8), 64)
        return super().snapshot()
