"""KnockoffNets' adaptive strategy: a gradient-bandit policy over a hierarchy of the attacker's pool.

Orekondy et al., "Knockoff Nets: Stealing Functionality of Black-Box Models", CVPR 2019
(https://arxiv.org/abs/1812.02766), §4.1.2; seed 003 §III-C. Each query walks the tree from the root: at every
node a child is drawn with probability ``softmax(H)`` over the node's preferences, and an unsent sample is drawn
uniformly from the leaf reached. The victim's answer ``y`` gives a reward and every node on the path gets the
gradient-bandit update of Sutton & Barto §2.8: ``H(a) += lr (r - r̄)(1[a = chosen] - π(a))``.

Rewards (``reward`` param / knob): ``certainty``, the victim's top-1 minus top-2 probability; ``diversity``,
``Σ_k max(0, y_k - ȳ_k)`` with ȳ the mean of the last ``window`` answers; ``loss``, the cross-entropy of the
surrogate's prediction against ``y``; ``all``, their sum. Each is rescaled to [0, 1] by its running min and max
before use (the paper sums rewards of different scales; our rescaling keeps one from swamping the others).

Departures, and why:
    * The pool has no labels the attacker may use, so the hierarchy is built from the data: KMeans on the pool's
      pixels (``n_top`` clusters), each split again by KMeans (``n_sub`` leaves). The paper's hierarchy is the
      attacker's own class taxonomy (ImageNet synsets). The surrogate's predicted classes would be a label-free
      alternative for the top level, but they change every round (the tree would move under the policy and its
      preferences would lose their meaning) and are noise before the first fit, so we keep a fixed tree.
    * The paper updates the policy and the surrogate after every query. We draw ``bandit_batch`` queries, update
      the policy with each of their rewards, and retrain the surrogate once per round (the ``loss`` reward uses
      the surrogate of the start of the round): one API call and one training per round instead of per query.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from extractgym.agents.extraction.pool import EPS, PoolAttacker, stable_softmax
from extractgym.agents.extraction.surrogate import WARM_STEPS
from extractgym.agents.refs import AttackerData, TargetService, split_of
from extractgym.agents.registry import register_attacker
from extractgym.envs.protocols import Knob

REWARDS = ("certainty", "diversity", "loss", "all")


class GradientBandit:
    """Preferences over ``n`` arms, sampled by a stable softmax and updated by the gradient-bandit rule.

    Rewards are sanitised (NaN -> 0, clipped to ``[-clip, clip]``) and preferences clipped to ``[-h_max, h_max]``,
    so no sequence of rewards can overflow the softmax or produce NaN.
    """

    def __init__(self, n: int, lr: float = 0.1, clip: float = 1e3, h_max: float = 50.0) -> None:
        self.h = np.zeros(n)
        self.lr, self.clip, self.h_max = lr, clip, h_max

    def probs(self, mask: np.ndarray | None = None) -> np.ndarray:
        return stable_softmax(self.h, mask)

    def update(self, arm: int, reward: float, baseline: float, mask: np.ndarray | None = None) -> None:
        r = float(np.clip(np.nan_to_num(reward, nan=0.0, posinf=self.clip, neginf=-self.clip), -self.clip, self.clip))
        b = float(np.clip(np.nan_to_num(baseline, nan=0.0, posinf=self.clip, neginf=-self.clip), -self.clip, self.clip))
        pi = self.probs(mask)
        onehot = np.zeros_like(pi)
        onehot[arm] = 1.0
        self.h = np.clip(self.h + self.lr * (r - b) * (onehot - pi), -self.h_max, self.h_max)


def raw_rewards(y: np.ndarray, y_hat: np.ndarray, recent_mean: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query certainty, diversity and loss rewards of Knockoff Nets §4.1.2 (logs clipped: no log(0))."""
    y = np.clip(np.nan_to_num(np.asarray(y, dtype=np.float64)), 0.0, 1.0)
    top2 = np.sort(y, axis=1)[:, -2:] if y.shape[1] > 1 else np.concatenate([np.zeros((len(y), 1)), y], axis=1)
    certainty = top2[:, 1] - top2[:, 0]
    diversity = np.maximum(0.0, y - recent_mean[None, :]).sum(axis=1)
    loss = -(y * np.log(np.clip(np.nan_to_num(np.asarray(y_hat, dtype=np.float64)), EPS, 1.0))).sum(axis=1)
    return {"certainty": certainty, "diversity": diversity, "loss": loss}


class RunningScale:
    """Rescale a reward to [0, 1] by the running min and max seen so far (finite values only)."""

    def __init__(self) -> None:
        self.lo, self.hi = np.inf, -np.inf

    def __call__(self, r: np.ndarray) -> np.ndarray:
        r = np.nan_to_num(np.asarray(r, dtype=np.float64), nan=0.0, posinf=1e300, neginf=-1e300)
        self.lo, self.hi = min(self.lo, float(r.min())), max(self.hi, float(r.max()))
        span = self.hi - self.lo
        if not (np.isfinite(span) and span > 0):
            return np.full(len(r), 0.5)  # one value seen so far (or a range too wide for floats): neutral
        return np.clip((r - self.lo) / span, 0.0, 1.0)


def build_hierarchy(x: np.ndarray, n_top: int, n_sub: int, seed: int) -> list[list[np.ndarray]]:
    """Two-level KMeans tree of the pool: ``tree[i][j]`` holds the pool indices of leaf j under top node i."""
    from sklearn.cluster import KMeans  # sklearn costs ~1 s to import: only when a tree is built

    flat = x.reshape(len(x), -1)
    n_top = min(n_top, len(x))
    top = KMeans(n_top, n_init=3, random_state=seed).fit_predict(flat)
    tree = []
    for i in range(n_top):
        members = np.flatnonzero(top == i)
        k = min(n_sub, len(members))
        sub = (KMeans(k, n_init=3, random_state=seed).fit_predict(flat[members]) if k > 1
               else np.zeros(len(members), dtype=int))
        tree.append([members[sub == j] for j in range(k) if (sub == j).any()])
    return tree


@register_attacker("knockoff-adaptive")
class KnockoffAdaptiveAttacker(PoolAttacker):
    """Knockoff Nets' adaptive sampling (gradient bandit over a KMeans tree of the pool).

    Args:
        pool, pool_split, queries_per_round, labels, surrogate, train_steps, warm_start, target: as for
            :class:`~extractgym.agents.extraction.pool.PoolAttacker`.
        reward: ``certainty``, ``diversity``, ``loss`` or ``all`` (the sum; the paper's best); also a knob.
        n_top: top-level clusters; ``n_sub``: leaves per top-level cluster.
        lr: the bandit's step size; ``bandit_batch``: queries drawn between policy updates;
            ``window``: answers averaged for the diversity reward (Δ of the paper).
    """

    def __init__(self, pool: AttackerData = "digits", pool_split: split_of("pool") = "pool", queries_per_round: int = 50,
                 labels: str = "soft", surrogate: str = "auto", train_steps: int = WARM_STEPS, warm_start: bool = True,
                 target: TargetService | None = None, reward: str = "all", n_top: int = 10, n_sub: int = 4,
                 lr: float = 0.5, bandit_batch: int = 10, window: int = 25) -> None:
        super().__init__(pool, pool_split, queries_per_round, labels, surrogate, train_steps, warm_start, target)
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if n_top < 1 or n_sub < 1:
            raise ValueError(f"n_top and n_sub must be >= 1, got {n_top}, {n_sub}")
        if not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be finite and > 0, got {lr}")
        if bandit_batch < 1 or window < 1:
            raise ValueError(f"bandit_batch and window must be >= 1, got {bandit_batch}, {window}")
        self.n_top, self.n_sub, self.lr, self.bandit_batch, self.window = n_top, n_sub, lr, bandit_batch, window
        self.knobs = (*self.knobs, Knob("reward", REWARDS, REWARDS.index(reward)))

    def setup(self) -> None:
        super().setup()
        self.tree = build_hierarchy(self.pool, self.n_top, self.n_sub, seed=int(self.rng.integers(2**31 - 1)))
        self.root = GradientBandit(len(self.tree), self.lr)
        self.nodes = [GradientBandit(len(leaves), self.lr) for leaves in self.tree]
        self.scales = {name: RunningScale() for name in REWARDS[:3]}
        self.recent: list[np.ndarray] = []
        self.reward_sum, self.n_rewards = 0.0, 0

    def _left(self, i: int) -> np.ndarray:
        return np.array([self.unsent[leaf].any() for leaf in self.tree[i]])

    def draw(self) -> tuple[int, int, int]:
        """One path (top node, leaf, pool index) under the current policy."""
        top_mask = np.array([self._left(i).any() for i in range(len(self.tree))])
        i = int(self.rng.choice(len(self.tree), p=self.root.probs(top_mask)))
        j = int(self.rng.choice(len(self.tree[i]), p=self.nodes[i].probs(self._left(i))))
        leaf = self.tree[i][j]
        return i, j, int(self.rng.choice(leaf[self.unsent[leaf]]))

    def acquire(self, n: int, knobs: dict[str, Any]) -> None:
        reward = knobs.get("reward", "all")
        while n > 0:
            paths = []
            for _ in range(min(self.bandit_batch, n)):
                i, j, p = self.draw()
                self.unsent[p] = False  # reserved: not drawn twice in this batch
                paths.append((i, j, p))
            idx = np.array([p for _, _, p in paths])
            y_hat = self.surrogate.predict_proba(self.pool[idx])
            self.unsent[idx] = True
            got, y = self.buy(idx)
            if not len(got):
                break  # refused (ban, rate limit): nothing more this round
            n -= len(got)
            pos = {int(p): k for k, p in enumerate(idx)}
            rewards = self.rewards(y, y_hat[[pos[int(p)] for p in got]], reward)
            for (i, j, p), r in zip([q for q in paths if q[2] in set(got.tolist())], rewards, strict=True):
                mean = self.reward_sum / self.n_rewards if self.n_rewards else 0.0
                self.root.update(i, r, mean)
                self.nodes[i].update(j, r, mean)
                self.reward_sum, self.n_rewards = self.reward_sum + float(r), self.n_rewards + 1

    def rewards(self, y: np.ndarray, y_hat: np.ndarray, which: str) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64)
        recent = np.mean(self.recent, axis=0) if self.recent else np.zeros(y.shape[1])
        raw = raw_rewards(y, y_hat, recent)
        self.recent = (self.recent + list(y))[-self.window:]
        scaled = {k: self.scales[k](v) for k, v in raw.items()}
        return sum(scaled.values()) if which == "all" else scaled[which]
