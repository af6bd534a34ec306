"""Serve a user's own model as a victim: any torch classifier, or a Hugging Face text classifier.

>>> victim = from_torch_model(my_cnn, n_classes=10, input_spec=InputSpec("image", (1, 28, 28)))
>>> victim = from_huggingface("path/to/finetuned-sst2")          # local dir: works offline
>>> victim = from_huggingface("distilbert-base-uncased-finetuned-sst-2-english")  # hub id: needs network

Both return objects that satisfy :class:`~extractgym.victims.base.Victim`, so the prediction API can
serve them like the zoo's victims.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from extractgym.victims.base import InputSpec
from extractgym.victims.text import hub_offline
from extractgym.victims.zoo import TorchVictim

_DUMMY_TEXTS = ("A short sentence to check the model.", "Another one, slightly longer than the first.")


def _dummy_batch(spec: InputSpec) -> np.ndarray:
    """Two valid image queries: one at the middle of the value range, one spread over it."""
    n = int(np.prod(spec.shape))
    mid = np.full(n, (spec.low + spec.high) / 2.0)
    ramp = np.linspace(spec.low, spec.high, n) if n > 1 else mid
    return np.stack([mid, ramp]).reshape((2, *spec.shape)).astype(np.float32)


def _check_spec(input_spec: InputSpec) -> None:
    if not isinstance(input_spec, InputSpec):
        raise TypeError(f"input_spec must be an extractgym InputSpec, got {type(input_spec).__name__}")
    if input_spec.kind == "image":
        if not input_spec.shape or any(int(s) < 1 for s in input_spec.shape):
            raise ValueError(f"an image input_spec needs a positive shape such as (1, 28, 28), got {input_spec.shape}")
        if not input_spec.low < input_spec.high:
            raise ValueError(f"input_spec.low ({input_spec.low}) must be below input_spec.high ({input_spec.high})")
    elif input_spec.kind == "text":
        if input_spec.max_chars < 1:
            raise ValueError(f"input_spec.max_chars must be positive, got {input_spec.max_chars}")
    else:
        raise ValueError(f"input_spec.kind must be 'image' or 'text', got {input_spec.kind!r}")


def from_torch_model(model: nn.Module, n_classes: int, input_spec: InputSpec, name: str = "custom",
                     featurize: Callable[[Any], np.ndarray] | None = None, check: bool = True) -> TorchVictim:
    """Wrap a trained torch classifier as a victim.

    The model must map a float32 CPU batch (the queries, or ``featurize(queries)``) to *logits*
    ``(batch, n_classes)``; the victim answers with their softmax. The model is put in eval mode and its
    parameters are frozen in place.

    Args:
        model: the classifier, on CPU.
        n_classes: number of classes (>= 2); must equal the model's output width.
        input_spec: what a valid query looks like, e.g. ``InputSpec("image", (1, 28, 28))`` or
            ``InputSpec("text")``.
        name: display name.
        featurize: map from a batch of raw queries to the model's float inputs. Required for text
            (e.g. ``extractgym.victims.text.get_encoder().encode``); ``None`` feeds image arrays as they are.
        check: run the model on a two-query dummy batch built from ``input_spec`` to validate it.

    Returns:
        A :class:`~extractgym.victims.zoo.TorchVictim`.

    Raises:
        TypeError: ``model`` is not a ``torch.nn.Module`` or ``input_spec`` not an ``InputSpec``.
        ValueError: inconsistent arguments, or the model fails on / returns the wrong shape for the dummy batch.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(n_classes, bool) or not isinstance(n_classes, (int, np.integer)) or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    _check_spec(input_spec)
    if input_spec.kind == "text" and featurize is None:
        raise ValueError("a text victim needs featurize= to turn a list of str into float features, "
                         "e.g. featurize=extractgym.victims.text.get_encoder().encode")
    if featurize is not None and not callable(featurize):
        raise TypeError(f"featurize must be callable, got {type(featurize).__name__}")
    devices = {p.device.type for p in model.parameters()} | {b.device.type for b in model.buffers()}
    if devices - {"cpu"}:
        raise ValueError(f"the model has tensors on {sorted(devices - {'cpu'})}; victims run on CPU: pass model.cpu()")
    victim = TorchVictim(str(name), model, int(n_classes), input_spec, featurize)
    if check:
        _check_outputs(victim, input_spec)
    return victim


def _check_outputs(victim: TorchVictim, spec: InputSpec) -> None:
    queries: Any = list(_DUMMY_TEXTS) if spec.kind == "text" else _dummy_batch(spec)
    shape = f"{len(queries)} texts" if spec.kind == "text" else f"shape {tuple(queries.shape)}"
    try:
        feats = victim.features(queries)
        with torch.no_grad():
            out = victim.model(torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)))
    except Exception as exc:
        raise ValueError(f"model {victim.name!r} failed on a dummy batch ({shape}) built from input_spec "
                         f"{spec}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"model {victim.name!r} must return a logits tensor, got {type(out).__name__}")
    if out.ndim != 2 or out.shape[0] != len(queries):
        raise ValueError(f"model {victim.name!r} must return logits of shape (batch, n_classes); "
                         f"a dummy batch of {len(queries)} gave {tuple(out.shape)}")
    if out.shape[1] != victim.n_classes:
        raise ValueError(f"model {victim.name!r} outputs {out.shape[1]} logits per sample but "
                         f"n_classes={victim.n_classes}")
    if not torch.isfinite(out).all():
        raise ValueError(f"model {victim.name!r} returned non-finite logits on a dummy batch")
    if (out >= 0).all() and torch.allclose(out.sum(dim=1), torch.ones(len(out), dtype=out.dtype), atol=1e-4):
        warnings.warn(f"model {victim.name!r} seems to output probabilities; victims apply softmax to the "
                      "outputs, so pass the model without its final softmax", UserWarning, stacklevel=3)


def _looks_like_path(s: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else path-like is meant as a local directory."""
    return (s.startswith(("/", "./", "../", "~", ".\\")) or s.count("/") > 1 or "\\" in s
            or os.path.exists(os.path.expanduser(s)))


class HuggingFaceVictim:
    """A Hugging Face sequence-classification model as a text :class:`~extractgym.victims.base.Victim`.

    Args:
        name: display name.
        tokenizer: the model's tokenizer.
        model: an ``AutoModelForSequenceClassification`` model (put in eval mode, frozen).
        max_length: word pieces kept per text.
        batch_size: texts per forward pass.

    Attributes:
        n_classes: ``model.config.num_labels``.
        class_names: label names from ``model.config.id2label``.
        input_spec: ``InputSpec(kind="text")``.
    """

    def __init__(self, name: str, tokenizer: Any, model: Any, max_length: int = 128, batch_size: int = 64) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.n_classes = int(model.config.num_labels)
        id2label = getattr(model.config, "id2label", None) or {}
        self.class_names = tuple(str(id2label.get(i, id2label.get(str(i), i))) for i in range(self.n_classes))
        self.input_spec = InputSpec(kind="text")
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)

    def predict_proba(self, x: Iterable[str] | np.ndarray) -> np.ndarray:
        """Softmax probabilities ``(len(x), n_classes)``, float64 rows on the simplex.

        Args:
            x: a list, tuple or numpy object array of str (a bare str counts as one text).
        """
        texts = [x] if isinstance(x, str) else (x.ravel().tolist() if isinstance(x, np.ndarray) else list(x))
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"predict_proba() takes str items; item {i} is {type(t).__name__}")
        out = np.empty((len(texts), self.n_classes), dtype=np.float64)
        order = np.argsort([len(t) for t in texts], kind="stable")  # similar lengths together: less padding
        with torch.no_grad():
            for start in range(0, len(texts), self.batch_size):
                idx = order[start:start + self.batch_size]
                batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")
                logits = self.model(**batch).logits
                out[idx] = torch.softmax(logits.double(), dim=1).numpy()
        return out

    def __repr__(self) -> str:
        return f"HuggingFaceVictim({self.name!r}, classes={self.n_classes})"


def from_huggingface(model_id_or_path: str | os.PathLike[str], name: str | None = None,
                     num_labels: int | None = None, max_length: int = 128) -> HuggingFaceVictim:
    """A text-classification victim from ``AutoTokenizer`` + ``AutoModelForSequenceClassification``.

    A local directory is loaded with ``local_files_only=True`` (works offline). Anything else is a
    Hugging Face hub id and goes through the ordinary ``from_pretrained`` path, which needs network
    access or a warm hub cache. A checkpoint without a classification head (a bare encoder such as
    all-MiniLM-L6-v2) gets a new head of ``num_labels`` outputs, initialised from a fixed seed so the
    victim is reproducible (the global torch RNG is left as it was); such a victim is untrained.

    Args:
        model_id_or_path: hub id (``"org/name"``) or local model directory.
        name: display name; defaults to the id or the directory's name.
        num_labels: number of classes, passed to ``from_pretrained``; ``None`` keeps the checkpoint's.
        max_length: word pieces kept per text.

    Returns:
        A :class:`HuggingFaceVictim` (``n_classes`` from the model config).

    Raises:
        ValueError: bad arguments, or a model with fewer than two labels.
        OSError: the model or tokenizer could not be loaded (the message names the id; the cause is chained).
    """
    ident = os.fspath(model_id_or_path)
    if not ident or not ident.strip():
        raise ValueError("model_id_or_path must be a non-empty hub id or local directory")
    if num_labels is not None and (isinstance(num_labels, bool) or int(num_labels) != num_labels or num_labels < 2):
        raise ValueError(f"num_labels must be an integer >= 2, got {num_labels!r}")
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    path = Path(os.path.expanduser(ident))
    local = path.is_dir()
    if not local and _looks_like_path(ident):
        what = "is a file, not a model directory" if path.exists() else "does not exist"
        raise FileNotFoundError(f"local model directory {ident!r} {what}")
    source = str(path) if local else ident

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    kwargs: dict[str, Any] = {"local_files_only": True} if local else {}
    offline = hub_offline() if local else nullcontext()  # a local directory never asks the hub
    try:
        with offline:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except Exception as exc:
        raise OSError(f"could not load the tokenizer of {ident!r}{_hint(local)}: {exc}") from exc
    offline = hub_offline() if local else nullcontext()
    try:
        with offline, torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # a freshly initialised head is the same every time
            model = AutoModelForSequenceClassification.from_pretrained(
                source, **kwargs, **({"num_labels": int(num_labels)} if num_labels is not None else {}))
    except Exception as exc:
        raise OSError(f"could not load {ident!r} as a sequence-classification model{_hint(local)}: {exc}") from exc
    if int(model.config.num_labels) < 2:
        raise ValueError(f"{ident!r} has {model.config.num_labels} label(s) (a regression head?); "
                         "a victim must classify into at least two classes: pass num_labels")
    display = name if name is not None else (path.name if local else ident)
    return HuggingFaceVictim(display, tokenizer, model, max_length=max_length)


def _hint(local: bool) -> str:
    if local:
        return " (local directory)"
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    return " (hub id; offline mode is on: HF_HUB_OFFLINE=1)" if offline else " (hub id; needs network access)"
