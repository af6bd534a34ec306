"""Pool-based active-learning plumbing shared by the ActiveThief and KnockoffNets attackers.

Plain selection functions (entropy, K-center greedy, batched DeepFool, a stable softmax) and
:class:`PoolAttacker`, the episode wiring every pool-based attacker shares: an unlabelled pool, the unsent
mask, the surrogate, and a round that buys ``queries`` samples chosen by the subclass's :meth:`select`.
Seed 003 §III-C; Pal et al., "ActiveThief", AAAI 2020 (https://doi.org/10.1609/aaai.v34i01.5432).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from extractgym.agents.base import AttackerBase
from extractgym.agents.extraction.surrogate import WARM_BATCH, WARM_LR, WARM_STEPS, build_surrogate, is_known_surrogate
from extractgym.agents.refs import AttackerData, TargetService, split_of
from extractgym.envs.protocols import Knob
from extractgym.victims.datasets import get_dataset
from extractgym.victims.training import TrainConfig, torch_threads

EPS = 1e-12  # floor under probabilities before a log: no log(0)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Row-wise Shannon entropy (seed 003 Eq. 5), with probabilities clipped away from 0."""
    p = np.clip(np.asarray(probs, dtype=np.float64), EPS, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores (ties broken by the lower index)."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]


def stable_softmax(h: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Softmax by log-sum-exp (max subtracted): finite for any finite or infinite preferences.

    ``mask`` (bool) zeroes arms that may not be drawn; at least one arm must be allowed.
    """
    h = np.clip(np.nan_to_num(np.asarray(h, dtype=np.float64), nan=0.0), -1e300, 1e300)  # h - max never overflows
    if mask is not None:
        if not mask.any():
            raise ValueError("stable_softmax: every arm is masked")
        h = np.where(mask, h, -np.inf)
    z = h - h.max()
    e = np.exp(z)
    return e / e.sum()


def _min_sq_dist(a: np.ndarray, b: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """For each row of ``a``, the smallest squared Euclidean distance to a row of ``b`` (chunked)."""
    out = np.full(len(a), np.inf)
    b2 = (b * b).sum(axis=1)
    for s in range(0, len(b), chunk):
        bc = b[s:s + chunk]
        d = (a * a).sum(axis=1)[:, None] - 2 * a @ bc.T + b2[None, s:s + chunk]
        out = np.minimum(out, d.min(axis=1))
    return np.maximum(out, 0.0)


def k_center_greedy(candidates: np.ndarray, centers: np.ndarray, k: int) -> np.ndarray:
    """Greedy K-center (Sener & Savarese 2018, https://arxiv.org/abs/1708.00489): ``k`` candidate indices.

    Each step picks the candidate farthest from its nearest center (existing ``centers`` plus those picked
    so far), then updates every candidate's nearest-center distance with one vectorised pass. With no
    centers the first pick is candidate 0 (all distances are infinite; ties go to the lower index).
    """
    cand = np.asarray(candidates, dtype=np.float64).reshape(len(candidates), -1)
    k = min(int(k), len(cand))
    d = _min_sq_dist(cand, np.asarray(centers, dtype=np.float64).reshape(len(centers), -1)) if len(centers) \
        else np.full(len(cand), np.inf)
    picks = np.empty(k, dtype=np.int64)
    for i in range(k):
        j = int(np.argmax(d))
        picks[i] = j
        d = np.minimum(d, ((cand - cand[j]) ** 2).sum(axis=1))
        d[picks[:i + 1]] = -1.0  # never twice
    return picks


def deepfool_distances(model: torch.nn.Module, x: np.ndarray, max_iter: int = 50,
                       overshoot: float = 0.02) -> np.ndarray:
    """Squared L2 norm of the DeepFool perturbation that flips ``model``'s label, per row of ``x``.

    Moosavi-Dezfooli et al. 2016 (https://arxiv.org/abs/1511.04599), multi-class linearisation, batched: one
    forward and one backward per class per iteration for the whole batch. Rows not flipped within
    ``max_iter`` keep their accumulated (large) perturbation. As in DFAL (Ducoffe & Precioso 2018,
    https://arxiv.org/abs/1802.09841), the adversarial points themselves are only used for ranking.
    """
    model.eval()
    shape = x.shape[1:]
    with torch_threads():
        x0 = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).reshape(len(x), -1)
        with torch.no_grad():
            k0 = model(x0.reshape(-1, *shape)).argmax(1)
        n = len(x0)
        rows = torch.arange(n)
        r_tot = torch.zeros_like(x0)
        for _ in range(max_iter):
            xi = (x0 + (1 + overshoot) * r_tot).requires_grad_(True)
            logits = model(xi.reshape(-1, *shape))
            active = logits.argmax(1) == k0
            if not bool(active.any()):
                break
            c = logits.shape[1]
            grads = torch.stack([torch.autograd.grad(logits[:, j].sum(), xi, retain_graph=j < c - 1)[0]
                                 for j in range(c)], dim=1)  # (n, C, D)
            logits = logits.detach()
            w = grads - grads[rows, k0][:, None]
            f = (logits - logits[rows, k0][:, None]).abs()
            wn = w.norm(dim=2)
            ratio = f / (wn + 1e-8)
            ratio[rows, k0] = torch.inf
            lab = ratio.argmin(1)
            wl, fl, wnl = w[rows, lab], f[rows, lab], wn[rows, lab]
            step = ((fl + 1e-4) / (wnl ** 2 + 1e-12))[:, None] * wl
            r_tot = r_tot + step * active[:, None].float()
    return (((1 + overshoot) * r_tot) ** 2).sum(dim=1).double().numpy()


def load_pool(name: str, split: str, spec: Any) -> np.ndarray:
    """The attacker's unlabelled pool, checked against the victim's input spec."""
    x, _ = get_dataset(name).split(split)  # labels are never used: the pool is unlabelled
    if len(x) and spec.kind == "image" and tuple(x.shape[1:]) != tuple(spec.shape):
        raise ValueError(f"pool {name!r} has samples of shape {x.shape[1:]}, the victim takes {spec.shape}")
    return x


class PoolAttacker(AttackerBase):
    """Wiring for attackers that pick from an unlabelled pool; subclasses implement :meth:`select`.

    The first batch (before the surrogate has seen any answer) is drawn at random: ActiveThief's initial
    random seed set. Knobs: ``queries`` (this round's spend), ``mode`` (play a random round instead of the
    strategy), ``labels`` (train on the answers' probabilities or their arg-max) and, with several ``services``,
    ``service`` (which one to buy from this round).

    Args:
        pool: dataset the attacker samples from; ``pool_split``: its split (disjoint from the victim's data).
        queries_per_round: the preset batch per round (k of the papers).
        labels: ``"soft"`` or ``"hard"`` surrogate targets: the preset of the ``labels`` knob, which applies to every
            answer bought so far (a brain that finds its answers perturbed can fall back to their arg-max).
        surrogate: architecture name, ``"auto"`` or ``"cheap"`` (the cheap setting, which trains its own schedule:
            :class:`~extractgym.agents.extraction.surrogate.CheapSurrogate`); ``train_steps``: minibatch steps per
            round;
            ``warm_start``: keep training the same surrogate instead of re-initialising it each round.
        target: the service it is scored against (default: the first of ``services``, else the first service).
        services: services it may buy from, e.g. a probability and a label-only endpoint of the same victim; with
            two or more, a ``service`` knob chooses each round's (answers of a label service are one-hot: the
            surrogate trains on hard labels from it).
    """

    def __init__(self, pool: AttackerData = "digits", pool_split: split_of("pool") = "pool", queries_per_round: int = 50,
                 labels: str = "soft", surrogate: str = "auto", train_steps: int = WARM_STEPS, warm_start: bool = True,
                 target: TargetService | None = None, services: list[TargetService] | None = None) -> None:
        if queries_per_round < 1:
            raise ValueError(f"queries_per_round must be >= 1, got {queries_per_round}")
        if labels not in ("soft", "hard"):
            raise ValueError(f"labels must be 'soft' or 'hard', got {labels!r}")
        if train_steps < 1:
            raise ValueError(f"train_steps must be >= 1, got {train_steps}")
        if not is_known_surrogate(surrogate):
            raise ValueError(f"unknown surrogate {surrogate!r}: auto, cheap or an architecture of victims/models.py")
        get_dataset(pool).split(pool_split)  # fail now, naming the pool, not in round 3
        self.pool_name, self.pool_split, self.labels, self.arch = pool, pool_split, labels, surrogate
        # the random attacker's training settings, so that strategies differ only in what they buy
        self.train_cfg = TrainConfig(steps=train_steps, epochs=30, batch_size=WARM_BATCH, lr=WARM_LR)
        if services is not None and (not services or len(set(services)) != len(services)):
            raise ValueError(f"services must name distinct services (leave it out for the target only), got {services}")
        if services and target is not None and target not in services:
            raise ValueError(f"target {target!r} is not among services {list(services)}")
        self.warm_start, self.target = warm_start, target or (services[0] if services else "")
        self.services = list(services or [])
        q = queries_per_round
        self.knobs = (Knob.around("queries", (0, max(1, q // 4), max(1, q // 2), 2 * q), q),
                      Knob("mode", ("active", "random")),
                      Knob("labels", ("soft", "hard"), ("soft", "hard").index(labels)),
                      *((Knob("service", tuple(self.services), self.services.index(self.target)),)
                        if len(self.services) > 1 else ()))
        self.service = self.target

    def setup(self) -> None:
        n_classes, spec = self.channel.service_info(self.target)
        self.pool = load_pool(self.pool_name, self.pool_split, spec)
        self.unsent = np.ones(len(self.pool), dtype=bool)
        self.surrogate = build_surrogate(spec, n_classes, self.arch, self.train_cfg, self.warm_start, self.labels,
                                         seed=int(self.rng.integers(2**31 - 1)), device=self.device)
        self.bought: list[np.ndarray] = []  # pool indices answered so far

    def budget(self, n: int) -> int:
        """``n`` trimmed to the queries left in the wallet and the unsent pool."""
        left = self.channel.left("queries")
        return int(max(0, min(n, int(self.unsent.sum()), left if np.isfinite(left) else n)))

    def buy(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Query pool rows ``idx``; add the answers to the surrogate's transfer set. Returns (answered idx, outputs)."""
        idx = np.asarray(idx, dtype=np.int64)
        if not len(idx):
            return idx, np.zeros((0, 0))
        done, out = self.send(self.service or self.target, self.pool[idx])
        got = idx[done]
        self.unsent[got] = False
        self.bought.append(got)
        self.surrogate.add(self.pool[got], out)
        return got, out

    def random_indices(self, n: int) -> np.ndarray:
        return self.rng.choice(np.flatnonzero(self.unsent), size=n, replace=False)

    def acquire(self, n: int, knobs: dict[str, Any]) -> None:
        """Choose and buy ``n`` samples (override for strategies that learn between sub-batches)."""
        self.buy(self.select(n, knobs))

    def select(self, n: int, knobs: dict[str, Any]) -> np.ndarray:
        raise NotImplementedError

    def play_round(self, knobs: dict[str, Any], round_index: int) -> None:
        self.service = knobs.get("service", self.target)
        self.surrogate.labels = knobs.get("labels", self.labels)  # how every answer bought so far is trained on
        n = self.budget(int(knobs["queries"]))
        if n > 0:
            if knobs.get("mode", "active") == "random" or not len(self.surrogate):
                self.buy(self.random_indices(n))
            else:
                self.acquire(n, knobs)
        self.surrogate.fit()

    def unsent_probs(self) -> tuple[np.ndarray, np.ndarray]:
        """(pool indices not sent yet, the surrogate's probabilities on them)."""
        cand = np.flatnonzero(self.unsent)
        return cand, self.surrogate.predict_proba(self.pool[cand])
