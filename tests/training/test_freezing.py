"""Freezing by name pattern: frozen weights never move, typos fail, resume still fits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_trainer import Classifier, Stream, config, make_data

from seqformer.errors import ConfigError
from seqformer.recipe import recipe_from_dict
from seqformer.training.freezing import freeze_parameters, parameter_table
from seqformer.training.trainer import Trainer


def test_frozen_parameters_do_not_change_and_the_rest_do(tmp_path: Path, capsys) -> None:
    model = Classifier(seed=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Trainer(model, config(freeze=["net.0.*"]), Stream(*make_data()), tmp_path).train()
    after = model.state_dict()
    assert torch.equal(after["net.0.weight"], before["net.0.weight"])
    assert torch.equal(after["net.0.bias"], before["net.0.bias"])
    assert not torch.equal(after["net.3.weight"], before["net.3.weight"])
    table = capsys.readouterr().err
    assert "trainable" in table and "frozen" in table
    # net.0 has 4*16+16 = 80 frozen values, net.3 has 16*3+3 = 51 trainable ones.
    assert any(line.split() == ["total", "51", "80"] for line in table.splitlines())


def test_a_pattern_matching_nothing_names_the_pattern_and_valid_names() -> None:
    with pytest.raises(ConfigError, match=r"'encoder\.\*' matches no parameter.*net\.0\.weight"):
        freeze_parameters(Classifier(seed=0), ["net.0.*", "encoder.*"])


def test_bracket_patterns_and_the_table_on_a_real_model() -> None:
    from seqformer.models.seq2seq import Seq2Seq, Seq2SeqConfig

    model = Seq2Seq(Seq2SeqConfig(src_vocab_size=10, tgt_vocab_size=12, d_model=16, heads=2,
                                  layers=3, ffn_dim=32))
    frozen = freeze_parameters(model, ["encoder.layers.[0-1].*", "src_embed.*"])
    assert "encoder.layers.1.ffn.linear1.weight" in frozen and "src_embed.weight" in frozen
    assert not any(name.startswith("encoder.layers.2.") for name in frozen)
    assert model.encoder.layers[2].ffn.linear1.weight.requires_grad
    table = parameter_table(model)
    assert "src_embed" in table.split("\n", 2)[1] and table.splitlines()[-1].startswith("total")


def test_resume_with_freeze_continues_exactly(tmp_path: Path) -> None:
    cfg = config(max_steps=12, save_every=3, freeze=["net.3.bias"])
    straight = Classifier(seed=0)
    Trainer(straight, cfg, Stream(*make_data()), tmp_path / "a").train()

    Trainer(Classifier(seed=0), config(max_steps=6, save_every=3, freeze=["net.3.bias"]),
            Stream(*make_data()), tmp_path / "b").train()
    resumed = Classifier(seed=1)
    Trainer(resumed, cfg, Stream(*make_data()), tmp_path / "b").train(resume=True)
    for key, value in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[key], value), key


def test_recipe_yaml_accepts_the_new_train_fields() -> None:
    import yaml

    data = yaml.safe_load("""
data: {corpus: files, train: x.tsv}
train: {keep_checkpoints: 5, freeze: ["encoder.layers.[0-3].*", "src_embed.*"]}
""")
    train = recipe_from_dict(data, "test.yaml").train
    assert train.keep_checkpoints == 5
    assert train.freeze == ["encoder.layers.[0-3].*", "src_embed.*"]
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        recipe_from_dict({**data, "train": {"keep_checkpoints": -1}}, "test.yaml")
