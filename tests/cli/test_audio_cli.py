"""The audio family end to end through the CLI: train a tiny AST on a handful of espeak-ng
words (held-out voices), evaluate its test split and a TSV of WAVs, predict from the Python
API, and each bad input as exit code 2 with a one-line message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import one_line_error, sets

from seqformer.cli import main
from seqformer.data import speech
from seqformer.recipe import load_recipe, recipe_from_dict
from seqformer.recipe_audio import AudioRecipe

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None,
    reason="espeak-ng is not installed (apt-get install espeak-ng); CI installs it")

# Three words x 3 accents x 6 variants (4 train, 1 valid, 1 test), 0.6 s clips, one tiny layer:
# 36 train / 9 valid / 9 test clips, a few seconds on one thread.
TINY = ["data.words=['yes','no','stop']", "data.accents=[en,en-us,en-gb-scotland]",
        "data.variants=[m1,m2,m3,m4,f1,f2]", "data.valid_variants=1", "data.test_variants=1",
        "data.renditions=1", "data.clip_seconds=0.6", "data.batch_size=8", "model.num_mel_bins=32",
        "model.max_frames=58", "model.d_model=32", "model.heads=2", "model.layers=1",
        "model.ffn_dim=64", "model.dropout=0.0", "train.epochs=20", "train.lr=3e-3",
        "train.progress=false", "train.device=cpu"]


pytestmark = pytest.mark.usefixtures("audio_cache")


def test_recipe_dispatch_and_validation() -> None:
    recipe = load_recipe("ast-speech-commands")
    assert isinstance(recipe, AudioRecipe) and recipe.train.metric == "valid_accuracy"
    assert recipe.model_config(10).num_patches == 45
    with pytest.raises(Exception, match="model.time_strid"):
        recipe_from_dict({"task": "audio-classify", "model": {"time_strid": 2}})
    with pytest.raises(Exception, match="cannot hold out"):
        recipe_from_dict({"task": "audio-classify", "data": {"test_variants": 11}})
    with pytest.raises(Exception, match="quote them"):
        load_recipe("ast-speech-commands", ["data.words=[yes,no]"])


@needs_espeak
def test_train_evaluate_and_predict_end_to_end(tmp_path: Path, capsys) -> None:
    from seqformer.tasks.audio import AudioClassifier

    out = tmp_path / "run"
    assert main(["train", "ast-speech-commands", "--out", str(out), *sets(TINY)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("test: "))
    metrics = json.loads((out / "test_metrics.json").read_text())
    assert f"accuracy {metrics['test_accuracy']:.4f}" in line
    assert metrics["test_accuracy"] > 0.5  # chance is 1/3; held-out voices
    config = json.loads((out / "config.json").read_text())
    assert config["family"] == "ast" and config["labels"] == ["no", "stop", "yes"]
    assert config["features"]["std"] > 0 and "split" in (out / "recipe.yaml").read_text()

    assert main(["evaluate", "--model", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "(9 clips)" in printed and f"accuracy {metrics['test_accuracy']:.4f}" in printed
    assert "most confused:" in printed and "recall by class:" in printed

    # The user's WAVs: the test clips written out, listed in a TSV, read back through wave.
    classifier = AudioClassifier.load(out)
    test = classifier.test_split()
    assert test is not None and len(test) == 9
    rows = []
    for i, (wave_, label) in enumerate(zip(test.waveforms, test.labels)):
        speech.write_wav(tmp_path / f"{i}.wav", wave_)
        rows.append(f"{i}.wav\t{label}")
    (tmp_path / "clips.tsv").write_text("\n".join(rows) + "\n")
    assert main(["evaluate", "--model", str(out), "--data", str(tmp_path / "clips.tsv")]) == 0
    assert "(9 clips)" in capsys.readouterr().out
    from_paths = classifier.predict([tmp_path / f"{i}.wav" for i in range(9)])
    from_arrays = classifier.predict(test.waveforms)
    assert from_paths == from_arrays  # 16-bit rounding does not change a decision
    hits = sum(p == g for p, g in zip(from_arrays, test.labels))
    assert hits / 9 == pytest.approx(metrics["test_accuracy"])
    wavs = [str(tmp_path / f"{i}.wav") for i in range(9)]
    assert main(["classify", "--model", str(out), *wavs]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [r[0] for r in rows] == wavs and [r[1] for r in rows] == from_paths
    line = one_line_error(capsys, main(["classify", "--model", str(out), "gone.wav"]))
    assert "gone.wav: no such file" in line


def test_missing_espeak_exits_2_naming_the_package(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv(speech.ESPEAK_ENV, str(tmp_path / "no-espeak-here"))
    code = main(["train", "ast-speech-commands", "--out", str(tmp_path / "run"), *sets(TINY)])
    err = one_line_error(capsys, code)
    assert "espeak-ng not found" in err and "apt-get install espeak-ng" in err


@pytest.mark.parametrize("line,message", [
    ("missing.wav\tyes", "clips.tsv:2: "),
    ("only-a-path.wav", "clips.tsv:2: expected 'path.wav<TAB>label'"),
    ("bad.wav\tno", "bad.wav: not a readable WAV file"),
])
def test_bad_training_files_exit_2_with_one_line(tmp_path: Path, capsys, line: str,
                                                 message: str) -> None:
    speech.write_wav(tmp_path / "ok.wav", 0.3 * np.sin(np.arange(8000) * 0.05))
    (tmp_path / "bad.wav").write_bytes(b"RIFF????WAVEnot really")
    (tmp_path / "clips.tsv").write_text(f"ok.wav\tyes\n{line}\n")
    code = main(["train", "ast-speech-commands", "--out", str(tmp_path / "run"),
                 "--set", "data.corpus=files", "--set", f"data.train={tmp_path / 'clips.tsv'}",
                 *sets(["train.progress=false"])])
    assert message in one_line_error(capsys, code)


def test_evaluate_with_a_missing_wav_exits_2(tmp_path: Path, capsys) -> None:
    from seqformer.models.audio import AST, ASTConfig

    AST(ASTConfig(num_mel_bins=16, max_frames=20, d_model=8, heads=2, layers=1, ffn_dim=16,
                  num_labels=2), ["no", "yes"]).save(tmp_path / "model", {"mean": -5.0})
    (tmp_path / "clips.tsv").write_text("gone.wav\tyes\n")
    code = main(["evaluate", "--model", str(tmp_path / "model"),
                 "--data", str(tmp_path / "clips.tsv")])
    assert "clips.tsv:1: " in one_line_error(capsys, code)
    code = main(["evaluate", "--model", str(tmp_path / "model")])
    assert "no recipe test split" in one_line_error(capsys, code)
