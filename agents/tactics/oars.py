"""OARS-style adaptation: read the defence's reject and ban signals and back off until queries pass.

Feng, Hooda, Mangaokar, Fawaz, Jha, Prakash, "Stateful Defenses for Machine Learning Models Are Not Yet Secure
Against Black-box Attacks", CCS 2023 (https://arxiv.org/abs/2303.06280; MIT code ``nmangaokar/ccs_23_oars_stateful_attacks``,
``attacks/adaptive/*.py``). A stateful defence that *rejects* similar queries (Blacklight, PIHA) also tells the
attacker which of its queries were caught. OARS turns that signal into an oracle, in two parts:

1. *Adaptive initialisation*: before the attack, binary-search the attack's step (Square's number of squares and
   square size, HSJA's step, ...) on a few probe queries until they are rejected at most at a target rate
   (``bs_*_hit_rate``, 0 to 0.5 in the configs).
2. *Rejection sampling*: during the attack, a step whose query is rejected is redrawn (fresh randomness, same size)
   and sent again, up to ``max_step_attempts`` (300 on CIFAR) before the attack gives up.

Mapped onto extraction queries (a composable stage of an attacker seat's channel, the ``adapt`` slot of
:class:`~extractgym.agents.seats.channel.Channel`, so it works with every attacker body):

* An image attack's *step* is a random perturbation of the query the body wants labelled: here, random blinding of
  that query (``transform``, seed 003 §VII-A: its answer labels the body's own input) at strength ``r0 * scale``.
  The body's queries are the attack's iterates; the blinding is the step the oracle steers.
* *Initialisation* is online: the episode's first responses are the probes. ``scale`` starts at 0 (raw queries, the
  unadapted attack), is multiplied by ``backoff`` (at least to 1) after any response with a rejection or a ban, and
  relaxes by ``relax`` after a clean one (back to 0 below 1/2): the weakest blinding that passes, which keeps the
  answers closest to the body's queries (OARS' smallest step that avoids the cache).
* *Rejection sampling*: a rejected query is redrawn (the body's original query blinded afresh at the raised scale)
  and resent within the same batch, up to ``max_attempts`` times, then dropped (OARS' "step movement failure").
  Queries left unanswered by a ban go to the next account blinded afresh as well.
* *Account rotation* (beyond OARS, which attacks through one account; seed 003 counts accounts): after
  ``rotate_after`` rejections on an account the stage opens a fresh one before the defence's ban count is reached,
  which defeats a per-account cache (not a global one). It works with the default account policy; with the
  ``sybil`` tactic, its own ``rotate_every`` rotates instead.

Against detectors that ban without rejecting (``similarity``, ``seat``, ``prada``, ...) there is no per-query signal:
only bans raise the scale. Knobs (for brains): ``oars_level`` (multiplies ``r0``; 0 disables the stage),
``max_attempts`` and ``rotate_after``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from extractgym.agents.seats.channel import Stage
from extractgym.agents.tactics.base import register_tactic
from extractgym.agents.tactics.blinding import IMAGE_DEFAULTS, TEXT_DEFAULTS, transform_images, transform_texts
from extractgym.envs.api import Account, Client, Response
from extractgym.envs.errors import QueryRefused
from extractgym.envs.protocols import Knob
from extractgym.victims.base import InputSpec

LEVELS = (0.0, 0.5, 1.0, 2.0)
ATTEMPTS = (0, 1, 3, 10)
ROTATIONS = (None, 3, 10)
MAX_SCALE = 16.0


@register_tactic("oars")
class Oars(Stage):
    """Resample rejected queries with stronger blinding, back off on bans, optionally rotate accounts.

    Args:
        transform: the blinding that makes a step (``None``: ``uniform`` noise for images, ``word-dropout`` for text;
            any image or text transform of the ``blinding`` tactic except the autoencoder).
        strength: ``r0``, the transform's strength at scale 1 (``None``: 0.05 for ``uniform``, else the transform's
            default).
        max_attempts: resends of a rejected query within a batch (OARS: ``max_step_attempts``).
        backoff: factor on the scale after a response with a rejection or a ban (>= 1).
        relax: factor on the scale after a clean response (in (0, 1]).
        rotate_after: rejections after which an account is abandoned for a fresh one (``None``: never).
    Knobs: ``oars_level``, ``max_attempts``, ``rotate_after``.
    """

    stage = "adapt"

    def __init__(self, transform: str | None = None, strength: float | None = None, max_attempts: int = 3,
                 backoff: float = 2.0, relax: float = 0.9, rotate_after: int | None = None) -> None:
        if transform is not None and transform not in (*IMAGE_DEFAULTS, *TEXT_DEFAULTS):
            raise ValueError(f"oars: unknown transform {transform!r}; known: "
                             f"{', '.join((*IMAGE_DEFAULTS, *TEXT_DEFAULTS))}")
        if strength is not None and not (np.isfinite(strength) and strength > 0):
            raise ValueError(f"oars: strength must be finite and > 0, got {strength}")
        if transform in TEXT_DEFAULTS and strength is not None and strength > 1:
            raise ValueError(f"oars: {transform} strength is a probability, got {strength}")
        if max_attempts < 0:
            raise ValueError(f"oars: max_attempts must be >= 0, got {max_attempts}")
        if not (np.isfinite(backoff) and backoff >= 1.0):
            raise ValueError(f"oars: backoff must be finite and >= 1, got {backoff}")
        if not 0.0 < relax <= 1.0:
            raise ValueError(f"oars: relax must be in (0, 1], got {relax}")
        if rotate_after is not None and rotate_after < 1:
            raise ValueError(f"oars: rotate_after must be >= 1 or None, got {rotate_after}")
        self.transform, self.strength = transform, strength
        self.backoff, self.relax = float(backoff), float(relax)
        self.knobs = (Knob.around("oars_level", LEVELS, 1.0), Knob.around("max_attempts", ATTEMPTS, max_attempts),
                      Knob("rotate_after", tuple(dict.fromkeys((rotate_after, *ROTATIONS))), 0))

    def fits(self, spec: InputSpec) -> str | None:
        """Why the transform cannot blind queries of ``spec`` (None if it can)."""
        if self.transform is not None and (self.transform in TEXT_DEFAULTS) != (spec.kind == "text"):
            kind = "text" if self.transform in TEXT_DEFAULTS else "images"
            return f"{self.transform!r} is for {kind}, but the target takes {spec.kind} inputs"
        return None

    def bind(self, client: Client, rng: np.random.Generator | None) -> None:
        self.client, self.rng = client, rng if rng is not None else np.random.default_rng(0)
        self.scale = 0.0
        self.rejections: dict[str, int] = {}  # account id -> rejections seen
        self.retired: set[str] = set()
        self.rejected = self.retries = self.dropped = self.rotations = 0

    # -- the channel's adapt stage ------------------------------------------------------------------------
    def prepare(self, x: Any, sent: Any, spec: InputSpec, knobs: Mapping[str, Any]) -> Any:
        """A batch starts: keep the body's queries, return a private copy of what goes out (blinded at the current
        scale, the step OARS' initialisation settled on)."""
        problem = self.fits(spec)
        if problem is not None:
            raise ValueError(f"oars: {problem}")
        self.x, self.spec, self.attempts = x, spec, np.zeros(len(x), dtype=np.int64)
        out = np.array(sent, dtype=object) if spec.kind == "text" else np.array(sent, dtype=np.float32)
        if self.scale > 0 and float(knobs["oars_level"]) > 0 and len(out):
            out[:] = self._step(np.arange(len(out)), knobs)
        return out

    def settle(self, account: Account, chunk: np.ndarray, got: np.ndarray, response: Response, sent: Any,
               knobs: Mapping[str, Any]) -> np.ndarray:
        """Which of ``chunk`` are done after ``response``; the rejected ones it resamples (rewritten in ``sent``)
        and, after a ban, the unanswered ones (rewritten) stay pending."""
        level = float(knobs["oars_level"])
        missed = chunk[~np.isin(chunk, got)]
        caught = response.banned or response.rejected > 0
        if level <= 0:
            return got if response.banned else chunk
        if caught:
            self.scale = min(MAX_SCALE, max(1.0, self.scale * self.backoff))
        else:
            self.scale = self.scale * self.relax if self.scale * self.relax >= 0.5 else 0.0
        if response.banned:  # the rest goes to the next account, blinded afresh
            if len(missed):
                sent[missed] = self._step(missed, knobs)
            return got
        if not response.rejected:
            return chunk
        self.rejected += len(missed)
        self.rejections[account.id] = self.rejections.get(account.id, 0) + len(missed)
        rotate = knobs["rotate_after"]
        if rotate is not None and self.rejections[account.id] >= rotate and account.id not in self.retired:
            self._rotate(account)
        again = missed[self.attempts[missed] < int(knobs["max_attempts"])]
        self.dropped += len(missed) - len(again)
        if len(again):
            self.attempts[again] += 1
            self.retries += len(again)
            sent[again] = self._step(again, knobs)
        return chunk[~np.isin(chunk, again)]

    def _step(self, idx: np.ndarray, knobs: Mapping[str, Any]) -> Any:
        """The body's queries ``idx`` blinded afresh at strength ``r0 * scale * oars_level``."""
        text = self.spec.kind == "text"
        name = self.transform or ("word-dropout" if text else "uniform")
        r0 = self.strength if self.strength is not None else (0.05 if name == "uniform" else
                                                              {**IMAGE_DEFAULTS, **TEXT_DEFAULTS}[name])
        r = r0 * max(self.scale, 1.0) * float(knobs["oars_level"])
        if text:
            return transform_texts(np.asarray(self.x, dtype=object)[idx], name, min(r, 0.9), self.rng)
        x = np.asarray(self.x, dtype=np.float32)[idx]
        return np.clip(transform_images(x, name, r, self.rng), self.spec.low, self.spec.high).astype(np.float32)

    def _rotate(self, account: Account) -> None:
        """Open a fresh account (the default account policy then uses the newest one)."""
        if not self.client.can_open(account.service):
            return
        try:
            self.client.open_account(account.service)
        except QueryRefused:
            return
        self.retired.add(account.id)
        self.rotations += 1

    def stats(self) -> dict[str, Any]:
        return {"oars_rejected": self.rejected, "oars_retries": self.retries, "oars_dropped": self.dropped,
                "oars_rotations": self.rotations, "oars_scale": self.scale}
