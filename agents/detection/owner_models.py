"""Models a defender holds besides the victim, built for a service's inputs.

MAD (``agents/defenders/mad.py``) needs a stand-in for the attacker's model; adaptive misinformation
(``agents/defenders/adaptive_misinformation.py``) needs a model trained to be wrong. Both are ordinary classifiers
from ``victims/models.py``: either freshly initialised from a seed for the shape of the queries a service takes, or
trained with the shared loop (``victims/training.py``) on the train split of one of the owner's datasets. Trained
models are memoised in-process and cached on disk like victims (``cache_dir("defenders")``, keyed by everything
that determines them, the data's fingerprint included); every episode of a process shares one read-only copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from extractgym.agents.extraction.surrogate import default_arch
from extractgym.victims.base import InputSpec
from extractgym.victims.cache import cache_dir, cache_key, cached_weights
from extractgym.victims.datasets import get_dataset
from extractgym.victims.models import build_model
from extractgym.victims.training import LossFn, TrainConfig, predict_proba, train_classifier
from extractgym.victims.zoo import dataset_fingerprint, get_featurizer


def query_spec(x: Any) -> InputSpec:
    """What a batch of queries looks like: text (an array or list of str) or images of ``x.shape[1:]``."""
    x = np.asarray(x)
    return InputSpec(kind="text") if x.dtype.kind in "OUS" else InputSpec(kind="image", shape=tuple(x.shape[1:]))


def model_inputs(spec: InputSpec) -> InputSpec:
    """The part of a spec a model depends on (kind and shape), so that equal inputs share one memoised model."""
    return InputSpec(kind="text") if spec.kind == "text" else InputSpec(kind="image", shape=tuple(spec.shape))


def accepts(spec: InputSpec, n_classes: int, queries: InputSpec, classes: int) -> bool:
    """Whether a model for ``spec`` inputs and ``n_classes`` classes can answer ``queries`` to a ``classes``-way
    service."""
    return (n_classes == classes and spec.kind == queries.kind
            and (spec.kind == "text" or tuple(spec.shape) == tuple(queries.shape)))


@dataclass(frozen=True, eq=False)
class OwnerModel:
    """A classifier with its input pipeline (a frozen text encoder for text, nothing for images)."""

    model: nn.Module
    featurize: Callable[[Any], np.ndarray] | None
    n_classes: int
    spec: InputSpec

    def inputs(self, x: Any) -> torch.Tensor:
        feats = np.ascontiguousarray(self.featurize(x) if self.featurize is not None else x, dtype=np.float32)
        return torch.from_numpy(feats if feats.flags.writeable else feats.copy())  # torch warns on read-only arrays

    def predict_proba(self, x: Any) -> np.ndarray:
        return predict_proba(self.model, self.inputs(x))

    def accepts(self, queries: InputSpec, classes: int) -> bool:
        """Whether this model can answer ``queries`` of a service with ``classes`` classes."""
        return accepts(self.spec, self.n_classes, queries, classes)


def _build(spec: InputSpec, n_classes: int, arch: str, seed: int) -> tuple[nn.Module, Any, tuple[int, ...]]:
    auto, featurizer = default_arch(spec)
    featurize = get_featurizer(featurizer)
    in_shape = (384,) if featurizer == "minilm" else tuple(spec.shape)
    return build_model(auto if arch == "auto" else arch, n_classes, in_shape, seed), featurize, in_shape


def untrained_model(spec: InputSpec, n_classes: int, arch: str = "auto", seed: int = 0) -> OwnerModel:
    """A model for ``spec`` inputs with weights drawn from ``seed`` (``arch="auto"``: what attackers default to)."""
    return _untrained(model_inputs(spec), n_classes, arch, seed)


@lru_cache(maxsize=64)
def _untrained(spec: InputSpec, n_classes: int, arch: str, seed: int) -> OwnerModel:
    model, featurize, _ = _build(spec, n_classes, arch, seed)
    for p in model.parameters():
        p.requires_grad_(False)
    return OwnerModel(model.eval(), featurize, n_classes, spec)


def reverse_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``-log(1 - p_y)``, the loss that trains adaptive misinformation's model to put no mass on the true class
    (Kariyappa & Qureshi 2020, Eq. 6), computed from logits as ``logsumexp(z) - logsumexp(z without z_y)``."""
    others = logits.scatter(1, target[:, None], float("-inf"))
    return (torch.logsumexp(logits, dim=1) - torch.logsumexp(others, dim=1)).mean()


LOSSES: dict[str, LossFn | None] = {"cross-entropy": None, "reverse-cross-entropy": reverse_cross_entropy}


@lru_cache(maxsize=16)
def trained_model(dataset: str, arch: str = "auto", loss: str = "cross-entropy", epochs: int = 30,
                  seed: int = 0) -> OwnerModel:
    """A model trained on ``dataset``'s train split with one of :data:`LOSSES` (memoised, cached on disk)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; known: {', '.join(LOSSES)}")
    ds = get_dataset(dataset)
    model, featurize, in_shape = _build(ds.spec, ds.n_classes, arch, seed)
    key = cache_key(dataset=dataset, data=dataset_fingerprint(dataset), arch=arch, in_shape=in_shape, loss=loss,
                    epochs=epochs, seed=seed)

    def train(m: nn.Module) -> None:
        x = featurize(ds.x_train) if featurize is not None else ds.x_train
        train_classifier(m, x, ds.y_train, TrainConfig(epochs=epochs, lr=2e-3), seed=seed, loss=LOSSES[loss])

    cached_weights(cache_dir("defenders") / f"{dataset}-{loss}-{key}.pt", model, train)
    for p in model.parameters():
        p.requires_grad_(False)
    return OwnerModel(model.eval(), featurize, ds.n_classes, ds.spec)


def dataset_spec(dataset: str) -> tuple[InputSpec, int]:
    """``(input spec, n_classes)`` of a dataset, failing with the known names if it does not exist."""
    ds = get_dataset(dataset)
    return ds.spec, ds.n_classes
