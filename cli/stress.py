"""``extractgym stress``: the strongest adaptive attacker a CPU budget finds against a scenario's defence, and the
defence card (``card.json``, ``card.html``) that reports it against the scenario's preset attacker."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from extractgym.cli.common import app, console, fail


@app.command()
def stress(scenario: Annotated[str, typer.Argument(help="shipped scenario name or YAML path")],
           out: Annotated[Path, typer.Option(help="folder for card.json, card.html and the search's files")],
           seat: Annotated[str | None, typer.Option(help="the attacker seat searched (default: the first)")] = None,
           cpu_minutes: Annotated[float, typer.Option(min=0.01, help="the search's CPU budget (this process and its "
                                                                     "workers; the held-out comparison comes on top)")] = 10.0,
           seeds: Annotated[int, typer.Option(min=2, help="held-out seeds of the passive vs adaptive comparison")] = 20,
           search_seeds: Annotated[int, typer.Option(min=1, help="seeds the candidates are ranked on")] = 6,
           rl: Annotated[bool, typer.Option(help="also train RL attackers (maskable PPO with memory, from "
                                                 "scratch and from the best script)")] = True,
           stack: Annotated[int, typer.Option(min=1, help="the RL attackers' memory (observations read at once)")] = 4,
           variants: Annotated[bool, typer.Option(help="also try the seat with the sybil, blinding and oars tactics "
                                                       "it lacks added")] = True,
           seed: Annotated[int, typer.Option(min=0, help="seed of the RL runs")] = 0,
           undefended: Annotated[bool, typer.Option(help="replay the passive and the adaptive attacker on the held-out "
                                                         "seeds with the defence removed, for the erosion (what the "
                                                         "defence gives away beyond the preset's slack)")] = True,
           ) -> None:
    """Stress-test a defence: search attackers within a CPU budget, compare the best with the preset, write the card."""
    from extractgym.agents.brains.learned import PolicyError
    from extractgym.scenarios import ScenarioError
    from extractgym.scenarios.evaluate import EvalError
    from extractgym.stress import StressConfig
    from extractgym.stress import stress as run_stress

    cfg = StressConfig(scenario, seat, cpu_minutes, seeds, search_seeds, out, rl, stack, variants, seed,
                       undefended=undefended)
    try:
        result = run_stress(cfg, log=lambda m: console.print(m, highlight=False))
    except (ScenarioError, EvalError, PolicyError, ValueError, RuntimeError, OSError) as e:
        fail(str(e))
    import json

    card = json.loads((out / "card.json").read_text())
    lo, hi = card["gap_ci"]
    console.print(f"passive ({card['passive']['name']}): {card['passive']['mean']:.4f} ± {card['passive']['se']:.4f}; "
                  f"adaptive ({card['strategy']['name']}): {card['adaptive']['mean']:.4f} ± "
                  f"{card['adaptive']['se']:.4f}", highlight=False)
    console.print(f"gap {card['gap']:+.4f}, 95% interval [{lo:+.4f}, {hi:+.4f}] on {card['held_out_seeds']} held-out "
                  f"seeds: {card['gap_verdict']}", highlight=False)
    u, ero = card["undefended"], card["erosion"]
    if u["status"] == "replayed":
        ulo, uhi = u["gap_ci"]
        elo, ehi = ero["ci"]
        console.print(f"without the defence: passive {u['passive']['mean']:.4f}, adaptive {u['adaptive']['mean']:.4f}, "
                      f"gap {u['gap']:+.4f} [{ulo:+.4f}, {uhi:+.4f}]", highlight=False)
        console.print(f"erosion {ero['mean']:+.4f}, 95% interval [{elo:+.4f}, {ehi:+.4f}], one-sided p = "
                      f"{ero['p_better'] if ero['p_better'] is None else format(ero['p_better'], '.3g')}: "
                      f"{card['erosion_verdict']}", highlight=False)
    else:
        console.print(f"erosion: {card['erosion_verdict']}", highlight=False)
    console.print(f"strategy: {card['strategy']['description']}", highlight=False)
    console.print(f"searched {len(result.candidates)} candidates in {result.cpu_seconds:.0f} CPU-s; wrote {out}/card.json "
                  f"and {out}/card.html", highlight=False)
