"""The similarity encoder of seed 003 §VI-A (Eq. 6), trained on a labelled image set, and SEAT's adversarial variant.

Chen, Carlini & Wagner's stateful detector compares queries in the space of an encoder trained to keep an image and
its slight transformations close and other images apart. The defender's ``similarity`` detector and the attacker's
query filter (a substitute of it, trained on the attacker's own data) both build theirs here, with one cache key
scheme, so neither imports the other.

SEAT (Zhang, Chen, Wagner, "SEAT: Similarity Encoder by Adversarial Training for Detecting Model Extraction Attack
Queries", AISec 2021, https://doi.org/10.1145/3474369.3486863; the authors' ``defense/similarity_encoding/encoder.py``
in ``zhanyuanucb/model-extraction-defense``) trains the same encoder with two kinds of positives: the random image
transformations an attacker blinds with (Chen et al.'s list, the ``blinding`` tactic's transforms at their default
strengths) and adversarial examples of the encoder itself, an L-inf PGD perturbation of ``x0`` that maximises
``||f(x0) - f(x0 + delta)||``: the loss is ``p^2 + adv^2 + max(0, m^2 - n^2)`` (:func:`train_encoder` with
``positives="augment"`` and ``adversarial_eps > 0``).
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


def augment_transform(x: torch.Tensor, gen: torch.Generator, rng: np.random.Generator) -> torch.Tensor:
    """SEAT's positives: one of the blinding transforms (crop, brightness, scale, rotate, contrast, uniform, gaussian,
    translate) at its default strength, a random one per batch, clipped to [0, 1]."""
    from extractgym.agents.tactics.blinding import IMAGE_DEFAULTS, transform_images  # the attacker's own transforms

    name = list(IMAGE_DEFAULTS)[int(torch.randint(len(IMAGE_DEFAULTS), (1,), generator=gen))]
    out = transform_images(x.numpy(), name, IMAGE_DEFAULTS[name], rng)
    return torch.from_numpy(np.clip(out, 0.0, 1.0).astype(np.float32))


def encoder_pgd(model: SimilarityEncoder, x0: torch.Tensor, eps: float, steps: int,
                gen: torch.Generator) -> torch.Tensor:
    """An L-inf PGD perturbation of ``x0`` (radius ``eps``, random start) that pushes its encoding away from x0's."""
    z0 = model.features(x0).detach()
    delta = (torch.rand(x0.shape, generator=gen) * 2.0 - 1.0) * eps
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = ((model.features((x0 + delta).clamp(0.0, 1.0)) - z0) ** 2).sum()
        grad, = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + 2.5 * eps / steps * grad.sign()).clamp(-eps, eps)
    return (x0 + delta).clamp(0.0, 1.0).detach()


def train_encoder(model: SimilarityEncoder, x: np.ndarray, y: np.ndarray, seed: int, margin: float,
                  epochs: int = 20, batch: int = 64, positives: str = "slight", adversarial_eps: float = 0.0,
                  adversarial_steps: int = 10) -> None:
    """Classification pre-training, then the contrastive loss of Eq. 6 (both ``epochs`` passes, Adam).

    ``positives``: ``"slight"`` (seed 003: a one-pixel shift and faint noise) or ``"augment"`` (SEAT: a random
    blinding transform); ``adversarial_eps > 0`` adds SEAT's adversarial positives (:func:`encoder_pgd`).
    """
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    xt, yt = torch.from_numpy(np.array(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch_threads():
        for stage in ("classify", "contrast"):
            for _ in range(epochs):
                for idx in torch.randperm(len(xt), generator=gen).split(batch):
                    x0 = xt[idx]
                    if stage == "contrast" and adversarial_eps > 0:
                        x_adv = encoder_pgd(model, x0, adversarial_eps, adversarial_steps, gen)
                    z0 = model.features(x0)
                    if stage == "classify":
                        loss = F.cross_entropy(model.head(z0), yt[idx])
                    else:
                        xp = slight_transform(x0, gen) if positives == "slight" else augment_transform(x0, gen, rng)
                        zp = model.features(xp)
                        zn = model.features(xt[torch.randint(0, len(xt), (len(idx),), generator=gen)])
                        loss = ((z0 - zp) ** 2).sum(1) + F.relu(margin ** 2 - ((z0 - zn) ** 2).sum(1))
                        if adversarial_eps > 0:
                            loss = loss + ((z0 - model.features(x_adv)) ** 2).sum(1)
                        loss = loss.mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()


def trained_encoder(kind: str, x: np.ndarray, y: np.ndarray, seed: int, margin: float, embed_dim: int,
                    training: dict[str, object] | None = None, **key: object) -> SimilarityEncoder:
    """A similarity encoder trained on ``(x, y)`` by :func:`train_encoder` (with the keyword arguments ``training``,
    e.g. SEAT's), once, cached under ``kind`` and ``key`` (which must name the data). The defender's detectors and
    the attacker's substitute all build theirs here."""
    in_dim, n_classes = int(np.prod(x.shape[1:])), int(y.max()) + 1
    training = dict(training or {})
    return cached_model(kind, lambda: SimilarityEncoder(in_dim, n_classes, embed_dim),
                        lambda m: train_encoder(m, x, y, seed, margin, **training),
                        seed=seed, margin=margin, embed_dim=embed_dim, **training, **key)


def encode(encoder: SimilarityEncoder, x: np.ndarray) -> np.ndarray:
    """Encodings of ``x`` (float64 rows), computed where the encoder lives."""
    device = next(encoder.parameters()).device
    with torch.no_grad(), torch_threads():
        return encoder.features(torch.from_numpy(np.array(x, dtype=np.float32)).to(device)).double().cpu().numpy()


_ON_DEVICE: dict[tuple[int, str], SimilarityEncoder] = {}


def on_device(encoder: SimilarityEncoder, device: str) -> SimilarityEncoder:
    """``encoder`` on ``device`` (``auto``, ``cpu``, ``cuda``): itself on CPU, else one copy per process."""
    from extractgym.victims.ensemble import resolve_device

    dev = resolve_device(device)
    if dev.type == "cpu":
        return encoder
    key = (id(encoder), str(dev))
    if key not in _ON_DEVICE:
        import copy

        _ON_DEVICE[key] = copy.deepcopy(encoder).to(dev)
    return _ON_DEVICE[key]
