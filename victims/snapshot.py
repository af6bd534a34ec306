"""Surrogate snapshots: what an attacker hands the referee to be scored, instead of a callable.

The referee never calls contestant code on its held-out test inputs (that would show them to the contestant).
A body hands over a *snapshot* -- a model of a registered architecture (``victims/models.py``) with its weights,
or a TorchScript export -- and the referee rebuilds and evaluates it in its own code. The same format travels
over a pipe (isolated seats) and over HTTP (contest mode): :meth:`ModelSnapshot.to_bytes` is a safetensors file
whose metadata names the architecture, so loading it runs no pickled code.

Every snapshot is validated before it is used: a known architecture, plausible shapes, exactly the parameter
names and shapes the architecture has, finite float values. A bad one raises :class:`SnapshotError` naming the
problem.

The contract holds in-process too (:func:`accepted`): the referee scores only a :class:`ModelSnapshot` (whose
weights it copies into plain arrays and loads into the registered architecture it builds itself) or a
:class:`ScriptSnapshot` from trusted in-process code, never an arbitrary object with a ``build()`` method, and
a TorchScript model whose outputs are not one row of class scores per input is refused by name.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from extractgym.victims.models import ARCHITECTURES, build_model

FEATURIZERS = (None, "minilm")
MAX_INPUT_DIM = 1_000_000
MAX_PARAMETERS = 50_000_000
MAX_BYTES = 256 * 2**20


class SnapshotError(ValueError):
    """A snapshot that cannot be scored, with the reason."""


@dataclass(frozen=True)
class ModelSnapshot:
    """A surrogate of a registered architecture: its identity and a read-only copy of its weights.

    Attributes:
        arch: a key of :data:`extractgym.victims.models.ARCHITECTURES`.
        n_classes: classes it predicts.
        in_shape: shape of one model input (after the featurizer, for text).
        featurizer: ``None`` (images: the model reads the query) or ``"minilm"`` (text: the referee embeds the
            queries with its own copy of the public encoder).
        state: parameter and buffer arrays by name (read-only copies).
    """

    arch: str
    n_classes: int
    in_shape: tuple[int, ...]
    featurizer: str | None
    state: Mapping[str, np.ndarray] = field(repr=False)

    @classmethod
    def of(cls, model: nn.Module, arch: str, n_classes: int, in_shape: tuple[int, ...],
           featurizer: str | None = None) -> ModelSnapshot:
        """Snapshot ``model`` (its weights are copied: training it further changes nothing here)."""
        state = {}
        for k, v in model.state_dict().items():
            a = v.detach().cpu().numpy().copy()
            a.setflags(write=False)
            state[k] = a
        return cls(arch, int(n_classes), tuple(int(s) for s in in_shape), featurizer, state)

    # -- validation and rebuilding -----------------------------------------------------------------
    def check(self, n_classes: int | None = None) -> None:
        """Raise :class:`SnapshotError` unless the snapshot describes a model the referee can build."""
        if self.arch not in ARCHITECTURES:
            raise SnapshotError(f"unknown architecture {self.arch!r}; known: {', '.join(sorted(ARCHITECTURES))}")
        if self.featurizer not in FEATURIZERS:
            raise SnapshotError(f"unknown featurizer {self.featurizer!r}; known: none, minilm")
        if n_classes is not None and self.n_classes != n_classes:
            raise SnapshotError(f"the snapshot predicts {self.n_classes} classes; the victim has {n_classes}")
        if not 1 <= self.n_classes <= 100_000:
            raise SnapshotError(f"n_classes must be in [1, 100000], got {self.n_classes}")
        if not self.in_shape or any(s < 1 for s in self.in_shape) or math.prod(self.in_shape) > MAX_INPUT_DIM:
            raise SnapshotError(f"in_shape must be positive sizes of at most {MAX_INPUT_DIM} values, got {self.in_shape}")
        if sum(int(np.prod(a.shape)) for a in self.state.values()) > MAX_PARAMETERS:
            raise SnapshotError(f"the snapshot holds more than {MAX_PARAMETERS} parameters")

    def build(self, n_classes: int | None = None) -> nn.Module:
        """A fresh model with the snapshot's weights, in eval mode (validated first)."""
        self.check(n_classes)
        try:
            model = build_model(self.arch, self.n_classes, self.in_shape, seed=0)
        except Exception as e:  # an architecture that cannot take this shape
            raise SnapshotError(f"architecture {self.arch!r} cannot take inputs of shape {self.in_shape}: {e}") from None
        load_state(model, self.state)
        return model.eval()

    # -- bytes (pipes, HTTP) -----------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """A safetensors file; its metadata names the architecture, classes, input shape and featurizer."""
        from safetensors.numpy import save

        meta = {"arch": self.arch, "n_classes": str(self.n_classes), "in_shape": json.dumps(list(self.in_shape)),
                "featurizer": self.featurizer or ""}
        return save({k: np.ascontiguousarray(v) for k, v in self.state.items()}, metadata=meta)

    @classmethod
    def from_bytes(cls, data: bytes) -> ModelSnapshot:
        """Parse :meth:`to_bytes` output (or a safetensors file with the same metadata); never unpickles."""
        if len(data) > MAX_BYTES:
            raise SnapshotError(f"snapshot is {len(data)} bytes; the limit is {MAX_BYTES}")
        try:
            from safetensors.numpy import load

            meta = _metadata(bytes(data))
            arrays = load(bytes(data))
            shape = tuple(int(s) for s in json.loads(meta.get("in_shape", "[]")))
            snap = cls(str(meta.get("arch", "")), int(meta.get("n_classes", "0")), shape,
                       meta.get("featurizer") or None, {k: _read_only(v) for k, v in arrays.items()})
        except SnapshotError:
            raise
        except Exception as e:  # anything unparsable: name it, do not propagate a library's traceback
            raise SnapshotError(f"not a valid safetensors snapshot: {type(e).__name__}: {str(e)[:200]}") from None
        snap.check()
        return snap


@dataclass(frozen=True)
class ScriptSnapshot:
    """A TorchScript export (for architectures not in the registry): ``torch.jit.save`` bytes.

    TorchScript runs no Python from the file, only TorchScript ops; it is loaded with ``torch.jit.load``.
    """

    data: bytes = field(repr=False)
    n_classes: int
    featurizer: str | None = None

    @classmethod
    def of(cls, model: nn.Module, example: torch.Tensor, n_classes: int, featurizer: str | None = None) -> ScriptSnapshot:
        buf = io.BytesIO()
        torch.jit.save(torch.jit.trace(model.eval(), example), buf)
        return cls(buf.getvalue(), int(n_classes), featurizer)

    def check(self, n_classes: int | None = None) -> None:
        if type(self.data) is not bytes or type(self.n_classes) is not int:
            raise SnapshotError("a ScriptSnapshot holds bytes and an int number of classes")
        if self.featurizer not in FEATURIZERS:
            raise SnapshotError(f"unknown featurizer {self.featurizer!r}; known: none, minilm")
        if n_classes is not None and self.n_classes != n_classes:
            raise SnapshotError(f"the snapshot predicts {self.n_classes} classes; the victim has {n_classes}")
        if len(self.data) > MAX_BYTES:
            raise SnapshotError(f"snapshot is {len(self.data)} bytes; the limit is {MAX_BYTES}")

    def build(self, n_classes: int | None = None) -> nn.Module:
        self.check(n_classes)
        try:
            return torch.jit.load(io.BytesIO(self.data), map_location="cpu").eval()
        except Exception as e:
            raise SnapshotError(f"not a loadable TorchScript module: {type(e).__name__}: {str(e)[:200]}") from None


Snapshot = ModelSnapshot | ScriptSnapshot


def accepted(snapshot: Any) -> ModelSnapshot | ScriptSnapshot:
    """``snapshot`` as the referee may score it: exactly a :class:`ModelSnapshot` (its metadata and weights copied
    into plain Python values and ``numpy`` arrays, so nothing of a subclass or a lying mapping runs while it is
    scored) or exactly a :class:`ScriptSnapshot`; anything else raises :class:`SnapshotError` naming its type."""
    if type(snapshot) is ScriptSnapshot:
        return snapshot
    if type(snapshot) is not ModelSnapshot:
        raise SnapshotError(f"snapshot() must return a ModelSnapshot (a registered architecture and its weights) or a "
                            f"ScriptSnapshot, got {type(snapshot).__name__}")
    plain = (type(snapshot.arch) is str and type(snapshot.n_classes) is int and type(snapshot.in_shape) is tuple
             and all(type(d) is int for d in snapshot.in_shape) and snapshot.featurizer in FEATURIZERS
             and type(snapshot.state) is dict and all(type(k) is str and type(v) is np.ndarray
                                                      for k, v in snapshot.state.items()))
    if plain:
        return snapshot
    try:  # a copy through the data-only format: arrays and strings, whatever the objects were
        state = {str(k): np.array(v, copy=True) for k, v in dict(snapshot.state).items()}
        return ModelSnapshot.from_bytes(ModelSnapshot(str(snapshot.arch), int(snapshot.n_classes),
                                                      tuple(int(d) for d in snapshot.in_shape),
                                                      None if snapshot.featurizer is None else str(snapshot.featurizer),
                                                      state).to_bytes())
    except SnapshotError:
        raise
    except Exception as e:
        raise SnapshotError(f"the snapshot's fields are not plain data ({type(e).__name__}: {str(e)[:200]})") from None


def check_outputs(out: Any, n_rows: int, n_classes: int | None) -> np.ndarray:
    """A model's outputs on ``n_rows`` inputs as a float array ``(n_rows, n_classes)`` of finite values, or
    :class:`SnapshotError`."""
    if not isinstance(out, np.ndarray) or out.ndim != 2 or out.shape[0] != n_rows or (
            n_classes is not None and out.shape[1] != n_classes):
        shape = getattr(out, "shape", type(out).__name__)
        raise SnapshotError(f"the model's outputs have shape {tuple(shape) if isinstance(shape, tuple) else shape}; "
                            f"the referee needs ({n_rows}, {n_classes if n_classes is not None else 'classes'})")
    if not np.isfinite(out).all():
        raise SnapshotError("the model's outputs hold NaN or inf")
    return out


def check_fits(snap: ModelSnapshot, n_classes: int, spec: Any) -> None:
    """Raise :class:`SnapshotError` unless ``snap`` can be scored on a service with ``n_classes`` classes whose
    queries look like ``spec`` (an :class:`~extractgym.victims.base.InputSpec`): classes, input shape and featurizer
    match, and the model builds and reads one input."""
    snap.check(n_classes)
    if spec.kind == "text":
        if snap.featurizer != "minilm":
            raise SnapshotError(f"the service takes text: the snapshot must read MiniLM embeddings (featurizer "
                                f"'minilm'), got {snap.featurizer!r}")
        from extractgym.victims.text import get_encoder

        shape: tuple[int, ...] = (get_encoder().dim,)
    else:
        shape = tuple(spec.shape)
        if snap.featurizer is not None:
            raise SnapshotError(f"the service takes images of shape {shape}; the snapshot reads them through "
                                f"{snap.featurizer!r}")
    if tuple(snap.in_shape) != shape:
        raise SnapshotError(f"the snapshot reads inputs of shape {tuple(snap.in_shape)}; the service's "
                            f"{'embeddings' if spec.kind == 'text' else 'queries'} have shape {shape}")
    model = snap.build(n_classes)
    try:
        with torch.no_grad():
            out = model(torch.zeros((1, *shape))).numpy()
    except (RuntimeError, ValueError) as e:
        raise SnapshotError(f"the {snap.arch!r} model cannot read inputs of shape {shape}: {str(e)[:200]}") from None
    check_outputs(out, 1, n_classes)


def null_snapshot(n_classes: int, spec: Any) -> ModelSnapshot:
    """An untrained stand-in: a linear model with zero weights (every input gets class 0), what a seat that
    forfeited before handing over any snapshot is scored on."""
    if spec.kind == "text":
        from extractgym.victims.text import get_encoder

        shape, featurizer = (get_encoder().dim,), "minilm"
    else:
        shape, featurizer = tuple(spec.shape), None
    model = build_model("linear", n_classes, shape, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return ModelSnapshot.of(model, "linear", n_classes, shape, featurizer)


def load_state(model: nn.Module, state: Mapping[str, Any]) -> None:
    """Load ``state`` into ``model`` after checking names, shapes and values (no silent partial loads)."""
    model.load_state_dict(checked_state(model, state))


def checked_state(model: nn.Module, state: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``state`` as tensors for ``model`` after checking names, shapes and values (:class:`SnapshotError` if not)."""
    own = model.state_dict()
    check_arrays({name: (tuple(ref.shape), ref.is_floating_point()) for name, ref in own.items()}, state)
    return {name: torch.from_numpy(np.array(np.asarray(state[name]), dtype=_np_dtype(ref.dtype)))
            for name, ref in own.items()}


def check_arrays(expected: Mapping[str, tuple[tuple[int, ...], bool]], state: Mapping[str, Any]) -> None:
    """Raise :class:`SnapshotError` unless ``state`` holds exactly the arrays ``expected`` names, with their shapes,
    floating point and finite where expected (``{name: (shape, is_float)}``)."""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise SnapshotError(f"parameters do not match the architecture: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, (shape, is_float) in expected.items():
        a = np.asarray(state[name])
        if tuple(a.shape) != shape:
            raise SnapshotError(f"parameter {name!r} has shape {tuple(a.shape)}; the architecture needs {shape}")
        if is_float:
            if not np.issubdtype(a.dtype, np.floating):
                raise SnapshotError(f"parameter {name!r} must be floating point, got {a.dtype}")
            if not np.isfinite(a).all():
                raise SnapshotError(f"parameter {name!r} holds NaN or inf")


def _np_dtype(dtype: torch.dtype) -> Any:
    return torch.empty(0, dtype=dtype).numpy().dtype


def _read_only(a: np.ndarray) -> np.ndarray:
    a = np.array(a)
    a.setflags(write=False)
    return a


def _metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file: an 8-byte little-endian header length, then a JSON header."""
    if len(data) < 8:
        raise SnapshotError("not a safetensors file: too short")
    n = int.from_bytes(data[:8], "little")
    if n > min(len(data) - 8, 100 * 2**20):
        raise SnapshotError("not a safetensors file: bad header length")
    header = json.loads(data[8:8 + n])
    meta = header.get("__metadata__", {}) if isinstance(header, dict) else {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
