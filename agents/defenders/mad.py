"""MAD prediction poisoning: serve the output, within a utility budget, that turns the attacker's gradient furthest.

Orekondy, Schiele & Fritz, "Prediction Poisoning: Towards Defenses Against DNN Model Stealing Attacks", ICLR 2020
(https://arxiv.org/abs/1906.10908), §4. An attacker training its model ``F_A(x; w)`` on the served ``y~`` steps
along ``G^T y~`` with ``G = d log F_A(x; w) / dw`` (``K x D``, one row per class); MAD serves

    y~ = argmax  angle(G^T y~, G^T y)   over the simplex, subject to ||y~ - y||_p <= epsilon   (p = 1 or 2)

so that the attacker's update is turned away from the one the true output ``y`` would give. The defender does not
know ``w``: it computes ``G`` on a model it holds (``surrogate``), here by default **randomly initialised**, with the
architecture an attacker picks by default for the service's inputs (``agents/extraction/surrogate.py``; ``data:`` trains it on
one of the owner's datasets instead -- the paper reports both). We default to random initialisation because an
extraction attacker's model starts there and moves most in its first rounds, and because a surrogate trained to
agree with the victim has ``G^T y`` near zero (its own prediction is ``y``), where the angle is ill-conditioned.

Algorithm (the paper's heuristic solver, batched):

1. ``G`` for the whole batch in one vectorised autograd pass (``torch.func.vmap(jacrev(...))``), by default with
   respect to the surrogate's output layer weight, as in the paper's code (``grad_layer: all`` uses every
   parameter). Only the Gram matrices ``M = G G^T`` (``K x K`` per query) are kept: every objective below is a
   quadratic form in ``M``, so the search costs ``O(K^2)`` per candidate whatever ``D`` is.
2. Candidate targets ``y*``: the uniform distribution over each non-empty set of classes, i.e. the vertices of the
   simplex and the centres of its faces. The paper's MAD searches the ``K`` one-hot vertices only and MAD-argmax
   the sets containing the top class (``oracle: argmax``: the top class up-weighted by 1e-5 so that it stays the
   arg-max); we search all sets for MAD too, because the widest angle is often at a face centre: with a surrogate
   whose prediction ``p`` is near uniform and a confident ``y``, the served output that turns ``p - y`` furthest
   is near the uniform distribution over the *other* classes, which no one-hot vertex approaches (a one-hot-only
   search lost to random answers of the same L2 size in our tests). All ``2^K - 1`` (``2^(K-1)``) sets up to
   ``K = 10``, above that the paper's greedy growth of the set (``K`` steps of at most ``K`` candidates).
3. For each candidate the feasible point ``(1 - a) y + a y*`` with ``a = min(1, epsilon / ||y* - y||_p)`` (the paper's
   closed-form line search: on the simplex by convexity, inside the ball by construction), and the served output is
   the feasible point with the largest angle. The paper ranks vertices by the objective *at the vertex* and then
   line-searches; ranking the feasible points maximises the stated objective directly at no extra cost.

Without inputs (``x`` is None: direct calls on bare probabilities) ``G`` is the identity, the paper code's
``disable_jacobian`` mode: the angle is then taken in the output space.

Per-query cost: one surrogate forward plus ``K`` vector-Jacobian products of its output layer (vectorised over the
batch), a ``K x K`` Gram matrix, and ``2^K - 1`` (``2^(K-1)`` for argmax) candidate evaluations of ``O(K^2)`` each up
to ``K = 10``, ``~K^2`` greedy ones above. ``benchmarks/bench_perturbations.py`` prints the measured time per query
next to the victim's own forward.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jacrev, vmap

from extractgym.agents.base import DefenderBase
from extractgym.agents.detection.owner_models import (
    OwnerModel,
    dataset_spec,
    query_spec,
    trained_model,
    untrained_model,
)
from extractgym.agents.refs import LabelledDefenderData
from extractgym.agents.registry import register_defender
from extractgym.envs.api import DefenderView
from extractgym.envs.protocols import Knob
from extractgym.victims.training import torch_threads

TOP_WEIGHT = 1e-5  # up-weighting of the top class in MAD-argmax's targets, so that it stays the unique arg-max
EXHAUSTIVE_MAX_CLASSES = 10  # every candidate class set is searched up to here; above, one set is grown greedily


def log_softmax_jacobian(model: nn.Module, inputs: torch.Tensor, layer: str = "last") -> torch.Tensor:
    """``G`` per query, ``(batch, K, D)``: the Jacobian of ``log_softmax(model(x))`` with respect to the output layer's
    weight (``layer="last"``) or all parameters (``"all"``), in one vectorised autograd pass over the batch.

    For the output layer, one batched forward records that layer's inputs ``h``, then ``vmap(jacrev(...))``
    differentiates ``log_softmax(W h_i + b)`` with respect to ``W`` for every query at once. For all parameters each
    query needs its own backward through the network: ``vmap(jacrev(...))`` over ``functional_call``.
    """
    named = dict(model.named_parameters())
    with torch_threads():
        if layer == "last":
            out_layer = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
            seen: list[torch.Tensor] = []
            hook = out_layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
            try:
                with torch.no_grad():
                    model(inputs)
            finally:
                hook.remove()
            bias = None if out_layer.bias is None else out_layer.bias.detach()
            jac = vmap(jacrev(lambda w, h: torch.log_softmax(F.linear(h, w, bias), dim=0)), in_dims=(None, 0))(
                out_layer.weight.detach(), seen[-1])
            return jac.flatten(2)  # (B, K, K, H): query, class, weight
        fixed = {n: p.detach() for n, p in named.items()}

        def log_probs(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return torch.log_softmax(functional_call(model, params, (x[None],)), dim=1)[0]

        jac = vmap(jacrev(log_probs), in_dims=(None, 0))(fixed, inputs)
    return torch.cat([j.flatten(2) for j in jac.values()], dim=2)


def gram(model: OwnerModel, x: Any, layer: str = "last") -> np.ndarray:
    """``M = G G^T`` per query, ``(batch, K, K)`` float64."""
    g = log_softmax_jacobian(model.model, model.inputs(x), layer)
    with torch_threads():
        return torch.bmm(g, g.transpose(1, 2)).double().numpy()


@lru_cache(maxsize=16)
def class_set_targets(k: int) -> np.ndarray:
    """``(2^K - 1, K)``: the uniform distribution over every non-empty set of classes (the one-hot vertices first)."""
    sets = np.array(sorted(itertools.product([0.0, 1.0], repeat=k), key=lambda s: (sum(s), [-v for v in s]))[1:])
    out = sets / sets.sum(axis=1, keepdims=True)
    out.setflags(write=False)  # shared by every call (memoised)
    return out


@lru_cache(maxsize=16)
def argmax_targets(k: int) -> np.ndarray:
    """``(K, 2^(K-1), K)``: for each top class t, the targets over the sets containing t, t up-weighted (MAD-argmax)."""
    sets = np.array(list(itertools.product([0.0, 1.0], repeat=k - 1)))
    out = np.empty((k, len(sets), k))
    for t in range(k):
        rows = np.insert(sets, t, 1.0 + TOP_WEIGHT, axis=1)
        out[t] = rows / rows.sum(axis=1, keepdims=True)
    out.setflags(write=False)
    return out


def _set_targets(members: np.ndarray, top: np.ndarray | None) -> np.ndarray:
    """Uniform distributions over boolean class sets ``(B, V, K)``, with each row's top class up-weighted if given."""
    w = members.astype(np.float64)
    if top is not None:
        w[np.arange(len(w)), :, top] = 1.0 + TOP_WEIGHT
    return w / w.sum(axis=-1, keepdims=True)


class _Objective:
    """The cosine between the attacker's gradient at the feasible point toward each candidate target and at ``y``.

    With ``u(a) = G^T ((1 - a) y + a t)`` and ``v = G^T y`` everything is a quadratic form in ``M = G G^T``:
    ``u.v = (1 - a) yMy + a tMy`` and ``|u|^2 = (1 - a)^2 yMy + 2 a (1 - a) tMy + a^2 tMt``, so candidates shared by
    many queries cost a few matrix products, never a ``(batch, candidates, D)`` array. Lower cosine: wider angle.
    Computed with torch in float64 under the library's thread setting (numpy's multi-threaded BLAS took ~30 ms for
    these small products whenever other processes kept the cores busy).
    """

    def __init__(self, y: np.ndarray, m: np.ndarray | None, epsilon: float, ord_: int) -> None:
        self.y, self.eps, self.ord = torch.tensor(y, dtype=torch.float64), epsilon, ord_
        self.m = None if m is None else torch.tensor(m, dtype=torch.float64)
        self.my = self.y if self.m is None else (self.m @ self.y[:, :, None])[:, :, 0]  # M y
        self.ymy = (self.y * self.my).sum(-1)

    def shared(self, rows: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Targets ``(V, K)`` for the queries ``rows``: cosines ``(len(rows), V)``."""
        t, r = torch.tensor(targets), torch.from_numpy(rows)
        with torch_threads():
            tmy = self.my[r] @ t.T
            tmt = ((t * t).sum(-1)[None] if self.m is None
                   else self.m[r].flatten(1) @ (t[:, :, None] * t[:, None, :]).flatten(1).T)
            dist = torch.cdist(self.y[r], t, p=self.ord, compute_mode="donot_use_mm_for_euclid_dist")
            return self._cosines(self.ymy[r, None], tmy, tmt, dist)

    def per_row(self, targets: np.ndarray) -> np.ndarray:
        """Targets ``(B, V, K)``, one set per query: cosines ``(B, V)``."""
        t = torch.tensor(targets)
        with torch_threads():
            tmy = (t * self.my[:, None, :]).sum(-1)
            tmt = ((t if self.m is None else t @ self.m) * t).sum(-1)
            dist = torch.linalg.vector_norm(t - self.y[:, None], ord=self.ord, dim=-1)
            return self._cosines(self.ymy[:, None], tmy, tmt, dist)

    def _cosines(self, ymy: torch.Tensor, tmy: torch.Tensor, tmt: torch.Tensor, dist: torch.Tensor) -> np.ndarray:
        a = torch.clamp(self.eps / torch.where(dist > 0, dist, 1.0), max=1.0)
        uv = (1.0 - a) * ymy + a * tmy
        uu = torch.clamp((1.0 - a) ** 2 * ymy + 2 * a * (1.0 - a) * tmy + a * a * tmt, min=0.0)
        cos = uv / torch.sqrt(torch.clamp(uu * ymy, min=1e-300))
        # ties (symmetric rows) resolve to the first candidate however the batch was composed: rounding removes the
        # last-bit differences that matrix products of different shapes leave
        return torch.round(cos, decimals=12).numpy()


def _step(y: np.ndarray, t: np.ndarray, epsilon: float, ord_: int) -> np.ndarray:
    """``(1 - a) y + a t`` row by row with the largest ``a <= 1`` inside the budget: on the simplex, in the ball."""
    dist = np.linalg.norm(t - y, ord=ord_, axis=1)
    a = np.minimum(1.0, epsilon / np.where(dist > 0, dist, 1.0))[:, None]
    return (1.0 - a) * y + a * t


def mad(y: np.ndarray, m: np.ndarray | None, epsilon: float, ydist: str = "l1", oracle: str = "extreme") -> np.ndarray:
    """MAD's output for true outputs ``y`` ``(B, K)`` and Gram matrices ``m`` ``(B, K, K)`` (None: the identity)."""
    if epsilon == 0 or not len(y):
        return y
    b, k = y.shape
    ord_ = 1 if ydist == "l1" else 2
    objective = _Objective(y, m, epsilon, ord_)
    keep_top = oracle == "argmax"
    top = y.argmax(axis=1)
    chosen = np.empty_like(y)
    if k <= EXHAUSTIVE_MAX_CLASSES:
        groups = ([(np.flatnonzero(top == t), argmax_targets(k)[t]) for t in range(k)] if keep_top
                  else [(np.arange(b), class_set_targets(k))])
        for rows, targets in groups:  # MAD-argmax: the queries sharing a top class share their candidates
            if len(rows):
                chosen[rows] = targets[objective.shared(rows, targets).argmin(axis=1)]
        return _step(y, chosen, epsilon, ord_)
    # beyond 10 classes, the paper's greedy search: grow the class set one class at a time, keep the best target seen
    rows = np.arange(b)
    members = np.zeros((b, k), dtype=bool)
    if keep_top:
        members[rows, top] = True
    chosen[:], best = y, np.full(b, np.inf)
    for _ in range(k - int(keep_top)):
        targets = _set_targets(members[:, None, :] | np.eye(k, dtype=bool)[None], top if keep_top else None)
        cos = objective.per_row(targets)  # candidate j adds class j
        cos[members] = np.inf  # classes already in the set
        j = cos.argmin(axis=1)
        better = cos[rows, j] < best
        chosen[better], best[better] = targets[rows, j][better], cos[rows, j][better]
        members[rows, j] = True
    return _step(y, chosen, epsilon, ord_)


@register_defender("mad")
class MaxAngleDeviation(DefenderBase):
    """Knob ``epsilon``: the utility budget, the largest ``||y~ - y||_p`` served (0 serves the victim as it is).

    Args:
        epsilon: the preset budget (L1 distances on the simplex are at most 2, L2 at most sqrt 2).
        ydist: ``"l1"`` or ``"l2"``, the norm of the budget.
        oracle: ``"extreme"`` (MAD: any target; may change the top class) or ``"argmax"`` (MAD-argmax: keeps it).
        grad_layer: ``"last"`` (the output layer's weight, as the paper's code) or ``"all"`` parameters for ``G``.
        surrogate: the surrogate's architecture (``victims/models.py``), ``"auto"`` for an attacker's default.
        data: ``None`` for a randomly initialised surrogate, or the owner's dataset to train it on.
        train_epochs: epochs of that training.
        seed: the surrogate's initial weights.
    """

    pure_shape = True  # the surrogate standing in for the attacker's is fixed (trained or seeded once)

    def __init__(self, epsilon: float = 0.5, ydist: str = "l1", oracle: str = "extreme", grad_layer: str = "last",
                 surrogate: str = "auto", data: LabelledDefenderData | None = None, train_epochs: int = 20, seed: int = 0) -> None:
        if not math.isfinite(epsilon) or epsilon < 0:
            raise ValueError(f"epsilon must be finite and >= 0, got {epsilon}")
        for name, value, allowed in (("ydist", ydist, ("l1", "l2")), ("oracle", oracle, ("extreme", "argmax")),
                                     ("grad_layer", grad_layer, ("last", "all"))):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if train_epochs < 1:
            raise ValueError(f"train_epochs must be >= 1, got {train_epochs}")
        if data is not None:
            dataset_spec(data)  # fail now, naming the known datasets
        self.ydist, self.oracle, self.grad_layer = ydist, oracle, grad_layer
        self.arch, self.data, self.train_epochs, self.seed = surrogate, data, int(train_epochs), int(seed)
        self.knobs = (Knob.around("epsilon", (0.0, 0.1, 0.5, 1.0, 2.0), float(epsilon)),)

    def bind(self, view: DefenderView, rng: np.random.Generator) -> None:
        super().bind(view, rng)
        if view is None:
            return
        trained = self._trained()  # build (or train) the surrogates now, not on the first query
        for service in view.services():
            spec, k = view.input_spec(service), view.n_classes(service)
            if trained is None or not trained.accepts(spec, k):
                if trained is not None:
                    warnings.warn(f"mad: data {self.data!r} does not match service {service!r} ({k} classes, "
                                  f"{spec.kind} {spec.shape}); its queries get a randomly initialised surrogate",
                                  stacklevel=2)
                untrained_model(spec, k, self.arch, self.seed)

    def _trained(self) -> OwnerModel | None:
        return None if self.data is None else trained_model(self.data, self.arch, "cross-entropy", self.train_epochs,
                                                            self.seed)

    def surrogate_for(self, x: Any, n_classes: int) -> OwnerModel:
        """The model whose Jacobian stands in for the attacker's on queries ``x``."""
        spec, trained = query_spec(x), self._trained()
        if trained is not None and trained.accepts(spec, n_classes):
            return trained
        return untrained_model(spec, n_classes, self.arch, self.seed)

    def shape(self, probs: np.ndarray, account: Any, x: Any, knobs: Mapping[str, Any]) -> np.ndarray:
        epsilon = knobs["epsilon"]
        if epsilon == 0 or not len(probs):
            return probs
        m = None if x is None else gram(self.surrogate_for(x, probs.shape[1]), x, self.grad_layer)
        return mad(np.asarray(probs, dtype=np.float64), m, epsilon, self.ydist, self.oracle)
