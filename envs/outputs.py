"""Operations on rows of class probabilities shared by the API's output formats and the defences."""

from __future__ import annotations

import numpy as np


def one_hot_top(probs: np.ndarray) -> np.ndarray:
    """Each row's arg-max as a one-hot vector."""
    out = np.zeros_like(probs)
    out[np.arange(len(probs)), probs.argmax(axis=1)] = 1.0
    return out


def top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """Keep each row's ``k`` largest entries, renormalised to sum to one (ties broken by lower index)."""
    k = min(int(k), probs.shape[1])
    if k == 1:
        return one_hot_top(probs)
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    rows = np.arange(len(probs))[:, None]
    out = np.zeros_like(probs)
    out[rows, top] = np.clip(probs[rows, top], 0.0, None)
    total = out.sum(axis=1, keepdims=True)
    fallback = np.zeros_like(probs)
    fallback[rows, top] = 1.0 / k  # only for rows whose top k are all zero, impossible on the simplex
    return np.where(total > 0, out / np.where(total > 0, total, 1.0), fallback)
