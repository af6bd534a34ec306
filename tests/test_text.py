"""Text datasets, the cached MiniLM encoder and the user-model loaders (kept fast: a handful of sentences)."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

from extractgym.victims.base import InputSpec, Victim
from extractgym.victims.datasets import SPLITS, get_dataset
from extractgym.victims.loaders import from_huggingface, from_torch_model
from extractgym.victims.text import TextEncoder, shipped_model_path
from extractgym.victims.text_data import RT_MAX_EXAMPLES, load_rotten_tomatoes

SENTENCES = [
    "The movie was wonderful and deeply moving.",
    "A truly wonderful, touching film.",
    "The stock market fell sharply on Tuesday.",
    "Short.",
]


def _texts(ds, split):
    return set(ds.split(split)[0].tolist())


def _assert_splits_disjoint(ds):
    for i, a in enumerate(SPLITS):
        for b in SPLITS[i + 1:]:
            assert not _texts(ds, a) & _texts(ds, b), (ds.name, a, b)


def test_rotten_tomatoes_dataset():
    ds = get_dataset("rotten-tomatoes")
    assert ds.spec.kind == "text" and ds.n_classes == 2 and ds.class_names == ("negative", "positive")
    assert ds.labelled
    x, y = ds.split("all")
    assert len(x) == RT_MAX_EXAMPLES == len(set(x.tolist()))
    assert [len(ds.split(s)[0]) for s in SPLITS] == [3000, 1800, 1200]
    assert x.dtype == object and all(isinstance(t, str) and t == t.strip() and t for t in x)
    assert set(np.unique(y)) == {0, 1}
    for s in SPLITS:  # stratified: ~58% fresh (positive) in every split
        assert abs(ds.split(s)[1].mean() - 7368 / 12752) < 0.01
    _assert_splits_disjoint(ds)
    again = load_rotten_tomatoes()
    for s in SPLITS:
        assert np.array_equal(again.split(s)[0], ds.split(s)[0]) and np.array_equal(again.split(s)[1], ds.split(s)[1])


@pytest.mark.parametrize("name, size", [("rt-plots", 1083), ("guardian", 4079)])
def test_unlabelled_corpora(name, size):
    ds = get_dataset(name)
    x, y = ds.split("all")
    assert len(x) == size == len(set(x.tolist())) and x.dtype == object
    assert (y == -1).all() and not ds.labelled and ds.n_classes == 2
    assert max(len(t) for t in x) <= ds.spec.max_chars
    _assert_splits_disjoint(ds)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EXTRACTGYM_CACHE", str(tmp_path))
    return tmp_path


def test_encoder_cache_is_exact(cache):
    enc = TextEncoder()
    assert enc.dim == 384 and enc.name == "all-MiniLM-L6-v2"
    fresh = enc.encode(SENTENCES[:3])
    assert fresh.shape == (3, 384) and fresh.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fresh, axis=1), 1.0, atol=1e-5)
    assert enc.stats["encoded"] == 3 and enc.cache_file().parent == cache / "embeddings"

    # memory hits, duplicates and a new text mixed in: order kept, cached rows bit-identical
    mixed = enc.encode(np.array([SENTENCES[2], SENTENCES[3], SENTENCES[0], SENTENCES[2]], dtype=object))
    assert enc.stats["encoded"] == 4
    assert np.array_equal(mixed[[2, 0, 3]], fresh[[0, 2, 2]])

    # a second encoder (think: another process) reads the same vectors back from disk
    other = TextEncoder()
    from_disk = other.encode(SENTENCES)
    assert other.stats == {"memory_hits": 0, "disk_hits": 4, "encoded": 0}
    assert np.array_equal(from_disk[:3], fresh) and np.array_equal(from_disk[3], mixed[1])

    # recomputing without any cache gives the same vectors up to float rounding
    uncached = TextEncoder(disk_cache=False).encode(SENTENCES[:3])
    np.testing.assert_allclose(uncached, fresh, atol=1e-5)

    out = enc.encode(SENTENCES[:1])
    out[:] = 0.0  # callers get copies: the cache is untouched
    assert np.array_equal(enc.encode(SENTENCES[:1]), fresh[:1])
    assert enc.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        enc.encode(["fine", 3])


def test_encoder_semantics(cache):
    v = TextEncoder().encode(SENTENCES[:3])
    assert float(v[0] @ v[1]) > float(v[0] @ v[2]) + 0.2


def test_from_huggingface_shipped_minilm():
    victim = from_huggingface(shipped_model_path(), num_labels=2)
    assert isinstance(victim, Victim)
    assert victim.n_classes == 2 and victim.input_spec.kind == "text"
    p = victim.predict_proba(SENTENCES[:3])
    assert p.shape == (3, 2) and p.dtype == np.float64
    assert (p >= 0).all() and np.allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(victim.predict_proba(SENTENCES[1:2]), p[1:2], atol=1e-6)  # batch-independent


def test_from_huggingface_errors(tmp_path):
    with pytest.raises(OSError, match="does not exist"):
        from_huggingface(str(tmp_path / "no-such-model"))
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(OSError, match="empty-dir"):
        from_huggingface(str(tmp_path / "empty-dir"))
    with pytest.raises(ValueError):
        from_huggingface(shipped_model_path(), num_labels=1)


def test_from_torch_model():
    spec = InputSpec(kind="image", shape=(1, 8, 8))
    good = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    victim = from_torch_model(good, 10, spec, name="mine")
    p = victim.predict_proba(np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32))
    assert p.shape == (5, 10) and np.allclose(p.sum(axis=1), 1.0) and victim.name == "mine"

    with pytest.raises(ValueError, match="outputs 3 logits"):
        from_torch_model(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), 10, spec)
    with pytest.raises(ValueError, match="dummy batch"):
        from_torch_model(nn.Sequential(nn.Flatten(), nn.Linear(50, 10)), 10, spec)
    with pytest.raises(ValueError, match="featurize"):
        from_torch_model(good, 10, InputSpec(kind="text"))
    with pytest.raises(ValueError, match="n_classes"):
        from_torch_model(good, 1, spec)
    with pytest.raises(TypeError):
        from_torch_model(lambda x: x, 10, spec)  # type: ignore[arg-type]
    with pytest.warns(UserWarning, match="probabilities"):
        from_torch_model(nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Softmax(dim=1)), 10, spec)
