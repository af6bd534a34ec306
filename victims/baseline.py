"""The no-query baseline: the best a contestant scores from public data alone, without buying one answer.

A contest result means something only beside this figure. Three public-data strategies are scored on the
referee's test set, and the baseline is the best of them, per figure:

* ``packaged``: the victim as anyone rebuilds it from the package (its public name and seed). For a public task
  this *is* the served victim (fidelity 1.0: the contest measures nothing); for a secret task it is the same
  recipe drawn from the package's public stand-in key instead of the operator's secret.
* ``public-fit``: the victim's architecture and recipe trained on every labelled example of the task's public
  data (for ``digits``, all 1,797 sklearn digits, test split included; for ``digits-secret``, the same images with
  their public digit labels, since its own labels are secret).
* ``constant``: the most common public label, for every input.

:func:`threat_model` says in a sentence what a contestant can and cannot rebuild.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from extractgym.victims.cache import cache_dir, cache_key, cached_weights
from extractgym.victims.datasets import SECRET_DATASETS, get_dataset
from extractgym.victims.models import build_model
from extractgym.victims.training import predict_proba, train_classifier
from extractgym.victims.zoo import VICTIMS, build_victim, feature_shape, get_featurizer, load_victim


def public_data(victim: str) -> str:
    """The dataset a contestant has for ``victim``'s task (a secret task's public counterpart)."""
    dataset = VICTIMS[victim].dataset
    return get_dataset(dataset).public or dataset if dataset in SECRET_DATASETS else dataset


def _packaged(victim: str, seed: int) -> Any:
    spec = VICTIMS[victim]
    if spec.dataset in SECRET_DATASETS:
        from extractgym.victims.secret import PUBLIC_KEY

        return build_victim(spec, seed, name=f"{victim}-public", key=PUBLIC_KEY)
    return load_victim(victim, seed)


def _public_fit(victim: str, seed: int) -> tuple[Any, Any]:
    """The victim's architecture trained on all labelled public data of its task; ``(model, featurize)``."""
    spec = VICTIMS[victim]
    name = public_data(victim)
    ds = get_dataset(name)
    if not ds.labelled:
        return None, None
    x, y = ds.split("all")
    featurize = get_featurizer(spec.featurizer)
    model = build_model(spec.arch, ds.n_classes, feature_shape(spec, ds.spec), seed)
    key = cache_key(kind="public-fit", arch=spec.arch, train=repr(spec.train), featurizer=spec.featurizer, data=name,
                    n=len(y), seed=seed)

    def train(m: Any) -> None:
        train_classifier(m, featurize(x) if featurize is not None else x, y, spec.train, seed=seed)

    return cached_weights(cache_dir("baselines") / f"public-fit-{name}-{key}.pt", model, train).eval(), featurize


def no_query_baseline(victim: str, seed: int, x: Any, y: np.ndarray, victim_labels: np.ndarray) -> dict[str, Any]:
    """Accuracy (on labels ``y``) and fidelity (to ``victim_labels``) on the test inputs ``x`` of each public-data
    strategy, and the best of them per figure: ``{"accuracy", "fidelity", "strategies": {name: {...}}}``."""
    out: dict[str, dict[str, float]] = {}

    def score(pred: np.ndarray) -> dict[str, float]:
        return {"accuracy": float((pred == y).mean()), "fidelity": float((pred == victim_labels).mean())}

    out["packaged"] = score(_packaged(victim, seed).predict_proba(x).argmax(axis=1))
    model, featurize = _public_fit(victim, seed)
    if model is not None:
        feats = featurize(x) if featurize is not None else np.asarray(x, dtype=np.float32)
        out["public-fit"] = score(predict_proba(model, feats).argmax(axis=1))
    public = get_dataset(public_data(victim))
    if public.labelled:
        labels = np.concatenate([public.y_train, public.y_pool])
        out["constant"] = score(np.full(len(y), int(np.bincount(labels).argmax())))
    return {"accuracy": max(s["accuracy"] for s in out.values()), "fidelity": max(s["fidelity"] for s in out.values()),
            "strategies": out}


def threat_model(victim: str) -> str:
    """What a contestant facing ``victim`` can rebuild without a query, in one sentence."""
    spec = VICTIMS[victim]
    if spec.dataset in SECRET_DATASETS:
        from extractgym.victims.secret import secret_id, secret_key

        return (f"secret task ({spec.dataset}, secret {secret_id(secret_key())}): its labels, inputs' noise, split "
                f"and the victim's weights come from the operator's secret; a contestant has the public data "
                f"({public_data(victim)}) and the answers it buys, and scores only the no-query baseline without them")
    return (f"public task ({spec.dataset}): anyone with the package rebuilds this victim ({victim}) and reads its "
            f"data, test split included; only what a contestant scores above the no-query baseline measures "
            f"extraction, and a result near it measures nothing")
