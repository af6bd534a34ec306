"""The referee: the only judge of accuracy, fidelity, utility and cost, and the source of all rewards.

It alone holds each victim's held-out test set; attackers never see it. Rewards are computed from its
figures, never from an agent's own report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from extractgym.envs.api import PredictionAPI, Wallet
from extractgym.envs.protocols import AttackerBody


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the per-round reward terms (set in the scenario).

    Attacker reward per round: ``accuracy * d_accuracy + fidelity * d_fidelity - cost * money/money_budget
    - queries * queries/query_budget - banned * accounts_banned``.
    Defender reward per round: ``-attacker_gain * mean(d_accuracy over attackers) - utility_loss * (1 - utility)
    - false_positive * benign_banned/benign_accounts`` (this round's new bans).
    """

    accuracy: float = 1.0
    fidelity: float = 0.0
    cost: float = 0.0
    queries: float = 0.0
    banned: float = 0.0
    attacker_gain: float = 1.0
    utility_loss: float = 1.0
    false_positive: float = 1.0


@dataclass(frozen=True)
class Score:
    accuracy: float
    fidelity: float


class Referee:
    """Scores surrogates against the victims' test sets and computes reward terms."""

    def __init__(self, api: PredictionAPI, test_sets: dict[str, tuple[np.ndarray, np.ndarray]],
                 weights: RewardWeights = RewardWeights(),
                 evaluations: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> None:
        self.api = api
        self.weights = weights
        self.test_sets = test_sets
        self.victim_probs = {s: api.services[s].victim.predict_proba(x) for s, (x, _) in test_sets.items()}
        self.victim_labels = {s: p.argmax(axis=1) for s, p in self.victim_probs.items()}
        # extra labelled sets scored at the end (e.g. the attacker's own domain, seed 000 Table 2), never rewards
        self.evaluations = dict(evaluations or {})
        self._eval_labels = {(name, s): api.services[s].victim.predict_proba(x).argmax(axis=1)
                             for name, (x, _) in self.evaluations.items() for s in test_sets}

    def victim_accuracy(self, service: str) -> float:
        return float((self.victim_labels[service] == self.test_sets[service][1]).mean())

    def defended_accuracy(self, service: str) -> float:
        """Accuracy of the defended, formatted outputs on the test set (what an honest user would get)."""
        x, y = self.test_sets[service]
        return float((self.api.defended(self.victim_probs[service], x, service).argmax(axis=1) == y).mean())

    def score(self, body: AttackerBody) -> Score:
        x, y = self.test_sets[body.target]
        pred = np.asarray(body.predict_proba(x)).argmax(axis=1)
        return Score(accuracy=float((pred == y).mean()),
                     fidelity=float((pred == self.victim_labels[body.target]).mean()))

    def evaluate_victims(self) -> dict[str, dict[str, float]]:
        """Each victim's accuracy on each extra evaluation set: ``{set: {service: accuracy}}``."""
        return {name: {s: float((self._eval_labels[name, s] == y).mean()) for s in self.test_sets}
                for name, (_, y) in self.evaluations.items()}

    def evaluate(self, body: AttackerBody) -> dict[str, Score]:
        """An attacker's accuracy and fidelity (to its target's victim) on each extra evaluation set."""
        out = {}
        for name, (x, y) in self.evaluations.items():
            pred = np.asarray(body.predict_proba(x)).argmax(axis=1)
            out[name] = Score(accuracy=float((pred == y).mean()),
                              fidelity=float((pred == self._eval_labels[name, body.target]).mean()))
        return out

    def attacker_reward(self, before: Score, after: Score, spent: dict[str, float], wallet: Wallet) -> float:
        w = self.weights
        money_cap = wallet.budget.money or math.inf
        query_cap = wallet.budget.queries or math.inf
        return (w.accuracy * (after.accuracy - before.accuracy) + w.fidelity * (after.fidelity - before.fidelity)
                - w.cost * (spent["money"] / money_cap if math.isfinite(money_cap) else spent["money"])
                - w.queries * (spent["queries"] / query_cap if math.isfinite(query_cap) else 0.0)
                - w.banned * spent["banned"])

    def defender_reward(self, attacker_gain: float, utility: float, new_benign_bans: int, benign_accounts: int) -> float:
        w = self.weights
        fp = new_benign_bans / benign_accounts if benign_accounts else 0.0
        return -w.attacker_gain * attacker_gain - w.utility_loss * (1.0 - utility) - w.false_positive * fp
