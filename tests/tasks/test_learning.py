"""A tiny Transformer must actually learn: reversing random sequences, end to end."""

from __future__ import annotations

import random

import torch

from seqformer.data.batching import BatchStream, collate_pairs
from seqformer.decoding.search import greedy_search
from seqformer.models.seq2seq import Seq2Seq, Seq2SeqConfig
from seqformer.training.trainer import TrainConfig, Trainer


def reverse_data(n: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    rng = random.Random(seed)
    src = [[rng.randrange(4, 14) for _ in range(rng.randint(3, 8))] for _ in range(n)]
    return src, [list(reversed(s)) for s in src]


def test_tiny_transformer_learns_to_reverse(tmp_path) -> None:
    torch.manual_seed(0)
    src, tgt = reverse_data(4000, seed=1)
    config = Seq2SeqConfig(src_vocab_size=14, tgt_vocab_size=14, d_model=64, heads=4, layers=2,
                           ffn_dim=128, dropout=0.0, max_len=16, label_smoothing=0.0)
    model = Seq2Seq(config)
    train_config = TrainConfig(max_steps=1000, lr=2e-3, schedule="cosine", warmup_steps=100,
                               eval_every=10_000, save_every=0, log_every=100, progress=False,
                               device="cpu")
    Trainer(model, train_config, BatchStream(src, tgt, 1200, seed=0), tmp_path).train()

    test_src, test_tgt = reverse_data(300, seed=99)
    model.eval()
    batch = collate_pairs(test_src, None, list(range(len(test_src))))
    hyps = greedy_search(model, batch.src, max_length=12)
    exact = sum(h.tokens == t for h, t in zip(hyps, test_tgt)) / len(test_tgt)
    assert exact >= 0.99, f"exact match {exact:.3f}"
