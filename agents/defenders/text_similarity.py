"""Seed 003's similarity detector on text: similar pairs of MiniLM sentence embeddings, per account.

The image detector (:class:`~extractgym.agents.defenders.similarity.SimilarityDetector`) counts, per account, the
pairs of queries whose encodings lie closer than ``delta`` and bans at ``ban_pairs`` (50). For text queries the
encoding is the all-MiniLM-L6-v2 sentence embedding the text victims already compute (unit rows, 384 dims; the
shared :func:`~extractgym.victims.text.get_encoder` with its memory and disk caches, so the owner pays nothing
extra for queries its victim embeds anyway). Nothing is trained: sentence encoders are built to map paraphrases
close together, which is exactly what an attacker's text blinding (``word-dropout``, ``clause-shuffle``) produces,
and what extraction with few seed sentences and many variants of them (or RANDOM token sequences, seed 001, which
embed into one region) sends. ``delta`` is calibrated like every detector's, on per-account streams of the owner's
held-out text (:mod:`~extractgym.agents.detection.stateful`); the pair count, history and calibration are the image
detector's own code.
"""

from __future__ import annotations

import numpy as np

from extractgym.agents.defenders.similarity import SimilarityDetector
from extractgym.agents.refs import TextDefenderData
from extractgym.agents.registry import register_defender


@register_defender("text-similarity")
class TextSimilarityDetector(SimilarityDetector):
    """Similar-pair counting on MiniLM sentence embeddings (text services).

    Args:
        data: the owner's text dataset (its train split's held-out third tunes ``delta``).
        threshold: ``delta``, the embedding distance under which two queries are similar (unit rows: ``delta^2 / 2``
            is one minus their cosine); ``None`` calibrates.
        ban_pairs, target_fpr, max_history, tune_accounts, tune_queries, seed: as
            :class:`~extractgym.agents.defenders.similarity.SimilarityDetector`.
    Knob ``level``: multiplies ``delta`` (higher flags more).
    """

    data_kinds = ("text",)

    def __init__(self, data: TextDefenderData = "rotten-tomatoes", threshold: float | None = None, ban_pairs: int = 50,
                 target_fpr: float | None = None, max_history: int = 10_000, tune_accounts: int = 1000,
                 tune_queries: int = 150, seed: int = 0) -> None:
        super().__init__(data, threshold, ban_pairs, target_fpr=target_fpr, max_history=max_history,
                         tune_accounts=tune_accounts, tune_queries=tune_queries, seed=seed)
        self.embed_dim = 0  # the encoder's width, known once it is loaded (prepare)

    def params(self) -> tuple:
        return (self.data, self.target_fpr, self.max_history, self.tune_accounts, self.tune_queries, self.seed,
                self.ban_pairs)

    def prepare(self, service: str) -> None:
        if self.encoder is None:
            from extractgym.victims.text import get_encoder

            self.encoder = get_encoder()
            self.embed_dim = self.encoder.dim

    def encode(self, x: np.ndarray) -> np.ndarray:
        if self.encoder is None:
            self.prepare("")
        return np.asarray(self.encoder.encode(np.asarray(x, dtype=object)), dtype=np.float64)
