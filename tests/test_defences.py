"""Every registered defender, for every choice of each of its knobs, keeps outputs on the probability simplex.

Batches come from hypothesis (1..64 rows, 2..12 classes) and include extreme rows: one-hot, uniform, ties at the
top, nearly one-hot rows with tiny entries. Deterministic defences must treat a batch exactly as its rows one by
one (ART's ``ClassLabels`` had a batch bug that its one-sample test missed).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from extractgym.agents import DEFENDERS
from extractgym.agents.defenders.adaptive_misinformation import AdaptiveMisinformation
from extractgym.agents.defenders.gaussian_noise import GaussianNoise
from extractgym.agents.defenders.hard_label import HardLabel
from extractgym.agents.defenders.mad import MaxAngleDeviation
from extractgym.agents.defenders.reverse_sigmoid import ReverseSigmoid
from extractgym.agents.defenders.rounding import Rounding
from extractgym.agents.defenders.temperature import Temperature
from extractgym.agents.defenders.top_k import TopK
from extractgym.envs.api import Budget, DefenderView, PredictionAPI, Service, ServiceConfig, format_outputs
from extractgym.envs.protocols import knob_values, preset_values
from extractgym.victims.base import InputSpec

# shipped bodies only: test files register their own, and pytest may import them first
SHIPPED_DEFENDERS = sorted(n for n, c in DEFENDERS.items() if c.__module__.startswith("extractgym."))

LabelPreservingNoise = DEFENDERS["label-preserving-noise"]

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
TOL = 1e-9


class FakeVictim:
    def __init__(self, n_classes: int) -> None:
        self.name, self.n_classes = "fake", n_classes
        self.input_spec = InputSpec(kind="image", shape=(4,))
        self.w = np.random.default_rng(0).normal(size=(4, n_classes)) * 3

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = np.asarray(x, dtype=np.float64) @ self.w
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)


@st.composite
def prob_batches(draw, max_batch: int = 64, max_classes: int = 12) -> np.ndarray:
    """Rows on the simplex: random, one-hot, uniform, tied at the top, peaked (tiny entries), two-way splits."""
    b = draw(st.integers(1, max_batch))
    c = draw(st.integers(2, max_classes))
    raw = draw(arrays(np.float64, (b, c), elements=st.floats(0.0, 1.0, allow_subnormal=False)))
    kinds = draw(arrays(np.int8, (b,), elements=st.integers(0, 6)))
    out = np.empty((b, c))
    for i, (row, kind) in enumerate(zip(raw, kinds, strict=True)):
        j = int(np.argmax(row))
        if kind == 0 and row.sum() > 0:  # random
            out[i] = row / row.sum()
        elif kind == 1:  # one-hot
            out[i] = np.eye(c)[j]
        elif kind == 2 or row.sum() == 0:  # uniform
            out[i] = np.full(c, 1.0 / c)
        elif kind == 3:  # a tie at the top between two (or more) classes
            r = row + 1e-3
            top = r.max()
            r[j] = top
            r[(j + 1 + int(row[0] * (c - 1))) % c] = top
            out[i] = r / r.sum()
        elif kind == 4:  # peaked: a softmax with tiny entries
            z = np.exp(60.0 * (row - row.max()))
            out[i] = z / z.sum()
        elif kind == 5:  # nearly one-hot
            eps = 1e-15 * (1 + row[0])
            out[i] = np.full(c, eps)
            out[i, j] = 1.0 - eps * (c - 1)
        else:  # mass split between two classes
            out[i] = np.zeros(c)
            out[i, j], out[i, (j + 1) % c] = row[j] if row[j] > 0 else 0.5, 1.0 - (row[j] if row[j] > 0 else 0.5)
    return out


def bound(name: str, n_classes: int, seed: int = 0):
    """A registered defender with its defaults, bound to a one-service API whose victim has ``n_classes``."""
    api = PredictionAPI([Service(ServiceConfig("api"), FakeVictim(n_classes))])
    body = DEFENDERS[name]()
    body.bind(DefenderView(api), np.random.default_rng(seed))
    return body


def knob_settings(body):
    """Every combination of knob choices, as ``{name: value}``."""
    for action in itertools.product(*(range(len(k.choices)) for k in body.knobs)):
        yield knob_values(body.knobs, np.array(action))


def assert_on_simplex(out: np.ndarray, probs: np.ndarray, where: str) -> None:
    assert isinstance(out, np.ndarray), where
    assert out.shape == probs.shape, where
    assert np.isfinite(out).all(), where
    assert (out >= 0).all(), where
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=0, atol=TOL, err_msg=where)


def top_is_kept(probs: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Per row: the output's arg-max is one of the input's top classes."""
    return probs[np.arange(len(probs)), out.argmax(axis=1)] == probs.max(axis=1)


def is_deterministic(body, n_classes: int, knobs: dict) -> bool:
    """Whether two calls on the same interior batch (no entry near 0 or 1) give the same outputs."""
    probe = FakeVictim(n_classes).predict_proba(np.random.default_rng(1).random((8, 4)) * 0.1)
    return np.array_equal(body.shape(probe, None, None, knobs), body.shape(probe, None, None, knobs))


def preset(body) -> dict:
    return preset_values(body.knobs)


# -- every registered defender -------------------------------------------------------------------
def test_registry_is_not_empty():
    assert {"none", "hard-label", "top-k", "rounding", "gaussian-noise"} <= set(DEFENDERS)


@pytest.mark.parametrize("name", SHIPPED_DEFENDERS)
def test_defaults_are_a_valid_preset(name):
    body = bound(name, 3)
    assert body.knobs, f"{name}: a defender needs at least one knob (the env's action space)"
    for k in body.knobs:
        assert 0 <= k.default < len(k.choices)
        assert len(set(map(repr, k.choices))) == len(k.choices), f"{name}: duplicate choices in knob {k.name!r}"


@pytest.mark.parametrize("name", SHIPPED_DEFENDERS)
@SETTINGS
@given(probs=prob_batches(), seed=st.integers(0, 2**16))
def test_outputs_stay_on_the_simplex_for_every_knob_setting(name, probs, seed):
    body = bound(name, probs.shape[1], seed)
    for values in knob_settings(body):
        where = f"{name} {values}"
        before = probs.copy()
        out = body.shape(probs, None, None, values)
        np.testing.assert_array_equal(probs, before, err_msg=f"{where}: shape() changed its input")
        assert_on_simplex(out, probs, where)
        if is_deterministic(body, probs.shape[1], values):  # a batch is exactly its rows one by one
            rows = np.concatenate([body.shape(probs[i:i + 1].copy(), None, None, values) for i in range(len(probs))])
            np.testing.assert_allclose(rows, out, rtol=0, atol=1e-12, err_msg=f"{where}: batch != row by row")


@pytest.mark.parametrize("name", SHIPPED_DEFENDERS)
@pytest.mark.parametrize("output", ["probs", "label", "top-k"])
def test_defended_api_answers_stay_on_the_simplex(name, output):
    """The whole request path: the victim, every knob setting of the defence, then the service's output format."""
    n_classes = 7
    victim = FakeVictim(n_classes)
    api_ = PredictionAPI([Service(ServiceConfig("api", output=output, top_k=3), victim)], [DEFENDERS[name]()])
    api_.defences[0].bind(DefenderView(api_), np.random.default_rng(0))
    api_.register_owner("a", Budget())
    x = np.random.default_rng(1).random((50, 4)).astype(np.float32)
    for values in knob_settings(api_.defences[0]):
        api_.set_defence_knobs([values])
        acc = api_.open_account("a", "api")
        r = api_.query("a", acc.id, x, audit=True)
        assert r.n_answered == len(x)
        assert_on_simplex(r.outputs, r.raw, f"{name} {values} {output}")
        np.testing.assert_allclose(r.raw, victim.predict_proba(x))
        if output != "probs":
            assert ((r.outputs > 0).sum(axis=1) <= (1 if output == "label" else 3)).all()


# -- what particular defences promise ------------------------------------------------------------
@SETTINGS
@given(probs=prob_batches())
def test_hard_label_keeps_the_top_class(probs):
    body = HardLabel()
    body.bind(None, np.random.default_rng(0))
    out = body.shape(probs, None, None, {"enabled": True})
    assert top_is_kept(probs, out).all()
    assert ((out == 0) | (out == 1)).all() and (out.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(out.argmax(axis=1), probs.argmax(axis=1))
    np.testing.assert_array_equal(body.shape(probs, None, None, {"enabled": False}), probs)


@SETTINGS
@given(probs=prob_batches(), k=st.integers(1, 14))
def test_top_k_keeps_the_top_classes(probs, k):
    body = TopK(k=k)
    body.bind(None, np.random.default_rng(0))
    out = body.shape(probs, None, None, preset(body))
    assert_on_simplex(out, probs, f"top-k k={k}")
    assert top_is_kept(probs, out).all()
    assert ((out > 0).sum(axis=1) <= k).all()
    # the revealed classes are the k largest, in proportion to their probabilities
    kth = -np.sort(-probs, axis=1)[:, min(k, probs.shape[1]) - 1]
    shown = out > 0
    assert (probs[shown] >= np.repeat(kth, shown.sum(axis=1))).all()
    for row_p, row_o, row_s in zip(probs, out, shown, strict=True):
        if row_s.sum() > 1:
            np.testing.assert_allclose(row_o[row_s], row_p[row_s] / row_p[row_s].sum(), rtol=1e-9, atol=1e-12)
    if k >= probs.shape[1]:
        np.testing.assert_allclose(out, probs / probs.sum(axis=1, keepdims=True), rtol=1e-9, atol=1e-12)


@SETTINGS
@given(probs=prob_batches(), decimals=st.integers(0, 6))
def test_rounding_keeps_the_top_class_when_the_gap_exceeds_the_step(probs, decimals):
    body = Rounding(decimals=decimals)
    body.bind(None, np.random.default_rng(0))
    out = body.shape(probs, None, None, preset(body))
    assert_on_simplex(out, probs, f"rounding decimals={decimals}")
    step = 10.0 ** -decimals
    units = out / step
    np.testing.assert_allclose(units, np.round(units), atol=1e-6)  # multiples of the step
    assert (np.abs(out - probs) < step + 1e-9).all()  # each entry moves by less than one step
    top2 = -np.sort(-probs, axis=1)[:, :2]
    clear = top2[:, 0] - top2[:, 1] > step + 1e-9
    np.testing.assert_array_equal(out.argmax(axis=1)[clear], probs.argmax(axis=1)[clear])


def test_rounding_fixes_row_sums_that_plain_rounding_breaks():
    probs = np.full((2, 3), 1 / 3)
    out = Rounding(decimals=2)
    out.bind(None, np.random.default_rng(0))
    shaped = out.shape(probs, None, None, preset(out))
    np.testing.assert_allclose(shaped.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(np.sort(shaped[0]), [0.33, 0.33, 0.34])


@SETTINGS
@given(probs=prob_batches(max_batch=16), seed=st.integers(0, 2**16))
def test_gaussian_noise_sigma_zero_is_the_identity(probs, seed):
    body = GaussianNoise(sigma=0.0)
    body.bind(None, np.random.default_rng(seed))
    np.testing.assert_array_equal(body.shape(probs, None, None, preset(body)), probs)
    body = GaussianNoise()
    body.bind(None, np.random.default_rng(seed))
    np.testing.assert_array_equal(body.shape(probs, None, None, {"sigma": 0.0}), probs)


@pytest.mark.parametrize("body", [LabelPreservingNoise(sigma=0.5), LabelPreservingNoise(sigma=0.05, max_tries=1),
                                  Temperature(), MaxAngleDeviation(epsilon=2.0, oracle="argmax"),
                                  MaxAngleDeviation(epsilon=0.5, ydist="l2", oracle="argmax")],
                         ids=lambda b: b.registry_name)
@SETTINGS
@given(probs=prob_batches(max_batch=32, max_classes=14), seed=st.integers(0, 2**16))
def test_label_preserving_defences_never_change_the_top_class(body, probs, seed):
    """Where a defence promises the top class (every knob setting), the served arg-max is one of the input's top
    classes, for every row of every batch, on up to 14 classes (MAD-argmax's greedy search starts at 11)."""
    body.bind(None, np.random.default_rng(seed))
    for values in knob_settings(body):
        out = body.shape(probs, None, None, values)
        assert_on_simplex(out, probs, f"{body.registry_name} {values}")
        assert top_is_kept(probs, out).all(), f"{body.registry_name} {values}"


@pytest.mark.parametrize("sigma", [0.01, 0.1, 0.5])
def test_gaussian_noise_is_reproducible_per_seed(sigma):
    probs = FakeVictim(10).predict_proba(np.random.default_rng(0).random((32, 4)))

    def run(seed: int) -> list[np.ndarray]:
        body = GaussianNoise(sigma=sigma)
        body.bind(None, np.random.default_rng(seed))
        return [body.shape(probs, None, None, preset(body)) for _ in range(3)]

    a, b, c = run(7), run(7), run(8)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])  # another seed, other noise
    assert not np.array_equal(a[0], a[1])  # fresh noise on every call
    assert not np.array_equal(a[0], probs)
    for out in a + c:
        assert_on_simplex(out, probs, f"sigma={sigma}")


@pytest.mark.parametrize("cls, kwargs, word", [
    (TopK, {"k": 0}, "k"),
    (TopK, {"k": -3}, "k"),
    (Rounding, {"decimals": -1}, "decimals"),
    (Rounding, {"decimals": 99}, "decimals"),
    (GaussianNoise, {"sigma": -1.0}, "sigma"),
    (GaussianNoise, {"sigma": float("nan")}, "sigma"),
    (GaussianNoise, {"sigma": float("inf")}, "sigma"),
    (GaussianNoise, {"max_tries": 0}, "max_tries"),
    (LabelPreservingNoise, {"sigma": -0.1}, "sigma"),
    (Temperature, {"temperature": -1.0}, "temperature"),
    (Temperature, {"temperature": float("nan")}, "temperature"),
    (Temperature, {"temperature": float("inf")}, "temperature"),
    (ReverseSigmoid, {"beta": -0.5}, "beta"),
    (ReverseSigmoid, {"beta": float("nan")}, "beta"),
    (ReverseSigmoid, {"gamma": 0.0}, "gamma"),
    (ReverseSigmoid, {"gamma": -1.0}, "gamma"),
    (MaxAngleDeviation, {"epsilon": -0.1}, "epsilon"),
    (MaxAngleDeviation, {"epsilon": float("inf")}, "epsilon"),
    (MaxAngleDeviation, {"ydist": "kl"}, "ydist"),
    (MaxAngleDeviation, {"oracle": "random"}, "oracle"),
    (MaxAngleDeviation, {"grad_layer": "first"}, "grad_layer"),
    (MaxAngleDeviation, {"train_epochs": 0}, "train_epochs"),
    (MaxAngleDeviation, {"data": "no-such-data"}, "dataset"),
    (AdaptiveMisinformation, {"tau": 1.5}, "tau"),
    (AdaptiveMisinformation, {"tau": -0.1}, "tau"),
    (AdaptiveMisinformation, {"nu": 0.0}, "nu"),
    (AdaptiveMisinformation, {"nu": float("nan")}, "nu"),
    (AdaptiveMisinformation, {"data": "no-such-data"}, "dataset"),
])
def test_bad_parameters_raise_value_error(cls, kwargs, word):
    with pytest.raises(ValueError) as e:
        cls(**kwargs)
    message = str(e.value)
    assert word in message and str(next(iter(kwargs.values()))) in message


# -- the API's output formats --------------------------------------------------------------------
@SETTINGS
@given(probs=prob_batches(), k=st.integers(1, 14), output=st.sampled_from(["label", "top-k", "probs"]))
def test_output_formats_stay_on_the_simplex(probs, k, output):
    config = ServiceConfig("api", output=output, top_k=k)
    out = format_outputs(probs, config)
    assert_on_simplex(out, probs, f"{output} k={k}")
    assert top_is_kept(probs, out).all()
    rows = np.concatenate([format_outputs(probs[i:i + 1], config) for i in range(len(probs))])
    np.testing.assert_array_equal(rows, out)
    if output == "label":
        assert ((out > 0).sum(axis=1) == 1).all()
    elif output == "top-k":
        assert ((out > 0).sum(axis=1) <= k).all()
