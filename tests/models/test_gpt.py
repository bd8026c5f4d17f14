"""The decoder-only model: causal, cache-consistent, tied, able to learn, honest perplexity."""

from __future__ import annotations

import math

import pytest
import torch

from seqformer.data.lm import BlockStream, LMBatch, eval_batches
from seqformer.decoding.sampling import generate
from seqformer.errors import CheckpointError, ConfigError
from seqformer.models.gpt import GPT, GPTConfig


def tiny(**overrides) -> GPT:
    torch.manual_seed(0)
    base = dict(vocab_size=17, d_model=16, heads=2, layers=2, ffn_dim=32, dropout=0.0,
                max_len=24)
    base.update(overrides)
    return GPT(GPTConfig(**base)).eval()


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_changing_token_t_never_changes_earlier_logits(positional: str) -> None:
    model = tiny(positional=positional)
    x = torch.randint(4, 17, (3, 12), generator=torch.Generator().manual_seed(1))
    full = model.logits(x)
    for t in range(12):
        changed = x.clone()
        changed[:, t] = (changed[:, t] - 4 + 1) % 13 + 4  # a different real token
        out = model.logits(changed)
        torch.testing.assert_close(out[:, :t], full[:, :t], atol=0, rtol=0)
        assert not torch.allclose(out[:, t:], full[:, t:])  # ... while later ones do change


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_cached_steps_equal_full_forward(norm_first: bool, positional: str) -> None:
    model = tiny(norm_first=norm_first, positional=positional)
    x = torch.randint(4, 17, (2, 15), generator=torch.Generator().manual_seed(2))
    full = model.logits(x).log_softmax(-1)
    state = model.start(x[:, :4])  # a prompt of 4, then one token at a time
    torch.testing.assert_close(state.log_probs, full[:, 3], atol=1e-5, rtol=1e-5)
    for t in range(4, 15):
        log_probs, state = model.step(x[:, t], state)
        torch.testing.assert_close(log_probs, full[:, t], atol=1e-5, rtol=1e-5)


def uncached_greedy(model: GPT, prompt: torch.Tensor, n: int) -> list[int]:
    tokens = prompt.clone()
    for _ in range(n):
        logits = model.logits(tokens)[:, -1]
        logits[:, [0, 1]] = float("-inf")
        tokens = torch.cat([tokens, logits.argmax(-1, keepdim=True)], dim=1)
    return tokens[0, prompt.shape[1]:].tolist()


def test_cached_greedy_generation_equals_uncached() -> None:
    model = tiny()
    prompt = torch.tensor([[1, 5, 9, 4]])
    cached = [int(t) for t in generate(model, prompt, 18, temperature=0.0)]
    assert cached == uncached_greedy(model, prompt, 18)
    assert len(set(cached)) > 1  # a random model, so the test means something


def test_generation_past_the_context_restarts_on_the_recent_half() -> None:
    model = tiny(max_len=8)
    prompt = torch.tensor([[1, 5, 9]])
    out = [int(t) for t in generate(model, prompt, 20, temperature=0.0)]
    assert len(out) == 20
    # Every token is the argmax given the (at most max_len) recent tokens the model saw.
    history = prompt[0].tolist()
    state_len = len(history)
    for token in out:
        if state_len >= 8:
            state_len = 4
        window = torch.tensor([history[-state_len:]])
        logits = model.logits(window)[0, -1]
        logits[[0, 1]] = float("-inf")
        assert token == int(logits.argmax())
        history.append(token)
        state_len += 1


def test_state_select_duplicates_rows() -> None:
    model = tiny()
    state = model.start(torch.tensor([[1, 5, 6], [1, 7, 8]]))
    picked = state.select(torch.tensor([1, 1, 0]))
    log_probs, _ = model.step(torch.tensor([9, 9, 9]), picked)
    torch.testing.assert_close(log_probs[0], log_probs[1])
    assert not torch.allclose(log_probs[0], log_probs[2])


def test_output_is_tied_to_the_embedding_and_survives_save_load(tmp_path) -> None:
    model = tiny()
    assert model.head.weight is model.embed.weight
    untied = tiny(tie_output=False)
    assert untied.num_parameters() == model.num_parameters() + 17 * 16
    model.save(tmp_path / "m")
    loaded = GPT.load(tmp_path / "m")
    assert loaded.head.weight is loaded.embed.weight
    x = torch.tensor([[1, 4, 5, 6]])
    torch.testing.assert_close(loaded.logits(x), model.logits(x))


def test_load_refuses_other_families_and_bad_configs(tmp_path) -> None:
    from seqformer.models.seq2seq import Seq2Seq, Seq2SeqConfig

    Seq2Seq(Seq2SeqConfig(src_vocab_size=9, tgt_vocab_size=9, d_model=8, heads=2, layers=1,
                          ffn_dim=8)).save(tmp_path / "s2s")
    with pytest.raises(CheckpointError, match="not a language model"):
        GPT.load(tmp_path / "s2s")
    with pytest.raises(CheckpointError, match="no such model directory"):
        GPT.load(tmp_path / "missing")
    with pytest.raises(ConfigError, match="multiple of model.heads"):
        GPTConfig(vocab_size=9, d_model=10, heads=3)


def test_flops_per_token_follows_nanogpt() -> None:
    model = tiny()
    n = model.num_parameters() - 24 * 16  # the learned position table is not counted
    assert model.flops_per_token(24) == 6 * n + 12 * 2 * 16 * 24


def test_tiny_model_memorises_a_short_text() -> None:
    text = [1] + [4 + (i * 7 + i // 5) % 13 for i in range(48)]  # no easy pattern
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=17, d_model=48, heads=4, layers=2, ffn_dim=96,
                          dropout=0.0, max_len=48))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3, weight_decay=0.0)
    ids = torch.tensor(text)
    batch = LMBatch(ids[:-1].unsqueeze(0), ids[1:].unsqueeze(0))
    first = model(batch).loss.item()
    for _ in range(300):  # well under a second on one CPU core
        out = model(batch)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        if out.loss.item() < 0.02:
            break
    assert first > 2.0 and out.loss.item() < 0.05, (first, out.loss.item())


def test_perplexity_is_exp_of_the_mean_nll_over_blocks() -> None:
    from seqformer.tasks.lm import score_ids

    model = tiny(max_len=8)
    ids = torch.randint(4, 17, (30,), generator=torch.Generator().manual_seed(3))
    nll_sum, n = score_ids(model, ids, block=8, batch_size=2)
    assert n == 29  # every id after the first is predicted once
    # The same number by hand: each block of 8 inputs, log-prob of its shifted targets.
    expected = 0.0
    for s in range(0, 29, 8):
        x, y = ids[s:s + 8][: 29 - s], ids[s + 1:s + 9]
        log_probs = model.logits(x.unsqueeze(0))[0].detach().log_softmax(-1)
        expected -= float(log_probs.gather(1, y.unsqueeze(1)).sum())
    assert nll_sum == pytest.approx(expected, rel=1e-5)
    from seqformer.tasks.lm import metrics_from_nll

    m = metrics_from_nll(nll_sum, n, n_chars=58)
    assert m["ppl"] == pytest.approx(math.exp(expected / 29))
    assert m["bpc"] == pytest.approx(expected / math.log(2) / 58)


def test_block_stream_is_a_pure_function_of_seed_and_step() -> None:
    ids = list(range(4, 104))
    a = BlockStream(ids, 10, 3, seed=5)
    first = [b for _, b in zip(range(4), a)]
    for batch in first:
        torch.testing.assert_close(batch.inputs[:, 1:], batch.targets[:, :-1])
        assert batch.inputs.shape == (3, 10)
    b = BlockStream(ids, 10, 3, seed=5)
    b.load_state_dict({**a.state_dict(), "position": 2})
    torch.testing.assert_close(next(iter(b)).inputs, first[2].inputs)
    other = BlockStream(ids, 10, 3, seed=6)
    assert not torch.equal(next(iter(other)).inputs, first[0].inputs)
    with pytest.raises(CheckpointError, match="batch_size"):
        BlockStream(ids, 10, 4, seed=5).load_state_dict(a.state_dict())


def test_eval_batches_cover_every_target_once() -> None:
    ids = torch.arange(4, 4 + 23)
    batches = list(eval_batches(ids, block=5, batch_size=2))
    targets = torch.cat([b.targets.flatten() for b in batches])
    assert sorted(targets[targets.ne(0)].tolist()) == ids[1:].tolist()


# -- rotary positions (issue #4) ----------------------------------------------------------------
def test_rotary_gpt_is_causal_and_has_no_position_table() -> None:
    model = tiny(positional="rotary")
    assert model.pos is None
    assert not any("pos" in name for name, _ in model.named_parameters())
    x = torch.randint(4, 17, (2, 10), generator=torch.Generator().manual_seed(3))
    full = model.logits(x)
    changed = x.clone()
    changed[:, 6] = (changed[:, 6] - 4 + 1) % 13 + 4
    out = model.logits(changed)
    torch.testing.assert_close(out[:, :6], full[:, :6], atol=0, rtol=0)
    assert not torch.allclose(out[:, 6:], full[:, 6:])


def test_rotary_makes_the_model_order_aware() -> None:
    """Without any position signal a causal model still sees order through the mask; rotary
    must change the logits relative to the same weights with positions switched off."""
    model = tiny(positional="rotary")
    x = torch.randint(4, 17, (1, 8), generator=torch.Generator().manual_seed(4))
    with_rotary = model.logits(x)
    for layer in model.layers:
        layer.self_attn.rotary = None
    assert not torch.allclose(model.logits(x), with_rotary, atol=1e-4)


@pytest.mark.parametrize("norm_first", [True, False])
def test_rotary_cached_steps_equal_full_forward(norm_first: bool) -> None:
    model = tiny(norm_first=norm_first, positional="rotary")
    x = torch.randint(4, 17, (2, 15), generator=torch.Generator().manual_seed(2))
    full = model.logits(x).log_softmax(-1)
    state = model.start(x[:, :4])
    torch.testing.assert_close(state.log_probs, full[:, 3], atol=1e-5, rtol=1e-5)
    for t in range(4, 15):
        log_probs, state = model.step(x[:, t], state)
        torch.testing.assert_close(log_probs, full[:, t], atol=1e-5, rtol=1e-5)


def test_rotary_cached_greedy_generation_equals_uncached() -> None:
    # Untied: a tiny tied model without a position table just repeats the last token.
    model = tiny(positional="rotary", tie_output=False)
    prompt = torch.tensor([[1, 5, 9, 4]])
    cached = [int(t) for t in generate(model, prompt, 18, temperature=0.0)]
    assert cached == uncached_greedy(model, prompt, 18)
    assert len(set(cached)) > 1


def test_rotary_needs_an_even_head_size() -> None:
    with pytest.raises(ConfigError, match="even head size"):
        GPTConfig(vocab_size=17, d_model=18, heads=2, positional="rotary")


def test_rotary_model_saves_and_loads(tmp_path) -> None:
    model = tiny(positional="rotary", rotary_base=500.0)
    model.save(tmp_path)
    loaded = GPT.load(tmp_path)
    assert loaded.config == model.config
    x = torch.randint(4, 17, (1, 9), generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(loaded.logits(x), model.logits(x), atol=0, rtol=0)
