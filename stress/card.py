"""The defence card: ``card.json`` and an offline ``card.html`` (figures inlined as PNG, no script, no CDN).

``card.json`` keys (docs/stress.md explains each figure):

* ``threat_model``: the attacker's budgets (queries, money, accounts), the data it holds, the API interface
  (services, output formats, prices, account terms, rounds), the attacker as composed and the defence;
* ``passive`` / ``adaptive``: the scenario's preset attacker and the strongest one the search found, each on the
  held-out seeds: mean return +- SE, accuracy, cost, queries, accounts opened and banned, and the defence's own
  costs in those episodes (``defence_costs``: false-positive rate overall and by benign source, benign customers'
  value share, the owner's benign revenue, benign queries refused);
* ``gap``: the paired mean of adaptive minus passive on the held-out seeds, ``gap_se``, ``gap_ci`` (95% t-interval),
  ``p_better`` (one-sided);
* ``undefended``: the passive and the adaptive attacker replayed on the same held-out seeds with the defence
  removed (``status``, ``passive``, ``adaptive``, ``gap``, ``gap_se``, ``gap_ci``, ``p_better``; no replay on a
  scenario with no defence, with ``--no-undefended``, or when a policy cannot be replayed: ``note`` says which);
* ``erosion``: per seed, (adaptive - passive) with the defence minus (adaptive - passive) without it: ``mean``,
  ``se``, ``ci`` (95% t-interval), ``p_better`` (one-sided, that the defence gives adaptation something), the
  ``per_seed`` values; 0 by construction on an undefended scenario (no interval);
* ``verdict``: one sentence on both (``gap_verdict``, ``erosion_verdict``);
* ``strategy``: what the adaptive attacker is (tactics added, policy, kind), a sentence, and its knob trace round by
  round on the first held-out seeds beside the opponents' hidden draws;
* ``search``: every candidate's mean on the search seeds, the learning curve (best so far against CPU-seconds), the
  RL runs, the finalists' held-out figures, what was skipped, and the CPU spent.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

TRACE_SEEDS = 3


def _mean(values: list[float]) -> float | None:
    v = [x for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else None


def defence_costs(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """What the defence cost its owner in these episodes: false positives (overall, by benign source), the benign
    customers' value share, benign revenue, benign queries refused."""
    sources: dict[str, list[float]] = {}
    for s in summaries:
        for src, rate in (s.get("false_positive_rate_by_source") or {}).items():
            sources.setdefault(src, []).append(float(rate))
    return {"false_positive_rate": _mean([s.get("false_positive_rate") for s in summaries]),
            "false_positive_rate_by_source": {k: _mean(v) for k, v in sorted(sources.items())},
            "benign_value_share": _mean([s.get("benign_value_share") for s in summaries]),
            "benign_revenue": _mean([s.get("benign_revenue") for s in summaries]),
            "benign_rejected": _mean([s.get("benign_rejected") for s in summaries])}


def side(res: Any, seat: str) -> dict[str, Any]:
    """One attacker's held-out figures."""
    per = [s["attackers"][seat] for s in res.summaries]
    out = {"name": res.name, "mean": res.mean, "se": res.se, "returns": res.returns.tolist(),
           "accuracy": _mean([p["accuracy"] for p in per]), "cost": _mean([p["cost"] for p in per]),
           "queries": _mean([p["queries"] for p in per]), "accounts_created": _mean([p["accounts_created"] for p in per]),
           "accounts_banned": _mean([p["accounts_banned"] for p in per]), "defence_costs": defence_costs(res.summaries)}
    if res.types:
        by = res.by_type()
        out["by_type"] = {t: {"mean": float(v.mean()), "seeds": len(v)} for t, v in by.items()}
    return out


def describe_strategy(cand: Any, res: Any, seat: str) -> str:
    """A sentence on what the adaptive attacker does (from its candidate and its held-out trace)."""
    what = {"passive": "the scenario's preset attack", "preset": "the body's preset", "script": f"the script {cand.policy}",
            "random": "uniformly random knob choices", "constant": f"one constant action ({cand.policy[9:]})",
            "rl-scratch": "a policy learned by maskable PPO from a random network",
            "rl-imitate": "a policy learned by maskable PPO from a clone of a script"}.get(cand.kind, cand.kind)
    tactics = f" with the {', '.join(cand.variant)} tactic{'s' if len(cand.variant) > 1 else ''} added" \
        if cand.variant else ""
    moves = Counter()
    for log in res.traces[:TRACE_SEEDS]:
        rounds = log.get(seat, [])
        for a, b in zip(rounds, rounds[1:], strict=False):
            moves.update(k for k in a if a[k] != b[k])
    changes = (f"; between rounds it changes {', '.join(k for k, _ in moves.most_common(3))}" if moves
               else "; it plays the same knob values every round")
    return f"{what}{tactics}{changes}"


def trace(res: Any, seat: str, n: int = TRACE_SEEDS) -> list[dict[str, Any]]:
    """The first ``n`` held-out seeds: the seat's knob values per round beside the other seats' (the hidden draws)."""
    out = []
    for i, log in enumerate(res.traces[:n]):
        out.append({"seed_index": i, "return": float(res.returns[i]), "rounds": log.get(seat, []),
                    "opponents": {s: v for s, v in log.items() if s != seat}})
    return out


def undefended_data(r: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The card's ``undefended`` and ``erosion`` entries (module docstring) from the undefended replay."""
    from extractgym.scenarios.evaluate import paired
    from extractgym.stress.search import gap_interval

    u = r.undefended
    status = u.status if u is not None else "skipped"
    note = u.note if u is not None else "no undefended replay"
    if status != "replayed":
        bare = {"status": status, "note": note}
        if status == "undefended scenario":  # the same game: nothing to replay, nothing to estimate
            return bare, {"status": "zero by construction", "mean": 0.0, "se": None, "ci": None, "p_better": None,
                          "per_seed": None, "note": "the scenario has no defence, so there is nothing to erode: the "
                                                    "gap against the preset is all the preset leaves on the table"}
        return bare, {"status": "not measured", "mean": None, "se": None, "ci": None, "p_better": None,
                      "per_seed": None, "note": note}
    gap, se, lo, hi = gap_interval(u.adaptive.returns, u.passive.returns)
    bare = {"status": status, "note": note, "passive": side(u.passive, r.seat), "adaptive": side(u.adaptive, r.seat),
            "gap": gap, "gap_se": se, "gap_ci": [lo, hi],
            "p_better": paired(u.adaptive.returns, u.passive.returns).p_better, "cpu_seconds": u.cpu_seconds}
    for s in (bare["passive"], bare["adaptive"]):
        s.pop("defence_costs")  # no defence, no cost to its owner
    defended = r.adaptive.returns - r.passive.returns
    without = u.adaptive.returns - u.passive.returns
    mean, ese, elo, ehi = gap_interval(defended, without)
    return bare, {"status": "measured", "mean": mean, "se": ese, "ci": [elo, ehi],
                  "p_better": paired(defended, without).p_better, "per_seed": (defended - without).tolist(),
                  "note": "(adaptive - passive) with the defence minus (adaptive - passive) without it, per held-out "
                          "seed"}


def gap_verdict(same: bool, lo: float, hi: float) -> str:
    return ("no attacker found that beats the preset on the search seeds" if same else
            "the adaptive attacker beats the preset (the interval excludes 0)" if lo > 0 else
            "the adaptive attacker's gain is not significant (the interval includes 0)" if hi >= 0 else
            "the preset did better on the held-out seeds")


def erosion_verdict(erosion: dict[str, Any]) -> str:
    if erosion["status"] == "zero by construction":
        return "the scenario has no defence, so the erosion is 0 by construction: the gap is what the preset leaves " \
               "on the table"
    if erosion["status"] != "measured":
        return f"the erosion was not measured ({erosion['note']})"
    lo, hi = erosion["ci"]
    if lo > 0:
        return "the defence gives adaptation more than the preset leaves on the table without it (the erosion's " \
               "interval excludes 0)"
    if hi < 0:
        return "the adaptive attacker's edge over the preset is larger without the defence (the erosion's interval " \
               "is below 0): the defence gives adaptation nothing"
    return "the erosion is not significant (its interval includes 0): against this defence, the adaptive attacker " \
           "gains no more over the preset than it does without it"


def card_data(r: Any) -> dict[str, Any]:
    from extractgym.scenarios.evaluate import paired
    from extractgym.stress.search import gap_interval

    gap, se, lo, hi = gap_interval(r.adaptive.returns, r.passive.returns)
    p = paired(r.adaptive.returns, r.passive.returns).p_better
    same = r.adaptive_candidate.kind == "passive"
    bare, erosion = undefended_data(r)
    verdicts = (gap_verdict(same, lo, hi), erosion_verdict(erosion))
    return {
        "scenario": r.scenario, "seat": r.seat, "held_out_seeds": int(len(r.passive.returns)),
        "threat_model": r.threat_model,
        "passive": side(r.passive, r.seat),
        "adaptive": side(r.adaptive, r.seat),
        "gap": gap, "gap_se": se, "gap_ci": [lo, hi], "p_better": p,
        "undefended": bare, "erosion": erosion,
        "verdict": f"{verdicts[0]}; {verdicts[1]}",
        "gap_verdict": verdicts[0], "erosion_verdict": verdicts[1],
        "strategy": {"name": r.adaptive_candidate.name, "kind": r.adaptive_candidate.kind,
                     "tactics_added": list(r.adaptive_candidate.variant), "policy": r.adaptive_candidate.policy,
                     "description": describe_strategy(r.adaptive_candidate, r.adaptive, r.seat),
                     "trace": trace(r.adaptive, r.seat)},
        "search": {"cpu_minutes_budget": r.config.cpu_minutes, "cpu_seconds": r.cpu_seconds,
                   "wall_seconds": r.wall_seconds, "search_seeds": r.config.search_seeds,
                   "candidates": [c.row() for c in sorted(r.candidates, key=lambda c: -c.mean)],
                   "learning_curve": r.curve,
                   "rl_runs": [{k: v for k, v in run.items() if k != "episodes"} for run in r.rl_runs],
                   "finalists": [{"name": c.name, "search_mean": c.mean, "held_out_mean": res.mean,
                                  "held_out_se": res.se,
                                  "gap_vs_passive": gap_interval(res.returns, r.passive.returns)[0]}
                                 for c, res in r.finalists],
                   "skipped": r.skipped},
    }


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return base64.b64encode(buf.getvalue()).decode()


def figures(r: Any, card: dict[str, Any], folder: Path) -> dict[str, str]:
    """The learning curve of the search (and of the RL runs), as PNG files and base64 for inlining."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = {}
    fig, axes = plt.subplots(1, 2 if r.rl_runs else 1, figsize=(11 if r.rl_runs else 6.5, 3.8), squeeze=False)
    ax = axes[0][0]
    curve = r.curve
    ax.plot([c["cpu_seconds"] for c in curve], [c["search_mean"] for c in curve], ".", color="tab:gray", alpha=0.5,
            label="candidates")
    ax.step([c["cpu_seconds"] for c in curve], [c["best_so_far"] for c in curve], where="post", color="tab:blue",
            label="best so far")
    ax.axhline(card["passive"]["mean"], color="tab:red", linestyle="--", label="passive (held-out)")
    ax.axhline(card["adaptive"]["mean"], color="tab:green", linestyle="--", label="adaptive (held-out)")
    ax.set_xlabel("CPU-seconds of search")
    ax.set_ylabel("mean return (search seeds)")
    ax.set_title("the search")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if r.rl_runs:
        from extractgym.training.plots import rolling

        ax = axes[0][1]
        for run in r.rl_runs:
            eps = run["episodes"]
            if eps:
                ax.plot([e["step"] for e in eps], rolling([e["return"] for e in eps], 50), label=run["kind"])
        ax.axhline(card["passive"]["mean"], color="tab:red", linestyle="--", label="passive")
        ax.set_xlabel("training steps (rounds)")
        ax.set_ylabel("training episode return (rolling 50)")
        ax.set_title("RL attackers")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(folder / "learning_curve.png", dpi=100)
    out["learning_curve"] = _png(fig)
    plt.close(fig)
    return out


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return "–" if math.isnan(v) else f"{v:.{digits}f}"
    return html.escape(str(v))


def render_html(card: dict[str, Any], pngs: dict[str, str]) -> str:
    e = html.escape
    tm = card["threat_model"]
    rows = []

    def table(head: list[str], body: list[list[Any]]) -> str:
        h = "".join(f"<th>{e(c)}</th>" for c in head)
        b = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in body)
        return f"<table><tr>{h}</tr>{b}</table>"

    p, a = card["passive"], card["adaptive"]
    lo, hi = card["gap_ci"]
    rows.append(f"<h1>Defence card: {e(card['scenario'])} ({e(card['seat'])})</h1>")
    rows.append(f"<p class=verdict><b>Gap {card['gap']:+.4f}</b> (95% interval [{lo:+.4f}, {hi:+.4f}], "
                f"one-sided p = {card['p_better']:.3g}, {card['held_out_seeds']} held-out seeds): "
                f"{e(card['gap_verdict'])}.</p>")
    ero = card["erosion"]
    if ero["status"] == "measured":
        elo, ehi = ero["ci"]
        rows.append(f"<p class=verdict><b>Erosion {ero['mean']:+.4f}</b> (95% interval [{elo:+.4f}, {ehi:+.4f}], "
                    f"one-sided p = {_fmt(ero['p_better'], 3)}; the gap {card['undefended']['gap']:+.4f} without the "
                    f"defence subtracted, seed by seed): {e(card['erosion_verdict'])}.</p>")
    else:
        rows.append(f"<p class=verdict><b>Erosion {'0' if ero['mean'] == 0 else '–'}</b>: "
                    f"{e(card['erosion_verdict'])}.</p>")
    rows.append("<p>The gap compares the strongest attacker found with the scenario's preset attack; part of it may "
                "be what the preset leaves on the table even with no defence. The erosion subtracts that part: it is "
                "what the defence gives away to an adaptive attacker.</p>")
    rows.append("<h2>Threat model</h2>")
    budget = tm["budget"]
    rows.append(table(["queries", "money", "accounts"], [[budget.get("queries"), budget.get("money"),
                                                        budget.get("accounts")]]))
    rows.append(f"<p>Data the attacker holds: {e(json.dumps(tm['data']))}. Attacker: {e(tm['attacker']['body'])} "
                f"with tactics {e(json.dumps(tm['attacker']['tactics']))}; {tm['interface']['rounds']} rounds.</p>")
    svc = tm["interface"]["services"]
    rows.append(table(list(svc[0].keys()), [list(s.values()) for s in svc]))
    rows.append(f"<p>Defence: {e(json.dumps(tm['defenders']))}</p>")
    rows.append("<h2>Passive and adaptive attacker (held-out seeds)</h2>")
    head = ["attacker", "return", "± SE", "accuracy", "cost", "queries", "accounts", "banned"]
    rows.append(table(head, [[s["name"], s["mean"], s["se"], s["accuracy"], s["cost"], s["queries"],
                              s["accounts_created"], s["accounts_banned"]] for s in (p, a)]))
    if "by_type" in a:
        types = sorted(set(a["by_type"]) | set(p.get("by_type", {})))
        rows.append("<h3>By the defence's hidden draw</h3>")
        rows.append(table(["type", "seeds", "passive", "adaptive"],
                          [[t, a["by_type"][t]["seeds"], p["by_type"].get(t, {}).get("mean"),
                            a["by_type"][t]["mean"]] for t in types]))
    u = card["undefended"]
    rows.append("<h2>Without the defence (same held-out seeds)</h2>")
    if u["status"] == "replayed":
        ulo, uhi = u["gap_ci"]
        rows.append(table(["attacker", "return", "± SE", "accuracy", "cost", "queries", "accounts", "banned"],
                          [[s["name"], s["mean"], s["se"], s["accuracy"], s["cost"], s["queries"],
                            s["accounts_created"], s["accounts_banned"]] for s in (u["passive"], u["adaptive"])]))
        rows.append(f"<p>Gap without the defence {u['gap']:+.4f} (95% interval [{ulo:+.4f}, {uhi:+.4f}]).</p>")
    else:
        rows.append(f"<p>Not replayed: {e(u['note'])}.</p>")
    rows.append("<h2>What the defence costs its owner</h2>")
    srcs = sorted(set(p["defence_costs"]["false_positive_rate_by_source"])
                  | set(a["defence_costs"]["false_positive_rate_by_source"]))
    head = ["against", "false positives", *[f"FP: {s}" for s in srcs], "value share", "benign revenue",
            "benign refused"]
    rows.append(table(head, [[s["name"], s["defence_costs"]["false_positive_rate"],
                              *[s["defence_costs"]["false_positive_rate_by_source"].get(x) for x in srcs],
                              s["defence_costs"]["benign_value_share"], s["defence_costs"]["benign_revenue"],
                              s["defence_costs"]["benign_rejected"]] for s in (p, a)]))
    st = card["strategy"]
    rows.append("<h2>The winning strategy</h2>")
    rows.append(f"<p><b>{e(st['name'])}</b>: {e(st['description'])}.</p>")
    for t in st["trace"]:
        others = "; ".join(f"{s}: " + " | ".join(",".join(f"{k}={v}" for k, v in r.items()) for r in rounds[:1])
                           for s, rounds in t["opponents"].items())
        rows.append(f"<p>held-out seed {t['seed_index']} (return {t['return']:.4f}; opponents: {e(others)})</p>")
        if t["rounds"]:
            keys = list(t["rounds"][0])
            rows.append(table(["round", *keys], [[i, *[r[k] for k in keys]] for i, r in enumerate(t["rounds"])]))
    rows.append("<h2>The search</h2>")
    if "learning_curve" in pngs:
        rows.append(f"<img alt='learning curve' src='data:image/png;base64,{pngs['learning_curve']}'>")
    s = card["search"]
    rows.append(f"<p>{s['cpu_seconds']:.0f} CPU-seconds of a {s['cpu_minutes_budget']} CPU-minute budget; "
                f"{len(s['candidates'])} candidates on {s['search_seeds']} search seeds.</p>")
    rows.append(table(["candidate", "kind", "search mean"],
                      [[c["name"], c["kind"], c["search_mean"]] for c in s["candidates"][:25]]))
    if s["finalists"]:
        rows.append("<h3>Runners-up on the held-out seeds</h3>")
        rows.append(table(["candidate", "search mean", "held-out mean", "± SE", "gap vs passive"],
                          [[f["name"], f["search_mean"], f["held_out_mean"], f["held_out_se"], f["gap_vs_passive"]]
                           for f in s["finalists"]]))
    if s["skipped"]:
        rows.append("<p>Skipped: " + e("; ".join(s["skipped"])) + "</p>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}table{border-collapse:collapse;"
             "margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px;text-align:right}"
             "th{background:#f3f3f3}.verdict{font-size:15px}img{max-width:100%}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Defence card: {e(card['scenario'])}</title>"
            f"<style>{style}</style></head><body>{''.join(rows)}</body></html>\n")


def strict(v: Any) -> Any:
    """``v`` with NaN and infinities as None and numpy scalars as Python numbers (strict JSON)."""
    if isinstance(v, dict):
        return {str(k): strict(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [strict(x) for x in v]
    if isinstance(v, (np.floating, float)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def write_card(r: Any, folder: Path) -> dict[str, Any]:
    """Write ``card.json``, ``card.html`` and ``learning_curve.png`` into ``folder``; returns the card."""
    folder.mkdir(parents=True, exist_ok=True)
    card = strict(card_data(r))
    pngs = figures(r, card, folder)
    (folder / "card.json").write_text(json.dumps(card, indent=1, allow_nan=False, default=str) + "\n")
    (folder / "card.html").write_text(render_html(card, pngs))
    return card
