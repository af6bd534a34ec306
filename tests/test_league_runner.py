"""The league runner: rows, resume after a kill, determinism across workers and backends, failed cells."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from extractgym.cli import app
from extractgym.league import tournament
from extractgym.league.runner import RESULTS, ResultsFile, comparable, run_league
from extractgym.scenarios.runner import SUMMARY_KEYS


def rows_of(out: Path) -> dict[str, dict]:
    rows, _ = ResultsFile(out / RESULTS).load(repair=False)
    return {k: comparable(v) for k, v in rows.items()}


def test_every_cell_has_a_complete_row(played_tiny_league):
    spec, cells, out = played_tiny_league
    rows, warnings = ResultsFile(out / RESULTS).load(repair=False)
    assert not warnings
    assert set(rows) == {c.id for c in cells} and len(cells) == 8
    rounds = spec.scenarios[0].overrides["rounds"]
    for c in cells:
        row = rows[c.id]
        assert row["status"] == "ok" and row["error"] is None
        assert (row["scenario"], row["attacker"], row["defender"], row["replicate"], row["seed"]) == \
            (c.scenario, c.attacker, c.defender, c.replicate, c.seed)
        assert row["config"] == c.config
        for key in SUMMARY_KEYS:
            assert key in row["summary"] or key == "wall_seconds", key   # timings live in the provenance
        assert set(row["summary"]["returns"]) == {"attacker_0", "defender_0"}
        curves = row["curves"]["attacker_0"]
        assert curves["round"] == list(range(1, rounds + 1))
        for key in ("accuracy", "fidelity", "queries", "cost"):
            assert len(curves[key]) == rounds
        assert curves["queries"][-1] == row["summary"]["attackers"]["attacker_0"]["queries"]
        assert len(row["curves"]["defender_0"]["utility"]) == rounds
        prov = row["provenance"]
        for key in ("extractgym", "python", "torch", "numpy", "config_hash", "wall_seconds", "episode_seconds"):
            assert prov.get(key) is not None, key


def test_rerun_plays_nothing(played_tiny_league, tiny_league):
    spec, cells, out = played_tiny_league
    before = (out / RESULTS).read_bytes()
    stats = run_league(cells, out, workers=0)
    assert (stats.ran, stats.skipped, stats.total) == (0, 8, 8)
    assert (out / RESULTS).read_bytes() == before


def test_resume_after_a_kill_completes_only_the_missing_cells(played_tiny_league, tmp_path):
    """A kill -9 mid-league leaves finished rows, a partial last line and cells never started; the rerun
    cuts the partial line, plays exactly the missing cells and ends with the rows of an uninterrupted run."""
    spec, cells, full = played_tiny_league
    lines = (full / RESULTS).read_bytes().splitlines(keepends=True)
    out = tmp_path / "killed"
    out.mkdir()
    kept = lines[:3]
    (out / RESULTS).write_bytes(b"".join(kept) + lines[3][: len(lines[3]) // 2])   # a write cut short
    stats = run_league(cells, out, workers=0)
    assert stats.ran == len(cells) - 3 and stats.skipped == 3
    assert any("partial last line" in w for w in stats.warnings)
    data = (out / RESULTS).read_bytes()
    assert data.startswith(b"".join(kept)), "rows written before the kill are untouched"
    assert all(json.loads(line) for line in data.splitlines())
    assert rows_of(out) == rows_of(full)


def test_resume_is_idempotent_on_a_clean_file(tmp_path, played_tiny_league):
    spec, cells, full = played_tiny_league
    out = tmp_path / "half"
    stats = run_league(cells, out, workers=0, max_cells=5)
    assert stats.ran == 5
    stats = run_league(cells, out, workers=0)
    assert stats.ran == 3 and stats.skipped == 5
    assert rows_of(out) == rows_of(full)


def test_worker_counts_give_identical_rows(played_tiny_league, tmp_path):
    spec, cells, inline = played_tiny_league
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        stats = run_league(cells, out, workers=workers)
        assert stats.ran == len(cells) and stats.failed == 0
        assert rows_of(out) == rows_of(inline), f"{workers} worker(s) differ from the in-process run"
        assert {r["provenance"]["backend"] for r in ResultsFile(out / RESULTS).load()[0].values()} == {"local"}


def test_a_failing_cell_is_a_failed_row_and_the_league_goes_on(tmp_path, tiny_league, monkeypatch):
    import extractgym.scenarios.runner as episode_runner

    real = episode_runner.play_episode

    def flaky(env, seed=None, **kwargs):
        s = env.factory.scenario
        if s.attackers[0].body == "uncertainty" and s.defenders[0].body == "reverse-sigmoid":
            raise RuntimeError("boom in the surrogate")
        return real(env, seed=seed, **kwargs)

    monkeypatch.setattr(episode_runner, "play_episode", flaky)
    path = tmp_path / "league.yaml"
    path.write_text(yaml.safe_dump(tiny_league()))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["tournament", str(path), "--out", str(out), "--workers", "0"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "2 failed" in result.output
    rows, _ = ResultsFile(out / RESULTS).load()
    failed = [r for r in rows.values() if r["status"] == "failed"]
    assert len(rows) == 8 and len(failed) == 2
    for r in failed:
        assert (r["attacker"], r["defender"]) == ("unc", "rs")
        assert r["error"] == "RuntimeError: boom in the surrogate" and "Traceback" in r["provenance"]["traceback"]
    html = (out / "report" / "index.html").read_text()
    assert "boom in the surrogate" in html and "no finished episode" in html

    monkeypatch.setattr(episode_runner, "play_episode", real)
    result = CliRunner().invoke(app, ["tournament", str(path), "--out", str(out), "--workers", "0"])
    assert "played 0 cells" in result.output, "failed rows count as done unless --retry-failed"
    result = CliRunner().invoke(app, ["tournament", str(path), "--out", str(out), "--workers", "0",
                                      "--retry-failed"])
    assert "played 2 cells (0 failed)" in result.output
    assert all(r["status"] == "ok" for r in ResultsFile(out / RESULTS).load()[0].values())


def test_payoff_changes_need_no_episode(played_tiny_league, tmp_path, tiny_league):
    _, _, full = played_tiny_league
    out = tmp_path / "copy"
    shutil.copytree(full, out)
    spec = tiny_league(payoff={"attacker": {"fidelity": 1.0}, "defender": "zero-sum"})
    path = tmp_path / "league.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = CliRunner().invoke(app, ["tournament", str(path), "--out", str(out), "--workers", "0"],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "played 0 cells" in result.output
    lines = (out / "results.csv").read_text().splitlines()
    header = lines[0].split(",")
    first = dict(zip(header, lines[1].split(",")))
    assert float(first["attacker_payoff"]) == pytest.approx(float(first["attackers.attacker_0.fidelity"]))
    assert float(first["defender_payoff"]) == pytest.approx(-float(first["attacker_payoff"]))
    result = CliRunner().invoke(app, ["tournament-report", str(out)], env={"COLUMNS": "400"})
    assert result.exit_code == 0 and "index.html" in result.output
    assert CliRunner().invoke(app, ["tournament-report", str(tmp_path)]).exit_code == 2


@pytest.mark.ray
def test_ray_backend_gives_the_local_rows(played_tiny_league, tmp_path):
    pytest.importorskip("ray")
    spec, cells, inline = played_tiny_league
    out = tmp_path / "ray"
    stats = run_league(cells, out, workers=2, backend="ray")
    assert stats.ran == len(cells) and stats.failed == 0
    assert rows_of(out) == rows_of(inline)
    assert {r["provenance"]["backend"] for r in ResultsFile(out / RESULTS).load()[0].values()} == {"ray"}


@pytest.mark.slow
def test_real_kill_9_mid_league_then_resume(played_tiny_league, tmp_path, tiny_league):
    """The CLI in its own process group, killed with SIGKILL once some rows are written; the rerun finishes."""
    spec, cells, inline = played_tiny_league
    path = tmp_path / "league.yaml"
    path.write_text(yaml.safe_dump(tiny_league(seeds=6)))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "extractgym.cli", "tournament", str(path), "--out", str(out),
           "--workers", "1", "--no-report"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (out / RESULTS).exists() and (out / RESULTS).read_bytes().count(b"\n") >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done = (out / RESULTS).read_bytes().count(b"\n")
    assert 3 <= done < 24, "killed mid-league"
    spec6, raw, base, cells6 = tournament.prepare(tiny_league(seeds=6))
    stats = run_league(cells6, out, workers=0)
    assert stats.skipped == done and stats.ran == 24 - done
    ref = tmp_path / "ref"
    run_league(cells6, ref, workers=0)
    assert rows_of(out) == rows_of(ref)
