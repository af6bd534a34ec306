"""From a league spec to cells: one episode per (scenario, attacker, defender, replicate), all validated first.

Each cell's scenario is built as a dict -- the league's scenario with its overrides, attacker seat 0 and
defender seat 0 replaced by the contestants -- and validated by :func:`extractgym.scenarios.load_scenario`
before any episode runs, so a bad contestant, an unknown name or an incompatible pairing (a Jacobian attacker on
a text scenario) fails first, named by its place in the spec: ``attackers.2 (jba-pgd) x scenarios.1
(text-sentiment): attackers.0.params.pool: ...`` (the path after the colon is inside the cell's scenario).

Seeds and ids:

* The episode seed derives from the spec's root seed and the cell's ``(scenario label, replicate)`` only, never
  from positions or contestants: every attacker/defender pair of a scenario and replicate plays the same seed
  (common random numbers, so comparisons are paired) and adding a contestant changes no other cell.
* The cell id is the sha256 of the canonical JSON of the cell's resolved scenario (the scenario file's contents,
  the contestants' bodies, params, brains and tactics, the seed; fields left at their defaults are left out, so a
  field the schema gains later re-keys nothing), its replicate index and the digest of any policy
  file a brain loads or body file an isolated contestant runs (``code``). Renaming a contestant keeps its ids (its
  rows are reused); changing what it plays makes new ones. The code that plays a cell is keyed apart, by the
  fingerprint each row records (:mod:`extractgym.league.fingerprint`): a resume never mixes rows of two
  fingerprints unless asked to.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from extractgym.league.spec import AttackerContestant, Contestant, LeagueError, LeagueSpec, ScenarioEntry


def package_version() -> str:
    from extractgym import __version__

    return __version__


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def episode_seed(root: int, scenario_label: str, replicate: int) -> int:
    """The seed of every episode of ``scenario_label``'s replicate ``replicate`` (a 32-bit integer).

    ``SeedSequence(root, spawn_key=(hash(label), replicate))``: independent streams per scenario and replicate,
    the same for every attacker/defender pair (common random numbers).
    """
    label_key = int(sha256_text(scenario_label)[:8], 16)
    return int(np.random.SeedSequence(root, spawn_key=(label_key, replicate)).generate_state(1, np.uint32)[0])


@dataclass(frozen=True)
class Cell:
    """One episode of the league. ``config`` is the validated scenario (JSON-able) that the worker plays."""

    id: str
    scenario: str
    attacker: str
    defender: str
    replicate: int
    seed: int
    config: dict[str, Any] = field(repr=False, compare=False)
    order: tuple[int, int, int, int] = field(repr=False, compare=False)  # (scenario, attacker, defender, replicate)

    def payload(self) -> dict[str, Any]:
        """What a worker needs (plain data, so it pickles cheaply for processes and Ray)."""
        return {"id": self.id, "scenario": self.scenario, "attacker": self.attacker, "defender": self.defender,
                "replicate": self.replicate, "seed": self.seed, "config": self.config}


# -- building one cell's scenario ----------------------------------------------------------------
def _accepted(role: str, body: str, params: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``params`` that ``body``'s constructor accepts (unknown bodies: none; validation names them)."""
    from extractgym.agents.registry import ATTACKERS, DEFENDERS, parameters

    table = ATTACKERS if role == "attacker" else DEFENDERS
    if body not in table:
        return {}
    names = parameters(table[body])
    return {k: v for k, v in params.items() if k in names}


def _resolve_brain(brain: Any, base_dir: Path) -> Any:
    """A relative ``policy`` path of a learned brain is read relative to the spec file."""
    if isinstance(brain, dict) and isinstance(brain.get("policy"), str):
        path = Path(brain["policy"]).expanduser()
        if not path.is_absolute() and (base_dir / path).exists():
            return {**brain, "policy": str((base_dir / path).resolve())}
    return copy.deepcopy(brain)


def _policy_digests(brains: list[Any]) -> dict[str, str]:
    """sha256 of every policy file a brain loads, so a retrained policy under the same path makes new cells."""
    out = {}
    for brain in brains:
        if isinstance(brain, dict) and isinstance(brain.get("policy"), str) and Path(brain["policy"]).is_file():
            out[brain["policy"]] = hashlib.sha256(Path(brain["policy"]).read_bytes()).hexdigest()
    return out


def _code_digests(seats: list[Any]) -> dict[str, str]:
    """sha256 of every body file an isolated seat's ``code`` names: the fingerprint covers only the package, so an
    edited contestant file under the same path makes new cells."""
    out = {}
    for s in seats:
        code = s.get("code") if isinstance(s, dict) else None
        if isinstance(code, str) and Path(code).is_file():
            out[code] = hashlib.sha256(Path(code).read_bytes()).hexdigest()
    return out


def seat(role: str, contestant: Contestant, base: dict[str, Any], defaults: dict[str, Any],
         base_dir: Path) -> dict[str, Any]:
    """The scenario seat a contestant plays: the scenario's seat 0 with body, params, brain (and tactics) replaced."""
    params = {**_accepted(role, contestant.body, defaults), **copy.deepcopy(contestant.params)}
    out = {k: copy.deepcopy(v) for k, v in base.items() if k not in ("body", "params", "brain", "tactics")}
    out.update(body=contestant.body, params=params, brain=_resolve_brain(contestant.brain, base_dir))
    if isinstance(contestant, AttackerContestant):
        out["tactics"] = copy.deepcopy(contestant.tactics)
        for k in ("isolate", "limits", "code"):
            out.pop(k, None)
        if contestant.isolate:  # an untrusted contestant (agents/seats/isolation.py)
            out["isolate"] = contestant.isolate
            if contestant.limits is not None:
                out["limits"] = dict(contestant.limits)
            if contestant.code is not None:
                code = Path(contestant.code).expanduser()
                out["code"] = str(code if code.is_absolute() else (base_dir / code).resolve())
    return out


def cell_scenario(base: dict[str, Any], entry: ScenarioEntry, attacker: AttackerContestant | None,
                  defender: Contestant | None, base_dir: Path) -> dict[str, Any]:
    """The scenario dict of a cell (``None`` keeps the scenario's own seat 0 of that role)."""
    data = copy.deepcopy(base)
    for role, contestant, defaults in (("attacker", attacker, entry.attacker_params),
                                       ("defender", defender, entry.defender_params)):
        if contestant is None:
            continue
        seats = list(data.get(f"{role}s") or [])
        first = seats[0] if seats else {}
        placed = seat(role, contestant, first if isinstance(first, dict) else {}, defaults, base_dir)
        data[f"{role}s"] = [placed, *seats[1:]]
    return data


# -- the whole league ----------------------------------------------------------------------------
def scenario_base(entry: ScenarioEntry, base_dir: Path) -> dict[str, Any]:
    """The league's version of a scenario: shipped name or path (relative to the spec), with its overrides."""
    from extractgym.scenarios.schema import deep_merge, read_yaml, shipped_scenarios

    shipped = shipped_scenarios()
    if entry.scenario in shipped:
        data = read_yaml(shipped[entry.scenario])
    else:
        path = Path(entry.scenario).expanduser()
        path = path if path.is_absolute() else base_dir / path
        if not path.exists():
            raise FileNotFoundError(f"unknown scenario {entry.scenario!r}: not a shipped name "
                                    f"({', '.join(sorted(shipped))}) nor a YAML file (looked at {path})")
        data = read_yaml(path)
    return deep_merge(data, entry.overrides) if entry.overrides else data


def _problems(data: dict[str, Any]) -> list[str]:
    """The scenario schema's problem lines for a cell's scenario (empty when it is valid)."""
    from extractgym.scenarios.schema import ScenarioError, load_scenario

    try:
        load_scenario(data)
    except ScenarioError as e:
        lines = [ln.strip()[2:] for ln in str(e).splitlines() if ln.strip().startswith("- ")]
        return lines or [str(e)]
    return []


def _bind_problem(data: dict[str, Any], seed: int) -> str | None:
    """Build the cell's game without playing it (every body binds to its seat, as at ``reset``): bodies refuse
    what they cannot play there (``JbaPgdAttacker needs an image victim``) before any episode runs."""
    from extractgym.scenarios import make_env

    env = None
    try:
        env = make_env(data)
        env.reset(seed=seed)
    except Exception as e:  # noqa: BLE001 -- any refusal at bind time is the pairing's problem
        return f"cannot be played: {type(e).__name__}: {e}"
    finally:
        if env is not None:
            env.close()  # isolated bodies' processes
    return None


def expand(spec: LeagueSpec, base_dir: Path, bind: bool = True) -> list[Cell]:
    """Every cell of the league in spec order, each validated; raise :class:`LeagueError` naming every problem.

    Each contestant is checked against each scenario first (with the scenario's own seat of the other role),
    so a problem is named once, by the contestant and scenario it belongs to: the scenario schema, then
    (``bind``) its game is built and reset once, without a round played, so a body that cannot play there
    says so now. Then every pairing is checked by the schema.
    """
    from extractgym.scenarios.schema import ScenarioError, load_scenario

    problems: list[str] = []
    bases: dict[int, dict[str, Any]] = {}
    for j, entry in enumerate(spec.scenarios):
        where = f"scenarios.{j} ({entry.label})"
        try:
            bases[j] = scenario_base(entry, base_dir)
        except (FileNotFoundError, ScenarioError) as e:
            problems.append(f"scenarios.{j}.scenario: {e}")
            continue
        problems += [f"{where}: {p}" for p in _problems(bases[j])]
        for role, roster, given in (("attacker", spec.attackers, entry.attacker_params),
                                    ("defender", spec.defenders, entry.defender_params)):
            taken = {k for c in roster for k in _accepted(role, c.body, given)}
            problems += [f"scenarios.{j}.{role}_params.{k}: no {role} of the league accepts it (a typo?)"
                         for k in given if k not in taken]
    if problems:
        raise LeagueError(_message(spec, problems))

    for role, roster in (("attacker", spec.attackers), ("defender", spec.defenders)):
        for i, c in enumerate(roster):
            for j, entry in enumerate(spec.scenarios):
                data = cell_scenario(bases[j], entry, c if role == "attacker" else None,
                                     c if role == "defender" else None, base_dir)
                found = _problems(data)
                if not found and bind:
                    found = [p] if (p := _bind_problem(data, episode_seed(spec.seed, entry.label, 0))) else []
                problems += [f"{role}s.{i} ({c.name}) x scenarios.{j} ({entry.label}): {p}" for p in found]
    if problems:
        raise LeagueError(_message(spec, problems))

    cells: list[Cell] = []
    for j, entry in enumerate(spec.scenarios):
        seeds = [episode_seed(spec.seed, entry.label, r) for r in range(spec.seeds)]
        for ia, a in enumerate(spec.attackers):
            for id_, d in enumerate(spec.defenders):
                data = cell_scenario(bases[j], entry, a, d, base_dir)
                try:
                    scenario = load_scenario(data)
                except ScenarioError as e:
                    lines = [ln.strip()[2:] for ln in str(e).splitlines() if ln.strip().startswith("- ")]
                    problems += [f"attackers.{ia} ({a.name}) x defenders.{id_} ({d.name}) x scenarios.{j} "
                                 f"({entry.label}): {p}" for p in lines or [str(e)]]
                    continue
                resolved = scenario.model_dump(mode="json")
                seats = (*resolved["attackers"], *resolved["defenders"])
                digests = {**_policy_digests([s.get("brain") for s in seats]), **_code_digests(list(seats))}
                # keyed on the fields set away from their defaults: a field added to the schema later (at a default
                # that plays as before) does not re-key every row; what the defaults mean is code, keyed apart by
                # the fingerprint each row records
                keyed = scenario.model_dump(mode="json", exclude_defaults=True)
                for r, seed in enumerate(seeds):
                    config = {**resolved, "seed": seed}
                    ident = {"config": {**keyed, "seed": seed}, "replicate": r}
                    if digests:
                        ident["policies"] = digests
                    cells.append(Cell(id=sha256_text(canonical_json(ident)), scenario=entry.label, attacker=a.name,
                                      defender=d.name, replicate=r, seed=seed, config=config, order=(j, ia, id_, r)))
    if problems:
        raise LeagueError(_message(spec, problems))
    return cells


def _message(spec: LeagueSpec, problems: list[str], most: int = 20) -> str:
    more = [f"... and {len(problems) - most} more"] if len(problems) > most else []
    return f"league {spec.name[:80]!r} is invalid:\n" + "\n".join(f"  - {p}" for p in [*problems[:most], *more])
