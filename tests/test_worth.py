"""What the stolen model is worth (issue 24): transfer attacks, attribute inference, controls and the ownership
matrix, pretrained students and architectures, the reward terms, and the validation of every new setting."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from extractgym.envs.attribute import AttributeTask, AuxSet, inference_accuracy, leakage, majority_accuracy
from extractgym.envs.ownership import Evidence, min_matches, ownership_test
from extractgym.envs.transfer import TransferAttack, craft_images, success_rate, targets_for
from extractgym.league.analysis import figure
from extractgym.scenarios import ScenarioError, load_scenario, make_env
from extractgym.scenarios.runner import play_episode
from extractgym.victims.datasets import get_dataset
from extractgym.victims.training import predict_proba
from extractgym.victims.zoo import labelled_model

ATTACKS = [{"method": "fgsm", "eps": 0.25}, {"method": "pgd", "eps": 0.25, "steps": 5},
           {"method": "pgd", "eps": 0.25, "steps": 5, "targeted": True}]


def transfer_scenario(**over) -> dict:
    sc = {"name": "t-transfer", "rounds": 3, "services": [{"name": "api", "victim": "digits-cnn"}],
          "attackers": [{"body": "k-center", "params": {"pool": "digits", "queries_per_round": 60}}],
          "transfer": {"attacks": ATTACKS, "inputs": 80, "baseline": "untrained"}}
    sc.update(over)
    return sc


# -- the attacks themselves -----------------------------------------------------------------------------------------
def test_fgsm_and_pgd_stay_in_the_ball_and_the_range_and_fool_the_model_they_are_crafted_on():
    model = labelled_model("mlp", "digits", "pool")
    x, y = get_dataset("digits").split("test")
    x, y = x[:100], y[:100]
    pred = predict_proba(model, x).argmax(1)
    for spec in ATTACKS:
        attack = TransferAttack("a", **spec)
        labels = targets_for(y, 10) if attack.targeted else pred
        adv = craft_images(model, x, attack, labels)
        assert adv.shape == x.shape and adv.dtype == np.float32
        assert np.abs(adv - x).max() <= 0.25 + 1e-6 and adv.min() >= 0.0 and adv.max() <= 1.0
        after = predict_proba(model, adv).argmax(1)
        white_box = (after == labels).mean() if attack.targeted else (after != pred).mean()
        assert white_box > 0.5, (spec, white_box)  # white-box: the attack works on its own model


def test_success_rate_counts_only_inputs_the_victim_got_right():
    truth = np.array([0, 1, 2, 3])
    clean = np.array([0, 1, 2, 0])  # the last one was already wrong: not counted
    answers = np.array([5, 1, 7, 3])
    attack = TransferAttack("a", "fgsm")
    assert success_rate(answers, clean, truth, attack, truth) == (2 / 3, 3)
    targeted = TransferAttack("a", "pgd", targeted=True)
    assert success_rate(answers, clean, truth, targeted, np.array([5, 2, 7, 1])) == (2 / 3, 3)


def test_targets_are_fixed_and_never_the_label():
    y = np.arange(1000) % 10
    t = targets_for(y, 10)
    assert np.all(t != y) and np.array_equal(t, targets_for(y, 10)) and len(np.unique(t)) == 10


# -- the referee's transfer figures ------------------------------------------------------------------------------------
def test_transfer_success_of_an_extracted_surrogate_beats_its_untrained_baseline_and_is_reproducible():
    s = play_episode(make_env(transfer_scenario()), seed=0)
    figs = s["transfer_success"]["attacks"]
    assert set(figs) == {"fgsm-0.25", "pgd-0.25", "pgd-0.25-targeted"}
    for name, f in figs.items():
        rate, base = f["attackers"]["attacker_0"], f["baselines"]["attacker_0"]
        assert 0.0 <= base < rate <= 1.0, (name, rate, base)
        assert 0 < f["inputs"]["attacker_0"] <= 80
    info = s["attackers"]["attacker_0"]
    assert info["transfer_success"] == pytest.approx(np.mean([f["attackers"]["attacker_0"] for f in figs.values()]))
    assert figure(s, "attacker", "transfer_success") == info["transfer_success"]  # a league payoff figure
    again = play_episode(make_env(transfer_scenario()), seed=0)
    assert again["transfer_success"] == s["transfer_success"]


def test_own_labels_baseline_trains_on_the_attackers_own_data():
    s = play_episode(make_env(transfer_scenario(transfer={"attacks": ATTACKS[:1], "inputs": 80})), seed=0)
    own = s["transfer_success"]["attacks"]["fgsm-0.25"]["baselines"]["attacker_0"]
    untrained = play_episode(make_env(transfer_scenario(transfer={"attacks": ATTACKS[:1], "inputs": 80,
                                                                  "baseline": "untrained"})), seed=0)
    assert s["transfer_success"]["baseline"] == "own-labels"
    assert own > untrained["transfer_success"]["attacks"]["fgsm-0.25"]["baselines"]["attacker_0"]


def test_no_worth_figures_without_the_sections():
    s = play_episode(make_env("digits-basic", rounds=1), seed=0)
    assert "transfer_success" not in s and "attribute_inference" not in s
    assert "transfer_success" not in s["attackers"]["attacker_0"]


def test_worth_reward_terms_pay_the_gain_at_the_last_round_and_the_defender_mirrors_it():
    weights = {"transfer_success": 2.0, "transfer_defence": 0.5}
    sc = transfer_scenario(defenders=[{"body": "none"}])
    plain = play_episode(make_env(sc), seed=0)
    paid = play_episode(make_env({**sc, "rewards": weights}), seed=0)
    info = plain["attackers"]["attacker_0"]
    gain = info["transfer_success"] - info["transfer_baseline"]
    assert gain > 0
    assert paid["returns"]["attacker_0"] - plain["returns"]["attacker_0"] == pytest.approx(2.0 * gain)
    assert paid["returns"]["defender_0"] - plain["returns"]["defender_0"] == pytest.approx(-0.5 * gain)


# -- attribute inference ---------------------------------------------------------------------------------------------
def test_attribute_inference_reads_an_attribute_the_representation_holds():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 2, 600)
    x = rng.normal(size=(600, 8)).astype(np.float32)
    x[:, 0] += 2.0 * s  # the attribute leaks through the first input
    leaky = torch.nn.Sequential()
    leaky.features = torch.nn.Identity()  # h = the inputs
    blind = torch.nn.Sequential()
    blind.features = torch.nn.Linear(8, 1)
    with torch.no_grad():
        blind.features.weight.zero_()
        blind.features.weight[0, 1] = 1.0  # h ignores the leaking input
    task = AttributeTask("s", x[:300], s[:300], (AuxSet("aux", x[300:], s[300:]),), "logistic")
    raw = lambda v: np.asarray(v)  # noqa: E731
    out = leakage(task, raw, [(leaky, raw), (blind, raw)])["aux"]
    assert out["models"][0] > 0.8 and out["models"][1] < 0.65
    assert out["encoder"] > 0.8
    assert out["majority"] == majority_accuracy(s[300:], s[:300])
    assert inference_accuracy(x[300:], np.zeros(300, dtype=int), x[:300], s[:300]) == pytest.approx(
        (s[:300] == 0).mean())  # one aux class: the majority guess


def test_convention_dataset_carries_the_party_of_every_record():
    d = get_dataset("convention-2012")
    for split in ("train", "pool", "test"):
        x, y = d.split(split)
        party = d.attribute("party", split)
        assert len(party) == len(x) == len(y) and set(np.unique(party)) == {0, 1}
    assert 0.3 < d.attribute("party", "all").mean() < 0.6
    with pytest.raises(ValueError, match="no attribute 'gender'"):
        d.attribute("gender", "train")


# -- ownership both ways ---------------------------------------------------------------------------------------------
def test_min_watermarks_and_the_verdict_say_when_attribution_becomes_possible():
    assert min_matches(10, 1e-3) == 4 and (1 / 9) ** 4 < 1e-3 <= (1 / 9) ** 3
    ev = Evidence(np.zeros((2, 1, 8, 8)), np.array([3, 4]), np.array([1, 2]), 10, 1e-3, queries=400, rate=0.005)
    t = ownership_test(np.array([3, 4]), ev)
    assert not t["attributed"] and t["queries_needed"] == 800 and "too little evidence" in t["verdict"]
    ev = Evidence(np.zeros((5, 1, 8, 8)), np.arange(5), np.arange(5) + 1, 10, 1e-3, queries=1000, rate=0.005)
    assert ownership_test(np.arange(5), ev)["attributed"]


def test_dawn_attributes_the_surrogate_and_not_the_independent_control():
    s = play_episode(make_env("digits-dawn", controls=[{"name": "independent", "dataset": "digits",
                                                        "split": "pool"}]), seed=0)
    matrix = s["ownership_matrix"]["defender_0"]
    assert matrix["attacker_0"]["attacker_0"]["attributed"]
    assert matrix["attacker_0"]["attacker_0"] == s["ownership"]["attacker_0"]["defender_0"]
    control = matrix["control:independent"]["attacker_0"]
    assert not control["attributed"] and control["p_value"] > 1e-3


# -- students and architectures -------------------------------------------------------------------------------------
def test_a_pretrained_student_starts_from_the_public_checkpoint_and_rehearses_it():
    from extractgym.agents.extraction.surrogate import Surrogate

    spec = get_dataset("digits").spec
    s = Surrogate(spec, 10, "mlp", pretrained="mnist8x8", rehearse=1.0, warm_start=False)
    ref = labelled_model("mlp", "mnist8x8")
    assert all(torch.equal(a, b) for a, b in zip(s.model.state_dict().values(), ref.state_dict().values()))
    x, y = get_dataset("digits").split("test")
    assert (s.predict_proba(x).argmax(1) == y).mean() > 0.3  # it knows digits before any query
    s.add(x[:20], np.eye(10)[y[:20]])
    xs, ys = s._rehearsal(20, 0)
    assert xs.shape == (20, 1, 8, 8) and ys.shape == (20,)
    s.fit()


def test_the_wide_cnn_and_a_pretrained_substitute_play_in_a_scenario():
    s = play_episode(make_env("digits-architecture", rounds=1), seed=0)
    accs = [s["attackers"][f"attacker_{i}"]["accuracy"] for i in range(3)]
    assert all(a > 0.5 for a in accs)


def test_synth_digits_are_balanced_and_deterministic():
    d = get_dataset("synth-digits")
    x, y = d.split("all")
    assert x.shape == (6000, 1, 8, 8) and np.bincount(y).tolist() == [600] * 10
    assert 0.0 <= x.min() and x.max() == 1.0
    from extractgym.victims.synth_digits import render

    a, b = render(20, seed=3), render(20, seed=3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


# -- validation: every bad setting named ------------------------------------------------------------------------------
@pytest.mark.parametrize("change, field", [
    ({"transfer": {"attacks": [{"method": "fgsm", "eps": 1.5}]}}, "transfer.attacks.0.eps"),
    ({"transfer": {"attacks": [{"method": "fgsm", "eps": 0.0}]}}, "transfer.attacks.0.eps"),
    ({"transfer": {"attacks": [{"method": "word-swap"}]}}, "transfer.attacks.0.method"),
    ({"transfer": {"attacks": [{"method": "fgsm"}, {"method": "fgsm"}]}}, "transfer.attacks"),
    ({"attackers": [{"body": "random", "params": {"surrogate": "lenet"}}], "transfer": None},
     "attackers.0.params.surrogate"),
    ({"attackers": [{"body": "random", "params": {"pretrained": "digits"}}], "transfer": None},
     "attackers.0.params.pretrained"),
    ({"attackers": [{"body": "random", "params": {"rehearse": 2.0}}], "transfer": None}, "attackers.0.params"),
    ({"attackers": [{"body": "random", "params": {"surrogate": "cheap", "pretrained": "synth-digits"}}],
      "transfer": None}, "attackers.0.params"),
    ({"controls": [{"name": "c", "dataset": "digits"}]}, "controls"),
    ({"rewards": {"attribute_inference": 1.0}}, "rewards.attribute_inference"),
    ({"transfer": {"attacks": [{"method": "pgd", "steps": 0}]}}, "transfer.attacks.0.steps"),
])
def test_bad_worth_settings_are_refused_with_the_field_named(change, field):
    sc = {k: v for k, v in {**transfer_scenario(), **change}.items() if v is not None}
    with pytest.raises(ScenarioError) as e:
        load_scenario(sc)
    assert field in str(e.value), str(e.value)


def test_bad_text_worth_settings_are_refused_with_the_field_named():
    base = {"name": "t", "services": [{"name": "api", "victim": "convention-sentiment"}],
            "attackers": [{"body": "random", "params": {"pool": "guardian"}}]}
    cases = [
        ({"transfer": {"attacks": [{"method": "fgsm"}]}}, "transfer.attacks.0.method"),
        ({"transfer": {"attacks": [{"method": "word-swap"}]}}, "transfer.baseline"),  # guardian is unlabelled
        ({"attribute_inference": {"attribute": "age", "aux": [{"dataset": "debates-2016"}]}},
         "attribute_inference.attribute"),
        ({"attribute_inference": {"attribute": "party", "aux": [{"dataset": "guardian"}]}},
         "attribute_inference.aux.0.dataset"),
        ({"attribute_inference": {"attribute": "party", "aux": [{"dataset": "convention-2012", "split": "train"}]}},
         "attribute_inference.aux.0.split"),
        ({"attackers": [{"body": "random", "params": {"pool": "guardian", "surrogate": "digits-cnn"}}]},
         "attackers.0.params.surrogate"),  # a CNN for 8x8 images cannot read sentence vectors
    ]
    for change, field in cases:
        with pytest.raises(ScenarioError) as e:
            load_scenario({**base, **change})
        assert field in str(e.value), (field, str(e.value))
    rt = {**base, "services": [{"name": "api", "victim": "minilm-sentiment"}],
          "attribute_inference": {"attribute": "party", "aux": [{"dataset": "debates-2016"}]}}
    with pytest.raises(ScenarioError, match="attribute_inference.attribute: the victim's data 'rotten-tomatoes' has no"):
        load_scenario(rt)


def test_validate_exits_2_naming_the_field(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(transfer_scenario(transfer={"attacks": [{"method": "pgd", "eps": 3}]})))
    run = subprocess.run([sys.executable, "-m", "extractgym.cli", "validate", str(path)], capture_output=True,
                         text=True)
    assert run.returncode == 2 and "transfer.attacks.0.eps" in run.stdout + run.stderr


def test_shipped_worth_scenarios_validate():
    for name in ("digits-transfer", "text-transfer", "text-attribute", "digits-ownership", "digits-architecture",
                 "digits-surpass"):
        s = load_scenario(name)
        assert s.name == name


@pytest.mark.slow
def test_digits_ownership_through_the_cli_attributes_the_surrogate_not_the_control(tmp_path):
    run = subprocess.run([sys.executable, "-m", "extractgym.cli", "run", "digits-ownership", "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    matrix = json.loads((tmp_path / "summary.json").read_text())["ownership_matrix"]["defender_0"]
    assert matrix["attacker_0"]["attacker_0"]["attributed"]
    assert not matrix["control:independent"]["attacker_0"]["attributed"]


@pytest.mark.slow
def test_text_attribute_scenario_reports_the_paper_baselines():
    s = play_episode(make_env("text-attribute"), seed=0)
    a = s["attribute_inference"]
    assert a["attribute"] == "party" and set(a["aux"]) == {"same-domain", "cross-domain"}
    for figs in a["aux"].values():
        assert {"majority", "encoder", "attackers"} <= set(figs)
        assert not math.isnan(figs["attackers"]["attacker_0"])


def test_a_fine_tuned_text_student_starts_as_the_public_sentence_encoder():
    from extractgym.victims.models import build_model
    from extractgym.victims.text import get_encoder

    texts = ["The economy is growing again.", "We will never give up on this country."]
    enc = get_encoder()
    tokens = enc.tokens(texts)
    assert tokens.shape == (2, 2, 64) and tokens.dtype == np.float32
    model = build_model("minilm-tuned", 2, (2, 64), seed=0).eval()
    assert sum(p.numel() for p in model.parameters()) > 20_000_000
    with torch.no_grad():
        h = model.features(torch.from_numpy(tokens)).numpy()
    assert np.allclose(h, enc.encode(texts), atol=1e-4)  # the same vectors before any fine-tuning
    assert all(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in enc.transformer()[1].parameters())  # the shared encoder stays frozen


@pytest.mark.slow
def test_minilm_tuned_student_plays_and_is_scored_with_attribute_inference():
    sc = {"name": "t-tuned", "rounds": 1, "services": [{"name": "api", "victim": "convention-sentiment"}],
          "attackers": [{"body": "random", "params": {"pool": "convention-2012", "queries_per_round": 64,
                                                      "surrogate": "minilm-tuned", "lr": 3e-5, "batch_size": 8,
                                                      "train_steps": 8}}],
          "attribute_inference": {"attribute": "party", "aux": [{"dataset": "debates-2016", "records": 100}]}}
    s = play_episode(make_env(sc), seed=0)
    assert s["attacker_accuracy"] > 0.5
    assert 0.0 <= s["attackers"]["attacker_0"]["attribute_inference"] <= 1.0
