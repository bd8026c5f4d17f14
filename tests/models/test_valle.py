"""VALL-E model: cached AR sampling equals recomputing the prefix, the NAR never reads the
target's codebook of its stage or later, a tiny model fits a tiny set, seeded generation
repeats, save / load round trip, refused shapes."""

from __future__ import annotations

import pytest
import torch

from seqformer.decoding.sampling import make_processors, sample_next
from seqformer.errors import ConfigError
from seqformer.models.valle import VALLE, CodecBatch, VALLEConfig, prefix_lm_mask

K, NQ = 16, 3


def tiny(**kw) -> VALLE:
    torch.manual_seed(0)
    config = VALLEConfig(vocab_size=12, n_q=NQ, codebook_size=K, d_model=32, heads=2,
                         ar_layers=2, nar_layers=2, ffn_dim=64, dropout=0.0, max_text=32,
                         max_frames=64, **kw)
    return VALLE(config).eval()


def batch(seed: int = 0, stage: int = 1) -> CodecBatch:
    """Three examples of different text / prompt / target lengths, padded."""
    g = torch.Generator().manual_seed(seed)
    lt, tp, tt = [4, 7, 5], [3, 6, 4], [5, 2, 8]
    text = torch.zeros(3, max(lt), dtype=torch.long)
    prompt = torch.full((3, NQ, max(tp)), 999, dtype=torch.long)
    target = torch.full((3, NQ, max(tt)), 999, dtype=torch.long)
    for i in range(3):
        text[i, :lt[i]] = torch.randint(4, 12, (lt[i],), generator=g)
        prompt[i, :, :tp[i]] = torch.randint(0, K, (NQ, tp[i]), generator=g)
        target[i, :, :tt[i]] = torch.randint(0, K, (NQ, tt[i]), generator=g)
    return CodecBatch(text, torch.tensor(lt), prompt, torch.tensor(tp), target,
                      torch.tensor(tt), stage)


def test_prefix_mask_text_full_codes_causal() -> None:
    mask = prefix_lm_mask(torch.tensor([2]), 4)[0, 0]
    allowed = mask == 0
    assert allowed.tolist() == [[True, True, False, False], [True, True, False, False],
                                [True, True, True, False], [True, True, True, True]]


def test_cached_ar_equals_full_recompute() -> None:
    model = tiny()
    text = torch.randint(4, 12, (1, 6))
    codes = torch.randint(0, K, (1, 9))
    full = model.ar_logits(text, torch.tensor([6]), codes, torch.tensor([9]))
    state = model.ar_start(text, codes[:, :3])
    assert torch.allclose(state.logits, full[:, 6 + 3 - 1], atol=1e-5)
    for t in range(3, 9):
        state = model.ar_step(codes[:, t], state)
        assert torch.allclose(state.logits, full[:, 6 + t], atol=1e-5)
    # sampling with the cache draws what a naive full-recompute sampler draws
    prompt = torch.randint(0, K, (NQ, 4))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    out = model.generate(text[0], prompt, max_frames=12, temperature=1.0, top_k=8,
                         generator=g1)
    seq, drawn = prompt[:1].clone(), []
    processors = make_processors(1.0, 8)
    while len(drawn) < 12:
        logits = model.ar_logits(text, torch.tensor([6]), seq, torch.tensor([seq.shape[1]]))
        last = logits[:, 6 + seq.shape[1] - 1].float()
        if not drawn:
            last[:, model.eos] = float("-inf")  # min_frames = 1
        code = sample_next(last, seq, processors, g2)
        if int(code) == model.eos:
            break
        drawn.append(int(code))
        seq = torch.cat([seq, code.view(1, 1)], dim=1)
    assert out[0].tolist() == drawn


def test_nar_never_reads_its_own_or_later_codebooks() -> None:
    model = tiny()
    b = batch()
    for stage in range(1, NQ):
        base = model.nar_logits(b.text, b.text_lengths, b.prompt, b.prompt_lengths, b.target,
                                b.target_lengths, stage)
        changed = b.target.clone()
        changed[:, stage:] = (changed[:, stage:] + 7) % K
        same = model.nar_logits(b.text, b.text_lengths, b.prompt, b.prompt_lengths, changed,
                                b.target_lengths, stage)
        assert torch.allclose(base, same, atol=1e-6)
        earlier = b.target.clone()
        earlier[:, stage - 1] = (earlier[:, stage - 1] + 7) % K
        moved = model.nar_logits(b.text, b.text_lengths, b.prompt, b.prompt_lengths, earlier,
                                 b.target_lengths, stage)
        assert not torch.allclose(base, moved, atol=1e-4)
    # the prompt's later codebooks are read (they carry the voice)
    prompt = b.prompt.clone()
    prompt[:, NQ - 1] = (prompt[:, NQ - 1] + 3) % K
    stage1 = model.nar_logits(b.text, b.text_lengths, b.prompt, b.prompt_lengths, b.target,
                              b.target_lengths, 1)
    moved = model.nar_logits(b.text, b.text_lengths, prompt, b.prompt_lengths, b.target,
                             b.target_lengths, 1)
    assert not torch.allclose(stage1, moved, atol=1e-4)


def test_padding_does_not_change_a_row() -> None:
    model = tiny()
    b = batch()
    alone = CodecBatch(b.text[1:2, :7], b.text_lengths[1:2], b.prompt[1:2, :, :6],
                       b.prompt_lengths[1:2], b.target[1:2, :, :2], b.target_lengths[1:2], 2)
    full = model.nar_logits(b.text, b.text_lengths, b.prompt, b.prompt_lengths, b.target,
                            b.target_lengths, 2)
    one = model.nar_logits(alone.text, alone.text_lengths, alone.prompt, alone.prompt_lengths,
                           alone.target, alone.target_lengths, 2)
    assert torch.allclose(full[1, :15], one[0], atol=1e-5)
    codes = torch.cat([b.prompt[:, 0], b.target[:, 0]], -1).clamp(max=K - 1)
    ar = model.ar_logits(b.text, b.text_lengths, codes[:, :6], torch.tensor([3, 6, 4]))
    ar_one = model.ar_logits(b.text[1:2, :7], b.text_lengths[1:2], codes[1:2, :6],
                             torch.tensor([6]))
    assert torch.allclose(ar[1, :13], ar_one[0], atol=1e-5)


def test_tiny_model_overfits_and_generates_its_training_codes() -> None:
    model = tiny()
    model.train()
    b = batch(1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for step in range(150):
        out = model(CodecBatch(b.text, b.text_lengths, b.prompt, b.prompt_lengths, b.target,
                               b.target_lengths, 1 + step % (NQ - 1)))
        first = first if first is not None else float(out.nll)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    out = model(b)
    assert float(out.nll) < 0.1 * first
    assert out.ar_correct == out.ar_count and out.nar_correct == out.nar_count
    # greedy generation reproduces example 0's target, every codebook
    text = b.text[0, :4]
    prompt = b.prompt[0, :, :3]
    codes = model.generate(text, prompt, max_frames=20, temperature=0)
    assert codes.tolist() == b.target[0, :, :5].tolist()


def test_seeded_generation_repeats_and_save_load(tmp_path) -> None:
    model = tiny()
    text, prompt = torch.randint(4, 12, (5,)), torch.randint(0, K, (NQ, 4))

    def sample(m: VALLE) -> list:
        return m.generate(text, prompt, 10, 1.0, None, torch.Generator().manual_seed(3)).tolist()

    first = sample(model)
    assert sample(model) == first
    assert len(first) == NQ
    model.save(tmp_path / "run", {"bandwidth": 1.5})
    loaded = VALLE.load(tmp_path / "run")
    assert sample(loaded) == first
    assert VALLE.read_config(tmp_path / "run")["codec"] == {"bandwidth": 1.5}


def test_refusals() -> None:
    with pytest.raises(ConfigError, match="n_q"):
        VALLEConfig(vocab_size=10, n_q=1)
    with pytest.raises(ConfigError, match="multiple"):
        VALLEConfig(vocab_size=10, d_model=30, heads=4)
    model = tiny()
    with pytest.raises(ValueError, match="prompt"):
        model.generate(torch.tensor([5]), torch.zeros(2, 3, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="max_text"):
        model.ar_logits(torch.ones(1, 40, dtype=torch.long), torch.tensor([40]),
                        torch.zeros(1, 2, dtype=torch.long), torch.tensor([2]))
