"""CopyCat / KnockoffNets-random: buy labels for random natural samples from the attacker's own pool.

Correia-Silva et al., "Copycat CNN: Stealing Knowledge by Persuading Confession with Random Non-Labeled
Data", IJCNN 2018 (https://arxiv.org/abs/1806.05476); the "random" strategy of Orekondy et al.,
"Knockoff Nets", CVPR 2019 (https://arxiv.org/abs/1812.02766). Seed 003 §III-C uses it as the baseline of
every active-learning strategy. Each round the attacker draws fresh samples (without replacement) from
its pool, buys the API's outputs and trains its surrogate on all outputs bought so far.

With ``recycle`` set, an exhausted pool is sent again, pass after pass, each sample shifted by up to one pixel
and jittered by Gaussian noise (standard data augmentation; Knockoff Nets §5 trains with it): what a campaign of
millions of queries does with a pool of thousands (docs/sybil.md).

Knobs: ``queries`` (how many to buy this round) and ``service`` (which service to query, or ``"all"`` to
send the same batch to every service and train on the union of their outputs, as in seed 000 §4).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from extractgym.agents.base import AttackerBase
from extractgym.agents.extraction.surrogate import WARM_BATCH, WARM_LR, WARM_STEPS, build_surrogate, is_known_surrogate
from extractgym.agents.refs import AttackerData, TargetService, split_of
from extractgym.agents.registry import register_attacker
from extractgym.envs.protocols import Knob
from extractgym.victims.datasets import get_dataset
from extractgym.victims.training import TrainConfig


@register_attacker("random")
class RandomAttacker(AttackerBase):
    """Random natural-sample extraction.

    Args:
        pool: dataset the attacker samples from (its own data; e.g. ``digits`` or the shifted ``mnist8x8``).
        pool_split: split of that dataset (``pool`` is disjoint from the victim's train and test splits).
        queries_per_round: the preset batch per round.
        services: services it may query (default: all); ``target``: the one it is scored against (default: first).
        combine: with the ``"all"`` service knob, ``"concat"`` trains on each service's outputs as separate samples
            (K services: K samples per query, the paper's default), ``"average"`` on one sample per query whose target
            is the mean of the services' probability vectors (seed 000 §3.4 and App. B, Table 7). Every service is
            sent the same queries, so a round of ``q`` queries costs ``K * q`` of the query budget.
        labels: ``"soft"`` (probability vectors) or ``"hard"`` (arg-max) surrogate targets.
        surrogate: architecture name, ``"auto"`` or ``"cheap"`` (the cheap setting, which trains its own schedule:
            :class:`~extractgym.agents.extraction.surrogate.CheapSurrogate`).
        train_steps: minibatch steps per round with warm start; ``epochs`` per round without.
        warm_start: keep training the same surrogate (fast) instead of re-initialising each round.
        recycle: ``None`` (the pool runs out, as published) or the noise's standard deviation, as a share of the
            input range, of the augmented passes sent once it is exhausted (images only).
    """

    def __init__(self, pool: AttackerData = "digits", pool_split: split_of("pool") = "pool", queries_per_round: int = 50,
                 services: list[TargetService] | None = None, target: TargetService | None = None, combine: str = "concat",
                 labels: str = "soft", surrogate: str = "auto", train_steps: int = WARM_STEPS, epochs: int = 30,
                 batch_size: int = WARM_BATCH, lr: float = WARM_LR, warm_start: bool = True,
                 recycle: float | None = None) -> None:
        if queries_per_round < 1:
            raise ValueError(f"queries_per_round must be >= 1, got {queries_per_round}")
        if combine not in ("concat", "average"):
            raise ValueError(f"combine must be 'concat' or 'average', got {combine!r}")
        if labels not in ("soft", "hard"):
            raise ValueError(f"labels must be 'soft' or 'hard', got {labels!r}")
        if train_steps < 1 or epochs < 1 or batch_size < 1:
            raise ValueError(f"train_steps, epochs and batch_size must be >= 1, got {train_steps}, {epochs}, {batch_size}")
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr}")
        if not is_known_surrogate(surrogate):
            raise ValueError(f"unknown surrogate {surrogate!r}: auto, cheap or an architecture of victims/models.py")
        if services is not None:
            if not services:
                raise ValueError("services must name at least one service (leave it out to use all of them)")
            if len(set(services)) != len(services):
                raise ValueError(f"services must not repeat a service, got {list(services)}")
            if target is not None and target not in services:
                raise ValueError(f"target {target!r} is not among services {list(services)}")
        self.pool_name, self.pool_split = pool, pool_split
        get_dataset(pool).split(pool_split)  # fail now, naming the pool, not in round 3
        self.services = list(services) if services else None
        self.target = target or (self.services[0] if self.services else "")
        self.combine, self.labels, self.arch = combine, labels, surrogate
        self.train_cfg = TrainConfig(steps=train_steps, epochs=epochs, batch_size=batch_size, lr=lr)
        self.warm_start = warm_start
        if recycle is not None and not (np.isfinite(recycle) and 0.0 <= recycle <= 1.0):
            raise ValueError(f"recycle must be in [0, 1] (noise, a share of the input range) or None, got {recycle}")
        self.recycle = recycle
        q = queries_per_round
        self.knobs = (Knob.around("queries", (0, max(1, q // 4), max(1, q // 2), 2 * q), q),
                      Knob("service", ("target",) if not self.services or len(self.services) == 1
                           else ("target", "all", *self.services)))

    def setup(self) -> None:
        names = self.services or list(self.channel.service_names)
        unknown = [s for s in names if s not in self.channel.service_names]
        if unknown:
            raise ValueError(f"random attacker: unknown service(s) {unknown}; services: {self.channel.service_names}")
        if self.target not in names:
            raise ValueError(f"random attacker: target {self.target!r} is not among its services {names}")
        self.service_list = names
        n_classes, spec = self.channel.service_info(self.target)
        x, _ = get_dataset(self.pool_name).split(self.pool_split)  # labels are never used: the pool is unlabelled
        if len(x) and spec.kind == "image" and tuple(x.shape[1:]) != tuple(spec.shape):
            raise ValueError(f"pool {self.pool_name!r} has samples of shape {x.shape[1:]}, the victim takes {spec.shape}")
        if self.recycle is not None and spec.kind != "image":
            raise ValueError("random attacker: recycle augments images; this target takes text")
        self.pool = x
        self.spec = spec
        self.order = self.rng.permutation(len(x))
        self.cursor = 0
        self.passes = 0  # augmented passes started (recycle)
        self.surrogate = build_surrogate(spec, n_classes, self.arch, self.train_cfg, self.warm_start, self.labels,
                                         seed=int(self.rng.integers(2**31 - 1)), device=self.device)

    def next_batch(self, n: int) -> np.ndarray:
        idx = self.order[self.cursor:self.cursor + n]
        self.cursor += len(idx)
        first = self.pool[idx] if not self.passes else self._augment(self.pool[idx])
        if self.recycle is None or len(idx) == n or not len(self.pool):
            return first
        parts = [first]
        while sum(len(p) for p in parts) < n:  # the next augmented pass
            self.order, self.cursor, self.passes = self.rng.permutation(len(self.pool)), 0, self.passes + 1
            take = self.order[:n - sum(len(p) for p in parts)]
            self.cursor = len(take)
            parts.append(self._augment(self.pool[take]))
        return np.concatenate(parts)

    def _augment(self, x: np.ndarray) -> np.ndarray:
        """Shift each image by up to one pixel (edges repeated) and add Gaussian noise, within the input range."""
        low, high = float(self.spec.low), float(self.spec.high)
        out = np.empty_like(x)
        shifts = self.rng.integers(-1, 2, size=(len(x), 2))
        for (dy, dx) in sorted({tuple(s) for s in shifts.tolist()}):
            rows = np.flatnonzero((shifts[:, 0] == dy) & (shifts[:, 1] == dx))
            pad = np.pad(x[rows], [(0, 0)] * (x.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
            h, w = x.shape[-2:]
            out[rows] = pad[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
        out = out + self.rng.normal(0.0, self.recycle * (high - low), size=out.shape).astype(x.dtype)
        return np.clip(out, low, high)

    def play_round(self, knobs: dict[str, Any], round_index: int) -> None:
        choice = knobs["service"]
        targets = [self.target] if choice == "target" else self.service_list if choice == "all" else [choice]
        x = self.next_batch(int(knobs["queries"]))
        if len(x):
            answers = [self.send(s, x) for s in targets]
            if self.combine == "average" and len(targets) > 1:
                self.surrogate.add(*average_answers(x, answers))
            else:
                for idx, out in answers:
                    self.surrogate.add(x[idx], out)
        self.surrogate.fit()



def average_answers(x: Any, answers: list[tuple[np.ndarray, np.ndarray]]) -> tuple[Any, np.ndarray]:
    """Seed 000 §3.4 / App. B "Avg.": one sample per query, its target the mean of the services' outputs.

    ``answers`` holds ``(indices of x answered, outputs)`` per service. A query that a budget or a ban left
    unanswered by some services is averaged over those that did answer (it was paid for); one that no service
    answered is dropped. Returns the answered queries (in their order in ``x``) and their mean outputs.
    """
    n_classes = answers[0][1].shape[1]
    total = np.zeros((len(x), n_classes))
    count = np.zeros(len(x))
    for idx, out in answers:
        np.add.at(total, idx, out)
        np.add.at(count, idx, 1)
    keep = np.flatnonzero(count)
    return x[keep], total[keep] / count[keep, None]
