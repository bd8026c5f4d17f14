"""Data-parallel training: N processes on one global batch make the same update as one process.

The end-to-end test runs ``seqformer train --nproc 2`` (torchrun, gloo on CPU) and compares the
weights with a single-process run of the same recipe.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seqformer.data.batching import collate_pairs
from seqformer.errors import ConfigError
from seqformer.training.checkpoint import read_weights
from seqformer.training.distributed import Context, shard
from seqformer.training.trainer import TrainConfig


def test_shards_split_rows_and_weights_restore_the_global_token_mean() -> None:
    rng = random.Random(0)
    src = [[rng.randrange(4, 9) for _ in range(rng.randint(1, 6))] for _ in range(7)]
    tgt = [[rng.randrange(4, 9) for _ in range(rng.randint(1, 9))] for _ in range(7)]
    batch = collate_pairs(src, tgt, list(range(7)))
    per_token = torch.randn(batch.tgt_out.shape).masked_fill(batch.tgt_out.eq(0), 0.0)
    global_mean = per_token.sum() / batch.n_tgt_tokens
    combined, rows = 0.0, []
    for rank in range(3):
        part, weight = shard(batch, Context(rank, 3, rank))
        rows += part.index.tolist()
        mask = part.tgt_out.ne(0)
        rank_mean = per_token[part.index].sum() / mask.sum()
        combined += weight * rank_mean / 3  # what DDP's gradient averaging computes
    assert sorted(rows) == list(range(7))
    torch.testing.assert_close(torch.as_tensor(combined), global_mean)
    alone, weight = shard(batch, Context())
    assert alone is batch and weight == 1.0
    # More ranks than rows: the idle rank joins with weight 0.
    small = collate_pairs(src[:1], tgt[:1], [0])
    assert shard(small, Context(1, 2, 1))[1] == 0.0


@pytest.fixture(scope="module")
def single_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny recipe and one process's run of it: what every multi-process run must match."""
    tmp_path = tmp_path_factory.mktemp("dist")
    rng = random.Random(3)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 6)))
             for _ in range(300)]
    (tmp_path / "train.tsv").write_text("".join(f"{w}\t{' '.join(reversed(w))}\n"
                                                for w in words))
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text(f"""
data: {{train: {tmp_path / 'train.tsv'}, batch_tokens: 300, valid_decode: 5}}
tokenizer: {{source: char, target: word}}
model: {{d_model: 32, heads: 2, layers: 1, ffn_dim: 64, dropout: 0.0, max_len: 16}}
train: {{max_steps: 12, lr: 0.003, warmup_steps: 4, eval_every: 12, save_every: 6,
         log_every: 4, accumulate: 2, progress: false, device: cpu}}
""")
    _train(recipe, tmp_path / "one")
    return recipe, tmp_path / "one"


def _train(recipe: Path, out: Path, *extra: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    done = subprocess.run([sys.executable, "-m", "seqformer", "train", str(recipe), "--out",
                           str(out), *extra], env=env, capture_output=True, text=True,
                          timeout=300)
    # torchrun's own summary hides the cause: show the ranks' tracebacks and errors too.
    causes = [line for line in done.stderr.splitlines()
              if line.startswith("[rank") or "Error" in line]
    assert done.returncode == 0, "\n".join(causes[-40:]) + "\n" + done.stderr[-2000:]


def _assert_same_weights(run: Path, reference: Path) -> None:
    one = read_weights(reference / "last" / "model.safetensors")
    two = read_weights(run / "last" / "model.safetensors")
    assert one.keys() == two.keys()
    for key in one:
        if key.endswith("k_proj.bias"):
            # A key bias shifts every score of a query equally, which softmax ignores: its true
            # gradient is 0, and Adam scales the rounding noise left in it up to full-size
            # steps, so it wanders differently in any two runs without changing any output.
            continue
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5)


def test_two_processes_train_like_one(single_run: tuple[Path, Path], tmp_path: Path) -> None:
    recipe, one = single_run
    _train(recipe, tmp_path / "two", "--nproc", "2")
    _assert_same_weights(tmp_path / "two", one)
    logs = [(run / "log.jsonl").read_text().splitlines() for run in (one, tmp_path / "two")]
    assert len(logs[0]) == len(logs[1])  # rank 0 alone wrote the log
    assert not (tmp_path / "two" / "last.partial").exists()


def test_fully_sharded_training_matches_one_process_and_resumes(
        single_run: tuple[Path, Path], tmp_path: Path) -> None:
    """FSDP: same update as one process, whole-model checkpoints, and an exact resume."""
    recipe, one = single_run
    run = tmp_path / "fsdp"
    _train(recipe, run, "--nproc", "2", "--set", "train.fsdp=true", "--set", "train.max_steps=6")
    half = read_weights(run / "last" / "model.safetensors")
    # The checkpoint holds whole tensors, shaped like the unsharded model's.
    assert {k: v.shape for k, v in half.items()} == {
        k: v.shape for k, v in read_weights(one / "last" / "model.safetensors").items()}
    _train(recipe, run, "--nproc", "2", "--set", "train.fsdp=true", "--resume")
    _assert_same_weights(run, one)
    # Validation decoded with the gathered weights: the same scores as the single process.
    last = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    ref = [json.loads(line) for line in (one / "log.jsonl").read_text().splitlines()]
    valid = [r["valid"] for r in last if "valid" in r]
    assert valid and valid[-1].keys() == [r["valid"] for r in ref if "valid" in r][-1].keys()
    for name, value in valid[-1].items():
        expected = [r["valid"] for r in ref if "valid" in r][-1][name]
        assert value == pytest.approx(expected, rel=1e-3, abs=1e-3), name


def test_fsdp_refuses_ema() -> None:
    with pytest.raises(ConfigError, match="train.ema cannot be combined with train.fsdp"):
        TrainConfig(fsdp=True, ema=0.999)
