"""Contest mode: score a surrogate that an untrusted contestant submits over HTTP.

A contestant runs as its own process or machine and talks to the server only over HTTP: it buys answers at
``/v1/services/{name}/predict`` and submits its surrogate at ``POST /v1/submissions`` as the bytes of a
:class:`~extractgym.victims.snapshot.ModelSnapshot` (a safetensors file of a registered architecture; its
metadata names the architecture). The server validates the snapshot (known architecture, exactly the
architecture's parameter names and shapes, finite values), rebuilds the model with its own code and scores it
on the referee's hidden test set. No contestant code runs: safetensors holds only arrays and never unpickles,
and the architecture's code is the server's. TorchScript and ONNX are not accepted here (both carry a
program; ONNX would also need an ONNX runtime, which is not among the dependencies).
"""

from __future__ import annotations

import numpy as np

from extractgym.envs.referee import Referee
from extractgym.victims.snapshot import ModelSnapshot, SnapshotError, check_fits, check_outputs
from extractgym.victims.training import predict_proba
from extractgym.victims.zoo import get_featurizer


def score_snapshot(referee: Referee, service: str, data: bytes) -> tuple[ModelSnapshot, float, float]:
    """``(snapshot, accuracy, fidelity)`` of a submitted snapshot on ``service``'s held-out test set.

    Raises:
        SnapshotError: naming why the bytes are not a model the referee can score against this service.
    """
    snap = ModelSnapshot.from_bytes(data)
    victim = referee.api.services[service].victim
    try:
        check_fits(snap, victim.n_classes, victim.input_spec)
    except SnapshotError as e:
        raise SnapshotError(f"service {service!r}: {e}") from None
    model = snap.build(victim.n_classes)  # a fresh model: submissions are scored outside the server's lock
    x, y = referee.test_sets[service]
    featurize = get_featurizer(snap.featurizer)
    feats = featurize(x) if featurize is not None else np.asarray(x, dtype=np.float32)
    try:
        out = check_outputs(predict_proba(model, feats), len(y), victim.n_classes)
    except RuntimeError as e:  # e.g. an architecture that cannot take this input shape
        raise SnapshotError(f"the {snap.arch!r} model cannot read the service's inputs: {str(e)[:200]}") from None
    pred = out.argmax(axis=1)
    return snap, float((pred == y).mean()), float((pred == referee.victim_labels[service]).mean())
