"""What a stolen model is worth: the referee's end-of-episode figures beyond accuracy and fidelity.

A scenario asks for them in its ``transfer:``, ``attribute_inference:`` and ``controls:`` sections (docs/stolen-models.md);
none of this runs in a round, only once when an episode ends, and only where the scenario asks. Work that is the
same in every episode of a process (the no-query baselines, what is crafted on them, the control models) is done
once per process.

* Transfer (:mod:`extractgym.envs.transfer`): each attack crafted on each attacker's snapshot and on its no-query
  baseline -- a model of the same architecture that spent no query: trained on the attacker's own data with the
  labels that data carries (``own-labels``), or left at its initial weights (``untrained``) -- and sent to the
  victim behind the API's defences. ``transfer_success`` by attack, each seat beside its baseline.
* Attribute inference (:mod:`extractgym.envs.attribute`): seed 002's Algorithm 1 on each snapshot, beside the
  majority and un-fine-tuned-encoder baselines, per auxiliary set.
* Controls: models the scenario names that were trained independently and never queried the API, snapshotted like
  surrogates so an ownership test (DAWN) can be checked both ways.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from extractgym.envs.attribute import AttributeTask, leakage
from extractgym.envs.transfer import TransferAttack, craft_images, craft_texts, success_rate, targets_for
from extractgym.victims.models import build_model
from extractgym.victims.snapshot import ModelSnapshot
from extractgym.victims.training import predict_proba
from extractgym.victims.zoo import get_featurizer, labelled_model

BASELINES = ("own-labels", "untrained")


@dataclass(frozen=True)
class TransferConfig:
    """A scenario's ``transfer:`` section, as the referee runs it."""

    attacks: tuple[TransferAttack, ...]
    inputs: int = 200
    baseline: str = "own-labels"


@dataclass(frozen=True)
class Control:
    """A model trained on ``dataset``'s own labels, independently of the API (never a query)."""

    name: str
    arch: str
    dataset: str
    split: str = "all"
    featurizer: str | None = None
    seed: int = 0


@dataclass(frozen=True)
class SeatModel:
    """What the referee knows of an attacker seat at the end: its snapshot, target and own data."""

    snapshot: Any
    target: str
    own_data: tuple[str, str] | None = None  # (dataset, split) of the seat's own samples


_CRAFTED: dict[tuple, Any] = {}  # (baseline, attack, inputs) -> adversarial inputs: the same in every episode
_CONTROLS: dict[Control, ModelSnapshot] = {}


def held_out(n_total: int, n: int) -> np.ndarray:
    """The test rows the transfer attacks use: the first ``n`` of a fixed permutation (seed 0)."""
    return np.random.default_rng(0).permutation(n_total)[:n]


def baseline_model(kind: str, snapshot: Any, own_data: tuple[str, str] | None) -> Any | None:
    """The no-query baseline of a seat (None where none can be built: a TorchScript snapshot, or ``own-labels`` for a
    seat without labelled data of its own, which validation rejects)."""
    if not isinstance(snapshot, ModelSnapshot):
        return None
    if kind == "untrained":
        return build_model(snapshot.arch, snapshot.n_classes, snapshot.in_shape, seed=0).eval()
    if own_data is None:
        return None
    dataset, split = own_data
    return labelled_model(snapshot.arch, dataset, split, featurizer=snapshot.featurizer)


def _craft(model: Any, featurizer: str | None, x: Any, attack: TransferAttack, labels: np.ndarray,
           low: float, high: float) -> Any:
    if featurizer is None:
        return craft_images(model, x, attack, labels, low, high)
    encode = get_featurizer(featurizer)
    return np.array(craft_texts(model, encode, encode.__self__, list(x), attack, labels), dtype=object)


def transfer_figures(referee: Any, config: TransferConfig, seats: dict[str, SeatModel]) -> dict[str, Any]:
    """``transfer_success`` of every attack for every seat and its no-query baseline (module docstring)."""
    out: dict[str, Any] = {"baseline": config.baseline, "attacks": {a.name: {"attackers": {}, "baselines": {},
                                                                              "inputs": {}} for a in config.attacks}}
    for seat, sm in seats.items():
        x_all, y_all = referee.test_sets[sm.target]
        rows = held_out(len(y_all), config.inputs)
        x, y = x_all[rows], y_all[rows]
        spec = referee.api.services[sm.target].victim.input_spec
        n_classes = referee.victim_probs[sm.target].shape[1]
        clean = referee.defended_labels(sm.target, x)
        targets = targets_for(y, n_classes)
        featurizer = sm.snapshot.featurizer
        models = {"attackers": sm.snapshot.build(),
                  "baselines": baseline_model(config.baseline, sm.snapshot, sm.own_data)}
        for attack in config.attacks:
            for role, model in models.items():
                if model is None:
                    out["attacks"][attack.name][role][seat] = None
                    continue
                if attack.targeted:
                    labels = targets
                else:  # the attacker does not know the truth: it moves away from its own model's label
                    feats = get_featurizer(featurizer)(x) if featurizer else x
                    labels = predict_proba(model, feats).argmax(axis=1)
                key = None
                if role == "baselines":
                    key = (config.baseline, sm.snapshot.arch, sm.snapshot.n_classes, sm.snapshot.in_shape, featurizer,
                           sm.own_data, attack, sm.target, config.inputs, len(y_all))
                adv = _CRAFTED.get(key) if key is not None else None
                if adv is None:
                    adv = _craft(model, featurizer, x, attack, labels, float(spec.low), float(spec.high))
                    if key is not None:
                        if len(_CRAFTED) > 256:
                            _CRAFTED.clear()
                        _CRAFTED[key] = adv
                rate, n = success_rate(referee.defended_labels(sm.target, adv), clean, y, attack, targets)
                out["attacks"][attack.name][role][seat] = rate
                out["attacks"][attack.name]["inputs"][seat] = n
    return out


def seat_transfer(figures: dict[str, Any], seat: str) -> tuple[float, float]:
    """A seat's mean success over the attacks, and its baseline's (NaN where there is none)."""
    rates = [a["attackers"].get(seat) for a in figures["attacks"].values()]
    bases = [a["baselines"].get(seat) for a in figures["attacks"].values()]
    return _mean(rates), _mean(bases)


def attribute_figures(task: AttributeTask, seats: dict[str, SeatModel]) -> dict[str, Any]:
    """``attribute_inference``: per auxiliary set, the baselines and every seat's accuracy on the victim's training
    records. The encoder baseline reads the public sentence encoder's vectors for text (what every text surrogate
    starts from), the raw inputs otherwise."""
    def inputs(featurizer: str | None) -> Any:
        fn = get_featurizer(featurizer)
        return fn if fn is not None else (lambda x: np.asarray(x, dtype=np.float32))

    text = bool(len(task.x)) and isinstance(task.x[0], str)
    names = list(seats)
    found = leakage(task, inputs("minilm" if text else None),
                    [(seats[s].snapshot.build(), inputs(seats[s].snapshot.featurizer)) for s in names])
    out: dict[str, Any] = {"attribute": task.attribute, "records": int(len(task.s)), "classifier": task.classifier,
                           "aux": {}}
    for aux, figures in found.items():
        out["aux"][aux] = {"records": figures["records"], "majority": figures["majority"],
                           "encoder": figures["encoder"], "attackers": dict(zip(names, figures["models"], strict=True))}
    return out


def seat_attribute(figures: dict[str, Any], seat: str) -> tuple[float, float]:
    """A seat's mean accuracy over the auxiliary sets, and the un-fine-tuned encoder's."""
    return (_mean([a["attackers"].get(seat) for a in figures["aux"].values()]),
            _mean([a["encoder"] for a in figures["aux"].values()]))


def control_snapshot(control: Control) -> ModelSnapshot:
    """The control model as a snapshot (trained once per process, cached on disk)."""
    snap = _CONTROLS.get(control)
    if snap is None:
        from extractgym.victims.datasets import get_dataset

        model = labelled_model(control.arch, control.dataset, control.split, control.featurizer, control.seed)
        in_shape = (get_featurizer(control.featurizer).__self__.dim,) if control.featurizer else \
            tuple(get_dataset(control.dataset).spec.shape)
        snap = _CONTROLS[control] = ModelSnapshot.of(model, control.arch, get_dataset(control.dataset).n_classes,
                                                     in_shape, control.featurizer)
    return snap


def _mean(values: list[Any]) -> float:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(vals)) if vals else float("nan")
