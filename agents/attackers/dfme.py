"""DFME: data-free model extraction with a generator and forward-difference gradient estimates.

Truong et al., "Data-Free Model Extraction", CVPR 2021 (https://arxiv.org/abs/2011.14779); seed 003 §III-B,
Eq. 3-4. A generator G maps Gaussian noise to queries that maximise the disagreement L between the victim F_V and
the substitute F_A (Eq. 3); F_A is trained to minimise it. F_V is a black box, so the gradient of L with respect
to G's output is estimated by forward differences along ``m`` random Gaussian directions (Eq. 4), which costs
``batch * (m + 1)`` queries per generator step; each substitute step costs ``batch`` queries. Every one of those
queries goes through :meth:`AttackerBase.send` and so through the API's ledger; the attacker also keeps its own
split of them (``query_counts``: ``gradient`` vs ``student``) and never asks for more than its budget.

Departures, and why:
    * The API returns probabilities, not logits: the victim's "logits" are its log-probabilities (clipped at
      1e-12) minus their per-row mean, the official code's ``logit_correction='mean'``; L is the L1 distance
      between those and the substitute's logits, as in the paper.
    * Queries must lie in the victim's input range, so, as in the official code, the estimate is taken in the
      generator's pre-activation space: points ``u + ε Z_i`` are mapped through the output activation
      (``low + (high - low)(tanh + 1)/2``) before they are sent, and the estimated gradient is back-propagated
      from ``u`` into G.
    * The last substitute batch of a round is trimmed to the queries left, so a budget is spent exactly; a round
      with too few queries left for a generator step plus one substitute batch spends them on the substitute.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extractgym.agents.base import AttackerBase
from extractgym.agents.extraction.surrogate import default_arch
from extractgym.agents.refs import TargetService
from extractgym.agents.registry import register_attacker
from extractgym.envs.protocols import Knob
from extractgym.victims.models import build_model
from extractgym.victims.snapshot import ModelSnapshot
from extractgym.victims.training import predict_proba, torch_threads


def make_generator(nz: int, shape: tuple[int, ...], width: int = 64) -> nn.Module:
    """A small DCGAN-style generator for ``(C, H, W)`` images (H and W divisible by 4); returns pre-activations."""
    c, h, w = shape
    if h % 4 or w % 4:
        raise ValueError(f"generator needs image sides divisible by 4, got {shape}")
    return nn.Sequential(
        nn.Linear(nz, width * (h // 4) * (w // 4)), nn.Unflatten(1, (width, h // 4, w // 4)), nn.BatchNorm2d(width),
        nn.Upsample(scale_factor=2), nn.Conv2d(width, width // 2, 3, padding=1), nn.BatchNorm2d(width // 2),
        nn.LeakyReLU(0.2), nn.Upsample(scale_factor=2), nn.Conv2d(width // 2, c, 3, padding=1),
        nn.BatchNorm2d(c, affine=False))


def victim_logits(probs: np.ndarray) -> torch.Tensor:
    """Log-probabilities (clipped: no log(0)) minus their row mean: the paper's logits, recovered from probabilities."""
    lp = torch.from_numpy(np.log(np.clip(np.asarray(probs, dtype=np.float64), 1e-12, 1.0))).float()
    return lp - lp.mean(dim=1, keepdim=True)


@register_attacker("dfme")
class DfmeAttacker(AttackerBase):
    """Data-free model extraction (image victims).

    Args:
        queries_per_round: the preset number of queries per round (gradient estimation and substitute training).
        labels: ``"soft"`` (the paper: the victim's probabilities) or ``"hard"`` (its arg-max as one-hot rows,
            whose clipped logs still give an L1 target; not in the paper, which needs soft outputs).
        batch_size: queries generated per step; ``directions``: m of Eq. 4; ``epsilon``: the forward-difference step.
        generator_steps, student_steps: n_G and n_S, the alternation of the official implementation.
        nz: noise dimension; ``lr_generator``, ``lr_student``: Adam step sizes.
        surrogate: substitute architecture or ``"auto"``; ``target``: the service attacked (default: the first).
    """

    inputs = ("image",)  # the target kinds it can attack: it generates images

    def __init__(self, queries_per_round: int = 2000, labels: str = "soft", batch_size: int = 32,
                 directions: int = 1, epsilon: float = 1e-3, generator_steps: int = 1, student_steps: int = 5,
                 nz: int = 16, lr_generator: float = 1e-3, lr_student: float = 1e-2, surrogate: str = "auto",
                 target: TargetService | None = None) -> None:
        if queries_per_round < 1:
            raise ValueError(f"queries_per_round must be >= 1, got {queries_per_round}")
        if labels not in ("soft", "hard"):
            raise ValueError(f"labels must be 'soft' or 'hard', got {labels!r}")
        if batch_size < 1 or directions < 1 or nz < 1:
            raise ValueError(f"batch_size, directions and nz must be >= 1, got {batch_size}, {directions}, {nz}")
        if not (np.isfinite(epsilon) and epsilon > 0):
            raise ValueError(f"epsilon must be finite and > 0, got {epsilon}")
        if generator_steps < 0 or student_steps < 1:
            raise ValueError(f"generator_steps must be >= 0 and student_steps >= 1, "
                             f"got {generator_steps}, {student_steps}")
        if not (lr_generator > 0 and lr_student > 0):
            raise ValueError("lr_generator and lr_student must be > 0")
        self.labels, self.batch_size, self.m, self.epsilon = labels, batch_size, directions, epsilon
        self.n_g, self.n_s, self.nz, self.lr_g, self.lr_s = generator_steps, student_steps, nz, lr_generator, lr_student
        self.arch, self.target = surrogate, target or ""
        q = queries_per_round
        self.knobs = (Knob.around("queries", (0, max(1, q // 4), max(1, q // 2), 2 * q), q),
                      Knob("generator_steps", tuple(sorted({0, generator_steps, max(1, generator_steps)})),
                           sorted({0, generator_steps, max(1, generator_steps)}).index(generator_steps)))

    def setup(self) -> None:
        n_classes, spec = self.channel.service_info(self.target)
        if spec.kind != "image":
            raise ValueError(f"dfme generates images; service {self.target!r} takes {spec.kind}")
        self.shape, self.low, self.high = tuple(spec.shape), float(spec.low), float(spec.high)
        seed = int(self.rng.integers(2**31 - 1))
        arch = default_arch(spec)[0] if self.arch == "auto" else self.arch
        self.student = build_model(arch, n_classes, self.shape, seed)
        self.student_arch, self.n_classes = arch, n_classes
        with torch.random.fork_rng():
            torch.manual_seed(seed + 1)
            self.generator = make_generator(self.nz, self.shape)
        self.opt_s = torch.optim.Adam(self.student.parameters(), lr=self.lr_s)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.lr_g)
        self.gen = torch.Generator().manual_seed(seed + 2)
        self.query_counts = {"gradient": 0, "student": 0}
        self.generator_step_queries: list[int] = []  # queries of each generator step (batch * (m + 1) when served)

    def activate(self, u: torch.Tensor) -> torch.Tensor:
        return self.low + (self.high - self.low) * (torch.tanh(u) + 1) / 2

    def query(self, x: torch.Tensor, kind: str) -> tuple[np.ndarray, torch.Tensor]:
        """The indices of ``x`` the API answered and the victim logits for them; counts the queries.

        Seed 003 §VII: query blinding and filtering apply only to the substitute-training queries; the
        gradient-estimation points go out untouched (blinding each finite-difference point separately would
        destroy the estimate, and a withheld point would waste the rest of the step).
        """
        arr = np.clip(x.detach().numpy().astype(np.float32), self.low, self.high)
        done, out = self.send(self.target, arr, adaptive=kind == "student")
        self.query_counts[kind] += len(done)
        if self.labels == "hard":
            out = np.eye(out.shape[1])[out.argmax(axis=1)]
        return done, victim_logits(out)

    def generator_step(self) -> int:
        """One generator update from a forward-difference estimate (Eq. 4); returns the queries spent."""
        b, m, eps = self.batch_size, self.m, self.epsilon
        self.generator.train()
        u = self.generator(torch.randn(b, self.nz, generator=self.gen))
        with torch.no_grad():
            z = torch.randn(m, *u.shape, generator=self.gen)
            points = torch.cat([u.detach()[None], u.detach()[None] + eps * z]).reshape(-1, *self.shape)
            before = self.query_counts["gradient"]
            done, v = self.query(self.activate(points), "gradient")
            self.generator_step_queries.append(self.query_counts["gradient"] - before)
            if len(done) < len(points):  # budget or ban cut the estimate short: no update from half of it
                return self.generator_step_queries[-1]
            self.student.eval()
            loss = (self.student(self.activate(points)) - v).abs().mean(dim=1).reshape(m + 1, b)
            grad = (((loss[1:] - loss[0]) / eps).reshape(m, b, *([1] * len(self.shape))) * z).mean(dim=0)
        self.opt_g.zero_grad(set_to_none=True)
        u.backward(-grad / b)  # ascend L: the generator seeks queries where F_A and F_V disagree
        self.opt_g.step()
        return self.generator_step_queries[-1]

    def student_step(self, b: int) -> int:
        """One substitute update on ``b`` fresh generated queries; returns the queries spent."""
        with torch.no_grad():
            x = self.activate(self.generator(torch.randn(b, self.nz, generator=self.gen))) if b > 1 else \
                self.activate(self._single())
        before = self.query_counts["student"]
        done, v = self.query(x, "student")
        if len(done):  # train on what was answered (a filter may withhold some; a budget may cut the rest)
            self.student.train()
            self.opt_s.zero_grad(set_to_none=True)
            F.l1_loss(self.student(x[torch.from_numpy(done)]), v).backward()
            self.opt_s.step()
        return self.query_counts["student"] - before

    def _single(self) -> torch.Tensor:
        self.generator.eval()  # batch norm cannot use batch statistics of one sample
        try:
            return self.generator(torch.randn(1, self.nz, generator=self.gen))
        finally:
            self.generator.train()

    def play_round(self, knobs: dict[str, Any], round_index: int) -> None:
        left = self.channel.left("queries")
        left = int(min(int(knobs["queries"]), left)) if np.isfinite(left) else int(knobs["queries"])
        n_g, cost_g = int(knobs.get("generator_steps", self.n_g)), self.batch_size * (self.m + 1)
        with torch_threads():
            while left > 0:
                for _ in range(n_g):
                    if left < cost_g + self.batch_size:
                        break  # keep the rest for the substitute
                    spent = self.generator_step()
                    left -= spent
                    if spent < cost_g:
                        return  # the API served less than asked (ban, money): stop this round
                for _ in range(self.n_s):
                    b = min(self.batch_size, left)
                    if b == 0:
                        break
                    spent = self.student_step(b)
                    left -= spent
                    if spent == 0:
                        return  # nothing served (budget, money, or everything withheld): stop this round

    def predict_proba(self, x: Any) -> np.ndarray:
        return predict_proba(self.student, np.asarray(x, dtype=np.float32))

    def snapshot(self) -> ModelSnapshot:
        return ModelSnapshot.of(self.student, self.student_arch, self.n_classes, self.shape)
