"""Jacobian-based augmentation: the batched steps of agents/extraction/augment.py and the JBA attacker bodies (tiny budgets)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from extractgym.agents import ATTACKERS
from extractgym.agents.attackers.jacobian import METHODS, JacobianAttacker, balanced_seed_indices
from extractgym.agents.extraction import augment
from extractgym.agents.registry import build, parameters
from extractgym.envs.protocols import n_actions
from extractgym.scenarios import make_env
from extractgym.scenarios.runner import play_episode
from extractgym.victims.datasets import get_dataset
from extractgym.victims.models import build_model
from extractgym.victims.training import TrainConfig, predict_proba, train_classifier

JBA_BODIES = ("jacobian", "jbda", "jb-self", "jb-top3", "jba-pgd", "jba-cw", "jba-bs", "feature-fool")


@pytest.fixture(scope="module")
def model_and_batch():
    """A small MLP trained on digits (no victim involved) and a batch of pool digits with its predictions."""
    ds = get_dataset("digits")
    x, y = ds.split("train")
    model = build_model("mlp", 10, (1, 8, 8), seed=0)
    train_classifier(model, x, y, TrainConfig(steps=300, lr=5e-3), seed=0)
    model.zero_grad(set_to_none=True)  # the augmentations must leave it so
    xb = torch.from_numpy(ds.split("pool")[0][:48].astype(np.float32))
    pred = torch.from_numpy(predict_proba(model, xb).argmax(1))
    target = (pred + 1 + torch.arange(len(xb)) % 9) % 10  # a class other than the prediction, varied
    return model, xb, pred, target


def _prob(model, x, cls):
    return torch.from_numpy(predict_proba(model, x))[torch.arange(len(x)), cls]


def _no_weight_grads(model) -> bool:
    return all(p.grad is None for p in model.parameters())


def test_jacobian_step_batch_shapes_range_and_direction(model_and_batch) -> None:
    model, x, pred, _ = model_and_batch
    towards = augment.jacobian_step(model, x, pred, 0.1)
    away = augment.jacobian_step(model, x, pred, -0.1)
    for out in (towards, away):
        assert out.shape == x.shape and out.dtype == torch.float32
        assert out.min() >= 0 and out.max() <= 1
        assert (out - x).abs().max() <= 0.1 + 1e-6
    p0 = _prob(model, x, pred)
    assert _prob(model, towards, pred).mean() > p0.mean() > _prob(model, away, pred).mean()
    assert _no_weight_grads(model)


@pytest.mark.parametrize("random_start,objective", [(True, "ce"), (False, "logit")])
def test_targeted_linf_stays_in_ball_and_moves_towards_target(model_and_batch, random_start, objective) -> None:
    model, x, _, target = model_and_batch
    eps = 0.2
    gen = torch.Generator().manual_seed(0)
    out = augment.targeted_linf(model, x, target, eps=eps, alpha=0.02, steps=20, random_start=random_start,
                                objective=objective, generator=gen)
    assert out.shape == x.shape
    assert (out - x).abs().max() <= eps + 1e-6
    assert out.min() >= 0 and out.max() <= 1
    before, after = _prob(model, x, target), _prob(model, out, target)
    assert after.mean() > before.mean() + 0.1
    hits = (torch.from_numpy(predict_proba(model, out).argmax(1)) == target).float().mean()
    assert hits > (torch.from_numpy(predict_proba(model, x).argmax(1)) == target).float().mean()
    assert _no_weight_grads(model)


def test_targeted_linf_respects_a_narrow_input_range(model_and_batch) -> None:
    model, x, _, target = model_and_batch
    out = augment.targeted_linf(model, x * 0.5 + 0.2, target, eps=0.3, alpha=0.1, steps=5, low=0.2, high=0.7)
    assert out.min() >= 0.2 and out.max() <= 0.7


def test_cw_l2_moves_towards_target_and_keeps_range(model_and_batch) -> None:
    model, x, _, target = model_and_batch
    out = augment.cw_l2_targeted(model, x[:16], target[:16], steps=40, binary_steps=3, const=1.0, lr=0.05)
    assert out.shape == x[:16].shape
    assert out.min() >= 0 and out.max() <= 1
    assert _prob(model, out, target[:16]).mean() > _prob(model, x[:16], target[:16]).mean() + 0.1
    assert _no_weight_grads(model)


def test_boundary_search_returns_points_on_the_segment(model_and_batch) -> None:
    model, x, pred, target = model_and_batch
    x_t = augment.targeted_linf(model, x, target, eps=0.5, alpha=0.05, steps=20)
    out = augment.boundary_search(model, x, x_t, pred, target, max_iter=1000, tol=1e-6)
    assert out.shape == x.shape
    d = (x_t - x).flatten(1)
    rel = (out - x).flatten(1)
    moved = d.norm(dim=1) > 1e-6
    a = (rel * d).sum(1)[moved] / (d * d).sum(1)[moved]
    assert ((a >= -1e-5) & (a <= 1 + 1e-5)).all()
    resid = rel[moved] - a[:, None] * d[moved]
    assert resid.abs().max() < 1e-4  # on the line through x_s and x_t


def test_boundary_search_halves_the_gap_between_two_labelled_ends(model_and_batch) -> None:
    model, x, pred, target = model_and_batch
    x_t = augment.targeted_linf(model, x, target, eps=0.5, alpha=0.05, steps=20)
    ok = torch.from_numpy(predict_proba(model, x_t).argmax(1)) == target
    out = augment.boundary_search(model, x[ok], x_t[ok], pred[ok], target[ok], max_iter=60, tol=1e-6)
    # either a third class was met (out labelled neither) or the search converged onto the s/t boundary
    lab = torch.from_numpy(predict_proba(model, out).argmax(1))
    step = 1e-4 * (x_t[ok] - x[ok])
    lab_after = torch.from_numpy(predict_proba(model, out + step).argmax(1))
    lab_before = torch.from_numpy(predict_proba(model, out - step).argmax(1))
    third = (lab != pred[ok]) & (lab != target[ok])
    crossing = (lab_before != lab_after) | (lab_before != lab) | (lab != lab_after)
    assert (third | crossing).float().mean() > 0.9


def test_feature_fool_moves_features_towards_the_anchor(model_and_batch) -> None:
    model, x, pred, target = model_and_batch
    anchor = x.roll(7, dims=0)
    out = augment.feature_fool(model, x, anchor, steps=20, alpha=0.02)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    phi = augment.penultimate(model)
    with torch.no_grad():
        before = (phi(x) - phi(anchor)).norm(dim=1)
        after = (phi(out) - phi(anchor)).norm(dim=1)
    assert after.mean() < before.mean()
    assert _no_weight_grads(model)


def test_augment_functions_reject_bad_arguments(model_and_batch) -> None:
    model, x, pred, target = model_and_batch
    with pytest.raises(ValueError, match="high > low"):
        augment.jacobian_step(model, x, pred, 0.1, low=1.0, high=0.0)
    with pytest.raises(ValueError, match="objective"):
        augment.targeted_linf(model, x, target, 0.1, 0.01, 3, objective="nope")
    with pytest.raises(ValueError, match=">= 0"):
        augment.targeted_linf(model, x, target, -0.1, 0.01, 3)
    with pytest.raises(ValueError, match="steps"):
        augment.cw_l2_targeted(model, x, target, steps=0)
    with pytest.raises(ValueError, match="max_iter"):
        augment.boundary_search(model, x, x, pred, target, max_iter=0)
    with pytest.raises(ValueError, match="same shape"):
        augment.feature_fool(model, x, x[:3])
    empty = augment.targeted_linf(model, x[:0], target[:0], 0.1, 0.01, 3)
    assert empty.shape == (0, *x.shape[1:])


def test_balanced_seed_indices_are_distinct_pool_rows() -> None:
    x = get_dataset("digits").split("pool")[0]
    idx = balanced_seed_indices(x, 30, 10, np.random.default_rng(0))
    assert len(idx) == 30 == len(set(idx.tolist())) and idx.min() >= 0 and idx.max() < len(x)
    assert len(balanced_seed_indices(x[:5], 30, 10, np.random.default_rng(0))) == 5
    again = balanced_seed_indices(x, 30, 10, np.random.default_rng(0))
    assert np.array_equal(idx, again)


@pytest.mark.parametrize("params,match", [
    ({"method": "fgsm"}, "method"), ({"queries_per_round": 0}, "queries_per_round"), ({"seed_size": 0}, "seed_size"),
    ({"eps": -1.0}, "eps"), ({"n_targets": 0}, "n_targets"), ({"reservoir": 0}, "reservoir"), ({"tau": 0}, "tau"),
    ({"labels": "probs"}, "labels"), ({"bs_tol": 0.0}, "bs_tol"), ({"epochs": 0}, "epochs"),
    ({"pool": "no-such-dataset"}, "no-such-dataset"),
])
def test_jacobian_attacker_rejects_bad_parameters(params, match) -> None:
    with pytest.raises(ValueError, match=match):
        JacobianAttacker(**params)


def test_presets_fix_their_method_and_share_the_schema() -> None:
    base = set(parameters(JacobianAttacker))
    for name in JBA_BODIES[1:]:
        accepted = set(parameters(ATTACKERS[name]))
        assert accepted == base - {"method", "switch_method"}, name
        body = build(ATTACKERS, "attacker", name, {"queries_per_round": 10})
        assert body.method == name and "method" not in {k.name for k in body.knobs}
        with pytest.raises(ValueError, match="method"):
            build(ATTACKERS, "attacker", name, {"method": "jbda"})
    generic = JacobianAttacker()
    assert {k.name for k in generic.knobs} == {"queries", "eps_scale", "method"}
    assert set(next(k for k in generic.knobs if k.name == "method").choices) == set(METHODS)
    assert n_actions(generic.knobs) <= 100


def _scenario(body: str, queries: int, rounds: int, **params) -> dict:
    return {"name": f"jba-{body}", "rounds": rounds,
            "services": [{"name": "api", "victim": "digits-cnn", "price_per_query": 0.01}],
            "attackers": [{"body": body, "params": {"pool": "digits", **params},
                           "budget": {"queries": queries, "money": 100.0, "accounts": 2}}],
            "defenders": [{"body": "none"}]}


@pytest.mark.parametrize("body,queries,rounds,params", [
    ("jb-top3", 99, 3, {"queries_per_round": 33, "seed_size": 10}),   # several generations in one round
    ("jbda", 50, 4, {"queries_per_round": 40}),                      # the budget ends mid-round
    ("jba-pgd", 90, 3, {"queries_per_round": 30, "reservoir": 7, "seed_size": 5}),
    ("jacobian", 80, 2, {"queries_per_round": 40, "method": "jba-bs", "n_targets": 2}),
])
def test_jba_spends_exactly_its_budget(body, queries, rounds, params) -> None:
    env = make_env(_scenario(body, queries, rounds, epochs=5, **params))
    s = play_episode(env)
    assert s["queries"] == queries
    ledger = [e for e in env.game.api.ledger if e.owner == "attacker_0" and e.kind == "query"]
    assert sum(e.n for e in ledger) == queries


def test_jba_queries_stay_valid_and_leave_the_seed_set() -> None:
    env = make_env(_scenario("jba-pgd", 60, 2, queries_per_round=30, eps=0.2, epochs=5))
    play_episode(env)
    body = env.game.attackers["attacker_0"].seat.body
    assert body.dx.shape == (60, 1, 8, 8) and body.dx.min() >= 0 and body.dx.max() <= 1
    seeds, augmented = body.dx[:30], body.dx[30:]
    gap = np.abs(augmented[:, None] - seeds[None]).reshape(30, 30, -1).max(-1).min(1)
    assert (gap > 0).all() and (gap <= 0.2 + 1e-6).all()  # each within the PGD ball of some seed, none a copy


@pytest.mark.parametrize("body", ["jba-pgd", "feature-fool"])
def test_jba_same_seed_same_episode(body) -> None:
    runs = []
    for _ in range(2):
        s = play_episode(make_env(_scenario(body, 60, 2, queries_per_round=30, epochs=5)), seed=7)
        s.pop("wall_seconds")
        runs.append(s)
    assert runs[0] == runs[1]


class _RefuseFirst:
    """A defence that rejects (without a ban) the first query an account ever sends, and serves the rest."""

    knobs = ()

    def bind(self, view, rng) -> None:
        self.seen: set[str] = set()

    def screen(self, account, x, knobs):
        from extractgym.envs.api import Verdict

        serve = np.ones(len(x), dtype=bool)
        if account.id not in self.seen and len(x):
            serve[0] = False
            self.seen.add(account.id)
        return Verdict(serve)

    def shape(self, probs, account, x, knobs):
        return probs

    def end_round(self, round_index, knobs) -> None:
        pass


@pytest.mark.parametrize("body", ["jba-pgd", "feature-fool"])
def test_jba_keeps_sending_synthetic_queries_after_a_refused_one(body) -> None:
    """A refused seed image is not the end of the budget (issue 23): the round goes on to its synthetic queries
    and spends its whole allowance; the channel says the budget was never exhausted."""
    from extractgym.agents.registry import DEFENDERS, register_defender

    if "test-refuse-first" not in DEFENDERS:
        register_defender("test-refuse-first")(_RefuseFirst)
    env = make_env({**_scenario(body, 100, 2, queries_per_round=50, seed_size=20, epochs=3),
                    "defenders": [{"body": "test-refuse-first"}]})
    s = play_episode(env, seed=0)
    jba = env.game.attackers["attacker_0"].seat.body
    answered = [e.n for e in env.game.api.ledger if e.owner == "attacker_0" and e.kind == "query"]
    assert s["queries"] == sum(answered) == 100            # both rounds spent in full despite the refusal
    assert len(jba.dx) == 100 and jba.generation >= 1        # 19 seeds labelled, then synthetic queries
    assert not jba.channel.last.exhausted


def test_an_isolated_jba_body_reads_how_its_sends_ended_over_the_wire() -> None:
    """``channel.last`` crosses the isolation wire (a Delivery, as data): an isolated JBA body against a defence
    that refuses its first query plays exactly as it does in-process, with no forfeit."""
    from extractgym.agents.registry import DEFENDERS, register_defender

    if "test-refuse-first" not in DEFENDERS:
        register_defender("test-refuse-first")(_RefuseFirst)
    base = {**_scenario("jba-pgd", 60, 2, queries_per_round=30, seed_size=10, epochs=2),
            "defenders": [{"body": "test-refuse-first"}]}
    summaries = []
    for isolate in (False, "process"):
        data = {**base, "attackers": [{**base["attackers"][0], "isolate": isolate}]}
        env = make_env(data)
        try:
            summaries.append(play_episode(env, seed=0))
        finally:
            env.close()
    plain, isolated = summaries
    assert not isolated.get("forfeits"), isolated.get("forfeits")
    assert isolated["queries"] == plain["queries"] == 60
    assert isolated["attackers"] == plain["attackers"]
