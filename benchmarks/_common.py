"""Small helpers shared by the benchmark scripts (not part of the library).

Each script keeps its own ``Args`` dataclass and linear ``main()``; this module only turns ``Args`` into a
command line, pins torch's thread count, prints tables and writes ``benchmarks/out/<name>.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

OUT_DIR = Path(__file__).resolve().parent / "out"


def parse_args(cls: type) -> Any:
    """``--field value`` for every field of the dataclass ``cls`` (type taken from the default value)."""
    parser = argparse.ArgumentParser(description=(sys.modules["__main__"].__doc__ or "").strip().splitlines()[0])
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        flag = "--" + f.name.replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes", "on"), default=default,
                                metavar="BOOL", help=f"(default: {default})")
        elif isinstance(default, tuple):
            kind = type(default[0]) if default else str
            parser.add_argument(flag, type=kind, nargs="+", default=default,
                                help=f"(default: {' '.join(map(str, default))})")
        else:
            kind = str if default is None else type(default)
            parser.add_argument(flag, type=kind, default=default, help=f"(default: {default})")
    ns = parser.parse_args()
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(ns).items()})


def set_torch_threads(n: int) -> int:
    """Pin torch's intra-op threads (``n <= 0`` keeps torch's default); return the count in use."""
    import torch

    if n > 0:
        torch.set_num_threads(n)
    return torch.get_num_threads()


def machine() -> dict[str, Any]:
    import torch

    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "loadavg_1m_at_start": round(load, 2)}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (``q`` in [0, 1])."""
    if not values:
        return float("nan")
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:
            return "nan"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3f}"
    return str(v)


def print_table(title: str, header: list[str], rows: list[list[Any]]) -> None:
    cells = [header] + [[fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))


def write_json(name: str, args: Any, results: dict[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    payload = {"benchmark": name, "args": dataclasses.asdict(args), "machine": machine(), **results}
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nwrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    return path


def top_functions(profile: Any, n: int, sort: str = "tottime") -> list[dict[str, Any]]:
    """The ``n`` heaviest functions of a ``cProfile.Profile`` by ``sort`` (tottime or cumtime), with % of total."""
    import pstats

    st = pstats.Stats(profile)
    total = st.total_tt or 1e-12
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in st.stats.items():  # type: ignore[attr-defined]
        rows.append({"function": f"{_short(file)}:{line}({func})", "calls": nc, "tottime_s": tt, "cumtime_s": ct,
                     "tottime_pct": 100 * tt / total, "cumtime_pct": 100 * ct / total})
    rows.sort(key=lambda r: r[f"{sort}_s"], reverse=True)
    return rows[:n]


def _short(file: str) -> str:
    if file == "~":
        return "<built-in>"
    p = Path(file)
    parts = p.parts
    for anchor in ("site-packages", "main"):
        if anchor in parts:
            i = len(parts) - 1 - parts[::-1].index(anchor)
            return "/".join(parts[i + 1:])
    return "/".join(parts[-2:])


def callees(profile: Any, file_suffix: str, func: str) -> tuple[float, list[dict[str, Any]]]:
    """Direct callees of the function ``func`` defined in a file ending with ``file_suffix``: each one's cumulative
    time *when called from it*, as % of its cumulative time. Returns ``(its cumtime, rows)``; the remainder is
    its own time (``<self>``)."""
    import pstats

    st = pstats.Stats(profile)
    stats = st.stats  # type: ignore[attr-defined]
    key = next((k for k in stats if k[0].endswith(file_suffix) and k[2] == func), None)
    if key is None:
        return 0.0, []
    _cc, _nc, tt, ct, _ = stats[key]
    rows = [{"function": "<self>", "calls": _nc, "cumtime_s": tt, "cumtime_pct": 100 * tt / ct}]
    for callee, (_c, nc, _t, cum, callers) in stats.items():
        if key in callers:
            c_cc, c_nc, c_tt, c_ct = callers[key]
            rows.append({"function": f"{_short(callee[0])}:{callee[1]}({callee[2]})", "calls": c_nc,
                         "cumtime_s": c_ct, "cumtime_pct": 100 * c_ct / ct})
    rows.sort(key=lambda r: r["cumtime_s"], reverse=True)
    return ct, rows
