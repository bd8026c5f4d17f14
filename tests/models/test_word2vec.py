"""Word2Vec: skip-gram vectors put words of one topic together, training is reproducible, the
vocabulary and pairs follow the C tool's rules, and the text format round-trips."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from seqformer.errors import DataError, UserError
from seqformer.models import word2vec
from seqformer.models.word2vec import (
    Corpus,
    SkipGram,
    WordVectors,
    skipgram_pairs,
    train_word2vec,
    unigram_table,
    word_tokens,
)

TOPIC_A = [f"a{i}" for i in range(12)]
TOPIC_B = [f"b{i}" for i in range(12)]


def topic_texts(n: int, seed: int) -> list[str]:
    """Sentences of 6-10 words, each from one topic chosen at random: consecutive texts mix the
    topics, so pairs leaking across texts would blur them."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        words = rng.choice([TOPIC_A, TOPIC_B])
        texts.append(" ".join(rng.choice(words) for _ in range(rng.randint(6, 10))))
    return texts


def small(texts: list[str], **overrides) -> WordVectors:
    kw = dict(dim=16, window=3, negative=5, min_count=1, epochs=3, sample=0.0, progress=False)
    kw.update(overrides)
    return train_word2vec(texts, **kw)


def test_word_tokens() -> None:
    assert word_tokens("Don't stop.") == ["don't", "stop"]
    assert word_tokens("Rock'n'roll, 42 CATS -- 'quoted'") == ["rock'n", "roll", "42", "cats",
                                                                  "quoted"]


def test_words_of_a_topic_are_nearest_each_other() -> None:
    wv = small(topic_texts(3000, 0))
    assert sorted(wv.words) == sorted(TOPIC_A + TOPIC_B)
    topic = {w: w[0] for w in wv.words}
    for word in wv.words:
        nearest, _ = wv.most_similar(word, 1)[0]
        assert topic[nearest] == topic[word], (word, wv.most_similar(word, 3))
    unit = wv.vectors / np.linalg.norm(wv.vectors, axis=1, keepdims=True)
    cos = unit @ unit.T
    same = np.array([[topic[a] == topic[b] for b in wv.words] for a in wv.words])
    off_diagonal = ~np.eye(len(wv), dtype=bool)
    within, across = cos[same & off_diagonal].mean(), cos[~same].mean()
    assert within - across > 0.5, (within, across)
    assert wv.stats["pairs"] > 0 and wv.stats["loss"] < 3.0  # 6 log 2 = 4.16 untrained


def test_same_seed_same_vectors_other_seed_other_vectors() -> None:
    texts = topic_texts(300, 1)
    first, again = small(texts, seed=3, epochs=1), small(texts, seed=3, epochs=1)
    assert first.words == again.words
    assert np.array_equal(first.vectors, again.vectors)
    assert not np.allclose(first.vectors, small(texts, seed=4, epochs=1).vectors)


def test_vocabulary_min_count_and_order() -> None:
    texts = topic_texts(100, 2) + ["rare rare zzz"]
    counts = Counter(t for text in texts for t in word_tokens(text))
    wv = small(texts, min_count=5, epochs=1)
    assert "rare" not in wv and "zzz" not in wv and "a0" in wv
    expected = sorted((w for w, c in counts.items() if c >= 5), key=lambda w: (-counts[w], w))
    assert wv.words == expected
    corpus = Corpus(texts, 5)  # the rare words leave the text before windows are taken
    assert len(corpus.ids) == sum(counts[w] for w in expected)
    with pytest.raises(DataError, match="min_count"):
        small(["one two three"], min_count=2)
    with pytest.raises(UserError, match="dim"):
        small(texts, dim=0)


def test_subsampling_thins_frequent_words_but_keeps_the_vocabulary() -> None:
    rng = random.Random(0)
    rare = [f"w{i}" for i in range(200)]  # each about 0.25% of the text: below t, all kept
    texts = [" ".join("the" if rng.random() < 0.5 else rng.choice(rare) for _ in range(10))
             for _ in range(500)]
    corpus = Corpus(texts, 1)
    keep = corpus.keep_probability(1e-2)
    the = corpus.words.index("the")
    assert the == 0 and 0.1 < keep[the] < 0.2  # f = 0.5: sqrt(0.02) + 0.02
    assert np.all(keep[1:] == 1.0)
    everything = skipgram_pairs(corpus.ids, _text_of(corpus), 2, np.ones(len(keep)),
                                np.random.default_rng(0))
    thinned = skipgram_pairs(corpus.ids, _text_of(corpus), 2, keep, np.random.default_rng(0))
    share = [np.mean(p[:, 0] == the) for p in (everything, thinned)]
    assert share[1] < share[0] * 0.75, share
    assert set(thinned[:, 0]) == set(range(len(corpus.words)))  # every word still trains
    sampled, unsampled = small(texts, sample=1e-2, epochs=1), small(texts, sample=0, epochs=1)
    assert sampled.words == unsampled.words
    assert sampled.stats["pairs"] < unsampled.stats["pairs"]


def test_chunks_cover_the_text_and_cut_between_texts(monkeypatch) -> None:
    monkeypatch.setattr(word2vec, "CHUNK_TOKENS", 50)
    corpus = Corpus(topic_texts(100, 3) + ["a1 " * 120], 1)  # the last text outgrows a chunk
    chunks = list(corpus.chunks())
    assert chunks[0][0] == 0 and chunks[-1][1] == len(corpus.ids) and len(chunks) > 5
    assert all(end == nxt for (_, end), (nxt, _) in zip(chunks, chunks[1:]))
    assert all(first in corpus.starts for first, _ in chunks)
    assert chunks[-1][1] - chunks[-1][0] >= 120


def _text_of(corpus: Corpus) -> np.ndarray:
    return np.repeat(np.arange(len(corpus.starts) - 1), np.diff(corpus.starts))


def test_dynamic_window_weights_near_words_and_stays_inside_a_text() -> None:
    ids = np.arange(4000)  # distinct ids: a pair's distance is the difference of its ids
    text_of = np.repeat(np.arange(40), 100)
    pairs = skipgram_pairs(ids, text_of, 2, np.ones(len(ids)), np.random.default_rng(0))
    distance = np.abs(pairs[:, 0] - pairs[:, 1])
    assert set(distance) == {1, 2}
    assert np.all(text_of[pairs[:, 0]] == text_of[pairs[:, 1]])
    # Every centre sees distance 1; half of them (window 2 drawn) also distance 2.
    ratio = np.sum(distance == 1) / np.sum(distance == 2)
    assert 1.8 < ratio < 2.2, ratio


def test_negatives_follow_the_unigram_075_distribution() -> None:
    counts = np.array([1000, 100, 10, 5])
    table = unigram_table(counts)
    share = np.bincount(table, minlength=4) / len(table)
    expected = counts ** 0.75 / np.sum(counts ** 0.75)
    np.testing.assert_allclose(share, expected, rtol=1e-3)


def test_sgd_step_is_minus_lr_times_the_gradient_of_the_loss() -> None:
    torch.manual_seed(0)
    model = SkipGram(12, 6)
    with torch.no_grad():
        model.out_vectors.weight.normal_()
    centres, contexts = torch.tensor([1, 2, 1, 3]), torch.tensor([4, 5, 4, 1])
    negatives = torch.tensor([[4, 6], [7, 7], [1, 2], [1, 9]])  # row 0 holds its context
    loss = model(centres, contexts, negatives)
    loss.sum().backward()
    before = [p.detach().clone() for p in model.parameters()]
    grads = [p.grad.clone() for p in model.parameters()]
    mean = model.sgd_step(centres, contexts, negatives, lr=0.3)
    assert mean == pytest.approx(float(loss.detach().mean()), rel=1e-6)
    for p, b, g in zip(model.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), b - 0.3 * g, atol=1e-6, rtol=1e-5)
    # Beyond max_repeats occurrences in a batch, a row's summed step is scaled down to that
    # many pairs' worth: centre 1 occurs 4 times, so with a cap of 2 it moves half as far.
    model.zero_grad()
    centres = torch.tensor([1, 1, 1, 1, 2])
    model(centres, contexts[[0, 1, 2, 3, 3]], negatives[[0, 1, 2, 3, 3]]).sum().backward()
    before = model.in_vectors.weight.detach().clone()
    grad = model.in_vectors.weight.grad
    model.sgd_step(centres, contexts[[0, 1, 2, 3, 3]], negatives[[0, 1, 2, 3, 3]], lr=0.3,
                   max_repeats=2)
    moved = before - model.in_vectors.weight.detach()
    torch.testing.assert_close(moved[1], 0.5 * 0.3 * grad[1], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(moved[2], 0.3 * grad[2], atol=1e-6, rtol=1e-5)
    # A negative equal to the context is skipped: row 0's loss is that of its other negative.
    alone = model(centres[:1], contexts[:1], negatives[:1, 1:])
    torch.testing.assert_close(model(centres[:1], contexts[:1], negatives[:1]), alone)


# --- the text format -----------------------------------------------------------------------


def vectors(seed: int = 0) -> WordVectors:
    rng = np.random.default_rng(seed)
    return WordVectors(["the", "cat", "don't", "42"], rng.normal(size=(4, 5)).astype(np.float32))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    wv = vectors()
    path = tmp_path / "sub" / "vectors.txt"
    wv.save(path)
    lines = path.read_text().splitlines()
    assert lines[0] == "4 5" and lines[2].startswith("cat ") and len(lines) == 5
    assert all(len(v.split(".")[1]) == 6 for v in lines[1].split()[1:])
    back = WordVectors.load(path)
    assert back.words == wv.words and back.dim == 5 and len(back) == 4
    np.testing.assert_allclose(back.vectors, wv.vectors, atol=5e-7 + 1e-7, rtol=0)
    again = tmp_path / "again.txt"
    back.save(again)
    assert again.read_bytes() == path.read_bytes()
    assert [p.name for p in path.parent.iterdir()] == ["vectors.txt"]  # no temporary left


def test_load_reads_the_c_tool_gensim_and_glove_layouts(tmp_path: Path) -> None:
    c_tool = tmp_path / "c.txt"  # the C tool ends each line with a space and starts with </s>
    c_tool.write_text("2 3\n</s> 0.1 0.2 0.3 \nword -1 2 3.5 \n")
    wv = WordVectors.load(c_tool)
    assert wv.words == ["</s>", "word"]
    np.testing.assert_allclose(wv["word"], [-1, 2, 3.5])
    glove = tmp_path / "glove.txt"
    glove.write_text("the 0.5 0.25\nof 1 2\n")
    assert WordVectors.load(glove).words == ["the", "of"] and WordVectors.load(glove).dim == 2


@pytest.mark.parametrize("body, where, what", [
    ("2 3\na 1 2 3\nb 1 x 3\n", 3, "not a number"),
    ("2 3\na 1 2 3\nb 1 2\n", 3, "3 values, got 2"),
    ("2 3\na 1 2 3\nb 1 2 3 4\n", 3, "3 values, got 4"),
    ("3 3\na 1 2 3\nb 1 2 3\n", 1, "header says 3 words, the file has 2"),
    ("2 3\na 1 2 3\na 1 2 3\n", 3, "again"),
    ("", 1, "header"),
])
def test_load_names_the_file_and_line_of_a_malformed_file(tmp_path: Path, body: str,
                                                          where: int, what: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(body)
    with pytest.raises(DataError) as err:
        WordVectors.load(path)
    assert f"{path}:{where}:" in str(err.value) and what in str(err.value), err.value


def test_load_refuses_binary_and_missing_files(tmp_path: Path) -> None:
    binary = tmp_path / "vectors.bin"
    binary.write_bytes(b"2 3\na \xff\xfe\x00\x01")
    with pytest.raises(DataError, match="binary"):
        WordVectors.load(binary)
    with pytest.raises(DataError, match="no such file"):
        WordVectors.load(tmp_path / "absent.txt")


def test_most_similar_ranks_by_cosine() -> None:
    wv = vectors(1)
    near = wv.most_similar("cat", k=10)
    assert [w for w, _ in near if w == "cat"] == [] and len(near) == 3
    unit = wv.vectors / np.linalg.norm(wv.vectors, axis=1, keepdims=True)
    expected = {w: float(unit[wv.index[w]] @ unit[wv.index["cat"]]) for w in wv.words}
    for word, cosine in near:
        assert cosine == pytest.approx(expected[word], abs=1e-6)
    assert [c for _, c in near] == sorted((c for _, c in near), reverse=True)
    with pytest.raises(DataError, match="'zebra' is not in the vocabulary") as err:
        wv.most_similar("zebra")
    assert isinstance(err.value, KeyError) and "zebra" in str(err.value)
    with pytest.raises(KeyError):
        wv["zebra"]
