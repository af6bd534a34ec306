"""Query filtering (seed 003 §VII-B): emulate the defender's detector locally and withhold what it would flag.

The attacker builds a substitute detector from its own data and, before each request, withholds the queries
the substitute finds suspicious; withheld queries are never sent and cost nothing (the body just gets no
answer for them). Two substitutes, one per stateful detector they target:

* ``similarity`` (against seed 003's similarity detector): a substitute similarity encoder ``E_sub`` trained
  exactly as the defender trains its own (classification, then the contrastive loss of Eq. 6;
  :func:`extractgym.agents.defenders.similarity.train_encoder`) but on the attacker's data, and a substitute
  radius ``delta_sub``. A query is withheld when its encoding lies within ``delta_sub`` of a query the account
  already sent (or of one kept earlier in the same batch): it would add a similar pair.
* ``prada`` (against PRADA, Juuti et al. 2019): in input space, a query is withheld when its minimum L2 distance
  to the account's earlier queries is below ``tau_sub``: those small-distance outliers are what pull the
  account's distance distribution away from normal and trip the Shapiro-Wilk test. PRADA measures the distance
  to earlier queries of the same (victim-predicted) class; a candidate's class is unknown before it is asked,
  and its distance to the nearest earlier query of any class bounds that from below, so the class-free rule is
  the conservative one (it never lets through a query PRADA would see as close).

Departures, both for a substitute whose encoder and radius only approximate the defender's: the
similarity substitute withholds any query that would form a single similar pair (the detector tolerates 49),
and the PRADA substitute screens single distances instead of re-running the Shapiro-Wilk test per candidate.
Seed 004 §VI-1's other evasion, choosing the perturbation margin M so that distances look natural, is a
body parameter (``eps`` / the ``eps_scale`` knob of the Jacobian attackers): ``benchmarks/bench_adaptive.py``
sweeps it against PRADA.

``threshold`` (``delta_sub`` / ``tau_sub``) defaults to the ``quantile`` of the same minimum distances in
natural streams of the attacker's data (the share of natural queries the filter would withhold), the
attacker-side analogue of the defender's calibration. Seed 003 trains its filter either on seed images from
the victim's training distribution or on another public dataset (CINIC-10 for a CIFAR-10 victim): pick
``data``/``split`` accordingly (e.g. ``digits``/``pool`` vs ``mnist8x8``/``pool`` for a digits victim).

Knob ``filter_level``: multiplies the threshold (0: filter nothing).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.detection.distances import flat, min_dists, pair_dists
from extractgym.agents.detection.history import History, tuning_streams
from extractgym.agents.refs import LabelledAttackerImages, split_of
from extractgym.agents.seats.channel import Stage
from extractgym.agents.tactics.base import register_tactic
from extractgym.envs.api import Account, Client, Response
from extractgym.envs.protocols import Knob
from extractgym.victims.datasets import get_dataset
from extractgym.victims.zoo import dataset_fingerprint

DETECTORS = ("similarity", "prada")
HISTORY_CAP = 50_000  # queries remembered per account (the defenders' caps are lower)
LEVELS = (0.0, 0.5, 1.0, 2.0)


@register_tactic("filter")
class QueryFilter(Stage):
    """Withhold the queries a substitute detector built from the attacker's own data would flag.

    Args:
        detector: ``similarity`` or ``prada`` (which substitute to build).
        data, split: the attacker's labelled image data the substitute trains and tunes on.
        threshold: ``delta_sub`` (similarity, encoder space) or ``tau_sub`` (prada, input space);
            ``None``: the ``quantile`` of natural minimum distances. 0 filters nothing.
        quantile: share of natural queries the tuned threshold withholds.
        embed_dim, margin: the substitute encoder's (as the defender's similarity detector).
        tune_accounts, tune_queries: natural streams used for tuning.
        seed: training and tuning seed.
    """

    stage = "filter"

    def __init__(self, detector: str = "similarity", data: LabelledAttackerImages = "digits", split: split_of("data") = "pool",
                 threshold: float | None = None, quantile: float = 0.05, embed_dim: int = 32,
                 margin: float = float(np.sqrt(10.0)), tune_accounts: int = 20, tune_queries: int = 100,
                 seed: int = 1) -> None:
        if detector not in DETECTORS:
            raise ValueError(f"filter: unknown detector {detector!r}; known: {', '.join(DETECTORS)}")
        if threshold is not None and (not np.isfinite(threshold) or threshold < 0):
            raise ValueError(f"filter: threshold must be finite and >= 0, or None, got {threshold}")
        if not 0.0 <= quantile < 1.0:
            raise ValueError(f"filter: quantile must be in [0, 1), got {quantile}")
        if tune_accounts < 1 or tune_queries < 2:
            raise ValueError(f"filter: tune_accounts must be >= 1 and tune_queries >= 2, got {tune_accounts}, {tune_queries}")
        ds = get_dataset(data)
        if ds.spec.kind != "image" or not ds.labelled:
            raise ValueError(f"filter: the substitute detector trains on a labelled image dataset; {data!r} is not one")
        self.x, self.y = ds.split(split)
        self.detector, self.data, self.split, self.seed = detector, data, split, seed
        self.quantile, self.embed_dim, self.margin = quantile, embed_dim, float(margin)
        self.tune_accounts, self.tune_queries = tune_accounts, tune_queries
        self.threshold = threshold
        self.encoder: Any = None
        self.knobs = (Knob.around("filter_level", LEVELS, 1.0),)

    # -- the substitute -----------------------------------------------------------------------------
    def embed(self, x: np.ndarray) -> np.ndarray:
        if self.detector == "prada":
            return flat(x)
        from extractgym.agents.detection.encoders import encode, trained_encoder

        if self.encoder is None:  # trained like the defender's, on the attacker's data (cached)
            self.encoder = trained_encoder("filter-similarity", self.x, self.y, self.seed, self.margin, self.embed_dim,
                                           data=dataset_fingerprint(self.data), split=self.split)
        return encode(self.encoder, x)

    def tune(self) -> float:
        """The ``quantile`` of each natural query's minimum distance to the earlier ones of its stream."""
        found = []
        for stream in tuning_streams(np.arange(len(self.x)), self.tune_accounts, self.tune_queries, self.seed):
            e = self.embed(self.x[stream])
            d = np.where(np.tri(len(e), k=-1, dtype=bool), pair_dists(e, e), np.inf).min(axis=1)
            found.append(d[np.isfinite(d)])
        d = np.concatenate(found)
        return float(np.quantile(d, self.quantile)) if len(d) else 0.0

    def fits(self, spec: Any) -> tuple[str | None, str] | None:
        """``(parameter, why)`` the substitute cannot read queries of ``spec``, or None: the schema asks first."""
        if spec.kind != "image":
            return None, f"needs an image target, which takes {spec.kind} inputs"
        if tuple(self.x.shape[1:]) != tuple(spec.shape):
            return "data", f"{self.data!r} images have shape {tuple(self.x.shape[1:])}; the target takes {tuple(spec.shape)}"
        return None

    def bind(self, client: Client, rng: np.random.Generator | None) -> None:
        self.radius = self.threshold if self.threshold is not None else self.tune()
        dim = self.embed_dim if self.detector == "similarity" else int(np.prod(self.x.shape[1:]))
        self.dim = dim
        self.seen: dict[str, History] = {}
        self.considered = self.filtered = 0

    # -- hooks ----------------------------------------------------------------------------------------
    def keep(self, account: Account, x: np.ndarray, knobs: Mapping[str, Any]) -> np.ndarray:
        n = len(x)
        self.considered += n
        radius = float(self.radius) * float(knobs["filter_level"])
        if radius <= 0 or n == 0:
            return np.ones(n, dtype=bool)
        e = self.embed(x)
        hist = self.seen.get(account.id)
        to_hist = min_dists(e, hist.rows, hist.sq_norms) if hist is not None else np.full(n, np.inf)
        within = pair_dists(e, e)
        keep = np.zeros(n, dtype=bool)
        for i in range(n):  # greedy, in order: a query is compared with the batch queries already kept
            earlier = keep[:i]
            d = min(to_hist[i], within[i, :i][earlier].min()) if earlier.any() else to_hist[i]
            keep[i] = d >= radius
        self.filtered += int(n - keep.sum())
        return keep

    def observe(self, account: Account, x: Any, response: Response) -> None:
        if response.banned:  # the account is gone: so is what the defender knew of it
            self.seen.pop(account.id, None)
            return
        if response.n_answered == 0:
            return
        hist = self.seen.get(account.id)
        if hist is None:
            hist = self.seen[account.id] = History(HISTORY_CAP, self.dim)
        hist.append(self.embed(np.asarray(x)[:response.n_answered]))

    def stats(self) -> dict[str, Any]:
        return {"filter_considered": self.considered, "filter_withheld": self.filtered,
                "filter_fraction": self.filtered / self.considered if self.considered else 0.0,
                "filter_threshold": float(self.radius)}
