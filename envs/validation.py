"""Validation of queries at the API boundary: a bad query is named precisely and never reaches the victim.

Two steps, so that the gate can refuse a request on its size before reading it:

1. :func:`count_queries` checks the structure (type, dtype, shape, batch size) without reading a value or copying
   anything, and returns the batch size. A zero-copy view of a billion rows costs nothing here.
2. :func:`validate_queries` returns a private copy of clean values (float32 images in range, non-empty
   Unicode text) or raises. Array subclasses (masked arrays, matrices, memory maps) are read as plain arrays first,
   so a mask cannot hide a NaN; and the sender can no longer change what the API keeps.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from extractgym.envs.errors import InvalidQuery
from extractgym.victims.base import InputSpec

MAX_BATCH = 10_000  # queries per request; more is refused before anything is read (a channel splits bigger batches)


def count_queries(x: Any, spec: InputSpec) -> int:
    """The number of queries in ``x``, after checking its structure only.

    Raises:
        InvalidQuery: naming the problem (type, dtype, shape, empty or oversized batch).
    """
    if spec.kind == "text":
        if isinstance(x, str):
            raise InvalidQuery("text queries must be a batch (a list of str), got a single str")
        if isinstance(x, np.ndarray):
            if x.ndim != 1:
                raise InvalidQuery(f"text queries must be a 1-d batch of str, got an array of shape {x.shape}")
            n = len(x)
        elif isinstance(x, list | tuple):
            n = len(x)
        else:
            raise InvalidQuery(f"text queries must be a list of str, got {type(x).__name__}")
    else:
        if not isinstance(x, np.ndarray):
            raise InvalidQuery(f"queries must be a numpy array of shape (batch, {', '.join(map(str, spec.shape))}), "
                               f"got {type(x).__name__}")
        if not np.issubdtype(x.dtype, np.floating):
            raise InvalidQuery(f"queries must have a floating dtype (float32 or float64), got {x.dtype}")
        if x.ndim != len(spec.shape) + 1 or tuple(x.shape[1:]) != tuple(spec.shape):
            raise InvalidQuery(f"queries must have shape (batch, {', '.join(map(str, spec.shape))}), got {tuple(x.shape)}")
        n = int(x.shape[0])
    if n == 0:
        raise InvalidQuery("empty batch: send at least one query")
    if n > MAX_BATCH:
        raise InvalidQuery(f"a request may carry at most {MAX_BATCH} queries, got {n}")
    return n


def validate_queries(x: Any, spec: InputSpec) -> np.ndarray:
    """Return ``x`` as a clean private batch (a float32 array for images, an object array of str for text).

    Raises:
        InvalidQuery: naming what is wrong (type, dtype, shape, NaN/inf, range, empty text).
    """
    count_queries(x, spec)
    return _validate_text(x, spec) if spec.kind == "text" else _validate_array(x, spec)


def _validate_array(x: np.ndarray, spec: InputSpec) -> np.ndarray:
    # a plain copy first: a masked array's mask would hide NaN from the checks below, and a view would let the
    # sender change the values after the API checked them
    arr = np.array(np.asarray(x), dtype=np.float32, copy=True, order="C")
    plain = np.asarray(x).reshape(len(arr), -1)
    finite = np.isfinite(plain)
    if not finite.all():
        bad = np.flatnonzero(~finite.all(axis=1))
        raise InvalidQuery(f"queries contain NaN or inf (rows {bad[:5].tolist()}{'...' if len(bad) > 5 else ''})")
    lo, hi = float(plain.min()), float(plain.max())
    if lo < spec.low - 1e-6 or hi > spec.high + 1e-6:
        raise InvalidQuery(f"query values must lie in [{spec.low}, {spec.high}], got range [{lo:.4g}, {hi:.4g}]")
    return arr  # private: the victim reads it without another copy (torch wraps only writable arrays)


def _validate_text(x: Any, spec: InputSpec) -> np.ndarray:
    items = x.tolist() if isinstance(x, np.ndarray) else list(x)
    for i, s in enumerate(items):
        if not isinstance(s, str):
            raise InvalidQuery(f"text query {i} is {type(s).__name__}, not str")
        if type(s) is not str:  # a subclass could say anything of itself (strip, len, encode): use its characters
            items[i] = s = str.__str__(s)
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
