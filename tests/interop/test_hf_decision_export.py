"""Decision Transformer export to Hugging Face: ``DecisionTransformerModel.from_pretrained``
reads it and predicts our actions (continuous, and discrete as one-hot in / logits out);
export -> import returns the same weights and config; the CLI does both; ``evaluate`` refuses
an imported model in one line (it rolls out only a run's own gridworld)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from seqformer.cli import main
from seqformer.interop import hf_decision
from seqformer.interop.hf import export_hf, import_hf
from seqformer.models.decision import DecisionTransformer, DecisionTransformerConfig

transformers = pytest.importorskip("transformers")

SCALE = 10.0


def run_dir(tmp_path: Path, action: str) -> Path:
    """A small random model, every parameter (biases and LayerNorms too) off its init."""
    torch.manual_seed(0)
    config = DecisionTransformerConfig(
        state_dim=3, act_dim=2, action=action, d_model=16, heads=2, layers=2, ffn_dim=32,
        context=5, max_ep_len=20, dropout=0.0, attention_dropout=0.0, return_scale=SCALE)
    model = DecisionTransformer(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    out = tmp_path / f"run-{action}"
    model.save(out)
    return out


def inputs(action: str):
    g = torch.Generator().manual_seed(1)
    states = torch.randn(3, 5, 3, generator=g)
    returns = torch.randn(3, 5, generator=g) * SCALE
    timesteps = torch.randint(0, 20, (3, 5), generator=g)
    mask = torch.ones(3, 5, dtype=torch.bool)
    mask[1, :2] = False  # padding first, as at an episode's start
    mask[2, :4] = False
    if action == "discrete":
        actions = torch.randint(0, 2, (3, 5), generator=g).masked_fill(~mask, -1)
    else:
        actions = torch.rand(3, 5, 2, generator=g) * 2 - 1
    return states, actions, returns, timesteps, mask


def hf_predictions(hf, model: DecisionTransformer, action: str) -> tuple[torch.Tensor, ...]:
    """(ours, theirs, mask): HF is called the documented way -- returns divided by
    return_scale, discrete actions one-hot (zeros at padding)."""
    states, actions, returns, timesteps, mask = inputs(action)
    with torch.no_grad():
        ours = model.predict(states, actions, returns, timesteps, mask)
        _, theirs, _ = hf(states=states, actions=model.action_vectors(actions),
                          returns_to_go=(returns / SCALE).unsqueeze(-1), timesteps=timesteps,
                          attention_mask=mask.long(), return_dict=False)
    return ours, theirs, mask


@pytest.mark.parametrize("action", ["continuous", "discrete"])
def test_transformers_reads_the_export_with_our_predictions(tmp_path: Path, action: str,
                                                            one_thread) -> None:
    run = run_dir(tmp_path, action)
    assert export_hf(run, tmp_path / "hf") == "decision_transformer"
    hf = transformers.DecisionTransformerModel.from_pretrained(tmp_path / "hf").eval()
    assert hf.config.action_tanh is (action == "continuous")
    ours, theirs, mask = hf_predictions(hf, DecisionTransformer.load(run), action)
    assert float((ours[mask] - theirs[mask]).abs().max()) <= 1e-5
    if action == "discrete":
        assert torch.equal(ours[mask].argmax(-1), theirs[mask].argmax(-1))


@pytest.mark.parametrize("action", ["continuous", "discrete"])
def test_export_then_import_gives_identical_weights(tmp_path: Path, action: str,
                                                    one_thread) -> None:
    run = run_dir(tmp_path, action)
    export_hf(run, tmp_path / "hf")
    assert not list((tmp_path / "hf").glob("*.bin"))  # safetensors only, no pickle
    before, after = DecisionTransformer.load(run), hf_decision.load(tmp_path / "hf")
    assert after.config == before.config  # context, return_scale, action came back too
    for (name, a), (_, b) in zip(before.state_dict().items(), after.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_cli_export(tmp_path: Path, capsys, one_thread) -> None:
    run = run_dir(tmp_path, "discrete")
    assert main(["export", str(run), "--out", str(tmp_path / "hf")]) == 0
    assert "model_type decision_transformer" in capsys.readouterr().out
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["seqformer"] == {"context": 5, "return_scale": SCALE, "action": "discrete"}
    hf = transformers.DecisionTransformerModel.from_pretrained(tmp_path / "hf").eval()
    ours, theirs, mask = hf_predictions(hf, DecisionTransformer.load(run), "discrete")
    assert float((ours[mask] - theirs[mask]).abs().max()) <= 1e-5


@pytest.mark.parametrize("action", ["continuous", "discrete"])
def test_seqformer_import_of_an_export_gives_identical_weights(tmp_path: Path, action: str,
                                                               one_thread) -> None:
    run = run_dir(tmp_path, action)
    export_hf(run, tmp_path / "hf")
    assert import_hf(tmp_path / "hf", tmp_path / "back") == "decision"
    before, after = DecisionTransformer.load(run), DecisionTransformer.load(tmp_path / "back")
    assert after.config == before.config
    for (name, a), (_, b) in zip(before.state_dict().items(), after.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


def test_cli_import_then_evaluate_refuses_in_one_line(tmp_path: Path, capsys,
                                                      one_thread) -> None:
    run = run_dir(tmp_path, "discrete")
    export_hf(run, tmp_path / "hf")
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "back")]) == 0
    assert "DecisionTransformer.load(" in capsys.readouterr().out
    ours, theirs, mask = hf_predictions(
        transformers.DecisionTransformerModel.from_pretrained(tmp_path / "hf").eval(),
        DecisionTransformer.load(tmp_path / "back"), "discrete")
    assert float((ours[mask] - theirs[mask]).abs().max()) <= 1e-5
    capsys.readouterr()  # transformers' loading progress
    # No recipe.yaml: no gridworld to roll out in.
    assert main(["evaluate", "--model", str(tmp_path / "back")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no recipe.yaml" in err and len(err.splitlines()) == 1
    # A gridworld recipe beside a model of other sizes: refused, not a shape traceback.
    shutil.copy(Path(__file__).parents[2] / "src/seqformer/recipes/dt-gridworld.yaml",
                tmp_path / "back" / "recipe.yaml")
    assert main(["evaluate", "--model", str(tmp_path / "back")]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot act in the recipe's 5x5 gridworld" in err and len(err.splitlines()) == 1
