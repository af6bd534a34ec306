"""Contest mode: score a surrogate that an untrusted contestant submits over HTTP.

A contestant runs as its own process or machine and talks to the server only over HTTP: it buys answers at
``/v1/services/{name}/predict`` and submits its surrogate at ``POST /v1/submissions`` as the bytes of a
:class:`~extractgym.victims.snapshot.ModelSnapshot` (a safetensors file of a registered architecture; its
metadata names the architecture). The server validates the snapshot (known architecture, exactly the
architecture's parameter names and shapes, finite values), rebuilds the model with its own code and scores it
on the referee's hidden test set. No contestant code runs: safetensors holds only arrays and never unpickles,
and the architecture's code is the server's. TorchScript and ONNX are not accepted here (both carry a
program; ONNX would also need an ONNX runtime, which is not among the dependencies).

Every score comes back beside the **no-query baseline** (:mod:`extractgym.victims.baseline`: the best that the
packaged victim, a model fitted on all public data, or a constant scores on the same hidden test set) and the
**threat model** in a sentence. On a public task (``digits-cnn``) the baseline is ~1.0 and a contest measures
nothing; serve a secret task (``contest-digits``, victim ``digits-secret-cnn``: labels, input noise, split and
weights drawn from the operator's secret, :mod:`extractgym.victims.secret`) for a contest that does. The
secret's file is never served and never enters the books: only its public id does, in the books' fingerprint,
so a restart under another secret is refused instead of mixing two victims' books.
"""

from __future__ import annotations

from typing import Any

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


def secret_ids(scenario: Any) -> dict[str, str]:
    """``{"secret": id}`` when a service serves a secret task (what the server's fingerprint adds), else ``{}``."""
    from extractgym.victims.datasets import SECRET_DATASETS
    from extractgym.victims.secret import secret_id, secret_key
    from extractgym.victims.zoo import VICTIMS

    if any(VICTIMS[s.victim].dataset in SECRET_DATASETS for s in scenario.services if s.victim in VICTIMS):
        return {"secret": secret_id(secret_key())}
    return {}
