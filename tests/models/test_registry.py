"""``model.kind`` picks the encoder-decoder; ``family`` in config.json picks the loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from seqformer.errors import CheckpointError, ConfigError
from seqformer.models.gpt import GPT, GPTConfig
from seqformer.models.registry import build_seq2seq, load_seq2seq, seq2seq_config
from seqformer.models.rnn import RNNSeq2Seq, RNNSeq2SeqConfig
from seqformer.models.seq2seq import Seq2Seq, Seq2SeqConfig


def test_kind_picks_the_config_and_the_model() -> None:
    transformer = seq2seq_config({"d_model": 16, "heads": 2}, 9, 10)
    assert isinstance(transformer, Seq2SeqConfig) and transformer.tgt_vocab_size == 10
    assert isinstance(seq2seq_config({"kind": "transformer"}, 9, 9), Seq2SeqConfig)
    gru = seq2seq_config({"kind": "gru", "attention": "luong-dot"}, 9, 10)
    assert isinstance(gru, RNNSeq2SeqConfig) and (gru.kind, gru.score) == ("gru", "dot")
    assert isinstance(build_seq2seq(gru), RNNSeq2Seq)
    assert isinstance(build_seq2seq(transformer), Seq2Seq)
    with pytest.raises(ConfigError, match="model.kind='cnn'"):
        seq2seq_config({"kind": "cnn"}, 9, 9)
    with pytest.raises(ConfigError, match="attention"):
        seq2seq_config({"attention": "bahdanau"}, 9, 9)  # not a Transformer field


def test_load_dispatches_on_family(tmp_path: Path) -> None:
    build_seq2seq(seq2seq_config({"kind": "lstm", "hidden_size": 8}, 9, 9)).save(tmp_path / "r")
    build_seq2seq(seq2seq_config({"d_model": 8, "heads": 2}, 9, 9)).save(tmp_path / "t")
    GPT(GPTConfig(vocab_size=9, d_model=8, heads=2, layers=1, ffn_dim=8)).save(tmp_path / "g")
    assert isinstance(load_seq2seq(tmp_path / "r"), RNNSeq2Seq)
    assert isinstance(load_seq2seq(tmp_path / "t"), Seq2Seq)
    with pytest.raises(CheckpointError, match="gpt model, not an encoder-decoder"):
        load_seq2seq(tmp_path / "g")


def test_bundled_lstm_g2p_recipe_matches_the_transformer_size() -> None:
    """Baselines are compared at a similar parameter count (vocab sizes of CMUdict's)."""
    from seqformer.recipe import load_recipe

    sizes = [build_seq2seq(load_recipe(name).model_config(32, 75)).num_parameters()
             for name in ("g2p-cmudict-quick", "g2p-cmudict-lstm")]
    assert isinstance(load_recipe("g2p-cmudict-lstm").model_config(32, 75), RNNSeq2SeqConfig)
    assert abs(sizes[1] - sizes[0]) / sizes[0] < 0.1, sizes
