"""PNG learning curves (matplotlib, Agg backend): a training run's, and PSRO's best-response gains."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def rolling(values: Sequence[float], window: int) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if len(v) == 0:
        return v
    w = max(1, min(window, len(v)))
    c = np.cumsum(np.insert(v, 0, 0.0))
    out = np.empty_like(v)
    out[w - 1:] = (c[w:] - c[:-w]) / w
    out[:w - 1] = c[1:w] / np.arange(1, w)
    return out


def learning_curve(path: Path, episodes: Sequence[Mapping[str, float]], evaluations: Sequence[Mapping[str, float]],
                   baselines: Mapping[str, float], title: str, window: int = 20) -> Path:
    """Training episode returns (faint, with a rolling mean), held-out evaluations (mean +- SE) and the baselines'
    held-out means (dashed lines), against timesteps."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if episodes:
        steps = [e["step"] for e in episodes]
        ret = [e["return"] for e in episodes]
        ax.plot(steps, ret, ".", color="tab:blue", alpha=0.15, markersize=3)
        ax.plot(steps, rolling(ret, window), color="tab:blue", label=f"training episodes (rolling mean of {window})")
    if evaluations:
        s = [e["step"] for e in evaluations]
        m = np.array([e["mean"] for e in evaluations])
        se = np.nan_to_num(np.array([e["se"] for e in evaluations]))
        ax.errorbar(s, m, yerr=se, color="black", marker="o", capsize=3, label="held-out evaluation (mean ± SE)")
    for (name, value), color in zip(baselines.items(), ("tab:red", "tab:green", "tab:orange", "tab:purple",
                                                         "tab:brown", "tab:gray"), strict=False):
        ax.axhline(value, linestyle="--", color=color, label=f"{name} (held-out mean)")
    ax.set_xlabel("timesteps (rounds)")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def psro_figure(path: Path, gains: Sequence[Mapping[str, float]], curves: Mapping[str, Sequence[Mapping[str, float]]],
                title: str, window: int = 20) -> Path:
    """Left: each iteration's best-response gains (attacker, defender, their sum: the exploitability proxy).
    Right: the best responses' training curves (rolling mean of episode returns)."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    if gains:
        it = [g["iteration"] for g in gains]
        for key, color in (("attacker_gain", "tab:red"), ("defender_gain", "tab:blue"), ("total_gain", "black")):
            a.plot(it, [g[key] for g in gains], marker="o", color=color, label=key.replace("_", " "))
        a.set_xticks(it)
    a.axhline(0.0, color="gray", linewidth=0.8)
    a.set_xlabel("PSRO iteration")
    a.set_ylabel("best-response gain over the meta-strategy")
    a.set_title("best-response gains (exploitability proxy)")
    a.legend(fontsize=8)
    a.grid(alpha=0.3)
    for name, rows in curves.items():
        if rows:
            b.plot([r["step"] for r in rows], rolling([r["return"] for r in rows], window), label=name)
    b.set_xlabel("timesteps (rounds)")
    b.set_ylabel("training episode return (rolling mean)")
    b.set_title("best-response learning curves")
    b.legend(fontsize=7)
    b.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
