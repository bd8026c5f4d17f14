"""A tiny Transformer must actually learn to reverse random sequences, and its attention must
show how: each output token looks at the mirrored source position (an anti-diagonal chart)."""

from __future__ import annotations

import random

import pytest
import torch

from seqformer.data.batching import BatchStream, collate_pairs
from seqformer.data.tokenizer import SPECIAL_TOKENS, WordTokenizer
from seqformer.decoding.search import greedy_search
from seqformer.models.seq2seq import Seq2Seq, Seq2SeqConfig
from seqformer.tasks.transduction import Transducer
from seqformer.training.trainer import TrainConfig, Trainer
from seqformer.viz.attention import attention_maps, draw, html_report, save_png

LETTERS = list("abcdefghij")  # ids 4..13 after the four special tokens


def reverse_data(n: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    rng = random.Random(seed)
    src = [[rng.randrange(4, 14) for _ in range(rng.randint(3, 8))] for _ in range(n)]
    return src, [list(reversed(s)) for s in src]


@pytest.fixture(scope="module")
def reverser(tmp_path_factory) -> Seq2Seq:
    torch.manual_seed(0)
    src, tgt = reverse_data(4000, seed=1)
    config = Seq2SeqConfig(src_vocab_size=14, tgt_vocab_size=14, d_model=64, heads=4, layers=2,
                           ffn_dim=128, dropout=0.0, max_len=16, label_smoothing=0.0)
    model = Seq2Seq(config)
    train_config = TrainConfig(max_steps=1000, lr=2e-3, schedule="cosine", warmup_steps=100,
                               eval_every=10_000, save_every=0, log_every=100, progress=False,
                               device="cpu")
    Trainer(model, train_config, BatchStream(src, tgt, 1200, seed=0),
            tmp_path_factory.mktemp("reverse")).train()
    return model.eval()


def test_tiny_transformer_learns_to_reverse(reverser: Seq2Seq) -> None:
    test_src, test_tgt = reverse_data(300, seed=99)
    batch = collate_pairs(test_src, None, list(range(len(test_src))))
    hyps = greedy_search(reverser, batch.src, max_length=12)
    exact = sum(h.tokens == t for h, t in zip(hyps, test_tgt)) / len(test_tgt)
    assert exact >= 0.99, f"exact match {exact:.3f}"


def test_cross_attention_of_the_reverser_is_anti_diagonal(reverser: Seq2Seq, tmp_path) -> None:
    tokenizer = WordTokenizer(SPECIAL_TOKENS + LETTERS)
    transducer = Transducer(reverser, tokenizer, tokenizer)
    rng = random.Random(5)
    hits = total = 0
    for _ in range(20):
        word = [rng.choice(LETTERS) for _ in range(rng.randint(4, 8))]
        maps = attention_maps(transducer, " ".join(word))
        assert maps.output == " ".join(reversed(word))
        cross = maps.select("cross", -1, None)  # the default chart: last layer, mean of heads
        n = len(word)
        assert cross.shape == (n + 1, n)  # outputs + </s> by source tokens
        torch.testing.assert_close(cross.sum(-1), torch.ones(n + 1))
        decoder = maps.select("decoder", 0, 0)
        assert decoder.triu(1).abs().max() == 0  # no output looked at the future
        hits += sum(int(cross[t].argmax()) == n - 1 - t for t in range(n))
        total += n
    assert hits / total >= 0.8, f"only {hits}/{total} outputs peak on the mirrored source"

    png = save_png(draw(maps, "cross", grid=True, dpi=50), tmp_path / "grid.png")
    import matplotlib.image

    height, width = matplotlib.image.imread(png).shape[:2]
    assert width > height > 0  # 2 layers x 4 heads: wider than tall
    images = html_report(maps, tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert images == 3 * 2 * (4 + 1) == page.count("<img ")
    assert "data:image/png;base64," in page and maps.output in page
