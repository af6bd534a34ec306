"""Query blinding (seed 003 §VII-A, after Chen, Carlini & Wagner 2019): send ``t(x; r)`` instead of ``x``.

The attacker asks about ``x`` but sends a randomly transformed ``x' = t(x; r)``, so that a stateful detector
comparing queries sees less similarity; the answer for ``x'`` is used as the label of ``x`` (step 5 of
Algorithm 1 becomes ``Y_T <- F_V(t(X_T; r))``; the rest is unchanged).

Image transforms (batched, each sample its own random draw, outputs clipped to the service's input range
and of the input's shape): ``crop`` (zoom into a random window covering at least ``1 - r`` of each side, resized
back), ``brightness`` (add one ``U(-r, r)`` per image), ``scale`` (multiply pixel values by ``U(1 - r, 1 + r)``:
Chen et al.'s reference code calls it ``pixel_scale``), ``rotate`` (``U(-r, r)`` degrees), ``contrast`` (stretch
around the image mean by ``U(1 - r, 1 + r)``), ``uniform`` (per-pixel ``U(-r, r)`` noise), ``gaussian`` (per-pixel
``N(0, r^2)`` noise), ``translate`` (shift by ``U(-r, r)`` of the width and height, bilinear). Default ``r``:
Chen et al.'s published values where their reference code states one (brightness 0.18, scale 0.34,
contrast 0.77), otherwise values that keep an 8x8 digit recognisable (crop 0.2, rotate 15 degrees, uniform 0.1,
gaussian 0.05, translate 0.1); the ``blind_level`` knob multiplies ``r`` (0 sends the raw queries).
``autoencoder`` is the learned blinding function of :mod:`~extractgym.agents.tactics.autoencoder`.

Text transforms (the label-keeping analogues; no synonym dictionary ships offline, so no synonym swaps):
``word-dropout`` drops each word with probability ``r`` (default 0.15; at least one word kept), and
``clause-shuffle`` permutes the clauses between ``, ; :`` and reorders words inside each with probability ``r``
(default 0.3). Sentiment is carried mostly by which words occur, which both keep; both change the
sentence's surface, which is what a similarity detector on text would compare.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from extractgym.agents.refs import LabelledImages, split_of
from extractgym.agents.seats.channel import Stage
from extractgym.agents.tactics.base import register_tactic
from extractgym.envs.protocols import Knob
from extractgym.victims.base import InputSpec

IMAGE_DEFAULTS = {"crop": 0.2, "brightness": 0.18, "scale": 0.34, "rotate": 15.0, "contrast": 0.77,
                  "uniform": 0.1, "gaussian": 0.05, "translate": 0.1}
TEXT_DEFAULTS = {"word-dropout": 0.15, "clause-shuffle": 0.3}
TRANSFORMS = (*IMAGE_DEFAULTS, "autoencoder", *TEXT_DEFAULTS)
LEVELS = (0.0, 0.5, 1.0, 2.0)


def _affine(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Apply per-image 2x3 affine maps (normalised coordinates) with bilinear sampling, zeros outside."""
    xt = torch.from_numpy(np.array(x, dtype=np.float32))  # a writable copy
    grid = F.affine_grid(torch.from_numpy(theta.astype(np.float32)), list(xt.shape), align_corners=False)
    return F.grid_sample(xt, grid, mode="bilinear", padding_mode="zeros", align_corners=False).numpy()


def transform_images(x: np.ndarray, name: str, r: float, rng: np.random.Generator) -> np.ndarray:
    """``t(x; r)`` for a batch of images of shape ``(n, C, H, W)`` (not yet clipped)."""
    n = len(x)
    x = np.asarray(x, dtype=np.float32)
    u = lambda *shape: rng.uniform(-1.0, 1.0, size=shape)  # noqa: E731
    if name == "brightness":
        return x + (r * u(n)).reshape(n, 1, 1, 1)
    if name == "scale":
        return x * (1.0 + r * u(n)).reshape(n, 1, 1, 1)
    if name == "contrast":
        mean = x.mean(axis=(1, 2, 3), keepdims=True)
        return (x - mean) * (1.0 + r * u(n)).reshape(n, 1, 1, 1) + mean
    if name == "uniform":
        return x + r * u(*x.shape)
    if name == "gaussian":
        return x + rng.normal(0.0, r, size=x.shape)
    theta = np.zeros((n, 2, 3))
    if name == "rotate":
        a = np.deg2rad(r * u(n))
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = np.cos(a), -np.sin(a), np.sin(a), np.cos(a)
    elif name == "translate":
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, :, 2] = 2.0 * r * u(n, 2)  # normalised coordinates span 2 per side
    elif name == "crop":
        keep = 1.0 - min(r, 0.9) * rng.uniform(0.0, 1.0, size=n)  # share of each side kept
        theta[:, 0, 0] = theta[:, 1, 1] = keep
        theta[:, :, 2] = (1.0 - keep)[:, None] * u(n, 2)  # window anywhere inside the image
    else:
        raise ValueError(f"unknown image transform {name!r}; known: {', '.join(IMAGE_DEFAULTS)}")
    return _affine(x, theta)


_CLAUSE = re.compile(r"\s*[,;:]\s*")


def transform_texts(x: np.ndarray, name: str, r: float, rng: np.random.Generator) -> np.ndarray:
    out = np.empty(len(x), dtype=object)
    for i, text in enumerate(x):
        words = str(text).split()
        if not words:  # nothing to transform
            out[i] = str(text)
            continue
        if name == "word-dropout":
            keep = rng.random(len(words)) >= r
            if not keep.any():
                keep[rng.integers(len(words))] = True
            out[i] = " ".join(w for w, k in zip(words, keep, strict=True) if k)
        elif name == "clause-shuffle":
            clauses = [c for c in _CLAUSE.split(str(text)) if c.strip()] or [str(text)]
            clauses = [clauses[j] for j in rng.permutation(len(clauses))]
            parts = []
            for c in clauses:
                ws = c.split()
                if len(ws) > 1 and rng.random() < r:
                    ws = [ws[j] for j in rng.permutation(len(ws))]
                parts.append(" ".join(ws))
            out[i] = ", ".join(parts)
        else:
            raise ValueError(f"unknown text transform {name!r}; known: {', '.join(TEXT_DEFAULTS)}")
        if not out[i].strip():
            out[i] = str(text)
    return out


@register_tactic("blinding")
class Blinding(Stage):
    """Send randomly transformed queries (seed 003 §VII-A).

    Args:
        transform: one of ``crop, brightness, scale, rotate, contrast, uniform, gaussian, translate`` (images),
            ``autoencoder`` (images, learned), ``word-dropout, clause-shuffle`` (text).
        strength: ``r`` (default: the transform's, see the module docstring).
        data, split: the attacker's labelled data the ``autoencoder`` and its classifier train on.
        seed: the autoencoder's training seed.
    Knob ``blind_level``: multiplies ``r`` (0: send the raw queries).
    """

    stage = "blinding"

    def __init__(self, transform: str = "scale", strength: float | None = None, data: LabelledImages = "digits",
                 split: split_of("data") = "pool", seed: int = 0) -> None:
        if transform not in TRANSFORMS:
            raise ValueError(f"blinding: unknown transform {transform!r}; known: {', '.join(TRANSFORMS)}")
        default = {**IMAGE_DEFAULTS, **TEXT_DEFAULTS, "autoencoder": 0.095}[transform]
        r = default if strength is None else float(strength)
        if not np.isfinite(r) or r < 0:
            raise ValueError(f"blinding: strength must be finite and >= 0, got {strength}")
        if transform in TEXT_DEFAULTS and r > 1:
            raise ValueError(f"blinding: {transform} strength is a probability, got {r}")
        self.transform, self.strength, self.data, self.split, self.seed = transform, r, data, split, seed
        self.autoencoder: Any = None
        if transform == "autoencoder":
            from extractgym.agents.tactics.autoencoder import AutoencoderBlinding

            self.autoencoder = AutoencoderBlinding(data, split, r, seed)  # validates the data now
        self.knobs = (Knob.around("blind_level", LEVELS, 1.0),)
        self.sent = 0

    def bind(self, client: Any, rng: np.random.Generator) -> None:
        self.rng = rng
        self.sent = 0

    def fits(self, spec: InputSpec) -> tuple[str, str] | None:
        """``(parameter, why)`` this tactic cannot blind queries of ``spec``, or None: the schema asks before round 1."""
        text = self.transform in TEXT_DEFAULTS
        if text != (spec.kind == "text"):
            return "transform", (f"{self.transform!r} is for {'text' if text else 'images'}, but the target takes "
                                 f"{spec.kind} inputs")
        problem = self.autoencoder.fits(spec) if self.autoencoder is not None else None
        return ("data", problem) if problem is not None else None

    def prepare(self, x: Any, sent: Any, spec: InputSpec, knobs: Mapping[str, Any]) -> Any:
        """The channel's hook: blind what the earlier stages would send."""
        return self.apply(sent, spec, knobs)

    def apply(self, x: Any, spec: InputSpec, knobs: Mapping[str, Any]) -> Any:
        """The queries actually sent for ``x``, on a service whose queries look like ``spec``."""
        level = float(knobs["blind_level"])
        r = self.strength * level
        if r == 0 or len(x) == 0:
            return x
        problem = self.fits(spec)
        if problem is not None:
            raise ValueError(f"blinding: {problem[1]}")
        self.sent += len(x)
        if self.transform in TEXT_DEFAULTS:
            return transform_texts(np.asarray(x, dtype=object), self.transform, min(r, 1.0), self.rng)
        x = np.asarray(x, dtype=np.float32)
        if self.transform == "autoencoder":
            out = self.autoencoder(x, level, self.rng)
        else:
            out = transform_images(x, self.transform, r, self.rng)
        return np.clip(out, spec.low, spec.high).astype(np.float32).reshape(x.shape)

    def stats(self) -> dict[str, Any]:
        return {"blinded": self.sent}
