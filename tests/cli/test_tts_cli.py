"""text to speech end to end through the CLI: a tiny train, speak, evaluate (with the round
trip through a tiny speech-recognition run), a two-voice model, and bad inputs as exit 2 with
one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import error_line, write_recordings

from seqformer.cli import main
from seqformer.data import speech
from seqformer.recipe import load_recipe

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed")

TINY = ["--set", "data.max_words=120", "--set", "data.valid_generate=3",
        "--set", "model.d_model=32", "--set", "model.heads=2", "--set", "model.ffn_dim=64",
        "--set", "model.encoder_layers=1", "--set", "model.decoder_layers=1",
        "--set", "model.prenet_units=32", "--set", "model.postnet_units=32",
        "--set", "model.postnet_layers=2", "--set", "train.max_steps=4",
        "--set", "train.eval_every=2", "--set", "train.warmup_steps=1",
        "--set", "train.progress=false", "--set", "speak.griffin_lim_iters=4"]


def test_bundled_recipe_parses() -> None:
    recipe = load_recipe("tts-spoken-words")
    assert recipe.task == "text-to-speech" and recipe.data.input == "phonemes"
    config = recipe.model_config(40, 80)
    assert config.num_mel_bins == 80 and config.speaker_embedding_dim == 0


@needs_espeak
def test_train_speak_evaluate_and_round_trip(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "tts"
    assert main(["train", "tts-spoken-words", "--out", str(run), *TINY]) == 0
    out = capsys.readouterr().out
    assert "test (" in out and "MCD" in out
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["n"] > 0 and metrics["mcd"] > 0 and metrics["len_ratio"] > 0
    assert json.loads((run / "config.json").read_text())["family"] == "speecht5-tts"
    samples = sorted((run / "samples").glob("*.wav"))
    assert samples and all(len(speech.read_wav(p)) > 0 for p in samples)

    wav = tmp_path / "hello.wav"
    assert main(["speak", "--model", str(run), "--out", str(wav), "hello"]) == 0
    assert len(speech.read_wav(wav)) > 0
    many = tmp_path / "many"
    assert main(["speak", "--model", str(run), "--out", str(many), "one", "two"]) == 0
    assert len(list(many.glob("*.wav"))) == 2
    capsys.readouterr()
    # Trained on single words: a sentence is said word by word (punctuation dropped, no <unk>),
    # the words joined by 0.12 s pauses.
    sentence = tmp_path / "sentence.wav"
    assert main(["speak", "--model", str(run), "--out", str(sentence), "Hello, world!"]) == 0
    assert "unknown" not in capsys.readouterr().err
    from seqformer.tasks.tts import WORD_PAUSE, Synthesizer

    words = Synthesizer.load(run).speak(["hello", "world"])
    assert len(speech.read_wav(sentence)) == sum(map(len, words)) + int(WORD_PAUSE * 16000)

    # The same text and seed give the same audio (the prenet dropout is seeded).
    again = tmp_path / "again.wav"
    assert main(["speak", "--model", str(run), "--out", str(again), "hello"]) == 0
    assert (speech.read_wav(again) == speech.read_wav(wav)).all()

    asr = tmp_path / "asr"
    assert main(["train", "whisper-spoken-words", "--out", str(asr),
                 "--set", "data.max_words=120", "--set", "data.accents=[en-us]",
                 "--set", "data.voices_per_word=1", "--set", "data.valid_decode=2",
                 "--set", "model.d_model=16", "--set", "model.heads=2",
                 "--set", "model.encoder_layers=1", "--set", "model.decoder_layers=1",
                 "--set", "model.ffn_dim=32", "--set", "train.max_steps=2",
                 "--set", "train.eval_every=2", "--set", "train.warmup_steps=1",
                 "--set", "train.progress=false", "--set", "decode.beam=1"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model", str(run), "--asr", str(asr)]) == 0
    line = capsys.readouterr().out
    assert "recipe's test split" in line and "ASR CER on generated speech" in line


@needs_espeak
def test_two_voices_and_bad_inputs(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "tts2"
    assert main(["train", "tts-spoken-words", "--out", str(run), *TINY,
                 "--set", "data.voices=[en-us+m3, en-us+f2]",
                 "--set", "data.input=spelling"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["speaker_embedding_dim"] == 2
    assert config["features"]["voices"] == ["en-us+m3", "en-us+f2"]
    capsys.readouterr()
    out = tmp_path / "f2.wav"
    assert main(["speak", "--model", str(run), "--voice", "en-us+f2", "--out", str(out),
                 "hello"]) == 0
    assert len(speech.read_wav(out)) > 0

    assert main(["speak", "--model", str(run), "--voice", "en+m1", "hi"]) == 2
    assert "not one of the model's voices" in error_line(capsys)
    assert main(["speak", "--model", str(run), "--prompt", str(out), "hi"]) == 2
    assert "--prompt is for a VALL-E" in error_line(capsys)
    assert main(["speak", "--model", str(run), "--vocoder", str(tmp_path / "nope"), "hi"]) == 2
    assert str(tmp_path / "nope") in error_line(capsys)
    assert main(["speak", "--model", str(run), "   "]) == 2
    assert "empty" in error_line(capsys)
    assert main(["speak", "--model", str(run), "?!"]) == 2
    assert "has no words to say" in error_line(capsys)
    assert main(["evaluate", "--model", str(run), "--data", str(tmp_path / "no.tsv")]) == 2
    assert "no.tsv" in error_line(capsys)
    assert main(["train", "tts-spoken-words", "--set", "model.d_modle=8"]) == 2
    assert "d_model" in error_line(capsys)
    assert main(["train", "tts-spoken-words", "--set", "data.input=ipa"]) == 2
    assert "data.input" in error_line(capsys)


@needs_espeak
def test_your_own_recordings(tmp_path: Path, monkeypatch, capsys) -> None:
    """data.corpus: files: a TSV of path.wav<TAB>text; the last lines become validation when
    there is no valid file, and evaluate --data scores another TSV."""
    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "cache"))
    write_recordings(tmp_path)
    run = tmp_path / "mine"
    assert main(["train", "tts-spoken-words", "--out", str(run), *TINY,
                 "--set", "data.corpus=files", "--set", "data.input=spelling",
                 "--set", f"data.train={tmp_path / 'train.tsv'}",
                 "--set", "data.valid_fraction=0.2"]) == 0
    assert "data: 8 train / 2 valid / 0 test" in capsys.readouterr().err  # 10 lines, 20%
    assert main(["evaluate", "--model", str(run), "--data", str(tmp_path / "test.tsv")]) == 0
    assert "(3 utterances): MCD" in capsys.readouterr().out
    (tmp_path / "bad.tsv").write_text("apple.wav\n")
    assert main(["train", "tts-spoken-words", "--out", str(tmp_path / "bad"), *TINY,
                 "--set", "data.corpus=files", "--set", "data.input=spelling",
                 "--set", f"data.train={tmp_path / 'bad.tsv'}"]) == 2
    assert "bad.tsv" in error_line(capsys)
