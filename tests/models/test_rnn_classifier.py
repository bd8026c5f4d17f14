"""The recurrent sentence classifier: packed sequences make padding invisible, each pooling
reads the states it says (checked against torch.nn.LSTM / GRU run on the unpadded sentence),
and it learns a pattern that can sit anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_cnn import motif_accuracy

from seqformer.data.batching import _pad
from seqformer.errors import CheckpointError, ConfigError
from seqformer.models.bert import EncoderBatch
from seqformer.models.rnn_classifier import RNNClassifier, RNNClassifierConfig

ROWS = [[5, 6, 7, 8, 9, 10], [4, 5, 6], [11]]


def tiny(**overrides) -> RNNClassifier:
    torch.manual_seed(0)
    base = dict(vocab_size=14, num_labels=3, embed_dim=8, hidden_size=6, dropout=0.0,
                max_len=32)
    base.update(overrides)
    return RNNClassifier(RNNClassifierConfig(**base)).eval()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("pooling", ["max", "mean", "last"])
def test_padding_is_invisible_and_pooling_reads_the_right_states(cell: str, pooling: str
                                                                 ) -> None:
    model = tiny(cell=cell, pooling=pooling, layers=2, bidirectional=True)
    batched = model.pooled(_pad(ROWS))
    for i, row in enumerate(ROWS):
        ids = torch.tensor([row])
        states, last = model.rnn(model.embed(ids))  # no padding at all: the reference
        h = last[0] if cell == "lstm" else last
        want = {"max": states[0].amax(0), "mean": states[0].mean(0),
                "last": torch.cat([h[-2, 0], h[-1, 0]])}[pooling]
        torch.testing.assert_close(batched[i], want, atol=1e-6, rtol=1e-5)


def test_learns_a_motif_anywhere_in_the_sequence() -> None:
    accuracy = motif_accuracy(tiny(num_labels=2, cell="lstm", embed_dim=16, hidden_size=16))
    assert accuracy >= 0.95, accuracy


def test_save_load_and_config_errors(tmp_path: Path) -> None:
    model = tiny(num_labels=2, cell="gru", pooling="last")
    model.labels = ["neg", "pos"]
    model.save(tmp_path)
    loaded = RNNClassifier.load(tmp_path)
    assert loaded.labels == ["neg", "pos"] and loaded.config == model.config
    ids = _pad(ROWS)
    torch.testing.assert_close(loaded.logits(ids), model.logits(ids), atol=0, rtol=0)
    (tmp_path / "config.json").write_text('{"family": "cnn"}')
    with pytest.raises(CheckpointError, match="not a recurrent classifier"):
        RNNClassifier.load(tmp_path)
    with pytest.raises(ConfigError, match="model.kind='transformer'"):
        RNNClassifierConfig(vocab_size=9, cell="transformer")
    with pytest.raises(ConfigError, match="model.pooling"):
        RNNClassifierConfig(vocab_size=9, pooling="first")
    with pytest.raises(ValueError, match="exceeds model.max_len"):
        tiny(max_len=4).logits(torch.ones(1, 5, dtype=torch.long) * 5)


def test_a_tagger_labels_every_token_from_its_own_states() -> None:
    model = tiny(task="tag", cell="gru", layers=1)
    assert model.head_kind == "tag"
    batched = model.logits(_pad(ROWS))
    assert batched.shape == (3, 6, 3)
    for i, row in enumerate(ROWS):  # padding is invisible to the real tokens
        torch.testing.assert_close(batched[i, :len(row)],
                                   model.logits(torch.tensor([row]))[0], atol=1e-6, rtol=1e-5)
    labels = torch.full((3, 6), -100)
    labels[0, :6] = 1
    out = model(EncoderBatch(_pad(ROWS), torch.zeros(1), labels))
    assert out.loss > 0 and out.logits.shape == (3, 6, 3)
    with pytest.raises(ConfigError, match="classify or tag"):
        RNNClassifierConfig(vocab_size=9, task="qa")
