"""The CNN sentence classifier: padding never changes its output, and it learns a pattern
that can sit anywhere in the sequence (what max-over-time pooling is for)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from seqformer.data.batching import _pad
from seqformer.errors import CheckpointError, ConfigError
from seqformer.models.bert import EncoderBatch
from seqformer.models.cnn import CNNClassifier, CNNClassifierConfig


def tiny(**overrides) -> CNNClassifier:
    torch.manual_seed(0)
    base = dict(vocab_size=14, num_labels=3, embed_dim=8, channels=6, kernel_sizes=[2, 3],
                dropout=0.0, max_len=32)
    base.update(overrides)
    return CNNClassifier(CNNClassifierConfig(**base)).eval()


def test_padding_does_not_change_the_output() -> None:
    model = tiny()
    rows = [[5, 6, 7, 8, 9, 10], [4, 5, 6], [11]]
    batched = model.logits(_pad(rows))
    for i, row in enumerate(rows):
        torch.testing.assert_close(batched[i], model.logits(torch.tensor([row]))[0],
                                   atol=1e-6, rtol=1e-5)


def motif_data(n: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """Label 1 iff the bigram (5, 6) occurs, anywhere; negatives never contain it."""
    rng = random.Random(seed)
    rows, labels = [], []
    for i in range(n):
        while True:
            row = [rng.randrange(4, 14) for _ in range(rng.randint(4, 14))]
            if not any(a == 5 and b == 6 for a, b in zip(row, row[1:])):
                break
        if i % 2:
            at = rng.randrange(len(row) - 1)
            row[at : at + 2] = [5, 6]
        rows.append(row)
        labels.append(i % 2)
    return rows, labels


def motif_accuracy(model: torch.nn.Module) -> float:
    """Train a classifier 150 Adam steps on :func:`motif_data` (one thread: the conftest
    fixture) and return its accuracy on 400 held-out rows."""
    model.train()
    rows, labels = motif_data(2000, 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(150):
        idx = [(step * 64 + j) % len(rows) for j in range(64)]
        batch = EncoderBatch(_pad([rows[i] for i in idx]), torch.zeros(1),
                             torch.tensor([labels[i] for i in idx]))
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    test_rows, test_labels = motif_data(400, 99)
    predicted = model.eval().logits(_pad(test_rows)).argmax(-1)
    return float((predicted == torch.tensor(test_labels)).float().mean())


def test_learns_a_motif_anywhere_in_the_sequence() -> None:
    accuracy = motif_accuracy(tiny(num_labels=2, channels=16, embed_dim=16))
    assert accuracy >= 0.95, accuracy


def test_save_load_and_config_errors(tmp_path: Path) -> None:
    model = CNNClassifier(CNNClassifierConfig(vocab_size=9, num_labels=2, embed_dim=4,
                                              channels=3), labels=["neg", "pos"]).eval()
    model.save(tmp_path)
    loaded = CNNClassifier.load(tmp_path)
    assert loaded.labels == ["neg", "pos"]
    ids = torch.tensor([[4, 5, 6, 7, 8]])
    torch.testing.assert_close(loaded.logits(ids), model.logits(ids), atol=0, rtol=0)
    assert torch.equal(loaded.predict(ids), model.logits(ids).argmax(-1))
    (tmp_path / "config.json").write_text('{"family": "seq2seq"}')
    with pytest.raises(CheckpointError, match="not a CNN"):
        CNNClassifier.load(tmp_path)
    with pytest.raises(ConfigError, match="kernel_sizes"):
        CNNClassifierConfig(vocab_size=9, kernel_sizes=[])
    with pytest.raises(ConfigError, match="label names"):
        CNNClassifier(CNNClassifierConfig(vocab_size=9, num_labels=3), labels=["a", "b"])
