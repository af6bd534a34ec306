"""Isolated seats (issue 22): what an untrusted body could do to the referee before, reproduced, and refused.

Three layers, from cheap to costly:

* the wire (``agents/seats/wire.py``) in this process: every malformed frame the issue found (a pickle, an int,
  garbage, a short frame, a 2 GiB header, a 1 TiB blob, NaN) is a named :class:`WireError`, read in bounded
  memory, with nothing unpickled;
* hostile bodies in their sandboxes (``tests/hostile_bodies.py``), in one CLI run: the seat forfeits with the
  reason, the run goes on and exits 2 naming it, no code ran in the referee's process, and the honest seat's
  figures are those of a run without the hostile ones;
* a body given as a file (``code:``), looking from inside the sandbox for what it must never reach.

The remaining kinds of misbehaviour (crash, memory, CPU, broken snapshots) run with ``-m slow``.
"""

from __future__ import annotations

import json
import os
import pickle
import socket
import struct
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

import extractgym
from extractgym.agents.seats import sandbox
from extractgym.agents.seats.wire import MAGIC, Wire, WireError, WireTimeout, pack_arrays, unpack_arrays
from extractgym.cli import app

sys.path.insert(0, str(Path(__file__).parent))
import hostile_bodies  # noqa: E402  (registers test-hostile, here and in the children)

needs_bwrap = pytest.mark.skipif(sandbox.sandbox_problem() is not None,
                                 reason=f"bubblewrap: {sandbox.sandbox_problem()}")


# -- the wire ------------------------------------------------------------------------------------------------------
def _pair(max_blob: int = 1 << 20) -> tuple[socket.socket, Wire]:
    a, b = socket.socketpair()
    return a, Wire(b, max_blob, strict=True)


@pytest.mark.parametrize("name", sorted(set(hostile_bodies.ATTACKS) - {"unknown-call"}))  # a call: see the slow test
def test_a_malformed_frame_is_a_named_error_read_in_bounded_memory(name: str) -> None:
    raw, wire = _pair()
    raw.sendall(hostile_bodies.ATTACKS[name]())
    raw.shutdown(socket.SHUT_WR)  # nothing more comes: a reader that waits for the claimed bytes ends here
    tracemalloc.start()
    try:
        with pytest.raises(WireError) as e:
            header, blob = wire.recv(deadline=None)
            unpack_arrays(blob, ("x",))  # a header that parses still carries no arrays of the right kind
            raise WireError(f"accepted {header}")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, peak  # a 2 GiB or 1 TiB claim allocates nothing of the sort
    assert "accepted" not in str(e.value)
    assert not hasattr(extractgym, "PWNED")


def test_a_frame_that_does_not_come_times_out_and_a_good_one_round_trips() -> None:
    import time

    raw, wire = _pair()
    with pytest.raises(WireTimeout):
        wire.recv(deadline=time.monotonic() + 0.2)
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    sender = Wire(raw, 1 << 20, strict=False)
    sender.send({"op": "call", "name": "send", "left": float("inf")}, pack_arrays({"x": x}))
    with pytest.raises(WireError, match="not a number"):  # the strict end refuses infinity in a header
        wire.recv()
    sender.send({"op": "call", "name": "send"}, pack_arrays({"x": x}))
    header, blob = wire.recv()
    np.testing.assert_array_equal(unpack_arrays(blob, ("x",))["x"], x)
    assert header == {"op": "call", "name": "send"}


def test_the_old_protocol_unpickled_what_the_body_sent() -> None:
    """The exploit as it worked: multiprocessing's Connection.recv() runs a payload's __reduce__."""
    from multiprocessing.connection import Connection

    a, b = socket.socketpair()
    Connection(os.dup(a.fileno())).send_bytes(pickle.dumps(hostile_bodies.Payload()))
    try:
        Connection(os.dup(b.fileno())).recv()
        assert extractgym.PWNED  # what the referee's process suffered before
    finally:
        extractgym.__dict__.pop("PWNED", None)
    raw, wire = _pair()
    raw.sendall(struct.pack("!i", 9) + pickle.dumps(hostile_bodies.Payload()))
    with pytest.raises(WireError, match="not a frame"):
        wire.recv()
    assert not hasattr(extractgym, "PWNED") and MAGIC == b"EGW1"


# -- hostile bodies in their sandboxes ------------------------------------------------------------------------------
def _hostile(attack: str, **limits: float) -> dict:
    return {"body": "test-hostile", "params": {"attack": attack, "at": 1}, "isolate": True,
            "budget": {"queries": 90, "money": 10.0, "accounts": 2},
            "limits": {"round_seconds": 20, "snapshot_seconds": 20, **limits}}


HONEST = {"body": "random", "params": {"pool": "digits", "queries_per_round": 30}, "budget": {"queries": 90}}


def _scenario(tmp_path: Path, attackers: list[dict], name: str = "hostile") -> Path:
    data = {"name": name, "rounds": 3, "services": [{"name": "api", "victim": "digits-cnn", "price_per_query": 0.01}],
            "attackers": attackers, "defenders": [{"body": "none"}]}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@needs_bwrap
def test_hostile_bodies_forfeit_and_the_run_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTRACTGYM_ADMIN_KEY", "an-admin-key-the-body-must-not-see")
    hostile = [_hostile("pickle"), _hostile("huge-blob"), _hostile("sleep", round_seconds=10)]
    before = hostile_bodies.CONSTRUCTED
    result = CliRunner().invoke(app, ["run", str(_scenario(tmp_path, [HONEST, *hostile])), "--out",
                                      str(tmp_path / "out")], env={"COLUMNS": "240"})
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "attacker_1 forfeited" in result.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    reasons = summary["forfeits"]
    assert sorted(reasons) == ["attacker_1", "attacker_2", "attacker_3"]
    assert "not a frame of this protocol" in reasons["attacker_1"]  # the pickle
    assert "1099511627776 bytes" in reasons["attacker_2"] and "limit is" in reasons["attacker_2"]
    assert "within 10 s (limits.round_seconds)" in reasons["attacker_3"]
    assert not hasattr(extractgym, "PWNED")  # no code of the body's ran here
    assert hostile_bodies.CONSTRUCTED == before  # nor its constructor (validation and play included)
    for seat in reasons:  # they bought in round 0, turned hostile at the start of round 1, and bought nothing more
        assert summary["attackers"][seat]["queries"] == 30, (seat, summary["attackers"])
    alone = CliRunner().invoke(app, ["run", str(_scenario(tmp_path, [HONEST], "honest")), "--out",
                                     str(tmp_path / "alone")], env={"COLUMNS": "240"})
    assert alone.exit_code == 0, alone.output
    honest = json.loads((tmp_path / "alone" / "summary.json").read_text())["attackers"]["attacker_0"]
    assert summary["attackers"]["attacker_0"] == honest  # the honest seat played as if alone
    assert summary["no_query_baseline"]["api"]["fidelity"] > 0.9  # a public task: the summary says so
    assert "public task" in summary["threat_model"]["api"]


SNOOP = '''
import os, socket
from extractgym.agents.registry import register_attacker
from extractgym.envs.protocols import Knob
import extractgym.agents.attackers.random_sampling as rs

IMPORTED_BY = os.getpid()


@register_attacker("file-snoop")
class FileSnoop(rs.RandomAttacker):
    """A contestant's body given as a file: looks for what it must never reach, reports it as knob choices."""

    def __init__(self, look: list[str], queries_per_round: int = 30) -> None:
        super().__init__(queries_per_round=queries_per_round)
        found = [f"env:{k}" for k in os.environ if "KEY" in k or "SECRET" in k]
        for path in look:
            try:
                found.append(f"read:{path}:{len(os.listdir(path)) if os.path.isdir(path) else len(open(path, 'rb').read())}")
            except OSError:
                pass
        for name, fn in (("test-split", lambda: rs.get_dataset("digits").split("test")),
                         ("secret-task", lambda: rs.get_dataset("digits-secret")),
                         ("sklearn-digits", lambda: __import__("sklearn.datasets", fromlist=["x"]).load_digits()),
                         ("network", lambda: socket.create_connection(("1.1.1.1", 53), timeout=2))):
            try:
                fn()
                found.append(name)
            except Exception:
                pass
        try:
            with open(os.path.join(look[0], "planted"), "w") as f:
                f.write("x")
        except OSError:
            pass
        self.knobs = (*self.knobs, Knob("found", tuple(found) or ("nothing",)))
'''


@needs_bwrap
def test_a_body_given_as_a_file_sees_nothing_it_must_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from extractgym.scenarios import make_env
    from extractgym.scenarios.runner import play_episode
    from extractgym.victims.cache import cache_root
    from extractgym.victims.secret import secret_file, secret_key

    secret_key()  # the operator's secret exists (in the model cache)
    monkeypatch.setenv("EXTRACTGYM_ADMIN_KEY", "an-admin-key-the-body-must-not-see")
    code = tmp_path / "contestant" / "snoop.py"
    code.parent.mkdir()
    code.write_text(SNOOP)
    look = [str(cache_root()), str(secret_file()), str(cache_root() / "victims")]
    env = make_env("digits-basic", rounds=2, attackers=[{
        "body": "file-snoop", "code": str(code), "isolate": True, "params": {"look": look},
        "budget": {"queries": 60}}])
    found = next(k for k in env.seat_info["attacker_0"].knobs if k.name == "found").choices
    assert found == ("nothing",), found  # no cache, no secret, no test split, no raw data, no network, no env
    assert not any("snoop" in m for m in sys.modules)  # the referee's process never imported the file
    summary = play_episode(env)
    env.close()
    assert summary["queries"] > 0 and not summary.get("forfeits")
    assert not (cache_root() / "planted").exists()  # nothing it wrote reached this machine's files


def test_the_sandbox_never_shows_the_hosts_tmp_or_the_folder_a_checkout_lies_in(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """pytest puts the parent of a checkout on the import path (the repository root is the package): showing it
    whole showed every file beside the checkout, and a checkout under /tmp covered the sandbox's private /tmp with
    the host's, read-only (no temporary folder, the model cache in view)."""
    package = Path(extractgym.__file__).resolve().parent
    monkeypatch.setattr(sys, "path", ["/tmp", str(package.parent), *sys.path])
    shown = [Path(p) for p in sandbox.code_paths()]
    assert Path("/tmp") not in shown
    assert package in shown or any(p in package.parents for p in shown)  # the package itself stays readable
    if not package.parent.name.endswith("-packages"):
        assert package.parent not in shown


def test_isolate_true_is_refused_without_bubblewrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "_bwrap", lambda: (None, "bubblewrap (bwrap) is not installed"))
    path = _scenario(tmp_path, [{**HONEST, "isolate": True}])
    for command in ("validate", "run"):
        result = CliRunner().invoke(app, [command, str(path), "--out", str(tmp_path / "o")][:2 if command ==
                                                                                              "validate" else 4])
        assert result.exit_code == 2 and "attackers.0.isolate" in result.output, result.output
        assert "isolate: process" in result.output.replace("\n", " ")
    assert not (tmp_path / "o").exists()


def test_limits_and_code_need_an_isolated_seat(tmp_path: Path) -> None:
    for extra, field in (({"limits": {"round_seconds": 5}}, "limits"), ({"code": "x.py"}, "code")):
        result = CliRunner().invoke(app, ["validate", str(_scenario(tmp_path, [{**HONEST, **extra}]))])
        assert result.exit_code == 2 and f"'{field}' applies to isolated seats" in result.output, result.output
    result = CliRunner().invoke(app, ["validate", str(_scenario(tmp_path, [{**HONEST, "isolate": True,
                                                                           "limits": {"round_seconds": -1}}]))])
    assert result.exit_code == 2 and "attackers.0.limits.round_seconds" in result.output
    escape = _scenario(tmp_path, [{**HONEST, "isolate": True, "code": "../../elsewhere.py"}])
    result = CliRunner().invoke(app, ["validate", str(escape)], env={"COLUMNS": "240"})
    assert result.exit_code == 2 and "attackers.0.code" in result.output and "leads outside" in result.output


@pytest.mark.slow
@needs_bwrap
@pytest.mark.parametrize("attack, limits, words", [
    ("pickle-in-blob", {}, "not a safetensors file"),
    ("garbage", {}, "not a frame of this protocol"),
    ("huge-header", {}, "header of 2147483648 bytes"),
    ("int-header", {}, "got int"),
    ("nan", {}, "NaN"),
    ("unknown-call", {}, "no call '__class__'"),
    ("short", {}, "closed the connection mid-frame"),
    ("sleep-snapshot", {"snapshot_seconds": 3}, "within 3 s (limits.snapshot_seconds)"),
    ("dict-snapshot", {}, "must return a ModelSnapshot"),
    ("script-snapshot", {}, "TorchScript is a program"),
    ("crash", {}, "exit code 3"),
    ("memory", {"memory_mb": 3072}, "MemoryError"),
    ("spin", {"cpu_seconds": 25, "round_seconds": 300}, "used up its CPU time"),
])
def test_every_kind_of_misbehaviour_forfeits_with_its_reason(attack: str, limits: dict, words: str) -> None:
    from extractgym.scenarios import make_env
    from extractgym.scenarios.runner import play_episode

    env = make_env("digits-basic", rounds=3, attackers=[_hostile(attack, **limits), HONEST])
    summary = play_episode(env)
    env.close()
    assert words in summary["forfeits"]["attacker_0"], summary["forfeits"]
    assert "attacker_1" not in summary["forfeits"] and summary["attackers"]["attacker_1"]["queries"] == 90
    assert summary["attackers"]["attacker_0"]["queries"] <= 90


def test_a_tournament_contestant_can_be_isolated(tmp_path: Path) -> None:
    from extractgym.league.cells import seat
    from extractgym.league.spec import parse_spec

    spec = parse_spec({"name": "t", "scenarios": ["digits-basic"], "defenders": [{"name": "none", "body": "none"}],
                       "attackers": [{"name": "untrusted", "body": "file-snoop", "code": "them/attack.py",
                                      "isolate": True, "limits": {"round_seconds": 30}}]})
    placed = seat("attacker", spec.attackers[0], {"body": "random", "isolate": False}, {}, tmp_path)
    assert placed["isolate"] is True and placed["limits"] == {"round_seconds": 30}
    assert placed["code"] == str((tmp_path / "them" / "attack.py").resolve())  # relative to the spec file
