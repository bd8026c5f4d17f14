"""The captioner: incremental decoding equals the full forward pass, search.py decodes it
unchanged (beam 1 == greedy), batch composition changes nothing, save/load keeps it, and a tiny
model learns a tiny caption set."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqformer.decoding.search import beam_search, greedy_search
from seqformer.errors import ConfigError
from seqformer.models.captioner import Captioner, CaptionerConfig, caption_length, collate


def tiny(seed: int = 0, **overrides) -> Captioner:
    torch.manual_seed(seed)
    fields = dict(vocab_size=20, image_size=8, patch_size=2, channels=3, d_model=32, heads=4,
                  encoder_layers=2, decoder_layers=2, ffn_dim=48, decoder_ffn_dim=40,
                  max_target_positions=12, dropout=0.0)
    model = Captioner(CaptionerConfig(**{**fields, **overrides})).eval()
    with torch.no_grad():  # biases and norms off their init, so every weight matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_step_by_step_equals_teacher_forcing() -> None:
    model = tiny()
    pixels = torch.randn(3, 3, 8, 8)
    tokens = torch.randint(3, 20, (3, 7))
    tokens[:, 0] = model.bos_id
    full = model.logits(pixels, tokens).log_softmax(-1)
    state = model.start(pixels)
    for t in range(tokens.shape[1]):
        step, state = model.step(tokens[:, t], state)
        assert torch.allclose(step, full[:, t], atol=1e-5), t


def test_beam_one_is_greedy_and_beam_reorders_the_cache() -> None:
    model = tiny(1)
    pixels = torch.randn(4, 3, 8, 8)
    limit = caption_length(model)
    greedy = greedy_search(model, pixels, limit)
    beam1 = beam_search(model, pixels, 1, limit)
    assert [h.tokens for h in greedy] == [b[0].tokens for b in beam1]
    beams = beam_search(model, pixels, 4, limit, nbest=4)
    for row, hyps in enumerate(beams):
        for hyp in hyps:  # every returned score is the model's own log-prob of that caption
            ids = torch.tensor([[model.bos_id, *hyp.tokens]])
            out = torch.tensor([[*hyp.tokens, model.eos_id]])
            lp = model.logits(pixels[row:row + 1], ids).log_softmax(-1)
            assert lp.gather(2, out.unsqueeze(-1)).sum().item() == pytest.approx(hyp.log_prob,
                                                                                abs=1e-4)
        assert hyps[0].score >= beam1[row][0].score - 1e-5  # a wider beam never does worse


def test_batch_and_padding_change_nothing() -> None:
    model = tiny(2)
    pixels = torch.randn(5, 3, 8, 8)
    captions = [[5, 6, 7], [8], [9, 10, 11, 12, 13], [4, 4], [7, 6]]
    batch = collate(pixels, captions)
    together = model(batch).logits
    for i, caption in enumerate(captions):
        alone = model(collate(pixels[i:i + 1], [caption])).logits[0, : len(caption) + 1]
        assert torch.allclose(together[i, : len(caption) + 1], alone, atol=1e-5)
    joint = [h.tokens for h in greedy_search(model, pixels, 8)]
    assert joint == [greedy_search(model, pixels[i:i + 1], 8)[0].tokens for i in range(5)]
    # The loss counts real tokens only (padding after eos is ignored).
    assert model(batch).n_tokens == sum(len(c) + 1 for c in captions)


def test_save_load_round_trip_and_config_checks(tmp_path: Path) -> None:
    model = tiny(3)
    preprocess = {"pixel_max": 255.0, "mean": [0.1, 0.2, 0.3], "std": [0.5, 0.5, 0.5]}
    model.save(tmp_path / "m", preprocess)
    again = Captioner.load(tmp_path / "m")
    pixels = torch.randn(2, 3, 8, 8)
    ids = torch.tensor([[1, 5, 6], [1, 7, 8]])
    assert torch.equal(model.logits(pixels, ids), again.logits(pixels, ids))
    assert Captioner.read_config(tmp_path / "m")["preprocess"] == preprocess
    assert again.output.weight is again.embed_tokens.weight  # still tied after loading
    with pytest.raises(ConfigError, match="patch_size=3 must divide"):
        CaptionerConfig(vocab_size=20, image_size=8, patch_size=3)
    with pytest.raises(ConfigError, match="decoder_activation"):
        CaptionerConfig(vocab_size=20, decoder_activation="tanh")
    with pytest.raises(ValueError, match="expected images"):
        model.encode(torch.randn(1, 1, 8, 8))


def test_a_tiny_model_learns_a_tiny_caption_set() -> None:
    """Four images (one bright quadrant each) -> four two-word captions, learned exactly."""
    torch.manual_seed(0)
    pixels = torch.zeros(4, 3, 8, 8)
    for i, (r, c) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
        pixels[i, i % 3, r:r + 4, c:c + 4] = 1.0
    captions = [[3, 7], [4, 8, 9], [5, 7], [6, 8]]
    model = tiny(4, dropout=0.0)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = collate(pixels, captions)
    for _ in range(80):
        loss = model(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    got = [h.tokens for h in greedy_search(model, pixels, 6)]
    assert got == captions
