"""Ensemble decoding: a model with itself is the model; members combine by the stated rule."""

from __future__ import annotations

import math

import pytest
import torch

from seqformer.data.batching import collate_pairs
from seqformer.decoding.ensemble import Ensemble
from seqformer.decoding.search import beam_search, greedy_search
from seqformer.models.seq2seq import Seq2Seq, Seq2SeqConfig


def model(seed: int, max_len: int = 30) -> Seq2Seq:
    torch.manual_seed(seed)
    m = Seq2Seq(Seq2SeqConfig(src_vocab_size=16, tgt_vocab_size=16, d_model=32, heads=4,
                              layers=1, ffn_dim=64, dropout=0.0, max_len=max_len)).eval()
    with torch.no_grad():
        m.output.weight[m.eos_id].mul_(4.0)  # outputs of varying length
    return m


SOURCES = collate_pairs([[5, 6, 7, 8], [9, 10], [4, 11, 12, 13, 14, 15]], None, [0, 1, 2]).src


@pytest.mark.parametrize("combine", ["logprob", "prob"])
def test_ensemble_of_a_model_with_itself_equals_the_model(combine: str) -> None:
    m = model(0)
    twin = Ensemble([m, m], combine)
    alone = beam_search(m, SOURCES, beam=4, max_length=12, nbest=3)
    paired = beam_search(twin, SOURCES, beam=4, max_length=12, nbest=3)
    assert [[h.tokens for h in n] for n in paired] == [[h.tokens for h in n] for n in alone]
    for n_a, n_p in zip(alone, paired):
        for a, p in zip(n_a, n_p):
            assert math.isclose(a.score, p.score, rel_tol=1e-5, abs_tol=1e-5)
    g_alone = greedy_search(m, SOURCES, max_length=12)
    g_pair = greedy_search(twin, SOURCES, max_length=12)
    assert [h.tokens for h in g_alone] == [h.tokens for h in g_pair]


def test_members_combine_by_the_documented_rules() -> None:
    a, b = model(0), model(1)
    tokens = torch.full((SOURCES.shape[0],), a.bos_id)
    with torch.no_grad():
        lp_a, _ = a.step(tokens, a.start(SOURCES))
        lp_b, _ = b.step(tokens, b.start(SOURCES))
        geo, _ = Ensemble([a, b], "logprob").step(tokens, Ensemble([a, b]).start(SOURCES))
        mix, _ = Ensemble([a, b], "prob").step(tokens, Ensemble([a, b]).start(SOURCES))
    assert torch.allclose(geo, ((lp_a + lp_b) / 2).log_softmax(-1), atol=1e-6)
    assert torch.allclose(mix.exp(), (lp_a.exp() + lp_b.exp()) / 2, atol=1e-6)
    for combined in (geo, mix):  # proper distributions, so hypothesis log-probs stay honest
        assert torch.allclose(combined.exp().sum(-1), torch.ones(3), atol=1e-5)
    assert not torch.allclose(geo, lp_a, atol=1e-3)  # the second member really counts


def test_ensemble_beams_reorder_every_member_and_use_the_shortest_max_len() -> None:
    a, b = model(0, max_len=30), model(1, max_len=20)
    ens = Ensemble([a, b])
    assert ens.config.max_len == 20
    out = beam_search(ens, SOURCES, beam=3, max_length=10)
    assert all(len(n[0].tokens) < 10 for n in out)


def test_members_must_agree_on_special_ids() -> None:
    a, b = model(0), model(1)
    b.eos_id = 3
    with pytest.raises(ValueError, match="eos_id"):
        Ensemble([a, b])
