"""The one training loop shared by victims and surrogates.

Targets are either integer labels ``(n,)`` or probability vectors ``(n, C)`` (soft labels, e.g. the
outputs an attacker bought from the API). Training is deterministic for a given ``seed``: shuffling
uses its own ``torch.Generator`` and nothing touches the global RNG.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings. Give ``steps`` for a fixed number of minibatch updates (flat cost per call,
    what warm-started surrogates use) or ``epochs`` for full passes (what victims use)."""

    epochs: int = 20
    steps: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0


SMALL_MODEL_THREADS = int(os.environ.get("EXTRACTGYM_TORCH_THREADS", "1"))


@contextlib.contextmanager
def torch_threads(n: int = SMALL_MODEL_THREADS) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads, then restore the previous setting.

    The victims and surrogates here are tiny: on 2 cores a second thread costs more in synchronisation
    than it gains (measured 6x slower per step under load), and RL users run many envs in parallel
    processes anyway. Set ``EXTRACTGYM_TORCH_THREADS`` to change it. The MiniLM encoder is not run
    under this (it is large enough to gain from threads).
    """
    old = torch.get_num_threads()
    if n <= 0 or n == old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if target.ndim == 1:
        return F.cross_entropy(logits, target)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def to_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """A float32 tensor sharing memory with ``x`` where it can; read-only arrays (the datasets are) are copied,
    since torch cannot wrap them without a warning."""
    if isinstance(x, torch.Tensor):
        return x
    arr = np.ascontiguousarray(x, dtype=np.float32)
    return torch.from_numpy(arr if arr.flags.writeable else arr.copy())


def as_targets(y: np.ndarray) -> torch.Tensor:
    """Integer labels stay int64; probability rows become float32."""
    y = np.asarray(y)
    if y.ndim == 1:
        return torch.from_numpy(y.astype(np.int64))  # astype copies: always writable
    return to_tensor(y)


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def train_classifier(model: nn.Module, x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor,
                     config: TrainConfig = TrainConfig(), seed: int = 0,
                     optimizer: torch.optim.Optimizer | None = None,
                     loss: LossFn | None = None) -> torch.optim.Optimizer:
    """Train ``model`` in place on ``(x, y)``; return the optimizer so a caller can warm-start later calls.

    ``loss(logits, targets)`` replaces the default (cross-entropy on labels or on probability rows), e.g. the
    reverse cross-entropy that trains adaptive misinformation's model to be wrong.
    """
    xt = to_tensor(x)
    yt = y if isinstance(y, torch.Tensor) else as_targets(y)
    n = len(xt)
    if n == 0:
        raise ValueError("cannot train on an empty dataset")
    if len(yt) != n:
        raise ValueError(f"x has {n} rows but y has {len(yt)}")
    if optimizer is None:
        # fused Adam: one kernel for all parameters, ~25% faster per step for our small models on CPU
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay, fused=True)
    gen = torch.Generator().manual_seed(seed)
    bs = min(config.batch_size, n)
    with torch_threads():
        _optimise(model, optimizer, xt, yt, config, gen, bs, loss or _loss)
    return optimizer


def _optimise(model: nn.Module, optimizer: torch.optim.Optimizer, xt: torch.Tensor, yt: torch.Tensor,
              config: TrainConfig, gen: torch.Generator, bs: int, loss: LossFn) -> None:
    n = len(xt)
    model.train()
    if config.steps is not None:
        batches = (torch.randint(0, n, (bs,), generator=gen) for _ in range(config.steps))
    else:
        batches = (idx for _ in range(config.epochs) for idx in torch.randperm(n, generator=gen).split(bs))
    for idx in batches:
        optimizer.zero_grad(set_to_none=True)
        loss(model(xt[idx]), yt[idx]).backward()
        optimizer.step()
    model.eval()


@torch.no_grad()
def predict_proba(model: nn.Module, x: np.ndarray | torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """Softmax outputs of ``model`` on ``x`` as float64 rows that sum to one."""
    if model.training:  # eval() walks every submodule: measurable at batch 1, so only when needed
        model.eval()
    xt = to_tensor(x)
    device = next(model.parameters(), xt).device  # a model on a GPU (a scenario's device: cuda) reads its input there
    if device != xt.device:
        xt = xt.to(device)
    with torch_threads():
        out = [torch.softmax(model(chunk).double(), dim=1) for chunk in xt.split(batch_size)] or [
            torch.softmax(model(xt).double(), dim=1)]
    return torch.cat(out).cpu().numpy()
