"""What each output perturbation promises beyond the registry-wide simplex properties of ``test_defences.py``.

Temperature softening, Gaussian noise (label-preserving), reverse sigmoid, MAD and adaptive misinformation, on
batches of real victim outputs (the ``digits-cnn`` victim, trained once and cached) or hypothesis batches.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from extractgym.agents.defenders.adaptive_misinformation import AdaptiveMisinformation
from extractgym.agents.defenders.gaussian_noise import GaussianNoise, noisy_simplex
from extractgym.agents.registry import DEFENDERS

LabelPreservingNoise = DEFENDERS["label-preserving-noise"]
from extractgym.agents.defenders.mad import (MaxAngleDeviation, argmax_targets, class_set_targets, log_softmax_jacobian,
                                            mad)
from extractgym.agents.defenders.reverse_sigmoid import ReverseSigmoid, reverse_sigmoid, reverse_sigmoid_perturbation
from extractgym.agents.defenders.temperature import Temperature, soften
from extractgym.envs.protocols import preset_values
from extractgym.envs.api import DefenderView, PredictionAPI, Service, ServiceConfig
from extractgym.victims.datasets import get_dataset
from extractgym.victims.models import build_model
from extractgym.victims.zoo import load_victim
from tests.test_defences import SETTINGS, FakeVictim, assert_on_simplex, prob_batches


@pytest.fixture(scope="module")
def digits():
    """``(x_test, victim probabilities, labels)`` of the digits victim, and a bound API view."""
    victim = load_victim("digits-cnn", 0)
    ds = get_dataset("digits")
    view = DefenderView(PredictionAPI([Service(ServiceConfig("api"), victim)]))
    return ds.x_test, victim.predict_proba(ds.x_test), ds.y_test, view


def entropy(p: np.ndarray) -> np.ndarray:
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)


# -- temperature ---------------------------------------------------------------------------------
@SETTINGS
@given(probs=prob_batches())
def test_temperature_one_is_the_identity_and_the_ranking_is_kept(probs):
    np.testing.assert_array_equal(soften(probs, 1.0), probs)
    for t in (0.0, 0.5, 2.0, 5.0):
        out = soften(probs, t)
        assert_on_simplex(out, probs, f"T={t}")
        top = probs == probs.max(axis=1, keepdims=True)
        np.testing.assert_array_equal(top[np.arange(len(probs)), out.argmax(axis=1)], True)


def test_temperature_is_softmax_of_scaled_logits_and_raises_entropy():
    logits = torch.from_numpy(np.random.default_rng(0).normal(0, 4, size=(64, 10)))
    probs = torch.softmax(logits, dim=1).numpy()
    previous = entropy(soften(probs, 0.25))
    for t in (0.5, 1.0, 2.0, 5.0, 20.0):
        out = soften(probs, t)
        np.testing.assert_allclose(out, torch.softmax(logits / t, dim=1).numpy(), rtol=1e-9, atol=1e-12)
        assert (entropy(out) > previous).all()  # larger T: flatter rows, every one of them
        previous = entropy(out)
    assert (previous < math.log(10)).all()


def test_temperature_zero_is_the_hard_label_with_ties_split():
    out = soften(np.array([[0.2, 0.5, 0.3], [0.4, 0.4, 0.2], [0.0, 0.0, 1.0]]), 0.0)
    np.testing.assert_array_equal(out, [[0, 1, 0], [0.5, 0.5, 0], [0, 0, 1]])
    body = Temperature(temperature=0.0)
    body.bind(None, np.random.default_rng(0))
    np.testing.assert_array_equal(body.shape(out, None, None, preset_values(body.knobs)), out)


# -- Gaussian noise, label-preserving ------------------------------------------------------------
def test_label_preserving_noise_redraws_only_the_flipped_rows(digits):
    _, probs, _, _ = digits
    plain, keep = GaussianNoise(sigma=0.3), GaussianNoise(sigma=0.3, preserve_top=True)
    plain.bind(None, np.random.default_rng(5))
    keep.bind(None, np.random.default_rng(5))
    a, b = plain.shape(probs, None, None, preset_values(plain.knobs)), keep.shape(probs, None, None, preset_values(keep.knobs))
    flipped = a.argmax(axis=1) != probs.argmax(axis=1)
    assert flipped.any()  # sigma 0.3 flips some digits
    np.testing.assert_array_equal(a[~flipped], b[~flipped])  # same first draw: unflipped rows are untouched
    np.testing.assert_array_equal(b.argmax(axis=1), probs.argmax(axis=1))
    assert not np.array_equal(a[flipped], b[flipped])


def test_label_preserving_noise_falls_back_to_the_hard_label_after_max_tries():
    probs = np.tile([0.34, 0.33, 0.33], (200, 1))  # a near-tie: huge noise flips it about 2 times in 3
    plain = GaussianNoise(sigma=5.0)
    body = LabelPreservingNoise(sigma=5.0, max_tries=1)  # one draw: every flipped row falls back
    plain.bind(None, np.random.default_rng(0))
    body.bind(None, np.random.default_rng(0))
    first, out = plain.shape(probs, None, None, preset_values(plain.knobs)), body.shape(probs, None, None, preset_values(body.knobs))
    flipped = first.argmax(axis=1) != 0
    assert 0 < body.fallback_rows == flipped.sum() < len(probs)
    np.testing.assert_array_equal(out[flipped], np.tile([1.0, 0, 0], (body.fallback_rows, 1)))
    np.testing.assert_array_equal(out[~flipped], first[~flipped])
    body = LabelPreservingNoise(sigma=5.0, max_tries=50)
    body.bind(None, np.random.default_rng(0))
    assert (body.shape(probs, None, None, preset_values(body.knobs)).argmax(axis=1) == 0).all()
    assert body.fallback_rows == 0  # about (2/3)^50 per row: with enough tries nothing falls back


def test_noisy_simplex_sigma_zero_returns_its_input():
    probs = np.array([[0.5, 0.5]])
    assert noisy_simplex(probs, 0.0, np.random.default_rng(0)) is probs


# -- reverse sigmoid -----------------------------------------------------------------------------
def test_reverse_sigmoid_matches_lee_et_al_on_interior_probabilities():
    from scipy.special import expit, logit

    probs = np.random.default_rng(0).dirichlet(np.ones(10) * 0.3, size=200).clip(1e-6, None)
    probs /= probs.sum(axis=1, keepdims=True)
    for beta, gamma in ((0.3, 0.1), (1.0, 0.5), (2.5, 1.0)):
        perturbed = np.clip(probs - beta * (expit(gamma * logit(probs)) - 0.5), 0.0, None)
        expected = perturbed / perturbed.sum(axis=1, keepdims=True)
        np.testing.assert_allclose(reverse_sigmoid(probs, beta, gamma), expected, rtol=1e-9, atol=1e-12)


def test_reverse_sigmoid_is_non_monotonic_and_inverts_small_classes():
    y = np.array([0.0, 1e-12, 1e-8, 1e-4, 0.05, 0.2, 0.5, 0.8, 0.99, 1.0])
    served = y - reverse_sigmoid_perturbation(y, 1.0, 0.1)
    assert served[0] == pytest.approx(0.5)  # y = 0 exactly: r = -beta / 2
    assert (np.diff(served[:5]) < 0).all()  # falling as y rises from 0 ...
    assert (np.diff(served[4:9]) > 0).all()  # ... then rising: not monotonic ...
    assert served[9] == pytest.approx(0.5) and served[9] < served[8]  # ... and falling again at y = 1 (r = beta / 2)
    row = np.array([[0.96 - 1e-4 - 1e-8, 0.04, 1e-4, 1e-8]])
    out = reverse_sigmoid(row, 1.0, 0.1)
    assert out[0, 3] > out[0, 2] > out[0, 1] and out[0, 0] == out.max()  # the three small classes come out reversed
    np.testing.assert_array_equal(reverse_sigmoid(row, 0.0, 0.1), row)


@SETTINGS
@given(probs=prob_batches(), beta=st.floats(0.0, 5.0), gamma=st.floats(0.01, 5.0))
def test_reverse_sigmoid_keeps_the_simplex_for_any_beta_and_gamma(probs, beta, gamma):
    body = ReverseSigmoid(beta=beta, gamma=gamma)
    body.bind(None, np.random.default_rng(0))
    assert_on_simplex(body.shape(probs, None, None, preset_values(body.knobs)), probs, f"beta={beta} gamma={gamma}")


def test_reverse_sigmoid_flattens_confident_digits_but_keeps_their_labels(digits):
    _, probs, _, _ = digits
    out = reverse_sigmoid(probs, 1.0, 0.1)
    assert out.max(axis=1).mean() < 0.5 < probs.max(axis=1).mean()
    assert (out.argmax(axis=1) == probs.argmax(axis=1)).mean() > 0.99


# -- MAD -----------------------------------------------------------------------------------------
def per_query_jacobian(model: torch.nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """``G`` by plain autograd, one query and one class at a time (the reference for the batched version)."""
    params = list(model.parameters())
    wrt = [params[-2]] if layer == "last" else params
    out = []
    for xi in x:
        logp = torch.log_softmax(model(xi[None]), dim=1)[0]
        out.append(torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(logp[k], wrt, retain_graph=True)])
                                for k in range(len(logp))]))
    return torch.stack(out)


def angles(g: np.ndarray, served: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per query, the angle between the attacker's gradients ``G^T served`` and ``G^T true``."""
    u, v = np.einsum("bkd,bk->bd", g, served), np.einsum("bkd,bk->bd", g, true)
    cos = (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
    return np.arccos(np.clip(cos, -1.0, 1.0))


@pytest.mark.parametrize("arch", ["mlp", "digits-cnn"])
@pytest.mark.parametrize("layer", ["last", "all"])
def test_mad_jacobian_of_a_batch_matches_per_query_autograd(arch, layer):
    model = build_model(arch, 10, (1, 8, 8), seed=3).eval()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(log_softmax_jacobian(model, x, layer), per_query_jacobian(model, x, layer),
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("oracle", ["extreme", "argmax"])
@pytest.mark.parametrize("ydist", ["l1", "l2"])
def test_mad_stays_in_the_budget_and_turns_the_attackers_gradient(digits, oracle, ydist):
    x, probs, _, view = digits
    x, probs = x[:60], probs[:60]
    body = MaxAngleDeviation(epsilon=0.5, ydist=ydist, oracle=oracle)
    body.bind(view, np.random.default_rng(0))
    surrogate = body.surrogate_for(x, 10)
    g = log_softmax_jacobian(surrogate.model, surrogate.inputs(x)).double().numpy()
    order = 1 if ydist == "l1" else 2
    rng = np.random.default_rng(1)
    previous = np.zeros(len(x))
    for eps in (0.1, 0.5, 1.0):
        out = body.shape(probs, None, x, {"epsilon": eps})
        assert_on_simplex(out, probs, f"mad {oracle} {ydist} eps={eps}")
        assert (np.linalg.norm(out - probs, ord=order, axis=1) <= eps + 1e-9).all()
        turned = angles(g, out, probs)
        assert (turned > 1e-3).all()  # every answer turns the gradient (the unperturbed answer turns it by 0)
        assert (turned >= previous - 1e-6).all()  # a larger budget never turns it less
        previous = turned
        if oracle == "argmax":
            np.testing.assert_array_equal(out.argmax(axis=1), probs.argmax(axis=1))
        # random answers of the same size, inside the budget (keeping the top class for argmax), turn it less
        noise = rng.dirichlet(np.ones(10), size=(20, len(x)))
        if oracle == "argmax":  # swap each random target's largest entry onto the top class
            top = np.broadcast_to(probs.argmax(axis=1)[None, :, None], (20, len(x), 1))
            big = noise.argmax(axis=2)[..., None]
            at_top, at_big = np.take_along_axis(noise, top, axis=2), np.take_along_axis(noise, big, axis=2)
            np.put_along_axis(noise, big, at_top, axis=2)
            np.put_along_axis(noise, top, at_big, axis=2)
        size = np.linalg.norm(noise - probs, ord=order, axis=2, keepdims=True)
        random_answers = probs + np.minimum(1.0, eps / size) * (noise - probs)
        random_turns = np.stack([angles(g, r, probs) for r in random_answers])
        assert turned.mean() > random_turns.mean()
        assert (turned >= np.median(random_turns, axis=0) - 1e-9).mean() > 0.9


def test_mad_epsilon_zero_is_the_identity_and_without_inputs_works_in_output_space(digits):
    x, probs, _, view = digits
    body = MaxAngleDeviation(epsilon=0.0)
    body.bind(view, np.random.default_rng(0))
    assert body.shape(probs, None, x, preset_values(body.knobs)) is probs
    out = mad(probs, None, 0.5, "l1", "extreme")  # G = I: the angle between the output vectors themselves
    assert_on_simplex(out, probs, "mad G=I")
    cos = (out * probs).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(probs, axis=1)
    assert (cos < 1 - 1e-6).all()


def test_mad_argmax_greedy_search_above_ten_classes_keeps_the_top_class_and_the_budget():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(12) * 0.5, size=40)
    g = rng.normal(size=(40, 12, 30))
    m = g @ g.transpose(0, 2, 1)
    out = mad(probs, m, 0.8, "l1", "argmax")
    assert_on_simplex(out, probs, "mad-argmax greedy")
    np.testing.assert_array_equal(out.argmax(axis=1), probs.argmax(axis=1))
    assert (np.abs(out - probs).sum(axis=1) <= 0.8 + 1e-9).all()
    assert (angles(g, out, probs) > 1e-3).all()


def test_mad_targets_are_the_uniform_distributions_over_class_sets():
    every = class_set_targets(4)
    assert every.shape == (15, 4) and len({tuple(row > 0) for row in every}) == 15
    np.testing.assert_array_equal(every[:4], np.eye(4))  # the one-hot vertices first
    np.testing.assert_allclose(every.sum(axis=1), 1.0)
    targets = argmax_targets(4)
    assert targets.shape == (4, 8, 4)
    for t in range(4):
        np.testing.assert_array_equal(targets[t].argmax(axis=1), t)
        np.testing.assert_allclose(targets[t].sum(axis=1), 1.0)
        assert len({tuple(row > 0) for row in targets[t]}) == 8


def test_mad_with_a_trained_surrogate_uses_it_on_matching_services_only(digits):
    x, probs, _, view = digits
    body = MaxAngleDeviation(data="digits", train_epochs=5)
    body.bind(view, np.random.default_rng(0))
    trained = body.surrogate_for(x, 10)
    assert (trained.predict_proba(x).argmax(1) == digits[2]).mean() > 0.8
    assert body.surrogate_for(np.zeros((2, 4), np.float32), 10) is not trained
    fake = DefenderView(PredictionAPI([Service(ServiceConfig("api"), FakeVictim(10))]))
    with pytest.warns(UserWarning, match="randomly initialised surrogate"):
        body.bind(fake, np.random.default_rng(0))


# -- adaptive misinformation ---------------------------------------------------------------------
def test_misinformation_model_is_trained_to_be_wrong(digits):
    x, _, y, view = digits
    body = AdaptiveMisinformation()
    body.bind(view, np.random.default_rng(0))
    wrong = body.model.predict_proba(x)
    assert (wrong.argmax(axis=1) == y).mean() < 0.05
    assert wrong[np.arange(len(y)), y].mean() < 0.05


def test_adaptive_misinformation_leaves_confident_queries_and_changes_uncertain_ones(digits):
    x, probs, _, view = digits
    body = AdaptiveMisinformation(tau=0.9)
    body.bind(view, np.random.default_rng(0))
    noise = np.random.default_rng(0).random((200, 1, 8, 8)).astype(np.float32)  # far out of distribution
    xs = np.concatenate([x, noise])
    ps = np.concatenate([probs, view.victim_proba("api", noise)])
    out = body.shape(ps, None, xs, preset_values(body.knobs))
    assert_on_simplex(out, ps, "adaptive misinformation")
    confident, unsure = ps.max(axis=1) > 0.95, ps.max(axis=1) < 0.85
    assert confident[:len(x)].mean() > 0.8 and unsure[len(x):].mean() > 0.2
    np.testing.assert_array_equal(out[confident], ps[confident])  # in distribution and confident: untouched
    near = ps.max(axis=1) > 0.92  # the gate is a steep sigmoid: 0.02 above tau, alpha is ~2e-9
    np.testing.assert_allclose(out[near], ps[near], rtol=0, atol=1e-8)
    misinformation = body.model.predict_proba(xs[unsure])
    np.testing.assert_allclose(out[unsure], misinformation, atol=1e-6)  # the gate is shut: all misinformation
    assert (out[unsure].argmax(1) != ps[unsure].argmax(1)).mean() > 0.5
    assert body.shape(ps, None, xs, {"tau": 0.0}) is ps


def test_adaptive_misinformation_serves_services_it_cannot_read_untouched():
    api = PredictionAPI([Service(ServiceConfig("api"), FakeVictim(10))])
    body = AdaptiveMisinformation()
    with pytest.warns(UserWarning, match="served untouched"):
        body.bind(DefenderView(api), np.random.default_rng(0))
    probs = FakeVictim(10).predict_proba(np.random.default_rng(0).random((8, 4)))
    assert body.shape(probs, None, np.zeros((8, 4), np.float32), preset_values(body.knobs)) is probs
    assert body.shape(probs, None, None, preset_values(body.knobs)) is probs
