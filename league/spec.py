"""League specs: YAML validated at the boundary (pydantic, ``extra="forbid"``), errors named by dotted path.

A spec names who plays, where, how often and for what::

    name: digits-league
    seed: 0                      # root seed: every episode seed derives from it
    seeds: 3                     # replicates per (attacker, defender, scenario)
    scenarios:                   # shipped names or YAML paths (relative to this file)
      - digits-basic
      - scenario: digits-similarity
        overrides: {rounds: 4}   # scenario fields replaced for this league (nested maps merge)
        attacker_params: {queries_per_round: 100}   # given to every attacker whose body accepts them
    attackers:                   # each fills attacker seat 0 of every scenario
      - {name: random, body: random}
      - {name: pgd-blind, body: jba-pgd, params: {queries_per_round: 50}, tactics: {blinding: {transform: scale}}}
    defenders:                   # each fills defender seat 0
      - {name: none, body: none}
      - {name: prada, body: prada, brain: preset}
    payoff:
      attacker: {return: 1.0, cost: -0.02}   # or "return" (the referee's episode return, the default)
      defender: return                        # or "zero-sum", or a linear map; default: DEFAULT_DEFENDER below

A contestant's ``brain`` is passed to the seat as it is, so whatever the scenario schema's brain accepts
(``preset``, ``random``, ``{kind: preset, knobs: {...}}``, a learned ``{policy: PATH}``) enters a league; a
relative ``policy`` path is read relative to the spec file. The scenario keeps everything else: services,
budgets, benign customers, reward weights and its other seats.
"""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from extractgym.victims import files


class LeagueError(ValueError):
    """A league that cannot be played, with every problem and the path of its field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScenarioEntry(_Strict):
    """A scenario of the league; a bare string is shorthand for ``{scenario: NAME}``."""

    scenario: str
    # the label rows, tables and seeds use (default: the scenario's file stem or name)
    name: str | None = None
    # scenario fields replaced for this league (nested maps merge, lists are replaced), e.g. {rounds: 4}
    overrides: dict[str, Any] = {}
    # parameters laid under every attacker's / defender's own params in this scenario, for the keys its
    # body accepts (e.g. a text scenario's `pool: guardian`)
    attacker_params: dict[str, Any] = {}
    defender_params: dict[str, Any] = {}

    @property
    def label(self) -> str:
        return self.name or Path(self.scenario).stem


class Contestant(_Strict):
    name: str = Field(min_length=1)
    body: str
    params: dict[str, Any] = {}
    # passed to the seat's `brain` unchanged: preset | random | {kind, knobs} | {policy: PATH} | ...
    brain: Any = "preset"
    # one line for the report (default: the first line of the body's documentation)
    description: str = ""


class AttackerContestant(Contestant):
    # adaptive tactics composed with the body: {sybil: {...}, blinding: {...}, filter: {...}}
    tactics: dict[str, dict[str, Any]] = {}
    # an untrusted contestant: its body runs isolated (true: a bubblewrap sandbox; process: a plain child process),
    # with these limits, optionally from a Python file (relative to the spec) this process never imports
    isolate: bool | Literal["process"] = False
    limits: dict[str, float] | None = None
    code: str | None = None


class DefenderContestant(Contestant):
    pass


Weights = dict[str, float]


# The defender's default payoff: what an API owner cares about, one unit each (every term lies in [0, 1]). The
# attackers' accuracy (their mean, as the referee scores it), what the benign customers get of the value they pay
# for -- measured by what they buy: 1 - total variation from the undefended answer for probability buyers,
# top-class agreement for label buyers, nothing for a banned customer (``benign_value_share``) -- and the share of
# benign accounts banned. A defence that hands its customers nothing of what they pay for is as bad as one that
# lets the attacker copy the victim perfectly. (The referee's ``return`` weighs only top-1 agreement by default,
# which a defence that scrambles probabilities but keeps the arg-max -- reverse sigmoid -- leaves at 0.999.)
DEFAULT_DEFENDER: dict[str, float] = {"attacker_accuracy": -1.0, "benign_value_share": 1.0, "false_positive_rate": -1.0}


class PayoffSpec(_Strict):
    """What each side maximises. ``return``: the seat's episode return from the referee. A map is a linear
    combination of summary figures (``{fidelity: 1.0, cost: -0.05}``; ``return`` may be one of its terms); a bare
    figure name means the seat's own figure where it has one (attacker seat 0's ``accuracy``, ``cost``, ...),
    else the episode's (``utility``, ``false_positive_rate``); dotted paths (``returns.defender_0``) reach any
    number of the summary. ``zero-sum`` (defender only): minus the attacker's payoff. The defender's default is
    :data:`DEFAULT_DEFENDER` (attackers' accuracy, customers' value, false positives)."""

    attacker: Literal["return"] | Weights = "return"
    defender: Literal["return", "zero-sum"] | Weights = Field(default_factory=lambda: dict(DEFAULT_DEFENDER))

    @field_validator("attacker", "defender")
    @classmethod
    def _finite(cls, v: Any) -> Any:
        if isinstance(v, dict):
            if not v:
                raise ValueError("a linear payoff needs at least one figure")
            bad = [k for k, w in v.items() if w != w or w in (float("inf"), float("-inf"))]
            if bad:
                raise ValueError(f"weights must be finite numbers: {', '.join(bad)}")
        return v


MAX_BOOTSTRAP = 2000  # each resample re-solves every equilibrium of every scope: ~0.1 s; 2000 is minutes, not hours


class RankingSpec(_Strict):
    """How rankings and confidence intervals are computed (see :mod:`extractgym.league.analysis`)."""

    bootstrap: int = Field(200, ge=0, le=MAX_BOOTSTRAP)   # resamples of the seeds for re-solved rankings (0: none)
    confidence: float = Field(0.95, gt=0, lt=1)
    alpha: float = Field(100.0, gt=0)               # alpha-Rank selection intensity (on payoffs scaled to range 1)
    population: int = Field(50, ge=2)              # alpha-Rank population size m


NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"  # a league's name is a folder name under runs/tournaments: never a path


class LeagueSpec(_Strict):
    """A whole league. See ``scenarios/tournaments/digits-league.yaml`` for an annotated example."""

    name: str = Field(min_length=1, max_length=100)
    description: str = ""
    seed: int = Field(0, ge=0)
    seeds: int = Field(3, ge=1, le=10_000)
    scenarios: list[ScenarioEntry] = Field(min_length=1)
    attackers: list[AttackerContestant] = Field(min_length=1)
    defenders: list[DefenderContestant] = Field(min_length=1)
    payoff: PayoffSpec = PayoffSpec()
    rankings: RankingSpec = RankingSpec()

    @field_validator("name")
    @classmethod
    def _plain_name(cls, v: str) -> str:
        import re

        if not re.match(NAME, v) or v in (".", ".."):
            raise ValueError(f"a league's name must be a plain folder name (letters, digits, '.', '_', '-'; no path): "
                             f"it names the output folder runs/tournaments/NAME; got {v!r}")
        return v

    @field_validator("scenarios", mode="before")
    @classmethod
    def _scenario_shorthand(cls, v: Any) -> Any:
        return [{"scenario": s} if isinstance(s, str) else s for s in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _unique_names(self) -> LeagueSpec:
        problems = []
        for field, labels in (("attackers", [c.name for c in self.attackers]),
                              ("defenders", [c.name for c in self.defenders]),
                              ("scenarios", [s.label for s in self.scenarios])):
            seen: dict[str, int] = {}
            for i, label in enumerate(labels):
                if label in seen:
                    what = "name" if field != "scenarios" else "label (set `name:` to tell them apart)"
                    problems.append(f"{field}.{i}.name: {what} {label!r} is already used by {field}.{seen[label]}")
                seen.setdefault(label, i)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def description(role: str, contestant: Contestant) -> str:
    """The contestant's one-line description: its own, else its body's (a preset's own line; for a class, the
    first line of its module's documentation -- one body per file -- else of the class's)."""
    import sys

    from extractgym.agents.registry import ATTACKERS, DEFENDERS, Preset, body_class, describe

    if contestant.description:
        return contestant.description
    table = ATTACKERS if role == "attacker" else DEFENDERS
    entry = table.get(contestant.body)
    if entry is None:
        return ""
    line = describe(entry)[1]
    if not isinstance(entry, Preset):
        module = (sys.modules[body_class(entry).__module__].__doc__ or "").strip().splitlines()
        line = module[0] if module else line
    return line.replace("``", "").strip()


# -- loading -------------------------------------------------------------------------------------
def shipped_leagues() -> dict[str, Path]:
    """League name -> file, for the specs shipped in ``scenarios/tournaments``."""
    folder = resources.files("extractgym.scenarios") / "tournaments"
    if not folder.is_dir():
        return {}
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith((".yaml", ".yml"))}


def read_spec(source: str | Path) -> tuple[dict[str, Any], Path]:
    """The raw mapping of a shipped league name or a YAML path, and the folder relative paths start from."""
    text = str(source)
    shipped = shipped_leagues()
    path = shipped[text] if text in shipped else Path(text)
    if text not in shipped and not path.exists():
        raise LeagueError(f"unknown league {text!r}: not a shipped name ({', '.join(sorted(shipped)) or 'none'}) "
                          f"nor a YAML file")
    # bounded like a scenario file (size, UTF-8, anchors, depth): victims/files.py
    data = files.read_yaml(path, "league spec", LeagueError)
    return data, path.resolve().parent


def parse_spec(data: dict[str, Any]) -> LeagueSpec:
    """Validate a raw mapping; every problem is reported with its dotted path."""
    files.check_size(data, "league spec", LeagueError)
    try:
        return LeagueSpec.model_validate(copy.deepcopy(data))
    except ValidationError as e:
        raise LeagueError(format_errors(str(data.get("name", "league")), e)) from None


def load_league(source: str | Path | dict[str, Any], base_dir: Path | None = None) -> tuple[LeagueSpec, Path]:
    """A validated spec and the folder its relative paths start from (``base_dir`` for a dict, default cwd)."""
    if isinstance(source, dict):
        return parse_spec(source), (base_dir or Path.cwd()).resolve()
    data, folder = read_spec(source)
    return parse_spec(data), folder


def format_errors(name: str, e: ValidationError) -> str:
    lines = [f"league {files.short(name)} is invalid:"]
    for err in e.errors():
        # union members show up in the location as e.g. "literal['return']" or "dict[str,float]": leave them out
        path = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and "[" in p))
        msg = files.clip(err["msg"].removeprefix("Value error, "), 300)
        if err["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling)"
        shown = err["type"] not in ("extra_forbidden", "value_error") and not isinstance(err.get("input"), dict)
        lines.append(f"  - {files.clip(path, 120) or '(top level)'}: {msg}"
                     + (f" (got {files.short(err['input'])})" if shown else ""))
        if len(lines) > 20:
            lines.append(f"  ... and {len(e.errors()) - 20} more")
            break
    return "\n".join(lines)
