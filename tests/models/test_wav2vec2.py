"""wav2vec 2.0 / HuBERT / W2v-Conformer models: frame counts, padding invariance (every encoder
variant, the group-norm first layer included), the mask embedding, intermediate hidden states
against a manual forward, each objective and head trains, W2v-BERT's pieces (the contrastive
objective exactly when it has every layer and no MLM weight, the quantizer's argmax codes as
targets, gradients split between the modules), the Gumbel schedule, save/load, backbones moving
from a pretraining run into fine-tuning models, and one-line config errors. Parity with Hugging
Face is in tests/interop/test_hf_wav2vec2.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqformer.errors import CheckpointError, ConfigError
from seqformer.models.wav2vec2 import (
    Wav2Vec2Config,
    Wav2Vec2ForClassification,
    Wav2Vec2ForCTC,
    Wav2Vec2ForPreTraining,
    Wav2Vec2Model,
    WaveBatch,
    backbone_config,
    frame_lengths,
    load_backbone,
    load_wav2vec2,
    read_wav2vec2_config,
)

SMALL = dict(conv_dim=(8, 8, 8), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), d_model=16,
             heads=2, layers=2, ffn_dim=32, pos_conv_kernel=8, pos_conv_groups=2, dropout=0.0,
             attention_dropout=0.0, codevectors_per_group=8, codevector_dim=8,
             proj_codevector_dim=8, num_negatives=5, classifier_proj_size=8, depthwise_kernel=5)
LENGTHS = torch.tensor([800, 700, 555, 333])
T = 39  # frames of 800 samples: (800 - 10) // 5 + 1 = 159 -> 79 -> 39


def config(**overrides) -> Wav2Vec2Config:
    return Wav2Vec2Config(**{**SMALL, **overrides})


def padded_waves() -> torch.Tensor:
    w = torch.randn(len(LENGTHS), int(LENGTHS.max()), generator=torch.Generator().manual_seed(0))
    return w * (torch.arange(w.shape[1]) < LENGTHS.unsqueeze(1))


def spans(frames: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A (B, T) mask of 3-frame spans inside each row's valid frames."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.zeros(len(frames), T, dtype=torch.bool)
    for b, n in enumerate(frames.tolist()):
        for start in torch.randint(0, n - 3, (3,), generator=g).tolist():
            mask[b, start:start + 3] = True
    return mask


def negatives(mask: torch.Tensor, k: int = 5, seed: int = 0) -> torch.Tensor:
    """HF's convention: for each masked frame, k other masked frames of the same row, as
    indices into the flattened (B * T) frames."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(*mask.shape, k, dtype=torch.long)
    for b in range(len(mask)):
        where = mask[b].nonzero().squeeze(1)
        for t in where.tolist():
            others = where[where != t]
            out[b, t] = others[torch.randint(0, len(others), (k,), generator=g)] + b * T
    return out


def test_frame_lengths_follow_the_strided_convs() -> None:
    default = Wav2Vec2Config()
    assert default.receptive_field == 400 and default.samples_per_frame == 320
    assert frame_lengths(default, torch.tensor([400, 16000, 16319])).tolist() == [1, 49, 50]
    assert frame_lengths(config(), LENGTHS).tolist() == [39, 34, 26, 15]


@pytest.mark.parametrize("overrides", [
    {"feat_extract_norm": "group"},
    {"feat_extract_norm": "layer", "norm_first": True, "conv_bias": True},
    {"encoder_block": "conformer", "activation": "silu"},
    {"feat_proj_layer_norm": False, "pos_conv_kernel": 7},
], ids=["group-postLN", "layer-preLN", "conformer", "no-proj-norm-odd-pos-conv"])
def test_padding_does_not_change_an_utterance(overrides) -> None:
    torch.manual_seed(0)
    model = Wav2Vec2Model(config(**overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():  # norms and biases off their init
            p.add_(0.1 * torch.randn_like(p))
    waves = padded_waves()
    mask = spans(frame_lengths(model.config, LENGTHS))
    with torch.no_grad():
        hidden, extract, valid = model(waves, LENGTHS, mask)
        assert valid.sum(1).tolist() == frame_lengths(model.config, LENGTHS).tolist()
        for b, n in enumerate(LENGTHS.tolist()):
            frames = int(valid[b].sum())
            alone, alone_extract, _ = model(waves[b:b + 1, :n], None, mask[b:b + 1, :frames])
            assert float((hidden[b, :frames] - alone[0]).abs().max()) <= 1e-5
            assert float((extract[b, :frames] - alone_extract[0]).abs().max()) <= 1e-5


def test_masked_frames_get_the_mask_embedding() -> None:
    torch.manual_seed(0)
    model = Wav2Vec2Model(config()).eval()
    seen = []
    model.pos_conv.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    mask = spans(torch.full((4,), T))
    waves = torch.randn(4, 800)
    with torch.no_grad():
        masked, _, _ = model(waves, mask_time=mask)
        plain, _, _ = model(waves)
    encoder_in, unmasked_in = seen
    assert torch.equal(encoder_in[mask], model.masked_spec_embed.expand(int(mask.sum()), -1))
    assert torch.equal(encoder_in[~mask], unmasked_in[~mask])
    assert not torch.allclose(masked, plain)


VARIANTS = [{"feat_extract_norm": "group"},
            {"feat_extract_norm": "layer", "norm_first": True, "conv_bias": True},
            {"encoder_block": "conformer", "activation": "silu"}]


def manual_layers(model: Wav2Vec2Model, waves: torch.Tensor, n: int) -> torch.Tensor:
    """The first ``n`` encoder layers run by hand from the model's modules (an unpadded
    batch, eval mode), with the final LayerNorm of a pre-LN / Conformer model only at the
    top."""
    c = model.config
    features = model.feature_extractor(waves).transpose(1, 2)
    x, _ = model.feature_projection(features)
    if c.encoder_block == "conformer":
        for layer in model.encoder.layers[:n]:
            x = layer(x)
        return model.layer_norm(x) if n == c.layers else x
    x = x + model.pos_conv(x)
    if not c.norm_first:
        x = model.layer_norm(x)
    for layer in model.encoder.layers[:n]:
        x, _ = layer(x)
    return model.layer_norm(x) if c.norm_first and n == c.layers else x


@pytest.mark.parametrize("overrides", VARIANTS, ids=["group-postLN", "layer-preLN", "conformer"])
def test_hidden_states_equal_a_manual_forward_through_the_first_layers(overrides) -> None:
    torch.manual_seed(0)
    model = Wav2Vec2Model(config(layers=3, **overrides)).eval()
    waves = torch.randn(2, 800, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        states, extract, valid = model.hidden_states(waves)
        last, last_extract, last_valid = model(waves)
        assert len(states) == 4 and torch.equal(states[-1], last)
        assert torch.equal(extract, last_extract) and torch.equal(valid, last_valid)
        for n in range(1, 4):
            upto, _, _ = model.hidden_states(waves, upto=n)
            assert len(upto) == n + 1 and torch.equal(upto[n], states[n])
            assert float((states[n] - manual_layers(model, waves, n)).abs().max()) <= 1e-6
    with pytest.raises(ValueError, match="upto"):
        model.hidden_states(waves, upto=4)


def train_steps(model: torch.nn.Module, batch: WaveBatch, steps: int = 8) -> tuple[float, float]:
    """Loss on ``batch`` in eval mode before and after ``steps`` Adam steps on it."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.eval()
    with torch.no_grad():
        before = float(model(batch).loss)
    model.train()
    for step in range(steps):
        if isinstance(model, Wav2Vec2ForPreTraining):
            model.set_gumbel_temperature(step)
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return before, float(model(batch).loss)


@pytest.mark.parametrize("head", ["contrastive", "units", "reconstruct", "w2v-bert", "ctc",
                                  "classify"])
def test_each_objective_and_head_learns_a_tiny_batch(head) -> None:
    torch.manual_seed(0)
    waves = padded_waves()
    mask = spans(frame_lengths(config(), LENGTHS))
    if head == "contrastive":
        model = Wav2Vec2ForPreTraining(config())
        batch = WaveBatch(waves, LENGTHS, mask_time=mask, negatives=negatives(mask))
    elif head == "units":
        model = Wav2Vec2ForPreTraining(config(objective="units", num_units=6, unit_dim=8))
        units = torch.randint(0, 6, (4, T)).masked_fill(torch.rand(4, T) < 0.2, -100)
        batch = WaveBatch(waves, LENGTHS, mask_time=mask, units=units)
    elif head == "reconstruct":
        model = Wav2Vec2ForPreTraining(config(objective="reconstruct", target_dim=5))
        batch = WaveBatch(waves, LENGTHS, mask_time=mask, targets=torch.randn(4, T, 5))
    elif head == "w2v-bert":
        model = Wav2Vec2ForPreTraining(config(objective="w2v-bert", contrastive_layers=1))
        batch = WaveBatch(waves, LENGTHS, mask_time=mask, negatives=negatives(mask))
    elif head == "ctc":
        model = Wav2Vec2ForCTC(config(vocab_size=6))
        text = torch.tensor([[1, 2, 3], [2, 3, 0], [4, 0, 0], [5, 5, 1]])
        batch = WaveBatch(waves, LENGTHS, mask_time=mask, text=text)
    else:
        model = Wav2Vec2ForClassification(config(num_labels=3))
        batch = WaveBatch(waves, LENGTHS, labels=torch.tensor([0, 1, 2, 1]))
    before, after = train_steps(model, batch)
    assert after < before
    out = model(batch)
    if head in ("contrastive", "units", "reconstruct", "w2v-bert"):
        assert out.n_tokens == int(mask.sum()) - (int((batch.units[mask] == -100).sum())
                                                  if head == "units" else 0)
    if head == "contrastive":
        assert set(out.metrics) == {"contrastive_loss", "diversity_loss", "perplexity",
                                    "accuracy"}
        assert out.logits.shape == (4, T, 6)
    if head == "w2v-bert":  # both modules' metrics; code logits per group
        assert set(out.metrics) == {"contrastive_loss", "diversity_loss", "perplexity",
                                    "accuracy", "mlm_loss", "code_accuracy"}
        assert out.logits.shape == (4, T, 2, 8)
    if head == "ctc":
        assert out.n_tokens == 9 and out.logits.shape == (4, T, 6)


def test_every_parameter_gets_a_gradient_without_a_mask() -> None:
    """DDP refuses parameters without gradients: the mask embedding joins the graph even when a
    fine-tuning batch masks nothing."""
    model = Wav2Vec2ForClassification(config(num_labels=3)).train()
    model(WaveBatch(padded_waves(), LENGTHS, labels=torch.tensor([0, 1, 2, 1]))).loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []


@pytest.mark.parametrize("train", [False, True])
def test_w2v_bert_with_every_layer_contrastive_and_no_mlm_is_the_contrastive_objective(
        train: bool) -> None:
    torch.manual_seed(0)
    ours = Wav2Vec2ForPreTraining(config(objective="w2v-bert", contrastive_layers=2,
                                         mlm_weight=0.0))
    plain = Wav2Vec2ForPreTraining(config())
    missing, unexpected = plain.load_state_dict(ours.state_dict(), strict=False)
    assert missing == [] and unexpected == ["mlm_head.weight", "mlm_head.bias"]
    ours.train(train), plain.train(train)
    ours.set_gumbel_temperature(3), plain.set_gumbel_temperature(3)
    mask = spans(frame_lengths(config(), LENGTHS))
    batch = WaveBatch(padded_waves(), LENGTHS, mask_time=mask, negatives=negatives(mask))
    torch.manual_seed(7)  # the same Gumbel draws in training
    got = ours(batch)
    torch.manual_seed(7)
    expected = plain(batch)
    assert torch.equal(got.loss, expected.loss) and got.n_tokens == expected.n_tokens
    assert torch.equal(got.hidden, expected.hidden)
    for key, value in expected.metrics.items():
        assert got.metrics[key] == value
    assert got.metrics["mlm_loss"] > 0


def test_w2v_bert_predicts_the_quantizers_argmax_codes_from_the_top_layer() -> None:
    torch.manual_seed(0)
    model = Wav2Vec2ForPreTraining(config(objective="w2v-bert", contrastive_layers=1,
                                          mlm_weight=0.5)).train()
    model.set_gumbel_temperature(0)
    mask = spans(frame_lengths(config(), LENGTHS))
    batch = WaveBatch(padded_waves(), LENGTHS, mask_time=mask, negatives=negatives(mask))
    out = model(batch)
    with torch.no_grad():
        states, extract, valid = model.wav2vec2.hidden_states(batch.waves, LENGTHS, mask)
        scored = mask & valid
        ids = model.quantizer.weight_proj(extract).view(4, T, 2, 8).argmax(-1)
        assert torch.equal(model.quantizer.code_ids(extract), ids)
        logits = model.mlm_head(states[2]).view(4, T, 2, 8)
        assert torch.equal(out.logits, logits)
        ce = torch.nn.functional.cross_entropy(logits[scored].reshape(-1, 8),
                                               ids[scored].reshape(-1))
        per_group = [torch.nn.functional.cross_entropy(logits[scored][:, g], ids[scored][:, g])
                     for g in range(2)]
    assert out.metrics["mlm_loss"] == pytest.approx(float(ce), rel=1e-6)
    assert float(ce) == pytest.approx(float(sum(per_group)) / 2, rel=1e-6)
    accuracy = logits[scored].argmax(-1).eq(ids[scored]).float().mean()
    assert out.metrics["code_accuracy"] == pytest.approx(float(accuracy))
    total = (out.metrics["contrastive_loss"] + 0.1 * out.metrics["diversity_loss"]
             + 0.5 * out.metrics["mlm_loss"])
    assert float(out.loss.detach()) == pytest.approx(total, rel=1e-5)


def test_w2v_bert_every_parameter_gets_a_gradient_and_the_modules_split() -> None:
    torch.manual_seed(0)
    mask = spans(frame_lengths(config(), LENGTHS))
    batch = WaveBatch(padded_waves(), LENGTHS, mask_time=mask, negatives=negatives(mask))
    model = Wav2Vec2ForPreTraining(config(objective="w2v-bert", contrastive_layers=1)).train()
    model(batch).loss.backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    assert all(float(p.grad.abs().sum()) > 0 for n, p in model.named_parameters()
               if n.startswith(("wav2vec2.encoder.layers.1.", "mlm_head.", "project_hid.")))
    # Without the MLM term the layer above the contrastive module learns nothing.
    model = Wav2Vec2ForPreTraining(config(objective="w2v-bert", contrastive_layers=1,
                                          mlm_weight=0.0)).train()
    model(batch).loss.backward()
    upper = [p.grad for n, p in model.named_parameters()
             if n.startswith("wav2vec2.encoder.layers.1.")]
    assert upper and all(float(g.abs().sum()) == 0 for g in upper)
    assert float(model.wav2vec2.encoder.layers[0].ffn.linear1.weight.grad.abs().sum()) > 0


def test_w2v_bert_contrastive_layers_default_to_half_the_encoder() -> None:
    assert config(layers=4).split_layer == 2 and config(layers=1).split_layer == 1
    assert config(layers=4, contrastive_layers=3).split_layer == 3


def test_gumbel_temperature_anneals_to_its_floor() -> None:
    model = Wav2Vec2ForPreTraining(config(gumbel_temperature=(2.0, 0.5, 0.9)))
    model.set_gumbel_temperature(0)
    assert model.quantizer.temperature == 2.0
    model.set_gumbel_temperature(3)
    assert model.quantizer.temperature == pytest.approx(2.0 * 0.9 ** 3)
    model.set_gumbel_temperature(10_000)
    assert model.quantizer.temperature == 0.5


def test_contrastive_needs_negatives_and_targets_equal_to_the_positive_are_ignored() -> None:
    model = Wav2Vec2ForPreTraining(config()).eval()
    mask = spans(torch.full((4,), T))
    with pytest.raises(ValueError, match="negatives"):
        model(WaveBatch(torch.randn(4, 800), torch.full((4,), 800), mask_time=mask))
    # Every distractor is the frame itself: all -inf, only the positive is left.
    flat = torch.arange(4 * T).view(4, T, 1).expand(4, T, 5)
    out = model(WaveBatch(torch.randn(4, 800), torch.full((4,), 800), mask_time=mask,
                          negatives=flat))
    assert out.metrics["contrastive_loss"] == 0.0 and out.metrics["accuracy"] == 1.0


def test_save_load_and_the_backbone_moves_into_fine_tuning_models(tmp_path: Path) -> None:
    torch.manual_seed(0)
    pre = Wav2Vec2ForPreTraining(config(objective="units", num_units=6, unit_dim=8))
    pre.save(tmp_path / "pre", {"sample_rate": 16000, "normalize": True})
    loaded = load_wav2vec2(tmp_path / "pre")
    assert isinstance(loaded, Wav2Vec2ForPreTraining)
    assert all(torch.equal(a, b) for a, b in zip(pre.state_dict().values(),
                                                 loaded.state_dict().values(), strict=True))
    assert read_wav2vec2_config(tmp_path / "pre")["features"]["sample_rate"] == 16000

    fine = backbone_config(tmp_path / "pre", vocab_size=5, mask_time_prob=0.05)
    ctc = Wav2Vec2ForCTC(fine)
    head_before = ctc.lm_head.weight.clone()
    assert ctc.load_backbone(tmp_path / "pre") is ctc
    assert all(torch.equal(a, b) for a, b in zip(pre.wav2vec2.state_dict().values(),
                                                 ctc.wav2vec2.state_dict().values(), strict=True))
    assert torch.equal(ctc.lm_head.weight, head_before)
    classifier = load_backbone(Wav2Vec2ForClassification(
        backbone_config(tmp_path / "pre", num_labels=2), ["a", "b"]), tmp_path / "pre")
    assert torch.equal(classifier.wav2vec2.masked_spec_embed, pre.wav2vec2.masked_spec_embed)
    # ... and from a bare encoder directory, into a bare encoder.
    pre.wav2vec2.save(tmp_path / "encoder")
    encoder = load_backbone(Wav2Vec2Model(fine), tmp_path / "encoder")
    assert torch.equal(encoder.layer_norm.weight, pre.wav2vec2.layer_norm.weight)

    with pytest.raises(CheckpointError, match="model.d_model=16 but") as err:
        Wav2Vec2ForCTC(config(d_model=32, vocab_size=5)).load_backbone(tmp_path / "pre")
    assert "\n" not in str(err.value) and "pre/config.json" in str(err.value)
    with pytest.raises(CheckpointError, match="norm_first"):
        Wav2Vec2ForCTC(config(norm_first=True, vocab_size=5)).load_backbone(tmp_path / "pre")
    # Same fields, a weight of another shape in the file: check_state names it and the file.
    state = {k: v for k, v in pre.state_dict().items()}
    state["wav2vec2.masked_spec_embed"] = torch.zeros(3)
    from seqformer.training.checkpoint import save_weights

    save_weights(state, tmp_path / "pre" / "model.safetensors")
    with pytest.raises(CheckpointError, match="masked_spec_embed.*model.safetensors|"
                                              "model.safetensors.*masked_spec_embed"):
        Wav2Vec2ForCTC(fine).load_backbone(tmp_path / "pre")


def test_classifier_predicts_and_pools_only_valid_frames() -> None:
    torch.manual_seed(0)
    model = Wav2Vec2ForClassification(config(num_labels=3), ["a", "b", "c"]).eval()
    waves = padded_waves()
    with torch.no_grad():
        batch = model.logits(waves, LENGTHS)
        alone = torch.cat([model.logits(waves[b:b + 1, :n]) for b, n in
                           enumerate(LENGTHS.tolist())])
    assert float((batch - alone).abs().max()) <= 1e-5
    assert model.predict(waves[:1]).shape == (1,)


def test_wave_batch_moves_and_counts_clips() -> None:
    batch = WaveBatch(torch.zeros(3, 500), torch.full((3,), 500), labels=torch.zeros(3).long())
    moved = batch.to("cpu")
    assert moved.labels is not None and moved.units is None
    assert len(moved) == moved.n_tgt_tokens == 3 and WaveBatch.count_unit == "clips"


@pytest.mark.parametrize("overrides, message", [
    ({"conv_kernel": (10, 3)}, "one entry per conv layer"),
    ({"feat_extract_norm": "batch"}, "feat_extract_norm"),
    ({"objective": "mlm"}, "model.objective"),
    ({"depthwise_kernel": 4}, "depthwise_kernel"),
    ({"pos_conv_groups": 3}, "pos_conv_groups"),
    ({"codevector_dim": 9}, "codevector_dim"),
    ({"gumbel_temperature": (0.5, 2.0, 0.9)}, "gumbel_temperature"),
    ({"ctc_reduction": "none"}, "ctc_reduction"),
    ({"contrastive_layers": 3}, "contrastive_layers"),
    ({"contrastive_layers": 0}, "contrastive_layers"),
    ({"mlm_weight": -1.0}, "mlm_weight"),
])
def test_bad_configs_are_one_line_errors(overrides, message) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        config(**overrides)
    assert "\n" not in str(err.value)


def test_heads_need_their_sizes_and_short_audio_is_refused() -> None:
    with pytest.raises(ConfigError, match="vocab_size"):
        Wav2Vec2ForCTC(config())
    with pytest.raises(ConfigError, match="num_labels"):
        Wav2Vec2ForClassification(config())
    with pytest.raises(ConfigError, match="num_units"):
        Wav2Vec2ForPreTraining(config(objective="units"))
    with pytest.raises(ConfigError, match="target_dim"):
        Wav2Vec2ForPreTraining(config(objective="reconstruct"))
    with pytest.raises(ValueError, match="receptive field"):
        Wav2Vec2Model(config())(torch.zeros(2, 40), torch.tensor([40, 20]))
