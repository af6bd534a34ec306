"""SEAT: the similarity detector with an adversarially trained encoder (Zhang, Chen, Wagner, AISec 2021).

Zhang, Chen, Wagner, "SEAT: Similarity Encoder by Adversarial Training for Detecting Model Extraction Attack
Queries", AISec@CCS 2021 (https://doi.org/10.1145/3474369.3486863), by the authors of seed 003. The detector is
seed 003's similarity detector (:class:`~extractgym.agents.defenders.similarity.SimilarityDetector`: per account,
count the pairs of queries whose encodings lie closer than ``delta``; ban at ``ban_pairs``, 50), and only the
encoder differs: it is trained to map an image close to its random transformations (the transforms attackers blind
with) and to adversarial examples of the encoder itself (an L-inf PGD perturbation that pushes the encoding away),
and far from other images (:func:`~extractgym.agents.detection.encoders.train_encoder`). Blinding that moves a query far from
its source in the plain encoder's space stays close in SEAT's, so an adaptive attacker has to spread its queries over
more accounts: the paper reports the cost of extraction raised 3.8x to 16x (accounts needed), even against adaptive
attackers.

Departures: the encoder is the small MLP of the similarity detector (8x8 and 28x28 digits, trained in seconds),
PGD takes ``adversarial_steps`` steps (the authors' code: 20 of 0.01 within 0.1); everything else (the pair count,
``max_history``, calibration to a certified false-positive rate) is the similarity detector's, shared, not copied.
"""

from __future__ import annotations

import math

import numpy as np

from extractgym.agents.defenders.similarity import SimilarityDetector
from extractgym.agents.detection.encoders import trained_encoder
from extractgym.agents.refs import ImageDefenderData
from extractgym.agents.registry import register_defender
from extractgym.victims.zoo import dataset_fingerprint


@register_defender("seat")
class SeatDetector(SimilarityDetector):
    """Seed 003's pair counting on a SEAT encoder (augmentation- and adversarially-invariant).

    Args:
        adversarial_eps: L-inf radius of the encoder's adversarial positives (authors' code: 0.1; 0 disables them).
        adversarial_steps: PGD steps per batch.
        data, threshold, ban_pairs, margin, embed_dim, target_fpr, max_history, tune_accounts, tune_queries, seed:
            as :class:`~extractgym.agents.defenders.similarity.SimilarityDetector`.
    Knob ``level``: multiplies ``delta`` (higher flags more).
    """

    def __init__(self, data: ImageDefenderData = "digits", threshold: float | None = None, ban_pairs: int = 50,
                 margin: float = float(np.sqrt(10.0)), embed_dim: int = 32, adversarial_eps: float = 0.1,
                 adversarial_steps: int = 10, target_fpr: float | None = None, max_history: int = 10_000,
                 tune_accounts: int = 1000, tune_queries: int = 150, seed: int = 0) -> None:
        if not (math.isfinite(adversarial_eps) and 0.0 <= adversarial_eps <= 1.0):
            raise ValueError(f"adversarial_eps must be in [0, 1], got {adversarial_eps}")
        if adversarial_steps < 1:
            raise ValueError(f"adversarial_steps must be >= 1, got {adversarial_steps}")
        super().__init__(data, threshold, ban_pairs, margin, embed_dim, target_fpr, max_history, tune_accounts,
                         tune_queries, seed)
        self.adversarial_eps, self.adversarial_steps = float(adversarial_eps), adversarial_steps

    def params(self) -> tuple:
        return (*super().params(), self.adversarial_eps, self.adversarial_steps)

    def prepare(self, service: str) -> None:
        if self.encoder is None:
            training = {"positives": "augment", "adversarial_eps": self.adversarial_eps,
                        "adversarial_steps": self.adversarial_steps}
            self.encoder = trained_encoder("seat", self.x_train, self.y_train, self.seed, self.margin, self.embed_dim,
                                           training=training, data=dataset_fingerprint(self.data), fit="two-thirds")
