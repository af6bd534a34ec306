"""Verdicts you can publish (issue 23): rows keyed on the code that played them, one run per folder, ranks that
agree with scores, intervals whose coverage is measured, payoffs that count the customers, and the faults."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from extractgym.cli import app
from extractgym.league import analysis as an
from extractgym.league import methods as mt
from extractgym.league import rankings as rk
from extractgym.league.fingerprint import FolderLock, compute
from extractgym.league.runner import RESULTS, ResultsFile
from extractgym.league.spec import shipped_leagues

ROOT = Path(__file__).resolve().parents[1]
WIDE = {"COLUMNS": "400"}


def _one_cell_league(tiny_league, **changes):
    """One attacker x one defender x one scenario x two seeds, one round: a couple of seconds."""
    spec = tiny_league(seeds=2, attackers=[{"name": "rand", "body": "random"}],
                       defenders=[{"name": "none", "body": "none"}], **changes)
    spec["scenarios"][0]["overrides"] = {"rounds": 1}
    return spec


# -- 1. rows keyed on the code that played them ------------------------------------------------------------------
def _copy_package(dest: Path) -> Path:
    """The package's source as another installation would have it (``dest/extractgym``)."""
    target = dest / "extractgym"
    shutil.copytree(ROOT, target, ignore=shutil.ignore_patterns(
        ".venv", ".git", "tests", "benchmarks", "docs", "runs", "__pycache__", "*.egg-info", ".pytest_cache"))
    return dest


def test_a_resume_after_a_code_change_refuses_then_reruns_never_mixing_fingerprints(tmp_path, tiny_league):
    spec_path = tmp_path / "league.yaml"
    spec_path.write_text(yaml.safe_dump(_one_cell_league(tiny_league)))
    out = tmp_path / "out"
    first = CliRunner().invoke(app, ["tournament", str(spec_path), "--out", str(out), "--workers", "0",
                                     "--no-report"], env=WIDE)
    assert first.exit_code == 0, first.output
    before = {r["fingerprint"] for r in ResultsFile(out / RESULTS).load()[0].values()}
    assert len(before) == 1
    # the same package with one body's default changed, as a user editing a file would
    copy = _copy_package(tmp_path / "pkg")
    body = copy / "extractgym" / "agents" / "attackers" / "random_sampling.py"
    text = body.read_text()
    assert "queries_per_round: int = 50" in text
    body.write_text(text.replace("queries_per_round: int = 50", "queries_per_round: int = 30", 1))
    env = {**os.environ, "PYTHONPATH": str(copy), "COLUMNS": "400", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "extractgym.cli", "tournament", str(spec_path), "--out", str(out), "--workers", "0",
           "--no-report"]
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    message = " ".join((refused.stdout + refused.stderr).split())
    assert "agents/attackers/random_sampling.py (changed)" in message and "--rerun-stale" in message
    assert {r["fingerprint"] for r in ResultsFile(out / RESULTS).load()[0].values()} == before, "nothing played"
    rerun = subprocess.run([*cmd, "--rerun-stale"], env=env, capture_output=True, text=True, timeout=300,
                           cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "played 2 cells" in " ".join(rerun.stdout.split())
    after = {r["fingerprint"] for r in ResultsFile(out / RESULTS).load()[0].values()}
    assert len(after) == 1 and after != before, "every row of the league is now from the new code"
    manifests = json.loads((out / "fingerprints.json").read_text())
    assert before | after <= set(manifests)


def test_the_fingerprint_covers_the_playing_layers_and_library_versions_only(tmp_path):
    copy = _copy_package(tmp_path / "pkg") / "extractgym"
    base = compute(copy)
    assert "agents/attackers/random_sampling.py" in base.files and "envs/api.py" in base.files
    assert {"torch", "numpy", "scikit-learn", "stable-baselines3", "transformers"} <= set(base.versions)
    assert not any(f.startswith(("cli/", "serve/", "training/", "league/report")) for f in base.files)
    (copy / "league" / "report.py").write_text("# a report change cannot change a row\n")
    assert compute(copy).digest == base.digest
    (copy / "envs" / "api.py").write_text((copy / "envs" / "api.py").read_text() + "\n# changed\n")
    assert compute(copy).digest != base.digest


def test_one_run_per_output_folder(tmp_path, tiny_league):
    spec_path = tmp_path / "league.yaml"
    spec_path.write_text(yaml.safe_dump(_one_cell_league(tiny_league)))
    out = tmp_path / "out"
    with FolderLock(out):
        result = CliRunner().invoke(app, ["tournament", str(spec_path), "--out", str(out), "--workers", "0"],
                                    env=WIDE)
    assert result.exit_code == 2 and "in use by another tournament" in result.output
    assert not (out / RESULTS).exists()


# -- 6. bad output folders and names, the bootstrap's cap, progress ----------------------------------------------
def test_a_bad_out_exits_2_with_a_message(tmp_path, tiny_league):
    spec_path = tmp_path / "league.yaml"
    spec_path.write_text(yaml.safe_dump(_one_cell_league(tiny_league)))
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    for out, needle in ((a_file, "is a file, not a folder"), (a_file / "sub", "cannot create")):
        result = CliRunner().invoke(app, ["tournament", str(spec_path), "--out", str(out), "--workers", "0"],
                                    env=WIDE)
        assert result.exit_code == 2 and needle in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("name", ["../../x", "/tmp/elsewhere", "a/b", ".."])
def test_a_spec_name_that_leaves_the_output_root_exits_2(tmp_path, tiny_league, name):
    spec_path = tmp_path / "league.yaml"
    spec_path.write_text(yaml.safe_dump(_one_cell_league(tiny_league, name=name)))
    result = CliRunner().invoke(app, ["tournament", str(spec_path), "--dry-run"], env=WIDE)
    assert result.exit_code == 2 and "name" in result.output and "plain folder name" in result.output


def test_bootstrap_has_a_sane_cap(tmp_path, tiny_league):
    spec_path = tmp_path / "league.yaml"
    spec_path.write_text(yaml.safe_dump(_one_cell_league(tiny_league, rankings={"bootstrap": 100_000})))
    result = CliRunner().invoke(app, ["tournament", str(spec_path), "--dry-run"], env=WIDE)
    assert result.exit_code == 2 and "rankings.bootstrap" in result.output


def test_the_report_stage_shows_progress(played_tiny_league, tmp_path):
    from extractgym.league import tournament

    spec, cells, out = played_tiny_league
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    raw = json.loads((copy / "league.json").read_text())["spec"]
    seen: dict[str, list[tuple[int, int]]] = {}
    tournament.report(spec, raw, cells, copy, progress=lambda stage, done, total: seen.setdefault(
        stage, []).append((done, total)))
    assert seen["bootstrap"][-1] == (spec.rankings.bootstrap, spec.rankings.bootstrap)
    assert seen["figures"][-1][0] == seen["figures"][-1][1]


def test_pool_workers_die_with_their_parent(tmp_path):
    """A ``kill -9`` of the league's process leaves no worker playing on (they watch their parent)."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent("""
        import multiprocessing, os, sys, time
        from concurrent.futures import ProcessPoolExecutor
        from extractgym.league.runner import _init_worker
        if __name__ == "__main__":
            ex = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                                     initargs=(os.getpid(),))
            print(ex.submit(os.getpid).result(), flush=True)
            time.sleep(600)
    """))
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        worker = int(parent.stdout.readline())
        assert _alive(worker)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.time() + 20
        while _alive(worker) and time.time() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "the worker outlived its parent"
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


# -- 2. ranks that agree with scores -----------------------------------------------------------------------------
def _walk(ranking: an.Ranking) -> None:
    """A higher score never has a worse rank; a weight-0 contestant with a degenerate interval never shares a rank
    with a weight-1 one."""
    for k, rank in ranking.rank.items():
        score, better = np.round(ranking.score[k], 7), mt.RANKINGS[k].better     # closer than 1e-7 is equal
        for i in range(len(score)):
            for j in range(len(score)):
                if np.isfinite(score[i]) and np.isfinite(score[j]) and (
                        score[i] > score[j] if better == "higher" else score[i] < score[j]):
                    assert rank[i] <= rank[j], (k, ranking.names[i], ranking.names[j])
        if mt.RANKINGS[k].mass:
            zero = (score <= 1e-9) & (ranking.lo[k] <= 1e-9) & (ranking.hi[k] <= 1e-9)
            one = score >= 1 - 1e-9
            assert not set(rank[zero]) & set(rank[one]), (k, ranking.names)


@settings(max_examples=25, deadline=None)
@given(n_a=st.integers(2, 5), n_d=st.integers(2, 5), reps=st.integers(2, 5), noise=st.sampled_from([0.0, 0.01, 0.2]),
       seed=st.integers(0, 10_000))
def test_ranks_never_contradict_scores(n_a, n_d, reps, noise, seed):
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0, 1, (n_a, n_d))
    pa = truth[..., None] + noise * rng.standard_normal((n_a, n_d, reps))
    pd = -pa + 0.1 * rng.uniform(0, 1, (n_a, n_d, 1))
    sr = an.rank_payoffs(pa, pd, bootstrap=20, seed=seed)
    _walk(sr.attacker)
    _walk(sr.defender)


def test_a_dominated_contestant_never_ties_the_one_with_all_the_weight():
    """Issue 23: a weight-0 contestant with interval [0, 0], strictly dominated, was ranked 1= with the rest.
    Here one attacker dominates (weight 1 in every resample) and one is dominated (weight 0 in every one)."""
    rng = np.random.default_rng(0)
    truth = rng.uniform(0.3, 0.6, (4, 4))
    truth[0] += 0.4
    truth[3] = truth[:3].min(axis=0) - 0.2
    pa = truth[..., None] + 0.02 * rng.standard_normal((4, 4, 3))
    sr = an.rank_payoffs(pa, -pa, bootstrap=50)
    r = sr.attacker
    assert r.score["nash"][0] == pytest.approx(1.0) and r.lo["nash"][0] == pytest.approx(1.0)
    assert r.score["nash"][3] == 0 and r.hi["nash"][3] == 0
    assert r.rank["nash"][0] == 1 and r.rank["nash"][3] > 1
    _walk(r)


def test_weight_that_two_contestants_take_turns_holding_never_ties_one_that_never_holds_any():
    """v1 of the digits league: uncertainty and k-center are level, so the equilibrium puts all the weight on one
    or the other from resample to resample; random is out of it in every resample. Pairwise, random cannot be told
    from either; against the pair's best weight in each resample, it always loses."""
    rng = np.random.default_rng(0)
    turns = rng.random(200) < 0.6
    samples = np.zeros((200, 3))
    samples[turns, 0], samples[~turns, 1] = 1.0, 1.0                  # [uncertainty, k-center, random]
    ranks = rk.ranks_by_group_max(np.array([1.0, 0.0, 0.0]), samples)
    np.testing.assert_array_equal(ranks, [1, 1, 3])
    np.testing.assert_array_equal(rk.ranks_by_group_max(np.array([0.0, 0.0, 1.0]), samples[:, [2, 1, 0]]),
                                  [3, 1, 1])
    even = np.full((200, 3), 1 / 3)                                     # an equal three-way split stays together
    np.testing.assert_array_equal(rk.ranks_by_group_max(np.full(3, 1 / 3), even), [1, 1, 1])


def test_a_tie_group_never_spans_two_contestants_a_test_tells_apart():
    # a > b > c with a ~ b and b ~ c untestable but a vs c decisive: c does not join a's group through b
    score = np.array([1.0, 0.5, 0.0])
    p = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.5], [0.0, 0.5, 1.0]])
    np.testing.assert_array_equal(rk.ranks_by_score(score, p), [1, 1, 3])
    np.testing.assert_array_equal(rk.ranks_by_score(-score, p, better="lower"), [1, 1, 3])
    np.testing.assert_array_equal(rk.ranks_by_score(np.array([0.2, np.nan, 0.3]), np.ones((3, 3))), [1, 3, 1])


def test_holm_and_paired_p():
    np.testing.assert_allclose(rk.holm(np.array([0.01, 0.04, 0.03])), [0.03, 0.06, 0.06])
    assert rk.paired_p(1.0, 0.0, 2) == 0.0 and rk.paired_p(0.0, 0.0, 2) == 1.0
    assert 0.0 < rk.paired_p(1.0, 0.5, 2) < 1.0


# -- 3. intervals that cover -------------------------------------------------------------------------------------
def test_the_t_interval_covers_at_its_nominal_level_with_three_seeds():
    """Student's t over 3 seeds covers a normal mean 95% of the time; the bootstrap-SE interval of a mean is the
    same interval (its sqrt(n / (n - 1)) correction), where the old percentile bootstrap covered far less."""
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 0.1, size=(4000, 3))
    _, lo, hi = rk.t_interval(x, 0.95)
    assert 0.935 <= np.mean((lo <= 0.5) & (0.5 <= hi)) <= 0.965
    idx = rng.integers(0, 3, (400, 3))
    boots = x[:200, idx].mean(axis=-1).T                       # [resample, league]
    blo, bhi = rk.bootstrap_interval(x[:200].mean(axis=1), boots, 3)
    np.testing.assert_allclose(bhi - blo, hi[:200] - lo[:200], rtol=0.2)
    plo, phi = rk.percentile_interval(boots)
    assert np.mean((plo <= 0.5) & (0.5 <= phi)) < 0.85


def test_the_shipped_coverage_table_backs_the_shipped_seeds():
    """The report states the measured coverage (league/coverage.json, from benchmarks/bench_coverage.py); at every
    shipped league's seeds it is at least 90% for each interval kind the report shows."""
    table = an.coverage_table()
    assert table.get("nominal") == 0.95 and "bench_coverage.py" in table.get("command", "")
    assert set(table["coverage"]) >= {mt.RANKINGS[k].title for k in mt.RANKINGS} | {"table cell mean (t)"}
    for name in shipped_leagues():
        from extractgym.league.spec import load_league

        spec, _ = load_league(name)
        low = {k: v for k, v in an.coverage_at(spec.seeds, table).items() if v is None or v < an.COVERAGE_TARGET}
        assert not low, f"{name}: {spec.seeds} seeds give less than 90% coverage for {low}"
        assert not an.coverage_warnings(spec.seeds, table)
    assert an.coverage_warnings(1, table), "one seed is warned about"


# -- 4. payoffs that count what each side cares about ------------------------------------------------------------
def test_the_default_defender_payoff_counts_the_customers_value_and_false_positives():
    from extractgym.league.spec import DEFAULT_DEFENDER, PayoffSpec

    assert PayoffSpec().defender == DEFAULT_DEFENDER
    assert DEFAULT_DEFENDER["benign_value_share"] > 0 and DEFAULT_DEFENDER["false_positive_rate"] < 0
    summary = {"attacker_accuracy": 0.8, "benign_value_share": 0.2, "false_positive_rate": 0.5, "utility": 0.999,
               "returns": {"attacker_0": 0.7, "defender_0": -0.7}}
    from extractgym.league.spec import LeagueSpec

    spec = LeagueSpec.model_validate({"name": "x", "scenarios": ["digits-basic"],
                                      "attackers": [{"name": "a", "body": "random"}],
                                      "defenders": [{"name": "d", "body": "none"}]})
    assert an.payoff(summary, spec, "defender") == pytest.approx(-0.8 + 0.2 - 0.5)


def test_identical_contestants_and_idle_detectors_are_flagged(played_tiny_league):
    from extractgym.league import verdict as vd

    spec, cells, out = played_tiny_league
    rows, _ = ResultsFile(out / RESULTS).load()
    data = an.collect(spec, cells, rows)
    assert an.identical_contestants(data) == {"attacker": [], "defender": []}
    twin = an.LeagueData(spec, data.scenarios, data.attackers, [*data.defenders, "none-again"],
                         {k: np.concatenate([v, v[:, :, :1]], axis=2) for k, v in data.values.items()},
                         {k: np.concatenate([v, v[:, :, :1]], axis=2) for k, v in data.raw.items()}, data.curves,
                         data.curve_keys, np.concatenate([data.status, data.status[:, :, :1]], axis=2))
    assert an.identical_contestants(twin)["defender"] == [["none", "none-again"]]
    ranked = an.rank_all(data)
    verdict = vd.judge(data, ranked)
    assert verdict.best["defender"] and verdict.best["attacker"]
    assert any("keep" in s and "value they pay for" in s for s in verdict.statements)
    assert verdict.acted["rs"] == {"digits-basic": 0}


def test_the_report_shows_the_verdict_the_value_share_and_the_contestants(played_tiny_league):
    _, _, out = played_tiny_league
    html = (out / "report" / "index.html").read_text()
    for needle in ('id="verdict"', "Interval coverage", 'id="contestants"', "benign value share", "top-1",
                   'id="head-to-head"', "alpha-Rank as alpha grows", "regret vs equilibrium", "NashConv",
                   'id="defences"', "The rank rule"):
        assert needle in html, needle
    assert "Random sampling" in html or "random" in html.lower()
    assert (out / "report" / "head_to_head.csv").exists() and (out / "report" / "alpharank-sweep.png").exists()
    verdict = json.loads((out / "report" / "rankings.json").read_text())["verdict"]
    assert verdict["statements"] and verdict["seeds"] == 2


def test_a_registered_ranking_reaches_every_table_and_the_report(played_tiny_league, tmp_path, monkeypatch):
    """Issue 19: adding a ranking is one registered function; its scores, intervals and ranks reach the CSV, the
    JSON and the HTML report with no other change."""
    from extractgym.league import tournament

    spec, cells, out = played_tiny_league
    monkeypatch.setattr(mt, "RANKINGS", dict(mt.RANKINGS))

    @mt.register_ranking("best_case_test", "best case (test)", complete=False)
    def best_case(game):
        """The highest payoff against the other side's contestants."""
        return np.nanmax(game.attacker, axis=1), np.nanmax(game.defender, axis=0)

    copy = tmp_path / "league"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("report", ".lock"))
    _, raw, _, _ = tournament.load_saved(copy)
    tournament.report(spec, raw, cells, copy)
    rows = [r for r in json.loads((copy / "report" / "rankings.json").read_text())["rankings"]
            if r["method"] == "best_case_test"]
    assert rows and all(r["rank"] >= 1 and r["ci_low"] <= r["score"] <= r["ci_high"] for r in rows)
    assert "best_case_test" in (copy / "report" / "rankings.csv").read_text()
    assert "best case (test)" in (copy / "report" / "index.html").read_text()


# -- 5. what the researcher expects --------------------------------------------------------------------------------
def test_head_to_head_tests_are_paired_and_holm_corrected():
    rng = np.random.default_rng(1)
    common = rng.normal(0, 1.0, 8)                    # a large per-seed effect every contestant shares
    pa = np.zeros((3, 2, 8))
    pa[0] = 0.5 + common
    pa[1] = 0.45 + common + 0.005 * rng.standard_normal((2, 8))
    pa[2] = 0.5 + common + 0.3 * rng.standard_normal((2, 8))
    h = an.head_to_head("attacker", ["a", "b", "c"], pa, axis=0)
    assert h.diff[0, 1] == pytest.approx(0.05, abs=0.01) and h.p[0, 1] < 0.01, "paired: the shared effect cancels"
    assert h.p[0, 2] > 0.05 and h.p[1, 0] == h.p[0, 1] and np.allclose(h.diff, -h.diff.T)


def test_regret_exploitability_and_the_alpha_sweep():
    rps = np.array([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]])
    game = mt.Game(rps, -rps)
    a, d = mt.regret(game)
    np.testing.assert_allclose(a, 0.0, atol=1e-7)
    assert mt.exploitability(game) == pytest.approx(0.0, abs=1e-7)
    common = np.array([[2.0, 0.0], [0.0, 1.0]])              # both sides want the same: the competitive part is 0
    assert mt.exploitability(mt.Game(common, common)) == pytest.approx(0.5)   # uniform, and each side gains 0.25
    sa, sd = mt.alpha_sweep(mt.Game(np.array([[1.0, 0.0], [0.0, 0.2]]), np.array([[0.0, 1.0], [0.5, 0.0]])),
                            np.array([0.01, 1.0, 100.0]))
    np.testing.assert_allclose(sa.sum(axis=1), 1.0)
    assert abs(sa[0, 0] - 0.5) < 0.05, "small alpha: near uniform"


def test_contestants_have_descriptions_by_default():
    from extractgym.league.spec import AttackerContestant, DefenderContestant, description

    assert description("attacker", AttackerContestant(name="r", body="random"))
    assert description("defender", DefenderContestant(name="p", body="prada")).lower().startswith("prada")
    assert description("attacker", AttackerContestant(name="r", body="random", description="mine")) == "mine"


def test_compare_two_tournaments(played_tiny_league, tmp_path):
    _, _, out = played_tiny_league
    b = tmp_path / "b"
    shutil.copytree(out, b)
    saved = json.loads((b / "league.json").read_text())
    saved["spec"]["payoff"]["attacker"] = {"fidelity": 1.0}
    saved["spec"]["attackers"][1]["description"] = "renamed only in words"
    (b / "league.json").write_text(json.dumps(saved))
    result = CliRunner().invoke(app, ["tournament-report", "--compare", str(out), str(b)], env=WIDE)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "payoff" in text and "played by both (8 with identical figures)" in text
    assert "the same code played both" in text
    compared = json.loads((b / "report" / "compare.json").read_text())
    assert any(r["method"] == "mean" for r in compared["rankings"])
    assert CliRunner().invoke(app, ["tournament-report", "--compare", str(tmp_path / "nothing"), str(b)]).exit_code == 2


# -- the shipped leagues' reports (slow: plays them) ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(shipped_leagues()))
def test_every_shipped_league_report_ranks_by_its_scores_and_every_detector_acts(name, tmp_path):
    """Plays the shipped league (tens of minutes on 2 cores) and walks its rankings."""
    from extractgym.league import tournament
    from extractgym.league import verdict as vd

    spec, raw, base, cells = tournament.prepare(name)
    out = tmp_path / name
    tournament.play(spec, raw, base, cells, out, workers=2)
    tournament.report(spec, raw, cells, out)
    rows, _ = ResultsFile(out / RESULTS).load()
    data = an.collect(spec, cells, rows)
    for sr in an.rank_all(data, seed=spec.seed):
        _walk(sr.attacker)
        _walk(sr.defender)
    verdict = json.loads((out / "report" / "rankings.json").read_text())["verdict"]
    for d in vd.detectors(spec):
        assert sum(verdict["acted"][d].values()) > 0, f"{d} never acted"
    if name == "digits-league":     # the best defence keeps its customers' value, or the verdict says why not
        best = verdict["best"]["defender"]
        assert all(np.nanmean(data.values[an.VALUE][:, :, data.defenders.index(d)]) >= vd.VALUE_FLOOR
                   for d in best) or any("under half" in w for w in verdict["warnings"])
