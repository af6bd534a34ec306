"""The VAE / likelihood detector of seed 003 §VI-B: a credibility interval on an account's mean log-likelihood.

Zhang, Chen & Wagner (seed 003 §VI-B, §VIII-B). A VAE trained on the owner's data scores each query by the
log-likelihood of its reconstruction, ``l(x) ~ -MSE(x, D(E(x)))``. Per account the detector tracks the running
mean ``mu_n`` of ``l`` and its sample standard deviation ``s_n``; after a warm-up of 50 queries it flags the
account at the first query where the upper end of the credibility interval falls below the threshold,
``mu_n + beta * s_n < alpha``, with ``alpha`` the average log-likelihood of the owner's natural images and
``alpha`` is measured on the held-out third of the owner's data (the VAE fits the rest), and
``beta`` is tuned (binary search in the paper; :func:`~extractgym.agents.detection.stateful.calibrate` here) to a target FPR.

Departures: a small fully connected Gaussian VAE (Kingma & Welling, https://arxiv.org/abs/1312.6114) instead of
VQ-VAE (van den Oord et al.), which is sized for CIFAR; the reconstruction uses the posterior mean so scores
are deterministic. Per-account state is three numbers (count, sum, sum of squares): memory and per-query cost
do not grow with history.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extractgym.agents.detection.stateful import StatefulDetector
from extractgym.agents.refs import ImageDefenderData
from extractgym.agents.registry import register_defender
from extractgym.victims.cache import cached_model
from extractgym.victims.training import torch_threads
from extractgym.victims.zoo import dataset_fingerprint

LEVELS = (0.25, 0.5, 1.0, 2.0, 4.0)


class SmallVAE(nn.Module):
    def __init__(self, in_dim: int, latent: int, hidden: int = 128) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, hidden), nn.ReLU())
        self.mu, self.logvar = nn.Linear(hidden, latent), nn.Linear(hidden, latent)
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, in_dim), nn.Sigmoid())

    def log_likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """``-MSE(x, D(mu(x)))`` per sample: seed 003's log-likelihood proxy."""
        flat = x.reshape(len(x), -1)
        return -((self.dec(self.mu(self.enc(x))) - flat) ** 2).mean(1)


def train_vae(model: SmallVAE, x: np.ndarray, seed: int, epochs: int = 60, batch: int = 64) -> None:
    gen = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(np.array(x, dtype=np.float32))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch_threads():
        for _ in range(epochs):
            for idx in torch.randperm(len(xt), generator=gen).split(batch):
                xb = xt[idx]
                h = model.enc(xb)
                mu, logvar = model.mu(h), model.logvar(h)
                z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen)
                recon = F.mse_loss(model.dec(z), xb.reshape(len(xb), -1), reduction="sum")
                kl = -0.5 * torch.sum(1 + logvar - mu ** 2 - logvar.exp())
                loss = (recon + 0.1 * kl) / len(xb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()


@dataclass
class LikelihoodState:
    n: int = 0
    s1: float = 0.0
    s2: float = 0.0


@register_defender("vae")
class VaeDetector(StatefulDetector):
    """Seed 003's likelihood detector with credibility interval and warm-up.

    Args:
        data: the owner's training dataset (trains the VAE, sets ``alpha``; its train split tunes ``beta``).
        threshold: ``beta``, the credibility interval's half-width in standard deviations; ``None`` calibrates.
        warmup: queries before the first comparison (seed 003: 50).
        latent: VAE latent size.
        target_fpr, max_history, tune_accounts, tune_queries, seed: see :class:`~extractgym.agents.detection.stateful.StatefulDetector`.
    Knob ``level``: multiplies ``beta`` (lower flags more).
    """

    flag_above = False
    default_threshold = 1.0

    def __init__(self, data: ImageDefenderData = "digits", threshold: float | None = None, warmup: int = 50, latent: int = 8,
                 target_fpr: float | None = None, max_history: int = 10_000, tune_accounts: int = 1000,
                 tune_queries: int = 150, seed: int = 0) -> None:
        if threshold is not None and threshold < 0:
            raise ValueError(f"threshold (the credibility multiplier beta) must be >= 0 or None, got {threshold}")
        if warmup < 2:
            raise ValueError(f"warmup must be >= 2 (a standard deviation needs two queries), got {warmup}")
        if latent < 1:
            raise ValueError(f"latent must be >= 1, got {latent}")
        super().__init__(data, threshold, target_fpr, max_history, tune_accounts, tune_queries, seed, LEVELS)
        self.warmup, self.latent = warmup, latent
        self.vae: SmallVAE | None = None
        self.alpha = 0.0

    def params(self) -> tuple:
        return (*super().params(), self.warmup, self.latent)

    def prepare(self, service: str) -> None:
        if self.vae is None:
            in_dim = int(np.prod(self.x_train.shape[1:]))
            self.vae = cached_model("vae", lambda: SmallVAE(in_dim, self.latent),
                                    lambda m: train_vae(m, self.x_train, self.seed),
                                    data=dataset_fingerprint(self.data), seed=self.seed, latent=self.latent, fit="two-thirds")
            self.alpha = float(self.log_likelihood(self.x_tune).mean())  # natural images the VAE did not fit

    def log_likelihood(self, x: np.ndarray) -> np.ndarray:
        if self.vae is None:
            self.prepare("")
        with torch.no_grad(), torch_threads():
            return self.vae.log_likelihood(torch.from_numpy(np.array(x, dtype=np.float32))).double().numpy()

    def new_state(self, service: str) -> LikelihoodState:
        return LikelihoodState()

    def update(self, state: LikelihoodState, x: np.ndarray, service: str, threshold: float) -> np.ndarray:
        """Per query ``(alpha - mu_n) / s_n`` (``nan`` during the warm-up): flagged iff it exceeds ``beta``."""
        ll = self.log_likelihood(x)
        n = state.n + np.arange(1, len(ll) + 1)
        s1, s2 = state.s1 + np.cumsum(ll), state.s2 + np.cumsum(ll * ll)
        state.n, state.s1, state.s2 = int(n[-1]), float(s1[-1]), float(s2[-1])
        mean = s1 / n
        std = np.sqrt(np.clip((s2 - s1 * s1 / n) / np.maximum(n - 1, 1), 0.0, None))
        gap = self.alpha - mean
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(std > 0, gap / np.where(std > 0, std, 1.0), np.where(gap > 0, np.inf, -np.inf))
        return np.where(n >= self.warmup, z, np.nan)

    def flags(self, stats: np.ndarray, threshold: float) -> np.ndarray:
        return np.nan_to_num(stats, nan=-np.inf) > threshold  # mu + beta * s < alpha

    def pressure(self, stat: float, threshold: float) -> float:
        return float("nan") if np.isnan(stat) else max(float(stat), 0.0) / max(threshold, 1e-12)

    def reduce(self, stats: list[np.ndarray], state: LikelihoodState) -> float:
        z = np.concatenate(stats)
        z = z[~np.isnan(z)]
        return float(z.max()) if len(z) else -np.inf
