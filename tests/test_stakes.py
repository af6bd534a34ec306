"""The game has stakes (issue 10): economics that bind, rewards from a fixed reference that telescope, honest
observations, factored actions with masks, and invalid economics refused at validation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from extractgym.envs.api import Budget, PredictionAPI, Service, ServiceConfig
from extractgym.envs.errors import QueryRefused
from extractgym.envs.game import ATTACKER_OBS, DEFENDER_OBS
from extractgym.scenarios import ScenarioError, load_scenario, make_env
from extractgym.scenarios.runner import play_episode
from extractgym.victims.base import InputSpec


class Tiny:
    name, n_classes = "tiny", 3
    input_spec = InputSpec(kind="image", shape=(4,))

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.full((len(x), 3), 1 / 3)


class BanAfter:
    """Serves ``k`` queries per account, then bans it."""

    knobs = ()

    def __init__(self, k: int) -> None:
        self.k = k

    def bind(self, view, rng) -> None: ...
    def end_round(self, round_index, knobs) -> None: ...

    def screen(self, account, x, knobs) -> int:
        return max(0, min(len(x), self.k - account.queries))

    def shape(self, probs, account, x, knobs):
        return probs


def _api(defences=(), **terms) -> PredictionAPI:
    api = PredictionAPI([Service(ServiceConfig("s", **terms), Tiny())], list(defences))
    api.register_owner("a", Budget(money=100.0))
    return api


# -- economics ---------------------------------------------------------------------------------------------------
def test_prepaid_credit_pays_first_and_is_lost_on_a_ban() -> None:
    api = _api([BanAfter(30)], price_per_query=0.1, account_price=1.0, account_credit=2.0, identity_cost=0.5)
    acc = api.open_account("a", "s")
    assert api.wallets["a"].money == pytest.approx(3.5)  # price + credit + identity
    r = api.query("a", acc.id, np.zeros((15, 4)))
    assert r.charge == 0.0 and api.accounts[acc.id].credit == pytest.approx(0.5)  # 1.5 of credit used
    r = api.query("a", acc.id, np.zeros((10, 4)))
    assert r.charge == pytest.approx(0.5)  # 0.5 left on credit, the wallet pays the rest
    api.query("a", acc.id, np.zeros((10, 4)))  # 5 served, then the ban
    assert api.accounts[acc.id].banned
    ban = [e for e in api.ledger if e.kind == "ban"][0]
    assert "forfeited" not in ban.note  # nothing left to lose this time
    acc2 = api.open_account("a", "s")
    api.query("a", acc2.id, np.zeros((5, 4)))
    api.ban(acc2.id)
    assert "1.5 prepaid credit forfeited" in [e for e in api.ledger if e.kind == "ban"][-1].note
    # the books replay to the same wallets and accounts
    fresh = _api([BanAfter(30)], price_per_query=0.1, account_price=1.0, account_credit=2.0, identity_cost=0.5)
    fresh.replay(list(api.ledger))
    assert fresh.wallets["a"] == api.wallets["a"] and fresh.accounts == api.accounts


def test_money_limits_count_the_credit_and_can_open_asks_the_gate() -> None:
    api = PredictionAPI([Service(ServiceConfig("s", price_per_query=0.1, account_price=1.0, account_credit=1.0), Tiny())])
    api.register_owner("a", Budget(money=2.5))
    assert api.can_open("a", "s", queries=5) and not api.can_open("a", "s", queries=16)
    acc = api.open_account("a", "s")
    allowance = api.affordable("a", acc.id, 100)
    assert allowance.n == 15 and allowance.limit == "money-budget"  # 10 on credit + 5 on the 0.5 left
    api.query("a", acc.id, np.zeros((15, 4)))
    with pytest.raises(QueryRefused):
        api.query("a", acc.id, np.zeros((1, 4)))


def test_a_ban_delay_lets_a_flagged_account_buy_until_it_falls_due() -> None:
    api = _api([BanAfter(3)], ban_delay=2)
    acc = api.open_account("a", "s")
    r = api.query("a", acc.id, np.zeros((10, 4)))
    assert r.n_answered == 10 and not r.banned and api.accounts[acc.id].flagged_round == 0
    api.start_round(1)
    assert api.query("a", acc.id, np.zeros((4, 4))).n_answered == 4
    api.start_round(2)
    assert api.accounts[acc.id].banned and [e.kind for e in api.ledger][-1] == "ban"


def test_scenario_economics_bind_bans_cost_money() -> None:
    s = play_episode(make_env("rl-sybil", rounds=4), seed=1)
    assert s["cost"] >= 2.0 * s["accounts_created"]  # every account paid price, credit and identity
    assert s["accounts_created"] <= 4


@pytest.mark.parametrize("path, value, field", [
    ("services.0.account_credit", -1.0, "services.0.account_credit"),
    ("services.0.identity_cost", float("nan"), "services.0.identity_cost"),
    ("services.0.ban_delay", -2, "services.0.ban_delay"),
    ("attackers.0.budget.accounts", 0, "attackers.0.budget.accounts"),
    ("rewards.cost", float("nan"), "rewards.cost"),
    ("rewards.shaping", "sometimes", "rewards.shaping"),
    ("rewards.reference", "random", "rewards.reference"),
])
def test_invalid_economics_are_refused_naming_the_field(path: str, value, field: str) -> None:
    data = load_scenario("rl-sybil").model_dump()
    node = data
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if k.isdigit() else node[k]
    node[keys[-1]] = value
    with pytest.raises(ScenarioError, match=field.replace(".", r"\.") + ":"):
        load_scenario(data)


# -- rewards -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shaping", ["potential", "terminal"])
def test_returns_telescope_to_the_final_value_minus_the_reference_and_costs(shaping: str) -> None:
    env = make_env("rl-sybil", rounds=4, rewards={"shaping": shaping})
    obs, _ = env.reset(seed=3)
    brains = env.factory.brains(3)
    total = {a: 0.0 for a in env.agents}
    rewards_seen = []
    while env.agents:
        obs, rewards, *_ = env.step({a: brains[a](obs[a]) for a in env.agents})
        rewards_seen.append(rewards["attacker_0"])
        for a, r in rewards.items():
            total[a] += r
    s = env.summary()
    w = env.factory.scenario.rewards
    attacker = s["attackers"]["attacker_0"]
    expected = (attacker["accuracy"] - 0.1 - w.cost * attacker["cost"] / 12.0 - w.banned * attacker["accounts_banned"])
    assert total["attacker_0"] == pytest.approx(expected, abs=1e-9)
    if shaping == "terminal":
        assert all(r == 0.0 for r in rewards_seen[:-1])


def test_the_fixed_reference_takes_the_initial_surrogate_out_of_the_return() -> None:
    """With the `initial` reference the return carries the random initial surrogate's accuracy; with `chance` it
    does not: returns differ by exactly the initial accuracy minus 1/K."""
    chance = play_episode(make_env("digits-basic", rounds=2), seed=4)
    initial = play_episode(make_env("digits-basic", rounds=2, rewards={"reference": "initial"}), seed=4)
    diff = chance["returns"]["attacker_0"] - initial["returns"]["attacker_0"]
    assert diff == pytest.approx(chance["initial_attacker_accuracy"] - 0.1, abs=1e-9)


# -- observations and actions ---------------------------------------------------------------------------------------
def test_observations_are_named_bounded_and_carry_the_previous_action() -> None:
    env = make_env("rl-duel", action_space="multi")
    obs, _ = env.reset(seed=0)
    n_att = len(env.knobs("attacker_0"))
    assert obs["attacker_0"].shape == (len(ATTACKER_OBS) + n_att,)
    assert obs["defender_0"].shape == (len(DEFENDER_OBS) + len(env.knobs("defender_0")),)
    action = np.array([len(k.choices) - 1 for k in env.knobs("attacker_0")])
    obs, *_ = env.step({"attacker_0": action, "defender_0": np.array([1])})  # reverse sigmoid
    o = dict(zip(ATTACKER_OBS, obs["attacker_0"], strict=False))
    assert np.all((obs["attacker_0"] >= 0) & (obs["attacker_0"] <= 1))
    np.testing.assert_allclose(obs["attacker_0"][len(ATTACKER_OBS):], 1.0)  # the last choice of every knob
    assert o["confidence"] > 0 and o["one_hot"] >= 0


def test_the_perturbation_signal_tells_reverse_sigmoid_from_no_defence() -> None:
    def first_round(defence: str) -> dict:
        env = make_env("rl-duel", defenders=[{"body": "switch", "brain": {"kind": "preset", "knobs": {"defence": defence}}}])
        obs, _ = env.reset(seed=5)
        brains = env.factory.brains(5)
        obs, *_ = env.step({a: brains[a](obs[a]) for a in env.agents})
        return dict(zip(ATTACKER_OBS, obs["attacker_0"], strict=False))

    clean, poisoned = first_round("none"), first_round("reverse-sigmoid")
    assert clean["confidence"] > 0.9 > poisoned["confidence"] + 0.1


def test_masks_leave_one_action_once_nothing_can_be_bought() -> None:
    env = make_env("rl-duel", action_space="multi", attackers=[{
        "body": "uncertainty", "params": {"pool": "digits", "queries_per_round": 20, "services": ["api", "api-label"]},
        "budget": {"queries": 20, "money": 10.0, "accounts": 2}}])
    obs, _ = env.reset(seed=0)
    assert env.action_mask("attacker_0").all()
    brains = env.factory.brains(0)
    env.step({a: brains[a](obs[a]) for a in env.agents})  # spends the whole query budget
    mask = env.action_mask("attacker_0")
    sizes = [len(k.choices) for k in env.knobs("attacker_0")]
    starts = np.cumsum([0, *sizes[:-1]])
    assert mask.sum() == len(sizes) and all(mask[s] for s in starts)
    flat = make_env("rl-duel")
    flat.reset(seed=0)
    assert flat.action_mask("attacker_0").shape == (math.prod(sizes),)


def test_fixed_knobs_leave_the_action_space() -> None:
    attacker = load_scenario("rl-sybil").attackers[0].model_dump()
    free = [k.name for k in make_env("rl-sybil").knobs("attacker_0")]
    pinned = [k.name for k in make_env("rl-sybil", attackers=[{**attacker, "fix": {"accounts": 1}}]).knobs("attacker_0")]
    assert "accounts" in free and "accounts" not in pinned and {"queries", "rotate_every"} <= set(pinned)


# -- scripted brains read their observation -------------------------------------------------------------------------
def _obs(features: dict[str, float], names=ATTACKER_OBS) -> np.ndarray:
    o = np.zeros(len(names) + 4, dtype=np.float32)
    for k, v in features.items():
        o[names.index(k)] = v
    return o


def test_rotate_on_refusal_keeps_one_account_until_refusals_then_rotates() -> None:
    from extractgym.agents.brains import BRAINS
    from extractgym.envs.protocols import knob_values

    knobs = make_env("rl-sybil", action_space="multi").knobs("attacker_0")
    brain = BRAINS["rotate-on-refusal"](knobs, {}, None, rotate_every=25, queries=25)
    first = knob_values(knobs, brain(_obs({"round": 0.0, "queries_left": 1.0})))
    assert first["rotate_every"] is None and first["queries"] == 50  # the preset pace
    assert knob_values(knobs, brain(_obs({"round": 0.1, "queries_left": 0.9})))["rotate_every"] is None
    warned = knob_values(knobs, brain(_obs({"round": 0.2, "queries_left": 0.8, "refused": 0.3})))
    assert (warned["rotate_every"], warned["queries"]) == (25, 25)
    later = knob_values(knobs, brain(_obs({"round": 0.3, "queries_left": 0.7})))  # remembered within the episode
    assert later["rotate_every"] == 25
    assert knob_values(knobs, brain(_obs({"round": 0.0, "queries_left": 1.0})))["rotate_every"] is None  # new episode
    with pytest.raises(ValueError, match="rotate_every"):
        BRAINS["rotate-on-refusal"](knobs, {}, None, rotate_every=30)


def test_label_if_softened_switches_to_labels_when_answers_look_perturbed() -> None:
    from extractgym.agents.brains import BRAINS
    from extractgym.envs.protocols import knob_values

    knobs = make_env("rl-duel", action_space="multi").knobs("attacker_0")
    brain = BRAINS["label-if-softened"](knobs, {}, None)
    assert knob_values(knobs, brain(_obs({"round": 0.0})))["service"] == "api"
    assert knob_values(knobs, brain(_obs({"round": 0.2, "confidence": 0.97})))["service"] == "api"  # honest answers
    assert knob_values(knobs, brain(_obs({"round": 0.4, "confidence": 0.5})))["service"] == "api-label"
    assert knob_values(knobs, brain(_obs({"round": 0.6, "confidence": 0.97})))["service"] == "api-label"


def test_a_throttle_warning_lets_rotation_avoid_the_bans_of_a_strict_detector() -> None:
    from extractgym.scenarios.evaluate import Evaluator

    d = load_scenario("rl-sybil").defenders[0].model_dump()
    strict = {**d, "brain": {"kind": "preset", "knobs": {"level": 2.0}}}
    ev = Evaluator("rl-sybil", "attacker_0", defenders=[strict], rounds=6)
    script = ev.play(lambda seed: ev.brain("rotate-on-refusal:rotate_every=25", seed), [0, 1])
    never = ev.play(lambda seed: ev.brain("constant:rotate_every=None", seed), [0, 1])
    assert never.figures["accounts_banned"].sum() >= 2  # one account at the preset pace is banned under a strict level
    assert script.figures["accounts_banned"].sum() < never.figures["accounts_banned"].sum()
