"""Many small MLPs as one batch: the engine of the cheap surrogates (forward, training, Adam), on CPU or CUDA.

The vector env steps K episodes at once, and each episode's attacker trains its own surrogate every round. One
surrogate's update is a few small matrix products, so K of them trained one after the other cost K times the
per-call overhead of torch. Here they are *members* of one ensemble: each keeps its own flat parameter vector,
Adam moments and step count (:class:`Member`), its own transfer set and its own random stream (the seed of each
fit), and :func:`train` stacks the members that fit in the same call and runs every step as one batched product
(``torch.baddbmm`` / ``torch.bmm`` over the members) with a hand-written backward pass and Adam.

Why by hand and not ``torch.func``: ``vmap(grad(functional_call))`` over stacked ``nn.Module`` states (the model
ensembling recipe) does the same arithmetic; for K = 32 two-layer MLPs at batch 64 it measured 2.2 ms per step
on one thread here against 1.2 ms for the explicit products below (and the same gap at K = 8).

**Exactness.** A member's arithmetic does not depend on which members share its batch: ``bmm`` computes each
member's product on its own, softmax and the sums reduce within one member, everything else is elementwise. So
members trained together get bit-for-bit the weights each would get alone, and a serial episode (a batch of one)
and the same episode stepped beside others agree exactly (``tests/test_vector_env.py`` checks both on CPU). On
CUDA the kernels may depend on the batch shape: agreement there is within float rounding, not promised exact.

**Arithmetic.** One step of one member costs ``3 * batch * (in_dim * hidden + hidden * n_classes)``
multiply-adds (forward, and the backward's two products per layer); :func:`step_macs` says how many, and
``benchmarks/bench_vector_env.py`` reports the rate reached.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when torch sees a GPU, else CPU; ``cuda`` without a GPU is refused with a message."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda was asked for, but torch sees no CUDA device (use auto or cpu)")
    return torch.device(device)


@dataclass(frozen=True)
class SmallMLP:
    """One member's architecture: ``in_dim -> hidden (ReLU) -> n_classes``, its parameters one flat vector
    ``[W1 (in_dim x hidden), b1, W2 (hidden x n_classes), b2]``. :meth:`state` names them as
    :class:`~extractgym.victims.models.MLP` does, so a snapshot is an ordinary model of the registry."""

    in_dim: int
    hidden: int
    n_classes: int

    @property
    def size(self) -> int:
        d, h, c = self.in_dim, self.hidden, self.n_classes
        return d * h + h + h * c + c

    def init(self, seed: int) -> torch.Tensor:
        """Initial parameters from ``seed`` only (``nn.Linear``'s default law: U(-1/sqrt(fan_in), 1/sqrt(fan_in)))."""
        gen = torch.Generator().manual_seed(int(seed))
        d, h, c = self.in_dim, self.hidden, self.n_classes
        parts = [(d * h, d), (h, d), (h * c, h), (c, h)]
        return torch.cat([(torch.rand(n, generator=gen) * 2 - 1) / math.sqrt(fan_in) for n, fan_in in parts])

    def split(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Views of stacked parameters ``(K, size)``: W1 ``(K, in, hidden)``, b1 ``(K, 1, hidden)``, W2, b2."""
        d, h, c = self.in_dim, self.hidden, self.n_classes
        k = flat.shape[0]
        w1, b1, w2, b2 = torch.split(flat, [d * h, h, h * c, c], dim=1)
        return w1.reshape(k, d, h), b1.reshape(k, 1, h), w2.reshape(k, h, c), b2.reshape(k, 1, c)

    def logits_t(self, flat: torch.Tensor, x_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden activations ``(K, hidden, N)`` and logits ``(K, n_classes, N)`` of K members on their inputs given
        feature-major, ``x_t`` ``(K, in_dim, N)`` (a transposed view is fine). Feature-major because reductions over
        a few classes along the last axis are slow on CPU here (a softmax over 10 classes: 440 µs for 2,048 rows in
        the last axis, 23 µs in the middle one)."""
        w1, b1, w2, b2 = self.split(flat)
        h = torch.baddbmm(b1.transpose(1, 2), w1.transpose(1, 2), x_t).clamp_min_(0.0)
        return h, torch.baddbmm(b2.transpose(1, 2), w2.transpose(1, 2), h)

    def proba(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(K, N, n_classes)`` in float64 of K members on their inputs ``x`` ``(K, N, in_dim)``."""
        _, z = self.logits_t(flat, x.transpose(1, 2))
        return torch.softmax(z.double(), dim=1).transpose(1, 2)

    def state(self, flat: torch.Tensor) -> dict[str, np.ndarray]:
        """One member's parameters ``(size,)`` as read-only arrays named like ``victims.models.MLP``'s."""
        w1, b1, w2, b2 = (t[0] for t in self.split(flat.detach().reshape(1, -1).cpu()))
        out = {"features.1.weight": w1.T, "features.1.bias": b1[0], "head.weight": w2.T, "head.bias": b2[0]}
        arrays = {}
        for k, t in out.items():
            a = t.numpy().copy()
            a.setflags(write=False)
            arrays[k] = a
        return arrays

    @staticmethod
    def stack_states(states: Sequence[Any]) -> torch.Tensor:
        """Stacked flat parameters ``(K, size)`` of K states named like :meth:`state` (a referee's snapshots)."""
        return torch.from_numpy(np.stack([np.concatenate([
            np.asarray(s["features.1.weight"], dtype=np.float32).T.reshape(-1),
            np.asarray(s["features.1.bias"], dtype=np.float32).reshape(-1),
            np.asarray(s["head.weight"], dtype=np.float32).T.reshape(-1),
            np.asarray(s["head.bias"], dtype=np.float32).reshape(-1)]) for s in states]))

    @classmethod
    def of_state(cls, state: Any) -> SmallMLP:
        hidden, in_dim = np.shape(state["features.1.weight"])
        return cls(int(in_dim), int(hidden), int(np.shape(state["head.weight"])[0]))


@dataclass(frozen=True)
class Schedule:
    """A fit's optimisation: ``steps`` Adam updates on minibatches of ``batch`` rows drawn with replacement from
    the member's transfer set (a fixed shape, whatever the set's size, so members of any size share a batch)."""

    steps: int
    batch: int
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


@dataclass
class Member:
    """One model of an ensemble: its parameters, Adam moments and update count, on its device."""

    arch: SmallMLP
    params: torch.Tensor
    m: torch.Tensor
    v: torch.Tensor
    updates: int = 0

    @classmethod
    def new(cls, arch: SmallMLP, seed: int, device: torch.device | str = "cpu") -> Member:
        p = arch.init(seed).to(device)
        return cls(arch, p, torch.zeros_like(p), torch.zeros_like(p))

    @property
    def device(self) -> torch.device:
        return self.params.device

    @torch.no_grad()
    def proba(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        """Class probabilities (float64 rows) of this member on ``x`` (any shape ``(N, ...)``, flattened)."""
        xt = _tensor(x).reshape(len(x), -1).to(self.device)
        return self.arch.proba(self.params[None], xt[None])[0].cpu().numpy()


def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    from extractgym.victims.training import to_tensor

    return to_tensor(x)


def step_macs(arch: SmallMLP, batch: int) -> int:
    """Multiply-adds of one training step of one member (forward and backward products)."""
    return 3 * batch * (arch.in_dim * arch.hidden + arch.hidden * arch.n_classes)


@dataclass
class Fit:
    """One member's fit: its transfer set ``x`` ``(n, in_dim)`` and targets ``y`` ``(n, n_classes)`` (probability
    rows or one-hot labels), and the seed of its minibatch draws."""

    member: Member
    x: torch.Tensor
    y: torch.Tensor
    seed: int


def _torch_threads() -> Any:
    from extractgym.victims.training import torch_threads

    return torch_threads()


@torch.no_grad()
def train(fits: Sequence[Fit], schedule: Schedule) -> None:
    """Run ``schedule`` on every member of ``fits`` at once (same architecture and device), in place."""
    if not fits:
        return
    arch, device = fits[0].member.arch, fits[0].member.device
    if any(f.member.arch != arch or f.member.device != device for f in fits):
        raise ValueError("members trained together must share their architecture and device")
    steps, bsz = schedule.steps, schedule.batch
    b1, b2 = schedule.betas
    with _torch_threads():
        draws, offset = [], 0
        for f in fits:  # each member's own draws, from its own generator, into the concatenated transfer sets
            gen = torch.Generator().manual_seed(int(f.seed))
            draws.append(torch.randint(0, len(f.x), (steps, bsz), generator=gen) + offset)
            offset += len(f.x)
        idx = torch.stack(draws, dim=1).reshape(steps, -1).to(device)  # (steps, K * batch)
        k = len(fits)
        x_cat, y_cat = torch.cat([f.x for f in fits]), torch.cat([f.y for f in fits])
        ysum_cat = y_cat.sum(dim=1, keepdim=True)
        params = torch.stack([f.member.params for f in fits])
        m = torch.stack([f.member.m for f in fits])
        v = torch.stack([f.member.v for f in fits])
        # Adam's bias corrections for each member's own update count, every step's at once: (steps, K, 1)
        t = torch.tensor([f.member.updates for f in fits], dtype=torch.float64) + torch.arange(1, steps + 1,
                                                                                              dtype=torch.float64)[:, None]
        step_size = (schedule.lr / (1.0 - b1 ** t)).to(torch.float32).to(device)[..., None]
        inv_sqrt_bc2 = (1.0 - b2 ** t).rsqrt().to(torch.float32).to(device)[..., None]
        d, h_ = arch.in_dim * arch.hidden, arch.hidden
        for s in range(steps):
            x_t = x_cat.index_select(0, idx[s]).view(k, bsz, arch.in_dim).transpose(1, 2)  # this step's rows
            y_t = y_cat.index_select(0, idx[s]).view(k, bsz, arch.n_classes).transpose(1, 2)
            ysum_t = ysum_cat.index_select(0, idx[s]).view(k, bsz, 1).transpose(1, 2)
            h, z = arch.logits_t(params, x_t)  # (K, hidden, batch), (K, classes, batch)
            # d/dz of the mean over the batch of -sum_c y_c log softmax(z)_c
            dz = torch.softmax(z, dim=1).mul_(ysum_t).sub_(y_t).div_(bsz)
            w2 = params[:, d + h_:d + h_ + h_ * arch.n_classes].view(k, arch.hidden, arch.n_classes)
            dh = torch.ops.aten.threshold_backward(torch.bmm(w2, dz), h, 0.0)  # ReLU's backward
            grad = torch.cat([torch.bmm(x_t, dh.transpose(1, 2)).flatten(1), dh.sum(dim=2),
                              torch.bmm(h, dz.transpose(1, 2)).flatten(1), dz.sum(dim=2)], dim=1)
            m.mul_(b1).add_(grad, alpha=1.0 - b1)
            v.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
            denom = v.sqrt().mul_(inv_sqrt_bc2[s]).add_(schedule.eps)
            params.addcdiv_(m * step_size[s], denom, value=-1.0)
        for i, f in enumerate(fits):
            f.member.params, f.member.m, f.member.v = params[i].clone(), m[i].clone(), v[i].clone()
            f.member.updates += steps


# -- deferred fits: the vector env trains the K episodes' surrogates of a round as one batch ---------------
@dataclass
class FitQueue:
    """Fits asked for while :func:`deferred_fits` is open, trained as one batch per architecture, schedule and
    device when it closes (or when a member is read before that: :meth:`flush`)."""

    pending: list[tuple[Fit, Schedule, Any]] = field(default_factory=list)

    def add(self, fit: Fit, schedule: Schedule, owner: Any) -> None:
        self.pending.append((fit, schedule, owner))

    def flush(self) -> int:
        """Train everything pending; returns how many fits ran."""
        jobs, self.pending = self.pending, []
        groups: dict[tuple, list[tuple[Fit, Any]]] = {}
        for fit, schedule, owner in jobs:
            groups.setdefault((fit.member.arch, schedule, str(fit.member.device)), []).append((fit, owner))
        for (_, schedule, _), group in groups.items():
            train([f for f, _ in group], schedule)
            for _, owner in group:
                owner.fitted()
        return len(jobs)


_QUEUE: ContextVar[FitQueue | None] = ContextVar("extractgym_fit_queue", default=None)


@contextlib.contextmanager
def deferred_fits() -> Iterator[FitQueue]:
    """While open, cheap surrogates queue their fits instead of training at once; closing trains them together.
    A fit's result does not depend on what it is batched with (module docstring), only on when it is read."""
    queue = FitQueue()
    token = _QUEUE.set(queue)
    try:
        yield queue
    finally:
        _QUEUE.reset(token)
        queue.flush()


def current_queue() -> FitQueue | None:
    return _QUEUE.get()
