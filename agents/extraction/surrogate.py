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
from extractgym.victims.datasets import get_dataset
from extractgym.victims.models import ARCH_FEATURIZERS, build_model
from extractgym.victims.snapshot import ModelSnapshot, load_state
from extractgym.victims.training import TrainConfig, predict_proba, train_classifier
from extractgym.victims.zoo import VictimSpec, feature_shape, get_featurizer, labelled_model

# The warm-start schedule pool-based attackers share: 30 minibatch steps of 128 per round at lr 3e-3. Same final
# accuracy on digits-basic as 60 steps of 64 at 2e-3 (0.955 vs 0.953 after 400 queries, 3 seeds) for two thirds
# of the env step time (29 vs 44 ms median on 2 idle cores); `benchmarks/bench_env_step.py` measures the step.
WARM_STEPS, WARM_BATCH, WARM_LR = 30, 128, 3e-3


def check_pretraining(pretrained: str | None, rehearse: float, arch: str = "auto") -> None:
    """An attacker constructor's check of its ``pretrained`` / ``rehearse`` parameters (names them); ``arch`` is its
    ``surrogate`` (the cheap setting trains its own recipe from scratch, so it cannot start from a checkpoint)."""
    if pretrained is not None and arch == CHEAP:
        raise ValueError("pretrained needs a full surrogate (not surrogate: cheap, which trains from scratch)")
    if not (rehearse >= 0 and np.isfinite(rehearse)):
        raise ValueError(f"rehearse must be a finite number >= 0, got {rehearse}")
    if rehearse and pretrained is None:
        raise ValueError("rehearse > 0 needs a pretrained dataset to rehearse (set pretrained)")
    if pretrained is not None:
        get_dataset(pretrained)  # an unknown name fails here, naming it


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
        pretrained: a public labelled dataset (e.g. ``synth-digits``) the model is trained on before any query, and
            restarts from when it is re-initialised (:func:`~extractgym.victims.zoo.labelled_model`: the same
            public checkpoint for everyone); ``None`` starts from random weights.
        rehearse: with ``pretrained``, every fit also trains on ``rehearse`` times as many of the pretraining
            samples (one-hot targets, drawn afresh each fit) as the transfer set holds: the public source domain
            stays in the mix while the student adapts to the attacker's domain (joint source + target training, so
            fine-tuning on a victim's mistakes does not wipe out what pretraining taught). 0: plain fine-tuning.
    """

    def __init__(self, spec: InputSpec, n_classes: int, arch: str = "auto", train: TrainConfig = TrainConfig(steps=50),
                 warm_start: bool = True, labels: str = "soft", seed: int = 0, pretrained: str | None = None,
                 rehearse: float = 0.0) -> None:
        if labels not in ("soft", "hard"):
            raise ValueError(f"labels must be 'soft' or 'hard', got {labels!r}")
        if not rehearse >= 0:
            raise ValueError(f"rehearse must be >= 0, got {rehearse}")
        if rehearse and pretrained is None:
            raise ValueError("rehearse needs a pretrained dataset to rehearse")
        auto_arch, featurizer = default_arch(spec)
        self.arch = auto_arch if arch == "auto" else arch
        if spec.kind == "text":  # a fine-tuned encoder reads word pieces, a head reads sentence vectors
            featurizer = ARCH_FEATURIZERS.get(self.arch, featurizer)
        self.featurizer = featurizer
        self.featurize = get_featurizer(featurizer)
        self.in_shape = feature_shape(VictimSpec("", self.arch, featurizer=featurizer), spec)
        self.n_classes, self.train, self.warm_start, self.labels, self.seed = n_classes, train, warm_start, labels, seed
        self.pretrained, self.rehearse = pretrained, float(rehearse)
        self._source: tuple[np.ndarray, np.ndarray] | None = None
        self.model = self._initial(seed)
        self.optimizer: torch.optim.Optimizer | None = None
        self._x: list[np.ndarray] = []
        self._y: list[np.ndarray] = []
        self.fits = 0

    def _initial(self, seed: int) -> torch.nn.Module:
        """Fresh weights: the public pretrained checkpoint, or random ones drawn from ``seed``."""
        if self.pretrained is None:
            return build_model(self.arch, self.n_classes, self.in_shape, seed)
        if get_dataset(self.pretrained).n_classes != self.n_classes:
            raise ValueError(f"pretrained dataset {self.pretrained!r} does not have the victim's {self.n_classes} classes")
        return labelled_model(self.arch, self.pretrained, featurizer=self.featurizer)

    def _rehearsal(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` pretraining samples (features, labels) drawn afresh for this fit."""
        if self._source is None:
            x, y = get_dataset(self.pretrained).split("all")
            self._source = (self.features(x), np.asarray(y))
        x, y = self._source
        idx = np.random.default_rng(seed).choice(len(y), size=min(n, len(y)), replace=False)
        return x[idx], y[idx]

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
        if self.rehearse:
            xs, ys = self._rehearsal(int(round(self.rehearse * len(y))), seed)
            x = np.concatenate([x, xs])
            y = np.concatenate([y, ys if y.ndim == 1 else np.eye(self.n_classes, dtype=np.float32)[ys]])
        if self.warm_start:
            cfg = self.train if self.train.steps is not None else replace(self.train, steps=50)
            self.optimizer = train_classifier(self.model, x, y, cfg, seed=seed, optimizer=self.optimizer)
        else:
            self.model = self._initial(seed)
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
                    warm_start: bool = True, labels: str = "soft", seed: int = 0, device: str = "cpu",
                    pretrained: str | None = None, rehearse: float = 0.0) -> Surrogate:
    """A :class:`Surrogate`, or a :class:`CheapSurrogate` for ``arch="cheap"`` (which trains its own recipe's
    schedule, warm-started, instead of ``train``); ``device`` (``auto``, ``cpu``, ``cuda``) is where a cheap one
    lives (the others stay on CPU). ``pretrained`` / ``rehearse``: see :class:`Surrogate` (not for a cheap one)."""
    if arch == CHEAP:
        if pretrained is not None:
            raise ValueError("pretrained needs a full surrogate: the cheap setting trains its own recipe from scratch")
        return CheapSurrogate(spec, n_classes, labels, seed, device)
    return Surrogate(spec, n_classes, arch, train, warm_start, labels, seed, pretrained=pretrained, rehearse=rehearse)


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
