"""The victim contract: what the prediction API needs from a model it serves.

A victim is anything with ``predict_proba`` on a batch, a number of classes and an
:class:`InputSpec` saying what a valid query looks like. The API validates queries
against the spec *before* calling the victim, so victims may assume clean input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class InputSpec:
    """What one query looks like.

    Attributes:
        kind: ``"image"`` (float arrays of ``shape`` in ``[low, high]``) or ``"text"`` (non-empty str).
        shape: shape of one sample, without the batch axis (``()`` for text).
        low: smallest allowed value (images).
        high: largest allowed value (images).
        max_chars: longest allowed text (text).
    """

    kind: str
    shape: tuple[int, ...] = ()
    low: float = 0.0
    high: float = 1.0
    max_chars: int = 5000

    @property
    def dim(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 0


@runtime_checkable
class Victim(Protocol):
    """A classifier served behind the prediction API."""

    name: str
    n_classes: int
    input_spec: InputSpec

    def predict_proba(self, x: Any) -> np.ndarray:
        """Class probabilities, shape ``(batch, n_classes)``, rows on the simplex.

        ``x`` is a float32 array ``(batch, *input_spec.shape)`` for images or a list of str for text.
        """
        ...
