"""Scripted brains that read the observation: short hand-written policies, the yardstick a learned brain must beat
and the proof that the observation carries what a real agent would act on.

Each reads named features of its seat's observation (``envs/game.py``: ``ATTACKER_OBS``, ``DEFENDER_OBS``; the
previous action follows them) and sets knobs by name, leaving every other knob at the scenario's pins or preset.

* ``spread-on-ban`` (attacker, a ``sybil`` tactic): one account until the first ban, then ``spread`` accounts in
  parallel for the rest of the episode -- cheap while the detector is lenient, spread once it bites.
* ``label-if-softened`` (attacker with a ``service`` knob): buy from the ``soft`` (probability) service until the
  answers look perturbed -- less confident than its own surrogate (``softened``) or disagreeing with it more than
  the victim would (``agreement``) -- then from the ``label`` service.
* ``tighten-on-pressure`` (defender with a ``level`` knob): a lenient level until an account nears the threshold
  or a burst of new accounts arrives, then a strict one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.brains import BRAINS, pinned_indices
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
    """One account until the first ban, then ``spread`` accounts (``start`` at first)."""

    def __init__(self, knobs: tuple[Knob, ...], values: Mapping[str, Any] | None = None,
                 rng: np.random.Generator | None = None, start: int = 1, spread: int = 4) -> None:
        super().__init__(knobs, values, rng)
        self.need("accounts", start, spread)
        self.start, self.spread = start, spread

    def decide(self, obs: np.ndarray) -> dict[str, Any]:
        if self.feature(obs, "banned_this_round") > 0:
            self.memory["banned"] = True
        return {"accounts": self.spread if self.memory.get("banned") else self.start}


class LabelIfSoftened(ScriptBrain):
    """Soft answers until they look perturbed, then labels."""

    def __init__(self, knobs: tuple[Knob, ...], values: Mapping[str, Any] | None = None,
                 rng: np.random.Generator | None = None, soft: str = "api", label: str = "api-label",
                 softened: float = 0.55, agreement: float = 0.5) -> None:
        super().__init__(knobs, values, rng)
        self.need("service", soft, label)
        self.soft, self.label, self.softened, self.agreement = soft, label, softened, agreement

    def decide(self, obs: np.ndarray) -> dict[str, Any]:
        seen = self.feature(obs, "confidence") > 0  # a round with answers has passed
        perturbed = seen and (self.feature(obs, "softened") > self.softened
                              or (self.feature(obs, "round") > 0.2 and self.feature(obs, "agreement") < self.agreement))
        if perturbed:
            self.memory["perturbed"] = True
        return {"service": self.label if self.memory.get("perturbed") else self.soft}


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


BRAINS.update({"spread-on-ban": SpreadOnBan, "label-if-softened": LabelIfSoftened,
               "tighten-on-pressure": TightenOnPressure})
