"""PIHA: reject queries whose perceptual image hash is close to a stored query's (Choi et al., a cheap baseline).

Choi, Kim, Kim, "PIHA: Detection Method Using Perceptual Image Hashing Against Query-Based Adversarial Attacks"
(Sensors 2023, https://doi.org/10.3390/s23063099), as the OARS authors reimplemented it (MIT,
``nmangaokar/ccs_23_oars_stateful_attacks``, ``models/statefuldefense.py``, class ``PIHA``; configs
``configs/cifar/piha/*``: ``block_size`` 7, ``threshold`` 0.05). Per query: Gaussian blur (3x3, sigma 1), the hue
channel of HSV, sums over ``block`` x ``block`` blocks, a local binary pattern of the block sums (8 neighbours,
radius 1); the hash is the vector of LBP codes, and the distance between two queries is the share of codes that
differ (a Hamming distance). A query is rejected when its distance to the nearest stored query (or an earlier one
of the batch) is at most ``1 - threshold``, i.e. its similarity ``1 - distance`` exceeds ``threshold``. Rejection,
bans, the ``scope`` knob and calibration: :mod:`~extractgym.agents.detection.rejecting`.

Departures:

* Grey-scale inputs (every shipped image dataset) have no hue: their single channel is used as it is.
* The LBP compares the 8 grid neighbours (zero outside the block grid), not skimage's circle of 8 bilinearly
  interpolated samples: the same code on the axes, a rounded one on the diagonals.
* ``block`` defaults to ``H // 8`` (4 on 32x32 where OARS uses 7, 3 on MNIST, 1 on 8x8 digits): on 8x8 digits
  blocks of 2 leave 16 codes, which natural digits share outright (99% of natural 100-query streams held an exact
  repeat of the hash), so the hash could not tell a copy from a different digit.
* The threshold is calibrated to a certified false-positive rate (``threshold: 0.95`` is OARS' 0.05 distance).

Cost: the scan compares a query's codes with every stored one (O(history), vectorised), as the paper's; memory is
one byte per code per stored query (``H * W / block^2`` bytes) plus 8 bytes for its exact-input digest.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from extractgym.agents.detection.rejecting import RejectingDetector
from extractgym.agents.refs import ImageDefenderData
from extractgym.agents.registry import register_defender

_NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1))


class CodeHistory:
    """A FIFO ring of at most ``cap`` rows of ``width`` uint8 codes (grows by doubling)."""

    def __init__(self, cap: int, width: int) -> None:
        self.cap, self.width = cap, width
        self._rows = np.zeros((min(cap, 64), width), dtype=np.uint8)
        self.n = 0

    def __len__(self) -> int:
        return min(self.n, self.cap)

    @property
    def rows(self) -> np.ndarray:
        return self._rows[:len(self)]

    def append(self, rows: np.ndarray) -> None:
        rows = rows[-self.cap:]
        m = len(rows)
        if len(self._rows) < min(self.cap, self.n + m):  # grow by doubling, up to cap (not yet wrapped)
            grown = np.zeros((min(self.cap, max(2 * len(self._rows), self.n + m)), self.width), dtype=np.uint8)
            grown[:self.n] = self._rows[:self.n]
            self._rows = grown
        self._rows[(self.n + np.arange(m)) % self.cap] = rows
        self.n += m

    @property
    def nbytes(self) -> int:
        return self._rows.nbytes


@register_defender("piha")
class Piha(RejectingDetector):
    """Perceptual image hashes (blur, hue, block sums, LBP); reject close ones, ban after ``ban_after``.

    Args:
        data: the owner's image dataset (sets the input size; its train split tunes ``threshold``).
        threshold: the share of equal codes above which a query is rejected; ``None`` calibrates it.
        block: block size of the sums (``None``: ``H // 8``, at least 1).
        sigma: the Gaussian blur's standard deviation (pixels; paper: 1).
        ban_after: rejections that ban an account.
        scope: preset of the ``scope`` knob: ``account`` or ``global`` (OARS' single cache). The preset is the
            account's own cache: PIHA's coarse hash makes natural digits of different customers match, so the global
            cache banned 10-20% of benign digit accounts in a 5-round game, and all of them once an attacker's scaled
            copies of natural digits filled it (``benchmarks/bench_defences_2022.py`` measures both).
        target_fpr, max_history, tune_accounts, tune_queries, seed: see :class:`~extractgym.agents.detection.stateful.StatefulDetector`.
    Knobs: ``level`` (multiplies ``threshold``: higher rejects less) and ``scope``.
    """

    def __init__(self, data: ImageDefenderData = "digits", threshold: float | None = None, block: int | None = None,
                 sigma: float = 1.0, ban_after: int = 10, scope: str = "account", target_fpr: float | None = None,
                 max_history: int = 20_000, tune_accounts: int = 1000, tune_queries: int = 150, seed: int = 0) -> None:
        if not (np.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
        super().__init__(data, threshold, ban_after, scope, target_fpr, max_history, tune_accounts, tune_queries, seed)
        shape = self.x_train.shape[1:]
        if len(shape) != 3:
            raise ValueError(f"piha reads images of shape (channels, height, width); {data!r} has {shape}")
        height, width = shape[1:]
        self.block = block if block is not None else max(1, height // 8)
        if not 1 <= self.block <= min(height, width):
            raise ValueError(f"block must be in [1, {min(height, width)}], got {block}")
        self.sigma = float(sigma)
        self.grid = (-(-height // self.block), -(-width // self.block))

    def params(self) -> tuple:
        return (*super().params(), self.block, self.sigma)

    def features(self, x: np.ndarray) -> np.ndarray:
        """The LBP codes of each query's block sums, ``(n, blocks)`` uint8."""
        x = np.asarray(x, dtype=np.float64)
        channel = _hue(x) if x.shape[1] == 3 else x[:, 0]
        if self.sigma > 0:
            channel = gaussian_filter(channel, sigma=(0, self.sigma, self.sigma), truncate=1.0 / self.sigma,
                                      mode="nearest")  # a 3x3 kernel
        n, h, w = channel.shape
        b = self.block
        padded = np.pad(channel, ((0, 0), (0, self.grid[0] * b - h), (0, self.grid[1] * b - w)))
        sums = padded.reshape(n, self.grid[0], b, self.grid[1], b).sum(axis=(2, 4))
        ring = np.pad(sums, ((0, 0), (1, 1), (1, 1)))
        codes = np.zeros(sums.shape, dtype=np.uint8)
        for bit, (dy, dx) in enumerate(_NEIGHBOURS):
            neighbour = ring[:, 1 + dy:1 + dy + sums.shape[1], 1 + dx:1 + dx + sums.shape[2]]
            codes |= (neighbour >= sums).astype(np.uint8) << bit
        return codes.reshape(n, -1)

    def new_store(self, service: str) -> CodeHistory:
        return CodeHistory(self.max_history, self.grid[0] * self.grid[1])

    def similarity(self, store: CodeHistory, feats: np.ndarray) -> np.ndarray:
        best = np.zeros(len(feats))
        rows = store.rows
        step = max(1, 4_000_000 // max(1, len(rows) * feats.shape[1]))
        for s in range(0, len(feats), step):  # equal codes against the whole store, in memory-bounded chunks
            if len(rows):
                best[s:s + step] = (feats[s:s + step, None, :] == rows[None]).mean(axis=2).max(axis=1)
        if len(feats) > 1:  # and against the batch's earlier queries
            same = (feats[:, None, :] == feats[None]).mean(axis=2)
            earlier = np.where(np.tri(len(feats), k=-1, dtype=bool), same, 0.0).max(axis=1)
            best = np.maximum(best, earlier)
        return best

    def store(self, store: CodeHistory, feats: np.ndarray) -> None:
        store.append(feats)


def _hue(x: np.ndarray) -> np.ndarray:
    """The HSV hue of RGB images ``(n, 3, H, W)`` in [0, 1], scaled to [0, 1] (0 where the pixel is grey)."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    top, low = x.max(axis=1), x.min(axis=1)
    span = np.where(top > low, top - low, 1.0)
    hue = np.where(top == r, (g - b) / span % 6.0, np.where(top == g, (b - r) / span + 2.0, (r - g) / span + 4.0))
    return np.where(top > low, hue / 6.0, 0.0)
