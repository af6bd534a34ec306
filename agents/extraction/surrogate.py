"""The attacker's working model F_A: a transfer set and a classifier trained on it.

Uses the same training loop as the victims (:func:`extractgym.victims.training.train_classifier`).
Text surrogates embed queries with the attacker's own copy of the public all-MiniLM-L6-v2 encoder
(the pretrained starting point is public in the threat model of seed 001) and train a head on top.

The *cheap* setting (``surrogate: cheap``, or a scenario's ``surrogates: cheap``; :class:`CheapSurrogate`) trains a
narrower MLP with a shorter schedule in :mod:`extractgym.victims.ensemble`, whose fits the vector env batches over
its episodes. How it was chosen, and what it does to the game, is in docs/rl.md ("The vector env").
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from extractgym.victims import ensemble
from extractgym.victims.base import InputSpec
from extractgym.victims.models import build_model
from extractgym.victims.snapshot import ModelSnapshot, load_state
from extractgym.victims.training import TrainConfig, predict_proba, train_classifier
from extractgym.victims.zoo import get_featurizer

# The warm-start schedule pool-based attackers share: 30 minibatch steps of 128 per round at lr 3e-3. Same final
# accuracy on digits-basic as 60 steps of 64 at 2e-3 (0.955 vs 0.953 after 400 queries, 3 seeds) for two thirds
# of the env step time (29 vs 44 ms median on 2 idle cores); `benchmarks/bench_env_step.py` measures the step.
WARM_STEPS, WARM_BATCH, WARM_LR = 30, 128, 3e-3


def default_arch(spec: InputSpec) -> tuple[str, str | None]:
    """(architecture, featurizer) an attacker picks for a victim's input spec.

    For 8x8 digits the default is an MLP, not the victim's CNN: it reaches the same extraction accuracy in
    our runs (0.94-0.95 after 400 random queries, both) while training ~7x faster per round on 2 cores,
    which is what keeps an env step in milliseconds for RL. Set ``surrogate: digits-cnn`` to mirror the victim.
    """
    if spec.kind == "text":
        return "mlp", "minilm"
    if tuple(spec.shape[-2:]) == (8, 8):
        return "mlp", None
    if tuple(spec.shape[-2:]) == (28, 28):
        return "mnist-cnn", None
    return "mlp", None


class Surrogate:
    """A growing transfer set and the model trained on it.

    Args:
        spec: the victim's input spec (from the API's public service info).
        n_classes: number of classes.
        arch: architecture name, or ``"auto"`` (:func:`default_arch`).
        train: optimisation settings; with ``warm_start`` each :meth:`fit` runs ``train.steps`` minibatch steps
            from the current weights (flat cost per round); otherwise the model is re-initialised and trained for
            ``train.epochs`` epochs on the whole set (Algorithm 1 of seed 003, step 8).
        labels: ``"soft"`` trains on the returned probability vectors, ``"hard"`` on their arg-max.
        seed: initial weights and minibatch order derive from it.
    """

    def __init__(self, spec: InputSpec, n_classes: int, arch: str = "auto", train: TrainConfig = TrainConfig(steps=50),
                 warm_start: bool = True, labels: str = "soft", seed: int = 0) -> None:
        if labels not in ("soft", "hard"):
            raise ValueError(f"labels must be 'soft' or 'hard', got {labels!r}")
        auto_arch, featurizer = default_arch(spec)
        self.arch = auto_arch if arch == "auto" else arch
        self.featurizer = featurizer
        self.featurize = get_featurizer(featurizer)
        self.in_shape = (self.featurize.__self__.dim,) if featurizer == "minilm" else spec.shape  # encoder width
        self.n_classes, self.train, self.warm_start, self.labels, self.seed = n_classes, train, warm_start, labels, seed
        self.model = build_model(self.arch, n_classes, self.in_shape, seed)
        self.optimizer: torch.optim.Optimizer | None = None
        self._x: list[np.ndarray] = []
        self._y: list[np.ndarray] = []
        self.fits = 0

    def features(self, x: Any) -> np.ndarray:
        return self.featurize(x) if self.featurize is not None else np.asarray(x, dtype=np.float32)

    def add(self, x: Any, outputs: np.ndarray) -> None:
        if len(outputs):
            self._x.append(self.features(x))
            self._y.append(np.asarray(outputs, dtype=np.float32))

    def __len__(self) -> int:
        return sum(len(y) for y in self._y)

    def transfer_set(self) -> tuple[np.ndarray, np.ndarray]:
        x, y = np.concatenate(self._x), np.concatenate(self._y)
        if len(self._x) > 1:  # keep one array: concatenation is paid once, not every round
            self._x, self._y = [x], [y]
        return x, (y.argmax(axis=1) if self.labels == "hard" else y)

    def fit(self) -> None:
        """Train on the transfer set (no-op while it is empty)."""
        if not len(self):
            return
        x, y = self.transfer_set()
        self.fits += 1
        seed = self.seed + self.fits
        if self.warm_start:
            cfg = self.train if self.train.steps is not None else replace(self.train, steps=50)
            self.optimizer = train_classifier(self.model, x, y, cfg, seed=seed, optimizer=self.optimizer)
        else:
            self.model = build_model(self.arch, self.n_classes, self.in_shape, seed)
            train_classifier(self.model, x, y, replace(self.train, steps=None), seed=seed)

    def predict_proba(self, x: Any) -> np.ndarray:
        return predict_proba(self.model, self.features(x))

    def snapshot(self) -> ModelSnapshot:
        """The model as the referee scores it: its architecture and a copy of its weights."""
        return ModelSnapshot.of(self.model, self.arch, self.n_classes, self.in_shape, self.featurizer)


CHEAP = "cheap"


@dataclass(frozen=True)
class CheapRecipe:
    """The cheap setting: an MLP of ``hidden`` units (architecture ``arch``) trained ``steps`` Adam steps of ``batch``
    rows at ``lr`` per round, warm-started. About 1/12 of the default schedule's arithmetic (30 steps of 128 rows on
    128 hidden units): chosen by what it does to the game (docs/rl.md), not by speed alone."""

    arch: str = "mlp-32"
    hidden: int = 32
    steps: int = 20
    batch: int = 64
    lr: float = 1e-2

    @property
    def schedule(self) -> ensemble.Schedule:
        return ensemble.Schedule(self.steps, self.batch, self.lr)


CHEAP_RECIPE = CheapRecipe()
SURROGATE_SETTINGS = ("full", CHEAP)  # a scenario's ``surrogates:`` switch


def is_known_surrogate(arch: str) -> bool:
    """Whether ``arch`` names a surrogate a body may ask for: ``auto``, ``cheap`` or a registered architecture."""
    from extractgym.victims.models import ARCHITECTURES

    return arch in ("auto", CHEAP) or arch in ARCHITECTURES


def build_surrogate(spec: InputSpec, n_classes: int, arch: str = "auto", train: TrainConfig = TrainConfig(steps=50),
                    warm_start: bool = True, labels: str = "soft", seed: int = 0, device: str = "cpu") -> Surrogate:
    """A :class:`Surrogate`, or a :class:`CheapSurrogate` for ``arch="cheap"`` (which trains its own recipe's
    schedule, warm-started, instead of ``train``); ``device`` (``auto``, ``cpu``, ``cuda``) is where a cheap one
    lives (the others stay on CPU)."""
    if arch == CHEAP:
        return CheapSurrogate(spec, n_classes, labels, seed, device)
    return Surrogate(spec, n_classes, arch, train, warm_start, labels, seed)


class CheapSurrogate(Surrogate):
    """A surrogate of the cheap setting (:data:`CHEAP_RECIPE`): a member of :mod:`extractgym.victims.ensemble`.

    It keeps its own transfer set, parameters, Adam state and seed, exactly as :class:`Surrogate`; only the model is
    a flat parameter vector trained by the ensemble engine. While :func:`~extractgym.victims.ensemble.deferred_fits`
    is open (the vector env's round), :meth:`fit` queues the fit so that the K episodes' surrogates train as one
    batch; reading the model (:meth:`predict_proba`, :meth:`snapshot`, :attr:`model`) first trains what is queued.
    A fit's result is the same either way.
    """

    def __init__(self, spec: InputSpec, n_classes: int, labels: str = "soft", seed: int = 0, device: str = "cpu",
                 recipe: CheapRecipe = CHEAP_RECIPE) -> None:
        if labels not in ("soft", "hard"):
            raise ValueError(f"labels must be 'soft' or 'hard', got {labels!r}")
        auto_arch, featurizer = default_arch(spec)
        self.arch, self.recipe = recipe.arch, recipe
        self.featurizer = featurizer
        self.featurize = get_featurizer(featurizer)
        self.in_shape = (self.featurize.__self__.dim,) if featurizer == "minilm" else spec.shape
        in_dim = int(np.prod(self.in_shape))
        self.n_classes, self.labels, self.seed, self.warm_start = n_classes, labels, seed, True
        self.train = TrainConfig(steps=recipe.steps, batch_size=recipe.batch, lr=recipe.lr)
        self.device = ensemble.resolve_device(device)
        self.member = ensemble.Member.new(ensemble.SmallMLP(in_dim, recipe.hidden, n_classes), seed, self.device)
        self.optimizer = None
        self._x: list[np.ndarray] = []
        self._y: list[np.ndarray] = []
        self.fits = 0
        self._queue: ensemble.FitQueue | None = None
        self._module: torch.nn.Module | None = None

    def fit(self) -> None:
        """Queue (inside :func:`~extractgym.victims.ensemble.deferred_fits`) or run one round's training."""
        if not len(self):
            return
        x, y = self.transfer_set()
        self.fits += 1
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32).reshape(len(x), -1)).to(self.device)
        if y.ndim == 1:
            y = np.eye(self.n_classes, dtype=np.float32)[y]
        yt = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)).to(self.device)
        job = ensemble.Fit(self.member, xt, yt, seed=self.seed + self.fits)
        queue = ensemble.current_queue()
        if queue is None:
            ensemble.train([job], self.recipe.schedule)
            self.fitted()
        else:
            queue.add(job, self.recipe.schedule, self)
            self._queue = queue

    def fitted(self) -> None:
        """The queued fit has run (called by the queue)."""
        self._queue, self._module = None, None

    def _ready(self) -> None:
        if self._queue is not None:
            self._queue.flush()

    def predict_proba(self, x: Any) -> np.ndarray:
        self._ready()
        return self.member.proba(self.features(x))

    def snapshot(self) -> ModelSnapshot:
        self._ready()
        return ModelSnapshot(self.arch, self.n_classes, tuple(int(s) for s in self.in_shape), self.featurizer,
                             self.member.arch.state(self.member.params))

    @property
    def model(self) -> torch.nn.Module:
        """The surrogate as an ``nn.Module`` of architecture ``mlp-32`` (for bodies that differentiate through it,
        e.g. JBA's augmentation or DFAL's DeepFool), rebuilt after each fit."""
        self._ready()
        if self._module is None:
            self._module = build_model(self.arch, self.n_classes, self.in_shape, seed=0)
            load_state(self._module, self.member.arch.state(self.member.params))
            self._module.eval()
        return self._module
