"""Self-supervised speech pretraining and CTC fine-tuning end to end through the CLI: tiny
pretraining runs of each objective, a CTC model initialised from one (its encoder weights
really are the pretrained ones), evaluate / transcribe on the CTC run, exact resume, and bad
recipes as exit 2 with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from seqformer.cli import main
from seqformer.data import speech
from seqformer.recipe import load_recipe

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed")

DATA = ["--set", "data.max_words=120", "--set", "data.accents=[en-us]",
        "--set", "data.voices_per_word=1", "--set", "data.batch_size=8"]
SHAPE = ["--set", "model.d_model=16", "--set", "model.heads=2", "--set", "model.layers=1",
         "--set", "model.ffn_dim=32", "--set", "model.conv_dim=[8,8,8,8,8,8,8]",
         "--set", "model.pos_conv_kernel=4", "--set", "model.pos_conv_groups=2"]
TRAIN = ["--set", "train.max_steps=4", "--set", "train.eval_every=2",
         "--set", "train.warmup_steps=1", "--set", "train.progress=false"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected an error message"
    return err[-1]


@pytest.mark.parametrize("name,task", [("hubert-spoken-words", "speech-pretrain"),
                                       ("wav2vec2-spoken-words", "speech-pretrain"),
                                       ("ctc-spoken-words", "speech-ctc")])
def test_bundled_recipes_parse(name: str, task: str) -> None:
    recipe = load_recipe(name)
    assert recipe.task == task
    if task == "speech-pretrain":
        assert recipe.model_config().objective in ("units", "contrastive")
    else:
        assert recipe.init_from == "runs/hubert-spoken-words"


@needs_espeak
@pytest.mark.parametrize("objective", ["contrastive", "units", "reconstruct"])
def test_pretrain_each_objective(objective: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "pre"
    extra = ["--set", "model.num_units=8", "--set", "units.iterations=3"] \
        if objective == "units" else []
    assert main(["train", "hubert-spoken-words", "--out", str(run), *DATA, *SHAPE, *TRAIN,
                 "--set", f"model.objective={objective}", *extra]) == 0
    out = capsys.readouterr().out
    assert "best checkpoint on the validation audio: loss" in out
    config = json.loads((run / "config.json").read_text())
    assert config["family"] == "wav2vec2-pretrain" and config["objective"] == objective
    best = json.loads((run / "valid_metrics.json").read_text())
    assert np.isfinite(best["valid_loss"]) and best["valid_loss"] > 0
    assert (run / "units.safetensors").is_file() == (objective == "units")
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "valid" in r] == [2, 4]


@needs_espeak
def test_finetune_ctc_evaluate_transcribe(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "cache"))
    pre, run = tmp_path / "pre", tmp_path / "ctc"
    assert main(["train", "hubert-spoken-words", "--out", str(pre), *DATA, *SHAPE, *TRAIN,
                 "--set", "model.num_units=8", "--set", "units.iterations=3"]) == 0
    capsys.readouterr()
    assert main(["train", "ctc-spoken-words", "--out", str(run), *DATA, *TRAIN,
                 "--set", f"init_from={pre}", "--set", "data.valid_decode=4",
                 "--set", "decode.beam=3"]) == 0
    out = capsys.readouterr().out
    assert "greedy: CER" in out and "beam3: CER" in out
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert set(metrics) == {"greedy", "beam3"} and metrics["greedy"]["n"] > 0
    assert json.loads((run / "config.json").read_text())["family"] == "wav2vec2-ctc"
    # The frozen feature encoder is exactly the pretrained one; the head is new.
    pretrained, tuned = load_file(pre / "model.safetensors"), load_file(run / "model.safetensors")
    conv = [k for k in tuned if k.startswith("wav2vec2.feature_extractor.")]
    assert conv and all(torch.equal(tuned[k], pretrained[k]) for k in conv)

    assert main(["evaluate", "--model", str(run), "--beam", "1"]) == 0
    assert "recipe's test split" in capsys.readouterr().out

    t = np.arange(8000) / 16000
    wav = tmp_path / "tone.wav"
    speech.write_wav(wav, 0.4 * np.sin(2 * np.pi * 220 * t))
    data = tmp_path / "data.tsv"
    data.write_text(f"{wav}\tcat\n", encoding="utf-8")
    assert main(["evaluate", "--model", str(run), "--data", str(data)]) == 0
    assert "(1 utterances" in capsys.readouterr().out
    assert main(["transcribe", "--model", str(run), str(wav), str(wav)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1] and lines[0].startswith(f"{wav}\t")

    from seqformer.tasks.speech_ctc import CTCTranscriber

    texts = CTCTranscriber.load(run).transcribe([wav, 0.4 * np.sin(2 * np.pi * 220 * t)])
    assert texts[0] == texts[1] == lines[0].split("\t", 1)[1]


@needs_espeak
@pytest.mark.parametrize("recipe,extra", [
    ("ctc-spoken-words", ["--set", "init_from=null", "--set", "freeze=none",
                          "--set", "data.valid_decode=4", "--set", "model.mask_time_prob=0.3",
                          "--set", "model.mask_time_length=2"]),
    ("wav2vec2-spoken-words", []),  # masks, distractors and the Gumbel temperature resume
])
def test_resume_is_exact(recipe: str, extra: list[str], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "cache"))
    common = [*DATA, *SHAPE, *extra, "--set", "train.schedule=constant",
              "--set", "train.warmup_steps=1", "--set", "train.progress=false",
              "--set", "train.eval_every=4", "--set", "train.save_every=2"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert main(["train", recipe, "--out", str(straight), *common,
                 "--set", "train.max_steps=4"]) == 0
    assert main(["train", recipe, "--out", str(split), *common,
                 "--set", "train.max_steps=2"]) == 0
    assert main(["train", recipe, "--out", str(split), *common,
                 "--set", "train.max_steps=4", "--resume"]) == 0
    a, b = load_file(straight / "last" / "model.safetensors"), load_file(
        split / "last" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("override,message", [
    (["--set", "model.objective=cluster"], "model.objective"),
    (["--set", "model.num_units=0"], "model.num_units"),
])
def test_bad_pretrain_recipes(override: list[str], message: str, tmp_path: Path,
                              capsys) -> None:
    assert main(["train", "hubert-spoken-words", "--out", str(tmp_path / "r"),
                 *override]) == 2
    assert message in error_line(capsys)


@pytest.mark.parametrize("override,message", [
    (["--set", "freeze=all"], "freeze="),
    (["--set", "model.d_model=64"], "shape comes from init_from"),
    (["--set", "init_from=/nonexistent/run"], "/nonexistent/run"),
])
def test_bad_ctc_recipes(override: list[str], message: str, tmp_path: Path, monkeypatch,
                         capsys) -> None:
    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "cache"))
    assert main(["train", "ctc-spoken-words", "--out", str(tmp_path / "r"), *DATA,
                 *override]) == 2
    assert message in error_line(capsys)
