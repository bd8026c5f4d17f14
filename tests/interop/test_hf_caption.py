"""Hugging Face VisionEncoderDecoderModel (ViT + GPT-2 with cross-attention) <-> Captioner:
logits and greedy generation match HF's with every weight perturbed; export is read by
transformers with the same logits; export -> import returns the same weights; what does not
map is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqformer.decoding.search import greedy_search
from seqformer.errors import CheckpointError
from seqformer.interop import hf_caption
from seqformer.models.captioner import Captioner, CaptionerConfig

transformers = pytest.importorskip("transformers")

PAD, BOS, EOS = 0, 1, 2


def hf_model(directory: Path, seed: int = 0, **decoder: object) -> object:
    """A tiny random ViT + GPT-2 captioner, every parameter off its init, saved to
    ``directory`` by ``save_pretrained``."""
    enc = transformers.ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32,
                                 num_hidden_layers=2, num_attention_heads=4,
                                 intermediate_size=64)
    dec = transformers.GPT2Config(**{
        "vocab_size": 40, "n_positions": 24, "n_embd": 32, "n_layer": 2, "n_head": 4,
        "n_inner": 48, "add_cross_attention": True, "is_decoder": True, "bos_token_id": BOS,
        "eos_token_id": EOS, "pad_token_id": PAD, **decoder})
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
    config.decoder_start_token_id, config.pad_token_id, config.eos_token_id = BOS, PAD, EOS
    torch.manual_seed(seed)
    model = transformers.VisionEncoderDecoderModel(config=config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    model.save_pretrained(directory)
    return model


def generate(hf, pixels: torch.Tensor, new: int) -> list[list[int]]:
    """HF greedy generation, never emitting pad or bos (as search.py), cut after eos."""
    out = hf.generate(pixel_values=pixels, max_new_tokens=new, do_sample=False, num_beams=1,
                      suppress_tokens=[PAD, BOS])
    rows = []
    for row in out[:, 1:].tolist():
        rows.append(row[: row.index(EOS) + 1] if EOS in row else row)
    return rows


def test_import_matches_hf_logits_and_generation(tmp_path: Path, one_thread) -> None:
    hf = hf_model(tmp_path / "hf")
    ours = hf_caption.load(tmp_path / "hf")
    c = ours.config
    assert (c.d_model, c.encoder_layers, c.decoder_layers, c.ffn_dim, c.decoder_ffn_dim,
            c.decoder_activation, c.bos_id, c.eos_id, c.pad_id) == (
        32, 2, 2, 64, 48, "gelu_tanh", BOS, EOS, PAD)
    torch.manual_seed(1)
    pixels = torch.randn(3, 3, 16, 16)
    ids = torch.randint(3, 40, (3, 9))
    ids[:, 0] = BOS
    with torch.no_grad():
        theirs = hf(pixel_values=pixels, decoder_input_ids=ids).logits
    assert (theirs - ours.logits(pixels, ids)).abs().max().item() <= 1e-5
    new = 12
    ours_ids = [h.tokens + ([EOS] if len(h.tokens) < new else [])
                for h in greedy_search(ours, pixels, new + 1)]
    assert [row[:new] for row in ours_ids] == generate(hf, pixels, new)


def test_export_is_read_by_transformers_and_round_trips(tmp_path: Path, one_thread) -> None:
    torch.manual_seed(2)
    model = Captioner(CaptionerConfig(vocab_size=30, image_size=16, patch_size=4, channels=3,
                                      d_model=32, heads=4, encoder_layers=1, decoder_layers=2,
                                      ffn_dim=40, decoder_ffn_dim=56, max_target_positions=20,
                                      dropout=0.0)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    preprocess = {"pixel_max": 255.0, "mean": [0.2, 0.3, 0.4], "std": [0.5, 0.6, 0.7]}
    model.save(tmp_path / "run", preprocess)
    assert hf_caption.export_caption(tmp_path / "run", tmp_path / "hf") == "vision-encoder-decoder"
    hf = transformers.VisionEncoderDecoderModel.from_pretrained(tmp_path / "hf").eval()
    processor = transformers.ViTImageProcessor.from_pretrained(tmp_path / "hf")
    raw = torch.randint(0, 256, (2, 3, 16, 16)).to(torch.uint8).numpy()
    pixels = processor(images=list(raw), return_tensors="pt",
                       input_data_format="channels_first").pixel_values
    ours_pixels = (torch.tensor(raw, dtype=torch.float32) / 255.0
                   - torch.tensor(preprocess["mean"]).view(1, 3, 1, 1)) / torch.tensor(
        preprocess["std"]).view(1, 3, 1, 1)
    assert torch.allclose(pixels, ours_pixels, atol=1e-5)
    ids = torch.tensor([[BOS, 5, 6, 7], [BOS, 9, 3, 4]])
    with torch.no_grad():
        theirs = hf(pixel_values=ours_pixels, decoder_input_ids=ids).logits
    assert (theirs - model.logits(ours_pixels, ids)).abs().max().item() <= 1e-5

    assert hf_caption.import_caption(tmp_path / "hf", tmp_path / "back") == \
        "vision-encoder-decoder"
    back = Captioner.load(tmp_path / "back")
    assert back.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, back.state_dict()[name]), name
    saved = json.loads((tmp_path / "back" / "config.json").read_text())
    assert saved["family"] == "captioner" and saved["preprocess"]["mean"] == pytest.approx(
        preprocess["mean"])


def test_what_does_not_map_is_refused(tmp_path: Path, one_thread) -> None:
    hf_model(tmp_path / "eps", layer_norm_epsilon=1e-6)
    with pytest.raises(CheckpointError, match="layer_norm_epsilon"):
        hf_caption.load(tmp_path / "eps")
    config = json.loads((tmp_path / "eps" / "config.json").read_text())
    config["decoder"]["layer_norm_epsilon"] = 1e-5
    config["decoder"]["n_embd"] = 64
    (tmp_path / "eps" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="enc_to_dec_proj"):
        hf_caption.load(tmp_path / "eps")


def test_cli_import_export_round_trip(tmp_path: Path, one_thread, capsys) -> None:
    """`seqformer export` then `seqformer import` of a captioner keep every weight, and the
    import says how to use the model."""
    from seqformer.cli import main

    torch.manual_seed(3)
    model = Captioner(CaptionerConfig(vocab_size=30, image_size=16, patch_size=4, channels=3,
                                      d_model=32, heads=4, encoder_layers=1, decoder_layers=1,
                                      ffn_dim=40, decoder_ffn_dim=56, max_target_positions=20,
                                      dropout=0.0)).eval()
    model.save(tmp_path / "run", {"pixel_max": 255.0, "mean": [0.5] * 3, "std": [0.5] * 3})
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    assert "vision-encoder-decoder" in capsys.readouterr().out
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "back")]) == 0
    assert "seqformer caption --model" in capsys.readouterr().out
    back = Captioner.load(tmp_path / "back")
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, back.state_dict()[name]), name
