"""DiscreteBERT through the CLI: the bundled recipe, a tiny pretraining run that learns to name
masked units better than always guessing the commonest one, exact --resume, CTC fine-tuning
from it (the units and the frozen embedding really are the pretrained ones) with evaluate and
transcribe, a from-scratch CTC model that fits its own units, HF export refused, and bad
recipes as exit 2 with one line before any audio is made. The audio is synthesised once for
the module."""

from __future__ import annotations

import json
import math
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
SHAPE = ["--set", "model.d_model=32", "--set", "model.heads=2", "--set", "model.layers=1",
         "--set", "model.ffn_dim=64", "--set", "model.pos_conv_kernel=4",
         "--set", "model.pos_conv_groups=2", "--set", "model.units_k=8",
         "--set", "model.num_units=8", "--set", "units.iterations=10"]
QUIET = ["--set", "train.progress=false"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def shared_cache(cache: Path, monkeypatch) -> None:
    monkeypatch.setenv("SEQFORMER_CACHE", str(cache))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pretrained(cache: Path, tmp_path_factory) -> Path:
    """A tiny DiscreteBERT trained for 100 steps (about 4 s of training)."""
    run = tmp_path_factory.mktemp("dbert") / "pre"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SEQFORMER_CACHE", str(cache))
        assert main(["train", "discrete-bert-spoken-words", "--out", str(run), *DATA, *SHAPE,
                     *QUIET, "--set", "model.mask_time_length=4", "--set", "model.dropout=0",
                     "--set", "train.max_steps=100", "--set", "train.eval_every=25",
                     "--set", "train.warmup_steps=5", "--set", "train.lr=5e-3"]) == 0
    return run


def test_bundled_recipe_is_discrete_bert() -> None:
    recipe = load_recipe("discrete-bert-spoken-words")
    config = recipe.model_config()
    assert recipe.task == "speech-pretrain" and config.frontend == "units"
    assert config.objective == "units" and config.num_units == config.units_k == 100
    assert config.units_features == "mfcc" and config.feature_dim == 39
    hubert = load_recipe("hubert-spoken-words")
    assert recipe.data == hubert.data and recipe.train == hubert.train  # the same budget


@needs_espeak
def test_pretraining_names_masked_units_better_than_the_commonest(pretrained: Path) -> None:
    from seqformer.models.wav2vec2 import Wav2Vec2ForPreTraining
    from seqformer.tasks.speech import load_speech_splits
    from seqformer.tasks.speech_ssl import normalise

    config = json.loads((pretrained / "config.json").read_text())
    assert config["family"] == "wav2vec2-pretrain" and config["frontend"] == "units"
    weights = load_file(pretrained / "model.safetensors")
    assert weights["wav2vec2.feature_extractor.centroids"].shape == (8, 39)
    assert bool((weights["wav2vec2.feature_extractor.std"] > 0).all())
    assert not (pretrained / "units.safetensors").exists()  # the units live in the model
    log = [json.loads(line) for line in (pretrained / "log.jsonl").read_text().splitlines()]
    valid = [r["valid"] for r in log if "valid" in r]
    assert [r["step"] for r in log if "valid" in r] == [25, 50, 75, 100]
    best = json.loads((pretrained / "valid_metrics.json").read_text())
    assert best["valid_loss"] < valid[0]["valid_loss"] and best["valid_loss"] < math.log(8)
    # Chance: always answering the validation audio's commonest unit.
    model = Wav2Vec2ForPreTraining.load(pretrained)
    splits, _ = load_speech_splits(load_recipe(str(pretrained / "recipe.yaml")))
    ids = torch.cat([model.wav2vec2.unit_ids(normalise(w).unsqueeze(0))[0]
                     for w in splits["valid"].waveforms])
    commonest = float(torch.bincount(ids, minlength=8).max()) / len(ids)
    assert best["valid_accuracy"] > commonest + 0.05


@needs_espeak
def test_resume_is_exact(tmp_path: Path) -> None:
    common = [*DATA, *SHAPE, *QUIET, "--set", "train.schedule=constant",
              "--set", "train.warmup_steps=1", "--set", "train.eval_every=4",
              "--set", "train.save_every=2", "--set", "units.iterations=3"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    name = "discrete-bert-spoken-words"
    assert main(["train", name, "--out", str(straight), *common,
                 "--set", "train.max_steps=4"]) == 0
    assert main(["train", name, "--out", str(split), *common, "--set", "train.max_steps=2"]) == 0
    assert main(["train", name, "--out", str(split), *common, "--set", "train.max_steps=4",
                 "--resume"]) == 0
    a, b = load_file(straight / "last" / "model.safetensors"), load_file(
        split / "last" / "model.safetensors")
    assert "wav2vec2.feature_extractor.centroids" in a
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@needs_espeak
def test_finetune_ctc_transcribe_evaluate_and_no_hf_export(pretrained: Path, tmp_path: Path,
                                                          capsys) -> None:
    run = tmp_path / "ctc"
    assert main(["train", "ctc-spoken-words", "--out", str(run), *DATA, *QUIET,
                 "--set", f"init_from={pretrained}", "--set", "freeze=feature-encoder",
                 "--set", "train.max_steps=4", "--set", "train.eval_every=2",
                 "--set", "train.warmup_steps=1", "--set", "data.valid_decode=4",
                 "--set", "decode.beam=3"]) == 0
    out = capsys.readouterr().out
    assert "greedy: CER" in out and "beam3: CER" in out
    config = json.loads((run / "config.json").read_text())
    assert config["family"] == "wav2vec2-ctc" and config["frontend"] == "units"
    pre, tuned = load_file(pretrained / "model.safetensors"), load_file(run / "model.safetensors")
    front = [k for k in tuned if k.startswith("wav2vec2.feature_extractor.")]
    assert {k.rsplit(".", 1)[-1] for k in front} == {"centroids", "mean", "std", "weight"}
    assert all(torch.equal(tuned[k], pre[k]) for k in front)  # units and frozen embedding
    assert not torch.equal(tuned["wav2vec2.feature_projection.projection.weight"],
                           pre["wav2vec2.feature_projection.projection.weight"])

    assert main(["evaluate", "--model", str(run), "--beam", "1"]) == 0
    assert "recipe's test split" in capsys.readouterr().out
    t = np.arange(8000) / 16000
    wav = tmp_path / "tone.wav"
    speech.write_wav(wav, 0.4 * np.sin(2 * np.pi * 220 * t))
    assert main(["transcribe", "--model", str(run), str(wav), str(wav)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0] == lines[1] and lines[0].startswith(f"{wav}\t")

    from seqformer.tasks.speech_ctc import CTCTranscriber

    texts = CTCTranscriber.load(run).transcribe([wav, 0.4 * np.sin(2 * np.pi * 220 * t)])
    assert texts[0] == texts[1] == lines[0].split("\t", 1)[1]

    for model in (pretrained, run):
        assert main(["export", str(model), "--out", str(tmp_path / "hf")]) == 2
        line = error_line(capsys)
        assert "model.frontend=units" in line and "no unit front end" in line
        assert not (tmp_path / "hf").exists()


@needs_espeak
def test_ctc_from_scratch_fits_its_own_units(tmp_path: Path, capsys) -> None:
    run = tmp_path / "scratch"
    assert main(["train", "ctc-spoken-words", "--out", str(run), *DATA, *QUIET,
                 "--set", "init_from=null", "--set", "freeze=none",
                 "--set", "model.frontend=units", "--set", "model.units_k=6",
                 "--set", "model.d_model=16", "--set", "model.heads=2",
                 "--set", "model.layers=1", "--set", "model.ffn_dim=32",
                 "--set", "model.pos_conv_kernel=4", "--set", "model.pos_conv_groups=2",
                 "--set", "train.max_steps=2", "--set", "train.eval_every=2",
                 "--set", "train.warmup_steps=1", "--set", "data.valid_decode=2"]) == 0
    assert "into 6 units" in capsys.readouterr().err
    weights = load_file(run / "model.safetensors")
    assert weights["wav2vec2.feature_extractor.centroids"].shape == (6, 39)
    assert bool((weights["wav2vec2.feature_extractor.std"] > 0).all())


@pytest.mark.parametrize("override,message", [
    (["--set", "model.num_units=50"], "model.num_units=50 but model.units_k=100"),
    (["--set", "model.objective=contrastive"], "objective contrastive quantises the conv"),
    (["--set", "model.objective=w2v-bert"], "objective w2v-bert quantises the conv"),
    (["--set", "model.units_k=1"], "model.units_k >= 2"),
    (["--set", "model.units_features=fbank"], "model.units_features"),
    (["--set", "model.frontend=conv"], "model.units_k=100 sizes a unit front end"),
])
def test_bad_recipes_fail_in_one_line_before_any_audio(override: list[str], message: str,
                                                        tmp_path: Path, capsys,
                                                        monkeypatch) -> None:
    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "cache"))
    assert main(["train", "discrete-bert-spoken-words", "--out", str(tmp_path / "r"),
                 *override]) == 2
    assert message in error_line(capsys)
    assert not (tmp_path / "cache").exists() and not (tmp_path / "r").exists()
