"""Jacobian-based augmentation attacks (JBA): seed 003 §III-A, Algorithm 1 with the augmentations of Algorithm 2.

Zhang, Chen, Wagner, "Towards Characterizing Model Extraction Queries and How to Detect Them", UC Berkeley
EECS-2021-126 (seed 003, http://www2.eecs.berkeley.edu/Pubs/TechRpts/2021/EECS-2021-126.html);
Papernot et al., "Practical Black-Box Attacks against Machine Learning", AsiaCCS 2017
(https://arxiv.org/abs/1602.02697); Juuti et al., "PRADA", EuroS&P 2019 (https://arxiv.org/abs/1805.02628).
The loop follows the reference implementation seed 003 uses
(https://github.com/tribhuvanesh/prediction-poisoning, ``defenses/adversary/jacobian.py``).

The attacker labels a seed set ``X_0`` drawn from its own pool through the API, trains its substitute, then
repeatedly augments: every sample of the previous query set (one generation) is perturbed with the
substitute's Jacobian, the perturbed points are labelled by the API and added to ``D_T``, and the substitute is
retrained (Algorithm 1, steps 4-8). A round of the game spends at most the ``queries`` knob; a generation that
does not fit in one round continues in the next, so the budget is spent exactly and every sample is augmented
once, generation by generation, whatever the round size. With ``reservoir=kappa`` the sources are instead
drawn uniformly from all of ``D_T`` (Papernot's / PRADA's reservoir sampling).

Methods (``method``; each also registered as a preset body under the same name):

=================  ===========================================================================================
``jbda``           Papernot's step ``x + lambda * sign(grad F_A(x)[y_V])`` towards the victim's label, ``lambda``
                   = 0.1 of the input range, optional period ``tau`` after which the sign flips. One query per source.
``jb-self``        the same one-step Jacobian augmentation with the opposite sign (an FGSM step away from the
                   label). The reference implementation names its two one-step variants ``jbda`` (away) and
                   ``jbself`` (towards); we keep Papernot's formula for ``jbda``, so ``jb-self`` is the other one.
``jb-top3``        I-FGSM (8 steps of 0.01, radius 0.1, target's logit) towards each of the substitute's top-3
                   classes other than the victim's label (PRADA's JB-top-k). Three queries per source.
``jba-pgd``        targeted L-inf PGD, radius 8/256, Foolbox 3's defaults (40 steps of 0.01/0.3 of the radius,
                   random start), towards the same top-3 classes.
``jba-cw``         targeted CW-L2, 150 steps and 5 binary-search steps (seed 003 §IV-A2), top-3 classes.
``jba-bs``         seed 003's JBA-BS: PGD as ``jba-pgd`` to ``x_t``, then the line search between ``x_s`` and
                   ``x_t`` (``tol`` = 1e-6, at most 1000 bisections), top-3 classes.
``feature-fool``   CloudLeak's FeatureFool (seed 004) on the substitute's penultimate features towards the top
                   class; the anchor ``x_t`` is a sample of ``D_T`` the substitute labels with that class.
=================  ===========================================================================================

Knobs: ``queries`` (this round's spend), ``eps_scale`` (multiplies the method's step size / radius) and, for
the generic ``jacobian`` body only, ``method`` (which augmentation this round).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from extractgym.agents.base import AttackerBase
from extractgym.agents.extraction import augment
from extractgym.agents.extraction.surrogate import build_surrogate
from extractgym.agents.refs import AttackerData, TargetService, split_of
from extractgym.agents.registry import ATTACKERS, register_attacker, register_preset
from extractgym.envs.protocols import Knob
from extractgym.victims.datasets import get_dataset
from extractgym.victims.training import TrainConfig, torch_threads

METHODS = ("jbda", "jb-self", "jb-top3", "jba-pgd", "jba-cw", "jba-bs", "feature-fool")
ONE_STEP = ("jbda", "jb-self")
# default step size / L-inf radius per method, as a fraction of the input range (published settings)
DEFAULT_EPS = {"jbda": 0.1, "jb-self": 0.1, "jb-top3": 0.1, "jba-pgd": 8 / 256, "jba-bs": 8 / 256,
               "jba-cw": 0.01, "feature-fool": 0.01}
DEFAULT_STEPS = {"jbda": 1, "jb-self": 1, "jb-top3": 8, "jba-pgd": 40, "jba-bs": 40, "jba-cw": 150,
                 "feature-fool": 30}


def balanced_seed_indices(x: np.ndarray, n: int, n_groups: int, rng: np.random.Generator,
                          iters: int = 10) -> np.ndarray:
    """``n`` pool indices spread evenly over ``n_groups`` k-means clusters (k-means++ start, Lloyd steps).

    The attacker's pool is unlabelled (it may learn labels only through the API), so "balanced" is over
    clusters of the inputs, a label-free stand-in for the class-balanced seed sets of the reference code.
    """
    flat = x.reshape(len(x), -1).astype(np.float64)
    n = min(n, len(x))
    k = max(1, min(n_groups, len(x)))
    centers = [flat[rng.integers(len(x))]]
    d2 = ((flat - centers[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else None
        centers.append(flat[rng.choice(len(x), p=p)])
        d2 = np.minimum(d2, ((flat - centers[-1]) ** 2).sum(1))
    c = np.stack(centers)
    for _ in range(iters):
        assign = (-2 * flat @ c.T + (c ** 2).sum(1)).argmin(1)
        for j in range(k):
            if np.any(assign == j):
                c[j] = flat[assign == j].mean(0)
    groups = [rng.permutation(np.flatnonzero(assign == j)) for j in range(k)]
    order = [g[i] for i in range(max(len(g) for g in groups)) for g in groups if i < len(g)]
    return np.asarray(order[:n], dtype=np.int64)


class JacobianAttacker(AttackerBase):
    """Jacobian-based augmentation extraction (seed 003 Algorithm 1), one class for every augmentation method.

    Args:
        method: augmentation (see the module docstring): ``jbda``, ``jb-self``, ``jb-top3``, ``jba-pgd``,
            ``jba-cw``, ``jba-bs`` or ``feature-fool``.
        pool: dataset the seed set ``X_0`` is drawn from (the attacker's own, unlabelled data).
        pool_split: split of that dataset.
        queries_per_round: the preset spend per round.
        seed_size: ``|X_0|`` (default: ``queries_per_round``, so the first round is the seed set).
        balanced_seed: draw ``X_0`` evenly over k-means clusters of the pool (else uniformly).
        eps: step size (``jbda``/``jb-self``/``feature-fool``), L-inf radius (``jb-top3``/``jba-pgd``/``jba-bs``)
            or Adam step (``jba-cw``), as a fraction of the input range; default: the method's published value.
        attack_steps: iterations of the augmentation (default: the method's published value).
        n_targets: target classes per source for the targeted methods (seed 003: 3; FeatureFool: 1).
        reservoir: draw this many sources per generation uniformly from all of ``D_T`` (None: the whole
            previous query set, as Algorithm 1).
        tau: ``jbda``/``jb-self`` only: flip the step's sign every ``tau`` generations (Papernot's period).
        cw_binary_steps: binary-search steps on CW's constant.
        bs_tol: JBA-BS stops when ``||x_s - x_t||_inf`` falls below this.
        bs_max_iter: JBA-BS's most bisections.
        target: service it is scored against (default: the first).
        labels: ``"hard"`` (seed 003's threat model: the arg-max) or ``"soft"`` surrogate targets.
        surrogate: architecture name, ``"auto"`` or ``"cheap"``
            (:class:`~extractgym.agents.extraction.surrogate.CheapSurrogate`).
        epochs: epochs per retraining from scratch (Algorithm 1, step 8).
        warm_start: keep training the same substitute for ``train_steps`` minibatch steps per round instead of
            reinitialising it (faster; not the published loop).
        train_steps: minibatch steps per round with ``warm_start``.
        batch_size: training minibatch.
        lr: training learning rate.
        switch_method: expose a ``method`` knob, so a brain may switch augmentation each round (the registered
            presets ``jbda`` ... ``feature-fool`` fix the method and do not).
    """

    inputs = ("image",)  # the target kinds it can attack: gradients with respect to the input

    def __init__(self, method: str = "jba-pgd", pool: AttackerData = "digits", pool_split: split_of("pool") = "pool",
                 queries_per_round: int = 100, seed_size: int | None = None, balanced_seed: bool = True,
                 eps: float | None = None, attack_steps: int | None = None, n_targets: int | None = None,
                 reservoir: int | None = None, tau: int | None = None, cw_binary_steps: int = 5,
                 bs_tol: float = 1e-6, bs_max_iter: int = 1000, target: TargetService | None = None, labels: str = "hard",
                 surrogate: str = "auto", epochs: int = 30, warm_start: bool = False, train_steps: int = 60,
                 batch_size: int = 64, lr: float = 2e-3, switch_method: bool = True) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        if queries_per_round < 1:
            raise ValueError(f"queries_per_round must be >= 1, got {queries_per_round}")
        if seed_size is not None and seed_size < 1:
            raise ValueError(f"seed_size must be >= 1, got {seed_size}")
        if eps is not None and not (eps >= 0 and math.isfinite(eps)):
            raise ValueError(f"eps must be a finite number >= 0, got {eps}")
        if attack_steps is not None and attack_steps < 1:
            raise ValueError(f"attack_steps must be >= 1, got {attack_steps}")
        if n_targets is not None and n_targets < 1:
            raise ValueError(f"n_targets must be >= 1, got {n_targets}")
        if reservoir is not None and reservoir < 1:
            raise ValueError(f"reservoir must be >= 1, got {reservoir}")
        if tau is not None and tau < 1:
            raise ValueError(f"tau must be >= 1, got {tau}")
        if cw_binary_steps < 1 or bs_max_iter < 1 or not bs_tol > 0:
            raise ValueError("cw_binary_steps and bs_max_iter must be >= 1 and bs_tol > 0")
        if labels not in ("soft", "hard"):
            raise ValueError(f"labels must be 'soft' or 'hard', got {labels!r}")
        if epochs < 1 or train_steps < 1 or batch_size < 1 or not lr > 0:
            raise ValueError("epochs, train_steps and batch_size must be >= 1 and lr > 0")
        get_dataset(pool).split(pool_split)  # fail now, naming the pool, not in round 3
        self.method, self.pool_name, self.pool_split = method, pool, pool_split
        self.seed_size = seed_size or queries_per_round
        self.balanced_seed, self.eps, self.attack_steps = balanced_seed, eps, attack_steps
        self.n_targets, self.reservoir, self.tau = n_targets, reservoir, tau
        self.cw_binary_steps, self.bs_tol, self.bs_max_iter = cw_binary_steps, bs_tol, bs_max_iter
        self.target, self.labels, self.arch, self.warm_start = target or "", labels, surrogate, warm_start
        self.train_cfg = TrainConfig(steps=train_steps, epochs=epochs, batch_size=batch_size, lr=lr)
        q = queries_per_round
        self.knobs = (Knob.around("queries", (0, max(1, q // 2), 2 * q), q),
                      Knob.around("eps_scale", (0.5, 2.0), 1.0),
                      *((Knob("method", METHODS, METHODS.index(method)),) if switch_method else ()))

    # -- episode state ---------------------------------------------------------------------------------
    def setup(self) -> None:
        n_classes, spec = self.channel.service_info(self.target)
        if spec.kind != "image":
            raise ValueError(f"{type(self).__name__} needs an image victim (gradients w.r.t. the input); "
                             f"service {self.target!r} takes {spec.kind}")
        x, _ = get_dataset(self.pool_name).split(self.pool_split)  # pool labels are never used
        if tuple(x.shape[1:]) != tuple(spec.shape):
            raise ValueError(f"pool {self.pool_name!r} has samples of shape {x.shape[1:]}, "
                             f"the victim takes {spec.shape}")
        self.n_classes, self.low, self.high = n_classes, float(spec.low), float(spec.high)
        x = np.clip(x.astype(np.float32), self.low, self.high)
        pick = (balanced_seed_indices(x, self.seed_size, n_classes, self.rng) if self.balanced_seed
                else self.rng.permutation(len(x))[:self.seed_size])
        self.pending = x[pick]                      # X_0, still to be labelled through the API
        self.dx = np.zeros((0, *spec.shape), dtype=np.float32)  # D_T inputs
        self.dlabel = np.zeros(0, dtype=np.int64)   # the victim's arg-max on each
        self.frontier = np.zeros(0, dtype=np.int64)  # D_T rows of the generation being augmented
        self.children: list[np.ndarray] = []         # rows added since that generation started
        self.generation = 0
        self.torch_gen = torch.Generator().manual_seed(int(self.rng.integers(2**31 - 1)))
        self.surrogate = build_surrogate(spec, n_classes, self.arch, self.train_cfg, self.warm_start, self.labels,
                                         seed=int(self.rng.integers(2**31 - 1)), device=self.device)

    # -- one round: Algorithm 1 steps 4-8 within this round's spend ------------------------------------------
    def play_round(self, knobs: dict[str, Any], round_index: int) -> None:
        left = spend = int(knobs["queries"])
        refused = 0
        method = knobs.get("method", self.method)
        scale = float(knobs.get("eps_scale", 1.0))
        trained_on = len(self.dx)
        while left > 0:
            if len(self.pending):
                x, self.pending = self.pending[:left], self.pending[left:]
            else:
                if len(self.dx) > trained_on:  # new labels since the last fit: retrain before augmenting
                    self.surrogate.fit()
                    trained_on = len(self.dx)
                x = self.augment(method, left, scale)
            if not len(x):
                break
            idx, out = self.send(self.target, x)
            if len(idx):
                self.add(x[idx], out)
            left -= len(idx)
            refused += self.channel.last.refused
            if self.channel.last.exhausted or refused >= spend:
                break  # a budget ran out (nothing more can be bought this round), or as many refused as it meant to buy
            # a query a defence refused (rejected, or at a ban) is dropped and the loop goes on with the next sources:
            # Algorithm 1 labels what it can, and the refused point adds nothing to D_T. (Reading a short answer as
            # "the budget ran out" ended the round at the first refused seed image, before any synthetic query.)
        if len(self.dx) > trained_on or self.surrogate.fits == 0:
            self.surrogate.fit()

    def add(self, x: np.ndarray, outputs: np.ndarray) -> None:
        start = len(self.dx)
        self.dx = np.concatenate([self.dx, x.astype(np.float32)])
        self.dlabel = np.concatenate([self.dlabel, np.asarray(outputs).argmax(axis=1)])
        self.children.append(np.arange(start, len(self.dx)))
        self.surrogate.add(x, outputs)

    def sources(self, n: int) -> np.ndarray:
        """``n`` rows of ``D_T`` to augment: the rest of the current generation, or a reservoir draw."""
        if self.reservoir is not None:
            k = min(n, self.reservoir, len(self.dx))
            return self.rng.choice(len(self.dx), size=k, replace=False)
        if not len(self.frontier):
            self.frontier = self.rng.permutation(np.concatenate(self.children)) if self.children else self.frontier
            self.children = []
            self.generation += 1
        take, self.frontier = self.frontier[:n], self.frontier[n:]
        return take

    def augment(self, method: str, n: int, scale: float = 1.0) -> np.ndarray:
        """At most ``n`` new queries from the next sources of ``D_T`` (one batched augmentation call)."""
        per = 1 if method in ONE_STEP else (self.n_targets or (1 if method == "feature-fool" else 3))
        per = min(per, self.n_classes - 1) if method not in ONE_STEP else 1
        src = self.sources(math.ceil(n / max(per, 1)))
        if not len(src):
            return self.dx[:0]
        model = self.surrogate.model
        model.eval()
        span = self.high - self.low
        eps = (self.eps if self.eps is not None else DEFAULT_EPS[method]) * scale * span
        steps = self.attack_steps or DEFAULT_STEPS[method]
        xs, ys = torch.from_numpy(self.dx[src]), torch.from_numpy(self.dlabel[src])
        lo, hi = self.low, self.high
        if method in ONE_STEP:
            sign = 1.0 if method == "jbda" else -1.0
            if self.tau is not None:
                sign *= (-1) ** round(self.generation / self.tau)  # as the reference implementation
            out = augment.jacobian_step(model, xs, ys, sign * eps, lo, hi)
            return out.numpy()[:n]
        # targeted methods: the substitute's top classes other than the victim's label, `per` per source
        with torch_threads(), torch.no_grad():
            logits_s = model(xs)
        logits = logits_s.clone()
        logits[torch.arange(len(src)), ys] = float("-inf")
        targets = logits.argsort(dim=1, descending=True)[:, :per].reshape(-1)
        xr = xs.repeat_interleave(per, dim=0)
        if method == "jb-top3":
            out = augment.targeted_linf(model, xr, targets, eps, 0.01 * span * scale, steps, lo, hi,
                                        objective="logit")
        elif method in ("jba-pgd", "jba-bs"):
            out = augment.targeted_linf(model, xr, targets, eps, eps * 0.01 / 0.3, steps, lo, hi,
                                        random_start=True, generator=self.torch_gen)
            if method == "jba-bs":  # the search runs on F_A, so x_s's class s is the substitute's own label
                own = logits_s.argmax(dim=1).repeat_interleave(per)
                out = augment.boundary_search(model, xr, out, own, targets, self.bs_max_iter, self.bs_tol)
        elif method == "jba-cw":
            out = augment.cw_l2_targeted(model, xr, targets, steps, self.cw_binary_steps, lr=eps, low=lo, high=hi)
        else:  # feature-fool
            out = augment.feature_fool(model, xr, self.anchors(targets), steps=steps, alpha=eps, low=lo, high=hi)
        return out.numpy()[:n]

    def anchors(self, targets: torch.Tensor) -> torch.Tensor:
        """For each target class, a random row of ``D_T`` the substitute labels with it (else its most likely one)."""
        pred = self.surrogate.predict_proba(self.dx)
        label = pred.argmax(1)
        rows = np.empty(len(targets), dtype=np.int64)
        for c in np.unique(targets.numpy()):
            where = np.flatnonzero(targets.numpy() == c)
            members = np.flatnonzero(label == c)
            rows[where] = (self.rng.choice(members, size=len(where)) if len(members)
                           else int(pred[:, c].argmax()))
        return torch.from_numpy(self.dx[rows])



register_attacker("jacobian")(JacobianAttacker)

for _method, _doc in (
        ("jbda", "Papernot et al.'s JBDA (one Jacobian step towards the victim's label)."),
        ("jb-self", "The one-step Jacobian augmentation away from the label."),
        ("jb-top3", "PRADA's JB-top3 (I-FGSM towards the top-3 other classes)."),
        ("jba-pgd", "Seed 003's JBA-PGD (targeted L-inf PGD, eps 8/256)."),
        ("jba-cw", "Seed 003's JBA-CW-L2 (targeted CW-L2, 150 steps, 5 binary steps)."),
        ("jba-bs", "Seed 003's JBA-BinarySearch (the section III-A3 line search after PGD).")):
    register_preset(ATTACKERS, _method, JacobianAttacker, _doc, method=_method, switch_method=False)
