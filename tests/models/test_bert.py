from __future__ import annotations

import pytest
import torch

from seqformer.errors import ConfigError
from seqformer.models.bert import IGNORE, BERTConfig, BERTModel, EncoderBatch
from seqformer.models.heads import decode_spans


@pytest.fixture(autouse=True)
def _one_thread():
    """The test machine's 2 cores are shared: two torch threads contend and run ~30x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


SMALL = dict(vocab_size=30, d_model=32, heads=4, layers=2, ffn_dim=64, max_len=16,
             dropout=0.0, attention_dropout=0.0)


def model(head="mlm", labels=None, **kw):
    torch.manual_seed(0)
    return BERTModel(BERTConfig(**{**SMALL, **kw}), head, labels).eval()


@torch.no_grad()
def test_bidirectional_a_later_token_changes_earlier_states():
    m = model()
    ids = torch.tensor([[1, 7, 8, 9, 10, 2]])
    changed = ids.clone()
    changed[0, 4] = 11
    a, b = m.bert(ids), m.bert(changed)
    assert (a[0, 1] - b[0, 1]).abs().max() > 1e-4  # position 1 sees position 4


@torch.no_grad()
def test_padding_invariance():
    m = model()
    ids = torch.tensor([[1, 7, 8, 9, 2]])
    types = torch.tensor([[0, 0, 0, 1, 1]])
    alone = m.bert(ids, types)
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], 1)
    padded_types = torch.cat([types, torch.zeros(1, 4, dtype=torch.long)], 1)
    other = torch.tensor([[1, 12, 13, 14, 15, 16, 17, 18, 2]])
    both = m.bert(torch.cat([padded, other]), torch.cat([padded_types, torch.zeros_like(other)]))
    assert torch.allclose(both[0, :5], alone[0], atol=1e-5)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="positional"):
        BERTConfig(**{**SMALL, "positional": "sinusoidal"})
    with pytest.raises(ConfigError, match="2 labels"):
        BERTModel(BERTConfig(**SMALL), "classify", ["only"])


def fit(m: BERTModel, batch: EncoderBatch, steps: int = 60) -> tuple[float, float]:
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    first = float(m(batch).loss.detach())
    for _ in range(steps):
        opt.zero_grad()
        loss = m(batch).loss
        loss.backward()
        opt.step()
    m.eval()
    with torch.no_grad():
        return first, float(m(batch).loss)


def synthetic(n=32, length=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 30, (n, length), generator=g)
    ids[:, 0] = 1
    ids[:, -1] = 2
    return ids


def test_classification_head_learns_which_token_is_present():
    ids = synthetic()
    ids[ids == 7] = 8
    ids[::2, 3] = 7
    labels = (ids[:, 1:-1] == 7).any(1).long()
    m = model("classify", ["no", "yes"])
    first, last = fit(m, EncoderBatch(ids, torch.zeros_like(ids), labels))
    assert last < 0.1 < first
    assert torch.equal(m.logits(ids).argmax(-1), labels)


def test_token_classification_head_learns_tags():
    ids = synthetic()
    tags = (ids >= 17).long()  # tag = which half of the vocabulary
    tags[:, 0] = IGNORE
    tags[:, -1] = IGNORE
    m = model("tag", ["O", "B-X"])
    first, last = fit(m, EncoderBatch(ids, torch.zeros_like(ids), tags))
    assert last < 0.1 < first


def test_span_head_learns_where_the_answer_is():
    ids = synthetic()
    start = torch.randint(1, 5, (32,), generator=torch.Generator().manual_seed(1))
    ids[torch.arange(32), start] = 9  # the answer starts at the 9 and spans two tokens
    ids[torch.arange(32), start + 1] = 8
    spans = torch.stack([start, start + 1], 1)
    m = model("qa")
    first, last = fit(m, EncoderBatch(ids, torch.zeros_like(ids), spans), steps=80)
    assert last < 0.2 < first


def test_mlm_head_learns_to_copy_a_paired_token():
    ids = synthetic()
    ids[:, 4] = ids[:, 2]  # token 4 always repeats token 2
    labels = torch.full_like(ids, IGNORE)
    labels[:, 4] = ids[:, 4]
    inputs = ids.clone()
    inputs[:, 4] = 4  # [MASK]
    m = model("mlm")
    first, last = fit(m, EncoderBatch(inputs, torch.zeros_like(ids), labels), steps=100)
    assert last < 0.3 < first


def test_span_decoding_is_always_well_formed():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        start, end = torch.randn(4, 12, generator=g), torch.randn(4, 12, generator=g)
        allowed = torch.zeros(4, 12, dtype=torch.bool)
        allowed[:, 5:10] = True  # the passage
        allowed[3] = False  # no passage at all
        spans = decode_spans(start, end, allowed, max_answer_len=3)
        for s, e in spans[:3]:
            assert 5 <= s <= e < 10 and e - s < 3
        assert spans[3] == (-1, -1)
    # The best pair is found even when the best end lies before the best start.
    start = torch.tensor([[-5.0, -5, 5, 0, 0]])
    end = torch.tensor([[9.0, -5, -5, 1, 0]])
    assert decode_spans(start, end, torch.ones(1, 5, dtype=torch.bool)) == [(2, 3)]


def test_save_load_round_trip(tmp_path):
    m = model("classify", ["a", "b", "c"])
    m.save(tmp_path)
    back = BERTModel.load(tmp_path)
    assert back.labels == ["a", "b", "c"] and back.head_kind == "classify"
    ids = synthetic(4)
    assert torch.equal(back.logits(ids), m.logits(ids))
