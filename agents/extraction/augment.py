"""Batched Jacobian-based augmentation steps on a torch model (seed 003 §III-A, Algorithm 2; seed 004).

Plain functions shared by the JBA attackers (``agents/attackers/jacobian.py``, ``feature_fool.py``) and meant
for reuse by detector-evasion attacks: each takes a model that maps a float32 batch ``(n, *shape)`` to logits,
works on the whole batch with one autograd call per step (never one per sample), leaves the model's weights
and their ``.grad`` untouched, and returns a new batch clipped to the input range ``[low, high]``.

Step sizes and radii are absolute (in input units); callers scale them by ``high - low``.

* :func:`jacobian_step` — Papernot et al. 2017, one signed step along ``grad_x log F(x)[label]``.
* :func:`targeted_linf` — targeted I-FGSM / L-inf PGD towards given classes (random start optional).
* :func:`cw_l2_targeted` — targeted Carlini-Wagner L2 with a per-sample binary search on its constant.
* :func:`boundary_search` — seed 003's JBA-BS line search between ``x_s`` and ``x_t``.
* :func:`feature_fool` — CloudLeak's FeatureFool: L2 closeness plus a triplet loss on penultimate features.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extractgym.victims.training import torch_threads


def _as_tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float32)
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _as_labels(y: np.ndarray | torch.Tensor) -> torch.Tensor:
    return y.long() if isinstance(y, torch.Tensor) else torch.from_numpy(np.asarray(y, dtype=np.int64))


def _grad(loss: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Gradient of ``loss`` w.r.t. ``x`` only (the weights get no ``.grad``)."""
    return torch.autograd.grad(loss, x)[0]


def _check_range(low: float, high: float) -> None:
    if not high > low:
        raise ValueError(f"input range needs high > low, got [{low}, {high}]")


def _norms(d: torch.Tensor) -> torch.Tensor:
    """Row L2 norms with a finite gradient at zero (``x' == x`` on the first step)."""
    return (d.flatten(1).pow(2).sum(dim=1) + 1e-12).sqrt()


def penultimate(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The feature map phi_k of the layer before the classifier (CloudLeak's ``k``-th layer).

    The architectures of :mod:`extractgym.victims.models` are ``head(features(x))``; a sequential head's last
    layer is the classifier, so phi is ``features`` followed by the head minus its last layer. Other models:
    the logits themselves.
    """
    feats, head = getattr(model, "features", None), getattr(model, "head", None)
    if feats is None or head is None:
        return model
    if isinstance(head, nn.Sequential) and len(head) > 1:
        return lambda x: head[:-1](feats(x))
    return feats


def jacobian_step(model: nn.Module, x: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, step: float,
                  low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Papernot et al.'s augmentation ``x + step * sign(grad_x F(x)[label])``, clipped to ``[low, high]``.

    ``sign(grad p_y) == sign(grad log p_y)`` (``p_y > 0``), so the log-softmax is used for stability. A positive
    ``step`` moves towards the label's region (Papernot's JBDA); a negative one away from it (an FGSM step).
    """
    _check_range(low, high)
    x0 = _as_tensor(x)
    y = _as_labels(labels)
    if len(x0) == 0:
        return x0.clone()
    with torch_threads(), torch.enable_grad():
        xv = x0.clone().requires_grad_(True)
        logp = F.log_softmax(model(xv), dim=1)
        g = _grad(logp.gather(1, y[:, None]).sum(), xv)
    return (x0 + step * g.sign()).clamp(low, high)


def targeted_linf(model: nn.Module, x: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor, eps: float,
                  alpha: float, steps: int, low: float = 0.0, high: float = 1.0, random_start: bool = False,
                  objective: str = "ce", generator: torch.Generator | None = None) -> torch.Tensor:
    """Targeted L-inf attack: ``steps`` signed steps of size ``alpha`` that raise each row's target class,
    projected onto the ``eps`` ball around ``x`` and onto ``[low, high]``.

    ``objective="ce"`` minimises the cross-entropy to the target (Madry et al.'s targeted PGD, with
    ``random_start``); ``"logit"`` maximises the target's logit, as the I-FGSM of the JB-top-k reference
    implementation (seed 003 footnote 1) does.
    """
    _check_range(low, high)
    if eps < 0 or alpha < 0 or steps < 0:
        raise ValueError(f"eps, alpha and steps must be >= 0, got {eps}, {alpha}, {steps}")
    if objective not in ("ce", "logit"):
        raise ValueError(f"objective must be 'ce' or 'logit', got {objective!r}")
    x0 = _as_tensor(x)
    t = _as_labels(targets)
    if len(x0) == 0 or eps == 0 or steps == 0:
        return x0.clone()
    xa = x0.clone()
    if random_start:
        noise = torch.rand(x0.shape, generator=generator, dtype=torch.float32)
        xa = (x0 + (2 * noise - 1) * eps).clamp(low, high)
    with torch_threads(), torch.enable_grad():
        for _ in range(steps):
            xv = xa.requires_grad_(True)
            logits = model(xv)
            if objective == "ce":
                gain = -F.cross_entropy(logits, t, reduction="sum")
            else:
                gain = logits.gather(1, t[:, None]).sum()
            g = _grad(gain, xv)
            xa = xa.detach() + alpha * g.sign()
            xa = torch.max(torch.min(xa, x0 + eps), x0 - eps).clamp(low, high)
    return xa.detach()


def cw_l2_targeted(model: nn.Module, x: np.ndarray | torch.Tensor, targets: np.ndarray | torch.Tensor,
                   steps: int = 150, binary_steps: int = 5, const: float = 1e-3, lr: float = 1e-2,
                   confidence: float = 0.0, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """Targeted Carlini-Wagner L2 (https://arxiv.org/abs/1608.04644) on a batch, Foolbox 3's defaults.

    Optimises ``||x' - x||^2 + c * max(max_{j != t} Z_j - Z_t + confidence, 0)`` over ``x' = box(tanh(w))`` with
    Adam, and binary-searches ``c`` per row (x10 until the first success). Returns, per row, the smallest-L2
    adversarial found; rows never made adversarial keep the last iterate (which stays close to ``x``).
    """
    _check_range(low, high)
    if steps < 1 or binary_steps < 1 or const <= 0 or lr <= 0:
        raise ValueError("cw_l2_targeted needs steps >= 1, binary_steps >= 1, const > 0 and lr > 0")
    x0 = _as_tensor(x)
    t = _as_labels(targets)
    n = len(x0)
    if n == 0:
        return x0.clone()
    span = high - low
    w0 = torch.atanh(((x0 - low) / span * 2 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
    c = torch.full((n,), float(const))
    lower, upper = torch.zeros(n), torch.full((n,), float("inf"))
    best, best_l2 = None, torch.full((n,), float("inf"))
    last = x0.clone()
    with torch_threads(), torch.no_grad():
        onehot = F.one_hot(t, num_classes=model(x0[:1]).shape[1]).bool()
    with torch_threads(), torch.enable_grad():
        for _ in range(binary_steps):
            w = w0.clone().requires_grad_(True)
            opt = torch.optim.Adam([w], lr=lr)
            found = torch.zeros(n, dtype=torch.bool)
            for _ in range(steps):
                xa = (torch.tanh(w) + 1) / 2 * span + low
                logits = model(xa)
                real = logits[onehot]
                other = logits.masked_fill(onehot, float("-inf")).amax(dim=1)
                l2 = (xa - x0).flatten(1).pow(2).sum(dim=1)
                loss = (l2 + c * (other - real + confidence).clamp(min=0)).sum()
                opt.zero_grad(set_to_none=True)
                w.grad = _grad(loss, w)
                opt.step()
                with torch.no_grad():
                    success = (real - other) > confidence
                    better = success & (l2 < best_l2)
                    if better.any():
                        best = xa.detach().clone() if best is None else torch.where(
                            better.view(-1, *[1] * (x0.ndim - 1)), xa.detach(), best)
                        best_l2 = torch.where(better, l2.detach(), best_l2)
                    found |= success
            last = ((torch.tanh(w) + 1) / 2 * span + low).detach()
            upper = torch.where(found, torch.minimum(upper, c), upper)
            lower = torch.where(found, lower, torch.maximum(lower, c))
            c = torch.where(torch.isinf(upper), c * 10, (lower + upper) / 2)
    out = last if best is None else torch.where(torch.isinf(best_l2).view(-1, *[1] * (x0.ndim - 1)), last, best)
    return out.clamp(low, high)


@torch.no_grad()
def boundary_search(model: nn.Module, x_s: np.ndarray | torch.Tensor, x_t: np.ndarray | torch.Tensor,
                    source: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, max_iter: int = 1000,
                    tol: float = 1e-6) -> torch.Tensor:
    """Seed 003's JBA-BS line search, batched: bisect each segment ``[x_s, x_t]`` towards the model's boundary.

    Per row: ``mid = (x_s + x_t) / 2``; if the model labels ``mid`` as ``target`` then ``x_t = mid``, if as
    ``source`` then ``x_s = mid``; a row stops when its label is neither (the returned point is that ``mid``),
    when ``||x_s - x_t||_inf < tol``, or after ``max_iter`` bisections (the returned point is the last
    midpoint). Every returned point lies on the original segment.
    """
    if max_iter < 1 or tol <= 0:
        raise ValueError(f"boundary_search needs max_iter >= 1 and tol > 0, got {max_iter}, {tol}")
    lo, hi = _as_tensor(x_s).clone(), _as_tensor(x_t).clone()
    s, t = _as_labels(source), _as_labels(target)
    if lo.shape != hi.shape:
        raise ValueError(f"x_s and x_t must have the same shape, got {tuple(lo.shape)} and {tuple(hi.shape)}")
    n = len(lo)
    out = (lo + hi) / 2
    active = torch.ones(n, dtype=torch.bool)
    third_class = torch.zeros(n, dtype=torch.bool)
    view = (-1, *[1] * (lo.ndim - 1))
    with torch_threads():
        for _ in range(max_iter):
            active &= (lo - hi).flatten(1).abs().amax(dim=1) >= tol
            if not active.any():
                break
            idx = active.nonzero().squeeze(1)
            mid = (lo[idx] + hi[idx]) / 2
            pred = model(mid).argmax(dim=1)
            to_t, to_s = pred == t[idx], pred == s[idx]
            hi[idx] = torch.where(to_t.view(view), mid, hi[idx])
            lo[idx] = torch.where(to_s.view(view), mid, lo[idx])
            third = idx[~(to_t | to_s)]
            out[third] = mid[~(to_t | to_s)]
            third_class[third] = True
            active[third] = False
    return torch.where(third_class.view(view), out, (lo + hi) / 2)


def feature_fool(model: nn.Module, x: np.ndarray | torch.Tensor, x_t: np.ndarray | torch.Tensor, lam: float = 1.0,
                 margin: float | None = None, steps: int = 30, alpha: float = 0.01, low: float = 0.0,
                 high: float = 1.0) -> torch.Tensor:
    """CloudLeak's FeatureFool (Yu et al., NDSS 2020; seed 003 Eq. 1-2) with Algorithm 2's signed steps.

    Minimises ``||x - x'||_2 + lam * max(M + ||phi(x'), phi(x_t)|| - ||phi(x'), phi(x)||, 0)`` over ``x'`` in
    ``[low, high]``, where ``phi`` is the model's penultimate layer and ``x_t`` an input the model labels with
    the target class: ``x'`` stays close to ``x`` in input space while its features move to the target's side.

    Departures, on purpose: seed 003's Eq. 2 writes the two feature distances the other way round, which would
    pull ``phi(x')`` back to ``phi(x)`` (no adversarial effect); we follow CloudLeak's intent. CloudLeak's margin
    ``M = alpha - mean intra-class squared feature distance`` is negative on a surrogate whose features are far
    apart (which switches the margin off), so ``margin=None`` uses half the mean feature distance between ``x``
    and ``x_t`` over the batch, a scale-free stand-in; pass a number to fix ``M``.
    """
    _check_range(low, high)
    if steps < 0 or alpha < 0 or lam < 0:
        raise ValueError(f"steps, alpha and lam must be >= 0, got {steps}, {alpha}, {lam}")
    x0, xt = _as_tensor(x), _as_tensor(x_t)
    if x0.shape != xt.shape:
        raise ValueError(f"x and x_t must have the same shape, got {tuple(x0.shape)} and {tuple(xt.shape)}")
    if len(x0) == 0 or steps == 0:
        return x0.clone()
    phi = penultimate(model)
    with torch_threads():
        with torch.no_grad():
            f0, ft = phi(x0).flatten(1), phi(xt).flatten(1)
            m = 0.5 * float((f0 - ft).norm(dim=1).mean()) if margin is None else float(margin)
        xa = x0.clone()
        with torch.enable_grad():
            for _ in range(steps):
                xv = xa.requires_grad_(True)
                f = phi(xv).flatten(1)
                triplet = (m + _norms(f - ft) - _norms(f - f0)).clamp(min=0)
                dist = _norms(xv - x0)
                g = _grad((dist + lam * triplet).sum(), xv)
                xa = (xa.detach() - alpha * g.sign()).clamp(low, high)
    return xa.detach()
