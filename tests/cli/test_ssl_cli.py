"""Self-supervised speech pretraining and CTC fine-tuning end to end through the CLI: tiny
pretraining runs of each objective (W2v-BERT included), HuBERT's second iteration on a previous
run's hidden states, a CTC model initialised from one (its encoder weights really are the
pretrained ones), evaluate / transcribe on the CTC run, exact resume, and bad recipes as exit
2 with one line (a bad units.layer before any audio is synthesised)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import error_line
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


@pytest.mark.parametrize("name,task", [("hubert-spoken-words", "speech-pretrain"),
                                       ("wav2vec2-spoken-words", "speech-pretrain"),
                                       ("w2v-bert-spoken-words", "speech-pretrain"),
                                       ("ctc-spoken-words", "speech-ctc")])
def test_bundled_recipes_parse(name: str, task: str) -> None:
    recipe = load_recipe(name)
    assert recipe.task == task
    if task == "speech-pretrain":
        config = recipe.model_config()
        assert config.objective == name.removesuffix("-spoken-words").replace(
            "hubert", "units").replace("wav2vec2", "contrastive")
        if config.objective == "w2v-bert":
            assert config.split_layer == 2 and config.layers == 4
    else:
        assert recipe.init_from == "runs/hubert-spoken-words"


@needs_espeak
@pytest.mark.parametrize("objective", ["contrastive", "units", "reconstruct", "w2v-bert"])
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
    if objective == "w2v-bert":  # both modules report
        assert {"valid_accuracy", "valid_code_accuracy", "valid_mlm_loss"} <= set(best)


@needs_espeak
def test_hubert_second_iteration_clusters_a_previous_runs_layer(tmp_path: Path, monkeypatch,
                                                                capsys) -> None:
    from seqformer.training.checkpoint import file_sha256

    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "cache"))
    first, second = tmp_path / "iter1", tmp_path / "iter2"
    assert main(["train", "hubert-spoken-words", "--out", str(first), *DATA, *SHAPE, *TRAIN,
                 "--set", "model.layers=2", "--set", "model.num_units=8",
                 "--set", "units.iterations=3"]) == 0
    capsys.readouterr()
    assert main(["train", "hubert-spoken-words", "--out", str(second), *DATA, *SHAPE, *TRAIN,
                 "--set", "model.num_units=6", "--set", "units.iterations=3",
                 "--set", f"units.from_run={first}", "--set", "units.layer=1"]) == 0
    captured = capsys.readouterr()
    assert "best checkpoint on the validation audio: loss" in captured.out
    assert "units: features of encoder layer 1/2" in captured.err
    centroids = load_file(second / "units.safetensors")["centroids"]
    assert centroids.shape == (6, 16)  # six units of the first run's 16-dim hidden states
    record = json.loads((second / "units.json").read_text())
    assert record["from_run"] == str(first.resolve()) and record["layer"] == 1
    assert record["source_weights_sha256"] == file_sha256(first / "model.safetensors")
    assert "layer 1" in record["features"] and len(record["mean"]) == 16
    log = [json.loads(line) for line in (second / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "valid" in r] == [2, 4]
    assert np.isfinite(json.loads((second / "valid_metrics.json").read_text())["valid_loss"])
    # Resuming must cluster the same layer of the same run.
    assert main(["train", "hubert-spoken-words", "--out", str(second), *DATA, *SHAPE, *TRAIN,
                 "--set", "model.num_units=6", "--set", "units.iterations=3",
                 "--set", f"units.from_run={first}", "--set", "units.layer=2",
                 "--set", "train.max_steps=6", "--resume"]) == 2
    assert "records layer=1" in error_line(capsys)


def test_bad_units_layer_fails_before_any_audio(tmp_path: Path, monkeypatch, capsys) -> None:
    from seqformer.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2Model

    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "cache"))
    encoder = tmp_path / "encoder"  # a bare encoder, as `seqformer import` writes one
    Wav2Vec2Model(Wav2Vec2Config(d_model=16, heads=2, layers=2, ffn_dim=32,
                                 conv_dim=(8,) * 7, pos_conv_kernel=4,
                                 pos_conv_groups=2)).save(encoder, {"sample_rate": 16000,
                                                                    "normalize": True})
    base = ["train", "hubert-spoken-words", "--out", str(tmp_path / "r"), *DATA, *SHAPE,
            "--set", f"units.from_run={encoder}"]
    assert main([*base, "--set", "units.layer=3"]) == 2
    line = error_line(capsys)
    assert "units.layer=3" in line and "2 layers" in line
    assert main([*base, "--set", "model.conv_stride=[5,2,2,2,2,2,3]"]) == 2
    assert "model.conv_stride" in error_line(capsys)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "r").exists()


@needs_espeak
def test_finetune_ctc_evaluate_transcribe(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "cache"))
    pre, run = tmp_path / "pre", tmp_path / "ctc"
    assert main(["train", "hubert-spoken-words", "--out", str(pre), *DATA, *SHAPE, *TRAIN,
                 "--set", "model.num_units=8", "--set", "units.iterations=3"]) == 0
    capsys.readouterr()
    assert main(["train", "ctc-spoken-words", "--out", str(run), *DATA, *TRAIN,
                 "--set", f"init_from={pre}", "--set", "freeze=feature-encoder",
                 "--set", "data.valid_decode=4", "--set", "decode.beam=3"]) == 0
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
    ("w2v-bert-spoken-words", ["--set", "model.layers=2", "--set", "model.contrastive_layers=1"]),
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
    (["--set", "model.objective=w2v-bert", "--set", "model.contrastive_layers=5"],
     "model.contrastive_layers"),
    (["--set", "model.objective=contrastive", "--set", "units.from_run=runs/x"],
     "units.from_run"),
    (["--set", "units.layer=2"], "units.layer"),
    (["--set", "units.from_run=runs/x", "--set", "units.layer=0"], "units.layer"),
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


@needs_espeak
def test_train_utterances_keeps_a_seeded_subset(tmp_path: Path, monkeypatch) -> None:
    from seqformer.tasks.speech import load_speech_splits

    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "cache"))
    tree = {"data": {"corpus": "spoken-words", "max_words": 120, "accents": ["en-us"],
                     "voices_per_word": 1}}
    everything, fp_all = load_speech_splits(load_recipe_dict({**tree, "task": "speech-ctc"}))
    tree["data"]["train_utterances"] = 20
    subset, fp_sub = load_speech_splits(load_recipe_dict({**tree, "task": "speech-ctc"}))
    again, fp_again = load_speech_splits(load_recipe_dict({**tree, "task": "speech-ctc"}))
    assert len(subset["train"]) == 20 < len(everything["train"])
    assert set(subset["train"].sources) <= set(everything["train"].sources)
    assert subset["train"].sources == again["train"].sources and fp_sub == fp_again != fp_all
    for name in ("valid", "test"):
        assert subset[name].sources == everything[name].sources


def load_recipe_dict(tree: dict):
    from seqformer.recipe import recipe_from_dict

    return recipe_from_dict({"init_from": None, "freeze": "none", **tree})
