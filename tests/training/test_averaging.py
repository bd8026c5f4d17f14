"""Checkpoint averaging: the exact mean, loud mismatches, bounded disk use, a loadable model."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from test_trainer import Classifier, Stream, config, make_data

from seqformer.cli import main
from seqformer.errors import CheckpointError
from seqformer.training.averaging import average_checkpoints, checkpoint_paths
from seqformer.training.checkpoint import read_weights, save_weights
from seqformer.training.trainer import Trainer


def test_average_of_two_state_dicts_is_the_exact_mean(tmp_path: Path) -> None:
    a = {"w": torch.randn(3, 4), "b": torch.randn(4).to(torch.float16)}
    b = {"w": torch.randn(3, 4), "b": torch.randn(4).to(torch.float16)}
    save_weights(a, tmp_path / "a.safetensors")
    save_weights(b, tmp_path / "b.safetensors")
    mean = average_checkpoints([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    for key in a:
        expected = ((a[key].double() + b[key].double()) / 2).to(a[key].dtype)
        assert mean[key].dtype == a[key].dtype
        assert torch.equal(mean[key], expected), key
    same = average_checkpoints([tmp_path / "a.safetensors"] * 3)
    assert all(torch.equal(same[k], a[k]) for k in a)


@pytest.mark.parametrize("other, fragment", [
    ({"w": torch.zeros(3, 4)}, "'b' of"),
    ({"w": torch.zeros(3, 5), "b": torch.zeros(4)}, "shape (3, 5)"),
    ({"w": torch.zeros(3, 4), "b": torch.zeros(4), "c": torch.zeros(1)}, "'c' is not in"),
])
def test_mismatched_checkpoints_are_an_error(tmp_path: Path, other, fragment) -> None:
    save_weights({"w": torch.ones(3, 4), "b": torch.ones(4)}, tmp_path / "a.safetensors")
    save_weights(other, tmp_path / "b.safetensors")
    with pytest.raises(CheckpointError, match="only checkpoints of the same model") as info:
        average_checkpoints([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    assert fragment in str(info.value)


def test_trainer_keeps_exactly_the_newest_checkpoints(tmp_path: Path) -> None:
    model = Classifier(seed=0)
    cfg = config(max_steps=12, save_every=2, keep_checkpoints=3)
    Trainer(model, cfg, Stream(*make_data()), tmp_path).train()
    names = [p.name for p in checkpoint_paths(tmp_path)]
    assert names == ["step-0000008.safetensors", "step-0000010.safetensors",
                     "step-0000012.safetensors"]
    final = read_weights(tmp_path / "checkpoints" / names[-1])
    assert all(torch.equal(final[k], v) for k, v in model.state_dict().items())
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))


def test_no_checkpoints_are_kept_by_default(tmp_path: Path) -> None:
    Trainer(Classifier(seed=0), config(), Stream(*make_data()), tmp_path).train()
    assert not (tmp_path / "checkpoints").exists()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("average")
    rng = random.Random(1)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 6)))
             for _ in range(300)]
    (root / "train.tsv").write_text("".join(f"{w}\t{' '.join(reversed(w))}\n" for w in words))
    recipe = root / "tiny.yaml"
    recipe.write_text(f"""
name: tiny
data: {{corpus: files, train: {root / 'train.tsv'}, batch_tokens: 400}}
tokenizer: {{source: char, target: word}}
model: {{d_model: 32, heads: 2, layers: 1, ffn_dim: 64, dropout: 0.0, max_len: 16}}
train: {{max_steps: 120, lr: 0.003, warmup_steps: 10, eval_every: 60, save_every: 10,
         keep_checkpoints: 3, progress: false, device: cpu}}
""")
    out = root / "run"
    assert main(["train", str(recipe), "--out", str(out)]) == 0
    return out


def test_averaged_run_loads_and_transduces(run: Path, tmp_path: Path, capsys) -> None:
    from seqformer.tasks.transduction import Transducer

    assert len(checkpoint_paths(run)) == 3
    out = tmp_path / "avg"
    assert main(["average", str(run), "--last", "3", "--out", str(out)]) == 0
    assert "averaged 3 checkpoints" in capsys.readouterr().out
    for name in ("config.json", "recipe.yaml", "model.safetensors",
                 "tokenizer/source/tokenizer.json", "tokenizer/target/tokenizer.json"):
        assert (out / name).is_file(), name
    transducer = Transducer.load(out)
    (result,) = transducer.transduce(["abc"])
    assert result.texts[0].strip()
    expected = average_checkpoints(checkpoint_paths(run))
    loaded = transducer.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in expected.items())


def test_too_few_checkpoints_is_a_one_line_error(run: Path, tmp_path: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["average", str(run), "--last", "5", "--out", str(tmp_path / "avg")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "but 3 exist" in err and "train.keep_checkpoints" in err
    assert not (tmp_path / "avg").exists()
