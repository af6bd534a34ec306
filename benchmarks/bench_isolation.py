"""What isolating a body costs: CPU-seconds (this process and the children it reaped) and wall time of the same episodes
in-process, in a plain child process (``isolate: process``) and in the bubblewrap sandbox (``isolate: true``),
each mode in a fresh process so imports and the child's start count where they fall. Also checks the three give the
same figures (ledger digest). Prints a table; writes benchmarks/out/bench_isolation.json.

    python benchmarks/bench_isolation.py --episodes 3
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

from _common import parse_args, print_table, write_json


@dataclasses.dataclass
class Args:
    scenario: str = "digits-similarity"
    rounds: int = 3
    episodes: int = 3
    json: bool = True


ONE = r"""
import json, resource, sys, time
from extractgym.scenarios import make_env
from extractgym.scenarios.runner import play_episode
scenario, rounds, episodes, isolate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
def cpu():
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
attackers = [{"body": "jb-top3", "params": {"pool": "digits", "queries_per_round": 200},
              "budget": {"queries": 1000, "money": 30.0, "accounts": 25}, "isolate": isolate}]
c0, w0 = cpu(), time.perf_counter()
env = make_env(scenario, rounds=rounds, attackers=attackers)
c1, w1 = cpu(), time.perf_counter()
digests = []
for seed in range(episodes):
    digests.append(play_episode(env, seed=seed)["ledger_digest"])
env.close()
c2, w2 = cpu(), time.perf_counter()
print(json.dumps({"validate_cpu": c1 - c0, "validate_wall": w1 - w0, "play_cpu": c2 - c1, "play_wall": w2 - w1,
                  "digests": digests}))
"""


def main() -> None:
    args = parse_args(Args)
    out, rows = {}, []
    for label, isolate in (("in-process", False), ("isolate: process", "process"), ("isolate: true", True)):
        done = subprocess.run([sys.executable, "-c", ONE, args.scenario, str(args.rounds), str(args.episodes),
                               json.dumps(isolate)], capture_output=True, text=True, check=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
        r = json.loads(done.stdout.strip().splitlines()[-1])
        out[label] = r
        rows.append([label, r["validate_cpu"], r["validate_wall"], r["play_cpu"] / args.episodes,
                     r["play_wall"] / args.episodes])
    base = out["in-process"]
    same = all(o["digests"] == base["digests"] for o in out.values())
    rows = [[*r, r[3] / (base["play_cpu"] / args.episodes)] for r in rows]
    print_table(f"{args.scenario}, {args.rounds} rounds: validation (starts the body's child) and per episode",
                ["mode", "validate CPU-s", "validate wall s", "episode CPU-s", "episode wall s",
                 "episode CPU / in-process"], rows)
    print(f"\nsame ledger digests in every mode: {same}; load {os.getloadavg()[0]:.1f}")
    print("CPU counts this process and the children it reaped: a plain child's (isolate: process) is counted; a "
          "sandboxed one's is not (bwrap's own init reaps it), so read its cost off the process row")
    if args.json:
        write_json("bench_isolation", args, {"modes": out, "same_figures": same})


if __name__ == "__main__":
    main()
