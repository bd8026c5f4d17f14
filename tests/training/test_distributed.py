"""Data-parallel training: N processes on one global batch make the same update as one process.

The end-to-end test runs ``seqformer train --nproc 2`` (torchrun, gloo on CPU) and compares the
weights with a single-process run of the same recipe.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import torch

from seqformer.data.batching import collate_pairs
from seqformer.training.checkpoint import read_weights
from seqformer.training.distributed import Context, shard


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


def test_two_processes_train_like_one(tmp_path: Path) -> None:
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
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    for name, extra in (("one", []), ("two", ["--nproc", "2"])):
        done = subprocess.run([sys.executable, "-m", "seqformer", "train", str(recipe), "--out",
                               str(tmp_path / name), *extra], env=env, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
    one = read_weights(tmp_path / "one" / "last" / "model.safetensors")
    two = read_weights(tmp_path / "two" / "last" / "model.safetensors")
    assert one.keys() == two.keys()
    for key in one:
        if key.endswith("k_proj.bias"):
            # A key bias shifts every score of a query equally, which softmax ignores: its true
            # gradient is 0, and Adam scales the rounding noise left in it up to full-size
            # steps, so it wanders differently in any two runs without changing any output.
            continue
        torch.testing.assert_close(two[key], one[key], rtol=1e-4, atol=1e-5)
    logs = [(tmp_path / n / "log.jsonl").read_text().splitlines() for n in ("one", "two")]
    assert len(logs[0]) == len(logs[1])  # rank 0 alone wrote the log
    assert not (tmp_path / "two" / "last.partial").exists()
