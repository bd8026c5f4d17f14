"""The exponential moving average of the weights: its update rule, what it saves, and resume."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_trainer import Classifier, Stream, config, make_data, random_subset_validate
from torch import nn

from seqformer.errors import CheckpointError
from seqformer.training.checkpoint import read_weights
from seqformer.training.ema import EMA, ema_decay
from seqformer.training.trainer import TrainConfig, Trainer


def test_update_rule_with_its_warmup() -> None:
    model = nn.Linear(3, 2)
    ema = EMA(model, decay=0.99)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    expected = dict(start)
    for t in range(30):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        d = ema_decay(0.99, t)
        assert d == min(0.99, (1 + t) / (10 + t))
        expected = {k: d * expected[k] + (1 - d) * v for k, v in model.state_dict().items()}
        ema.update(model)
    for name, value in ema.module.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6)
    assert ema_decay(0.99, 10_000) == 0.99
    assert not any(p.requires_grad for p in ema.module.parameters())


def test_tied_weights_stay_tied_and_buffers_are_copied() -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(5, 4)
            self.out = nn.Linear(4, 5, bias=False)
            self.out.weight = self.embed.weight
            self.register_buffer("table", torch.zeros(3))

    model = Tied()
    ema = EMA(model, 0.5)
    model.table.fill_(7.0)
    ema.update(model)
    assert ema.module.out.weight is ema.module.embed.weight
    assert torch.equal(ema.module.table, model.table)


def test_the_run_saves_and_validates_the_average(tmp_path: Path) -> None:
    seen: list[nn.Module] = []

    def always_better(m: nn.Module) -> dict[str, float]:
        seen.append(m)
        return {"valid_loss": -float(len(seen))}  # every evaluation improves: the last is best

    model = Classifier(seed=0)
    trainer = Trainer(model, config(ema=0.9), Stream(*make_data()), tmp_path, always_better)
    trainer.train()
    assert len(seen) == 3 and all(m is trainer.ema.module for m in seen)
    saved = read_weights(tmp_path / "model.safetensors")
    raw = read_weights(tmp_path / "last" / "model.safetensors")
    average = read_weights(tmp_path / "last" / "ema.safetensors")
    for name, value in trainer.ema.module.state_dict().items():
        assert torch.equal(saved[name], value) and torch.equal(average[name], value), name
    for name, value in model.state_dict().items():
        assert torch.equal(raw[name], value), name
    assert not torch.equal(raw["net.0.weight"], saved["net.0.weight"])


def test_resume_continues_the_average_exactly(tmp_path: Path) -> None:
    straight = Trainer(Classifier(0), config(ema=0.9), Stream(*make_data()), tmp_path / "a",
                       random_subset_validate)
    straight.train()
    Trainer(Classifier(0), config(ema=0.9, max_steps=6), Stream(*make_data()), tmp_path / "b",
            random_subset_validate).train()
    resumed = Trainer(Classifier(5), config(ema=0.9), Stream(*make_data()), tmp_path / "b",
                      random_subset_validate)
    resumed.train(resume=True)
    for (name, p), q in zip(straight.ema.module.state_dict().items(),
                            resumed.ema.module.state_dict().values()):
        assert torch.equal(p, q), name
    assert resumed.ema.updates == 12
    # Turning the average on for a run trained without it is refused, not silently restarted.
    Trainer(Classifier(0), config(max_steps=3), Stream(*make_data()), tmp_path / "c").train()
    with pytest.raises(CheckpointError, match="without train.ema"):
        Trainer(Classifier(0), config(ema=0.9), Stream(*make_data()), tmp_path / "c").train(
            resume=True)


@pytest.mark.parametrize("value", [1.0, -0.1, "x"])
def test_bad_decay_names_the_field(value: object) -> None:
    with pytest.raises(Exception, match="train.ema"):
        TrainConfig(ema=value)
