"""Synthetic printed digits: a public, related, offline dataset to pretrain students on (seed 000, seed 004).

The SynthDigits idea of unsupervised domain adaptation (Ganin & Lempitsky, "Unsupervised Domain Adaptation by
Backpropagation", ICML 2015, https://arxiv.org/abs/1409.7495): digits rendered from fonts with random
transformations are a labelled source domain that belongs to nobody's API. Here the fonts are the text faces that
ship inside the ``matplotlib`` wheel (a dependency): DejaVu Sans / Sans Mono / Serif and STIX General in their
styles, and the Computer Modern text faces, 21 in all. Each sample is one digit in one font, drawn with a random
stroke width, rotation, shear and scale, cropped to its ink, padded to a square (aspect kept, as MNIST and
sklearn's digits do), area-resampled to 32x32 then to 8x8 (sklearn digits' 4x4 block counting) and stretched to a
peak of 1. Everything follows from the seed; the arrays are cached on disk, keyed by the font files, the library
versions that rasterise them and the recipe.

Why it exists: the digits victims' domain (sklearn digits) and an attacker's own domain (MNIST-8x8) are both
handwritten; a student pretrained on printed digits starts with useful features without ever seeing a label of
either domain, the stand-in for a pretrained BERT (seed 000) or an ImageNet backbone (seed 004's transfer
architectures).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

FONT_PREFIXES = ("DejaVuSans", "DejaVuSerif", "STIXGeneral")
FONT_FILES = ("cmb10.ttf", "cmr10.ttf", "cmss10.ttf", "cmti10.ttf", "cmtt10.ttf")
SAMPLES = 6000  # 600 per class


def font_paths() -> list[Path]:
    """The digit-capable text fonts shipped with matplotlib (the ``Display`` faces hold no digits)."""
    import matplotlib

    folder = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    names = sorted(f for f in os.listdir(folder) if f.endswith(".ttf") and "Display" not in f
                   and (f.startswith(FONT_PREFIXES) or f in FONT_FILES))
    if not names:
        raise FileNotFoundError(f"no digit fonts found in {folder} (matplotlib's fonts)")
    return [folder / n for n in names]


def fonts_fingerprint() -> str:
    """Identity of the fonts and the rasteriser (a different one draws different pixels)."""
    import PIL

    h = hashlib.sha256(PIL.__version__.encode())
    for p in font_paths():
        h.update(p.name.encode() + str(p.stat().st_size).encode())
    return h.hexdigest()[:16]


def render(n: int = SAMPLES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic 8x8 digits (float32 in [0, 1], shape ``(n, 8, 8)``) and their labels, balanced over classes."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    rng = np.random.default_rng(seed)
    fonts = [ImageFont.truetype(str(p), 40) for p in font_paths()]
    labels = np.arange(n, dtype=np.int64) % 10
    out = np.empty((n, 8, 8), dtype=np.float32)
    for i, digit in enumerate(labels):
        font = fonts[int(rng.integers(len(fonts)))]
        canvas = Image.new("L", (96, 96))
        ImageDraw.Draw(canvas).text((48, 48), str(digit), fill=255, font=font, anchor="mm",
                                    stroke_width=int(rng.integers(0, 4)), stroke_fill=255)
        shear, scale_x = rng.uniform(-0.25, 0.25), rng.uniform(0.75, 1.15)
        canvas = canvas.transform((96, 96), Image.Transform.AFFINE,
                                  (1.0 / scale_x, shear, 48 - 48 / scale_x - 48 * shear, 0, 1, 0),
                                  resample=Image.Resampling.BILINEAR)
        canvas = canvas.rotate(rng.uniform(-15, 15), resample=Image.Resampling.BILINEAR)
        box = canvas.getbbox()
        ink = canvas.crop(box) if box else canvas
        side = int(max(ink.size) * rng.uniform(1.0, 1.15)) + 1
        square = Image.new("L", (side, side))
        square.paste(ink, ((side - ink.size[0]) // 2, (side - ink.size[1]) // 2))
        square = square.filter(ImageFilter.GaussianBlur(rng.uniform(0.0, 1.5)))
        big = np.asarray(square.resize((32, 32), Image.Resampling.BOX), dtype=np.float32)
        small = big.reshape(8, 4, 8, 4).mean(axis=(1, 3))
        out[i] = small / max(float(small.max()), 1e-6)
    order = rng.permutation(n)
    return out[order], labels[order]
