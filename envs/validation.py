"""Validation of queries at the API boundary: a bad query is named precisely and never reaches the victim."""

from __future__ import annotations

from typing import Any

import numpy as np

from extractgym.envs.errors import InvalidQuery
from extractgym.victims.base import InputSpec


def validate_queries(x: Any, spec: InputSpec) -> np.ndarray:
    """Return ``x`` as a clean batch (float32 array for images, object array of str for text) or raise.

    Raises:
        InvalidQuery: naming what is wrong (type, dtype, shape, NaN/inf, range, empty text).
    """
    if spec.kind == "text":
        return _validate_text(x, spec)
    return _validate_array(x, spec)


def _validate_array(x: Any, spec: InputSpec) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise InvalidQuery(f"queries must be a numpy array of shape (batch, {', '.join(map(str, spec.shape))}), "
                           f"got {type(x).__name__}")
    if not np.issubdtype(x.dtype, np.floating):
        raise InvalidQuery(f"queries must have a floating dtype (float32 or float64), got {x.dtype}")
    if x.ndim != len(spec.shape) + 1 or tuple(x.shape[1:]) != tuple(spec.shape):
        raise InvalidQuery(f"queries must have shape (batch, {', '.join(map(str, spec.shape))}), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise InvalidQuery("empty batch: send at least one query")
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.argwhere(~finite.reshape(len(x), -1).all(axis=1)).ravel()
        raise InvalidQuery(f"queries contain NaN or inf (rows {bad[:5].tolist()}{'...' if len(bad) > 5 else ''})")
    lo, hi = float(x.min()), float(x.max())
    if lo < spec.low - 1e-6 or hi > spec.high + 1e-6:
        raise InvalidQuery(f"query values must lie in [{spec.low}, {spec.high}], got range [{lo:.4g}, {hi:.4g}]")
    return np.ascontiguousarray(x, dtype=np.float32)


def _validate_text(x: Any, spec: InputSpec) -> np.ndarray:
    if isinstance(x, str):
        raise InvalidQuery("text queries must be a batch (a list of str), got a single str")
    if isinstance(x, np.ndarray):
        if x.ndim != 1:
            raise InvalidQuery(f"text queries must be a 1-d batch of str, got an array of shape {x.shape}")
        items = x.tolist()
    elif isinstance(x, list | tuple):
        items = list(x)
    else:
        raise InvalidQuery(f"text queries must be a list of str, got {type(x).__name__}")
    if not items:
        raise InvalidQuery("empty batch: send at least one query")
    for i, s in enumerate(items):
        if not isinstance(s, str):
            raise InvalidQuery(f"text query {i} is {type(s).__name__}, not str")
        if not s.strip():
            raise InvalidQuery(f"text query {i} is empty")
        if len(s) > spec.max_chars:
            raise InvalidQuery(f"text query {i} has {len(s)} characters; the limit is {spec.max_chars}")
        try:
            s.encode("utf-8")
        except UnicodeEncodeError as e:
            raise InvalidQuery(f"text query {i} is not valid Unicode text ({e.reason} at position {e.start})") from None
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out
