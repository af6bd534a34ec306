"""From a validated :class:`Scenario` to games, envs and brains."""

from __future__ import annotations

from typing import Any

import numpy as np

from extractgym.agents.base import AttackerBase
from extractgym.agents.brains import BRAINS
from extractgym.agents.registry import ATTACKERS, DEFENDERS, parameters
from extractgym.envs.api import Budget, PredictionAPI, Service, ServiceConfig
from extractgym.envs.benign import BenignGroup, BenignPopulation
from extractgym.envs.game import Game, free_knobs
from extractgym.envs.identity import BenignMetadata, Identities
from extractgym.envs.protocols import ATTACKER, DEFENDER, SeatInfo
from extractgym.envs.referee import Referee, RewardWeights
from extractgym.envs.remote import RemoteService
from extractgym.scenarios.schema import Scenario, build_seat, validated_params
from extractgym.victims.answers import AnswerTable, TabledVictim
from extractgym.victims.datasets import SECRET_DATASETS, get_dataset
from extractgym.victims.ensemble import resolve_device
from extractgym.victims.zoo import VICTIMS, load_victim


class _NoParameter:
    default = None


_NONE = _NoParameter()


class ScenarioFactory:
    """Builds a fresh :class:`Game` per episode; picklable (it holds only the scenario)."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.name = scenario.name
        self.default_seed = scenario.seed
        self._seats: dict[str, SeatInfo] | None = None
        self._victims: dict[tuple[str, int], Any] = {}
        resolve_device(scenario.device)  # device: cuda without a GPU is refused now, not at the first reset
        self._attacker_specs: list[Any] | None = None  # the attackers' specs under the ``surrogates`` switch
        self._sources: list[tuple[str, str]] | None = None
        self._configs: list[ServiceConfig] | None = None

    def _bodies(self, isolate: bool = True) -> tuple[dict[str, tuple[Any, Budget]], dict[str, Any]]:
        s = self.scenario
        if self._attacker_specs is None:
            self._attacker_specs = [self._surrogates(a) for a in s.attackers]
        attackers = {f"attacker_{i}": (build_seat(ATTACKERS, "attacker", a, isolate), Budget(**a.budget.model_dump()))
                     for i, a in enumerate(self._attacker_specs)}
        for seat, _ in attackers.values():
            if isinstance(seat.body, AttackerBase):  # in process (an isolated body keeps its surrogate on CPU)
                seat.body.device = s.device
        defenders = {f"defender_{i}": build_seat(DEFENDERS, "defender", d) for i, d in enumerate(s.defenders)}
        for d in defenders.values():
            if hasattr(d, "row_sources"):  # detectors that encode queries: on the device, and with the answer
                d.device = s.device        # table, the rows the victim's table holds from a table of their own
                d.row_sources = tuple(self.table_sources(None)) if s.answer_table else ()
        return attackers, defenders

    def _surrogates(self, spec: Any) -> Any:
        """The attacker's spec under the scenario's ``surrogates`` switch: ``cheap`` sets ``surrogate: cheap`` on
        every attacker whose body takes a ``surrogate`` parameter and leaves it at ``auto``."""
        if (self.scenario.surrogates != "cheap" or spec.body not in ATTACKERS  # (a body given as a file: unknown here)
                or "surrogate" not in parameters(ATTACKERS[spec.body])):
            return spec
        if spec.params.get("surrogate", "auto") != "auto":
            return spec
        return spec.model_copy(update={"params": {**spec.params, "surrogate": "cheap"}})

    def seats(self) -> dict[str, SeatInfo]:
        """Seat names (attackers first), roles and knobs, without building a game (an isolated body's knobs are
        what its child reported when validation started it: this process never runs its constructor)."""
        if self._seats is None:
            attackers, defenders = self._bodies(isolate=False)
            fixed = self.fixed()
            self._seats = {**{k: SeatInfo(ATTACKER, free_knobs(b.knobs, fixed.get(k))) for k, (b, _) in attackers.items()},
                           **{k: SeatInfo(DEFENDER, free_knobs(d.knobs, fixed.get(k))) for k, d in defenders.items()}}
        return self._seats

    def fixed(self) -> dict[str, dict[str, Any]]:
        """Seat -> knob values the scenario fixes for the episode (``fix:``)."""
        s = self.scenario
        seats = [f"attacker_{i}" for i in range(len(s.attackers))] + [f"defender_{i}" for i in range(len(s.defenders))]
        return {name: dict(spec.fix) for name, spec in zip(seats, [*s.attackers, *s.defenders], strict=True) if spec.fix}

    def build(self, seed: int) -> Game:
        s = self.scenario
        rng = np.random.default_rng(seed)
        game_rng, benign_rng = rng.spawn(2)
        if self._configs is None:  # frozen: one per factory
            self._configs = [ServiceConfig(**v.model_dump(exclude={"victim", "victim_seed", "remote"})) for v in s.services]
        services = [Service(cfg, self._victim(v.victim, v.victim_seed)) for cfg, v in zip(self._configs, s.services,
                                                                                          strict=True)]
        for svc, v in zip(services, s.services, strict=True):
            if v.remote is not None:  # answers from an HTTP endpoint whose terms must be the scenario's
                svc.backend = RemoteService(v.remote, svc.name, svc.victim.n_classes)
                svc.backend.check(svc.config, svc.victim.input_spec)
        attackers, defenders = self._bodies()
        metadata = identities = meta_rng = None
        if s.identities is not None:  # later children of the same generator: the streams above stay as they were
            identity_rng, meta_rng = rng.spawn(2)
            metadata = BenignMetadata(**s.identities.model_dump())
            identities = Identities(identity_rng, metadata.common_clients)
        api = PredictionAPI(services, list(defenders.values()), identities)
        test_sets = {v.name: get_dataset(VICTIMS[v.victim].dataset).split("test") for v in s.services}
        evaluations = {f"{e.dataset}:{e.split}": get_dataset(e.dataset).split(e.split) for e in s.evaluate}
        untrusted = any(a.isolate for a in s.attackers) or any(VICTIMS[v.victim].dataset in SECRET_DATASETS
                                                               for v in s.services)
        referee = Referee(api, test_sets, RewardWeights(**s.rewards.model_dump()), evaluations,
                          victims={v.name: (v.victim, v.victim_seed) for v in s.services}, baselines=untrusted,
                          device=s.device)
        groups = []
        for i, b in enumerate(s.benign):
            x, y = get_dataset(b.dataset).split(b.split)
            groups.append(BenignGroup(f"{b.dataset}:{b.split}#{i}", x, y, b.customers, b.queries_per_round,
                                      b.service or services[0].name))
        benign = BenignPopulation(api, groups, benign_rng, metadata, meta_rng) if groups else None
        return Game(api, attackers, defenders, benign, referee, s.rounds, game_rng, self.fixed())

    def _victim(self, name: str, seed: int) -> Any:
        """This factory's private copy of a victim, made once and served in all the episodes it builds (no seat can
        reach a victim: copying it per episode bought nothing and cost a third of a reset); with ``answer_table``,
        wrapped to answer the rows of the scenario's benign and pool data from a table (:mod:`extractgym.victims.answers`)."""
        victim = self._victims.get((name, seed))
        if victim is None:
            victim = load_victim(name, seed)
            device = resolve_device(self.scenario.device)
            if device.type != "cpu" and victim.featurize is None:  # an image model: its forward on the device
                victim.model.to(device)
            sources = self.table_sources(victim) if self.scenario.answer_table else []
            if sources:
                victim = TabledVictim(victim, AnswerTable(victim, sources))
            victim = self._victims[name, seed] = victim
        return victim

    def table_sources(self, victim: Any) -> list[tuple[str, str]]:
        """The ``(dataset, split)`` pairs whose rows this scenario sends as they are: the benign customers' data and
        the attackers' pools (``pool`` / ``pool_split`` parameters), of images (shaped as ``victim``'s inputs)."""
        s = self.scenario
        pairs = [(b.dataset, b.split) for b in s.benign]
        for a in s.attackers:
            pool = a.params.get("pool", parameters(ATTACKERS[a.body]).get("pool", _NONE).default)
            if isinstance(pool, str):
                split = a.params.get("pool_split", parameters(ATTACKERS[a.body]).get("pool_split", _NONE).default)
                pairs.append((pool, split if isinstance(split, str) else "pool"))
        if self._sources is None:
            self._sources = [(d, sp) for d, sp in dict.fromkeys(pairs) if get_dataset(d).spec.kind == "image"]
        spec = None if victim is None else victim.input_spec
        return [(d, sp) for d, sp in self._sources if spec is None or (spec.kind == "image" and
                                                                      tuple(get_dataset(d).spec.shape) == tuple(spec.shape))]

    def brains(self, seed: int | None = None) -> dict[str, Any]:
        """The scenario's brain for every seat (the policy a seat follows when no learner sits there)."""
        s = self.scenario
        seats = self.seats()
        specs = [*s.attackers, *s.defenders]
        rngs = np.random.default_rng(self.default_seed if seed is None else seed).spawn(len(specs))
        return {name: self._brain(name, spec.brain, seats[name], rng)
                for name, spec, rng in zip(seats, specs, rngs, strict=True)}

    def _brain(self, name: str, brain: Any, seat: SeatInfo, rng: np.random.Generator) -> Any:
        if brain.policy is not None:  # a saved policy (extractgym.agents.brains.learned)
            from extractgym.agents.brains.learned import LearnedBrain

            return LearnedBrain(brain.policy, seat.role, seat.knobs, rng, stochastic=brain.stochastic,
                                where=f"{name} of {self.name!r}")
        entry = BRAINS[brain.kind]
        return entry(seat.knobs, brain.knobs, rng, **validated_params(entry, dict(brain.params)))
