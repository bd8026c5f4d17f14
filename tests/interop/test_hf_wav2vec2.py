"""Hugging Face wav2vec2 / HuBERT / W2v-Conformer <-> ours: tiny random HF models written by
``save_pretrained`` import with equal outputs (eval mode, max abs diff <= 1e-5) -- backbones,
CTC logits and loss, classification logits, the pretraining quantizer and contrastive /
diversity / total loss, every layer's hidden states; our models export to directories
``from_pretrained`` loads with equal outputs; the CLI does both; what our blocks cannot compute
is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seqformer.cli import main
from seqformer.errors import CheckpointError, ConfigError
from seqformer.interop.hf import export_hf, import_hf
from seqformer.interop.hf_wav2vec2 import from_hf
from seqformer.models.wav2vec2 import (
    Wav2Vec2Config,
    Wav2Vec2ForClassification,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
    Wav2Vec2Model,
    WaveBatch,
    load_wav2vec2,
)

transformers = pytest.importorskip("transformers")
from transformers.models.wav2vec2.modeling_wav2vec2 import (  # noqa: E402
    _compute_mask_indices,
    _sample_negative_indices,
)

TOL = 1e-5
SAMPLES = 800  # 39 frames of 20 samples
HF_SMALL = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                conv_dim=(8, 8, 8), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
                num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, hidden_dropout=0.0,
                attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                final_dropout=0.0, layerdrop=0.0)
OURS_SMALL = dict(conv_dim=(8, 8, 8), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), d_model=16,
                  heads=2, layers=2, ffn_dim=32, pos_conv_kernel=8, pos_conv_groups=2,
                  dropout=0.0, attention_dropout=0.0, codevectors_per_group=8, codevector_dim=8,
                  proj_codevector_dim=8, num_negatives=5, classifier_proj_size=8)


def perturb(model: torch.nn.Module) -> torch.nn.Module:
    """Every parameter off its init (norms off 1/0, biases non-zero), BatchNorm statistics
    non-trivial, so a mapping mistake shows."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def saved_hf(tmp_path: Path, cls, config, name: str = "hf") -> tuple[torch.nn.Module, Path]:
    model = perturb(cls(config))
    model.save_pretrained(tmp_path / name)
    return model, tmp_path / name


def waves(n: int = 3, samples: int = SAMPLES) -> torch.Tensor:
    return torch.randn(n, samples, generator=torch.Generator().manual_seed(1))


def padded() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three utterances of 800 / 560 / 333 samples, zero-padded; HF's attention_mask too."""
    lengths = torch.tensor([SAMPLES, 560, 333])
    w = waves()
    mask = torch.arange(SAMPLES).unsqueeze(0) < lengths.unsqueeze(1)
    return w * mask, lengths, mask.long()


def diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


@pytest.mark.parametrize("norm, stable, bias", [("group", False, False), ("layer", True, True)])
def test_wav2vec2_model_equals_hugging_face(tmp_path: Path, one_thread, norm, stable,
                                            bias) -> None:
    config = transformers.Wav2Vec2Config(**HF_SMALL, feat_extract_norm=norm,
                                         do_stable_layer_norm=stable, conv_bias=bias)
    theirs, path = saved_hf(tmp_path, transformers.Wav2Vec2Model, config)
    ours = from_hf(path)
    assert isinstance(ours, Wav2Vec2Model) and ours.config.norm_first is stable
    w = waves()
    np.random.seed(0)
    mask = torch.tensor(_compute_mask_indices((3, 39), 0.3, 4, min_masks=1))
    with torch.no_grad():
        expected = theirs(w, mask_time_indices=mask)
        hidden, extract, valid = ours(w, mask_time=mask)
    assert valid.all()
    assert diff(hidden, expected.last_hidden_state) <= TOL
    assert diff(extract, expected.extract_features) <= TOL
    if norm == "layer":  # no statistic over time: padding with attention_mask agrees too
        w, lengths, attention = padded()
        with torch.no_grad():
            expected = theirs(w, attention_mask=attention).last_hidden_state
            hidden, _, valid = ours(w, lengths)
        assert diff(hidden[valid], expected[valid]) <= TOL


@pytest.mark.parametrize("layer_norm", [True, False])
def test_hubert_model_equals_hugging_face(tmp_path: Path, one_thread, layer_norm) -> None:
    config = transformers.HubertConfig(**HF_SMALL, feat_proj_layer_norm=layer_norm)
    theirs, path = saved_hf(tmp_path, transformers.HubertModel, config)
    ours = from_hf(path)
    assert ours.config.feat_proj_layer_norm is layer_norm and ours.config.objective == "units"
    with torch.no_grad():
        assert diff(ours(waves())[0], theirs(waves()).last_hidden_state) <= TOL


def test_conformer_model_equals_hugging_face(tmp_path: Path, one_thread) -> None:
    config = transformers.Wav2Vec2ConformerConfig(**HF_SMALL, hidden_act="swish",
                                                   conv_depthwise_kernel_size=7)
    theirs, path = saved_hf(tmp_path, transformers.Wav2Vec2ConformerModel, config)
    ours = from_hf(path)
    assert ours.config.encoder_block == "conformer" and ours.config.activation == "silu"
    with torch.no_grad():
        assert diff(ours(waves())[0], theirs(waves()).last_hidden_state) <= TOL


@pytest.mark.parametrize("kind", ["post-LN", "pre-LN", "conformer"])
def test_hidden_states_equal_hugging_faces_output_hidden_states(tmp_path: Path, one_thread,
                                                                kind: str) -> None:
    if kind == "conformer":
        config = transformers.Wav2Vec2ConformerConfig(**HF_SMALL, conv_depthwise_kernel_size=7)
        cls = transformers.Wav2Vec2ConformerModel
    else:
        config = transformers.Wav2Vec2Config(**HF_SMALL, do_stable_layer_norm=kind == "pre-LN",
                                             feat_extract_norm="layer" if kind == "pre-LN"
                                             else "group")
        cls = transformers.Wav2Vec2Model
    theirs, path = saved_hf(tmp_path, cls, config)
    ours = from_hf(path)
    with torch.no_grad():
        expected = theirs(waves(), output_hidden_states=True)
        states, _, _ = ours.hidden_states(waves())
        middle, _, _ = ours.hidden_states(waves(), upto=1)
    assert len(states) == len(expected.hidden_states) == 3 and len(middle) == 2
    # The top state is the encoder's output, as transformers 4.x reported it (5.x gives the
    # last layer before the final LayerNorm of a pre-LN / Conformer encoder).
    for got, want in zip(states[:-1], expected.hidden_states[:-1], strict=True):
        assert diff(got, want) <= TOL
    assert diff(states[-1], expected.last_hidden_state) <= TOL
    assert diff(middle[1], expected.hidden_states[1]) <= TOL


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ctc_logits_and_loss_equal_hugging_face(tmp_path: Path, one_thread, reduction) -> None:
    config = transformers.Wav2Vec2Config(**HF_SMALL, feat_extract_norm="layer", vocab_size=7,
                                         ctc_loss_reduction=reduction, ctc_zero_infinity=True)
    theirs, path = saved_hf(tmp_path, transformers.Wav2Vec2ForCTC, config)
    ours = from_hf(path)
    assert isinstance(ours, Wav2Vec2ForCTC) and ours.config.ctc_reduction == reduction
    w, lengths, attention = padded()
    text = torch.tensor([[3, 4, 5, 6, 3], [4, 4, 2, 0, 0], [5, 0, 0, 0, 0]])
    labels = text.masked_fill(text.eq(0), -100)
    with torch.no_grad():
        expected = theirs(w, attention_mask=attention, labels=labels)
        out = ours(WaveBatch(w, lengths, text=text, text_lengths=torch.tensor([5, 3, 1])))
    assert diff(out.logits[out.frame_mask], expected.logits[out.frame_mask]) <= TOL
    assert abs(float(out.loss) - float(expected.loss)) <= TOL * max(1.0, float(expected.loss))
    assert out.n_tokens == 9


def test_classification_logits_equal_hugging_face(tmp_path: Path, one_thread) -> None:
    config = transformers.Wav2Vec2Config(**HF_SMALL, feat_extract_norm="layer",
                                         classifier_proj_size=8,
                                         id2label={0: "yes", 1: "no", 2: "up"})
    theirs, path = saved_hf(tmp_path, transformers.Wav2Vec2ForSequenceClassification, config)
    ours = from_hf(path)
    assert isinstance(ours, Wav2Vec2ForClassification) and ours.labels == ["yes", "no", "up"]
    w, lengths, attention = padded()
    with torch.no_grad():
        assert diff(ours.logits(waves()), theirs(waves()).logits) <= TOL  # no attention_mask
        assert diff(ours.logits(w, lengths), theirs(w, attention_mask=attention).logits) <= TOL


def test_pretraining_quantizer_and_losses_equal_hugging_face(tmp_path: Path,
                                                             one_thread) -> None:
    config = transformers.Wav2Vec2Config(**HF_SMALL, num_codevectors_per_group=8,
                                         codevector_dim=8, proj_codevector_dim=8,
                                         num_negatives=5, diversity_loss_weight=0.3)
    theirs, path = saved_hf(tmp_path, transformers.Wav2Vec2ForPreTraining, config)
    ours = from_hf(path)
    assert isinstance(ours, Wav2Vec2ForPreTraining)
    np.random.seed(0)
    mask = _compute_mask_indices((3, 39), 0.5, 4, min_masks=2)
    negatives = torch.tensor(_sample_negative_indices((3, 39), 5, mask), dtype=torch.long)
    mask = torch.tensor(mask)
    w = waves()
    with torch.no_grad():
        expected = theirs(w, mask_time_indices=mask, sampled_negative_indices=negatives)
        out = ours(WaveBatch(w, torch.full((3,), SAMPLES), mask_time=mask, negatives=negatives))
        hidden, extract, valid = ours.wav2vec2(w, mask_time=mask)
        quantized, perplexity = ours.quantizer(extract, mask)
        quantized = ours.project_q(quantized)
    n = int(mask.sum())
    assert out.n_tokens == n
    assert diff(quantized, expected.projected_quantized_states) <= TOL
    assert abs(float(perplexity) - float(expected.codevector_perplexity)) <= TOL
    assert out.metrics["perplexity"] == pytest.approx(float(expected.codevector_perplexity))
    # HF sums over the masked frames; ours is the mean per masked frame.
    assert abs(float(out.loss) * n - float(expected.loss)) <= TOL * float(expected.loss)
    assert out.metrics["contrastive_loss"] * n == pytest.approx(float(expected.contrastive_loss),
                                                                rel=1e-5)
    assert out.metrics["diversity_loss"] * n == pytest.approx(float(expected.diversity_loss),
                                                              rel=1e-5)


def ours_model(cls, **overrides):
    torch.manual_seed(3)
    model = cls(Wav2Vec2Config(**{**OURS_SMALL, **overrides}))
    return perturb(model)


@pytest.mark.parametrize("overrides, hf_class", [
    ({"vocab_size": 6}, "Wav2Vec2ForCTC"),
    ({"vocab_size": 6, "objective": "units", "feat_proj_layer_norm": False}, "HubertForCTC"),
    ({"vocab_size": 6, "encoder_block": "conformer", "depthwise_kernel": 5},
     "Wav2Vec2ConformerForCTC"),
])
def test_ctc_export_loads_in_transformers_with_equal_logits(tmp_path: Path, one_thread,
                                                            overrides, hf_class) -> None:
    ours = ours_model(Wav2Vec2ForCTC, **overrides)
    ours.save(tmp_path / "run", {"sample_rate": 16000, "normalize": True})
    export_hf(tmp_path / "run", tmp_path / "hf")
    theirs = transformers.AutoModelForCTC.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == hf_class
    extractor = transformers.AutoFeatureExtractor.from_pretrained(tmp_path / "hf")
    assert extractor.do_normalize and extractor.sampling_rate == 16000
    with torch.no_grad():
        assert diff(ours.logits(waves())[0], theirs(waves()).logits) <= TOL
    back = from_hf(tmp_path / "hf")  # and back: the same weights
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(),
                                                 back.state_dict().values(), strict=True))


def test_pretraining_and_classifier_export_load_in_transformers(tmp_path: Path,
                                                                one_thread) -> None:
    ours = ours_model(Wav2Vec2ForPreTraining)
    ours.save(tmp_path / "pre")
    assert export_hf(tmp_path / "pre", tmp_path / "hf_pre") == "wav2vec2"
    theirs = transformers.Wav2Vec2ForPreTraining.from_pretrained(tmp_path / "hf_pre").eval()
    np.random.seed(1)
    mask = _compute_mask_indices((3, 39), 0.5, 4, min_masks=2)
    negatives = torch.tensor(_sample_negative_indices((3, 39), 5, mask), dtype=torch.long)
    mask = torch.tensor(mask)
    with torch.no_grad():
        expected = theirs(waves(), mask_time_indices=mask, sampled_negative_indices=negatives)
        out = ours(WaveBatch(waves(), torch.full((3,), SAMPLES), mask_time=mask,
                             negatives=negatives))
    assert abs(float(out.loss) * out.n_tokens - float(expected.loss)) <= TOL * float(
        expected.loss)

    ours = ours_model(Wav2Vec2ForClassification, num_labels=3, feat_extract_norm="layer",
                      norm_first=True)
    ours.labels = ["a", "b", "c"]
    ours.save(tmp_path / "cls")
    export_hf(tmp_path / "cls", tmp_path / "hf_cls")
    theirs = transformers.AutoModelForAudioClassification.from_pretrained(
        tmp_path / "hf_cls").eval()
    assert theirs.config.id2label == {0: "a", 1: "b", 2: "c"}
    w, lengths, attention = padded()
    with torch.no_grad():
        assert diff(ours.logits(w, lengths), theirs(w, attention_mask=attention).logits) <= TOL


def test_units_pretraining_exports_its_encoder_as_hubert(tmp_path: Path, one_thread) -> None:
    ours = ours_model(Wav2Vec2ForPreTraining, objective="units", num_units=10, unit_dim=8,
                      mask_time_prob=0.0)
    ours.save(tmp_path / "run")
    assert export_hf(tmp_path / "run", tmp_path / "hf") == "hubert"
    theirs = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == "HubertModel"
    with torch.no_grad():
        assert diff(ours.wav2vec2(waves())[0], theirs(waves()).last_hidden_state) <= TOL
    back = from_hf(tmp_path / "hf")  # the bare encoder, objective read back
    assert isinstance(back, Wav2Vec2Model) and back.config.num_units == 10


def test_w2v_bert_pretraining_exports_its_encoder_as_wav2vec2(tmp_path: Path,
                                                             one_thread) -> None:
    from safetensors.torch import load_file

    ours = ours_model(Wav2Vec2ForPreTraining, objective="w2v-bert", contrastive_layers=1,
                      mlm_weight=0.5)
    ours.save(tmp_path / "run")
    assert export_hf(tmp_path / "run", tmp_path / "hf") == "wav2vec2"
    assert not [k for k in load_file(tmp_path / "hf" / "model.safetensors")
                if k.startswith(("mlm_head", "quantizer", "project_"))]
    theirs = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == "Wav2Vec2Model"
    with torch.no_grad():
        assert diff(ours.wav2vec2(waves())[0], theirs(waves()).last_hidden_state) <= TOL
    back = from_hf(tmp_path / "hf")  # the bare encoder; W2v-BERT's fields read back
    assert isinstance(back, Wav2Vec2Model) and back.config.objective == "w2v-bert"
    assert back.config.contrastive_layers == 1 and back.config.mlm_weight == 0.5


def test_cli_imports_and_exports(tmp_path: Path, one_thread, capsys) -> None:
    config = transformers.HubertConfig(**HF_SMALL, vocab_size=5)
    theirs, path = saved_hf(tmp_path, transformers.HubertForCTC, config)
    (path / "preprocessor_config.json").write_text(json.dumps(
        {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "sampling_rate": 16000,
         "do_normalize": False}))
    assert main(["import", str(path), "--out", str(tmp_path / "run")]) == 0
    assert "wav2vec2-ctc" in capsys.readouterr().out
    run = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run["family"] == "wav2vec2-ctc" and run["features"]["normalize"] is False
    ours = load_wav2vec2(tmp_path / "run")
    with torch.no_grad():
        assert diff(ours.logits(waves())[0], theirs(waves()).logits) <= TOL
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "hf2")]) == 0
    assert "hubert" in capsys.readouterr().out
    assert json.loads((tmp_path / "hf2" / "preprocessor_config.json").read_text())[
        "do_normalize"] is False
    again = transformers.HubertForCTC.from_pretrained(tmp_path / "hf2").eval()
    with torch.no_grad():
        assert diff(again(waves()).logits, theirs(waves()).logits) <= TOL


def test_unsupported_checkpoints_and_exports_are_refused_in_one_line(tmp_path: Path,
                                                                     one_thread) -> None:
    rotary = transformers.Wav2Vec2ConformerConfig(**HF_SMALL, position_embeddings_type="rotary")
    _, path = saved_hf(tmp_path, transformers.Wav2Vec2ConformerModel, rotary, "rotary")
    with pytest.raises(CheckpointError, match="position_embeddings_type='rotary'") as err:
        import_hf(path, tmp_path / "out1")
    assert "\n" not in str(err.value)
    weighted = transformers.Wav2Vec2Config(**HF_SMALL, use_weighted_layer_sum=True)
    _, path = saved_hf(tmp_path, transformers.Wav2Vec2ForSequenceClassification, weighted,
                       "weighted")
    with pytest.raises(CheckpointError, match="use_weighted_layer_sum"):
        from_hf(path)
    state = {k: v.clone() for k, v in transformers.Wav2Vec2Model(
        transformers.Wav2Vec2Config(**HF_SMALL)).state_dict().items()}
    (path / "model.safetensors").unlink()
    torch.save(state, path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="trust-pickle"):
        from_hf(path)
    ours = Wav2Vec2ForPreTraining(Wav2Vec2Config(**OURS_SMALL, feat_proj_layer_norm=False))
    ours.save(tmp_path / "pre")
    with pytest.raises(ConfigError, match="HubertForPreTraining"):
        export_hf(tmp_path / "pre", tmp_path / "hf")
    assert not (tmp_path / "hf").exists()
