"""Stateful detectors (prada, similarity, vae, ood): exact range search, nearest distances and Shapiro-Wilk
statistics equal to brute force, bounded state, planted attacks vs natural traffic, calibration on held-out benign
data, bans that cost the attacker an account, and bad parameters."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import shapiro

from extractgym.agents import DEFENDERS
from extractgym.agents.defenders.prada import NormalityWindow
from extractgym.agents.detection.distances import blas_threads, count_within, min_dists, pair_dists
from extractgym.agents.detection.history import GroupedHistory, History, state_nbytes, tuning_streams
from extractgym.agents.detection.stateful import calibrate
from extractgym.envs.api import Budget, DefenderView, PredictionAPI, Service, ServiceConfig
from extractgym.scenarios import make_env
from extractgym.scenarios.runner import play_episode
from extractgym.victims.datasets import get_dataset
from extractgym.victims.zoo import load_victim

DETECTORS = ("prada", "similarity", "vae", "ood")


def bound_detector(name: str, **params):
    body = DEFENDERS[name](**params)
    api = PredictionAPI([Service(ServiceConfig("api"), load_victim("digits-cnn"))], [body])
    body.bind(DefenderView(api), np.random.default_rng(0))
    api.register_owner("a", Budget())
    return body, api


def send(api, x, batch: int = 25) -> int:
    """Send ``x`` on a fresh account in batches; how many queries were served before a ban (all if none)."""
    acc = api.open_account("a", "api")
    served = 0
    for i in range(0, len(x), batch):
        r = api.query("a", acc.id, x[i:i + batch])
        served += r.n_answered
        if r.banned:
            return served
    return served


def pool_streams(n: int, length: int, seed: int, half: int | None) -> list[np.ndarray]:
    """Natural benign streams from one half of the digits pool (never the detectors' tuning data)."""
    x = get_dataset("digits").split("pool")[0]
    x = x if half is None else x[: len(x) // 2] if half == 0 else x[len(x) // 2:]
    return tuning_streams(x, n, length, seed)


# -- exact search and bounded state ----------------------------------------------------------------
@pytest.mark.parametrize("dim", [2, 32])
def test_range_search_and_nearest_distances_equal_brute_force(dim):
    rng = np.random.default_rng(dim)
    a, b = rng.normal(size=(60, dim)), rng.normal(size=(300, dim))
    b[:40] = a[:40] + rng.normal(scale=1e-7, size=(40, dim))  # near-duplicates
    b[40:50] = np.round(a[40:50])  # ties on a lattice
    brute = pair_dists(a, b)
    for radius in [1e-6, 0.5, 1.0, 2.0, float(np.median(brute)), float(brute[3, 7]), float(brute[45, 45])]:
        np.testing.assert_array_equal(count_within(a, b, radius), (brute < radius).sum(1), err_msg=f"r={radius}")
    np.testing.assert_array_equal(min_dists(a, b), brute.min(1))
    loop = np.array([[np.sqrt(((a[i] - b[j]) ** 2).sum()) for j in range(len(b))] for i in range(5)])
    np.testing.assert_array_equal(brute[:5], loop)
    # rows of very different norms (the rounding bound is per query row, against the largest history norm)
    scale = 10.0 ** rng.integers(-3, 4, size=(len(b), 1))
    b2, a2 = b * scale, a * 10.0 ** rng.integers(-3, 4, size=(len(a), 1))
    b2[:10] = a2[:10] + 1e-9
    brute2 = pair_dists(a2, b2)
    np.testing.assert_array_equal(min_dists(a2, b2), brute2.min(1))
    for radius in [1e-8, 0.1, 10.0, float(brute2[11, 30])]:
        np.testing.assert_array_equal(count_within(a2, b2, radius), (brute2 < radius).sum(1))


def test_shapiro_wilk_window_equals_scipy_over_a_fifo_stream():
    rng = np.random.default_rng(0)
    for cap in (3, 7, 60, 400):
        win, stream = NormalityWindow(cap), []
        for _ in range(700):  # skewed values, ties, exact zeros (duplicate queries), a constant run
            v = float(rng.choice([rng.exponential(), np.round(rng.normal(2, 0.5), 1), 0.0, 1.5]))
            win.push(v)
            stream.append(v)
            window = stream[-cap:]
            np.testing.assert_array_equal(win.values, np.sort(window))
            if len(window) >= 3:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # zero range
                    ref = shapiro(window).statistic
                assert abs(win.w() - ref) < 1e-11, (cap, len(stream))
    for n in (3, 4, 5, 6, 11, 12, 4001):  # the coefficient branches of AS R94, and a bulk extend
        x = rng.normal(size=n)
        win = NormalityWindow(10_000)
        win.extend(x)
        assert abs(win.w() - shapiro(x).statistic) < 1e-11
    win = NormalityWindow(5)
    win.extend(np.ones(100))
    assert win.w() == 1.0 and len(win) == 5
    # large values leaving the window must not leave their rounding behind (running sums did: W 0.86 vs 0.98)
    win, stream = NormalityWindow(100), [1e-6, *np.abs(rng.normal(4, 1, 99)), *(1e-6 + 1e-8 * rng.normal(size=100))]
    for v in stream:
        win.push(v)
    assert abs(win.w() - shapiro(stream[-100:]).statistic) < 1e-9
    win = NormalityWindow(3)  # values a few ulps apart
    for v in (1.0, 1.0, float(np.nextafter(1.0, 2.0))):
        win.push(v)
    assert abs(win.w() - shapiro([1.0, 1.0, float(np.nextafter(1.0, 2.0))]).statistic) < 1e-9


def brute_prada(detector, x: np.ndarray, batches: list[int]) -> np.ndarray:
    """PRADA's Algorithm 1 with our FIFO caps, written plainly: Python lists, exact distances, scipy's test."""
    cap = detector.max_history
    growing: list[tuple[int, np.ndarray]] = []  # (class, row), oldest first
    member_d: dict[int, list[float]] = {}  # every distance that ever joined G_c (running mean/std in PRADA)
    dists: list[float] = []
    cls = detector.view.victim_proba("api", x).argmax(axis=1)
    rows = x.reshape(len(x), -1).astype(np.float64)
    out, start = [], 0
    for b in batches:
        joined = []
        for i in range(start, start + b):
            c = int(cls[i])
            members = [r for k, r in growing if k == c] + [rows[j] for j in joined if cls[j] == c]
            if not members:
                joined.append(i)
            else:
                d = float(pair_dists(rows[i:i + 1], np.array(members)).min())
                ds = member_d.get(c, [])
                bar = np.mean(ds) - np.std(ds) if ds else -np.inf
                dists = (dists + [d])[-cap:]
                if d > bar:
                    joined.append(i)
                    member_d.setdefault(c, []).append(d)
            out.append(shapiro(dists).statistic if len(dists) >= detector.min_samples else np.nan)
        growing = (growing + [(int(cls[j]), rows[j]) for j in joined])[-cap:]
        start += b
    return np.array(out)


@pytest.mark.parametrize("cap", [25, 1000])
def test_prada_statistics_equal_brute_force_over_an_account(cap):
    body, _ = bound_detector("prada", threshold=0.5, max_history=cap, min_samples=10)
    rng = np.random.default_rng(cap)
    x = np.concatenate([get_dataset("digits").split("pool")[0][:120], jba_like(3, 20, 0.05, 0)])
    x = x[rng.permutation(len(x))]
    batches = [1, 7, 64, 3, 25, 1, 40, 14, 25]
    assert sum(batches) == len(x)
    state, got, start = body.new_state("api"), [], 0
    for b in batches:
        got.append(body.update(state, x[start:start + b], "api", 0.5))
        start += b
    got, ref = np.concatenate(got), brute_prada(body, x, batches)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=0, atol=1e-11)
    assert len(state.growing) <= cap and len(state.dists) <= cap


def test_grouped_history_keeps_the_newest_rows_per_group_in_bounded_memory():
    rng = np.random.default_rng(0)
    cap, dim = 50, 3
    h, seen = GroupedHistory(cap, dim), []
    for step in range(120):  # labels drift: early rows are class 0..2, later ones class 7..9
        m = int(rng.integers(1, 30))
        labels = rng.integers(0, 3, m) + (7 if step > 60 else 0)
        rows = rng.normal(size=(m, dim))
        vals = rng.normal(size=m)
        h.append(rows, labels, vals)
        seen += list(zip(labels, rows, vals, strict=True))
        keep = seen[-cap:]
        assert len(h) == len(keep)
        for c in range(10):
            mine = [(r, v) for k, r, v in keep if k == c]
            np.testing.assert_array_equal(h.rows(c), np.array([r for r, _ in mine]).reshape(-1, dim))
            np.testing.assert_array_equal(h.values(c), np.array([v for _, v in mine]))
            np.testing.assert_array_equal(h.sq_norms(c), (h.rows(c) ** 2).sum(1))
        assert h.nbytes <= (4 * cap + 16 * 10) * (dim + 2) * 8 + cap * 8


def test_ood_flag_probability_equals_enumeration_and_holds_for_held_out_pool_rate():
    import itertools

    from extractgym.agents.defenders.ood_detector import flag_probability

    p, warmup, horizon = 0.3, 3, 12
    for t in (0.2, 0.4, 0.5, 0.75):
        brute = 0.0
        for seq in itertools.product((0, 1), repeat=horizon):
            k = np.cumsum(seq)
            n = np.arange(1, horizon + 1)
            if ((k / n > t) & (n >= warmup)).any():
                brute += p ** k[-1] * (1 - p) ** (horizon - k[-1])
        assert abs(flag_probability(t, p, warmup, horizon) - brute) < 1e-12
    for t in (-0.1, 1.5):  # thresholds outside [0, 1]: everything flagged after the warm-up / nothing ever
        assert flag_probability(t, p, warmup, horizon) == pytest.approx(1.0 if t < 0 else 0.0)
    body, _ = bound_detector("ood")  # calibrated at bind, on the owner's held-out third
    pool = get_dataset("digits").split("pool")[0]  # what benign customers send: never tuned on
    ood = body.score(pool) > body.tau
    rate = float(ood.mean())
    assert flag_probability(body.current("api"), rate, body.warmup, body.horizon) <= body.fpr_bound == 1e-4
    # the independence model against real accounts (pool images drawn without replacement), at a threshold
    # coarse enough to measure: the simulated ban rate matches the model's
    rng = np.random.default_rng(0)
    horizon = 200
    t = 1.6 * rate
    streams = np.stack([ood[rng.permutation(len(ood))[:horizon]] for _ in range(4000)])
    share = np.cumsum(streams, axis=1) / np.arange(1, horizon + 1)
    simulated = float(((share > t) & (np.arange(1, horizon + 1) >= body.warmup)).any(axis=1).mean())
    model = flag_probability(t, rate, body.warmup, horizon)
    assert 0.01 < model < 0.9
    assert abs(simulated - model) < 0.05, (simulated, model)


def test_blas_threads_pins_and_restores_the_setting():
    from threadpoolctl import threadpool_info, threadpool_limits

    def blas() -> list[int]:
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]

    with threadpool_limits(2, user_api="blas"):  # a setting other than the pinned one, so a restore is visible
        before = blas()
        with blas_threads(1):
            assert all(n == 1 for n in blas())
        assert blas() == before
        with pytest.raises(RuntimeError), blas_threads(1):
            raise RuntimeError("inside")
        assert blas() == before


def test_similarity_pair_counts_equal_brute_force_over_an_account():
    body, api = bound_detector("similarity", threshold=0.9)
    x = jba_like(4, 30, 0.05, 1)
    state = body.new_state("api")
    counts = np.concatenate([body.update(state, x[i:i + 16], "api", 0.9) for i in range(0, len(x), 16)])
    d = pair_dists(body.encode(x), body.encode(x))
    brute = np.cumsum([(d[i, :i] < 0.9).sum() for i in range(len(x))])
    np.testing.assert_array_equal(counts, brute)
    assert brute[-1] > 0


def test_history_keeps_the_newest_rows_within_its_cap():
    h = History(cap=10, dim=3)
    for start in range(0, 47, 7):
        rows = np.arange(start, min(start + 7, 47), dtype=float)[:, None].repeat(3, 1)
        h.append(rows, labels=rows[:, 0].astype(int))
        assert len(h) <= 10
    assert sorted(h.rows[:, 0]) == list(range(37, 47))
    np.testing.assert_array_equal(h.labels, h.rows[:, 0].astype(int))
    np.testing.assert_array_equal(h.sq_norms, (h.rows ** 2).sum(1))
    h.append(np.zeros((25, 3)))
    assert len(h) == 10 and not h.rows.any()


@pytest.mark.parametrize("name", ["prada", "similarity"])
def test_memory_per_account_is_capped(name):
    body, api = bound_detector(name, max_history=120, threshold=0.5 if name == "prada" else 1e-9)
    acc = api.open_account("a", "api")
    x = get_dataset("digits").split("pool")[0]
    for i in range(0, 500, 50):
        assert api.query("a", acc.id, x[i:i + 50]).n_answered == 50
    state = body.states[acc.id]
    assert len(state.growing if name == "prada" else state.history) <= 120
    if name == "prada":
        assert len(state.dists) <= 120
        bound = (4 * 120 + 16 * 10) * (64 + 2) * 8 + 120 * 8 + 2 * 120 * 8 + state.sums.nbytes
    else:
        bound = 120 * (body.embed_dim + 3) * 8 + 8  # rows, labels, values, norms; the pair counter
    assert state_nbytes(state) <= bound


# -- planted attacks vs natural traffic ------------------------------------------------------------
def jba_like(n_seeds: int, per_seed: int, eps: float, seed: int) -> np.ndarray:
    """Small perturbations of a few natural seeds, as Jacobian-based augmentation produces."""
    rng = np.random.default_rng(seed)
    seeds = get_dataset("digits").split("pool")[0][:n_seeds]
    x = np.repeat(seeds, per_seed, axis=0) + eps * rng.choice([-1.0, 1.0], size=(n_seeds * per_seed, 1, 8, 8))
    return np.clip(x, 0, 1).astype(np.float32)[rng.permutation(n_seeds * per_seed)]


def noise_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 8, 8)).astype(np.float32)


@pytest.mark.parametrize("name, attack", [
    ("prada", lambda: jba_like(5, 60, 0.05, 0)),
    ("similarity", lambda: jba_like(5, 60, 0.05, 0)),
    ("vae", lambda: noise_images(300, 0)),
    ("ood", lambda: noise_images(300, 0)),
])
def test_detector_flags_a_planted_attack_and_not_natural_traffic(name, attack):
    body, api = bound_detector(name)
    x = attack()
    assert send(api, x) < len(x), f"{name} let the planted attack through"
    assert not body.states or all(a in api.accounts and not api.accounts[a].banned for a in body.states)
    benign = pool_streams(10, 150, seed=1, half=0)
    served = [send(api, s) for s in benign]
    assert served == [len(s) for s in benign], f"{name} banned natural traffic: {served}"


# -- calibration -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DETECTORS)
def test_calibration_hits_its_target_on_held_out_benign_data(name):
    body, api = bound_detector(name, threshold=1.0 if name != "ood" else 0.5)
    target = 0.1
    tune = tuning_streams(body.x_tune, 40, 110, seed=2)  # the owner's held-out training data, as at bind
    held = pool_streams(60, 110, seed=3, half=None)  # benign customers' data (the pool): never tuned on
    value = calibrate(body, tune, target, "api")
    assert body.current("api") == value
    flagged_tune = np.mean([send(api, s, batch=50) < len(s) for s in tune])
    assert flagged_tune <= target  # exact on the tuning streams (same batching as calibrate)
    flagged_held = np.mean([send(api, s, batch=50) < len(s) for s in held])
    assert flagged_held <= target + 0.2, f"{name}: {flagged_held:.2f} of held-out benign accounts flagged"
    # a stricter target never flags more; one the 40 streams cannot certify is raised (with a warning) to the
    # lowest they can, which flags none of them
    assert np.mean([body.critical(s, "api") < value if body.flag_above else body.critical(s, "api") > value
                    for s in tune]) == flagged_tune
    with pytest.warns(UserWarning, match="target 0.0100% is not supported: calibrating to 7.22%"):
        calibrate(body, tune, 1e-4, "api")  # 40 streams certify 1 - 0.05 ** (1 / 40) = 7.2% at best
    assert body.fpr_bound == pytest.approx(1 - 0.05 ** (1 / 40))
    assert not any(send(api, s, batch=50) < len(s) for s in tune)


# -- bans in a game ---------------------------------------------------------------------------------
def test_a_detector_ban_costs_an_account_and_the_referee_counts_it():
    scenario = {
        "name": "tiny-similarity", "rounds": 2,
        "services": [{"name": "api", "victim": "digits-cnn"}],
        "attackers": [{"body": "random", "params": {"pool": "digits", "queries_per_round": 30},
                       "budget": {"queries": 60, "accounts": 3}}],
        # a huge radius makes every pair similar: the 11th query of any account completes 55 >= 50 pairs
        "defenders": [{"body": "similarity", "params": {"threshold": 1e6}}],
        "benign": [{"dataset": "digits", "customers": 2, "queries_per_round": 5},
                   {"dataset": "mnist8x8", "customers": 1, "queries_per_round": 5}],
    }
    env = make_env(scenario)
    summary = play_episode(env, seed=0)
    # round 0: accounts 0 and 1 are banned after 10 queries each, account 2 gets the last 10 (45 pairs);
    # round 1: account 2's next query makes 55 pairs, so it is banned before serving anything; budget spent
    assert (summary["accounts_created"], summary["accounts_banned"], summary["queries"]) == (3, 3, 30)
    assert summary["attackers"]["attacker_0"]["accounts_banned"] == 3
    game = env.game
    per_group = game.benign.banned_per_group()
    assert set(per_group) == {"digits:pool#0", "mnist8x8:pool#1"}
    assert per_group["digits:pool#0"] == (0, 2) and per_group["mnist8x8:pool#1"] == (0, 1)  # 10 queries < 11


def test_ban_drops_the_accounts_state():
    body, api = bound_detector("similarity", threshold=1e6)
    acc = api.open_account("a", "api")
    x = get_dataset("digits").split("pool")[0][:30]
    r = api.query("a", acc.id, x)
    assert r.banned and r.n_answered == 10
    assert acc.id not in body.states


def test_a_throttling_detector_refuses_without_a_ban_then_bans():
    # every pair similar: after query i an account has i(i-1)/2 pairs; throttling from 0.3 * 50 = 15 pairs (query 6),
    # the ban at 50 (query 11)
    body, api = bound_detector("similarity", threshold=1e6, throttle_at=0.3)
    acc = api.open_account("a", "api")
    x = get_dataset("digits").split("pool")[0][:30]
    r = api.query("a", acc.id, x[:8])
    assert (r.n_answered, r.rejected, r.banned) == (5, 3, False)
    assert list(r.rows) == [0, 1, 2, 3, 4]
    assert api.accounts[acc.id].queries == 5  # refused queries are neither answered nor counted as served
    r = api.query("a", acc.id, x[8:10])  # pairs 36 and 45: refused, still no ban
    assert (r.n_answered, r.rejected, r.banned) == (0, 2, False)
    r = api.query("a", acc.id, x[10:12])  # the 11th query the detector saw makes 55 >= 50 pairs: banned
    assert r.banned and r.n_answered == 0
    assert acc.id not in body.states


def test_without_throttling_the_same_stream_is_served_until_the_ban():
    _, api = bound_detector("similarity", threshold=1e6)
    acc = api.open_account("a", "api")
    r = api.query("a", acc.id, get_dataset("digits").split("pool")[0][:8])
    assert (r.n_answered, r.rejected, r.banned) == (8, 0, False)


# -- parameters -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, params, word", [
    ("prada", {"threshold": 1.5}, "threshold"),
    ("prada", {"min_samples": 2}, "min_samples"),
    ("prada", {"max_history": 1}, "max_history"),
    ("prada", {"max_history": 50}, r"max_history \(50\) must be >= min_samples \(100\)"),
    ("ood", {"horizon": 10**6}, "horizon must be <= 20000"),
    ("similarity", {"threshold": -0.1}, "threshold"),
    ("similarity", {"ban_pairs": 0}, "ban_pairs"),
    ("similarity", {"margin": float("nan")}, "margin"),
    ("similarity", {"throttle_at": 1.0}, "throttle_at"),
    ("similarity", {"throttle_at": float("nan")}, "throttle_at"),
    ("vae", {"warmup": 1}, "warmup"),
    ("vae", {"threshold": -1.0}, "threshold"),
    ("ood", {"threshold": 1.0}, "threshold"),
    ("ood", {"ood_quantile": 0.0}, "ood_quantile"),
    ("ood", {"k": 0}, "k"),
    ("ood", {"horizon": 5}, "horizon"),
    ("vae", {"target_fpr": 1.0}, "target_fpr"),
    ("similarity", {"data": "nope"}, "nope"),
    ("vae", {"data": "rotten-tomatoes"}, "rotten-tomatoes"),
])
def test_bad_parameters_raise_value_error(name, params, word):
    with pytest.raises(ValueError, match=word):
        DEFENDERS[name](**params)
