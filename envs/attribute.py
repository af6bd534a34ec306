"""Attribute inference from a stolen model's hidden representation (seed 002, Algorithm 1).

Lyu et al. / He et al., "Extracted BERT Model Leaks More Information than You Think!" (seed 002): after extracting
a BERT-based API, the attacker

1. feeds a little auxiliary data labelled with a private attribute ``s`` (the same domain as the victim's data, or
   another one) through the extracted model and collects its hidden representation ``h(x)``;
2. trains an inference model ``f`` (a feed-forward network and a binary classifier) on ``{(h(x), s)}``;
3. computes ``h`` of records it knows the victim was trained on and returns ``f(h(x))``.

The referee runs the three steps on each attacker's snapshot, rebuilt in its own code, at the end of an episode,
and reports the accuracy on the victim's training records (its "training authors") beside the paper's two
baselines: the majority value of the auxiliary labels, and the same inference model on the pretrained encoder
without fine-tuning (for text, the public sentence encoder every surrogate starts from). The paper reports
"empirical privacy", 1 - accuracy; here the accuracy itself (higher: more leakage).

``h`` is the snapshot's ``features`` block (every registered architecture has one: for the MLP head on MiniLM
sentence vectors, its hidden layer). The inference model is scikit-learn's ``MLPClassifier`` (one hidden layer of
64, the paper's "multi-layer feed forward network and a binary classifier") on standardised features, or
``LogisticRegression``; both seeded, so the figure is a function of the snapshot.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from extractgym.victims.training import to_tensor, torch_threads

CLASSIFIERS = ("mlp", "logistic")


@dataclass(frozen=True, eq=False)
class AuxSet:
    """Auxiliary records labelled with the attribute: the attacker's side information."""

    name: str
    x: Any
    s: np.ndarray


@dataclass(frozen=True, eq=False)
class AttributeTask:
    """What the referee needs for the test: the attribute, the victim's training records and their values, the
    auxiliary sets and the inference model's kind."""

    attribute: str
    x: Any
    s: np.ndarray
    aux: tuple[AuxSet, ...]
    classifier: str = "mlp"


@torch.no_grad()
def representation(model: nn.Module, feats: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """The model's hidden representation ``h`` of model inputs ``feats``: its ``features`` block (the inputs
    themselves for a model without one)."""
    block = getattr(model, "features", None)
    if block is None:
        return np.asarray(feats, dtype=np.float32).reshape(len(feats), -1)
    model.eval()
    xt = to_tensor(feats)
    with torch_threads():
        out = [block(chunk).reshape(len(chunk), -1) for chunk in xt.split(batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def inference_accuracy(h_aux: np.ndarray, s_aux: np.ndarray, h_eval: np.ndarray, s_eval: np.ndarray,
                       classifier: str = "mlp") -> float:
    """Algorithm 1, steps 2-3: train ``f`` on the auxiliary representations, its accuracy on the evaluation ones."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(s_aux)) < 2:
        return majority_accuracy(s_aux, s_eval)
    head = (MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-3, max_iter=500, random_state=0)
            if classifier == "mlp" else LogisticRegression(max_iter=2000))
    f = make_pipeline(StandardScaler(), head)
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        f.fit(h_aux, s_aux)
    return float((f.predict(h_eval) == s_eval).mean())


def majority_accuracy(s_aux: np.ndarray, s_eval: np.ndarray) -> float:
    """The majority baseline: predict the auxiliary labels' most common value for every record."""
    values, counts = np.unique(s_aux, return_counts=True)
    return float((s_eval == values[np.argmax(counts)]).mean())


def leakage(task: AttributeTask, encoder: Any, models: Sequence[tuple[nn.Module, Any]]) -> dict[str, dict[str, Any]]:
    """Per auxiliary set: the majority and un-fine-tuned-encoder baselines and each model's accuracy.

    ``encoder(x)`` gives the public encoder's representation of raw records (the sentence vectors every text
    surrogate starts from; the raw inputs for images), on which the encoder baseline runs the inference model;
    ``models`` pairs each model with the function that turns raw records into its inputs.
    """
    out: dict[str, dict[str, Any]] = {}
    e_eval = encoder(task.x)
    m_eval = [representation(m, embed(task.x)) for m, embed in models]
    for aux in task.aux:
        e_aux = encoder(aux.x)
        out[aux.name] = {
            "records": int(len(aux.s)),
            "majority": majority_accuracy(aux.s, task.s),
            "encoder": inference_accuracy(e_aux, aux.s, e_eval, task.s, task.classifier),
            "models": [inference_accuracy(representation(m, embed(aux.x)), aux.s, h_eval, task.s, task.classifier)
                       for (m, embed), h_eval in zip(models, m_eval, strict=True)],
        }
    return out
