"""Imitation before reinforcement: the policy starts as a copy of a teacher brain, then PPO improves on it.

``extractgym train SCENARIO --imitate rotate-on-refusal:rotate_every=25`` first clones the teacher (any policy
``extractgym eval`` names: a script of :mod:`extractgym.agents.brains.scripts`, ``preset``, a brain with parameters) into
the network PPO will train, then runs PPO from there. This is the "kickstarting" recipe of large RL systems
(AlphaStar's supervised start, DAgger-style data): in this arena an episode is a handful of noisy rounds, and the
gap between a constant action and the best observation-conditioned policy is a few hundredths of return, so PPO
from a random network settles on a constant within a CPU budget of minutes (measured, README). Starting from a
policy that already reads the observation, PPO only has to keep and tune it.

The algorithm (Ross, Gordon & Bagnell 2011, DAgger, with the teacher queried on every state):

1. Round 0: the teacher plays ``episodes`` training episodes; every state is recorded with the teacher's action,
   the seat's action mask and the return still to come.
2. Fit: each knob's cross-entropy to the teacher's choice, label-smoothed (the target mixes the one-hot choice with
   ``smoothing`` of the uniform distribution over the choices the mask allows, so PPO has something to explore: a
   clone fitted to certainty samples only the teacher's action and PPO never moves it, measured on rl-duel) plus the value head's squared error to the return to come, on all
   data so far (Adam, minibatches).
3. Rounds 1..: the *learner* (sampling, as PPO will) plays ``episodes`` more; the teacher labels the states the
   learner reached (its memory follows the observations, so it can label any trajectory); refit on everything.

The teacher is asked for its action on every observation of an episode in order, even when the learner's action is
the one played, so a script's memory within an episode (``warned``, ``perturbed``) is what it would be had it
watched the same game. Episodes use training seeds (``training.envs.EpisodeSeeds``), never the held-out ones.
The network is memoryless, but the observation carries the previous action, which is enough for a latch such as
"keep rotating once you have started".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from extractgym.agents.brains.learned import knob_distributions

IMITATION_SEED = 0x1A17


@dataclass
class ImitationReport:
    """What the imitation phase did: data, fit and how closely the learner follows the teacher."""

    teacher: str
    rounds: int
    episodes: int  # per round
    samples: int
    teacher_return: float  # mean return of the teacher's own episodes (round 0)
    learner_returns: list[float] = field(default_factory=list)  # mean return of the learner's episodes, rounds 1..
    agreement: list[float] = field(default_factory=list)  # after each fit: share of states where the greedy
    # learner picks the teacher's action on every knob
    loss: list[float] = field(default_factory=list)  # after each fit: mean negative log-likelihood of the teacher
    cpu_seconds: float = 0.0  # this process's, episodes and fits

    def row(self) -> dict[str, Any]:
        return asdict(self)


class _Teacher:
    """The teacher of one episode, built on its first observation (once the env's reset has drawn the seed)."""

    def __init__(self, make: Callable[[int], Callable[[np.ndarray], int]], seed: Callable[[], int]) -> None:
        self.make, self.seed, self.brain = make, seed, None

    def __call__(self, obs: np.ndarray) -> int:
        if self.brain is None:
            self.brain = self.make(self.seed())
        return self.brain(obs)


def _rollout(env: Any, brain_action: Callable[[np.ndarray, np.ndarray], np.ndarray],
             teacher: Callable[[np.ndarray], int], knobs: tuple, data: dict[str, list], gamma: float = 1.0,
             stack: int = 1) -> float:
    """One episode: the played action from ``brain_action(obs, mask)`` (the teacher's if it returns None), the
    label from the teacher; returns the episode's return. The network reads the last ``stack`` observations
    (:class:`~extractgym.agents.brains.learned.ObsStack`), the teacher the latest."""
    from extractgym.agents.brains.learned import ObsStack

    obs, _ = env.reset()
    stacker = ObsStack(stack, len(np.asarray(obs).reshape(-1)))
    done, rewards = False, []
    while not done:
        mask = np.asarray(env.action_masks(), dtype=bool)
        label = np.asarray(np.unravel_index(int(teacher(obs)), [len(k.choices) for k in knobs]), dtype=np.int64)
        seen = stacker(obs)
        data["obs"].append(seen)
        data["act"].append(label)
        data["mask"].append(mask)
        action = brain_action(seen, mask)
        obs, r, term, trunc, _ = env.step(label if action is None else action)
        rewards.append(float(r))
        done = term or trunc
    to_go, g = [], 0.0  # the value head's target, discounted as the algorithm discounts (gamma=1 by default)
    for r in reversed(rewards):
        g = r + gamma * g
        to_go.append(g)
    data["ret"].extend(reversed(to_go))
    return float(sum(rewards))


def _fit(policy: Any, data: Mapping[str, list], knobs: tuple, masks: bool, epochs: int, lr: float,
         batch: int, rng: np.random.Generator, smoothing: float, vf_coef: float = 0.5) -> tuple[float, float]:
    """Fit each knob's choice to the teacher's, smoothed (the one-hot target mixed with ``smoothing`` of the uniform
    distribution over the choices the mask allows, the teacher's included), and the value head to the return to
    come; returns (mean NLL of the teacher's actions, greedy agreement). The agreement is the unmasked greedy
    action's, as a saved policy plays (``agents/brains/learned.py`` predicts without masks)."""
    import torch

    obs = torch.as_tensor(np.stack(data["obs"]))
    act = torch.as_tensor(np.stack(data["act"]))
    ret = torch.as_tensor(np.asarray(data["ret"], dtype=np.float32))
    mask = np.stack(data["mask"]).copy()
    sizes = [len(k.choices) for k in knobs]
    offsets = np.cumsum([0] + sizes[:-1])
    # the teacher's pick is always allowed (a script that names a choice the mask greys out would get -inf)
    mask[np.arange(len(mask))[:, None], offsets[None, :] + act.numpy()] = True
    mask_t = torch.as_tensor(mask)
    target = []  # per knob: the smoothed target distribution of every state
    for i, (o, n) in enumerate(zip(offsets, sizes, strict=True)):
        allowed = mask_t[:, o:o + n].float()
        one_hot = torch.nn.functional.one_hot(act[:, i], n).float()
        target.append((1 - smoothing) * one_hot + smoothing * allowed / allowed.sum(1, keepdim=True))

    def log_probs(idx: Any, masked: bool = True) -> list[Any]:
        dist = policy.get_distribution(obs[idx], **({"action_masks": mask_t[idx].numpy()} if masks and masked else {}))
        return [torch.log_softmax(d.logits, -1) for d in knob_distributions(dist)]

    opt = torch.optim.Adam(policy.parameters(), lr=lr)
    policy.set_training_mode(True)
    n = len(obs)
    for _ in range(epochs):
        order = torch.as_tensor(rng.permutation(n))
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            # masked choices have log-probability about -1e8 and target 0; the clamp keeps 0 * -1e8 out of the sum
            pi = sum(-(t[idx] * lp.clamp(min=-1e4)).sum(-1).mean() for t, lp in zip(target, log_probs(idx), strict=True))
            loss = pi + vf_coef * torch.nn.functional.mse_loss(policy.predict_values(obs[idx]).flatten(), ret[idx])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(policy.parameters(), 0.5)
            opt.step()
    policy.set_training_mode(False)
    with torch.no_grad():
        lps = log_probs(slice(None))
        nll = -sum(lp.gather(1, act[:, i:i + 1]).squeeze(1) for i, lp in enumerate(lps)).mean()
        greedy = torch.stack([lp.argmax(-1) for lp in log_probs(slice(None), masked=False)], 1)
    return float(nll), float((greedy == act).all(dim=1).float().mean())


def check_settings(episodes: int, rounds: int, smoothing: float) -> None:
    """Raise ``ValueError`` naming the problem unless the imitation settings can run."""
    if episodes < 1 or rounds < 1:
        raise ValueError("imitation needs at least one episode and one round")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"imitation smoothing must be in [0, 1), got {smoothing}")


def imitate(model: Any, env: Any, knobs: tuple, teacher: Callable[[int], Callable[[np.ndarray], int]],
            name: str, masks: bool, episodes: int = 48, rounds: int = 3, epochs: int = 40, lr: float = 1e-3,
            batch: int = 64, smoothing: float = 0.1, seed: int = 0,
            log: Callable[[str], None] | None = None, stack: int = 1) -> ImitationReport:
    """Clone ``teacher`` into ``model.policy`` (module docstring).

    Args:
        model: an SB3 on-policy model (PPO, MaskablePPO, A2C) whose policy has ``evaluate_actions``.
        env: one training env of the seat (``training.envs.seat_env``, ``MultiDiscrete`` actions, training seeds).
        knobs: the seat's knobs.
        teacher: the teacher brain for an episode seed (a fresh one per episode: scripts keep episode memory).
        name: the teacher's spec, for the report.
        masks: whether the model masks actions (MaskablePPO).
        episodes: episodes per round; rounds: 1 + the DAgger rounds; epochs: passes over the data per fit.
        smoothing: the weight of the uniform distribution over each knob's allowed choices (the teacher's
            included) in the target, so the clone still explores when PPO takes over; its most likely action stays
            the teacher's.
        stack: observations the network reads at once (its memory; ``extractgym train --stack``).
    """
    check_settings(episodes, rounds, smoothing)
    if not hasattr(model.policy, "evaluate_actions"):
        raise ValueError(f"--imitate needs a policy-gradient algorithm (ppo, maskable-ppo, a2c); "
                         f"{type(model).__name__} has no action distribution to fit")
    import time

    cpu0 = time.process_time()
    gamma = float(getattr(model, "gamma", 1.0))
    say = log or (lambda _m: None)
    rng = np.random.default_rng([seed, IMITATION_SEED])
    env.reset(seed=int(rng.integers(2**31)))  # the env's episode seeds follow from here (EpisodeSeeds)
    data: dict[str, list] = {"obs": [], "act": [], "mask": [], "ret": []}
    report = ImitationReport(name, rounds, episodes, 0, 0.0)

    def seed_of() -> int:
        return int(getattr(env, "episode_seed", None) or 0)

    def learner(obs: np.ndarray, mask: np.ndarray) -> np.ndarray:
        kw = {"action_masks": mask} if masks else {}
        action, _ = model.policy.predict(np.asarray(obs, dtype=np.float32), deterministic=False, **kw)
        return np.asarray(action).reshape(-1)

    for r in range(rounds):
        returns = []
        for _ in range(episodes):
            label = _Teacher(teacher, seed_of)
            returns.append(_rollout(env, (lambda o, m: None) if r == 0 else learner, label, knobs, data, gamma,
                                    stack))
        if r == 0:
            report.teacher_return = float(np.mean(returns))
        else:
            report.learner_returns.append(float(np.mean(returns)))
        nll, agree = _fit(model.policy, data, knobs, masks, epochs, lr, batch, rng, smoothing)
        report.loss.append(nll)
        report.agreement.append(agree)
        who = "teacher" if r == 0 else "learner"
        say(f"imitation round {r}: {episodes} {who} episodes (mean return {np.mean(returns):.4f}), "
            f"{len(data['obs'])} states, NLL {nll:.3f}, greedy agreement {agree:.3f}")
    report.samples = len(data["obs"])
    report.cpu_seconds = time.process_time() - cpu0
    return report


__all__ = ["ImitationReport", "check_settings", "imitate"]
