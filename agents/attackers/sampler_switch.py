"""An attacker whose ``sampler`` knob chooses, round by round, how its queries are picked: natural samples from the
data it holds (at random, by uncertainty or by K-center) or synthetic ones made from the answers it has (JBDA).

The strategies of the literature differ in what they need and in what gives them away (seed 003 §III, §VI):

* ``random`` (CopyCat / KnockoffNets-random, Correia-Silva et al. 2018, https://arxiv.org/abs/1806.05476): unsent
  natural samples drawn uniformly from the attacker's pool;
* ``uncertainty`` and ``k-center`` (ActiveThief, Pal et al. AAAI 2020, https://doi.org/10.1609/aaai.v34i01.5432):
  the unsent samples whose surrogate prediction has the highest entropy, or a greedy core-set of the surrogate's
  probability vectors (:mod:`~extractgym.agents.extraction.pool`, as the ``uncertainty`` and ``k-center`` bodies);
* ``jbda`` (Papernot et al., AsiaCCS 2017, https://arxiv.org/abs/1602.02697; seed 003 Algorithm 1): synthetic
  queries ``x + lambda * sign(grad F_A(x)[y_V(x)])``, one per answered sample, generation by generation (every
  sample answered since the previous generation started is augmented once, in a seeded order), ``lambda = eps``
  of the input range.

Natural samplers are limited by the data the attacker holds (``pool_size``: a seeded subset of the pool split);
synthetic queries are not, but they are what PRADA (their distance distribution), Blacklight (near-duplicates of
earlier queries) and the similarity detector (similar pairs) see. A natural sampler with no unsent sample left
buys nothing; ``jbda`` before anything was answered buys natural samples at random (JBDA's seed set ``X_0``).

Knobs: ``queries``, ``sampler``, ``labels`` and, with several ``services``, ``service``
(:class:`~extractgym.agents.extraction.pool.PoolAttacker`). Departure from JBDA: the substitute is trained warm
(the pool attackers' per-round steps) rather than re-initialised each generation, as the ``jbda`` body's
``warm_start`` option does, so that strategies differ only in what they buy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from extractgym.agents.extraction import augment
from extractgym.agents.extraction.pool import PoolAttacker, entropy, k_center_greedy, top_k
from extractgym.agents.extraction.surrogate import WARM_STEPS
from extractgym.agents.refs import AttackerData, TargetService, split_of
from extractgym.agents.registry import register_attacker
from extractgym.envs.protocols import Knob

SAMPLERS = ("random", "uncertainty", "k-center", "jbda")
NATURAL = ("random", "uncertainty", "k-center")


@register_attacker("sampler-switch")
class SamplerSwitch(PoolAttacker):
    """A ``sampler`` knob over natural (random, uncertainty, K-center) and synthetic (JBDA) queries.

    Args:
        pool, pool_split, queries_per_round, labels, surrogate, train_steps, warm_start, target, services: as for
            :class:`~extractgym.agents.extraction.pool.PoolAttacker`.
        pool_size: how many natural samples the attacker holds (a seeded subset of the pool split; ``None``: all).
        samplers: the ``sampler`` knob's choices (a subset of random, uncertainty, k-center, jbda).
        sampler: its preset (default: the first).
        eps: JBDA's step as a fraction of the input range (Papernot et al.: 0.1).
    """

    inputs = ("image",)  # jbda takes gradients with respect to the input

    def __init__(self, pool: AttackerData = "digits", pool_split: split_of("pool") = "pool",
                 pool_size: int | None = None, queries_per_round: int = 50,
                 samplers: list[str] = list(SAMPLERS), sampler: str | None = None,  # noqa: B006
                 eps: float = 0.1, labels: str = "soft", surrogate: str = "auto", train_steps: int = WARM_STEPS,
                 warm_start: bool = True, target: TargetService | None = None,
                 services: list[TargetService] | None = None) -> None:
        super().__init__(pool, pool_split, queries_per_round, labels, surrogate, train_steps, warm_start, target,
                         services)
        if not samplers or len(set(samplers)) != len(samplers) or any(s not in SAMPLERS for s in samplers):
            raise ValueError(f"samplers must be distinct names among {', '.join(SAMPLERS)}, got {samplers}")
        sampler = samplers[0] if sampler is None else sampler
        if sampler not in samplers:
            raise ValueError(f"sampler {sampler!r} is not among samplers {samplers}")
        if pool_size is not None and pool_size < 1:
            raise ValueError(f"pool_size must be >= 1 or None (the whole pool), got {pool_size}")
        if not (np.isfinite(eps) and eps > 0):
            raise ValueError(f"eps must be finite and > 0, got {eps}")
        self.pool_size, self.eps = pool_size, float(eps)
        knobs = [k for k in self.knobs if k.name != "mode"]  # the sampler knob replaces the base's active/random
        knobs.insert(1, Knob("sampler", tuple(samplers), samplers.index(sampler)))
        self.knobs = tuple(knobs)

    def setup(self) -> None:
        super().setup()
        _, spec = self.channel.service_info(self.target)
        if spec.kind != "image":
            raise ValueError(f"sampler-switch needs an image victim (jbda takes input gradients); service "
                             f"{self.target!r} takes {spec.kind}")
        self.low, self.high = float(spec.low), float(spec.high)
        if self.pool_size is not None and self.pool_size < len(self.pool):  # the data this attacker holds
            held = self.rng.choice(len(self.pool), size=self.pool_size, replace=False)
            self.unsent[:] = False
            self.unsent[held] = True
        self.dx = np.zeros((0, *spec.shape), dtype=np.float32)  # every answered input, natural or synthetic
        self.dlabel = np.zeros(0, dtype=np.int64)  # the victim's arg-max on each
        self.frontier = np.zeros(0, dtype=np.int64)  # rows of dx still to augment in this generation
        self.fresh: list[np.ndarray] = []  # rows answered since this generation started
        self.synthetic = 0

    def record(self, x: np.ndarray, out: np.ndarray) -> None:
        start = len(self.dx)
        self.dx = np.concatenate([self.dx, np.asarray(x, dtype=np.float32)])
        self.dlabel = np.concatenate([self.dlabel, np.asarray(out).argmax(axis=1)])
        self.fresh.append(np.arange(start, len(self.dx)))

    def buy(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        got, out = super().buy(idx)
        if len(got):
            self.record(self.pool[got], out)
        return got, out

    def play_round(self, knobs: dict[str, Any], round_index: int) -> None:
        self.service = knobs.get("service", self.target)
        self.surrogate.labels = knobs.get("labels", self.labels)
        sampler = knobs["sampler"]
        if sampler == "jbda" and len(self.dx):
            self.synthesise(int(knobs["queries"]))
        else:
            n = self.budget(int(knobs["queries"]))
            if n > 0:
                self.buy(self.choose(sampler if sampler in NATURAL and len(self.surrogate) else "random", n))
        self.surrogate.fit()

    def choose(self, sampler: str, n: int) -> np.ndarray:
        """``n`` unsent pool rows by a natural sampler."""
        if sampler == "random":
            return self.random_indices(n)
        cand, probs = self.unsent_probs()
        if sampler == "uncertainty":
            return cand[top_k(entropy(probs), n)]
        centers = self.surrogate.predict_proba(self.pool[np.concatenate(self.bought)])
        return cand[k_center_greedy(probs, centers, n)]

    def sources(self, n: int) -> np.ndarray:
        """The next ``n`` rows of the current generation (a new one starts from everything answered since)."""
        if not len(self.frontier) and self.fresh:
            self.frontier = self.rng.permutation(np.concatenate(self.fresh))
            self.fresh = []
        take, self.frontier = self.frontier[:n], self.frontier[n:]
        return take

    def synthesise(self, n: int) -> None:
        """Buy up to ``n`` JBDA queries (several batches when a generation ends within the round)."""
        left = self.channel.left("queries")
        n = int(min(n, left)) if np.isfinite(left) else n
        while n > 0:
            src = self.sources(n)
            if not len(src):
                return
            model = self.surrogate.model
            model.eval()
            x = augment.jacobian_step(model, torch.from_numpy(self.dx[src]), torch.from_numpy(self.dlabel[src]),
                                      self.eps * (self.high - self.low), self.low, self.high).numpy()
            done, out = self.send(self.service or self.target, x)
            if len(done):
                self.surrogate.add(x[done], out)
                self.record(x[done], out)
                self.synthetic += len(done)
            n -= len(src)
            if len(done) < len(x):
                return  # a budget or a refusal stopped the batch
