"""What changed between two tournaments (``extractgym tournament-report --compare RUN_A RUN_B``).

Four things, from each folder's saved spec, rows, fingerprints and rankings (``report/rankings.json``, written by
its report; recomputed when absent): the spec (seeds, scenarios, contestants added, removed or changed, payoffs),
the code (the rows' fingerprints and, where both manifests are kept, the files and versions that differ), the
cells both played (how many give the same figures, and the largest payoff changes) and the rankings (each
contestant's score and rank per scope and method, and which ranks moved).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from extractgym.league import fingerprint as fps
from extractgym.league.runner import RESULTS, ResultsFile
from extractgym.league.spec import LeagueError


def _load(folder: Path) -> dict[str, Any]:
    from extractgym.league import tournament

    spec, raw, _, cells = tournament.load_saved(folder)
    rows, _ = ResultsFile(Path(folder) / RESULTS).load(repair=False)
    mine = {c.id: rows[c.id] for c in cells if c.id in rows}
    path = Path(folder) / "report" / "rankings.json"
    ranks = None
    if path.exists():
        try:
            ranks = json.loads(path.read_text()).get("rankings")
        except ValueError:
            ranks = None
    if ranks is None:
        from extractgym.league import analysis as an

        data = an.collect(spec, cells, mine)
        ranks = [{"scope": sr.scope, "side": r.side, "contestant": name, "method": m, "score": float(r.score[m][i]),
                  "ci_low": float(r.lo[m][i]), "ci_high": float(r.hi[m][i]), "rank": int(r.rank[m][i])}
                 for sr in an.rank_all(data, seed=spec.seed) for r in (sr.attacker, sr.defender)
                 for i, name in enumerate(r.names) for m in an.method_keys()]
    return {"folder": Path(folder), "spec": spec, "raw": raw, "cells": cells, "rows": mine, "rankings": ranks}


def _contestants(spec: Any, side: str) -> dict[str, dict[str, Any]]:
    roster = spec.attackers if side == "attacker" else spec.defenders
    return {c.name: c.model_dump(exclude={"name", "description"}) for c in roster}


def _same_summary(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.get("status") == b.get("status") and a.get("summary") == b.get("summary")


def compare(run_a: Path, run_b: Path) -> dict[str, Any]:
    """The differences between two tournament folders (module docstring), as plain data."""
    a, b = _load(run_a), _load(run_b)
    sa, sb = a["spec"], b["spec"]
    out: dict[str, Any] = {"a": str(run_a), "b": str(run_b), "spec": [], "code": [], "cells": {}, "rankings": []}
    if sa.name != sb.name:
        out["spec"].append(f"league {sa.name!r} -> {sb.name!r}")
    if sa.seeds != sb.seeds:
        out["spec"].append(f"seeds {sa.seeds} -> {sb.seeds}")
    if sa.seed != sb.seed:
        out["spec"].append(f"root seed {sa.seed} -> {sb.seed}")
    la, lb = [s.label for s in sa.scenarios], [s.label for s in sb.scenarios]
    for s in lb:
        if s not in la:
            out["spec"].append(f"scenario {s} added")
    for s in la:
        if s not in lb:
            out["spec"].append(f"scenario {s} removed")
    for s in set(la) & set(lb):
        ea, eb = (next(e for e in spec.scenarios if e.label == s).model_dump() for spec in (sa, sb))
        if ea != eb:
            out["spec"].append(f"scenario {s} changed: {_diff(ea, eb)}")
    for side in ("attacker", "defender"):
        ca, cb = _contestants(sa, side), _contestants(sb, side)
        out["spec"] += [f"{side} {n} added ({cb[n]['body']})" for n in cb if n not in ca]
        out["spec"] += [f"{side} {n} removed" for n in ca if n not in cb]
        out["spec"] += [f"{side} {n} changed: {_diff(ca[n], cb[n])}" for n in ca if n in cb and ca[n] != cb[n]]
    if sa.payoff != sb.payoff:
        out["spec"].append(f"payoff {sa.payoff.model_dump()} -> {sb.payoff.model_dump()}")
    if sa.rankings != sb.rankings:
        out["spec"].append(f"rankings settings {sa.rankings.model_dump()} -> {sb.rankings.model_dump()}")
    # code
    prints = [_prints(x["rows"]) for x in (a, b)]
    out["code"].append(f"fingerprints of the rows: A {_shown(prints[0])}; B {_shown(prints[1])}")
    if prints[0] and prints[1]:
        main_a, main_b = (max(p, key=p.get) for p in prints)
        if main_a != main_b:
            ma, mb = fps.load_manifests(a["folder"]).get(main_a), fps.load_manifests(b["folder"]).get(main_b)
            if ma and mb:
                new = fps.Fingerprint(main_b, mb.get("files", {}), mb.get("versions", {}))
                out["code"].append(f"code {main_a} -> {main_b}: {fps.changes(ma, new)}")
            else:
                out["code"].append(f"code {main_a} -> {main_b} (no manifest kept for one of them)")
        else:
            out["code"].append("the same code played both")
    # cells both played
    shared = sorted(set(a["rows"]) & set(b["rows"]))
    same = [cid for cid in shared if _same_summary(a["rows"][cid], b["rows"][cid])]
    changed = []
    for cid in shared:
        ra, rb = a["rows"][cid], b["rows"][cid]
        if cid in same or ra.get("status") != "ok" or rb.get("status") != "ok":
            continue
        ret_a, ret_b = ra["summary"].get("returns", {}), rb["summary"].get("returns", {})
        delta = max((abs((ret_b.get(k) or 0.0) - (ret_a.get(k) or 0.0)) for k in set(ret_a) | set(ret_b)),
                    default=0.0)
        changed.append((delta, f"{rb['scenario']} {rb['attacker']} x {rb['defender']} #{rb['replicate']}"))
    changed.sort(reverse=True)
    out["cells"] = {"only_a": len(set(a["rows"]) - set(b["rows"])), "only_b": len(set(b["rows"]) - set(a["rows"])),
                    "shared": len(shared), "same": len(same),
                    "largest_changes": [{"cell": name, "return_change": d} for d, name in changed[:5]]}
    # rankings
    key = lambda r: (r["scope"], r["side"], r["contestant"], r["method"])  # noqa: E731
    ra_map = {key(r): r for r in a["rankings"]}
    for r in b["rankings"]:
        old = ra_map.get(key(r))
        if old is None:
            continue
        moved = old["rank"] != r["rank"]
        if moved or _changed(old["score"], r["score"]):
            out["rankings"].append({"scope": r["scope"], "side": r["side"], "contestant": r["contestant"],
                                    "method": r["method"], "score": [old["score"], r["score"]],
                                    "rank": [old["rank"], r["rank"]], "moved": moved})
    return out


def _changed(x: Any, y: Any) -> bool:
    if x is None or y is None:
        return x is not y
    return not math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-12)


def _prints(rows: dict[str, dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows.values():
        out[r.get("fingerprint") or "none"] = out.get(r.get("fingerprint") or "none", 0) + 1
    return out


def _shown(prints: dict[str, int]) -> str:
    return ", ".join(f"{k} ({n} rows)" for k, n in sorted(prints.items(), key=lambda kv: -kv[1])) or "no rows"


def _diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    return "; ".join(f"{k} {json.dumps(a.get(k), default=str)} -> {json.dumps(b.get(k), default=str)}" for k in keys)


def render(result: dict[str, Any], limit: int = 40) -> str:
    """The comparison as text (what the CLI prints and writes to ``compare.md``)."""
    lines = [f"# {result['b']} compared with {result['a']}", "", "## Spec"]
    lines += [f"- {x}" for x in result["spec"]] or ["- unchanged"]
    lines += ["", "## Code"] + [f"- {x}" for x in result["code"]]
    c = result["cells"]
    lines += ["", "## Cells",
              f"- {c['shared']} played by both ({c['same']} with identical figures), {c['only_a']} only in A, "
              f"{c['only_b']} only in B"]
    lines += [f"- {x['cell']}: returns changed by up to {x['return_change']:.4f}" for x in c["largest_changes"]]
    moved = [r for r in result["rankings"] if r["moved"]]
    lines += ["", f"## Rankings ({len(moved)} rank(s) moved, {len(result['rankings']) - len(moved)} score(s) changed "
                  f"without moving)"]
    for r in moved[:limit]:
        lines.append(f"- {r['scope']} {r['side']} {r['contestant']} {r['method']}: rank {r['rank'][0]} -> "
                     f"{r['rank'][1]}, score {_num(r['score'][0])} -> {_num(r['score'][1])}")
    if len(moved) > limit:
        lines.append(f"- ... and {len(moved) - limit} more (compare.json)")
    return "\n".join(lines) + "\n"


def _num(v: Any) -> str:
    return "–" if v is None else f"{float(v):.3f}"


def write(result: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """``folder/compare.json`` and ``folder/compare.md``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "compare.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (folder / "compare.md").write_text(render(result))
    return folder / "compare.json", folder / "compare.md"


__all__ = ["LeagueError", "compare", "render", "write"]
