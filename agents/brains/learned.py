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
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from extractgym.envs.game import observation_size
from extractgym.envs.protocols import Knob, SeatInfo, encode_action
from extractgym.victims import files

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


# what a policy file may hold (victims/files.py checks them before anything is extracted)
MAX_META_BYTES = 64 * 2**10
MAX_WEIGHTS_BYTES = 64 * 2**20
MAX_PARAMETERS = 10_000_000


class _Knob(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    name: str = Field(max_length=100)
    choices: list[Annotated[str, Field(max_length=200)]] = Field(min_length=1, max_length=1024)


class _Space(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    shape: list[Annotated[int, Field(ge=1, le=100_000)]] = Field(min_length=1, max_length=4)


class _Action(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: Literal["multi", "flat"]
    nvec: list[Annotated[int, Field(ge=1, le=100_000)]] | None = Field(None, max_length=64)
    n: int | None = Field(None, ge=1, le=10_000_000)

    @model_validator(mode="after")
    def _sized(self) -> _Action:
        if (self.kind == "multi") != (self.nvec is not None) or (self.kind == "flat") != (self.n is not None):
            raise ValueError("a 'multi' action has 'nvec', a 'flat' one 'n'")
        return self


class _PolicyKwargs(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    net_arch: list[Annotated[int, Field(ge=1, le=4096)]] | dict[
        Literal["pi", "vf", "qf"], Annotated[list[Annotated[int, Field(ge=1, le=4096)]], Field(max_length=8)]] = Field(
        default_factory=list, max_length=8)
    activation_fn: Literal["tanh", "relu", "elu", "leaky_relu"] | None = None


class _Meta(BaseModel):
    """The schema of ``extractgym.json`` (extra keys, e.g. training settings and versions, are kept as they are)."""

    model_config = ConfigDict(extra="allow", strict=True)
    format: int
    algo: str = Field(max_length=40)
    role: Literal["attacker", "defender"]
    seat: str = Field(max_length=100)
    scenario: str = Field("?", max_length=200)
    knobs: list[_Knob] = Field(max_length=64)
    observation: _Space
    action: _Action
    policy_kwargs: _PolicyKwargs | None = None

    @model_validator(mode="after")
    def _small_enough(self) -> _Meta:
        """The network the metadata describes is built before its weights are read: bound its size first."""
        inputs = int(np.prod(self.observation.shape))
        outputs = sum(self.action.nvec) if self.action.nvec is not None else int(self.action.n or 1)
        arch = self.policy_kwargs.net_arch if self.policy_kwargs is not None else [64, 64]
        towers = list(arch.values()) if isinstance(arch, dict) else [arch, arch]
        size = sum(sum(a * b for a, b in zip([inputs, *t], [*t, outputs], strict=True)) for t in towers)
        if size > MAX_PARAMETERS:
            raise ValueError(f"the network it describes has about {size} parameters; at most {MAX_PARAMETERS}")
        return self


def _open(path: Path) -> files.SafeZip:
    return files.SafeZip(path, "policy", {META: MAX_META_BYTES, "policy.pth": MAX_WEIGHTS_BYTES},
                         default_limit=4 * MAX_WEIGHTS_BYTES, total=8 * MAX_WEIGHTS_BYTES,
                         max_file=8 * MAX_WEIGHTS_BYTES, error=PolicyError)


def read_meta(path: str | Path) -> dict[str, Any]:
    """The ``extractgym.json`` of a policy file, checked against its schema; :class:`PolicyError` if the file is
    missing, not a policy, too large, a zip bomb, or its metadata is malformed."""
    path = Path(path).expanduser()
    if not path.exists():
        raise PolicyError(f"policy file {path} not found")
    with _open(path) as archive:
        if META not in archive:
            what = "a stable-baselines3 model without extractgym metadata" if "data" in archive else "not a policy"
            raise PolicyError(f"{path}: {what} (no {META}); save policies with extractgym train or "
                              f"extractgym.training.policies.save_policy")
        if "policy.pth" not in archive:
            raise PolicyError(f"{path}: no policy.pth (the network's weights) in the file")
        text = files.decode(archive.read(META), f"{path}: {META}", PolicyError)
    try:
        meta = json.loads(text, parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:
        raise PolicyError(f"{path}: {META} is not valid JSON ({files.clip(str(e), 160)})") from None
    if not isinstance(meta, dict):
        raise PolicyError(f"{path}: {META} must hold a JSON object, got {type(meta).__name__}")
    files.check_size(meta, f"{path}: {META}", PolicyError)
    try:
        parsed = _Meta.model_validate(meta)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or '(top)'}: {files.clip(err['msg'], 120)}"
                             for err in e.errors()[:5])
        missing = [k for k in ("format", "algo", "role", "seat", "knobs", "observation", "action") if k not in meta]
        raise PolicyError(f"{path}: {META} " + (f"lacks {', '.join(missing)}" if missing else f"is malformed: {problems}"))
    if parsed.format != FORMAT:
        raise PolicyError(f"{path}: policy format {parsed.format!r}; this extractgym reads format {FORMAT}")
    if parsed.algo not in POLICY_CLASSES:
        raise PolicyError(f"{path}: unknown algorithm {files.short(parsed.algo)}; known: {', '.join(POLICY_CLASSES)}")
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


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


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
    """Everything a run would check, before an episode: the file, its metadata, the seat's fit, the option, and
    the network rebuilt with its weights (so ``validate`` refuses exactly the files ``run`` would)."""
    meta = read_meta(path)
    check_seat(meta, path, role, knobs, where)
    load_policy(path)
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
    """A policy file's metadata and network, once per process and file version: the weights member read in bounded
    chunks, loaded with ``weights_only=True`` (tensors only: a pickle of anything else is refused), and checked for
    exactly the network's names and shapes and finite values before they are used."""
    import io

    import torch

    meta = read_meta(path)
    with _open(Path(path)) as archive:
        raw = archive.read("policy.pth")
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle of something that is not tensors, or a damaged file: name the file
        raise PolicyError(f"{path}: policy.pth is not a file of tensors ({type(e).__name__}: "
                          f"{files.clip(str(e).splitlines()[0] if str(e) else '', 300)})") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise PolicyError(f"{path}: policy.pth must map parameter names to tensors")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise PolicyError(f"{path}: policy.pth holds NaN or inf in {', '.join(map(files.short, bad[:3]))}")
    if sum(v.numel() for v in state.values()) > MAX_PARAMETERS:
        raise PolicyError(f"{path}: policy.pth holds more than {MAX_PARAMETERS} parameters")
    try:
        policy = build_policy(meta)
        own = policy.state_dict()
        wrong = sorted(set(own) ^ set(state)) or [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
        if wrong:
            raise PolicyError(f"{path}: policy.pth does not match the network its metadata describes "
                              f"({', '.join(map(files.short, wrong[:3]))})")
        policy.load_state_dict(state)
    except PolicyError:
        raise
    except Exception as e:  # a damaged or foreign state dict: name the file, not torch's internals
        raise PolicyError(f"{path}: cannot rebuild the policy network ({type(e).__name__}: "
                          f"{files.clip(str(e).splitlines()[0] if str(e) else '', 300)})") from None
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
