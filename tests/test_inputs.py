"""Every file a user hands us goes through one loader (``victims/files.py``), and every bad input of issue 22 exits
2 naming the problem, in bounded time and memory, with nothing written or charged; ``validate`` and ``run`` agree
on every policy file of the battery.

Kinds: tournament specs (anchors, depth, UTF-8, echoed errors), policy files (zip bombs, forged sizes, pickles,
NaN weights, malformed metadata, networks too large to build), ``train --param``, ``serve --db/--host/--port``,
``run --out``, queries (a str subclass that lies, a missing account), snapshots in-process (an object with
``build()``, a dict, TorchScript of the wrong shape), and the cache (a writer killed mid-save, fallback folders).
"""

from __future__ import annotations

import io
import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from extractgym.agents.attackers.random_sampling import RandomAttacker
from extractgym.agents.registry import register_attacker
from extractgym.cli import app
from extractgym.envs.api import Account, Budget, Client, PredictionAPI, Service, ServiceConfig
from extractgym.envs.errors import InvalidQuery
from extractgym.victims.base import InputSpec

WIDE = {"COLUMNS": "240"}


def _cli(*args: str):
    start = time.process_time()
    result = CliRunner().invoke(app, list(args), env=WIDE, catch_exceptions=False)
    return result, time.process_time() - start


def _fails(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    for w in words:
        assert w in result.output, result.output
    assert len(result.output) < 4000  # errors never echo unbounded input


# -- tournament specs -------------------------------------------------------------------------------------------
def _bomb(levels: int) -> str:
    lines = ["name: bomb", 'a0: &a0 ["xxxxxxxxxx"]']
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, "
              f"*a{i - 1}]" for i in range(1, levels + 1)]
    return "\n".join(lines + [f"attackers: *a{levels}", "defenders: []", "scenarios: [digits-basic]"])


@pytest.mark.parametrize("text, words", [
    (_bomb(9), ["expands to more than"]),           # 466 bytes, 9^9 values: over 120 s before
    (_bomb(4), ["is invalid", "attackers.8"]),              # thousands of bad values: megabytes of error text before
    ("name: deep\nscenarios: " + "[" * 5000 + "]" * 5000, ["nested"]),
    (b"name: caf\xe9\n", ["not UTF-8", "byte 9"]),
])
def test_a_hostile_tournament_spec_is_refused_quickly(tmp_path: Path, text: str | bytes, words: list[str]) -> None:
    path = tmp_path / "league.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    result, cpu = _cli("tournament", str(path), "--dry-run", "--out", str(tmp_path / "out"))
    _fails(result, *words)
    assert cpu < 20  # bounded work (a generous bound, not a benchmark)
    assert not (tmp_path / "out").exists()


# -- policy files ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def good_policy(tmp_path_factory) -> tuple[dict, bytes]:
    """A real policy file for digits-basic's attacker_0, built from its metadata (no training needed)."""
    from extractgym.agents.brains.learned import build_policy
    from extractgym.scenarios import make_env
    from extractgym.training import algos
    from extractgym.training.policies import policy_meta

    env = make_env("digits-basic", rounds=2)
    meta = policy_meta(env, "attacker_0", "ppo", "flat", algos.policy_kwargs("ppo"))
    meta = json.loads(json.dumps(meta, default=str))
    buf = io.BytesIO()
    torch.save(build_policy(meta).state_dict(), buf)
    return meta, buf.getvalue()


def _policy(path: Path, meta: object, weights: bytes, forge: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("extractgym.json", meta if isinstance(meta, bytes) else json.dumps(meta))
        z.writestr("policy.pth", weights)
    if forge:  # rewrite a member's declared size in the central directory (what a forged or bombed archive claims)
        data = bytearray(path.read_bytes())
        for name, size in forge.items():
            at = data.rfind(b"PK\x01\x02")
            while at != -1:
                n = int.from_bytes(data[at + 28:at + 30], "little")
                if data[at + 46:at + 46 + n].decode() == name:
                    data[at + 24:at + 28] = size.to_bytes(4, "little")
                    break
                at = data.rfind(b"PK\x01\x02", 0, at)
        path.write_bytes(bytes(data))
    return path


def _bad_policies(meta: dict, weights: bytes) -> dict[str, tuple[object, bytes, dict | None, str]]:
    state = torch.load(io.BytesIO(weights), weights_only=True)
    nan = {k: v.clone() for k, v in state.items()}
    next(iter(nan.values())).view(-1)[0] = float("nan")
    wrong = {k: v[..., :1].clone() if v.ndim else v for k, v in state.items()}

    def save(obj: object) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    class Evil:
        def __reduce__(self):
            return os.system, ("echo pwned",)

    return {
        "nan-weights": (meta, save(nan), None, "NaN or inf"),
        "pickle": (meta, pickle.dumps({"w": Evil()}), None, "not a file of tensors"),
        "no-role": ({k: v for k, v in meta.items() if k != "role"}, weights, None, "lacks role"),
        "observation-not-a-map": ({**meta, "observation": "x"}, weights, None, "malformed"),
        "bad-json": (b"{not json", weights, None, "not valid JSON"),
        "not-utf8": (b'{"format": "caf\xe9"}', weights, None, "not UTF-8"),
        "nan-in-json": (json.dumps({**meta, "format": 1}).replace('"format": 1', '"format": NaN').encode(), weights,
                        None, "not valid JSON"),
        "gigabyte-weights": (meta, weights, {"policy.pth": 2**30}, "holds 1073741824 bytes"),
        "zip-bomb": (meta, b"\0" * 2**21, {"policy.pth": 60 * 2**20}, "expands"),
        "huge-network": ({**meta, "policy_kwargs": {"net_arch": [4096] * 8, "activation_fn": "tanh"}}, weights, None,
                         "parameters"),
        "wrong-shapes": (meta, save(wrong), None, "does not match the network"),
    }


def test_validate_and_run_refuse_every_bad_policy_file_alike(tmp_path: Path, good_policy) -> None:
    meta, weights = good_policy
    scenario = yaml.safe_load((Path(__file__).parent / ".." / "scenarios" / "data" / "digits-basic.yaml").read_text())
    good = _policy(tmp_path / "good.zip", meta, weights)
    scenario["attackers"][0]["brain"] = {"policy": str(good)}
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(scenario))
    result, _ = _cli("validate", str(tmp_path / "good.yaml"))
    assert result.exit_code == 0, result.output  # the battery's files differ from a good one in one way each
    battery = {**_bad_policies(meta, weights), "not-a-zip": (None, b"", None, "not a policy file"),
               "a-folder": (None, b"", None, "not a file")}
    for name, (m, w, forge, words) in battery.items():
        path = tmp_path / f"{name}.zip"
        if name == "not-a-zip":
            path.write_bytes(b"plain text")
        elif name == "a-folder":
            path.mkdir()
        else:
            _policy(path, m, w, forge)
        scenario["attackers"][0]["brain"] = {"policy": str(path)}
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(scenario))
        checked, cpu = _cli("validate", str(tmp_path / f"{name}.yaml"))
        ran, _ = _cli("run", str(tmp_path / f"{name}.yaml"), "--out", str(tmp_path / f"out-{name}"))
        _fails(checked, "attackers.0.brain.policy", words)
        _fails(ran, "attackers.0.brain.policy", words)
        assert checked.output.split("error:")[1] == ran.output.split("error:")[1], name  # the same refusal
        assert not (tmp_path / f"out-{name}").exists() and cpu < 20, name


# -- train --param ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("param, words", [
    ("learning_rate=inf", "finite"), ("gamma=nan", "finite"), ("batch_size=1e15", "must be in"),
    ("target_kl=[1,2]", "is a number"), ("normalize_advantage=maybe", "true or false"),
    ("n_steps=2.5", "whole number"), ("rollout_buffer_kwargs={a: 1}", "cannot be set"),
    ("x=&a [*a, *a]", "nested"),
])
def test_train_params_are_typed_finite_and_in_range(tmp_path: Path, param: str, words: str) -> None:
    result, _ = _cli("train", "digits-basic", "--algo", "ppo", "--timesteps", "1", "--param", param,
                     "--out", str(tmp_path / "t"))
    _fails(result, words)
    assert not (tmp_path / "t").exists()


# -- serve --------------------------------------------------------------------------------------------------------
def test_serve_refuses_a_bad_database_host_or_port_before_printing_a_key(tmp_path: Path) -> None:
    import socket

    (tmp_path / "notes.txt").write_text("not a database")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    cases = [(["--db", str(tmp_path / "notes.txt")], "not an SQLite database"),
             (["--db", str(tmp_path)], "is a folder"),
             (["--db", str(tmp_path / "notes.txt" / "x.db")], "cannot create its folder"),
             (["--db", str(tmp_path / "a.db"), "--host", "no.such.host.invalid"], "--host"),
             (["--db", str(tmp_path / "b.db"), "--port", str(busy.getsockname()[1])], "Address already in use")]
    for args, words in cases:
        result, _ = _cli("serve", "digits-basic", *args)
        _fails(result, words)
        assert "key" not in result.output.lower().replace("--db", "") and "served at" not in result.output
    busy.close()
    assert not (tmp_path / "a.db").exists() and not (tmp_path / "b.db").exists()
    assert (tmp_path / "notes.txt").read_text() == "not a database"


# -- run --out ----------------------------------------------------------------------------------------------------
def test_run_out_on_a_file_fails_before_playing(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    for out in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        result, _ = _cli("run", "digits-basic", "--out", str(out))
        _fails(result, "--out")
        assert "playing rounds" not in result.output and "victim_accuracy" not in result.output


# -- queries -------------------------------------------------------------------------------------------------------
class _Text:
    name, n_classes = "t", 2
    input_spec = InputSpec(kind="text")

    def predict_proba(self, x):
        return np.full((len(x), 2), 0.5)


class Liar(str):
    """A str subclass that says it is not blank and not long."""

    def strip(self, *a):
        return "not blank"

    def __len__(self):
        return 1


def test_a_lying_str_subclass_and_a_missing_account_are_refused_and_nothing_is_charged() -> None:
    api = PredictionAPI([Service(ServiceConfig("t", price_per_query=1.0), _Text())])
    api.register_owner("a", Budget(queries=10))
    client = Client(api, "a")
    acc = client.open_account("t")
    for bad, words in (([Liar("   ")], "empty"), ([Liar("x" * 6000)], "characters")):
        with pytest.raises(InvalidQuery, match=words):
            client.query(acc, bad)
    for account in (None, "acc-1", {"id": acc.id}):
        with pytest.raises(InvalidQuery, match="account must be an Account"):
            client.query(account, ["fine"])
    assert api.wallets["a"].queries == 0 and api.wallets["a"].money == 0
    assert isinstance(acc, Account)


# -- snapshots in-process: the referee builds only registered architectures from weights ------------------------
class LookupTable(torch.nn.Module):
    """The T1 path reopened: a 'model' that answers from a table of the referee's own test inputs."""

    def forward(self, x):
        return torch.zeros(len(x), 10)


@register_attacker("test-bad-snapshot")
class BadSnapshotAttacker(RandomAttacker):
    def __init__(self, kind: str = "none", queries_per_round: int = 20) -> None:  # none: honest (registry-wide tests)
        super().__init__(queries_per_round=queries_per_round)
        self.kind = kind

    def snapshot(self):
        from extractgym.victims.snapshot import ModelSnapshot, ScriptSnapshot

        if self.kind == "none":
            return super().snapshot()
        if self.kind == "build":
            return type("Snap", (), {"build": lambda self, n=None: LookupTable(), "featurizer": None})()
        if self.kind == "dict":
            return {"arch": "mlp"}
        if self.kind == "subclass":
            snap = super().snapshot()
            return type("Sub", (ModelSnapshot,), {"build": lambda self, n=None: LookupTable()})(
                snap.arch, snap.n_classes, snap.in_shape, snap.featurizer, snap.state)
        return ScriptSnapshot.of(torch.nn.Flatten(), torch.zeros(1, 1, 8, 8), 10)  # 64 outputs, not 10


@pytest.mark.parametrize("kind, words", [("build", "must return a ModelSnapshot"), ("dict", "got dict"),
                                         ("subclass", "got Sub"), ("script", "outputs have shape")])
def test_a_snapshot_the_referee_does_not_build_itself_is_refused(tmp_path: Path, kind: str, words: str) -> None:
    scenario = {"name": "snap", "rounds": 1, "attackers": [{"body": "test-bad-snapshot", "params": {"kind": kind}}]}
    (tmp_path / "snap.yaml").write_text(yaml.safe_dump(scenario))
    result, _ = _cli("run", str(tmp_path / "snap.yaml"), "--out", str(tmp_path / "out"))
    _fails(result, "attacker_0", words)
    assert not (tmp_path / "out").exists()


# -- the cache -------------------------------------------------------------------------------------------------------
def test_a_writer_killed_mid_save_leaves_nothing_behind(tmp_path: Path) -> None:
    code = ("import sys, time; from pathlib import Path; from extractgym.victims.cache import write_atomic\n"
            "def save(tmp):\n    tmp.write_bytes(b'half'); print(tmp, flush=True); time.sleep(600)\n"
            "write_atomic(Path(sys.argv[1]) / 'entry.pt', save)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "victims")], stdout=subprocess.PIPE,
                            env={**os.environ, "EXTRACTGYM_CACHE": str(tmp_path)})
    (tmp_path / "victims").mkdir()
    tmp = Path(proc.stdout.readline().decode().strip())
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert tmp.exists()  # what kill -9 leaves
    again = subprocess.run([sys.executable, "-c", "from extractgym.victims.cache import cache_dir; cache_dir('victims')"],
                           env={**os.environ, "EXTRACTGYM_CACHE": str(tmp_path)}, capture_output=True)
    assert again.returncode == 0 and not tmp.exists() and list((tmp_path / "victims").iterdir()) == []


def test_a_fallback_cache_folder_is_removed_at_exit(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    code = ("import warnings; warnings.simplefilter('ignore'); from extractgym.victims import cache\n"
            "print(cache.cache_dir('victims').parent)")
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "EXTRACTGYM_CACHE": str(tmp_path / "file")},
                          capture_output=True, text=True)
    folder = Path(done.stdout.strip())
    assert done.returncode == 0 and folder.name.startswith("extractgym-cache-") and not folder.exists()
