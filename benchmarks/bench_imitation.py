"""Imitation beyond the victim (seed 000 Tables 2 and 4): several victims at once, on the attacker's own domain.

The attacker owns unlabelled data from its own domain (default: ``mnist8x8``, MNIST cropped and downsampled to
8x8) and buys labels for it from digits victims (trained on sklearn digits, a different domain). It trains on the
union of their answers, either concatenated (each victim's answer a separate sample, the paper's default) or
averaged (one sample per query, the mean of the probability vectors; seed 000 App. B). Every configuration is one
``random`` attacker played through the real game (``make_env`` with a scenario dict, ``play_episode``): one service
per victim, no defence, no benign traffic, the preset brain sending every round's batch to all of its services.

* Table 4 shape: attackers trained on victim A, B, C, D (the same CNN as ``digits-cnn`` trained on one of four
  disjoint stratified quarters of its training split: ``digits-cnn-a`` .. ``-d``), A+B and A+B+C+D (concat and
  average) and Full (``digits-cnn``); each victim's own accuracy next to them.
* Table 2 shape: single victim vs two victims of different architectures (``digits-cnn`` + ``digits-mlp``), soft
  and hard labels, and an oracle ("Supervised"): the same surrogate trained on the same queries, in the same
  rounds, with the attacker domain's true labels (what human annotation would buy).

Accuracy is measured on both domains' held-out test splits: the victims' (digits ``test``, which the referee
scores) and the attacker's (``--pool``'s ``test`` split, which the attacker body's ``predict_proba`` and each
victim's are evaluated on here directly: the referee only knows the victims' test split). The attacker's queries
come from the ``pool`` split of its dataset, never from its test split.

Budget: with ``--budget victim`` (default, as seed 000) every victim answers the same ``rounds x queries_per_round``
inputs, so a K-victim configuration spends K times as many API queries; ``--budget total`` gives every configuration
the same number of API queries (K victims: 1/K of the inputs each). The table states the API queries spent.

Every figure is mean +- std over ``--seeds`` seeds; a seed drives the attacker (pool order, surrogate weights; the
same for every configuration of that seed, so rows are paired) and, with ``--vary-victims`` (default), the
victims' training seed too. The paper's directions are checked against the rows at the end.

    .venv/bin/python benchmarks/bench_imitation.py
    .venv/bin/python benchmarks/bench_imitation.py --seeds 5 --budget total
    .venv/bin/python benchmarks/bench_imitation.py --pool digits --queries-per-round 130   # no domain shift
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

from _common import parse_args, print_table, set_torch_threads, write_json

QUARTERS = {"A": "digits-cnn-a", "B": "digits-cnn-b", "C": "digits-cnn-c", "D": "digits-cnn-d"}
FULL, SECOND = "digits-cnn", "digits-mlp"
VICTIMS_DOMAIN = "digits"

# (row, table, victims, combine, labels). Rows with the same victims, combine and labels (Model Full and
# Attack_s1 soft) are one run: episodes are deterministic given the seed.
CONFIGS: tuple[tuple[str, str, tuple[str, ...], str, str], ...] = (
    *((f"Model {q}", "4", (v,), "concat", "soft") for q, v in QUARTERS.items()),
    ("Model A+B concat", "4", (QUARTERS["A"], QUARTERS["B"]), "concat", "soft"),
    ("Model A+B average", "4", (QUARTERS["A"], QUARTERS["B"]), "average", "soft"),
    ("Model A+B+C+D concat", "4", tuple(QUARTERS.values()), "concat", "soft"),
    ("Model A+B+C+D average", "4", tuple(QUARTERS.values()), "average", "soft"),
    ("Model Full", "4", (FULL,), "concat", "soft"),
    *((f"{row} {labels}", "2", victims, combine, labels)
      for row, victims, combine in (("Attack_s1", (FULL,), "concat"), ("Attack_s2", (SECOND,), "concat"),
                                    ("Attack_m concat", (FULL, SECOND), "concat"),
                                    ("Attack_m average", (FULL, SECOND), "average"))
      for labels in ("soft", "hard")),
)


@dataclass
class Args:
    seeds: int = 3
    """seeds 0..seeds-1"""
    pool: str = "mnist8x8"
    """the attacker's own domain (its ``pool`` split is queried, its ``test`` split scored)"""
    rounds: int = 4
    queries_per_round: int = 250
    """distinct inputs per round (per victim with ``--budget victim``)"""
    budget: str = "victim"
    """``victim``: every victim answers the same inputs (seed 000); ``total``: the same API queries per configuration"""
    surrogate: str = "auto"
    """the attacker's architecture (``auto``: an MLP for 8x8 images)"""
    train_steps: int = 150
    """warm-start minibatch steps per round (the attackers' and the oracle's)"""
    vary_victims: bool = True
    """train the victims from the run's seed too (otherwise seed 0 for every run)"""
    tables: tuple[str, ...] = ("4", "2")
    torch_threads: int = 0
    json: bool = True


def scenario(args: Args, victims: tuple[str, ...], combine: str, labels: str, victim_seed: int) -> dict[str, Any]:
    k = len(victims)
    q = args.queries_per_round if args.budget == "victim" else max(1, args.queries_per_round // k)
    attacker = {"body": "random",
                "params": {"pool": args.pool, "queries_per_round": q, "services": list(victims), "combine": combine,
                           "labels": labels, "surrogate": args.surrogate, "train_steps": args.train_steps},
                "budget": {"queries": args.rounds * q * k},
                "brain": {"kind": "preset", "knobs": {"service": "all" if k > 1 else "target"}}}
    return {"name": f"imitation-{'+'.join(victims)}", "rounds": args.rounds,
            "services": [{"name": v, "victim": v, "victim_seed": victim_seed} for v in victims],
            "attackers": [attacker]}


def accuracy(probs: Any, y: Any) -> float:
    return float((probs.argmax(axis=1) == y).mean())


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def pm(values: list[float] | None) -> str:
    if not values:
        return "-"
    m, s = mean_std(values)
    return f"{100 * m:.1f} +- {100 * s:.1f}"


def oracle(body: Any, pool: Any, args: Args) -> Any:
    """The Table 2 "Supervised" row: the attacker's surrogate, settings and seed, trained round by round on the very
    inputs the attacker bought, labelled with the attacker domain's true labels instead of a victim's answers."""
    import numpy as np

    from extractgym.agents.extraction.surrogate import Surrogate

    s = body.surrogate
    sup = Surrogate(body.client.service_info(body.target)[1], s.n_classes, body.arch, body.train_cfg,
                    body.warm_start, "soft", seed=s.seed)
    bought = body.order[:body.cursor]  # the pool indices the attacker queried, in order
    x, y = pool.split("pool")
    per_round = -(-len(bought) // args.rounds)
    for start in range(0, len(bought), per_round):
        idx = bought[start:start + per_round]
        sup.add(x[idx], np.eye(s.n_classes)[y[idx]])
        sup.fit()
    return sup


def main() -> None:
    args = parse_args(Args)
    threads = set_torch_threads(args.torch_threads)
    if args.budget not in ("victim", "total"):
        raise SystemExit(f"--budget must be 'victim' or 'total', got {args.budget!r}")
    if args.seeds < 1 or args.rounds < 1 or args.queries_per_round < 1:
        raise SystemExit("--seeds, --rounds and --queries-per-round must be >= 1")
    from extractgym.scenarios import make_env
    from extractgym.scenarios.runner import play_episode
    from extractgym.victims.datasets import get_dataset
    from extractgym.victims.zoo import load_victim

    victims_domain, attacker_domain = get_dataset(VICTIMS_DOMAIN), get_dataset(args.pool)
    inputs = args.rounds * args.queries_per_round
    configs = [c for c in CONFIGS if c[1] in args.tables]
    print(f"bench_imitation: attacker domain {args.pool} (pool split, {len(attacker_domain.x_pool)} inputs), victims' "
          f"domain {victims_domain.name}; {args.rounds} rounds x {args.queries_per_round} inputs; budget per "
          f"{args.budget}; surrogate {args.surrogate}, {args.train_steps} steps/round; seeds 0..{args.seeds - 1}; "
          f"victims {'trained from each seed' if args.vary_victims else 'from seed 0'}; torch threads {threads}")

    t_start = time.perf_counter()
    victims: dict[str, dict[str, list[float]]] = {}
    for name in (*QUARTERS.values(), FULL, SECOND):
        victims[name] = {"victims": [], "attacker": []}
        for seed in range(args.seeds):
            v = load_victim(name, seed if args.vary_victims else 0)  # trains on first use (~1-4 s), cached on disk
            victims[name]["victims"].append(accuracy(v.predict_proba(victims_domain.x_test), victims_domain.y_test))
            victims[name]["attacker"].append(accuracy(v.predict_proba(attacker_domain.x_test), attacker_domain.y_test))
    print(f"  victims ready ({time.perf_counter() - t_start:.0f} s)")
    errors = {ds.name: [shared_errors([load_victim(v, seed if args.vary_victims else 0) for v in QUARTERS.values()], ds)
                        for seed in range(args.seeds)] for ds in (victims_domain, attacker_domain)}

    rows: dict[str, dict[str, Any]] = {}
    runs: dict[tuple[Any, ...], dict[str, Any]] = {}
    supervised: dict[str, list[float]] = {"victims": [], "attacker": []}
    for row, table, names, combine, labels in configs:
        if (names, combine, labels) in runs:
            rows[row] = {**runs[names, combine, labels], "row": row, "table": table}
            continue
        r = rows[row] = runs[names, combine, labels] = {
            "row": row, "table": table, "victims": list(names), "combine": combine, "labels": labels,
            "queries": [], "acc_victims": [], "acc_attacker": [], "fidelity": [],
            "averaged_victims": {"victims": [], "attacker": []}}
        for seed in range(args.seeds):
            members = [load_victim(v, seed if args.vary_victims else 0) for v in names]
            for key, ds in (("victims", victims_domain), ("attacker", attacker_domain)):  # what "average" imitates
                avg = sum(m.predict_proba(ds.x_test) for m in members) / len(members)
                r["averaged_victims"][key].append(accuracy(avg, ds.y_test))
            env = make_env(scenario(args, names, combine, labels, seed if args.vary_victims else 0))
            summary = play_episode(env, seed=seed)
            body = env.game.attackers["attacker_0"].seat.body
            info = summary["attackers"]["attacker_0"]
            r["queries"].append(info["queries"])
            r["acc_victims"].append(info["accuracy"])  # the referee's: the victims' test split
            r["fidelity"].append(info["fidelity"])
            r["acc_attacker"].append(accuracy(body.predict_proba(attacker_domain.x_test), attacker_domain.y_test))
            if names == (FULL,) and labels == "soft" and "2" in args.tables:  # same inputs as every row of this seed
                sup = oracle(body, attacker_domain, args)
                supervised["victims"].append(accuracy(sup.predict_proba(victims_domain.x_test), victims_domain.y_test))
                supervised["attacker"].append(accuracy(sup.predict_proba(attacker_domain.x_test),
                                                       attacker_domain.y_test))
        print(f"  {row:24s} {victims_domain.name} {pm(r['acc_victims'])}  {args.pool} {pm(r['acc_attacker'])}  "
              f"({time.perf_counter() - t_start:.0f} s)")
    vd, ad = victims_domain.name, args.pool
    domains = "[V]: the victims' domain's test split, [A]: the attacker's"
    budget_note = (f"every victim answers the same {inputs} inputs: K victims = K x {inputs} API queries"
                   if args.budget == "victim" else f"{inputs} API queries per configuration, split over its K victims")
    if "4" in args.tables:
        table = []
        for q, name in (*QUARTERS.items(), ("Full", FULL)):
            r = rows[f"Model {q}"]
            table.append([r["row"], 1, pm(victims[name]["victims"]), pm(victims[name]["attacker"]),
                          pm(r["acc_victims"]), pm(r["acc_attacker"]), round(mean_std(r["queries"])[0])])
            if q == "D":
                for e in ("A+B concat", "A+B average", "A+B+C+D concat", "A+B+C+D average"):
                    r = rows[f"Model {e}"]
                    avg = r["averaged_victims"]
                    table.append([r["row"], len(r["victims"]), pm(avg["victims"]), pm(avg["attacker"]),
                                  pm(r["acc_victims"]), pm(r["acc_attacker"]), round(mean_std(r["queries"])[0])])
        print_table(f"Table 4 shape: imitation of disjoint-quarter victims and their ensembles (accuracy %, mean +- "
                    f"std over {args.seeds} seeds; soft labels; {budget_note}; an ensemble row's victim columns: its "
                    f"members' averaged outputs, which no API sells; {domains})",
                    ["model", "#V", f"victim {vd} [V]", f"victim {ad} [A]", f"attack {vd} [V]", f"attack {ad} [A]",
                     "API queries"],
                    table)
    if "2" in args.tables:
        averaged = rows["Attack_m average soft"]["averaged_victims"]
        table = [[model, label, pm(acc["attacker"]), "", pm(acc["victims"]), ""] for model, label, acc in (
            ("Supervised (oracle)", f"{ad} true labels", supervised),
            ("Victim 1", f"{vd} ({FULL})", victims[FULL]), ("Victim 2", f"{vd} ({SECOND})", victims[SECOND]),
            ("Victims 1+2 averaged", "(no API sells it)", averaged))]
        for prefix, label in (("Attack_s1", "Victim 1"), ("Attack_s2", "Victim 2"), ("Attack_m concat", "Victim 1+2"),
                              ("Attack_m average", "Victim 1+2 avg")):
            table.append([prefix, label, *(pm(rows[f"{prefix} {lab}"][key])
                                           for key in ("acc_attacker", "acc_victims") for lab in ("soft", "hard"))])
        print_table(f"Table 2 shape: single vs multiple victims (accuracy %, mean +- std over {args.seeds} seeds; "
                    f"{budget_note}; victims and oracle have no hard/soft split; {domains})",
                    ["model", "label", f"{ad} [A] soft", f"{ad} [A] hard", f"{vd} [V] soft", f"{vd} [V] hard"], table)

    print_table("Why an ensemble helps or not: the four quarter victims' mistakes on each domain's test split (%, mean "
                "over seeds; 'same mistake': how often victim j gives the same wrong label as victim i, over the "
                "inputs victim i gets wrong, mean over pairs)",
                ["test split", "mean single acc", "averaged acc", "same mistake", "all 4 wrong",
                 "all 4 wrong if independent"],
                [[name, *(f"{100 * statistics.fmean(e[k] for e in errs):.1f}"
                          for k in ("single", "averaged", "same_mistake", "all_wrong", "all_wrong_independent"))]
                 for name, errs in errors.items()])
    findings = check_findings(rows, victims, supervised, args)
    for line in findings:
        print(line)
    if args.json:
        write_json("bench_imitation", args, {"victims": victims, "rows": list(rows.values()), "supervised": supervised,
                                             "quarter_victims_errors": errors, "findings": findings,
                                             "wall_seconds": time.perf_counter() - t_start})


def shared_errors(members: list[Any], ds: Any) -> dict[str, float]:
    """How correlated the members' mistakes are on ``ds``'s test split: ensembles gain only where they are not."""
    import numpy as np

    probs = [m.predict_proba(ds.x_test) for m in members]
    preds = np.array([p.argmax(axis=1) for p in probs])
    wrong = preds != ds.y_test
    same = [float((preds[j][wrong[i]] == preds[i][wrong[i]]).mean())
            for i in range(len(members)) for j in range(len(members)) if i != j and wrong[i].any()]
    return {"single": float(1 - wrong.mean()), "averaged": accuracy(sum(probs), ds.y_test),
            "same_mistake": statistics.fmean(same) if same else 0.0, "all_wrong": float(wrong.all(axis=0).mean()),
            "all_wrong_independent": float(np.prod(wrong.mean(axis=1)))}


def check_findings(rows: dict[str, dict[str, Any]], victims: dict[str, dict[str, list[float]]],
                   supervised: dict[str, list[float]], args: Args) -> list[str]:
    """Seed 000's directions, checked on the means (accuracy points), with the seeds on which they hold."""
    mean = statistics.fmean
    ad = args.pool
    lines = ["", f"paper directions on the attacker's domain ({ad}; means over seeds, accuracy points; "
                 f"'seeds' = on how many seeds the paired comparison holds):"]

    def beats(a: list[float], b: list[float]) -> tuple[float, int]:
        return 100 * (mean(a) - mean(b)), sum(x > y for x, y in zip(a, b, strict=True))

    def verdict(ok: bool) -> str:
        return "holds" if ok else "does not hold"

    n = args.seeds
    if "Model A+B+C+D concat" in rows:
        lines.append("* Table 4: the attacker on an ensemble of victims beats every single-victim attacker "
                     "(A+B over A and B; A+B+C+D over each of A-D)")
        for key, where in (("acc_attacker", ""), ("acc_victims", f" (on the victims' domain, {VICTIMS_DOMAIN})")):
            if where:
                if args.pool == VICTIMS_DOMAIN:
                    break
                lines.append(f"  the same{where}:")
            singles = {q: rows[f"Model {q}"][key] for q in QUARTERS}
            for e, members in (("A+B", "AB"), ("A+B+C+D", "ABCD")):
                for combine in ("concat", "average"):
                    ens = rows[f"Model {e} {combine}"][key]
                    diffs = [beats(ens, singles[q]) for q in members]
                    worst = min(d for d, _ in diffs)
                    lines.append(f"    {e:8s} {combine:8s} {100 * mean(ens):5.1f}  vs " + ", ".join(
                        f"{q} {d:+.1f} ({w}/{n})" for q, (d, w) in zip(members, diffs, strict=True))
                        + f"  -> {verdict(worst > 0)}")
        lines.append("* Table 4: the ensemble of weaker victims catches up with Full (A+B+C+D within 1 pt of "
                     "the attacker on Full, or above it)")
        full = rows["Model Full"]["acc_attacker"]
        for combine in ("concat", "average"):
            d, w = beats(rows[f"Model A+B+C+D {combine}"]["acc_attacker"], full)
            lines.append(f"    A+B+C+D {combine:8s} vs Full {d:+.1f} ({w}/{n} seeds above)  -> {verdict(d > -1)}")
    single = [(f"Model {q}", v) for q, v in QUARTERS.items()] + [("Model Full", FULL)]
    single += [(f"Attack_s1 {lab}", FULL) for lab in ("soft", "hard")] + [(f"Attack_s2 {lab}", SECOND)
                                                                        for lab in ("soft", "hard")]
    single = [(r, v) for r, v in single if r in rows and not (r == "Attack_s1 soft" and "Model Full" in rows)]
    if single:
        lines.append("* Tables 2 and 4 (RQ1): an attacker beats its own victim on the attacker's domain")
        for r, v in single:
            d, w = beats(rows[r]["acc_attacker"], victims[v]["attacker"])
            lines.append(f"    {r:24s} {100 * mean(rows[r]['acc_attacker']):5.1f} vs victim {v} "
                         f"{100 * mean(victims[v]['attacker']):5.1f}: {d:+.1f} ({w}/{n})  -> {verdict(d > 0)}")
        ens = [r for r in rows if "+" in r or r.startswith("Attack_m")]
        if ens:
            lines.append("* the attacker on several victims beats every one of its victims on the attacker's domain")
            for r in ens:
                diffs = [(v, *beats(rows[r]["acc_attacker"], victims[v]["attacker"])) for v in rows[r]["victims"]]
                worst = min(d for _, d, _ in diffs)
                lines.append(f"    {r:24s} {100 * mean(rows[r]['acc_attacker']):5.1f}: best victim by {worst:+.1f}"
                             f"  -> {verdict(worst > 0)}")
    if "Attack_m concat soft" in rows:
        lines.append("* Table 2: the attacker on victims 1+2 beats both single-victim attackers (soft and hard labels)")
        for combine in ("concat", "average"):
            for lab in ("soft", "hard"):
                m = rows[f"Attack_m {combine} {lab}"]["acc_attacker"]
                (d1, w1), (d2, w2) = (beats(m, rows[f"Attack_s{i} {lab}"]["acc_attacker"]) for i in (1, 2))
                lines.append(f"    {combine:8s} {lab}: vs s1 {d1:+.1f} ({w1}/{n}), vs s2 {d2:+.1f} ({w2}/{n})"
                             f"  -> {verdict(min(d1, d2) > 0)}")
        lines.append("* Table 5 (Soft vs Hard columns): soft labels make a better attacker than hard labels")
        for prefix in ("Attack_s1", "Attack_s2", "Attack_m concat", "Attack_m average"):
            d, w = beats(rows[f"{prefix} soft"]["acc_attacker"], rows[f"{prefix} hard"]["acc_attacker"])
            lines.append(f"    {prefix:18s} soft - hard {d:+.1f} ({w}/{n})  -> {verdict(d > 0)}")
    if supervised["attacker"]:
        lines.append("* Table 2: the oracle trained on the attacker's domain beats the victims there (in seed 000 an "
                     "attacker beat it once: the two-victim ensemble on SST)")
        best_victim = max(mean(victims[v]["attacker"]) for v in (FULL, SECOND))
        best_attack = max(mean(r["acc_attacker"]) for r in rows.values())
        o = mean(supervised["attacker"])
        lines.append(f"    oracle {100 * o:.1f} vs best victim {100 * best_victim:.1f}, best attacker "
                     f"{100 * best_attack:.1f}  -> {verdict(o > best_victim)}")
    pairs = [(f"Model {e}", "") for e in ("A+B", "A+B+C+D")] + [("Attack_m", f" {lab}") for lab in ("soft", "hard")]
    pairs = [(p, s) for p, s in pairs if f"{p} concat{s}" in rows]
    if pairs:
        lines.append("* App. B Table 7: concatenation and averaging are competitive (|difference| < 1 pt or "
                     "within one std)")
        for p, s in pairs:
            c, a = rows[f"{p} concat{s}"]["acc_attacker"], rows[f"{p} average{s}"]["acc_attacker"]
            d = 100 * (mean(a) - mean(c))
            sd = 100 * max(mean_std(c)[1], mean_std(a)[1])
            lines.append(f"    {p + s:18s} average - concat {d:+.1f} (std {sd:.1f})  -> "
                         f"{verdict(abs(d) < max(1.0, sd))}")
    return lines


if __name__ == "__main__":
    main()
