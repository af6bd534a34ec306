"""Adaptive misinformation: answer out-of-distribution queries with a model trained to be wrong.

Kariyappa & Qureshi, "Defending Against Model Stealing Attacks with Adaptive Misinformation", CVPR 2020
(https://arxiv.org/abs/1911.07100), §4. Extraction attacks without the victim's training data send queries the
victim is unsure about (synthetic, adversarial or other-domain samples), while benign users mostly send
in-distribution ones. The defence scores each query with the victim's maximum softmax probability ``y_max`` (the
OOD baseline of Hendrycks & Gimpel, https://arxiv.org/abs/1610.02136) and serves

    y~ = (1 - alpha) y + alpha y^,    alpha = 1 / (1 + exp(nu (y_max - tau)))

where ``y^`` is the output of a *misinformation model*: a second classifier trained on the owner's data with the
reverse cross-entropy ``-log(1 - y^_true)`` (Eq. 6), so that it puts as little mass as it can on the correct class.
Confident (in-distribution) queries get ``alpha ~ 0`` and the true output; uncertain ones ``alpha ~ 1`` and
misinformation, which an attacker cannot tell from a real answer. ``nu`` sets how sharp the gate is (the authors'
code uses a near-step ``nu = 10^4``; we default to ``10^3``, still a step at the scale of probabilities).

The paper also fine-tunes the victim with outlier exposure to sharpen its confidence gap; here the victim is
given, so ``y_max`` is the victim's own. The misinformation model is trained on ``data``'s train split (once per
process, cached on disk like victims). Services whose queries it cannot read (another input shape or class count)
and calls without inputs are served untouched, as the stateful detectors treat services they do not watch; ``bind``
warns about such services.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.base import DefenderBase
from extractgym.agents.detection.owner_models import OwnerModel, accepts, dataset_spec, query_spec, trained_model
from extractgym.agents.refs import LabelledDefenderData
from extractgym.agents.registry import register_defender
from extractgym.envs.api import DefenderView
from extractgym.envs.protocols import Knob


def misinformation_weight(probs: np.ndarray, tau: float, nu: float) -> np.ndarray:
    """``alpha = sigmoid(nu (tau - y_max))`` per row, ``(B, 1)``."""
    z = nu * (tau - probs.max(axis=1, keepdims=True))
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # the logistic function without overflow warnings at large |z|


@register_defender("adaptive-misinformation")
class AdaptiveMisinformation(DefenderBase):
    """Knob ``tau``: the confidence threshold under which queries get misinformation (0 serves everything as it is).

    Args:
        tau: the preset threshold on the victim's maximum probability, in [0, 1].
        nu: the gate's sharpness, ``> 0``.
        data: the owner's dataset the misinformation model is trained on (its train split).
        misinformation_model: its architecture (``victims/models.py``), ``"auto"`` for the attackers' default.
        train_epochs: epochs of its training.
        seed: its initial weights and minibatch order.
    """

    def __init__(self, tau: float = 0.9, nu: float = 1000.0, data: LabelledDefenderData = "digits", misinformation_model: str = "auto",
                 train_epochs: int = 30, seed: int = 0) -> None:
        if not 0.0 <= tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1], got {tau}")
        if not math.isfinite(nu) or nu <= 0:
            raise ValueError(f"nu must be finite and > 0, got {nu}")
        if train_epochs < 1:
            raise ValueError(f"train_epochs must be >= 1, got {train_epochs}")
        self.spec, self.n_classes = dataset_spec(data)  # fails now on an unknown dataset, naming the known ones
        self.nu, self.data, self.arch, self.train_epochs, self.seed = float(nu), data, misinformation_model, \
            int(train_epochs), int(seed)
        self.knobs = (Knob.around("tau", (0.0, 0.5, 0.7, 0.9, 0.99), float(tau)),)

    @property
    def model(self) -> OwnerModel:
        """The misinformation model (trained on first use)."""
        return trained_model(self.data, self.arch, "reverse-cross-entropy", self.train_epochs, self.seed)

    def bind(self, view: DefenderView, rng: np.random.Generator) -> None:
        super().bind(view, rng)
        if view is None:
            return
        services = view.services()
        unread = [s for s in services if not accepts(self.spec, self.n_classes, view.input_spec(s), view.n_classes(s))]
        if unread:
            warnings.warn(f"adaptive-misinformation: its model (data {self.data!r}: {self.n_classes} classes, "
                          f"{self.spec.kind} {self.spec.shape}) cannot read the queries of service(s) "
                          f"{', '.join(unread)}; they are served untouched", stacklevel=2)
        if len(unread) < len(services):
            _ = self.model  # train (or load) it now, not on the first query

    def reads(self, x: Any, n_classes: int) -> bool:
        """Whether the misinformation model can answer queries ``x`` of a service with ``n_classes`` classes."""
        return accepts(self.spec, self.n_classes, query_spec(x), n_classes)

    def shape(self, probs: np.ndarray, account: Any, x: Any, knobs: Mapping[str, Any]) -> np.ndarray:
        tau = knobs["tau"]
        if x is None or not len(probs) or tau == 0 or not self.reads(x, probs.shape[1]):
            return probs
        alpha = misinformation_weight(probs, tau, self.nu)
        gated = alpha[:, 0] > 0
        if not gated.any():
            return probs
        out = np.array(probs, dtype=np.float64)
        out[gated] = (1.0 - alpha[gated]) * out[gated] + alpha[gated] * self.model.predict_proba(np.asarray(x)[gated])
        return out
