"""Model architectures for victims and surrogates, built deterministically from a seed."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Small CNN for 8x8 single-channel digits (~25k parameters)."""

    def __init__(self, n_classes: int = 10, in_shape: tuple[int, ...] = (1, 8, 8)) -> None:
        super().__init__()
        c, h, w = in_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(32 * (h // 2) * (w // 2), 64), nn.ReLU(), nn.Linear(64, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MnistCNN(nn.Module):
    """LeNet-style CNN for 28x28 single-channel MNIST."""

    def __init__(self, n_classes: int = 10, in_shape: tuple[int, ...] = (1, 28, 28)) -> None:
        super().__init__()
        c, h, w = in_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(32 * (h // 4) * (w // 4), 128), nn.ReLU(), nn.Linear(128, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    """Two-layer perceptron on flat inputs (images are flattened; text uses encoder embeddings)."""

    def __init__(self, n_classes: int, in_shape: tuple[int, ...], hidden: int = 128) -> None:
        super().__init__()
        dim = 1
        for s in in_shape:
            dim *= s
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(dim, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class LinearHead(nn.Module):
    """Logistic-regression head on flat features (e.g. frozen sentence embeddings)."""

    def __init__(self, n_classes: int, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        dim = 1
        for s in in_shape:
            dim *= s
        self.features = nn.Flatten()
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def small_mlp(n_classes: int, in_shape: tuple[int, ...]) -> MLP:
    """The cheap surrogates' architecture (hidden width 32): what :mod:`extractgym.victims.ensemble` trains in
    batches, as a module (a snapshot's model, or a body that needs gradients through its surrogate)."""
    return MLP(n_classes, in_shape, hidden=32)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "digits-cnn": DigitsCNN,
    "mnist-cnn": MnistCNN,
    "mlp": MLP,
    "mlp-32": small_mlp,
    "linear": LinearHead,
}


def build_model(arch: str, n_classes: int, in_shape: tuple[int, ...], seed: int) -> nn.Module:
    """Instantiate ``arch`` with weights drawn from ``seed`` only (the global torch RNG is left as it was)."""
    try:
        factory = ARCHITECTURES[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(sorted(ARCHITECTURES))}") from None
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory(n_classes=n_classes, in_shape=tuple(in_shape))
