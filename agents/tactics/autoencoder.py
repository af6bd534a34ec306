"""The auto-encoder blinding function of seed 003 §VII-A (after Chen, Carlini & Wagner 2019, §6).

``t_auto(x, z)`` takes an image and random noise ``z ~ N(0, r^2)`` (seed 003: ``r = 0.095``) and returns a
blinded image; it is trained so that a classifier ``F`` gives the same output on ``t_auto(x, z)`` as on ``x``,
i.e. it learns to put the noise where it matters least to the model (seed 003 Fig. 12). The classifier ``F``
and the auto-encoder are trained on the attacker's own labelled data (a subset of the victim's training
distribution, or the public data closest to it: seed 003's threat model).

Our form: ``t_auto(x, z) = clip(x + ||z|| * g(x, z) / ||g(x, z)||)`` with ``g`` a small MLP, so the noise
budget is exactly ``||z||`` and only its placement is learned; the loss is ``KL(F(x) || F(t_auto(x, z)))`` plus
a penalty on the part of the noise the clip to ``[0, 1]`` removes (without it, ``g`` learns to push the
noise into the black background, where clipping erases it and the "blinded" query is the original).
The ``blind_level`` knob scales ``z``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extractgym.victims.cache import cached_model
from extractgym.victims.datasets import get_dataset
from extractgym.victims.models import build_model
from extractgym.victims.training import TrainConfig, torch_threads, train_classifier
from extractgym.victims.zoo import dataset_fingerprint

EPOCHS = 30
PENALTY = 10.0
HIDDEN = 256
CLASSIFIER_TRAIN = TrainConfig(epochs=40, lr=2e-3)


class BlindingNet(nn.Module):
    def __init__(self, dim: int, hidden: int = HIDDEN) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                 nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        flat_x, flat_z = x.flatten(1), z.flatten(1)
        g = self.net(torch.cat([flat_x, flat_z], dim=1))
        g = g / g.norm(dim=1, keepdim=True).clamp_min(1e-8) * flat_z.norm(dim=1, keepdim=True)
        return (flat_x + g).view_as(x)


class _Pair(nn.Module):
    """The classifier ``F`` and the blinding net, cached together."""

    def __init__(self, classifier: nn.Module, net: BlindingNet) -> None:
        super().__init__()
        self.classifier, self.net = classifier, net


def train_pair(pair: _Pair, x: np.ndarray, y: np.ndarray, r: float, seed: int) -> None:
    train_classifier(pair.classifier, x, y, CLASSIFIER_TRAIN, seed=seed)
    for p in pair.classifier.parameters():
        p.requires_grad_(False)
    pair.classifier.eval()
    gen = torch.Generator().manual_seed(seed + 1)
    xt = torch.from_numpy(np.array(x, dtype=np.float32))  # a writable copy (datasets are read-only)
    opt = torch.optim.Adam(pair.net.parameters(), lr=1e-3)
    with torch_threads():
        for _ in range(EPOCHS):
            for idx in torch.randperm(len(xt), generator=gen).split(64):
                xb = xt[idx]
                z = r * torch.randn(xb.shape, generator=gen)
                raw = pair.net(xb, z)
                blinded = raw.clamp(0.0, 1.0)
                with torch.no_grad():
                    target = F.softmax(pair.classifier(xb), dim=1)
                kl = F.kl_div(F.log_softmax(pair.classifier(blinded), dim=1), target, reduction="batchmean")
                kept = (blinded - xb).flatten(1).norm(dim=1) / z.flatten(1).norm(dim=1).clamp_min(1e-8)
                loss = kl + PENALTY * ((1.0 - kept).clamp_min(0.0) ** 2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()


class AutoencoderBlinding:
    """``t_auto`` trained (once, cached on disk) on ``split`` of dataset ``data``."""

    def __init__(self, data: str, split: str, r: float, seed: int) -> None:
        ds = get_dataset(data)
        if ds.spec.kind != "image" or not ds.labelled:
            raise ValueError(f"blinding: the autoencoder trains on a labelled image dataset; {data!r} is not one")
        self.x, self.y = ds.split(split)
        self.data, self.split, self.r, self.seed = data, split, r, seed
        self.shape = tuple(self.x.shape[1:])
        self.pair: _Pair | None = None

    def model(self) -> _Pair:
        if self.pair is None:
            dim, n_classes = int(np.prod(self.shape)), int(self.y.max()) + 1
            self.pair = cached_model(
                "blinding-autoencoder",
                lambda: _Pair(build_model("mlp", n_classes, self.shape, self.seed), BlindingNet(dim)),
                lambda m: train_pair(m, self.x, self.y, self.r, self.seed),
                data=dataset_fingerprint(self.data), split=self.split, r=self.r, seed=self.seed, epochs=EPOCHS,
                penalty=PENALTY, hidden=HIDDEN, classifier=repr(CLASSIFIER_TRAIN))
        return self.pair

    def fits(self, spec: object) -> str | None:
        """Why this auto-encoder cannot blind queries of ``spec`` (None if it can)."""
        shape = tuple(getattr(spec, "shape", ()))
        if getattr(spec, "kind", "") != "image" or shape != self.shape:
            return (f"{self.data!r} images have shape {self.shape} (what the autoencoder trains on); the target takes "
                    f"{getattr(spec, 'kind', '?')} inputs of shape {shape}")
        return None

    def __call__(self, x: np.ndarray, level: float, rng: np.random.Generator) -> np.ndarray:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"blinding: the autoencoder was trained on {self.data!r} inputs of shape {self.shape}, "
                             f"got queries of shape {tuple(x.shape[1:])}")
        z = rng.normal(0.0, self.r * level, size=x.shape).astype(np.float32)
        with torch.no_grad(), torch_threads():
            return self.model().net(torch.from_numpy(np.array(x, dtype=np.float32)),
                                    torch.from_numpy(z)).numpy()
