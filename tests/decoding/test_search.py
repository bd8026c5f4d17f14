"""Greedy and beam search: agreement, true scores, canonical stopping."""

from __future__ import annotations

import pytest
import torch

from seqformer.decoding.search import beam_search, greedy_search, length_penalty
from seqformer.models.seq2seq import Seq2Seq, Seq2SeqConfig


def random_model(seed: int = 0) -> Seq2Seq:
    torch.manual_seed(seed)
    config = Seq2SeqConfig(src_vocab_size=12, tgt_vocab_size=9, d_model=16, heads=2, layers=2,
                           ffn_dim=32, dropout=0.0, max_len=40)
    model = Seq2Seq(config).eval()
    with torch.no_grad():  # sharpen the output so hypotheses end at different lengths
        model.output.weight.mul_(6.0)
    return model


SRC = torch.tensor([[5, 6, 7, 8, 9, 4], [4, 5, 6, 0, 0, 0], [10, 11, 0, 0, 0, 0],
                    [7, 7, 7, 7, 0, 0]])


def sequence_log_prob(model: Seq2Seq, src: torch.Tensor, tokens: list[int]) -> float:
    tgt_in = torch.tensor([[model.bos_id] + tokens])
    tgt_out = torch.tensor([tokens + [model.eos_id]])
    with torch.no_grad():
        memory, mask, _ = model.encode(src.unsqueeze(0))
        logits, _ = model.decode(tgt_in, memory, mask)
    return float(logits.log_softmax(-1).gather(-1, tgt_out.unsqueeze(-1)).sum())


def test_beam_one_equals_greedy() -> None:
    model = random_model()
    greedy = greedy_search(model, SRC, max_length=20)
    beam = beam_search(model, SRC, beam=1, max_length=20)
    assert [h.tokens for h in greedy] == [b[0].tokens for b in beam]
    for g, b in zip(greedy, beam):
        assert g.log_prob == pytest.approx(b[0].log_prob, abs=1e-4)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_scores_are_true_sequence_log_probs(alpha: float) -> None:
    model = random_model(1)
    results = beam_search(model, SRC, beam=4, nbest=4, max_length=20, alpha=alpha)
    for i, nbest in enumerate(results):
        assert len(nbest) == 4
        assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
        for hyp in nbest:
            true = sequence_log_prob(model, SRC[i, SRC[i].ne(0)], hyp.tokens)
            assert hyp.log_prob == pytest.approx(true, abs=1e-4)
            expected = true / length_penalty(len(hyp.tokens) + 1, alpha)
            assert hyp.score == pytest.approx(expected, abs=1e-4)


def test_beam_finds_at_least_greedy_score() -> None:
    model = random_model(2)
    greedy = greedy_search(model, SRC, max_length=20)
    beam = beam_search(model, SRC, beam=5, max_length=20)
    for g, b in zip(greedy, beam):
        if g.finished:
            assert b[0].score >= g.log_prob - 1e-5


def test_beam_result_does_not_depend_on_batch() -> None:
    model = random_model(3)
    together = beam_search(model, SRC, beam=3, max_length=15)
    for i in range(SRC.shape[0]):
        alone = beam_search(model, SRC[i:i + 1, :int(SRC[i].ne(0).sum())], beam=3, max_length=15)
        assert alone[0][0].tokens == together[i][0].tokens


def test_max_length_is_respected() -> None:
    model = random_model(4)
    for hyps in beam_search(model, SRC, beam=3, max_length=3):
        assert all(len(h.tokens) <= 2 for h in hyps)
    assert all(len(h.tokens) <= 2 for h in greedy_search(model, SRC, max_length=3))


def test_sharing_the_encoder_side_across_beams_changes_nothing(monkeypatch) -> None:
    from seqformer.models.seq2seq import DecoderState

    model = random_model(3)
    shared = beam_search(model, SRC, beam=4, max_length=12, alpha=0.6, nbest=4)
    monkeypatch.delattr(DecoderState, "select_beams")  # force the copying select
    copied = beam_search(model, SRC, beam=4, max_length=12, alpha=0.6, nbest=4)
    assert [[(h.tokens, h.score) for h in n] for n in shared] == \
        [[(h.tokens, h.score) for h in n] for n in copied]


@pytest.mark.parametrize("search", ["greedy", "beam"])
def test_searches_read_the_device_once_per_step(search: str) -> None:
    """Each read of a device value (``bool(t)``, ``.tolist()``, ``.item()``) makes a GPU host
    wait; between two decoder steps the searches may ask once (has every sentence ended?)."""
    from torch.overrides import TorchFunctionMode

    reads = []

    class CountReads(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name in ("__bool__", "tolist", "item", "nonzero", "__int__", "__float__"):
                reads.append(name)
            return func(*args, **(kwargs or {}))

    model = random_model(5)
    at_step = []
    step = model.step

    def counted_step(tokens, state):
        at_step.append(len(reads))
        return step(tokens, state)

    model.step = counted_step
    with CountReads():
        if search == "greedy":
            greedy_search(model, SRC, max_length=12)
        else:
            beam_search(model, SRC, beam=4, max_length=12, alpha=0.6, nbest=2)
    assert len(at_step) >= 3
    between = [b - a for a, b in zip(at_step, at_step[1:], strict=False)]
    assert max(between) <= 1, between
