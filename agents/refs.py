"""Typed references: a body's parameter declares what it names, so the scenario schema checks every one generically.

A constructor keyword annotated ``Annotated[str, Ref(...)]`` names a dataset, one of its splits, a service or a
victim. The schema (``scenarios/schema.py``) reads these annotations and checks the value -- whatever the
parameter is called -- before any episode: the name exists, a dataset's samples are valid queries for the seat's
target service (or for some service), it is labelled if it must be, a split exists, and no attacker's data is a
victim's held-out test split. Adding an attacker with a new data parameter is one file: annotate the parameter.

The aliases below cover the common cases::

    def __init__(self, pool: AttackerData = "digits", pool_split: Annotated[str, Ref("split", of="pool")] = "pool",
                 target: ServiceName | None = None): ...
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Annotated, Any

KINDS = ("dataset", "split", "service", "victim", "architecture")


@dataclass(frozen=True)
class Ref:
    """What a parameter refers to.

    Attributes:
        kind: ``dataset``, ``split``, ``service``, ``victim`` or ``architecture`` (a model architecture, or
            ``"auto"``, that must be able to read the seat's target's inputs).
        of: for a ``split``, the name of the parameter holding its dataset.
        fits: for a ``dataset``: ``"target"`` (its samples must be valid queries for the seat's target service),
            ``"any"`` (for at least one service) or ``None`` (no constraint).
        labelled: the dataset must carry labels.
        inputs: input kinds the dataset may have (``"image"``, ``"text"``).
        target: for a ``service``: this parameter names the seat's target (the service whose victim it is scored
            against and whose queries its data must fit). A single name wins over the first of a list; with none
            given, the target is the scenario's first service.
        public: for a ``dataset``: all of it is used (e.g. to pretrain on), so it may not be a victim's dataset,
            whose test split the referee holds.
    """

    kind: str
    of: str | None = None
    fits: str | None = None
    labelled: bool = False
    inputs: tuple[str, ...] = ("image", "text")
    target: bool = False
    public: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"Ref kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if (self.kind == "split") != (self.of is not None):
            raise ValueError("a split reference names the parameter of its dataset (of=...), and only a split does")
        if self.fits not in (None, "target", "any"):
            raise ValueError(f"fits must be None, 'target' or 'any', got {self.fits!r}")


AttackerData = Annotated[str, Ref("dataset", fits="target")]  # an attacker's own samples, sent to its target
DefenderData = Annotated[str, Ref("dataset", fits="any")]  # the owner's data, shaped like some service's queries
LabelledDefenderData = Annotated[str, Ref("dataset", fits="any", labelled=True)]  # trains the owner's models
ImageDefenderData = Annotated[str, Ref("dataset", fits="any", labelled=True, inputs=("image",))]
TextDefenderData = Annotated[str, Ref("dataset", fits="any", inputs=("text",))]
LabelledAttackerImages = Annotated[str, Ref("dataset", fits="target", labelled=True, inputs=("image",))]
LabelledImages = Annotated[str, Ref("dataset", labelled=True, inputs=("image",))]  # fit checked by its owner's fits()
# a public labelled dataset a student is pretrained on, used whole (never a victim's data)
PretrainData = Annotated[str, Ref("dataset", fits="target", labelled=True, public=True)]
Architecture = Annotated[str, Ref("architecture")]  # "auto" or a registered architecture that reads the target's inputs
ServiceName = Annotated[str, Ref("service")]
TargetService = Annotated[str, Ref("service", target=True)]


def split_of(dataset_param: str) -> Any:
    """The type of a parameter naming a split of the dataset in parameter ``dataset_param``."""
    return Annotated[str, Ref("split", of=dataset_param)]


def references(cls: Any, names: typing.Iterable[str] | None = None) -> dict[str, Ref]:
    """``{parameter: Ref}`` for the constructor keywords of ``cls`` annotated with a :class:`Ref` (also inside
    ``X | None`` and ``list[X]``)."""
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    out = {}
    for name, hint in hints.items():
        if names is not None and name not in names:
            continue
        ref = _find(hint)
        if ref is not None:
            out[name] = ref
    return out


def target_of(refs: dict[str, Ref], values: dict[str, Any], default: str) -> str:
    """The seat's target service from its parameter values (see :attr:`Ref.target`)."""
    named = [n for n, r in refs.items() if r.kind == "service" and r.target]
    for scalar in (True, False):
        for n in named:
            v = values.get(n)
            if scalar and isinstance(v, str):
                return v
            if not scalar and isinstance(v, list | tuple) and v and isinstance(v[0], str):
                return v[0]
    return default


def _find(hint: Any) -> Ref | None:
    if typing.get_origin(hint) is Annotated:
        for meta in hint.__metadata__:
            if isinstance(meta, Ref):
                return meta
    for arg in typing.get_args(hint):
        found = _find(arg)
        if found is not None:
            return found
    return None
