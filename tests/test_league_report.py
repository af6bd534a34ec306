"""The league's report: tables agree with the rows, the HTML is self-contained, and it renders in Chromium."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from extractgym.league import analysis as an
from extractgym.league.runner import RESULTS, ResultsFile

SECTIONS = ("rankings", "heatmaps", "curves", "pareto", "spec", "provenance")
SCREENSHOT_DIR = Path(__file__).resolve().parent.parent / "benchmarks" / "out"


def test_report_files(played_tiny_league):
    spec, cells, out = played_tiny_league
    report = out / "report"
    for name in ("index.html", "tables.csv", "rankings.csv", "rankings.json", "curves.png", "pareto.png",
                 "alpharank.png"):
        assert (report / name).stat().st_size > 0, name
    for figure in [*an.PAYOFFS.values(), *an.FIGURES]:
        slug = re.sub(r"[^a-z0-9]+", "-", figure.lower()).strip("-")
        assert (report / f"heatmap-{slug}-digits-basic.png").exists(), figure
    with open(out / "results.csv") as f:
        lines = list(csv.DictReader(f))
    assert [r["id"] for r in lines] == [c.id for c in sorted(cells, key=lambda c: c.order)]
    assert {"attacker_payoff", "defender_payoff", "attackers.attacker_0.accuracy", "utility"} <= set(lines[0])


def test_html_is_self_contained_and_has_every_section(played_tiny_league):
    _, _, out = played_tiny_league
    html = (out / "report" / "index.html").read_text()
    for section in SECTIONS:
        assert f'id="{section}"' in html, section
    assert "<script" not in html
    assert not re.search(r'(src|href)="(https?:)?//', html), "no network resource"
    images = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert len(images) >= len(an.FIGURES) + len(an.PAYOFFS) + 3      # heatmaps, alpha-Rank, curves, Pareto
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert "digits-basic" in html and "Nash average" in html and "alpha-Rank" in html


def test_tables_match_the_rows(played_tiny_league):
    spec, cells, out = played_tiny_league
    rows, _ = ResultsFile(out / RESULTS).load()
    data = an.collect(spec, cells, rows)
    for c in cells:
        s = rows[c.id]["summary"]
        expected = s["returns"]["attacker_0"] - 0.02 * s["attackers"]["attacker_0"]["cost"]
        assert data.values["attacker payoff"][c.order] == pytest.approx(expected)
        assert data.values["defender payoff"][c.order] == pytest.approx(s["returns"]["defender_0"])
        assert data.values["accuracy"][c.order] == pytest.approx(s["attackers"]["attacker_0"]["accuracy"])
    table = next(t for t in an.tables(data) if t.figure == "accuracy" and t.scope == "digits-basic")
    np.testing.assert_allclose(table.mean, data.values["accuracy"][0].mean(axis=-1))
    assert np.all(table.lo <= table.mean + 1e-12) and np.all(table.mean <= table.hi + 1e-12)
    with open(out / "report" / "rankings.csv") as f:
        ranked = list(csv.DictReader(f))
    means = {r["contestant"]: float(r["score"]) for r in ranked if r["side"] == "attacker" and r["method"] == "mean"}
    pa = data.values["attacker payoff"][0].mean(axis=-1)
    assert means == pytest.approx({"rand": pa[0].mean(), "unc": pa[1].mean()})
    weights = [float(r["score"]) for r in ranked if r["side"] == "defender" and r["method"] == "nash"]
    assert sum(weights) == pytest.approx(1.0)


def test_pareto_front():
    from extractgym.league.report import pareto_front

    x = np.array([0.9, 0.5, 0.6, 0.5, np.nan])
    y = np.array([1.0, 0.9, 0.8, 0.95, 1.0])
    assert pareto_front(x, y) == [0, 3]


@pytest.mark.browser
def test_report_renders_in_headless_chromium(played_tiny_league, tmp_path):
    """Chromium (Debian's package) opens the report offline: every figure decodes, and a screenshot is saved to
    ``benchmarks/out/tournament-report.png`` for a person to look at."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    _, _, out = played_tiny_league
    flags = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    # a copy with a probe script: after load it writes how many images decoded into the page
    html = (out / "report" / "index.html").read_text()
    probe = ("<script>window.addEventListener('load', () => { const imgs = [...document.images];"
             "document.body.setAttribute('data-images', imgs.length);"
             "document.body.setAttribute('data-decoded', imgs.filter(i => i.complete && i.naturalWidth > 0).length);"
             "document.body.setAttribute('data-height', document.documentElement.scrollHeight); });</script>")
    probed = out / "report" / "probe.html"
    probed.write_text(html.replace("</body>", probe + "</body>"))
    dom = subprocess.run([*flags, "--window-size=1300,900", "--virtual-time-budget=5000", "--dump-dom",
                          probed.as_uri()],
                         capture_output=True, text=True, timeout=120).stdout
    probed.unlink()
    images, decoded = (int(re.search(rf'data-{k}="(\d+)"', dom).group(1)) for k in ("images", "decoded"))
    assert images == len(re.findall(r"<img ", html)) and decoded == images
    height = int(re.search(r'data-height="(\d+)"', dom).group(1))
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOT_DIR / "tournament-report.png"
    subprocess.run([*flags, f"--screenshot={shot}", f"--window-size=1300,{min(height + 40, 16000)}",
                    (out / "report" / "index.html").as_uri()], capture_output=True, timeout=120, check=True)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    bands = np.array_split(pixels, 6)          # every part of the page has something on it
    assert all(band.std() > 5 for band in bands)
