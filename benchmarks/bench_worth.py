"""What the stolen model is worth (issue 24): each paper's comparison, in direction, paired over seeds, with 95% CIs.

Every figure comes from real episodes (``make_env`` with a scenario dict, ``play_episode``) and the referee's
end-of-episode figures (``summary.json``'s ``transfer_success``, ``attribute_inference``, ``evaluations``,
``ownership_matrix``). Rows of one part share the seeds, so differences are paired: mean, 95% t-interval and the
seeds on which the difference has the expected sign. Parts (``--parts``):

* ``transfer`` -- seeds 002/003/004: FGSM, PGD and targeted PGD crafted on ``k-center`` and ``jbda`` surrogates of
  ``digits-cnn`` at three budgets, each beside its no-query baseline (the same architecture trained on the
  attacker's digits pool with its true labels: ``own-labels``; plus the ``untrained`` floor); then a label-trained
  ``k-center`` surrogate under output perturbations that keep the top class (temperature, label-preserving noise,
  reverse sigmoid).
* ``architecture`` -- seed 004 Figs 6-10 in shape: a ``random`` attacker's substitute (MLP, small CNN, wide CNN,
  small CNN pretrained on ``synth-digits``) at three budgets, accuracy on the victim's test split.
* ``surpass`` -- seed 000 Tables 2 and 4 on the attacker's own domain (MNIST-8x8): students of victims A-D and Full
  and of the A+B+C+D ensemble, scratch-trained (the default MLP) or pretrained on ``synth-digits`` and adapted with
  it kept in the mix (``rehearse``), each victim's own accuracy beside them.
* ``ownership`` -- DAWN at its published 0.5%: the referee's test of a converged JB-top3 substitute and of an
  independently trained control, by query count; the watermarks the test needs and the queries that takes.
* ``attribute`` -- seed 002 Tables 4 and 7 in shape: attribute inference (speaker's party) from a surrogate of the
  ``convention-sentiment`` API with same- and cross-domain auxiliary data, beside the majority and un-fine-tuned
  encoder baselines, under no defence, softening (temperature 5) and Gaussian noise (with their utility).
* ``attribute-tuned`` (not in the default parts: slow) -- the same inference from a student that fine-tunes the
  shipped MiniLM end to end (``minilm-tuned``) vs the head on the frozen encoder.

    .venv/bin/python benchmarks/bench_worth.py                                  # every part, 5 seeds
    .venv/bin/python benchmarks/bench_worth.py --parts transfer --seeds 3       # one part, a quick look
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from _common import parse_args, print_table, set_torch_threads, write_json


@dataclass
class Args:
    parts: tuple[str, ...] = ("transfer", "architecture", "surpass", "ownership", "attribute")
    seeds: int = 5
    """seeds 0..seeds-1 (episode seeds; the surpass part also trains its victims from them)"""
    eps: float = 0.25
    """the transfer attacks' L-inf radius (share of the pixel range)"""
    transfer_budgets: tuple[int, ...] = (40, 100, 300)
    arch_budgets: tuple[int, ...] = (50, 100, 200)
    ownership_budgets: tuple[int, ...] = (250, 500, 1000, 2000)
    attribute_queries: int = 600
    tuned_steps: int = 40
    """minibatch steps (of 16) per round for the fine-tuned MiniLM student (``attribute-tuned``)"""
    torch_threads: int = 1
    json: bool = True


# -- statistics ------------------------------------------------------------------------------------------------------
def ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if len(v) < 2:
        return (float(v.mean()) if len(v) else math.nan), math.nan
    from scipy.stats import t

    return float(v.mean()), float(t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def show(values: list[float], scale: float = 100.0) -> str:
    m, h = ci(values)
    return f"{m * scale:.1f} ± {h * scale:.1f}" if not math.isnan(h) else f"{m * scale:.1f}"


def paired(a: list[float], b: list[float]) -> dict[str, Any]:
    """``a - b`` per seed: mean, 95% CI half-width, seeds where a > b."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    m, h = ci(d)
    return {"mean": m, "ci": h, "wins": sum(x > 0 for x in d), "n": len(d)}


def show_pair(p: dict[str, Any]) -> str:
    return f"{100 * p['mean']:+.1f} ± {100 * p['ci']:.1f} ({p['wins']}/{p['n']})"


def episode(scenario: dict[str, Any], seed: int) -> dict[str, Any]:
    from extractgym.scenarios import make_env
    from extractgym.scenarios.runner import play_episode

    env = make_env(scenario)
    try:
        return play_episode(env, seed=seed)
    finally:
        env.close()


# -- transfer --------------------------------------------------------------------------------------------------------
def transfer_attacks(eps: float) -> list[dict[str, Any]]:
    return [{"method": "fgsm", "eps": eps}, {"method": "pgd", "eps": eps},
            {"method": "pgd", "eps": eps, "targeted": True}]


def transfer_scenario(body: str, budget: int, eps: float, baseline: str = "own-labels", labels: str = "soft",
                      defence: dict[str, Any] | None = None) -> dict[str, Any]:
    rounds = 4
    params: dict[str, Any] = {"pool": "digits", "queries_per_round": max(1, budget // rounds)}
    if body == "jbda":
        params.update(seed_size=max(1, budget // 4))
    else:
        params["labels"] = labels
    return {"name": "bench-transfer", "rounds": rounds, "services": [{"name": "api", "victim": "digits-cnn"}],
            "attackers": [{"body": body, "params": params, "budget": {"queries": budget}}],
            "defenders": [defence or {"body": "none"}],
            "transfer": {"attacks": transfer_attacks(eps), "baseline": baseline, "inputs": 200}}


def part_transfer(args: Args) -> dict[str, Any]:
    seeds = list(range(args.seeds))
    rows, out = [], {"budgets": {}, "defences": {}}
    names = [a for a in ("fgsm", "pgd", "pgd-targeted")]
    for body in ("k-center", "jbda"):
        for budget in args.transfer_budgets:
            cell: dict[str, dict[str, list[float]]] = {n: {"surrogate": [], "own-labels": [], "untrained": []}
                                                       for n in names}
            acc = []
            for seed in seeds:
                s = episode(transfer_scenario(body, budget, args.eps), seed)
                u = episode(transfer_scenario(body, budget, args.eps, baseline="untrained"), seed)
                acc.append(s["attacker_accuracy"])
                for n, (name, fig) in zip(names, s["transfer_success"]["attacks"].items(), strict=True):
                    cell[n]["surrogate"].append(fig["attackers"]["attacker_0"])
                    cell[n]["own-labels"].append(fig["baselines"]["attacker_0"])
                    cell[n]["untrained"].append(u["transfer_success"]["attacks"][name]["baselines"]["attacker_0"])
            out["budgets"][f"{body}@{budget}"] = {"accuracy": acc, **cell}
            for n in names:
                rows.append([f"{body} {budget}", n, show(acc), show(cell[n]["surrogate"]), show(cell[n]["own-labels"]),
                             show(cell[n]["untrained"]),
                             show_pair(paired(cell[n]["surrogate"], cell[n]["own-labels"]))])
    print_table(f"Transfer success % on digits-cnn (eps {args.eps}, 200 held-out inputs), mean ± 95% CI over "
                f"{args.seeds} seeds; last column: surrogate - own-labels baseline, paired (seeds where higher)",
                ["attacker budget", "attack", "accuracy", "surrogate", "own-labels", "untrained", "gain"], rows)
    # rises with the budget: smallest vs largest budget, paired
    checks = []
    for body in ("k-center", "jbda"):
        lo, hi = (out["budgets"][f"{body}@{b}"] for b in (args.transfer_budgets[0], args.transfer_budgets[-1]))
        for n in names:
            p = paired(hi[n]["surrogate"], lo[n]["surrogate"])
            checks.append([f"{body} {n}", show_pair(p), show_pair(paired(hi[n]["surrogate"], hi[n]["own-labels"]))])
    print_table(f"Directions: transfer at budget {args.transfer_budgets[-1]} - at {args.transfer_budgets[0]}; and "
                f"surrogate - no-query baseline at {args.transfer_budgets[-1]} (paired)",
                ["attacker attack", "budget gain", "over baseline"], checks)
    # label-preserving perturbations against a label-trained surrogate
    budget = args.transfer_budgets[-1]
    defences = {"none": {"body": "none"}, "temperature 5": {"body": "temperature", "params": {"temperature": 5.0}},
                "label-preserving noise 0.2": {"body": "label-preserving-noise", "params": {"sigma": 0.2}},
                "reverse sigmoid": {"body": "reverse-sigmoid"}}
    drows, base = [], None
    for label, d in defences.items():
        figs: dict[str, list[float]] = {n: [] for n in names}
        util = []
        for seed in seeds:
            s = episode(transfer_scenario("k-center", budget, args.eps, labels="hard", defence=d), seed)
            util.append(s["defended_accuracy"])
            for n, fig in zip(names, s["transfer_success"]["attacks"].values(), strict=True):
                figs[n].append(fig["attackers"]["attacker_0"])
        out["defences"][label] = {"defended_accuracy": util, **figs}
        base = base or figs
        drows.append([label, show(util), *(show(figs[n]) for n in names),
                      *(show_pair(paired(figs[n], base[n])) for n in names)])
    print_table(f"Label-trained k-center surrogate ({budget} queries) under output perturbations that keep the top "
                f"class: transfer % and the paired change vs no defence",
                ["defence", "defended acc", *names, *(f"Δ {n}" for n in names)], drows)
    return out


# -- architecture ----------------------------------------------------------------------------------------------------
ARCHS = {"MLP (auto)": {"surrogate": "mlp"}, "small CNN": {"surrogate": "digits-cnn"},
         "wide CNN": {"surrogate": "digits-cnn-wide"},
         "small CNN pretrained (synth-digits)": {"surrogate": "digits-cnn", "pretrained": "synth-digits"},
         "small CNN pretrained (MNIST-8x8)": {"surrogate": "digits-cnn", "pretrained": "mnist8x8"}}


def part_architecture(args: Args) -> dict[str, Any]:
    seeds = list(range(args.seeds))
    out: dict[str, Any] = {}
    rows = []
    for budget in args.arch_budgets:
        accs = {}
        for label, extra in ARCHS.items():
            params = {"pool": "digits", "queries_per_round": budget // 2, "warm_start": False, "epochs": 60,
                      "lr": 2e-3, "batch_size": 32, **extra}
            sc = {"name": "bench-arch", "rounds": 2, "services": [{"name": "api", "victim": "digits-cnn"}],
                  "attackers": [{"body": "random", "params": params, "budget": {"queries": budget}}]}
            accs[label] = [episode(sc, seed)["attacker_accuracy"] for seed in seeds]
        out[str(budget)] = accs
        small = accs["small CNN"]
        for label, a in accs.items():
            rows.append([budget, label, show(a), "" if label == "small CNN" else show_pair(paired(a, small))])
    print_table(f"Substitute architecture (random queries from the digits pool, retrained to convergence each "
                f"round): accuracy % on digits-cnn's test split, mean ± 95% CI over {args.seeds} seeds; vs small CNN, "
                f"paired", ["budget", "architecture", "accuracy", "vs small CNN"], rows)
    return out


# -- surpass ---------------------------------------------------------------------------------------------------------
VICTIMS = {"A": "digits-cnn-a", "B": "digits-cnn-b", "C": "digits-cnn-c", "D": "digits-cnn-d", "Full": "digits-cnn"}
RETRAIN = {"surrogate": "digits-cnn", "pretrained": "synth-digits", "warm_start": False, "epochs": 8, "lr": 1e-3,
           "batch_size": 64}
STUDENTS = {"scratch MLP": {},  # the arena's default student (warm-started MLP), as bench_imitation
            "pretrained CNN": RETRAIN,  # retrained from the synth-digits checkpoint every round
            "pretrained CNN + rehearsal": {**RETRAIN, "rehearse": 6.0}}  # ... with the public digits kept in the mix


def surpass_scenario(victims: list[str], student: dict[str, Any], seed: int) -> dict[str, Any]:
    services = [{"name": f"api-{i}", "victim": v, "victim_seed": seed} for i, v in enumerate(victims)]
    params = {"pool": "mnist8x8", "queries_per_round": 250, "services": [s["name"] for s in services],
              "combine": "average", "train_steps": 150, **student}
    return {"name": "bench-surpass", "rounds": 4, "services": services,
            "attackers": [{"body": "random", "params": params, "brain": {"kind": "preset", "knobs": {"service": "all"}}
                           if len(services) > 1 else "preset"}],
            "evaluate": [{"dataset": "mnist8x8", "split": "test"}]}


def part_surpass(args: Args) -> dict[str, Any]:
    seeds = list(range(args.seeds))
    out: dict[str, Any] = {"victims": {}, "students": {}}
    configs = {**{k: [v] for k, v in VICTIMS.items()}, "A+B+C+D": [VICTIMS[k] for k in "ABCD"]}
    for label, victims in configs.items():
        for student, extra in STUDENTS.items():
            got, own = [], []
            for seed in seeds:
                s = episode(surpass_scenario(victims, extra, seed), seed)
                ev = s["evaluations"]["mnist8x8:test"]
                got.append(ev["attackers"]["attacker_0"]["accuracy"])
                own.append(max(ev["victims"].values()))  # the best victim it imitates
            out["students"][f"{label}|{student}"] = got
            out["victims"][label] = own
    rows = []
    for label in configs:
        victim = out["victims"][label]
        for student in STUDENTS:
            a = out["students"][f"{label}|{student}"]
            rows.append([label, student, show(victim), show(a), show_pair(paired(a, victim))])
    print_table(f"On the attacker's own domain (MNIST-8x8 test), 1,000 queries per victim, victims retrained per "
                f"seed: accuracy %, mean ± 95% CI over {args.seeds} seeds; student - the (best) victim it imitates, "
                f"paired", ["victims", "student", "victim", "student acc", "student - victim"], rows)
    erows = []
    for student in STUDENTS:
        ens = out["students"][f"A+B+C+D|{student}"]
        for q in "ABCD":
            erows.append([student, f"A+B+C+D - {q}", show_pair(paired(ens, out["students"][f"{q}|{student}"]))])
    print_table("Ensemble of the four quarter victims vs each single-victim student (same student), paired",
                ["student", "comparison", "difference"], erows)
    return out


# -- ownership -------------------------------------------------------------------------------------------------------
def part_ownership(args: Args) -> dict[str, Any]:
    seeds = list(range(args.seeds))
    out: dict[str, Any] = {}
    rows = []
    for budget in args.ownership_budgets:
        sc = {"name": "bench-ownership", "rounds": 4,
              "services": [{"name": "api", "victim": "digits-cnn"}],
              "attackers": [{"body": "jb-top3", "params": {"pool": "digits", "queries_per_round": budget // 4,
                                                           "epochs": 200}, "budget": {"queries": budget}}],
              "defenders": [{"body": "dawn", "params": {"rate": 0.005}}],
              "controls": [{"name": "independent", "dataset": "digits", "split": "pool"}]}
        res = [episode(sc, seed)["ownership_matrix"]["defender_0"] for seed in seeds]
        sur = [r["attacker_0"]["attacker_0"] for r in res]
        ctl = [r["control:independent"]["attacker_0"] for r in res]
        out[str(budget)] = {"surrogate": sur, "control": ctl}
        rows.append([budget, np.mean([t["watermarks"] for t in sur]), sur[0]["min_watermarks"],
                     sur[0].get("queries_needed"), f"{sum(t['attributed'] for t in sur)}/{len(sur)}",
                     float(np.median([t["p_value"] for t in sur])), f"{sum(t['attributed'] for t in ctl)}/{len(ctl)}",
                     float(np.median([t["p_value"] for t in ctl]))])
    print_table("DAWN at 0.5%: the referee's ownership test of a JB-top3 substitute retrained to convergence (200 "
                "epochs) and of an independently trained control, by query budget",
                ["queries", "watermarks", "needed", "queries needed", "surrogate attributed", "median p",
                 "control attributed", "control median p"], rows)
    return out


# -- attribute -------------------------------------------------------------------------------------------------------
def part_attribute(args: Args) -> dict[str, Any]:
    seeds = list(range(args.seeds))
    defences = {"none": {"body": "none"}, "temperature 5": {"body": "temperature", "params": {"temperature": 5.0}},
                "gaussian noise 0.2": {"body": "gaussian-noise", "params": {"sigma": 0.2}},
                "gaussian noise 0.5": {"body": "gaussian-noise", "params": {"sigma": 0.5}}}
    out: dict[str, Any] = {}
    rows = []
    for label, d in defences.items():
        figs: dict[str, dict[str, list[float]]] = {}
        util, fid = [], []
        for seed in seeds:
            sc = {"name": "bench-attribute", "rounds": 4,
                  "services": [{"name": "api", "victim": "convention-sentiment"}],
                  "attackers": [{"body": "random", "params": {"pool": "convention-2012",
                                                              "queries_per_round": args.attribute_queries // 4},
                                 "budget": {"queries": args.attribute_queries}}],
                  "defenders": [d],
                  "attribute_inference": {"attribute": "party", "aux": [
                      {"name": "same-domain", "dataset": "convention-2012", "split": "pool", "records": 200},
                      {"name": "cross-domain", "dataset": "debates-2016", "split": "all", "records": 200}]}}
            s = episode(sc, seed)
            util.append(s["defended_accuracy"])
            fid.append(s["attacker_accuracy"])
            for aux, f in s["attribute_inference"]["aux"].items():
                c = figs.setdefault(aux, {"attacker": [], "encoder": [], "majority": []})
                c["attacker"].append(f["attackers"]["attacker_0"])
                c["encoder"].append(f["encoder"])
                c["majority"].append(f["majority"])
        out[label] = {"defended_accuracy": util, "attacker_accuracy": fid, **figs}
        for aux, c in figs.items():
            rows.append([label, aux, show(util), show(fid), show(c["majority"]), show(c["encoder"]),
                         show(c["attacker"]), show_pair(paired(c["attacker"], c["majority"])),
                         show_pair(paired(c["attacker"], c["encoder"]))])
    print_table(f"Attribute inference of the speaker's party on the victim's 1,189 training passages "
                f"({args.attribute_queries} same-domain queries, 200 auxiliary passages): accuracy %, mean ± 95% CI "
                f"over {args.seeds} seeds; the extracted model vs each baseline, paired",
                ["defence", "aux", "defended acc", "extraction acc", "majority", "encoder", "extracted",
                 "vs majority", "vs encoder"], rows)
    base = out["none"]
    drows = []
    for label in defences:
        if label == "none":
            continue
        for aux in base:
            if aux in ("defended_accuracy", "attacker_accuracy"):
                continue
            drows.append([label, aux, show_pair(paired(out[label][aux]["attacker"], base[aux]["attacker"])),
                          show_pair(paired(out[label]["defended_accuracy"], base["defended_accuracy"]))])
    print_table("Defences vs no defence, paired: change in attribute inference and in utility (defended accuracy)",
                ["defence", "aux", "Δ inference", "Δ utility"], drows)
    return out


def part_attribute_tuned(args: Args) -> dict[str, Any]:
    """Attribute inference from a student fine-tuned end to end (``minilm-tuned``) vs the frozen-encoder head."""
    seeds = list(range(args.seeds))
    students = {"MLP head on frozen MiniLM": {},
                "MiniLM fine-tuned end to end": {"surrogate": "minilm-tuned", "lr": 3e-5, "batch_size": 16,
                                                 "train_steps": args.tuned_steps}}
    out: dict[str, Any] = {}
    rows = []
    for label, extra in students.items():
        figs: dict[str, dict[str, list[float]]] = {}
        acc = []
        for seed in seeds:
            sc = {"name": "bench-attribute-tuned", "rounds": 2,
                  "services": [{"name": "api", "victim": "convention-sentiment"}],
                  "attackers": [{"body": "random", "params": {"pool": "convention-2012",
                                                              "queries_per_round": args.attribute_queries // 2,
                                                              **extra},
                                 "budget": {"queries": args.attribute_queries}}],
                  "attribute_inference": {"attribute": "party", "aux": [
                      {"name": "same-domain", "dataset": "convention-2012", "split": "pool", "records": 200},
                      {"name": "cross-domain", "dataset": "debates-2016", "split": "all", "records": 200}]}}
            s = episode(sc, seed)
            acc.append(s["attacker_accuracy"])
            for aux, f in s["attribute_inference"]["aux"].items():
                c = figs.setdefault(aux, {"attacker": [], "encoder": [], "majority": []})
                c["attacker"].append(f["attackers"]["attacker_0"])
                c["encoder"].append(f["encoder"])
                c["majority"].append(f["majority"])
        out[label] = {"attacker_accuracy": acc, **figs}
        for aux, c in figs.items():
            rows.append([label, aux, show(acc), show(c["majority"]), show(c["encoder"]), show(c["attacker"]),
                         show_pair(paired(c["attacker"], c["majority"])), show_pair(paired(c["attacker"], c["encoder"]))])
    print_table(f"Attribute inference (party) from a head on the frozen encoder vs a student fine-tuned end to end, "
                f"{args.attribute_queries} same-domain queries, no defence, mean ± 95% CI over {args.seeds} seeds",
                ["student", "aux", "extraction acc", "majority", "encoder", "extracted", "vs majority", "vs encoder"],
                rows)
    return out


PARTS = {"transfer": part_transfer, "architecture": part_architecture, "surpass": part_surpass,
         "ownership": part_ownership, "attribute": part_attribute, "attribute-tuned": part_attribute_tuned}


def main() -> None:
    args = parse_args(Args)
    set_torch_threads(args.torch_threads)
    unknown = [p for p in args.parts if p not in PARTS]
    if unknown:
        raise SystemExit(f"unknown part(s) {unknown}; parts: {', '.join(PARTS)}")
    results: dict[str, Any] = {}
    for part in args.parts:
        t0, c0 = time.perf_counter(), time.process_time()
        results[part] = PARTS[part](args)
        results[part]["cpu_seconds"] = time.process_time() - c0
        print(f"[{part}: {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU]")
    if args.json:
        write_json("bench_worth" + ("" if len(args.parts) == len(PARTS) else "_" + "_".join(args.parts)), args,
                   results)


if __name__ == "__main__":
    main()
