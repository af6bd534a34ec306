"""Issue 10's "done when": does every choice in the rl- scenarios change the outcome? Paired over held-out seeds.

For each rl- scenario: the best and worst constant actions of the learning seat (choices matter); in the duel, the
best constant action of each side against two settings of the other (no choice dominates); the defender's knob
against the attacker's accuracy and cost (the defender matters); the scenario's observation-reading script against
the best constant action chosen on training seeds (the observation matters). Then the return's spread under a
fixed action on digits-similarity (less noise than the 0.057 of a reward measured from the random initial
surrogate), and env steps per CPU-second with random actions, resets included, in one process and in a
2-process SubprocVecEnv (throughput).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from _common import parse_args, print_table, set_torch_threads, write_json


@dataclasses.dataclass
class Args:
    seeds: int = 10  # held-out seeds per comparison (paired)
    obs_seeds: int = 30  # held-out seeds for the observation comparison (the smaller effect)
    train_seeds: int = 4  # seeds the best-constant search uses
    throughput_episodes: int = 6
    parts: tuple = ("choices", "duel", "defender", "observation", "noise", "throughput")
    scenarios: tuple = ("rl-duel", "rl-sybil", "rl-defender")  # which rl- scenarios the per-scenario parts measure
    torch_threads: int = 1
    json: bool = True


def table(header: list[str], rows: list[list], title: str) -> None:
    print_table(title, header, rows)


def paired_row(name: str, a, b) -> list:
    from extractgym.scenarios.evaluate import paired

    p = paired(a.returns, b.returns)
    return [name, f"{a.mean:.4f}", f"{b.mean:.4f}", f"{p.mean:+.4f} ± {p.se:.4f}",
            f"{abs(p.mean) / p.se:.1f}" if p.se > 0 else "inf", f"{p.p_better:.2g}"]


def constants(ev, seeds):
    """Every constant action's result on ``seeds``, best first."""
    from extractgym.scenarios.evaluate import constant_brain

    out = []
    for c in ev.constants():
        r = ev.play(lambda seed, c=c: constant_brain(ev.knobs, c), seeds)
        r.name = ev.describe(c)
        out.append(r)
    return sorted(out, key=lambda r: -r.mean)


def main() -> None:
    args = parse_args(Args)
    set_torch_threads(args.torch_threads)
    from extractgym.scenarios.evaluate import HELD_OUT, Evaluator

    held = [HELD_OUT + i for i in range(args.seeds)]
    results: dict = {}
    rows = []

    # -- choices matter: best vs worst constant action of each scenario's learning seat ------------------------------
    from extractgym.scenarios.evaluate import constant_brain

    choices = args.scenarios if "choices" in args.parts else ()
    for scenario, seat in (("rl-duel", "attacker_0"), ("rl-sybil", "attacker_0"), ("rl-defender", "defender_0")):
        if scenario not in choices:
            continue
        ev = Evaluator(scenario, seat)
        _, means = ev.best_constant(list(range(args.train_seeds)))  # every constant action on the training seeds
        nontrivial = {c: m for c, m in means.items() if "queries=0" not in ev.describe(c)}
        best, worst = max(nontrivial, key=nontrivial.get), min(nontrivial, key=nontrivial.get)
        a = ev.play(lambda seed, c=best: constant_brain(ev.knobs, c), held)
        b = ev.play(lambda seed, c=worst: constant_brain(ev.knobs, c), held)
        rows.append(paired_row(f"{scenario} {seat}: best [{ev.describe(best)}] vs worst [{ev.describe(worst)}] "
                               f"(of {len(nontrivial)}, chosen on training seeds)", a, b))
        results[f"choices/{scenario}"] = {"best": ev.describe(best), "worst": ev.describe(worst),
                                          "best_mean": a.mean, "worst_mean": b.mean}
    table(["comparison", "A", "B", "A - B (paired)", "|diff|/SE", "p(A>B)"], rows,
                title="Choices matter: best vs worst constant action")

    # -- no choice dominates (duel) -----------------------------------------------------------------------------------
    rows = []
    duel_att = lambda svc: [{"body": "uncertainty", "params": {"pool": "digits", "queries_per_round": 20,  # noqa: E731
                                                               "services": ["api", "api-label"], "target": "api"},
                             "budget": {"queries": 120, "money": 10.0, "accounts": 2},
                             "brain": {"kind": "preset", "knobs": {"service": svc}}}]
    duel_def = lambda d: [{"body": "switch", "params": {"defences": ["none", "reverse-sigmoid", "mad", "hard-label"]},  # noqa: E731
                           "brain": {"kind": "preset", "knobs": {"defence": d}}}]
    # each side's best constant action against one setting of the other, and how the best action against the
    # *other* setting fares there: if the two bests differ and each loses where the other wins, no choice dominates
    for side, seat, settings in () if "duel" not in args.parts or "rl-duel" not in args.scenarios else (("attacker", "attacker_0", [("none", duel_def("none")),
                                                             ("reverse-sigmoid", duel_def("reverse-sigmoid"))]),
                                 ("defender", "defender_0", [("api attacker", duel_att("api")),
                                                             ("api-label attacker", duel_att("api-label"))])):
        ranked = {}
        for label, override in settings:
            ev = Evaluator("rl-duel", seat, **({"defenders": override} if side == "attacker" else {"attackers": override}))
            ranked[label] = {r.name: r for r in constants(ev, held)}
        (la, ra), (lb, rb) = ranked.items()
        best_a, best_b = max(ra.values(), key=lambda r: r.mean), max(rb.values(), key=lambda r: r.mean)
        rows.append(paired_row(f"{side} vs {la}: its best [{best_a.name}] vs the best vs {lb} [{best_b.name}]",
                               best_a, ra[best_b.name]))
        rows.append(paired_row(f"{side} vs {lb}: its best [{best_b.name}] vs the best vs {la} [{best_a.name}]",
                               best_b, rb[best_a.name]))
        results[f"duel/{side}"] = {la: best_a.name, lb: best_b.name}
    table(["comparison", "A", "B", "A - B (paired)", "|diff|/SE", "p(A>B)"], rows,
                title="No choice dominates (rl-duel): each side's best constant action flips with the other's")

    # -- the defender matters: its knob against the attacker's accuracy and cost ----------------------------------------
    rows = []
    for scenario, knob, low, high, figures in () if "defender" not in args.parts else (
            ("rl-duel", "defence", "none", "reverse-sigmoid", ("attacker_accuracy",)),
            ("rl-sybil", "level", 0.5, 2.0, ("cost", "attacker_accuracy"))):
        if scenario not in args.scenarios:
            continue
        ev_lo = Evaluator(scenario, "attacker_0",
                          defenders=[{**_defender(scenario), "brain": {"kind": "preset", "knobs": {knob: low}}}])
        ev_hi = Evaluator(scenario, "attacker_0",
                          defenders=[{**_defender(scenario), "brain": {"kind": "preset", "knobs": {knob: high}}}])
        a, b = ev_lo.play(lambda seed: ev_lo.brain("preset", seed), held), ev_hi.play(lambda seed: ev_hi.brain("preset", seed), held)
        for figure in figures:  # every figure from the same paired episodes
            d = b.figures[figure] - a.figures[figure]
            se = d.std(ddof=1) / np.sqrt(len(d))
            rows.append([f"{scenario}: attacker's {figure}, {knob}={high} minus {knob}={low} (preset attacker)",
                         f"{a.figures[figure].mean():.4f}", f"{b.figures[figure].mean():.4f}",
                         f"{d.mean():+.4f} ± {se:.4f}", f"{abs(d.mean()) / se:.1f}" if se > 0 else "inf", ""])
            results[f"defender_matters/{scenario}/{figure}"] = {"diff": float(d.mean()), "se": float(se)}
    table(["comparison", f"{'low'}", "high", "high - low (paired)", "|diff|/SE", ""], rows,
                title="The defender matters")

    # -- the observation matters: a short script vs the best constant action ----------------------------------------
    rows = []
    obs_held = [HELD_OUT + i for i in range(args.obs_seeds)]
    for scenario, seat, script in () if "observation" not in args.parts else (("rl-duel", "attacker_0", "label-if-softened"),
                                   ("rl-sybil", "attacker_0", "rotate-on-refusal:rotate_every=25"),
                                   ("rl-defender", "defender_0", "perturb-young-probs")):
        if scenario not in args.scenarios:
            continue
        ev = Evaluator(scenario, seat)
        best, _ = ev.best_constant(list(range(args.train_seeds)))
        b = ev.play(lambda seed, c=best: __import__("extractgym.scenarios.evaluate", fromlist=["x"]).constant_brain(ev.knobs, c),
                    obs_held)
        s = ev.play(lambda seed: ev.brain(script, seed), obs_held)
        rows.append(paired_row(f"{scenario}: {script} vs best constant [{ev.describe(best)}]", s, b))
        results[f"observation/{scenario}"] = {"script": s.mean, "best_constant": b.mean}
    table(["comparison", "script", "best const", "script - best (paired)", "|diff|/SE", "p(script better)"],
                rows, title=f"The observation matters ({args.obs_seeds} held-out seeds; constant chosen on "
                            f"{args.train_seeds} training seeds)")

    # -- less noise: the return under a fixed action ---------------------------------------------------------------------
    if "noise" in args.parts:
        ev = Evaluator("digits-similarity", "attacker_0")
        r = ev.play(lambda seed: ev.brain("preset", seed), held)
        spread = float(r.returns.std(ddof=1))
        table(["scenario", "return std over seeds (preset)", "issue 10's measured before"],
              [["digits-similarity", f"{spread:.4f}", "0.057"]], title="Less noise")
        results["noise/digits-similarity"] = spread

    # -- throughput: env steps per CPU-second, random actions, resets included ------------------------------------------
    rows = []
    for scenario in args.scenarios if "throughput" in args.parts else ():
        rate = steps_per_cpu_second(scenario, args.throughput_episodes)
        vec = subproc_steps_per_second(scenario, args.throughput_episodes)
        rows.append([scenario, f"{rate:.1f}", f"{vec[0]:.1f}", f"{vec[1]:.1f}", f"{vec[1] / vec[0]:.2f}"])
        results[f"throughput/{scenario}"] = {"steps_per_cpu_s": rate, "dummy_1": vec[0], "subproc_2": vec[1]}
    table(["scenario", "steps / CPU-s (1 process)", "steps / wall-s DummyVecEnv(1)",
                 "steps / wall-s SubprocVecEnv(2)", "scaling"], rows,
                title="Throughput: Attacker-v0 with random actions, resets included")
    if args.json:
        print(f"wrote {write_json('bench_stakes', args, results)}")


def _defender(scenario: str) -> dict:
    from extractgym.scenarios import load_scenario

    d = load_scenario(scenario).defenders[0].model_dump()
    return {k: v for k, v in d.items() if k != "brain"}


def steps_per_cpu_second(scenario: str, episodes: int) -> float:
    import gymnasium

    import extractgym  # noqa: F401

    env = gymnasium.make("extractgym/Attacker-v0", scenario=scenario)
    env.reset(seed=0)  # warm: victims, encoders, calibration (once per process)
    start, steps = time.process_time(), 0
    for ep in range(episodes):
        env.reset(seed=100 + ep)
        done = False
        while not done:
            _, _, term, trunc, _ = env.step(env.action_space.sample())
            steps += 1
            done = term or trunc
    return steps / (time.process_time() - start)


def _make(scenario: str):
    def thunk():
        import gymnasium

        import extractgym  # noqa: F401

        return gymnasium.make("extractgym/Attacker-v0", scenario=scenario)

    return thunk


def subproc_steps_per_second(scenario: str, episodes: int) -> tuple[float, float]:
    """Wall-clock steps/s of a DummyVecEnv with 1 env and a SubprocVecEnv with 2 (warm, resets included)."""
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    rates = []
    for vec in (DummyVecEnv([_make(scenario)]), SubprocVecEnv([_make(scenario)] * 2, start_method="spawn")):
        vec.seed(0)
        vec.reset()
        n = vec.num_envs
        for _ in range(10):  # warm
            vec.step(np.array([vec.action_space.sample() for _ in range(n)]))
        rounds = episodes * 12
        start = time.perf_counter()
        for _ in range(rounds):
            vec.step(np.array([vec.action_space.sample() for _ in range(n)]))
        rates.append(rounds * n / (time.perf_counter() - start))
        vec.close()
    return rates[0], rates[1]


if __name__ == "__main__":
    main()
