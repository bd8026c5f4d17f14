"""The Whisper-shaped speech-to-text model: parity with Hugging Face's
WhisperForConditionalGeneration (teacher-forced logits, greedy generate), cached decoding equal
to the full forward, padding invisible to every utterance, import and save/load round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqformer.decoding.search import beam_search, greedy_search
from seqformer.errors import CheckpointError, ConfigError
from seqformer.interop import hf_whisper
from seqformer.models.whisper import (
    SpeechBatch,
    Whisper,
    WhisperConfig,
    encoder_lengths,
    whisper_sinusoids,
    with_lengths,
)

START, EOS = 58, 57  # the HF test model's <|startoftranscript|> and <|endoftext|> (= pad)


@pytest.fixture(scope="module")
def hf_model():
    """A random small HF Whisper; init_std 0.2 (not 0.02) and random biases/LayerNorms so the
    greedy path varies from token to token instead of repeating one token."""
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=60, num_mel_bins=16, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_source_positions=12, max_target_positions=24,
        pad_token_id=EOS, bos_token_id=EOS, eos_token_id=EOS, decoder_start_token_id=START,
        dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, init_std=0.2)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
    return model


@pytest.fixture(scope="module")
def ours(hf_model) -> Whisper:
    config = hf_whisper.config_from_hf(hf_model.config)
    model = Whisper(config).eval()
    model.load_state_dict(hf_whisper.state_from_hf(hf_model.state_dict(), config), strict=True)
    return model


def tiny(**overrides) -> Whisper:
    torch.manual_seed(0)
    base = dict(vocab_size=20, num_mel_bins=8, d_model=16, heads=2, encoder_layers=2,
                decoder_layers=2, ffn_dim=32, max_source_positions=16, max_target_positions=12,
                dropout=0.0)
    base.update(overrides)
    return Whisper(WhisperConfig(**base)).eval()


def relative(got: torch.Tensor, expected: torch.Tensor) -> float:
    return float((got - expected).abs().max() / expected.abs().max().clamp(min=1.0))


def test_config_and_positions_map_from_hugging_face(hf_model, ours: Whisper) -> None:
    c = ours.config
    assert (c.pad_id, c.bos_id, c.eos_id, c.max_frames) == (EOS, START, EOS, 24)
    assert ours.encoder.layers[0].self_attn.k_proj.bias is None  # Whisper's bias-free keys
    assert ours.decoder.layers[0].cross_attn.k_proj.bias is None
    hf_table = hf_model.model.encoder.embed_positions.weight
    torch.testing.assert_close(whisper_sinusoids(12, 32), hf_table, atol=1e-6, rtol=0)


def test_teacher_forced_logits_match_hugging_face(hf_model, ours: Whisper) -> None:
    torch.manual_seed(1)
    features = torch.randn(3, 16, 24)  # HF's encoder takes exactly 2 x max_source_positions
    tgt_in = torch.randint(0, EOS, (3, 9))
    tgt_in[:, 0] = START
    with torch.no_grad():
        expected = hf_model(input_features=features, decoder_input_ids=tgt_in).logits
        got = ours.logits(features, tgt_in)
    assert relative(got, expected) <= 1e-5


def test_cached_steps_equal_the_full_forward(ours: Whisper) -> None:
    torch.manual_seed(2)
    features = torch.randn(3, 16, 21)
    lengths = torch.tensor([21, 15, 9])
    tgt_in = torch.randint(0, EOS, (3, 10))
    tgt_in[:, 0] = START
    with torch.no_grad():
        full = ours.logits(features, tgt_in, lengths).log_softmax(-1)
        state = ours.start(features, lengths)
        steps = []
        for t in range(tgt_in.shape[1]):
            log_probs, state = ours.step(tgt_in[:, t], state)
            steps.append(log_probs)
    assert relative(torch.stack(steps, 1), full) <= 1e-5
    assert state.caches[0].self_attn.key.shape[2] == 10  # one key per fed token: no re-run


def test_greedy_equals_transformers_generate(hf_model, ours: Whisper) -> None:
    """Plain greedy on both sides: no forced or suppressed tokens except the start token
    (our search never emits bos), stopping at <|endoftext|>; ours forces eos at max_length,
    so HF gets max_length - 1 new tokens."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(3)
    features = torch.randn(4, 16, 24)
    config = transformers.GenerationConfig(
        decoder_start_token_id=START, eos_token_id=EOS, pad_token_id=EOS, max_new_tokens=20,
        do_sample=False, num_beams=1, suppress_tokens=[START])
    expected = hf_model.generate(input_features=features, generation_config=config)
    got = greedy_search(ours, features, max_length=21)
    for row, hyp in zip(expected.tolist(), got):
        row = row[: row.index(EOS)] if EOS in row else row
        assert hyp.tokens == row
    assert len({tuple(h.tokens) for h in got}) > 1 and len(set(got[0].tokens)) > 1


def test_beam_one_equals_greedy(ours: Whisper) -> None:
    torch.manual_seed(4)
    features = torch.randn(3, 16, 20)
    greedy = greedy_search(ours, features, max_length=15)
    beams = beam_search(ours, features, beam=1, max_length=15)
    assert [h.tokens for h in greedy] == [b[0].tokens for b in beams]
    for g, b in zip(greedy, beams):
        assert g.log_prob == pytest.approx(b[0].log_prob, abs=1e-4)


@pytest.mark.parametrize("block", ["transformer", "conformer"])
def test_padding_never_changes_an_utterance(block: str) -> None:
    model = tiny(encoder_block=block, conv_kernel=5)
    torch.manual_seed(5)
    lengths = torch.tensor([30, 17, 6])
    features = torch.randn(3, 8, 30)
    features[1, :, 17:] = 0.0
    features[2, :, 6:] = 0.0
    tgt_in = torch.randint(3, 20, (3, 5))
    tgt_in[:, 0] = 1
    with torch.no_grad():
        batched = model.logits(features, tgt_in, lengths)
        for i, n in enumerate(lengths.tolist()):
            alone = model.logits(features[i:i + 1, :, :n], tgt_in[i:i + 1])
            assert relative(batched[i:i + 1], alone) <= 1e-5
    padded = beam_search(with_lengths(model, lengths), features, beam=3, max_length=8)
    for i, n in enumerate(lengths.tolist()):
        alone = beam_search(model, features[i:i + 1, :, :n], beam=3, max_length=8)
        assert padded[i][0].tokens == alone[0][0].tokens
    assert encoder_lengths(lengths).tolist() == [15, 9, 3]


def test_forward_loss_ignores_padding_and_trains() -> None:
    model = tiny(label_smoothing=0.0)
    model.train()
    features = torch.randn(2, 8, 12)
    tgt_in = torch.tensor([[1, 5, 6, 7], [1, 8, 0, 0]])
    tgt_out = torch.tensor([[5, 6, 7, 2], [8, 2, 0, 0]])
    out = model(SpeechBatch(features, torch.tensor([12, 12]), tgt_in, tgt_out))
    assert out.n_tokens == 6
    logits = out.logits.reshape(-1, 20)
    expected = torch.nn.functional.cross_entropy(logits, tgt_out.reshape(-1), ignore_index=0)
    torch.testing.assert_close(out.loss, expected)
    out.loss.backward()
    assert model.conv1.weight.grad is not None and model.embed_tokens.weight.grad is not None


def test_save_load_and_hugging_face_import(tmp_path: Path, hf_model) -> None:
    from seqformer.interop.hf import IMPORTERS, import_hf

    assert "whisper" in IMPORTERS
    hf_model.save_pretrained(tmp_path / "hf")
    assert import_hf(tmp_path / "hf", tmp_path / "ours") == "whisper"
    loaded = Whisper.load(tmp_path / "ours")
    features = torch.randn(2, 16, 24)
    tgt_in = torch.full((2, 3), START)
    with torch.no_grad():
        expected = hf_model(input_features=features, decoder_input_ids=tgt_in).logits
        assert relative(loaded.logits(features, tgt_in), expected) <= 1e-5
    model = tiny()
    model.save(tmp_path / "tiny", {"kind": "whisper-logmel", "n_mels": 8})
    again = Whisper.load(tmp_path / "tiny")
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name


def test_unknown_or_untied_hugging_face_weights_are_refused(hf_model) -> None:
    state = hf_model.state_dict()
    with pytest.raises(CheckpointError, match="model.encoder.embed_scale"):
        hf_whisper.state_from_hf({**state, "model.encoder.embed_scale": torch.zeros(1)})
    untied = {**state, "proj_out.weight": torch.zeros_like(state["proj_out.weight"])}
    with pytest.raises(CheckpointError, match="not tied"):
        hf_whisper.state_from_hf(untied)


@pytest.mark.parametrize("field,value,message", [
    ("heads", 3, "multiple of"), ("max_target_positions", 2, ">= 3"),
    ("activation", "tanh", "activation"), ("num_mel_bins", 0, "positive integer"),
    ("bos_id", 2, "must differ"), ("encoder_block", "lstm", "encoder_block"),
    ("conv_kernel", 4, "odd")])
def test_bad_config_is_a_config_error(field: str, value, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WhisperConfig(**{"vocab_size": 20, field: value})


def test_too_many_frames_is_refused() -> None:
    with pytest.raises(ValueError, match="exceed"):
        tiny().encode(torch.randn(1, 8, 33))


def test_conformer_encoder_has_no_absolute_positions_and_trains() -> None:
    model = tiny(encoder_block="conformer", conv_kernel=5, label_smoothing=0.0).train()
    features = torch.randn(2, 8, 12)
    tgt_in = torch.tensor([[1, 5, 6, 7], [1, 8, 0, 0]])
    tgt_out = torch.tensor([[5, 6, 7, 2], [8, 2, 0, 0]])
    model(SpeechBatch(features, torch.tensor([12, 9]), tgt_in, tgt_out)).loss.backward()
    assert model.encoder.layers[0].attn.pos_bias_u.grad is not None
    assert model.encoder.layers[0].conv.depthwise.weight.grad is not None
    assert model.encoder_positions is None  # relative positions: no sinusoid table at all


def test_conformer_checkpoints_carry_no_sinusoid_table_and_old_ones_load(tmp_path: Path
                                                                         ) -> None:
    from seqformer.training.checkpoint import read_weights, save_weights

    assert "encoder_positions" in tiny().state_dict()  # the transformer encoder keeps it
    model = tiny(encoder_block="conformer", conv_kernel=5)
    assert "encoder_positions" not in model.state_dict()
    model.save(tmp_path / "new", {"kind": "whisper-logmel", "n_mels": 8})
    assert "encoder_positions" not in read_weights(tmp_path / "new" / "model.safetensors")

    # A conformer checkpoint saved while the model still built the (unused) table loads.
    features, tgt_in = torch.randn(2, 8, 12), torch.tensor([[1, 5, 6, 7], [1, 8, 0, 0]])
    old = tmp_path / "old"
    model.save(old, {"kind": "whisper-logmel", "n_mels": 8})
    state = read_weights(old / "model.safetensors")
    save_weights({**state, "encoder_positions": whisper_sinusoids(16, 16)},
                 old / "model.safetensors")
    loaded = Whisper.load(old)
    assert "encoder_positions" not in loaded.state_dict()
    with torch.no_grad():
        assert torch.equal(loaded.logits(features, tgt_in), model.logits(features, tgt_in))
    # ... and so does --resume, which reads weights with checkpoint.load_weights.
    from seqformer.training.checkpoint import load_weights

    fresh = tiny(encoder_block="conformer", conv_kernel=5)
    with torch.no_grad():
        for p in fresh.parameters():
            p.add_(1.0)  # so only the loaded weights can give the saved model's logits
    resumed = load_weights(fresh, old / "model.safetensors")
    with torch.no_grad():
        assert torch.equal(resumed.logits(features, tgt_in), model.logits(features, tgt_in))
    # Any other unknown key is still refused, and so is a transformer checkpoint without it.
    save_weights({**state, "encoder_positions": whisper_sinusoids(16, 16),
                  "stray": torch.zeros(1)}, old / "model.safetensors")
    with pytest.raises(CheckpointError, match="'stray'"):
        Whisper.load(old)
    tiny().save(tmp_path / "transformer", {"kind": "whisper-logmel", "n_mels": 8})
    path = tmp_path / "transformer" / "model.safetensors"
    save_weights({k: v for k, v in read_weights(path).items() if k != "encoder_positions"}, path)
    with pytest.raises(CheckpointError, match="'encoder_positions' is missing"):
        Whisper.load(tmp_path / "transformer")
