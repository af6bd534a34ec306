"""Scenario files: a YAML schema validated at the boundary (pydantic, ``extra="forbid"``).

Everything is checked before the first round: field names and types, then the names the registries must
know (victims, datasets, attackers, defenders, brains), each body's ``params`` against its constructor's
typed keyword arguments, knob pins against the knobs' choices, and service references. Every problem is
reported with the path of the bad field, e.g. ``attackers.0.params.queries_per_round``.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

from extractgym.agents.brains import BRAINS
from extractgym.agents.registry import ATTACKERS, DEFENDERS, build, parameters
from extractgym.agents.seat import Seat, build_channel
from extractgym.agents.tactics import TACTICS
from extractgym.envs.referee import RewardWeights
from extractgym.victims.datasets import DATASETS, SPLITS, get_dataset
from extractgym.victims.zoo import VICTIMS


class ScenarioError(ValueError):
    """A scenario that cannot be played, with every problem and the path of its field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServiceSpec(_Strict):
    name: str = "api"
    victim: str = "digits-cnn"
    victim_seed: int = 0
    price_per_query: float = Field(0.0, ge=0, allow_inf_nan=False)
    account_price: float = Field(0.0, ge=0, allow_inf_nan=False)
    free_quota: int = Field(0, ge=0)
    rate_limit: int | None = Field(None, ge=1)
    output: Literal["probs", "top-k", "label"] = "probs"
    top_k: int = Field(1, ge=1)
    charge_rejected: bool = False  # queries a defence rejects (without a ban) are billed as answered ones


class BudgetSpec(_Strict):
    queries: int | None = Field(None, ge=0)
    money: float | None = Field(None, ge=0, allow_inf_nan=False)
    accounts: int | None = Field(None, ge=0)


class BrainSpec(_Strict):
    kind: str = "preset"
    knobs: dict[str, Any] = {}


class SeatSpec(_Strict):
    body: str
    params: dict[str, Any] = {}
    brain: BrainSpec = BrainSpec()

    @field_validator("brain", mode="before")
    @classmethod
    def _brain_shorthand(cls, v: Any) -> Any:
        return {"kind": v} if isinstance(v, str) else v


class AttackerSpec(SeatSpec):
    budget: BudgetSpec = BudgetSpec()
    # adaptive tactics composed with the body (extractgym.agents.tactics): {sybil: {...}, blinding: {...}, filter: {...}}
    tactics: dict[str, dict[str, Any]] = {}


class BenignSpec(_Strict):
    dataset: str
    split: Literal["train", "pool", "test", "all"] = "pool"
    customers: int = Field(5, ge=0)
    queries_per_round: int = Field(10, ge=1)
    service: str | None = None


class EvalSpec(_Strict):
    """An extra labelled set the referee scores every victim and attacker on at the end (no reward depends on it)."""

    dataset: str
    split: Literal["train", "pool", "test", "all"] = "test"


# The reward weights' fields, defaults and documentation live in one place: the referee's dataclass.
RewardSpec = create_model("RewardSpec", __base__=_Strict, __doc__=RewardWeights.__doc__,
                          **{f.name: (float, f.default) for f in dataclasses.fields(RewardWeights)})


class Scenario(_Strict):
    """A whole scenario. See ``scenarios/data/digits-basic.yaml`` for an annotated example."""

    name: str
    description: str = ""
    rounds: int = Field(10, ge=1, le=100_000)
    seed: int = Field(0, ge=0)
    services: list[ServiceSpec] = Field(default_factory=lambda: [ServiceSpec()], min_length=1)
    attackers: list[AttackerSpec] = []
    defenders: list[SeatSpec] = []
    benign: list[BenignSpec] = []
    # extra labelled sets scored at the end, e.g. the attacker's own domain (seed 000 Table 2)
    evaluate: list[EvalSpec] = []
    rewards: RewardSpec = RewardSpec()  # type: ignore[valid-type]

    def seat_names(self) -> list[str]:
        return [f"attacker_{i}" for i in range(len(self.attackers))] + [f"defender_{i}" for i in range(len(self.defenders))]


# -- loading -------------------------------------------------------------------------------------
def shipped_scenarios() -> dict[str, Path]:
    """Scenario name -> file, for the YAML files shipped in ``scenarios/data``."""
    folder = resources.files("extractgym.scenarios") / "data"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith((".yaml", ".yml"))}


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as e:
        raise ScenarioError(f"cannot read scenario file {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ScenarioError(f"{path}: malformed YAML{where}: {getattr(e, 'problem', None) or e}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: a scenario must be a YAML mapping, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def load_scenario(scenario: str | Path | Scenario | dict[str, Any], **overrides: Any) -> Scenario:
    """A validated :class:`Scenario` from a shipped name, a YAML path, a dict or a scenario object.

    ``overrides`` are merged into the scenario's fields first (nested dicts merge, lists are replaced).
    """
    if isinstance(scenario, Scenario):
        data = scenario.model_dump()
    elif isinstance(scenario, dict):
        data = scenario
    else:
        text = str(scenario)
        shipped = shipped_scenarios()
        if text in shipped:
            data = read_yaml(shipped[text])
        elif text.endswith((".yaml", ".yml")) or Path(text).exists():
            data = read_yaml(Path(text))
        else:
            raise ScenarioError(f"unknown scenario {text!r}: not a shipped name ({', '.join(sorted(shipped))}) "
                                f"nor a YAML file")
    data = deep_merge(data, overrides) if overrides else data
    try:
        parsed = Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(_format_errors(data.get("name", "scenario"), e)) from None
    problems = check_references(parsed)
    if problems:
        raise ScenarioError(f"scenario {parsed.name!r} is invalid:\n" + "\n".join(f"  - {p}" for p in problems))
    return parsed


def _format_errors(name: str, e: ValidationError) -> str:
    lines = [f"scenario {name!r} is invalid:"]
    for err in e.errors():
        path = ".".join(str(p) for p in err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        lines.append(f"  - {path}: {msg}" + (f" (got {err['input']!r})" if err["type"] != "extra_forbidden"
                                             and not isinstance(err.get("input"), dict) else ""))
    return "\n".join(lines)


# -- cross-field checks --------------------------------------------------------------------------
@lru_cache(maxsize=None)
def params_model(cls: type) -> type[BaseModel]:
    """A pydantic model of a body's constructor keywords (their type hints and defaults)."""
    hints = typing.get_type_hints(cls.__init__)
    fields = {n: (hints.get(n, Any), ... if p.default is p.empty else p.default) for n, p in parameters(cls).items()}
    return create_model(f"{cls.__name__}Params", __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True),
                        **fields)


def validated_params(cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as the body's constructor will receive them: validated and coerced by its type hints
    (``queries_per_round: "40"`` arrives as 40), only the keys the scenario gave."""
    model = params_model(cls).model_validate(params)
    return {k: getattr(model, k) for k in params}


def build_seat(table: dict[str, type], kind: str, seat: SeatSpec) -> Any:
    """A defender's body, or an attacker's :class:`~extractgym.agents.seat.Seat` (its body and the channel built
    from its ``tactics``), from validated params."""
    body = build(table, kind, seat.body, validated_params(table[seat.body], dict(seat.params)))
    if kind != "attacker":
        return body
    tactics = {name: validated_params(TACTICS[name], dict(params)) for name, params in getattr(seat, "tactics", {}).items()}
    return Seat(body, build_channel(tactics))


def check_params(cls: type, params: dict[str, Any], path: str) -> list[str]:
    try:
        params_model(cls).model_validate(params)
    except ValidationError as e:
        return [f"{path}.{'.'.join(map(str, err['loc']))}: "
                + ("unknown parameter; accepted: " + (", ".join(parameters(cls)) or "(none)")
                   if err["type"] == "extra_forbidden" else f"{err['msg']} (got {err.get('input')!r})")
                for err in e.errors()]
    return []


def _attacker_refs(seat: SeatSpec, services: list[str], path: str) -> list[str]:
    """Conventional attacker params that name other things: ``target``/``services``, ``pool``/``pool_split``."""
    problems = []
    target = seat.params.get("target")
    listed = seat.params.get("services")
    refs = [("target", target)] + [("services", r) for r in (listed if isinstance(listed, list) else [])]
    for key, ref in refs:
        if isinstance(ref, str) and ref not in services:
            problems.append(f"{path}.params.{key}: unknown service {ref!r}; services: {', '.join(services)}")
    pool = seat.params.get("pool")
    if isinstance(pool, str) and pool not in DATASETS:
        problems.append(f"{path}.params.pool: unknown dataset {pool!r}; known: {', '.join(sorted(DATASETS))}")
    split = seat.params.get("pool_split")
    if isinstance(split, str) and split not in (*SPLITS, "all"):
        problems.append(f"{path}.params.pool_split: unknown split {split!r}; known: {', '.join(SPLITS)}, all")
    return problems


def _check_seat(seat: SeatSpec, table: dict[str, type], kind: str, path: str, services: list[str]) -> list[str]:
    if seat.body not in table:
        return [f"{path}.body: unknown {kind} {seat.body!r}; known: {', '.join(sorted(table))}"]
    problems = check_params(table[seat.body], seat.params, f"{path}.params")
    if kind == "attacker":
        problems += _attacker_refs(seat, services, path)
        for name, params in getattr(seat, "tactics", {}).items():
            if name not in TACTICS:
                problems.append(f"{path}.tactics.{name}: unknown tactic; known: {', '.join(TACTICS)}")
            elif not (bad := check_params(TACTICS[name], params, f"{path}.tactics.{name}")):
                try:  # each tactic on its own, so every bad one is named at its own path
                    TACTICS[name](**validated_params(TACTICS[name], params))
                except (ValueError, TypeError) as e:
                    problems.append(f"{path}.tactics.{name}: {str(e).removeprefix(f'{name}: ')}")
            else:
                problems += bad
    if seat.brain.kind not in BRAINS:
        problems.append(f"{path}.brain.kind: unknown brain {seat.brain.kind!r}; known: {', '.join(BRAINS)}")
    if not problems:
        try:
            body = build_seat(table, kind, seat)
        except (ValueError, TypeError) as e:
            return [f"{path}.params: {e}"]
        from extractgym.agents.brains import pinned_action

        for name, value in seat.brain.knobs.items():  # one problem per pinned knob, at its own path
            try:
                pinned_action(body.knobs, {name: value})
            except ValueError as e:
                problems.append(f"{path}.brain.knobs.{name}: {e}")
    return problems


def check_references(s: Scenario) -> list[str]:
    """Names the registries must know and services the seats refer to."""
    problems: list[str] = []
    names = [svc.name for svc in s.services]
    if len(set(names)) != len(names):
        problems.append(f"services: names must be unique, got {names}")
    for i, svc in enumerate(s.services):
        if svc.victim not in VICTIMS:
            problems.append(f"services.{i}.victim: unknown victim {svc.victim!r}; known: {', '.join(sorted(VICTIMS))}")
    for i, seat in enumerate(s.attackers):
        problems += _check_seat(seat, ATTACKERS, "attacker", f"attackers.{i}", names)
    for i, seat in enumerate(s.defenders):
        problems += _check_seat(seat, DEFENDERS, "defender", f"defenders.{i}", names)
    for i, b in enumerate(s.benign):
        if b.dataset not in DATASETS:
            problems.append(f"benign.{i}.dataset: unknown dataset {b.dataset!r}; known: {', '.join(sorted(DATASETS))}")
        if b.service is not None and b.service not in names:
            problems.append(f"benign.{i}.service: unknown service {b.service!r}; services: {', '.join(names)}")
    for i, e in enumerate(s.evaluate):
        if e.dataset not in DATASETS:
            problems.append(f"evaluate.{i}.dataset: unknown dataset {e.dataset!r}; known: {', '.join(sorted(DATASETS))}")
    return problems or _check_data_fits(s)


def _check_tactics_fit(a: AttackerSpec, i: int, spec: Any) -> list[str]:
    """Blinding transforms and the data of filters / auto-encoders must suit the attacker's target inputs."""
    from extractgym.agents.tactics.blinding import TEXT_DEFAULTS

    problems = []
    blinding, filt = a.tactics.get("blinding", {}), a.tactics.get("filter")
    transform = blinding.get("transform", "scale") if "blinding" in a.tactics else None
    if transform is not None and (transform in TEXT_DEFAULTS) != (spec.kind == "text"):
        problems.append(f"attackers.{i}.tactics.blinding.transform: {transform!r} is for "
                        f"{'text' if transform in TEXT_DEFAULTS else 'images'}, but the target takes {spec.kind} inputs")
    uses = [("filter", filt.get("data", "digits"))] if filt is not None else []
    if transform == "autoencoder":
        uses.append(("blinding", blinding.get("data", "digits")))
    for name, params in a.tactics.items():  # any other tactic that can say why it cannot read the target's queries
        if name not in ("blinding", "filter") and hasattr(TACTICS.get(name), "fits"):
            problem = TACTICS[name](**validated_params(TACTICS[name], dict(params))).fits(spec)
            if problem is not None:
                problems.append(f"attackers.{i}.tactics.{name}: {problem}")
    for where, data in uses:
        if spec.kind != "image":
            problems.append(f"attackers.{i}.tactics.{where}: needs an image target, which takes {spec.kind} inputs")
        elif data in DATASETS and tuple(get_dataset(data).spec.shape) != tuple(spec.shape):
            problems.append(f"attackers.{i}.tactics.{where}.data: {data!r} images have shape "
                            f"{tuple(get_dataset(data).spec.shape)}; the target takes {tuple(spec.shape)}")
    return problems


def _check_data_fits(s: Scenario) -> list[str]:
    """Benign traffic and attacker pools must be valid queries for the service they go to, and no attacker pool
    may be a victim's held-out test split (the referee's, which attackers never see)."""
    victim_data = {svc.name: VICTIMS[svc.victim].dataset for svc in s.services}
    first = s.services[0].name

    def mismatch(dataset: str, service: str) -> str | None:
        have, want = get_dataset(dataset).spec, get_dataset(victim_data[service]).spec
        if (have.kind, tuple(have.shape)) != (want.kind, tuple(want.shape)):
            return (f"{dataset!r} samples ({have.kind} {tuple(have.shape)}) are not valid queries for service "
                    f"{service!r} (its victim takes {want.kind} {tuple(want.shape)})")
        return None

    problems = []
    for i, b in enumerate(s.benign):
        if (msg := mismatch(b.dataset, b.service or first)) is not None:
            problems.append(f"benign.{i}.dataset: {msg}")
    for i, a in enumerate(s.attackers):
        pool, split = a.params.get("pool"), a.params.get("pool_split", "pool")
        target = a.params.get("target") or (a.params.get("services") or [first])[0]
        if a.tactics:
            problems += _check_tactics_fit(a, i, get_dataset(victim_data[target]).spec)
        if not isinstance(pool, str):
            continue
        if (msg := mismatch(pool, target)) is not None:
            problems.append(f"attackers.{i}.params.pool: {msg}")
        if split in ("test", "all") and pool in victim_data.values():
            problems.append(f"attackers.{i}.params.pool_split: {split!r} of {pool!r} holds a victim's held-out test "
                            f"set, which attackers never see; use 'pool' (or 'train')")
    for i, e in enumerate(s.evaluate):  # scored on every service's victim: must be labelled valid queries for all
        if not get_dataset(e.dataset).labelled:
            problems.append(f"evaluate.{i}.dataset: {e.dataset!r} is unlabelled; evaluation needs labels")
        for svc in victim_data:
            if (msg := mismatch(e.dataset, svc)) is not None:
                problems.append(f"evaluate.{i}.dataset: {msg}")
                break
    for i, d in enumerate(s.defenders):  # a defender's own data (`data:`) must be able to read some service's queries
        data = d.params.get("data")
        if not isinstance(data, str):
            continue
        if data not in DATASETS:
            problems.append(f"defenders.{i}.params.data: unknown dataset {data!r}; known: {', '.join(sorted(DATASETS))}")
        elif all(mismatch(data, svc) is not None for svc in victim_data):
            problems.append(f"defenders.{i}.params.data: {mismatch(data, first)}")
    return problems
