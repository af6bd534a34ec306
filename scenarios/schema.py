"""Scenario files: a YAML schema validated at the boundary (pydantic, ``extra="forbid"``).

Everything is checked before the first round: field names and types, then the names the registries must
know (victims, datasets, attackers, defenders, tactics, brains), each body's ``params`` against its constructor's
typed keyword arguments, every parameter that names a dataset, split or service (declared by its type,
:mod:`extractgym.agents.refs`, whatever it is called), what each tactic says about the target's inputs, knob pins
against the knobs' choices. Every problem is reported with the path of the bad field, e.g.
``attackers.0.params.queries_per_round``; nothing a run would reject passes ``validate``.

Input is bounded before it is interpreted: a scenario file is at most 1 MiB of UTF-8, and the data it expands to
(YAML anchors and aliases included) at most 100,000 values, nested at most 50 deep; error messages never echo more
than a short prefix of a bad value.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import typing
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator, model_validator

from extractgym.agents.brains import BRAINS
from extractgym.agents.refs import Ref, references, target_of
from extractgym.agents.registry import (
    ATTACKERS,
    DEFENDERS,
    body_class,
    build,
    full_params,
    parameters,
    params_model,
    validated_params,
)
from extractgym.agents.seats.isolation import body_ref, isolation_mode, mode_problem
from extractgym.agents.seats.sandbox import Limits
from extractgym.agents.seats.seat import Seat, build_channel
from extractgym.agents.tactics import TACTICS
from extractgym.envs.api import MAX_COUNT, MAX_MONEY, SERVICE_TERMS, Term
from extractgym.envs.identity import BenignMetadata
from extractgym.envs.referee import RewardWeights
from extractgym.envs.remote import RemoteConfig
from extractgym.victims import files
from extractgym.victims.datasets import DATASETS, SECRET_DATASETS, SPLITS, get_dataset
from extractgym.victims.zoo import VICTIMS

MAX_FILE_BYTES = files.MAX_TEXT_BYTES
MAX_VALUES = files.MAX_VALUES
MAX_DEPTH = files.MAX_DEPTH
MAX_PROBLEMS = 20  # problems listed in one message (the rest are counted)
MAX_ISOLATED = 16  # isolated seats in one scenario (each runs its own process)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


class ScenarioError(ValueError):
    """A scenario that cannot be played, with every problem and the path of its field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _term_field(term: Term) -> tuple[Any, Any]:
    """A service term as a pydantic field: its type, default, meaning and bounds, all from :class:`ServiceConfig`."""
    finite = {"allow_inf_nan": False} if term.type is float else {}
    return term.type, Field(term.default, description=term.doc, **term.bounds, **finite)


# A service's published terms live in one place, the API's dataclass (as reward weights live in the referee's).
ServiceSpec = create_model(
    "ServiceSpec", __base__=_Strict, __doc__="A service: its victim, published terms and (optionally) remote endpoint.",
    name=(str, Field("api", pattern=NAME_PATTERN)),
    victim=(str, "digits-cnn"),
    victim_seed=(int, Field(0, ge=0, le=2**31 - 1)),
    **{term.name: _term_field(term) for term in SERVICE_TERMS},
    # answers from an HTTP endpoint (extractgym.envs.remote); `victim` stays the referee's local reference
    remote=(RemoteConfig | None, None))


class BudgetSpec(_Strict):
    queries: int | None = Field(None, ge=0, le=MAX_COUNT)
    money: float | None = Field(None, ge=0, le=MAX_MONEY, allow_inf_nan=False)
    accounts: int | None = Field(None, ge=1, le=MAX_COUNT)  # identities the owner may ever open (a cap)


class BrainSpec(_Strict):
    kind: str = "preset"
    knobs: dict[str, Any] = {}  # knob values pinned (the others follow the brain)
    params: dict[str, Any] = {}  # the brain's own keyword parameters (scripted brains)
    # a saved SB3 policy plays the seat (extractgym.agents.brains.learned); relative to the scenario file
    policy: str | None = Field(None, min_length=1, max_length=4096)
    stochastic: bool = False  # sample the policy's actions (default: its most likely action)

    @model_validator(mode="after")
    def _policy_alone(self) -> BrainSpec:
        if self.policy is None:
            if self.stochastic:
                raise ValueError("'stochastic' applies to a learned brain: add 'policy: PATH'")
            return self
        other = [f for f in ("knobs", "params") if getattr(self, f)] + (["kind"] if self.kind != "preset" else [])
        if other:
            raise ValueError(f"a learned brain ('policy') takes no {', '.join(other)}")
        return self


class SeatSpec(_Strict):
    body: str
    params: dict[str, Any] = {}
    brain: BrainSpec = BrainSpec()
    fix: dict[str, Any] = {}  # knob values fixed for the episode: those knobs leave the seat's action space

    @field_validator("brain", mode="before")
    @classmethod
    def _brain_shorthand(cls, v: Any) -> Any:
        return {"kind": v} if isinstance(v, str) else v


class LimitsSpec(_Strict):
    """What an isolated body may use (:class:`~extractgym.agents.seats.sandbox.Limits`)."""

    start_seconds: float = Field(Limits.start_seconds, gt=0, le=3600, allow_inf_nan=False)
    round_seconds: float = Field(Limits.round_seconds, gt=0, le=86_400, allow_inf_nan=False)
    snapshot_seconds: float = Field(Limits.snapshot_seconds, gt=0, le=3600, allow_inf_nan=False)
    memory_mb: int = Field(Limits.memory_mb, ge=512, le=1 << 20)
    cpu_seconds: int = Field(Limits.cpu_seconds, ge=1, le=10**6)
    max_frame_mb: int = Field(Limits.max_frame_mb, ge=1, le=1024)
    tmp_mb: int = Field(Limits.tmp_mb, ge=1, le=1 << 16)


class AttackerSpec(SeatSpec):
    budget: BudgetSpec = BudgetSpec()
    # run the body in its own process, reaching the API only through its channel over a pipe
    # (agents/seats/isolation.py): true = in a bubblewrap sandbox; process = a plain child process (no sandbox)
    isolate: bool | Literal["process"] = False
    limits: LimitsSpec | None = None  # an isolated body's deadlines and resources
    # a Python file that registers the body (isolated seats only; read only inside the sandbox, never imported here)
    code: str | None = Field(None, min_length=1, max_length=4096)
    # adaptive tactics composed with the body (extractgym.agents.tactics): {sybil: {...}, blinding: {...}, filter: {...}}
    tactics: dict[str, dict[str, Any]] = {}

    @model_validator(mode="after")
    def _isolated_only(self) -> AttackerSpec:
        if not self.isolate:
            for name in ("limits", "code"):
                if getattr(self, name) is not None:
                    raise ValueError(f"'{name}' applies to isolated seats: add 'isolate: true'")
        return self


class BenignSpec(_Strict):
    dataset: str
    split: Literal["train", "pool", "test", "all"] = "pool"
    customers: int = Field(5, ge=0, le=10_000)
    queries_per_round: int = Field(10, ge=1, le=10_000)
    service: str | None = None


class EvalSpec(_Strict):
    """An extra labelled set the referee scores every victim and attacker on at the end (no reward depends on it)."""

    dataset: str
    split: Literal["train", "pool", "test", "all"] = "test"


# The reward weights' fields, defaults and documentation live in one place: the referee's dataclass.
_REWARD_TYPES = typing.get_type_hints(RewardWeights)
RewardSpec = create_model("RewardSpec", __base__=_Strict, __doc__=RewardWeights.__doc__,
                          **{f.name: (float, Field(f.default, ge=-1e6, le=1e6, allow_inf_nan=False))
                             if _REWARD_TYPES[f.name] is float else (_REWARD_TYPES[f.name], f.default)
                             for f in dataclasses.fields(RewardWeights)})


# Identities (docs/sybil.md): the benign customers' metadata, declared once in envs/identity.py.
_METADATA_TYPES = typing.get_type_hints(BenignMetadata)
IdentitySpec = create_model(
    "IdentitySpec", __base__=_Strict,
    __doc__="The API keeps identities: every account gets a fingerprint (docs/sybil.md); how customers' look.",
    **{f.name: (_METADATA_TYPES[f.name], Field(f.default, allow_inf_nan=False) if _METADATA_TYPES[f.name] is float
                else Field(f.default, ge=1, le=10_000))
       for f in dataclasses.fields(BenignMetadata)})


class Scenario(_Strict):
    """A whole scenario. See ``scenarios/data/digits-basic.yaml`` for an annotated example."""

    name: str = Field(pattern=NAME_PATTERN)  # also a folder name (runs/NAME-seedS): no paths, no spaces
    description: str = Field("", max_length=2000)
    rounds: int = Field(10, ge=1, le=100_000)
    seed: int = Field(0, ge=0, le=2**63 - 1)
    services: list[ServiceSpec] = Field(default_factory=lambda: [ServiceSpec()], min_length=1)
    attackers: list[AttackerSpec] = []
    defenders: list[SeatSpec] = []
    benign: list[BenignSpec] = []
    # extra labelled sets scored at the end, e.g. the attacker's own domain (seed 000 Table 2)
    evaluate: list[EvalSpec] = []
    rewards: RewardSpec = RewardSpec()  # type: ignore[valid-type]
    # accounts get fingerprints (payment, network, client, zone) and requests a time of day: docs/sybil.md
    identities: IdentitySpec | None = None  # type: ignore[valid-type]
    # the attackers' surrogates: `full` (each body's own) or `cheap` (agents/extraction/surrogate.py CheapRecipe, for
    # every attacker whose `surrogate` is auto); the vector env batches cheap ones over its episodes (docs/rl.md)
    surrogates: Literal["full", "cheap"] = "full"
    # where cheap surrogates and the referee's batched scoring run: auto (CUDA when torch sees a GPU), cpu or cuda
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    # answer the rows of the benign customers' data and the attackers' pools from the victim's outputs computed once
    # per process (victims/answers.py): the same answers up to the rounding of requests of a few rows, much cheaper
    answer_table: bool = False

    def seat_names(self) -> list[str]:
        return [f"attacker_{i}" for i in range(len(self.attackers))] + [f"defender_{i}" for i in range(len(self.defenders))]


# -- loading -------------------------------------------------------------------------------------
def shipped_scenarios() -> dict[str, Path]:
    """Scenario name -> file, for the YAML files shipped in ``scenarios/data``."""
    folder = resources.files("extractgym.scenarios") / "data"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith((".yaml", ".yml"))}


def read_yaml(path: Path, what: str = "scenario") -> dict[str, Any]:
    """A YAML mapping from ``path``, bounded (size, UTF-8, values, depth) and named in every error
    (:mod:`extractgym.victims.files`, the loader every user file goes through)."""
    return files.read_yaml(path, what, ScenarioError, MAX_FILE_BYTES)


def check_size(data: Any, where: str) -> None:
    """Refuse data that expands (YAML aliases count each time they are used) beyond :data:`MAX_VALUES` values or
    :data:`MAX_DEPTH` levels, before anything walks it in full."""
    files.check_size(data, where, ScenarioError, MAX_VALUES, MAX_DEPTH)


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
        check_size(scenario, "scenario")
        data = scenario
    else:
        text = str(scenario)
        shipped = shipped_scenarios()
        if text in shipped:
            data = read_yaml(shipped[text])
        elif text.endswith((".yaml", ".yml")) or os.path.lexists(text):
            data = _resolve_policies(read_yaml(Path(text)), Path(text).parent)
        else:
            raise ScenarioError(f"unknown scenario {_short(text)}: not a shipped name ({', '.join(sorted(shipped))}) "
                                f"nor a YAML file")
    if overrides:
        check_size(overrides, "overrides")
        data = deep_merge(data, overrides)
    try:
        parsed = Scenario.model_validate(data)
    except ValidationError as e:
        name = data.get("name", "scenario")
        raise ScenarioError(format_errors(f"scenario {_short(name)}", e)) from None
    problems = check_scenario(parsed)
    if problems:
        more = [f"... and {len(problems) - MAX_PROBLEMS} more"] if len(problems) > MAX_PROBLEMS else []
        raise ScenarioError(f"scenario {parsed.name!r} is invalid:\n"
                            + "\n".join(f"  - {p}" for p in [*problems[:MAX_PROBLEMS], *more]))
    return parsed


def _resolve_policies(data: Any, base: Path) -> Any:
    """A seat's relative ``brain.policy`` (and an isolated attacker's ``code``) path is read relative to the
    scenario file's folder."""
    if not isinstance(data, dict):
        return data
    out = dict(data)

    def relative(v: Any) -> bool:
        return isinstance(v, str) and bool(v) and not Path(v).expanduser().is_absolute()

    for role in ("attackers", "defenders"):
        seats = data.get(role)
        if not isinstance(seats, list):
            continue
        resolved = []
        for i, s in enumerate(seats):
            if isinstance(s, dict) and isinstance(s.get("brain"), dict) and relative(s["brain"].get("policy")):
                s = {**s, "brain": {**s["brain"], "policy": str((base / s["brain"]["policy"]).resolve())}}
            if isinstance(s, dict) and relative(s.get("code")):  # a contestant's file: under the scenario's folder
                s = {**s, "code": str(files.inside(s["code"], base, f"{role}.{i}.code", ScenarioError))}
            resolved.append(s)
        out[role] = resolved
    return out


def format_errors(what: str, e: ValidationError, prefix: str = "") -> str:
    lines = [f"{what} is invalid:"]
    errors = e.errors()
    for err in errors[:MAX_PROBLEMS]:
        path = files.clip(prefix + ".".join(str(p) for p in err["loc"]), 160)
        msg = files.clip(err["msg"], 300)
        unknown = err["type"] in ("extra_forbidden", "unexpected_keyword_argument")  # the latter: dataclass fields
        if unknown:
            msg = "unknown field (check the spelling)"
        shown = not unknown and not isinstance(err.get("input"), dict)
        lines.append(f"  - {path}: {msg}" + (f" (got {_short(err.get('input'))})" if shown else ""))
    if len(errors) > MAX_PROBLEMS:
        lines.append(f"  ... and {len(errors) - MAX_PROBLEMS} more")
    return "\n".join(lines)


# -- bodies, tactics and what their parameters name ------------------------------------------------------
def isolation_args(seat: Any) -> tuple[dict[str, Any], dict[str, Any], Limits, str] | None:
    """``(body reference, parameters, limits, mode)`` of an isolated attacker seat, None for an in-process one."""
    mode = isolation_mode(getattr(seat, "isolate", False))
    if mode is None:
        return None
    limits = Limits(**seat.limits.model_dump()) if seat.limits is not None else Limits()
    if seat.code is not None:  # the child validates the parameters against a class this process never imports
        return body_ref(seat.body, code=seat.code), dict(seat.params), limits, mode
    from extractgym.agents.seats.isolation import IsolationError

    entry = ATTACKERS[seat.body]
    try:  # what crosses the pipe is JSON: the child coerces it again by the same type hints
        params = json.loads(json.dumps(validated_params(entry, dict(seat.params)), allow_nan=False))
    except (TypeError, ValueError) as e:
        raise IsolationError(f"an isolated body's parameters must be plain data (numbers, strings, lists, maps): "
                             f"{e}") from None
    return body_ref(seat.body, entry), params, limits, mode


def build_seat(table: dict[str, Any], kind: str, seat: SeatSpec, isolate: bool = True) -> Any:
    """A defender's body, or an attacker's :class:`~extractgym.agents.seats.seat.Seat` (its body and the channel built
    from its ``tactics``), from validated params. An isolated attacker seat gets an
    :class:`~extractgym.agents.seats.isolation.IsolatedBody` (a child process), or with ``isolate=False`` (knob
    discovery) what that child said of the body it built: this process never constructs an isolated body."""
    iso = isolation_args(seat) if kind == "attacker" else None
    if iso is not None:
        from extractgym.agents.seats.isolation import probe, start

        body = start(*iso) if isolate else probe(*iso)
    else:
        body = build(table, kind, seat.body, validated_params(table[seat.body], dict(seat.params)))
    if kind != "attacker":
        return body
    tactics = {name: validated_params(TACTICS[name], dict(params)) for name, params in getattr(seat, "tactics", {}).items()}
    return Seat(body, build_channel(tactics))


def check_params(entry: Any, params: dict[str, Any], path: str) -> list[str]:
    try:
        params_model(entry).model_validate(params)
    except ValidationError as e:
        return [f"{path}.{'.'.join(map(str, err['loc']))}: "
                + ("unknown parameter; accepted: " + (", ".join(parameters(entry)) or "(none)")
                   if err["type"] == "extra_forbidden" else f"{err['msg']} (got {_short(err.get('input'))})")
                for err in e.errors()]
    return []


@dataclasses.dataclass(frozen=True)
class _Context:
    """What the reference checks need to know about the scenario."""

    services: dict[str, str | None]  # service -> its victim's dataset (None: an unknown victim, reported elsewhere)
    attacker: bool  # the seat is an attacker's (whose data may never be a victim's test split)

    def spec(self, service: str) -> Any:
        """The input spec of ``service``'s queries, or None if it cannot be known (unknown service or victim)."""
        dataset = self.services.get(service)
        return get_dataset(dataset).spec if dataset is not None else None

    @property
    def first(self) -> str:
        return next(iter(self.services))


def _fits(dataset: str, service: str, ctx: _Context) -> str | None:
    have, want = get_dataset(dataset).spec, ctx.spec(service)
    if want is None:  # the service or its victim is unknown: reported at its own path
        return None
    if (have.kind, tuple(have.shape)) != (want.kind, tuple(want.shape)):
        return (f"{dataset!r} samples ({have.kind} {tuple(have.shape)}) are not valid queries for service {service!r} "
                f"(its victim takes {want.kind} {tuple(want.shape)})")
    return None


def check_references(entry: Any, values: dict[str, Any], path: str, ctx: _Context, target: str) -> list[str]:
    """Check every parameter of ``entry`` annotated with a :class:`~extractgym.agents.refs.Ref`."""
    problems = []
    refs = references(body_class(entry), set(parameters(entry)))
    for name, ref in refs.items():
        value = values.get(name)
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if item is None or not isinstance(item, str):
                continue
            problems += _check_ref(ref, item, f"{path}.{name}", values, ctx, target)
    return problems


def _check_ref(ref: Ref, value: str, path: str, values: dict[str, Any], ctx: _Context, target: str) -> list[str]:
    if ref.kind == "service":
        return [] if value in ctx.services else [f"{path}: unknown service {value!r}; services: {', '.join(ctx.services)}"]
    if ref.kind == "victim":
        return [] if value in VICTIMS else [f"{path}: unknown victim {value!r}; known: {', '.join(sorted(VICTIMS))}"]
    if ref.kind == "split":
        if value not in (*SPLITS, "all"):
            return [f"{path}: unknown split {value!r}; known: {', '.join(SPLITS)}, all"]
        dataset = values.get(ref.of)
        if ctx.attacker and value in ("test", "all") and dataset in ctx.services.values():
            return [f"{path}: {value!r} of {dataset!r} holds a victim's held-out test set, which attackers never "
                    f"see; use 'pool' (or 'train')"]
        return []
    if value not in DATASETS:
        return [f"{path}: unknown dataset {value!r}; known: {', '.join(sorted(DATASETS))}"]
    if ctx.attacker and value in SECRET_DATASETS:
        return [f"{path}: {value!r} is a secret task: attackers never see its data; its public inputs are "
                f"{get_dataset(value).public!r}"]
    ds = get_dataset(value)
    if ds.spec.kind not in ref.inputs:
        return [f"{path}: {value!r} is a {ds.spec.kind} dataset; this parameter takes {' or '.join(ref.inputs)} data"]
    if ref.labelled and not ds.labelled:
        return [f"{path}: {value!r} is unlabelled; this parameter needs labelled data"]
    if ref.fits == "target" and (msg := _fits(value, target, ctx)) is not None:
        return [f"{path}: {msg}"]
    if ref.fits == "any" and ctx.services and all(_fits(value, s, ctx) is not None for s in ctx.services):
        return [f"{path}: {_fits(value, ctx.first, ctx)}"]
    return []


def _check_isolation(seat: Any, path: str) -> tuple[list[str], Any]:
    """An isolated seat's own problems (the sandbox here, the code file), then what its child says of the body."""
    from extractgym.agents.seats.isolation import IsolationError, probe

    try:
        iso = isolation_args(seat)
    except IsolationError as e:
        return [f"{path}.body: {e}"], None
    why = mode_problem(iso[3])
    if why is not None:
        return [f"{path}.isolate: {why}"], None
    if seat.code is not None:
        code = Path(seat.code)
        if code.suffix != ".py" or not code.is_file():
            return [f"{path}.code: {_short(seat.code)} is not a Python file (.py)"], None
        if code.resolve().parent in (Path("/"), Path.home().resolve()):  # its folder is what the sandbox shows
            return [f"{path}.code: give a contestant's file a folder of its own (the body can read that folder)"], None
        if code.stat().st_size > MAX_FILE_BYTES:
            return [f"{path}.code: the file is {code.stat().st_size} bytes; at most {MAX_FILE_BYTES}"], None
    try:
        found = probe(*iso)
    except IsolationError as e:
        return [f"{path}: {e}"], None
    if found.error:
        return [f"{path}: {found.error}"], None
    if found.problems:
        return [f"{path}.params{'.' + loc if loc else ''}: {msg}" for loc, msg in found.problems], None
    return [], found


def _check_seat(seat: SeatSpec, table: dict[str, Any], kind: str, path: str, ctx: _Context) -> list[str]:
    isolated = kind == "attacker" and isolation_mode(getattr(seat, "isolate", False)) is not None
    if isolated and getattr(seat, "code", None) is not None:  # a body this process never imports: its child checks
        problems, found = _check_isolation(seat, path)
        if problems:
            return problems
        target = found.target or ctx.first
        if ctx.spec(target) is not None and ctx.spec(target).kind not in found.inputs:
            return [f"{path}.body: {seat.body!r} attacks {' or '.join(found.inputs)} models; service {target!r} "
                    f"takes {ctx.spec(target).kind} inputs"]
        return _check_rest(seat, path, found.knobs, ctx, target, kind)
    if seat.body not in table:
        return [f"{path}.body: unknown {kind} {seat.body!r}; known: {', '.join(sorted(table))}"]
    brain = [] if seat.brain.kind in BRAINS else [
        f"{path}.brain.kind: unknown brain {seat.brain.kind!r}; known: {', '.join(BRAINS)}"]
    entry = table[seat.body]
    problems = check_params(entry, seat.params, f"{path}.params")
    if problems:
        return brain + problems
    values = full_params(entry, validated_params(entry, dict(seat.params)))
    refs = references(body_class(entry), set(parameters(entry)))
    target = target_of(refs, values, ctx.first)
    problems = check_references(entry, values, f"{path}.params", ctx, target)
    if problems:
        return brain + problems
    inputs = getattr(body_class(entry), "inputs", ("image", "text"))
    if kind == "attacker" and ctx.spec(target) is not None and ctx.spec(target).kind not in inputs:
        return [f"{path}.body: {seat.body!r} attacks {' or '.join(inputs)} models; service {target!r} takes "
                f"{ctx.spec(target).kind} inputs"]
    if isolated:  # the child builds it (this process never runs an isolated body's constructor)
        problems, found = _check_isolation(seat, path)
        if problems:
            return brain + problems
        knobs = found.knobs
    else:
        try:  # constructors are cheap (no data, no models): they check values the types cannot
            body = build(table, kind, seat.body, validated_params(entry, dict(seat.params)))
        except (ValueError, TypeError) as e:
            return [f"{path}.params: {e}"]
        knobs = tuple(body.knobs)
    return _check_rest(seat, path, knobs, ctx, target, kind)


def _check_rest(seat: SeatSpec, path: str, knobs: tuple, ctx: _Context, target: str, kind: str) -> list[str]:
    """A seat's tactics, fixed and pinned knobs and brain, given its body's knobs."""
    problems: list[str] = []
    brain = [] if seat.brain.kind in BRAINS else [
        f"{path}.brain.kind: unknown brain {seat.brain.kind!r}; known: {', '.join(BRAINS)}"]
    for name, params in getattr(seat, "tactics", {}).items():
        where = f"{path}.tactics.{name}"
        if name not in TACTICS:
            problems.append(f"{where}: unknown tactic; known: {', '.join(TACTICS)}")
            continue
        bad = check_params(TACTICS[name], params, where)
        if bad:
            problems += bad
            continue
        values = validated_params(TACTICS[name], params)
        bad = check_references(TACTICS[name], full_params(TACTICS[name], values), where, ctx, target)
        if bad:
            problems += bad
            continue
        try:  # each tactic on its own, so every bad one is named at its own path
            tactic = TACTICS[name](**values)
        except (ValueError, TypeError) as e:
            problems.append(f"{where}: {str(e).removeprefix(f'{name}: ')}")
            continue
        fits = getattr(tactic, "fits", None)  # why the tactic cannot work on this target: a message, or
        if callable(fits) and ctx.spec(target) is not None and (found := fits(ctx.spec(target))) is not None:
            param, msg = found if isinstance(found, tuple) else (None, found)  # (the parameter to blame, a message)
            problems.append(f"{where}{'.' + param if param else ''}: {msg}")
        knobs += tuple(tactic.knobs)
    problems = brain + problems
    names = [k.name for k in knobs]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        problems.append(f"{path}.tactics: knob(s) {', '.join(clash)} clash with the body's knobs")
    if not problems:
        from extractgym.agents.brains import pinned_action

        for name, value in seat.fix.items():  # fixed knobs: real knobs, real choices
            try:
                pinned_action(knobs, {name: value})
            except ValueError as e:
                problems.append(f"{path}.fix.{name}: {e}")
        knobs = tuple(k for k in knobs if k.name not in seat.fix)
        for name, value in seat.brain.knobs.items():  # one problem per pinned knob, at its own path
            try:
                pinned_action(knobs, {name: value})
            except ValueError as e:
                problems.append(f"{path}.brain.knobs.{name}: {e}" + (" (it is fixed: see fix)" if name in seat.fix else ""))
        if not problems:
            problems += _check_brain(seat.brain, knobs, f"{path}.brain", kind)
    return problems


def _check_brain(brain: BrainSpec, knobs: tuple, path: str, role: str = "attacker") -> list[str]:
    """A brain's own parameters, and that it can drive these knobs (built once, cheaply); a learned brain's
    policy file and its fit to the seat (metadata only: the network is loaded at play)."""
    if brain.policy is not None:
        from extractgym.agents.brains.learned import PolicyError, check_policy

        try:
            check_policy(brain.policy, role, knobs, brain.stochastic)
        except PolicyError as e:
            return [f"{path}.policy: {e}"]
        return []
    entry = BRAINS[brain.kind]
    if brain.params:
        bad = check_params(entry, brain.params, f"{path}.params")
        if bad:
            return bad
    try:
        entry(knobs, brain.knobs, None, **validated_params(entry, dict(brain.params)))
    except (ValueError, TypeError) as e:
        return [f"{path}: {e}"]
    return []


def check_scenario(s: Scenario) -> list[str]:
    """Every cross-field problem of a parsed scenario: names, references, data that must fit services."""
    problems: list[str] = []
    if s.identities is not None:
        try:
            BenignMetadata(**s.identities.model_dump())
        except ValueError as e:
            problems.append(f"identities: {e}")
        problems += [f"services.{i}.remote: identities are kept for local services only"
                     for i, svc in enumerate(s.services) if svc.remote is not None]
    for i, seat in enumerate(s.attackers):  # fingerprint hygiene needs fingerprints
        needs = getattr(TACTICS.get("sybil"), "needs_identities", None)
        if s.identities is None and "sybil" in seat.tactics and callable(needs) and needs(seat.tactics["sybil"]):
            problems.append(f"attackers.{i}.tactics.sybil: fingerprint hygiene (payment_reuse, proxy_reuse, client, "
                            f"pacing, cover) needs the scenario's identities: section")
    names = [svc.name for svc in s.services]
    if len(set(names)) != len(names):
        problems.append(f"services: names must be unique, got {names}")
    for i, svc in enumerate(s.services):
        if svc.victim not in VICTIMS:
            problems.append(f"services.{i}.victim: unknown victim {svc.victim!r}; known: {', '.join(sorted(VICTIMS))}")
    services = {svc.name: VICTIMS[svc.victim].dataset if svc.victim in VICTIMS else None for svc in s.services}
    isolated = [i for i, a in enumerate(s.attackers) if a.isolate]
    if len(isolated) > MAX_ISOLATED:  # each is a process started to validate it
        return problems + [f"attackers.{isolated[MAX_ISOLATED]}.isolate: at most {MAX_ISOLATED} isolated seats in "
                           f"one scenario, got {len(isolated)}"]
    for i, seat in enumerate(s.attackers):
        problems += _check_seat(seat, ATTACKERS, "attacker", f"attackers.{i}", _Context(services, attacker=True))
    owner = _Context(services, attacker=False)
    for i, seat in enumerate(s.defenders):
        problems += _check_seat(seat, DEFENDERS, "defender", f"defenders.{i}", owner)
    for i, b in enumerate(s.benign):
        if b.service is not None and b.service not in services:
            problems.append(f"benign.{i}.service: unknown service {b.service!r}; services: {', '.join(services)}")
        elif b.dataset not in DATASETS:
            problems.append(f"benign.{i}.dataset: unknown dataset {b.dataset!r}; known: {', '.join(sorted(DATASETS))}")
        elif s.services[[svc.name for svc in s.services].index(b.service) if b.service else 0].remote is not None:
            problems.append(f"benign.{i}.service: benign customers cannot use a remote service (the referee audits "
                            f"their answers with the local victim); let the server simulate them (serve --benign)")
        elif (msg := _fits(b.dataset, b.service or owner.first, owner)) is not None:
            problems.append(f"benign.{i}.dataset: {msg}")
    for i, e in enumerate(s.evaluate):  # scored on every service's victim: must be labelled valid queries for all
        if e.dataset not in DATASETS:
            problems.append(f"evaluate.{i}.dataset: unknown dataset {e.dataset!r}; known: {', '.join(sorted(DATASETS))}")
            continue
        if not get_dataset(e.dataset).labelled:
            problems.append(f"evaluate.{i}.dataset: {e.dataset!r} is unlabelled; evaluation needs labels")
        for svc in services:
            if (msg := _fits(e.dataset, svc, owner)) is not None:
                problems.append(f"evaluate.{i}.dataset: {msg}")
                break
    return problems
