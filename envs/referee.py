"""The referee: the only judge of accuracy, fidelity, utility and cost, and the source of all rewards.

It alone holds each victim's held-out test set; attackers never see it, and no attacker code ever runs on it: an
attacker hands over a *snapshot* of its surrogate (:mod:`extractgym.victims.snapshot`, an architecture and its
weights) and the referee rebuilds and evaluates it in its own code. Rewards are computed from its figures, never
from an agent's own report.

One set of books: what each owner spent (queries, money, accounts, bans) in a round or an episode is a pure
function of the API's ledger (:func:`spend`), for attackers and defenders alike.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from extractgym.envs.api import LedgerEntry, PredictionAPI
from extractgym.envs.ownership import Evidence, ownership_test
from extractgym.victims.answers import weights_key
from extractgym.victims.ensemble import SmallMLP, resolve_device
from extractgym.victims.snapshot import (
    ModelSnapshot,
    ScriptSnapshot,
    SnapshotError,
    accepted,
    check_arrays,
    check_outputs,
    load_state,
)
from extractgym.victims.training import predict_proba, to_tensor, torch_threads
from extractgym.victims.zoo import get_featurizer

ENSEMBLE_ARCHS = ("mlp-32",)
"""Architectures the referee evaluates with :mod:`extractgym.victims.ensemble`'s batched products (the cheap
surrogates'): several snapshots on one set are one call, and a snapshot scores the same alone or in a batch."""


@dataclass(frozen=True)
class Spend:
    """What one owner spent in a stretch of the ledger."""

    queries: int = 0
    money: float = 0.0
    accounts: int = 0
    bans: int = 0

    def __add__(self, other: Spend) -> Spend:
        return Spend(self.queries + other.queries, self.money + other.money, self.accounts + other.accounts,
                     self.bans + other.bans)


def spend(entries: Iterable[LedgerEntry], owner: str) -> Spend:
    """``owner``'s queries answered, money charged (summed in ledger order, as the API's wallet), accounts opened
    and accounts banned in ``entries``."""
    queries = accounts = bans = 0
    money = 0.0
    for e in entries:
        if e.owner != owner:
            continue
        money += e.charge
        if e.kind in ("query", "reject"):  # charged rejections count as queries bought
            queries += e.n
        elif e.kind == "open":
            accounts += 1
        elif e.kind == "ban":
            bans += 1
    return Spend(queries, money, accounts, bans)


@dataclass(frozen=True)
class Traffic:
    """A round's traffic as the owner's books show it (the defender's view of the round)."""

    queries: int
    opened: int
    fresh_queries: int  # sent by accounts opened this round
    bans: int
    busiest: int  # the largest number of queries one account sent
    young_queries: int = 0  # sent by accounts opened during the campaign (not among the established ones)
    young_probs_queries: int = 0  # ... of them, on services that answer with probabilities


def traffic(entries: Iterable[LedgerEntry], young: set[str] | frozenset[str] = frozenset(),
            probs_services: set[str] | frozenset[str] = frozenset()) -> Traffic:
    """The round's traffic from its ledger slice; ``young`` accounts (opened during the campaign) and
    ``probs_services`` (answering with probabilities) split it by account age and endpoint, as a provider can."""
    entries = tuple(entries)
    opened = {e.account for e in entries if e.kind == "open"}
    per_account: dict[str, int] = {}
    queries = fresh = young_n = young_probs = 0
    for e in entries:
        if e.kind == "query":
            queries += e.n
            fresh += e.n if e.account in opened else 0
            if e.account in young or e.account in opened:
                young_n += e.n
                young_probs += e.n if e.service in probs_services else 0
            per_account[e.account] = per_account.get(e.account, 0) + e.n
    return Traffic(queries, len(opened), fresh, sum(e.kind == "ban" for e in entries),
                   max(per_account.values(), default=0), young_n, young_probs)


@dataclass(frozen=True)
class RewardWeights:
    """The reward terms' weights and form (set in the scenario's ``rewards:``).

    Attacker, per round ``t``: ``dPhi_t - cost * money_t/money_budget - queries * queries_t/query_budget
    - banned * bans_t - accounts * accounts_opened_t``, with the potential ``Phi = accuracy * acc + fidelity * fid``
    of the referee's scores. ``Phi_0`` is the fixed ``reference`` (``chance``: ``Phi`` of guessing, 1/K for both
    scores; ``initial``: the episode's untrained surrogate, noisier), so the gains sum to the final value minus the
    reference, whatever the random initial surrogate scored.
    Defender, per round: ``-attacker_gain * mean over attackers of dPhi_t - utility_loss * (1 - utility_t)
    - false_positive * new_benign_bans_t / benign_accounts - revenue_loss * (1 - value_share_t)``, where
    ``value_share_t`` is the share of the value benign customers wanted this round that they got (banned customers
    want and get nothing; degraded answers are worth less: 1 - total variation from the undefended answer on a
    probability service, top-class agreement on a label service).
    ``shaping``: ``potential`` pays each round's terms in that round (they telescope to the episode's value);
    ``terminal`` pays their sum at the last round, 0 before.
    """

    accuracy: float = 1.0
    fidelity: float = 0.0
    cost: float = 0.0
    queries: float = 0.0
    banned: float = 0.0
    accounts: float = 0.0
    attacker_gain: float = 1.0
    utility_loss: float = 1.0
    false_positive: float = 1.0
    revenue_loss: float = 0.0
    reference: Literal["chance", "initial"] = "chance"
    shaping: Literal["potential", "terminal"] = "potential"


_VICTIM_OUTPUTS: dict[tuple, np.ndarray] = {}
_MODELS: dict[tuple, Any] = {}  # (arch, classes, input shape) -> a module the referee loads each snapshot into
_SHAPES: dict[tuple, dict[str, tuple[tuple[int, ...], bool]]] = {}  # ... -> its parameters' shapes
_FLAT: dict[int, tuple[Any, Any]] = {}  # id(snapshot) -> (snapshot, its checked flat parameters)


def _victim_outputs(victim: Any, key: str, x: Any) -> np.ndarray:
    """A victim's outputs on one of the referee's sets: the same in every episode of a process, so computed once
    (keyed by the victim's weights, not its object: every env has its own copy of the victim)."""
    ident = (getattr(victim, "name", ""), key, len(x), weights_key(victim))
    out = _VICTIM_OUTPUTS.get(ident)
    if out is None:
        if len(_VICTIM_OUTPUTS) > 64:
            _VICTIM_OUTPUTS.clear()
        out = _VICTIM_OUTPUTS[ident] = victim.predict_proba(x)
        out.setflags(write=False)
    return out


@dataclass(frozen=True)
class Score:
    accuracy: float
    fidelity: float


class Referee:
    """Scores surrogates against the victims' test sets and computes reward terms."""

    def __init__(self, api: PredictionAPI, test_sets: dict[str, tuple[np.ndarray, np.ndarray]],
                 weights: RewardWeights = RewardWeights(),
                 evaluations: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                 victims: dict[str, tuple[str, int]] | None = None, baselines: bool = False,
                 device: str = "cpu") -> None:
        self.api = api
        self.device = device  # where the batched scoring of cheap surrogates runs (auto, cpu, cuda)
        self.victims = dict(victims or {})  # service -> (registered victim name, seed): what the baselines rebuild
        self.baselines = baselines  # untrusted contestants: report the no-query baseline and the threat model
        self._baselines: dict[str, dict[str, Any]] = {}
        self.weights = weights
        self.test_sets = test_sets
        self.victim_probs = {s: _victim_outputs(api.services[s].victim, f"test:{s}", x) for s, (x, _) in test_sets.items()}
        self.victim_labels = {s: p.argmax(axis=1) for s, p in self.victim_probs.items()}
        # extra labelled sets scored at the end (e.g. the attacker's own domain, seed 000 Table 2), never rewards
        self.evaluations = dict(evaluations or {})
        self._eval_labels = {(name, s): _victim_outputs(api.services[s].victim, f"eval:{name}", x).argmax(axis=1)
                             for name, (x, _) in self.evaluations.items() for s in test_sets}
        self._features: dict[tuple[str, str | None], Any] = {}  # (set, featurizer) -> model inputs
        self._models = _MODELS  # rebuilt architectures, weights loaded per snapshot (shared: one thread reads one)

    def victim_accuracy(self, service: str) -> float:
        return float((self.victim_labels[service] == self.test_sets[service][1]).mean())

    def defended_accuracy(self, service: str) -> float:
        """Accuracy of the defended, formatted outputs on the test set (what an honest user would get)."""
        x, y = self.test_sets[service]
        return float((self.api.defended(self.victim_probs[service], x, service).argmax(axis=1) == y).mean())

    # -- scoring snapshots (never a call into contestant code) ----------------------------------------------
    def proba(self, snapshot: Any, x: Any, key: str | None = None) -> np.ndarray:
        """The snapshot's class probabilities on ``x``, evaluated here (``key`` caches the model inputs of one of the
        referee's own sets; ``None`` for inputs seen once, e.g. a round's queries). Only a snapshot
        (:func:`~extractgym.victims.snapshot.accepted`) is scored: never an object's own ``build()``."""
        snapshot = accepted(snapshot)
        if isinstance(snapshot, ModelSnapshot) and snapshot.arch in ENSEMBLE_ARCHS:
            return self.proba_many([snapshot], x, key)[0]
        if isinstance(snapshot, ScriptSnapshot):
            model = snapshot.build()  # a TorchScript export (trusted in-process code only: isolated seats cannot)
        else:
            snapshot.check()
            ident = (snapshot.arch, snapshot.n_classes, snapshot.in_shape)
            model = self._models.get(ident)
            if model is None:
                model = self._models[ident] = snapshot.build()
            else:
                load_state(model, snapshot.state)
        featurizer = snapshot.featurizer
        feats = self._features.get((key, featurizer)) if key is not None else None
        if feats is None:
            fn = get_featurizer(featurizer)
            feats = fn(x) if fn is not None else np.asarray(x, dtype=np.float32)
            if key is not None:
                self._features[key, featurizer] = feats
        try:
            out = predict_proba(model, feats)
        except (RuntimeError, ValueError, IndexError) as e:  # weights of the right names and shapes that cannot
            raise SnapshotError(f"the snapshot cannot evaluate {key or 'the queries'!r}: {str(e)[:200]}") from None
        return check_outputs(out, len(feats), snapshot.n_classes)

    def probas(self, snapshots: list[Any], x: Any) -> list[np.ndarray]:
        """:meth:`proba` of several snapshots on the same inputs; those of one :data:`ENSEMBLE_ARCHS` architecture
        in one batch (each gets what it would alone)."""
        if len(snapshots) > 1 and all(isinstance(s, ModelSnapshot) and s.arch in ENSEMBLE_ARCHS
                                      and (s.arch, s.n_classes, s.in_shape) == (snapshots[0].arch, snapshots[0].n_classes,
                                                                                snapshots[0].in_shape) for s in snapshots):
            return list(self.proba_many(snapshots, x))
        return [self.proba(s, x) for s in snapshots]

    def proba_many(self, snapshots: list[ModelSnapshot], x: Any, key: str | None = None) -> np.ndarray:
        """Probabilities ``(K, N, C)`` of K snapshots of one :data:`ENSEMBLE_ARCHS` architecture on the same ``x``, as
        one batched product (each snapshot's rows are what it gets alone: ``victims/ensemble.py``)."""
        import torch

        snapshots = [accepted(snap) for snap in snapshots]  # plain data only; the checks are in _flat (cached)
        if not all(isinstance(snap, ModelSnapshot) for snap in snapshots):
            raise SnapshotError("proba_many scores ModelSnapshots only")
        if len({(s.arch, s.n_classes, s.in_shape) for s in snapshots}) > 1:
            raise ValueError("proba_many takes snapshots of one architecture, class count and input shape")
        device = resolve_device(self.device)
        flat = torch.stack([self._flat(snap) for snap in snapshots]).to(device)
        arch = SmallMLP.of_state(snapshots[0].state)
        feats = self._features.get(("flat", key)) if key is not None else None
        if feats is None:
            feats = to_tensor(x).reshape(len(x), -1).to(device)
            if key is not None:
                self._features["flat", key] = feats
        if feats.shape[1] != arch.in_dim:
            raise SnapshotError(f"the snapshot cannot evaluate {key or 'the queries'!r}: it takes {arch.in_dim} "
                                f"inputs, not {feats.shape[1]}")
        with torch_threads(), torch.no_grad():
            return arch.proba(flat, feats.expand(len(snapshots), *feats.shape)).cpu().numpy()

    @staticmethod
    def _flat(snapshot: ModelSnapshot) -> Any:
        """A snapshot's parameters as the ensemble's flat vector, after the checks every snapshot gets (architecture,
        names, shapes, finite values): once per snapshot object (snapshots are frozen, their arrays read-only)."""
        found = _FLAT.get(id(snapshot))
        if found is not None and found[0] is snapshot:
            return found[1]
        snapshot.check()
        ident = (snapshot.arch, snapshot.n_classes, snapshot.in_shape)
        expected = _SHAPES.get(ident)
        if expected is None:
            own = snapshot.build().state_dict()
            expected = _SHAPES[ident] = {k: (tuple(v.shape), v.is_floating_point()) for k, v in own.items()}
        check_arrays(expected, snapshot.state)
        if len(_FLAT) > 4096:
            _FLAT.clear()
        flat = SmallMLP.stack_states([snapshot.state])[0]
        _FLAT[id(snapshot)] = (snapshot, flat)
        return flat

    def score_many(self, items: list[tuple[Any, str]]) -> list[Score]:
        """:meth:`score` of several ``(snapshot, target)`` pairs; those of an :data:`ENSEMBLE_ARCHS` architecture on
        the same target are evaluated as one batch (the vector env scores its K episodes' surrogates so)."""
        out: list[Score | None] = [None] * len(items)
        groups: dict[tuple, list[int]] = {}
        for i, (snap, target) in enumerate(items):
            snap = accepted(snap)
            if isinstance(snap, ModelSnapshot) and snap.arch in ENSEMBLE_ARCHS:
                groups.setdefault((target, snap.arch, snap.n_classes, snap.in_shape), []).append(i)
            else:
                out[i] = self.score(snap, target)
        for (target, *_), idx in groups.items():
            x, y = self.test_sets[target]
            pred = self.proba_many([items[i][0] for i in idx], x, f"test:{target}").argmax(axis=2)
            for i, p in zip(idx, pred, strict=True):
                out[i] = Score(accuracy=float((p == y).mean()),
                               fidelity=float((p == self.victim_labels[target]).mean()))
        return out  # type: ignore[return-value]

    def predict(self, snapshot: Any, key: str, x: Any) -> np.ndarray:
        """The snapshot's predicted classes on the referee's set ``key`` (inputs ``x``)."""
        return self.proba(snapshot, x, key).argmax(axis=1)

    def score(self, snapshot: Any, target: str) -> Score:
        """Accuracy and fidelity of a surrogate snapshot on ``target``'s held-out test set."""
        x, y = self.test_sets[target]
        accepted(snapshot).check(self.victim_probs[target].shape[1])
        pred = self.predict(snapshot, f"test:{target}", x)
        return Score(accuracy=float((pred == y).mean()), fidelity=float((pred == self.victim_labels[target]).mean()))

    def no_query_baseline(self, service: str) -> dict[str, Any]:
        """The best ``service``'s test set is scored by public data alone (:mod:`extractgym.victims.baseline`)."""
        if service not in self._baselines:
            from extractgym.victims.baseline import no_query_baseline

            name, seed = self.victims[service]
            x, y = self.test_sets[service]
            self._baselines[service] = no_query_baseline(name, seed, x, y, self.victim_labels[service])
        return self._baselines[service]

    def threat_model(self, service: str) -> str:
        from extractgym.victims.baseline import threat_model

        return threat_model(self.victims[service][0])

    def evaluate_victims(self) -> dict[str, dict[str, float]]:
        """Each victim's accuracy on each extra evaluation set: ``{set: {service: accuracy}}``."""
        return {name: {s: float((self._eval_labels[name, s] == y).mean()) for s in self.test_sets}
                for name, (_, y) in self.evaluations.items()}

    def evaluate(self, snapshot: Any, target: str) -> dict[str, Score]:
        """An attacker's accuracy and fidelity (to its target's victim) on each extra evaluation set."""
        out = {}
        for name, (x, y) in self.evaluations.items():
            pred = self.predict(snapshot, f"eval:{name}", x)
            out[name] = Score(accuracy=float((pred == y).mean()),
                              fidelity=float((pred == self._eval_labels[name, target]).mean()))
        return out

    def ownership(self, snapshot: Any, evidence: Evidence) -> dict[str, Any]:
        """A watermarking defence's verification test (:func:`~extractgym.envs.ownership.ownership_test`, DAWN) of a
        surrogate snapshot on the defence's evidence, the snapshot evaluated here."""
        return ownership_test(self.predict(snapshot, f"ownership:{evidence.fingerprint()}", evidence.x), evidence)

    # -- reward terms -----------------------------------------------------------------------------------------
    def potential(self, score: Score) -> float:
        w = self.weights
        return w.accuracy * score.accuracy + w.fidelity * score.fidelity

    def reference(self, target: str, initial: Score) -> float:
        """``Phi_0``: the fixed reference the attacker's gains are measured from."""
        if self.weights.reference == "initial":
            return self.potential(initial)
        chance = 1.0 / self.victim_probs[target].shape[1]
        return self.potential(Score(chance, chance))

    def attacker_cost(self, spent: Spend, budget: Any) -> float:
        """The round's cost terms (money and queries as shares of their budgets, when finite)."""
        w = self.weights
        money_cap = budget.money or math.inf
        query_cap = budget.queries or math.inf
        return (w.cost * (spent.money / money_cap if math.isfinite(money_cap) else spent.money)
                + w.queries * (spent.queries / query_cap if math.isfinite(query_cap) else 0.0)
                + w.banned * spent.bans + w.accounts * spent.accounts)

    def defender_cost(self, utility: float, new_benign_bans: int, benign_accounts: int, value_share: float) -> float:
        w = self.weights
        fp = new_benign_bans / benign_accounts if benign_accounts else 0.0
        return w.utility_loss * (1.0 - utility) + w.false_positive * fp + w.revenue_loss * (1.0 - value_share)
