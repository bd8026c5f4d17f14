"""Decision Transformer: Hugging Face parity, causality, padding, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seqformer.errors import CheckpointError, ConfigError
from seqformer.models.decision import DecisionBatch, DecisionTransformer, DecisionTransformerConfig

transformers = pytest.importorskip("transformers")


def tiny(**kw) -> DecisionTransformerConfig:
    fields = {"state_dim": 3, "act_dim": 4, "d_model": 16, "heads": 2, "layers": 2,
              "ffn_dim": 32, "context": 5, "max_ep_len": 20, "dropout": 0.0,
              "attention_dropout": 0.0, **kw}
    return DecisionTransformerConfig(**fields)


def inputs(batch: int = 3, steps: int = 5, state_dim: int = 3, act_dim: int = 2,
           discrete: bool = False, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    states = torch.randn(batch, steps, state_dim, generator=g)
    actions = (torch.randint(0, act_dim, (batch, steps), generator=g) if discrete
               else torch.rand(batch, steps, act_dim, generator=g) * 2 - 1)
    rtg = torch.randn(batch, steps, generator=g)
    timesteps = torch.randint(0, 20, (batch, steps), generator=g)
    mask = torch.ones(batch, steps, dtype=torch.bool)
    mask[1, :2] = False  # padding comes first, as at an episode's start
    mask[2, :4] = False
    return states, actions, rtg, timesteps, mask


def test_hf_parity_with_padding() -> None:
    from seqformer.interop.hf_decision import from_hf_model

    torch.manual_seed(0)
    cfg = transformers.DecisionTransformerConfig(
        state_dim=3, act_dim=2, hidden_size=32, n_layer=2, n_head=2, max_ep_len=20,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = transformers.DecisionTransformerModel(cfg).eval()
    with torch.no_grad():  # HF's init leaves biases and the position row at zero: perturb all
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    ours = from_hf_model(hf, context=5)
    assert ours.config.action == "continuous" and ours.config.activation == "relu"
    states, actions, rtg, timesteps, mask = inputs()
    with torch.no_grad():
        _, expected, _ = hf(states=states, actions=actions, returns_to_go=rtg.unsqueeze(-1),
                            timesteps=timesteps, attention_mask=mask.long(), return_dict=False)
        got = ours.predict(states, actions, rtg, timesteps, mask)
    assert torch.isfinite(got).all()
    scale = expected[mask].abs().max()
    assert ((got[mask] - expected[mask]).abs().max() / scale) < 1e-5


def test_hf_mapping_refuses_other_checkpoints() -> None:
    from seqformer.interop.hf_decision import state_from_hf

    with pytest.raises(CheckpointError):
        state_from_hf({"encoder.h.0.attn.c_attn.weight": torch.zeros(1)}, tiny())


@pytest.mark.parametrize("action", ["discrete", "continuous"])
def test_causal_action_at_t_does_not_change_predictions_up_to_t(action: str) -> None:
    torch.manual_seed(0)
    model = DecisionTransformer(tiny(action=action, act_dim=2)).eval()
    states, actions, rtg, timesteps, _ = inputs(discrete=action == "discrete")
    before = model.predict(states, actions, rtg, timesteps)
    t = 2
    changed = actions.clone()
    if action == "discrete":
        changed[:, t:] = 1 - changed[:, t:]
    else:
        changed[:, t:] = -changed[:, t:] + 0.3
    after = model.predict(states, changed, rtg, timesteps)
    assert torch.equal(before[:, :t + 1], after[:, :t + 1])
    assert not torch.allclose(before[:, t + 1:], after[:, t + 1:])  # later steps do see it


def test_left_padding_equals_the_unpadded_window() -> None:
    torch.manual_seed(0)
    model = DecisionTransformer(tiny()).eval()
    states, actions, rtg, timesteps, mask = inputs(discrete=True, act_dim=4)
    padded = model.predict(states, actions, rtg, timesteps, mask)
    short = model.predict(states[1:2, 2:], actions[1:2, 2:], rtg[1:2, 2:], timesteps[1:2, 2:])
    torch.testing.assert_close(padded[1, 2:], short[0], atol=1e-5, rtol=1e-5)
    # Garbage under the padding changes nothing.
    noisy = states.clone()
    noisy[1, :2] = 100.0
    torch.testing.assert_close(model.predict(noisy, actions, rtg, timesteps, mask)[1, 2:],
                               padded[1, 2:])


def test_loss_ignores_padding_and_trains() -> None:
    torch.manual_seed(0)
    model = DecisionTransformer(tiny())
    states, actions, rtg, timesteps, mask = inputs(discrete=True, act_dim=4)
    actions = actions.masked_fill(~mask, -1)
    batch = DecisionBatch(states, actions, rtg, timesteps, mask)
    out = model(batch)
    assert out.n_tokens == int(mask.sum()) and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = DecisionTransformer(tiny(return_scale=5.0)).eval()
    model.save(tmp_path / "m")
    loaded = DecisionTransformer.load(tmp_path / "m")
    assert loaded.config == model.config
    args = inputs(discrete=True, act_dim=4)
    assert torch.equal(model.predict(*args), loaded.predict(*args))
    assert '"family": "decision"' in (tmp_path / "m" / "config.json").read_text()


@pytest.mark.parametrize("bad", [{"action": "both"}, {"context": 0}, {"state_dim": 0},
                                 {"d_model": 15}, {"return_scale": 0.0}])
def test_config_errors(bad: dict) -> None:
    with pytest.raises(ConfigError):
        tiny(**bad)
