"""Name -> entry registries for attackers, defenders and attacker tactics (the keys scenario YAML uses).

Plain dicts, filled by the ``register_*`` decorators when ``extractgym.agents`` is imported; a miss raises
``ValueError`` naming the known keys, like stable-baselines3's ``policy_aliases``. An entry is a class, or a
:class:`Preset`: a class with some keyword arguments fixed (``register_preset(ATTACKERS, "jba-pgd", JacobianAttacker,
method="jba-pgd", switch_method=False)``), which is called like a class and whose parameter schema is the class's
without the fixed ones. No subclass is generated.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, create_model

T = TypeVar("T")

ATTACKERS: dict[str, Any] = {}
DEFENDERS: dict[str, Any] = {}
TACTICS: dict[str, Any] = {}  # attacker tactics (extractgym.agents.tactics), keyed as scenario ``tactics:`` keys


@dataclass(frozen=True, eq=False)  # hashed by identity: one registry entry
class Preset:
    """A registered body: ``cls`` with ``fixed`` keyword arguments (the paper's variant of a general body).

    Calling it builds ``cls(**fixed, **params)``; the instance's ``registry_name`` is the preset's name.
    """

    name: str
    cls: type
    fixed: Mapping[str, Any] = field(default_factory=dict)
    doc: str = ""

    def __post_init__(self) -> None:
        accepted = _own_parameters(self.cls)
        unknown = sorted(set(self.fixed) - set(accepted))
        if unknown:
            raise ValueError(f"preset {self.name!r}: {self.cls.__name__} has no parameter(s) {', '.join(unknown)}")

    def __call__(self, **params: Any) -> Any:
        clash = sorted(set(params) & set(self.fixed))
        if clash:
            raise ValueError(f"{self.name} fixes {', '.join(clash)}; use the general body to set it")
        body = self.cls(**self.fixed, **params)
        body.registry_name = self.name
        return body

    @property
    def label(self) -> str:
        """The class and its fixed arguments (what ``extractgym list`` shows)."""
        return f"{self.cls.__name__}({', '.join(f'{k}={v!r}' for k, v in self.fixed.items())})"

    @property
    def summary(self) -> str:
        return self.doc or self.cls.__doc__ or ""


def _register(table: dict[str, Any], kind: str, name: str) -> Callable[[type[T]], type[T]]:
    def deco(cls: type[T]) -> type[T]:
        if name in table:
            raise ValueError(f"{kind} {name!r} is registered twice ({describe(table[name])[0]} and {cls.__name__})")
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


def register_preset(table: dict[str, Any], name: str, cls: type, doc: str = "", **fixed: Any) -> Preset:
    """Register ``cls`` with ``fixed`` keyword arguments under ``name`` (in ``ATTACKERS`` or ``DEFENDERS``)."""
    if name in table:
        raise ValueError(f"{name!r} is registered twice")
    preset = Preset(name, cls, fixed, inspect.cleandoc(doc))
    table[name] = preset
    return preset


def lookup(table: dict[str, Any], kind: str, name: str) -> Any:
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown {kind} {name!r}; known {kind}s: {', '.join(sorted(table))}") from None


def describe(entry: Any) -> tuple[str, str]:
    """``(class label, first line of its documentation)`` of a registry entry."""
    label = entry.label if isinstance(entry, Preset) else entry.__name__
    doc = entry.summary if isinstance(entry, Preset) else (entry.__doc__ or "")
    lines = doc.strip().splitlines()
    return label, lines[0] if lines else ""


def body_class(entry: Any) -> type:
    """The class an entry builds."""
    return entry.cls if isinstance(entry, Preset) else entry


def _own_parameters(cls: type) -> dict[str, inspect.Parameter]:
    found = _SIGNATURES.get(cls)
    if found is None or found[0] is not cls.__init__:  # once per class (every episode's bodies are built from it)
        found = _SIGNATURES[cls] = (cls.__init__, {n: p for n, p in inspect.signature(cls.__init__).parameters.items()
                                                   if n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)})
    return dict(found[1])


_SIGNATURES: dict[type, tuple[Any, dict[str, inspect.Parameter]]] = {}


def parameters(entry: Any) -> dict[str, inspect.Parameter]:
    """The constructor's keyword parameters a scenario may set: the body's parameter schema (a preset's fixed
    ones excluded)."""
    fixed = entry.fixed if isinstance(entry, Preset) else {}
    context = getattr(body_class(entry), "context_args", ())  # given by the caller, not the scenario (brains)
    return {n: p for n, p in _own_parameters(body_class(entry)).items() if n not in fixed and n not in context}


def type_hints(entry: Any, include_extras: bool = False) -> dict[str, Any]:
    """The constructor's type hints (with ``Annotated`` metadata if asked)."""
    return typing.get_type_hints(body_class(entry).__init__, include_extras=include_extras)


def build(table: dict[str, Any], kind: str, name: str, params: dict[str, Any]) -> Any:
    """Instantiate ``name`` with ``params``, naming any unknown parameter and the accepted ones."""
    entry = lookup(table, kind, name)
    accepted = parameters(entry)
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"{kind} {name!r} has no parameter(s) {', '.join(unknown)}; "
                         f"accepted: {', '.join(accepted) or '(none)'}")
    return entry(**params)


# -- the parameter schema (what a scenario's `params:` are validated and coerced by) ---------------------------
@lru_cache(maxsize=None)
def params_model(entry: Any) -> type[BaseModel]:
    """A pydantic model of a body's constructor keywords (their type hints and defaults)."""
    hints = type_hints(entry)
    fields = {n: (hints.get(n, Any), ... if p.default is p.empty else p.default) for n, p in parameters(entry).items()}
    return create_model(f"{body_class(entry).__name__}Params",
                        __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True), **fields)


def validated_params(entry: Any, params: dict[str, Any]) -> dict[str, Any]:
    """``params`` as the body's constructor will receive them: validated and coerced by its type hints
    (``queries_per_round: "40"`` arrives as 40), only the keys the scenario gave."""
    model = params_model(entry).model_validate(params)
    return {k: getattr(model, k) for k in params}


def full_params(entry: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Every constructor keyword's value: the given ones, then the defaults."""
    return {n: params.get(n, p.default) for n, p in parameters(entry).items()}
