"""Issue 20, item 3: what the cheap setting does to the game, against the full one, paired over the same seeds.

The cheap setting is ``surrogates: cheap, answer_table: true`` (what the rl- scenarios ship with), the full one
``surrogates: full, answer_table: false`` (the game before issue 20). For each scenario's learning seat:

1. **Payoff ranking.** Every constant action's mean return on ``--seeds`` seeds under both settings, and the
   Spearman rank correlation of the two rankings (the bar: >= 0.9), with each side's best constant action.
2. **Scripts keep their advantage.** The scenario's observation-reading script against the best constant action
   (chosen on ``--train-seeds`` training seeds under the same setting), paired on ``--obs-seeds`` held-out seeds,
   under each setting (the bar: positive, at least 3 SE, in the cheap setting as in the full one).
3. **Trained-policy transfer** (``--policies CHEAP.zip FULL.zip`` per scenario, trained with ``extractgym train``
   on each setting): both policies evaluated paired on the full setting (the bar: within 1 SE). See docs/rl.md.

Episodes are played in the vector env (``gymnasium.make_vec``, ``--chunk`` of them at a time), which plays exactly
the serial episodes (``tests/test_vector_env.py``). About 10 minutes for rl-duel and rl-defender, an hour for
rl-sybil's 500 constant actions on 2 busy cores:

    .venv/bin/python benchmarks/bench_cheap_surrogates.py --scenarios rl-duel rl-defender
    .venv/bin/python benchmarks/bench_cheap_surrogates.py --scenarios rl-sybil --seeds 4
"""

from __future__ import annotations

import dataclasses
import itertools
import time

import numpy as np
from _common import parse_args, print_table, set_torch_threads, write_json

FULL = {"surrogates": "full", "answer_table": False}
CHEAP = {"surrogates": "cheap", "answer_table": True}
SEATS = {"rl-duel": ("Attacker", "attacker_0", "label-if-softened"),
         "rl-sybil": ("Attacker", "attacker_0", "rotate-on-refusal:rotate_every=25"),
         "rl-defender": ("Defender", "defender_0", "perturb-young-probs")}


@dataclasses.dataclass
class Args:
    scenarios: tuple = ("rl-duel", "rl-sybil", "rl-defender")
    seeds: int = 8  # seeds per constant action (paired between the settings)
    train_seeds: int = 4  # the best-constant search of the script comparison
    obs_seeds: int = 30  # held-out seeds of the script comparison
    parts: tuple = ("ranking", "scripts")
    policies: tuple = ()  # SCENARIO=CHEAP.zip,FULL.zip ... for the transfer check
    transfer_seeds: int = 20
    chunk: int = 64  # episodes per vector env
    torch_threads: int = 1
    json: bool = True


def play(scenario: str, overrides: dict, policies: dict, seeds: list[int], chunk: int) -> dict[str, np.ndarray]:
    """Each policy's return on each seed (``policies``: name -> function of the seed returning a brain), played
    ``chunk`` episodes at a time in the vector env."""
    import gymnasium

    import extractgym  # noqa: F401

    role = SEATS[scenario][0]
    slots = [(name, seed) for name in policies for seed in seeds]
    out = {name: np.zeros(len(seeds)) for name in policies}
    for start in range(0, len(slots), chunk):
        part = slots[start:start + chunk]
        venv = gymnasium.make_vec(f"extractgym/{role}-v0", num_envs=len(part), vectorization_mode="vector_entry_point",
                                  scenario=scenario, autoreset_mode="disabled", **overrides)
        obs, _ = venv.reset(seed=[seed for _, seed in part])
        brains = [policies[name](seed) for name, seed in part]
        total = np.zeros(len(part))
        done = np.zeros(len(part), dtype=bool)
        while not done.all():
            actions = np.array([brain(o) for brain, o in zip(brains, obs, strict=True)])
            obs, rewards, terms, truncs, _ = venv.step(actions)
            total += rewards
            done = terms | truncs
        venv.close()
        for (name, seed), r in zip(part, total, strict=True):
            out[name][seeds.index(seed)] = r
    return out


def main() -> None:
    args = parse_args(Args)
    set_torch_threads(args.torch_threads)
    from scipy.stats import spearmanr

    from extractgym.scenarios.evaluate import HELD_OUT, Evaluator, constant_brain, paired

    results: dict = {}
    for scenario in args.scenarios:
        _, seat, script = SEATS[scenario]
        ev = Evaluator(scenario, seat)
        played: dict = {}
        combos = list(itertools.product(*(range(len(k.choices)) for k in ev.knobs)))
        consts = {ev.describe(c): (lambda seed, c=c: constant_brain(ev.knobs, c)) for c in combos}
        if "ranking" in args.parts:
            seeds = list(range(args.seeds))
            means, times = {}, {}
            for label, overrides in (("full", FULL), ("cheap", CHEAP)):
                t0 = time.process_time()
                returns = played[label, tuple(seeds)] = play(scenario, overrides, consts, seeds, args.chunk)
                times[label] = time.process_time() - t0
                means[label] = {name: float(r.mean()) for name, r in returns.items()}
            names = list(consts)
            rho = float(spearmanr([means["full"][n] for n in names], [means["cheap"][n] for n in names]).statistic)
            best = {label: max(names, key=lambda n, m=m: m[n]) for label, m in means.items()}
            print_table(f"{scenario} {seat}: {len(names)} constant actions x {len(seeds)} seeds",
                        ["setting", "best constant", "its mean", "CPU-s"],
                        [[label, best[label], means[label][best[label]], times[label]] for label in means])
            print(f"Spearman rank correlation of the payoffs, full vs cheap: {rho:.3f} (bar >= 0.9)")
            results[f"ranking/{scenario}"] = {"spearman": rho, "best": best, "means": means, "cpu_s": times,
                                              "seeds": len(seeds)}
        if "scripts" in args.parts:
            rows = []
            held = [HELD_OUT + i for i in range(args.obs_seeds)]
            for label, overrides in (("full", FULL), ("cheap", CHEAP)):
                train_seeds = tuple(range(args.train_seeds))
                train_returns = played.get((label, train_seeds)) or play(scenario, overrides, consts, list(train_seeds),
                                                                         args.chunk)
                best = max(train_returns, key=lambda n: train_returns[n].mean())
                s_ev = Evaluator(scenario, seat, **overrides)
                got = play(scenario, overrides, {"script": lambda seed: s_ev.brain(script, seed), "best": consts[best]},
                           held, args.chunk)
                p = paired(got["script"], got["best"])
                rows.append([label, f"{script} vs [{best}]", f"{got['script'].mean():.4f}", f"{got['best'].mean():.4f}",
                             f"{p.mean:+.4f} ± {p.se:.4f}", f"{p.mean / p.se:.1f}" if p.se > 0 else "inf"])
                results[f"scripts/{scenario}/{label}"] = {"best": best, "diff": p.mean, "se": p.se}
            print_table(f"{scenario}: the script against the best constant ({args.obs_seeds} held-out seeds)",
                        ["setting", "comparison", "script", "best", "script - best", "diff/SE"], rows)
        for spec in args.policies:
            name, _, files = spec.partition("=")
            if name != scenario:
                continue
            cheap, full = files.split(",")
            from extractgym.agents.brains.learned import load_brain

            env = Evaluator(scenario, seat, **FULL).env
            held = [HELD_OUT + i for i in range(args.transfer_seeds)]
            got = play(scenario, FULL, {"cheap": lambda seed: load_brain(cheap, env, seat),
                                        "full": lambda seed: load_brain(full, env, seat)}, held, args.chunk)
            p = paired(got["cheap"], got["full"])
            print_table(f"{scenario}: a policy trained on the shipped setting vs one trained on the full one, both "
                        f"played on the full setting ({len(held)} held-out seeds)",
                        ["trained on cheap", "trained on full", "cheap - full", "within 1 SE"],
                        [[got["cheap"].mean(), got["full"].mean(), f"{p.mean:+.4f} ± {p.se:.4f}",
                          abs(p.mean) <= p.se]])
            results[f"transfer/{scenario}"] = {"cheap": float(got["cheap"].mean()), "full": float(got["full"].mean()),
                                               "diff": p.mean, "se": p.se}
    if args.json:
        write_json("bench_cheap_surrogates", args, results)


if __name__ == "__main__":
    main()
