"""Adversarial transfer: what a stolen model is worth as a white-box stand-in for the API (seeds 002, 003, 004).

Papernot et al., "Practical Black-Box Attacks against Machine Learning", AsiaCCS 2017
(https://arxiv.org/abs/1602.02697), trained the Jacobian-augmented substitute of seed 003 for exactly this: craft
adversarial examples on it and send them to the black-box victim. He et al., "Model Extraction and Adversarial
Transferability, Your BERT is Vulnerable!", NAACL 2021 (https://arxiv.org/abs/2103.10013, cited by seed 002)
measure the same for text APIs with a word-substitution attack. The referee does it for every attacker's snapshot
at the end of an episode: it crafts adversarial versions of held-out inputs (the target's test split, which no
attacker ever saw) on the snapshot, rebuilt in its own code, and asks the victim *behind the API's defences* (the
audit path: the defences' output shaping and the service's output format; nothing is logged or charged) whether
they fool it. Crafting uses the surrogate's own predicted label as the label to move away from (the attacker
does not know the true label of an input it never saw); success is judged against the truth.

Attacks (:class:`TransferAttack`):

* ``fgsm`` -- Goodfellow et al., ICLR 2015 (https://arxiv.org/abs/1412.6572): one step of ``eps`` along the sign
  of the loss gradient (targeted: down the target class's loss), clipped to the input range.
* ``pgd`` -- Madry et al., ICLR 2018 (https://arxiv.org/abs/1706.06083): L-inf projected gradient descent from a
  uniform random start in the ``eps``-ball, ``steps`` steps of ``step_size`` (default ``2.5 * eps / steps``, the
  paper's rule), projected back onto the ball and the input range after each.
* ``word-swap`` -- TextFooler's greedy substitution (Jin et al., AAAI 2020, https://arxiv.org/abs/1907.11932):
  words are ranked by how much deleting them lowers the surrogate's probability of its label; in that order each is
  replaced by whichever of its ``candidates`` nearest neighbours lowers it most (kept only if it does), until the
  label flips (targeted: the target is reached) or ``max_swaps`` words were tried. Departures: neighbours come from
  the cosine similarity of the encoder's own word-piece input embeddings (whole lower-case words only), since no
  counter-fitted word vectors ship offline, and there is no part-of-speech or sentence-similarity filter.

Success rates (:func:`success_rate`): untargeted, the share of inputs the defended victim answered correctly that
it answers wrongly once perturbed; targeted, the share (of inputs it answered correctly, whose target differs from
the truth) it now answers with the target class. Each target is a fixed draw (seed 0) among the other classes, so
every attacker and baseline is scored on the same pairs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extractgym.victims.training import predict_proba, to_tensor, torch_threads

IMAGE_METHODS = ("fgsm", "pgd")
TEXT_METHODS = ("word-swap",)
METHODS = IMAGE_METHODS + TEXT_METHODS


@dataclass(frozen=True)
class TransferAttack:
    """One attack of a scenario's ``transfer:`` section.

    Attributes:
        name: its label in ``summary.json``.
        method: ``fgsm``, ``pgd`` (images) or ``word-swap`` (text).
        eps: L-inf radius as a share of the input range (images).
        steps: PGD iterations; ``step_size``: PGD's step (default ``2.5 * eps / steps``).
        targeted: aim at a fixed other class instead of any wrong one.
        candidates: word-swap's neighbours tried per word; ``max_swaps``: words tried per text.
    """

    name: str
    method: str
    eps: float = 0.1
    steps: int = 10
    step_size: float | None = None
    targeted: bool = False
    candidates: int = 8
    max_swaps: int = 4


def targets_for(y: np.ndarray, n_classes: int) -> np.ndarray:
    """A fixed target class per input, uniform among the classes other than its label (seed 0)."""
    offset = np.random.default_rng(0).integers(1, max(n_classes, 2), size=len(y))
    return (np.asarray(y) + offset) % max(n_classes, 2)


# -- images --------------------------------------------------------------------------------------------------------
def _gradient_sign(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), labels)
    (grad,) = torch.autograd.grad(loss, x)
    return -grad.sign() if targeted else grad.sign()


def craft_images(model: nn.Module, x: np.ndarray, attack: TransferAttack, labels: np.ndarray, low: float = 0.0,
                 high: float = 1.0, seed: int = 0) -> np.ndarray:
    """Adversarial versions of images ``x`` on ``model``: away from ``labels`` (untargeted) or towards them."""
    span = high - low
    eps = attack.eps * span
    model.eval()
    with torch_threads(), torch.enable_grad():
        x0 = to_tensor(x).clone()
        y = torch.from_numpy(np.asarray(labels, dtype=np.int64))
        if attack.method == "fgsm":
            adv = x0 + eps * _gradient_sign(model, x0, y, attack.targeted)
        elif attack.method == "pgd":
            step = (attack.step_size * span) if attack.step_size is not None else 2.5 * eps / attack.steps
            gen = torch.Generator().manual_seed(seed)
            adv = (x0 + (torch.rand(x0.shape, generator=gen) * 2 - 1) * eps).clamp(low, high)
            for _ in range(attack.steps):
                adv = adv + step * _gradient_sign(model, adv, y, attack.targeted)
                adv = torch.min(torch.max(adv, x0 - eps), x0 + eps).clamp(low, high)
        else:
            raise ValueError(f"{attack.method!r} is not an image attack; image attacks: {', '.join(IMAGE_METHODS)}")
        return adv.clamp(low, high).detach().numpy().astype(np.float32)


# -- text ------------------------------------------------------------------------------------------------------------
_WORD = re.compile(r"^(\W*)([A-Za-z]+)(\W*)$")


@lru_cache(maxsize=2)
def _word_table(encoder: Any) -> tuple[dict[str, int], list[str], torch.Tensor]:
    """The encoder's whole-word vocabulary (lower-case letters, 3+ of them) and its unit input embeddings."""
    tokenizer, model = encoder.transformer()
    vocab = tokenizer.get_vocab()
    words = sorted((w for w in vocab if re.fullmatch(r"[a-z]{3,}", w)), key=vocab.__getitem__)
    emb = model.get_input_embeddings().weight.detach()[[vocab[w] for w in words]]
    return {w: i for i, w in enumerate(words)}, words, F.normalize(emb.float(), dim=1)


def neighbours(encoder: Any, word: str, k: int) -> list[str]:
    """The ``k`` whole words closest to ``word`` in the encoder's input embedding space ([] if it is not one)."""
    index, words, emb = _word_table(encoder)
    i = index.get(word.lower())
    if i is None or k < 1:
        return []
    sims = emb @ emb[i]
    sims[i] = -2.0
    return [words[j] for j in torch.topk(sims, min(k, len(words) - 1)).indices.tolist()]


def craft_texts(model: nn.Module, encode: Callable[[Sequence[str]], np.ndarray], encoder: Any, texts: Sequence[str],
                attack: TransferAttack, labels: np.ndarray) -> list[str]:
    """Word-swap adversarial versions of ``texts`` on ``model`` (which reads ``encode(texts)``), moving away from
    ``labels`` (untargeted) or towards them (targeted); see the module docstring."""
    labels = np.asarray(labels)
    tokens = [t.split(" ") for t in texts]

    def score(batch: list[str], rows: list[int]) -> np.ndarray:
        """The probability of each row's label (untargeted) or minus its target's (targeted): lower is better."""
        if not batch:
            return np.zeros(0)
        p = predict_proba(model, encode(batch))[np.arange(len(rows)), labels[rows]]
        return -p if attack.targeted else p

    def done(batch: list[str], rows: list[int]) -> np.ndarray:
        pred = predict_proba(model, encode(batch)).argmax(1)
        return pred == labels[rows] if attack.targeted else pred != labels[rows]

    # word importance: the drop in the score when the word is deleted (alphabetic words only)
    dels, owners, spots = [], [], []
    for r, words in enumerate(tokens):
        for i, w in enumerate(words):
            if _WORD.match(w) and len(words) > 1:
                dels.append(" ".join(words[:i] + words[i + 1:]))
                owners.append(r)
                spots.append(i)
    base = score(list(texts), list(range(len(texts))))
    drop = base[owners] - score(dels, owners) if dels else np.zeros(0)
    order: list[list[int]] = [[] for _ in texts]
    for j in np.argsort(-drop, kind="stable"):
        order[owners[j]].append(spots[j])
    current, best = [list(w) for w in tokens], base.copy()
    active = [r for r in range(len(texts)) if order[r]]
    for step in range(attack.max_swaps):
        batch, rows, swaps = [], [], []
        for r in active:
            if step >= len(order[r]):
                continue
            i = order[r][step]
            prefix, core, suffix = _WORD.match(current[r][i]).groups()
            for cand in neighbours(encoder, core, attack.candidates):
                cand = cand.capitalize() if core[:1].isupper() else cand
                words = current[r][:i] + [prefix + cand + suffix] + current[r][i + 1:]
                batch.append(" ".join(words))
                rows.append(r)
                swaps.append((i, words[i]))
        if not batch:
            break
        scores = score(batch, rows)
        changed = []
        for r in set(rows):
            js = [j for j, rr in enumerate(rows) if rr == r]
            j = min(js, key=lambda j: scores[j])
            if scores[j] < best[r]:
                best[r] = scores[j]
                current[r][swaps[j][0]] = swaps[j][1]
                changed.append(r)
        if changed:
            flipped = done([" ".join(current[r]) for r in changed], changed)
            finished = {r for r, f in zip(changed, flipped, strict=True) if f}
            active = [r for r in active if r not in finished]
    return [" ".join(w) for w in current]


# -- scoring ----------------------------------------------------------------------------------------------------------
def success_rate(answers: np.ndarray, clean: np.ndarray, truth: np.ndarray, attack: TransferAttack,
                 targets: np.ndarray) -> tuple[float, int]:
    """The attack's success against the victim: (rate, inputs it is measured on). ``clean`` and ``answers`` are the
    defended victim's labels before and after the perturbation."""
    keep = clean == truth
    if attack.targeted:
        keep &= targets != truth
        hits = answers == targets
    else:
        hits = answers != truth
    n = int(keep.sum())
    return (float(hits[keep].mean()) if n else float("nan")), n
