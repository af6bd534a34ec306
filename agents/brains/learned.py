"""Learned brains: a saved stable-baselines3 policy playing a seat (``brain: {policy: PATH}`` in a scenario).

A policy file is an SB3 ``.zip`` (``MaskablePPO.load(path)`` still reads it, e.g. to continue training) with one
more member, ``extractgym.json``, written by :func:`extractgym.training.policies.save_policy`: the scenario and
seat it was trained in, the seat's role, its knobs (names and choices), the observation and action spaces, the
algorithm, the policy network's shape and the package versions. Loading reads only that JSON and the network's
weights (``policy.pth``, ``torch.load(weights_only=True)``), so a policy file runs no code of its own: the network
is rebuilt from the metadata.

A seat accepts a policy only if its role, observation size and knobs (names and choices, in order) are the ones
the policy was trained with; otherwise :class:`PolicyError` names both, before the first round. The scenario
itself may differ (a policy trained on one digits API may play another with the same seat).

A policy with memory (``extractgym train --stack K``) reads the seat's last ``K`` observations of the episode, oldest
first, zeros before the first round (:class:`ObsStack`: the order of SB3's ``VecFrameStack``, which stacked them in
training); its metadata says so (``memory: {stack: K}``) and the brain keeps the stack.

Like every brain, a learned brain maps an observation to a flat action. ``stochastic=False`` (the default) plays
the most likely action; ``stochastic=True`` samples the policy's action distribution with the brain's own seeded
generator, so an episode is still reproducible from its seed. Action masks are not applied at play time: a masked
choice is one that cannot take effect (``envs/game.py``), so it changes no figure.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from extractgym.envs.game import observation_size
from extractgym.envs.protocols import Knob, SeatInfo, encode_action

META = "extractgym.json"
FORMAT = 1
# algorithm -> (module, policy class) that plays it; the classes SB3 builds for "MlpPolicy"
POLICY_CLASSES = {
    "ppo": ("stable_baselines3.common.policies", "ActorCriticPolicy"),
    "a2c": ("stable_baselines3.common.policies", "ActorCriticPolicy"),
    "maskable-ppo": ("sb3_contrib.common.maskable.policies", "MaskableActorCriticPolicy"),
    "dqn": ("stable_baselines3.dqn.policies", "DQNPolicy"),
}
ACTIVATIONS = ("tanh", "relu", "elu", "leaky_relu")


class PolicyError(ValueError):
    """A policy file that cannot play a seat, with the reason (and both sides of a mismatch)."""


def knob_record(knobs: Sequence[Knob]) -> list[dict[str, Any]]:
    """Knobs as JSON: names and choices as they print (what a checkpoint records and compares)."""
    return [{"name": k.name, "choices": [str(c) for c in k.choices]} for k in knobs]


def describe_seat(role: str, obs_size: int, knobs: Sequence[Mapping[str, Any]]) -> str:
    def choices(k: Mapping[str, Any]) -> str:
        c = list(k["choices"])
        return ",".join(c) if len(c) <= 8 else ",".join(c[:7]) + f",...({len(c)})"

    shown = " x ".join(f"{k['name']}[{choices(k)}]" for k in knobs) or "(none)"
    return f"{role}, observation ({obs_size},), knobs {shown}"


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``extractgym.json`` of a policy file; :class:`PolicyError` if the file is missing or not one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PolicyError(f"policy file {path} not found" if not path.exists() else f"policy {path} is not a file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if META not in names:
                what = "a stable-baselines3 model without extractgym metadata" if "data" in names else "not a policy"
                raise PolicyError(f"{path}: {what} (no {META}); save policies with extractgym train or "
                                  f"extractgym.training.policies.save_policy")
            if "policy.pth" not in names:
                raise PolicyError(f"{path}: no policy.pth (the network's weights) in the file")
            meta = json.loads(archive.read(META).decode())
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PolicyError(f"{path}: not a policy file ({type(e).__name__}: {e})") from None
    problems = [k for k in ("format", "algo", "role", "seat", "knobs", "observation", "action") if k not in meta]
    if problems or not isinstance(meta, dict):
        raise PolicyError(f"{path}: {META} lacks {', '.join(problems) or 'a mapping'}")
    if meta["format"] != FORMAT:
        raise PolicyError(f"{path}: policy format {meta['format']!r}; this extractgym reads format {FORMAT}")
    if meta["algo"] not in POLICY_CLASSES:
        raise PolicyError(f"{path}: unknown algorithm {meta['algo']!r}; known: {', '.join(POLICY_CLASSES)}")
    return meta


class ObsStack:
    """A seat's last ``k`` observations of an episode as one vector, oldest first, zeros before the first: what a
    policy with memory reads. A new episode starts at an observation whose first feature (the round) is 0. The order
    is SB3's ``VecFrameStack`` (the newest observation last; zeros at reset), which stacks them in training."""

    def __init__(self, k: int, size: int) -> None:
        if k < 1:
            raise ValueError(f"stack must be >= 1, got {k}")
        self.k, self.size = int(k), int(size)
        self.buffer = np.zeros(self.k * self.size, dtype=np.float32)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float32).reshape(-1)
        if len(obs) != self.size:
            raise ValueError(f"observation of size {len(obs)}, the stack holds observations of size {self.size}")
        if obs[0] == 0.0:  # round 0: a new episode
            self.buffer[:] = 0.0
        self.buffer = np.roll(self.buffer, -self.size)
        self.buffer[-self.size:] = obs
        return self.buffer.copy()


def stack_of(meta: Mapping[str, Any]) -> int:
    """How many observations a policy reads at once (1: no memory)."""
    memory = meta.get("memory") or {}
    stack = memory.get("stack", 1) if isinstance(memory, Mapping) else 1
    if not isinstance(stack, int) or isinstance(stack, bool) or stack < 1:
        raise PolicyError(f"memory.stack must be an integer >= 1, got {stack!r}")
    return stack


def check_seat(meta: Mapping[str, Any], path: str | Path, role: str, knobs: Sequence[Knob],
               where: str = "this seat") -> None:
    """Raise :class:`PolicyError` naming both sides unless the policy fits a seat with this role and knobs."""
    mine = knob_record(knobs)
    size = observation_size(SeatInfo(role, tuple(knobs))) * stack_of(meta)
    trained = list(meta["observation"].get("shape", [None]))[0]
    if meta["role"] != role or trained != size or meta["knobs"] != mine:
        origin = f"{meta['seat']} of {meta.get('scenario', '?')!r}"
        raise PolicyError(f"policy {path} was trained for {origin} ({describe_seat(meta['role'], trained, meta['knobs'])}); "
                          f"{where} is {describe_seat(role, size, mine)}")


def check_policy(path: str | Path, role: str, knobs: Sequence[Knob], stochastic: bool = False,
                 where: str = "this seat") -> dict[str, Any]:
    """Everything that can be checked before an episode: the file, its metadata, the seat's fit, the option."""
    meta = read_meta(path)
    check_seat(meta, path, role, knobs, where)
    if stochastic and meta["algo"] == "dqn":
        raise PolicyError(f"{path}: a DQN policy is greedy in its Q-values and has no action distribution; drop "
                          f"'stochastic'")
    return meta


def _spaces(meta: Mapping[str, Any]) -> tuple[Any, Any]:
    from gymnasium import spaces

    obs = spaces.Box(0.0, 1.0, tuple(meta["observation"]["shape"]), dtype=np.float32)
    act = meta["action"]
    if act["kind"] == "multi":
        return obs, spaces.MultiDiscrete(act["nvec"])
    return obs, spaces.Discrete(int(act["n"]))


def build_policy(meta: Mapping[str, Any], state: Mapping[str, Any] | None = None) -> Any:
    """The SB3 policy network a checkpoint describes (its weights from ``state``), on the CPU, in eval mode."""
    import importlib

    import torch

    module, name = POLICY_CLASSES[meta["algo"]]
    cls = getattr(importlib.import_module(module), name)
    kwargs = dict(meta.get("policy_kwargs") or {})
    act = kwargs.pop("activation_fn", None)
    if act is not None:
        if act not in ACTIVATIONS:
            raise PolicyError(f"unknown activation {act!r}; known: {', '.join(ACTIVATIONS)}")
        kwargs["activation_fn"] = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU, "elu": torch.nn.ELU,
                                   "leaky_relu": torch.nn.LeakyReLU}[act]
    obs_space, act_space = _spaces(meta)
    policy = cls(obs_space, act_space, lambda _: 0.0, **kwargs)
    if state is not None:
        policy.load_state_dict(state)
    policy.set_training_mode(False)
    return policy


@lru_cache(maxsize=16)
def _load(path: str, mtime_ns: int, size: int) -> tuple[dict[str, Any], Any]:
    """A policy file's metadata and network, once per process and file version."""
    import io

    import torch

    meta = read_meta(path)
    try:
        with zipfile.ZipFile(path) as archive:
            state = torch.load(io.BytesIO(archive.read("policy.pth")), map_location="cpu", weights_only=True)
        policy = build_policy(meta, state)
    except PolicyError:
        raise
    except Exception as e:  # a damaged or foreign state dict: name the file, not torch's internals
        raise PolicyError(f"{path}: cannot rebuild the policy network ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:300]})") from None
    return meta, policy


def load_policy(path: str | Path) -> tuple[dict[str, Any], Any]:
    """``(metadata, SB3 policy network)`` of a policy file (cached per process)."""
    p = Path(path).expanduser().resolve()
    if not p.is_file():
        read_meta(p)  # raises, naming the file
    st = p.stat()
    return _load(str(p), st.st_mtime_ns, st.st_size)


def knob_distributions(dist: Any) -> list[Any]:
    """The torch ``Categorical`` of each knob (one for a flat action) in an SB3 policy's action distribution: SB3's
    multi-categorical keeps them in ``.distribution``, sb3-contrib's masked one in ``.distributions``."""
    parts = getattr(dist, "distributions", None) or dist.distribution
    return parts if isinstance(parts, list) else [parts]


class LearnedBrain:
    """A saved policy playing a seat.

    Args:
        path: the policy file.
        role: the seat's role (``attacker`` / ``defender``).
        knobs: the seat's knobs (checked against the policy's).
        rng: the generator a stochastic brain samples with.
        stochastic: sample actions instead of playing the most likely one.
        where: how errors name the seat.
    """

    def __init__(self, path: str | Path, role: str, knobs: Sequence[Knob], rng: np.random.Generator | None = None,
                 stochastic: bool = False, where: str = "this seat") -> None:
        self.path = Path(path)
        self.meta = check_policy(path, role, knobs, stochastic, where)
        self.meta, self.policy = load_policy(path)
        self.knobs = tuple(knobs)
        self.stochastic = stochastic
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.multi = self.meta["action"]["kind"] == "multi"
        k = stack_of(self.meta)
        self.stack = ObsStack(k, observation_size(SeatInfo(role, self.knobs))) if k > 1 else None

    def observe(self, obs: np.ndarray) -> np.ndarray:
        """What the network reads for this observation (the stack of the episode's last ones, with memory)."""
        return self.stack(obs) if self.stack is not None else np.asarray(obs, dtype=np.float32)

    def probabilities(self, obs: np.ndarray) -> list[np.ndarray]:
        """The policy's action distribution: one probability vector per knob (``multi``) or one over flat actions."""
        import torch

        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs, dtype=np.float32).reshape(1, -1))
            return [d.probs[0].double().numpy() for d in knob_distributions(self.policy.get_distribution(x))]

    def __call__(self, obs: np.ndarray) -> int:
        obs = self.observe(obs)
        if self.stochastic:
            picks = []
            for p in self.probabilities(obs):
                p = p / p.sum()
                picks.append(int(self.rng.choice(len(p), p=p)))
        else:
            action, _ = self.policy.predict(np.asarray(obs, dtype=np.float32), deterministic=True)
            picks = np.asarray(action).reshape(-1).tolist()
        return encode_action(self.knobs, picks) if self.multi else int(picks[0])


def load_brain(path: str | Path, env: Any, seat: str, deterministic: bool = True,
               rng: np.random.Generator | None = None) -> Callable[[np.ndarray], Any]:
    """A policy file as the brain of ``seat`` in ``env`` (a scenario's env: ``obs -> action``; what ``extractgym
    eval`` calls for a ``--policy FILE``).

    Raises:
        PolicyError: the file is missing or not a policy, or it was trained for a seat with other spaces (the
            message names both).
    """
    if seat not in env.seat_info:
        raise PolicyError(f"unknown seat {seat!r}; this scenario's seats: {', '.join(env.possible_agents)}")
    info = env.seat_info[seat]
    return LearnedBrain(path, info.role, info.knobs, rng=rng, stochastic=not deterministic,
                        where=f"{seat} of {env.factory.name!r}")
