"""The similarity encoder of seed 003 §VI-A (Eq. 6), trained on a labelled image set.

Chen, Carlini & Wagner's stateful detector compares queries in the space of an encoder trained to keep an image and
its slight transformations close and other images apart. The defender's ``similarity`` detector and the attacker's
query filter (a substitute of it, trained on the attacker's own data) both build theirs here, with one cache key
scheme, so neither imports the other.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extractgym.victims.cache import cached_model
from extractgym.victims.training import torch_threads


class SimilarityEncoder(nn.Module):
    """MLP encoder (``features``) with a classification head used only for its pre-training."""

    def __init__(self, in_dim: int, n_classes: int, embed_dim: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(in_dim, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                      nn.Linear(64, embed_dim))
        self.head = nn.Linear(embed_dim, n_classes)


def slight_transform(x: torch.Tensor, gen: torch.Generator, noise: float = 0.03) -> torch.Tensor:
    """``x+`` of Eq. 6: each image shifted by up to one pixel (rolled) plus faint Gaussian noise, in [0, 1]."""
    dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=gen))
    shifted = torch.roll(x, shifts=(dy, dx), dims=(-2, -1)) if x.ndim == 4 else x
    return (shifted + noise * torch.randn(x.shape, generator=gen)).clamp(0.0, 1.0)


def train_encoder(model: SimilarityEncoder, x: np.ndarray, y: np.ndarray, seed: int, margin: float,
                  epochs: int = 20, batch: int = 64) -> None:
    """Classification pre-training, then the contrastive loss of Eq. 6 (both ``epochs`` passes, Adam)."""
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(np.array(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch_threads():
        for stage in ("classify", "contrast"):
            for _ in range(epochs):
                for idx in torch.randperm(len(xt), generator=gen).split(batch):
                    x0 = xt[idx]
                    z0 = model.features(x0)
                    if stage == "classify":
                        loss = F.cross_entropy(model.head(z0), yt[idx])
                    else:
                        zp = model.features(slight_transform(x0, gen))
                        zn = model.features(xt[torch.randint(0, len(xt), (len(idx),), generator=gen)])
                        loss = ((z0 - zp) ** 2).sum(1) + F.relu(margin ** 2 - ((z0 - zn) ** 2).sum(1))
                        loss = loss.mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()


def trained_encoder(kind: str, x: np.ndarray, y: np.ndarray, seed: int, margin: float, embed_dim: int,
                    **key: object) -> SimilarityEncoder:
    """A similarity encoder trained on ``(x, y)`` by :func:`train_encoder`, once, cached under ``kind`` and ``key``
    (which must name the data). The defender's detector and the attacker's substitute both build theirs here."""
    in_dim, n_classes = int(np.prod(x.shape[1:])), int(y.max()) + 1
    return cached_model(kind, lambda: SimilarityEncoder(in_dim, n_classes, embed_dim),
                        lambda m: train_encoder(m, x, y, seed, margin),
                        seed=seed, margin=margin, embed_dim=embed_dim, **key)


def encode(encoder: SimilarityEncoder, x: np.ndarray) -> np.ndarray:
    """Encodings of ``x`` (float64 rows)."""
    with torch.no_grad(), torch_threads():
        return encoder.features(torch.from_numpy(np.array(x, dtype=np.float32))).double().numpy()
