"""Scripted brains that read the observation: short hand-written policies, the yardstick a learned brain must beat
and the proof that the observation carries what a real agent would act on.

Each reads named features of its seat's observation (``envs/game.py``: ``ATTACKER_OBS``, ``DEFENDER_OBS``; the
previous action follows them) and sets knobs by name, leaving every other knob at the scenario's pins or preset.

* ``spread-on-ban`` (attacker, a ``sybil`` tactic): one step along ``accounts`` (and ``queries``) per round that
  brings a ban -- one account and a fast pace while the detector is lenient, more accounts and a slower pace once
  it bites.
* ``rotate-on-refusal`` (attacker, a ``sybil`` tactic): one account, kept until the service starts refusing its
  queries (a throttling detector's warning that detection nears), then fresh accounts rotated every ``rotate_every``
  answered queries, so none reaches a ban.
* ``label-if-softened`` (attacker with a ``service`` knob): buy from the ``soft`` (probability) service until the
  answers look perturbed -- unusually unconfident for a served classifier, or less confident than its own surrogate
  (``softened``) -- then from the ``label`` service; optionally a small probe in round 1.
* ``tighten-on-pressure`` (defender with a ``level`` knob): a lenient level until an account nears the threshold
  or a burst of new accounts arrives, then a strict one.
* ``perturb-young-probs`` (defender with a ``defence`` knob, the ``switch`` body): answers untouched until accounts
  opened during the campaign buy probabilities, then a perturbation (``mad``) for the rest of the episode.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.brains.base import BRAINS, pinned_indices
from extractgym.envs.game import ATTACKER_OBS, DEFENDER_OBS
from extractgym.envs.protocols import Knob, encode_action


class ScriptBrain:
    """Base: knobs by name, observation features by name, memory within an episode (reset at round 0)."""

    features: tuple[str, ...] = ATTACKER_OBS
    context_args = ("knobs", "values", "rng")

    def __init__(self, knobs: tuple[Knob, ...], values: Mapping[str, Any] | None = None,
                 rng: np.random.Generator | None = None) -> None:
        self.knobs, self.pins = knobs, dict(values or {})
        self.names = {k.name for k in knobs}
        self.memory: dict[str, Any] = {}

    def need(self, knob: str, *choices: Any) -> None:
        if knob not in self.names:
            raise ValueError(f"{type(self).__name__} sets the knob {knob!r}, which this seat does not have; knobs: "
                             f"{', '.join(sorted(self.names))}")
        k = next(k for k in self.knobs if k.name == knob)
        for c in choices:
            if c not in k.choices:
                raise ValueError(f"{type(self).__name__}: knob {knob!r} has no choice {c!r}; choices: {list(k.choices)}")

    def feature(self, obs: np.ndarray, name: str) -> float:
        return float(np.asarray(obs).reshape(-1)[self.features.index(name)])

    def act(self, values: Mapping[str, Any]) -> int:
        return encode_action(self.knobs, pinned_indices(self.knobs, {**self.pins, **values}))

    def __call__(self, obs: np.ndarray) -> int:
        if self.feature(obs, "round") == 0.0:
            self.memory = {}
        return self.act(self.decide(obs))

    def decide(self, obs: np.ndarray) -> dict[str, Any]:
        raise NotImplementedError


class SpreadOnBan(ScriptBrain):
    """Step through ``accounts`` (and ``queries``, if given) one step per round that brings a ban: few accounts and a
    fast pace while the detector is lenient, more accounts and a slower pace once it bites."""

    def __init__(self, knobs: tuple[Knob, ...], values: Mapping[str, Any] | None = None,
                 rng: np.random.Generator | None = None, accounts: list[int] = [1, 2, 4],  # noqa: B006
                 queries: list[int] | None = None) -> None:
        super().__init__(knobs, values, rng)
        if not accounts or (queries is not None and len(queries) != len(accounts)):
            raise ValueError(f"accounts must be a non-empty list and queries one value per step, got {accounts}, "
                             f"{queries}")
        self.need("accounts", *accounts)
        if queries is not None:
            self.need("queries", *queries)
        self.accounts, self.queries = list(accounts), list(queries) if queries is not None else None

    def decide(self, obs: np.ndarray) -> dict[str, Any]:
        step = self.memory.get("step", 0)
        if self.feature(obs, "banned_this_round") > 0:
            step = self.memory["step"] = min(step + 1, len(self.accounts) - 1)
        values: dict[str, Any] = {"accounts": self.accounts[step]}
        if self.queries is not None:
            values["queries"] = self.queries[step]
        return values


class RotateOnRefusal(ScriptBrain):
    """Keep one account until the service refuses queries (the warning of a throttling detector), then rotate
    accounts every ``rotate_every`` answered queries (optionally at another pace, ``queries``)."""

    def __init__(self, knobs: tuple[Knob, ...], values: Mapping[str, Any] | None = None,
                 rng: np.random.Generator | None = None, rotate_every: int = 50, queries: int | None = None) -> None:
        super().__init__(knobs, values, rng)
        self.need("rotate_every", None, rotate_every)
        if queries is not None:
            self.need("queries", queries)
        self.rotate_every, self.queries = rotate_every, queries

    def decide(self, obs: np.ndarray) -> dict[str, Any]:
        if self.feature(obs, "refused") > 0 and self.feature(obs, "queries_left") > 0:
            self.memory["warned"] = True
        if not self.memory.get("warned"):
            return {"rotate_every": None}
        return {"rotate_every": self.rotate_every, **({"queries": self.queries} if self.queries is not None else {})}


class LabelIfSoftened(ScriptBrain):
    """Probe the probability service, switch to labels for good once its answers look perturbed.

    A victim served honestly answers most queries confidently; reverse sigmoid, MAD and temperature flatten the
    answers (low ``confidence``, high ``entropy``), and once the surrogate has learned something, perturbed answers
    are less confident than it is (``softened``). Round 1 buys ``probe`` queries (if given) from ``soft``; from then on
    it buys ``spend`` queries a round (if given) from whichever service it settled on.
    """

    def __init__(self, knobs: tuple[Knob, ...], values: Mapping[str, Any] | None = None,
                 rng: np.random.Generator | None = None, soft: str = "api", label: str = "api-label",
                 confidence: float = 0.8, softened: float = 0.6, probe: int | None = None,
                 spend: int | None = None) -> None:
        super().__init__(knobs, values, rng)
        self.need("service", soft, label)
        if probe is not None or spend is not None:
            self.need("queries", *(q for q in (probe, spend) if q is not None))
        self.soft, self.label, self.confidence, self.softened = soft, label, confidence, softened
        self.probe, self.spend = probe, spend

    def decide(self, obs: np.ndarray) -> dict[str, Any]:
        answered = self.feature(obs, "confidence") > 0  # this observation follows a round with answers
        if answered and self.feature(obs, "one_hot") < 0.5 and (
                self.feature(obs, "confidence") < self.confidence or self.feature(obs, "softened") > self.softened):
            self.memory["perturbed"] = True
        first = self.feature(obs, "round") == 0.0
        perturbed = bool(self.memory.get("perturbed"))
        values: dict[str, Any] = {"service": self.label if perturbed else self.soft}
        if "labels" in self.names:  # train on the arg-max of every answer so far: what survives the perturbation
            values["labels"] = "hard" if perturbed else "soft"
        queries = self.probe if first else self.spend
        if queries is not None:
            values["queries"] = queries
        return values


class TightenOnPressure(ScriptBrain):
    """A lenient detector level until an account nears its threshold or new accounts flood in, then a strict one."""

    features = DEFENDER_OBS

    def __init__(self, knobs: tuple[Knob, ...], values: Mapping[str, Any] | None = None,
                 rng: np.random.Generator | None = None, lenient: float = 0.5, strict: float = 2.0,
                 pressure: float = 0.5, new_accounts: float = 0.5) -> None:
        super().__init__(knobs, values, rng)
        self.need("level", lenient, strict)
        self.lenient, self.strict, self.pressure, self.new_accounts = lenient, strict, pressure, new_accounts

    def decide(self, obs: np.ndarray) -> dict[str, Any]:
        if self.feature(obs, "pressure_max") > self.pressure or self.feature(obs, "new_account_traffic") > self.new_accounts:
            self.memory["alarm"] = True
        return {"level": self.strict if self.memory.get("alarm") else self.lenient}


class PerturbYoungProbs(ScriptBrain):
    """Serve answers untouched until young accounts (opened during the campaign) buy probabilities, then perturb."""

    features = DEFENDER_OBS

    def __init__(self, knobs: tuple[Knob, ...], values: Mapping[str, Any] | None = None,
                 rng: np.random.Generator | None = None, off: str = "none", on: str = "mad",
                 share: float = 0.2) -> None:
        super().__init__(knobs, values, rng)
        self.need("defence", off, on)
        self.off, self.on, self.share = off, on, share

    def decide(self, obs: np.ndarray) -> dict[str, Any]:
        if self.feature(obs, "young_traffic") > 0 and self.feature(obs, "young_probs_share") > self.share:
            self.memory["probed"] = True
        return {"defence": self.on if self.memory.get("probed") else self.off}


BRAINS.update({"spread-on-ban": SpreadOnBan, "rotate-on-refusal": RotateOnRefusal, "label-if-softened": LabelIfSoftened,
               "tighten-on-pressure": TightenOnPressure, "perturb-young-probs": PerturbYoungProbs})
