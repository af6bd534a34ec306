"""Guard rails on the package's shape: imports point one way, every subpackage ships, nothing points outside.

The layers, lowest first (each may import only from itself and the layers before it; in-function imports count):
``victims`` <- ``envs`` <- ``agents`` <- ``scenarios`` <- ``league`` <- ``training`` <- ``stress`` <- ``serve`` <-
``cli``.
A new top-level package must be given its place in :data:`LAYERS` (the test fails until it is).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("victims", "envs", "agents", "scenarios", "league", "training", "stress", "serve", "cli")
SKIP = {".venv", "tests", "benchmarks", "docs", "build", "dist", ".git"}


def _modules() -> dict[str, Path]:
    """Every module of the package, by dotted name (``extractgym.envs.api``)."""
    out = {}
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[0] in SKIP or any(p.startswith(".") or p.endswith(".egg-info") for p in rel.parts):
            continue
        parts = ["extractgym", *rel.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(path: Path, module: str) -> set[str]:
    """The ``extractgym`` modules a file imports, anywhere in it (relative imports resolved)."""
    found = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "extractgym")
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([base] if base else [])])
            if base.split(".")[0] == "extractgym":
                found.add(base)
                found.update(f"{base}.{a.name}" for a in node.names)  # `from pkg import module`
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_top_level_package_has_a_layer() -> None:
    packages = {_layer(m) for m in _modules()} - {None}
    assert packages <= set(LAYERS), f"give {sorted(packages - set(LAYERS))} a place in LAYERS (tests/test_layers.py)"


def test_imports_point_down_the_layers() -> None:
    modules = _modules()
    rank = {name: i for i, name in enumerate(LAYERS)}
    upward = []
    for module, path in sorted(modules.items()):
        here = _layer(module)
        if here is None:  # the root package registers gym ids by string only
            continue
        for target in sorted(_imports(path, module)):
            there = _layer(target)
            if there is not None and there in rank and rank[there] > rank[here]:
                upward.append(f"{module} imports {target} ({here} is below {there})")
    assert not upward, "imports that point up a layer:\n" + "\n".join(upward)


def test_the_root_package_imports_nothing_heavy() -> None:
    """``import extractgym`` registers the Gymnasium ids by entry-point strings, importing no layer."""
    assert not {m for m in _imports(ROOT / "__init__.py", "extractgym") if _layer(m)}


def test_every_subpackage_is_listed_for_installation() -> None:
    """A non-editable install ships only the packages pyproject names: a new subpackage must be listed."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {m for m, p in _modules().items() if p.name == "__init__.py"}
    assert on_disk == listed, f"missing from pyproject: {sorted(on_disk - listed)}; gone: {sorted(listed - on_disk)}"


def test_nothing_points_outside_the_repository() -> None:
    """A clone has no ../shared/: the project documents itself (docs/)."""
    pattern = re.compile(r"\.\./shared|DESIGN\.md|STYLE\.md|REFERENCES\.md")
    offenders = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*")
                 if p.suffix in (".py", ".md", ".yaml", ".toml", ".html") and p.is_file()
                 and not ({*p.relative_to(ROOT).parts} & {".venv", ".git", "runs"})
                 and p != Path(__file__).resolve() and pattern.search(p.read_text(encoding="utf-8", errors="ignore"))]
    assert not offenders, f"files that point outside the repository: {offenders}"
