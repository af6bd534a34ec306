"""Issue 22's contest task: does a contest on contest-digits measure extraction? Over several secrets.

For each of ``secrets`` fresh operator secrets (each a fresh ``digits-secret`` task and victim, played in its own
process since the secret is read once per process): the victim's accuracy on its secret test set, the no-query
baseline's strategies (the packaged victim, a model fitted on all public digits, a constant), and the shipped
``contest-digits`` reference extraction (random natural digits with soft labels) at each query budget, paired on
the same secret and seed. Then the same figures on ``digits-basic`` (a public task), where the baseline is what a
contest there could never beat. Prints the tables; writes benchmarks/out/bench_contest.json.

    python benchmarks/bench_contest.py --secrets 5 --budgets 0 100 250 500
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from _common import parse_args, print_table, write_json


@dataclasses.dataclass
class Args:
    secrets: int = 5
    budgets: tuple = (0, 100, 250, 500)
    seed: int = 0
    json: bool = True


ONE = r"""
import json, sys, time, resource
from extractgym.scenarios import make_env
from extractgym.scenarios.runner import play_episode
budgets, seed, scenario = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
out = {"extraction": {}}
for q in budgets:
    per = max(q // 5, 1)
    attackers = [{"body": "random", "params": {"pool": "digits", "queries_per_round": per, "labels": "soft"},
                  "budget": {"queries": q, "money": 10.0, "accounts": 3}}]
    s = play_episode(make_env(scenario, seed=seed, rounds=5, attackers=attackers, defenders=[], benign=[]), seed=seed)
    out["extraction"][q] = {"fidelity": s["fidelity"], "accuracy": s["attacker_accuracy"], "queries": s["queries"]}
    out["victim_accuracy"] = s["victim_accuracy"]
from extractgym.victims.baseline import no_query_baseline
env = make_env(scenario, seed=seed, rounds=1)
env.reset(seed=seed)
ref = env.game.referee
svc = next(iter(ref.test_sets))
x, y = ref.test_sets[svc]
name, vseed = ref.victims[svc]
out["baseline"] = no_query_baseline(name, vseed, x, y, ref.victim_labels[svc])
env.close()
ru = resource.getrusage(resource.RUSAGE_SELF)
out["cpu_seconds"] = ru.ru_utime + ru.ru_stime
print(json.dumps(out))
"""


def run_one(budgets: tuple, seed: int, scenario: str, secret_file: str | None) -> dict:
    env = {**os.environ}
    if secret_file is not None:
        env["EXTRACTGYM_SECRET_FILE"] = secret_file
    done = subprocess.run([sys.executable, "-c", ONE, json.dumps(list(budgets)), str(seed), scenario], env=env,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args(Args)
    start = time.time()
    rows, per_secret = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.secrets):
            path = os.path.join(tmp, f"secret-{i}.key")
            with open(path, "wb") as f:
                f.write(os.urandom(32))
            r = run_one(args.budgets, args.seed, "contest-digits", path)
            per_secret.append(r)
            b = r["baseline"]
            rows.append([f"secret {i}", r["victim_accuracy"], b["fidelity"], b["accuracy"],
                         *[r["extraction"][str(q)]["fidelity"] for q in args.budgets]])
    public = run_one(args.budgets, args.seed, "digits-basic", None)
    rows.append(["digits-basic (public)", public["victim_accuracy"], public["baseline"]["fidelity"],
                 public["baseline"]["accuracy"], *[public["extraction"][str(q)]["fidelity"] for q in args.budgets]])
    print_table("fidelity on the hidden test set: no-query baseline vs the reference extraction",
                ["task", "victim acc", "baseline fid", "baseline acc", *[f"fid @{q}" for q in args.budgets]], rows)
    gaps = {q: [r["extraction"][str(q)]["fidelity"] - r["baseline"]["fidelity"] for r in per_secret]
            for q in args.budgets}
    summary = {q: {"mean": float(np.mean(g)), "min": float(np.min(g)), "sd": float(np.std(g, ddof=1)) if len(g) > 1
                   else 0.0} for q, g in gaps.items()}
    print_table("extraction fidelity minus the no-query baseline, over secrets",
                ["queries", "mean", "min", "sd"], [[q, s["mean"], s["min"], s["sd"]] for q, s in summary.items()])
    strategies = {k: float(np.mean([r["baseline"]["strategies"][k]["fidelity"] for r in per_secret]))
                  for k in per_secret[0]["baseline"]["strategies"]}
    print_table("no-query strategies (mean fidelity over secrets)", ["strategy", "fidelity"],
                [[k, v] for k, v in strategies.items()])
    cpu = sum(r["cpu_seconds"] for r in per_secret) + public["cpu_seconds"]
    print(f"\n{cpu:.0f} CPU-s in the children, {time.time() - start:.0f} s wall, load {os.getloadavg()[0]:.1f}")
    if args.json:
        write_json("bench_contest", args, {"per_secret": per_secret, "public": public, "gap": summary,
                                           "strategies": strategies, "cpu_seconds": cpu})


if __name__ == "__main__":
    main()
