"""Record every shipped scenario's ``summary.json`` (seeds 0 and 1, wall time dropped) or compare two recordings.

What a refactor that must not change behaviour is checked with: record before, record after, compare.

    python benchmarks/compare_summaries.py record OUT_BEFORE [SCENARIO ...]
    python benchmarks/compare_summaries.py record OUT_AFTER
    python benchmarks/compare_summaries.py compare OUT_BEFORE OUT_AFTER

``compare`` prints, per file, the fields that differ (nested paths) and the count of files that differ.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def record(out: Path, names: list[str]) -> None:
    from extractgym.scenarios import make_env
    from extractgym.scenarios.runner import play_episode
    from extractgym.scenarios.schema import shipped_scenarios

    out.mkdir(parents=True, exist_ok=True)
    for name in names or sorted(n for n in shipped_scenarios() if not n.endswith("-remote")):
        for seed in (0, 1):
            start = time.time()
            s = play_episode(make_env(name, seed=seed), seed=seed)
            s.pop("wall_seconds", None)
            (out / f"{name}-{seed}.json").write_text(json.dumps(s, indent=1, sort_keys=True, default=float))
            print(f"{name} seed {seed}: {time.time() - start:.1f}s, digest {s['ledger_digest'][:12]}", flush=True)


def diff(path: str, a: Any, b: Any, out: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{path}.{k}: {'added' if k not in a else 'removed'}")
            else:
                diff(f"{path}.{k}", a[k], b[k], out)
    elif a != b:
        out.append(f"{path}: {a} -> {b}")


def compare(before: Path, after: Path) -> int:
    differing = 0
    for f in sorted(after.glob("*.json")):
        if not (before / f.name).exists():
            print(f"{f.name}: not in {before}")
            continue
        out: list[str] = []
        diff("", json.loads((before / f.name).read_text()), json.loads(f.read_text()), out)
        print(f"{f.name}: {'same' if not out else '; '.join(out[:8])}")
        differing += bool(out)
    print(f"files differing: {differing}")
    return differing


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "record":
        record(Path(sys.argv[2]), sys.argv[3:])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        compare(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        print(__doc__)
        sys.exit(2)
