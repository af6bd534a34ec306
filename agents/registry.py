"""Name -> class registries for attackers and defenders (the keys scenario YAML uses).

Plain dicts, filled by the ``register_*`` decorators when ``extractgym.agents`` is imported; a miss
raises ``ValueError`` naming the known keys, like stable-baselines3's ``policy_aliases``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

ATTACKERS: dict[str, type] = {}
DEFENDERS: dict[str, type] = {}
TACTICS: dict[str, type] = {}  # attacker tactics (extractgym.agents.tactics), keyed as scenario ``tactics:`` keys


def _register(table: dict[str, type], kind: str, name: str) -> Callable[[type[T]], type[T]]:
    def deco(cls: type[T]) -> type[T]:
        if name in table:
            raise ValueError(f"{kind} {name!r} is registered twice ({table[name].__name__} and {cls.__name__})")
        table[name] = cls
        cls.registry_name = name  # type: ignore[attr-defined]
        return cls

    return deco


def register_attacker(name: str) -> Callable[[type[T]], type[T]]:
    return _register(ATTACKERS, "attacker", name)


def register_defender(name: str) -> Callable[[type[T]], type[T]]:
    return _register(DEFENDERS, "defender", name)


def register_tactic(name: str) -> Callable[[type[T]], type[T]]:
    return _register(TACTICS, "tactic", name)


def lookup(table: dict[str, type], kind: str, name: str) -> type:
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; known {kind}s: {', '.join(sorted(table))}") from None


def parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The constructor's keyword parameters: the body's parameter schema."""
    return {n: p for n, p in inspect.signature(cls.__init__).parameters.items()
            if n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def build(table: dict[str, type], kind: str, name: str, params: dict[str, Any]) -> Any:
    """Instantiate ``name`` with ``params``, naming any unknown parameter and the accepted ones."""
    cls = lookup(table, kind, name)
    accepted = parameters(cls)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"{kind} {name!r} has no parameter(s) {', '.join(unknown)}; "
                         f"accepted: {', '.join(accepted) or '(none)'}")
    return cls(**params)
