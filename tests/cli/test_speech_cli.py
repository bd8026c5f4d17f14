"""speech-to-text end to end through the CLI: a tiny train, evaluate and transcribe, and bad
inputs (a missing WAV, a malformed TSV line, espeak-ng missing) as exit 2 with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import error_line, write_recordings

from seqformer.cli import main
from seqformer.data import speech
from seqformer.recipe import load_recipe

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed")

TINY = ["--set", "data.max_words=120", "--set", "data.accents=[en-us]",
        "--set", "data.voices_per_word=1", "--set", "data.n_mels=16",
        "--set", "data.valid_decode=4", "--set", "model.d_model=16", "--set", "model.heads=2",
        "--set", "model.encoder_layers=1", "--set", "model.decoder_layers=1",
        "--set", "model.ffn_dim=32", "--set", "train.max_steps=4", "--set", "train.eval_every=2",
        "--set", "train.warmup_steps=1", "--set", "train.progress=false",
        "--set", "decode.beam=2"]


@pytest.mark.parametrize("name,block", [("whisper-spoken-words", "transformer"),
                                        ("conformer-spoken-words", "conformer"),
                                        ("conformer-spoken-phonemes", "conformer")])
def test_bundled_recipes_parse(name: str, block: str) -> None:
    recipe = load_recipe(name)
    assert recipe.task == "speech-to-text" and recipe.decode.beam == 5
    config = recipe.model_config(30)
    assert config.num_mel_bins == 80 and config.encoder_block == block


@needs_espeak
def test_train_evaluate_transcribe(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["train", "whisper-spoken-words", "--out", str(run), *TINY]) == 0
    out = capsys.readouterr().out
    assert "greedy: CER" in out and "beam2: CER" in out
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert set(metrics) == {"greedy", "beam2"} and metrics["greedy"]["n"] > 0
    assert json.loads((run / "config.json").read_text())["family"] == "whisper"

    assert main(["evaluate", "--model", str(run), "--beam", "1"]) == 0
    assert "recipe's test split" in capsys.readouterr().out

    t = np.arange(6400) / 16000
    wav = tmp_path / "tone.wav"
    speech.write_wav(wav, 0.4 * np.sin(2 * np.pi * 220 * t))
    data = tmp_path / "data.tsv"
    data.write_text(f"{wav}\tcat\n", encoding="utf-8")
    assert main(["evaluate", "--model", str(run), "--data", str(data)]) == 0
    assert "(1 utterances" in capsys.readouterr().out

    assert main(["transcribe", "--model", str(run), str(wav), str(wav)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{wav}\t") for line in lines)

    from seqformer.tasks.speech import Transcriber

    texts = Transcriber.load(run).transcribe([wav, 0.4 * np.sin(2 * np.pi * 220 * t)], beam=1)
    assert texts[0] == texts[1] and lines[0].split("\t", 1)[1] == Transcriber.load(
        run).transcribe([wav])[0]

    check_long_recordings(run, tmp_path, capsys)

    assert main(["transcribe", "--model", str(run), str(tmp_path / "missing.wav")]) == 2
    assert "missing.wav: no such WAV file" in error_line(capsys)
    assert main(["transcribe", "--model", str(run), "--language", "fr", str(wav)]) == 2
    assert "language" in error_line(capsys)  # only an imported Whisper has a prompt
    bad = tmp_path / "bad.tsv"
    bad.write_text(f"{wav}\tcat\njust one column\n", encoding="utf-8")
    assert main(["evaluate", "--model", str(run), "--data", str(bad)]) == 2
    assert f"{bad}:2: expected 'path.wav<TAB>transcript'" in error_line(capsys)


def check_long_recordings(run: Path, tmp_path: Path, capsys) -> None:
    """A recording longer than the model's window is split at its pauses: its transcript is
    the pieces' transcripts, each exactly what the piece alone gets (trimmed, levelled)."""
    from seqformer.tasks.long_form import transcribe_long, transcribe_segments
    from seqformer.tasks.speech import Transcriber

    transcriber = Transcriber.load(run)
    rate = speech.SAMPLE_RATE
    n = transcriber.max_samples // int(0.9 * rate) + 2  # more sound than the window holds
    tones = [0.4 * np.sin(2 * np.pi * (200 + 70 * i) * np.arange(int(0.4 * rate)) / rate)
             for i in range(n)]
    gap = np.zeros(int(0.5 * rate))
    long_wave = np.concatenate([x for t in tones for x in (gap, t)] + [gap]).astype(np.float32)
    assert len(long_wave) > transcriber.max_samples
    alone = transcriber.transcribe([t.astype(np.float32) for t in tones], beam=1)
    assert transcribe_long(transcriber, [long_wave], beam=1) == [" ".join(t for t in alone if t)]
    pieces = transcribe_segments(transcriber, [long_wave], beam=1)[0]
    assert [p.text for p in pieces] == alone
    for i, p in enumerate(pieces):  # each piece spans its tone, inside its pauses
        assert p.start <= 0.5 + 0.9 * i <= 0.9 * (i + 1) <= p.end <= 0.9 * (i + 1) + 0.5

    wav = tmp_path / "long.wav"
    speech.write_wav(wav, long_wave)
    assert main(["transcribe", "--model", str(run), "--beam", "1", "--timestamps",
                 str(wav)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[1] for line in lines] == [p.text for p in pieces]
    assert lines[0].split("\t")[0] == f"{pieces[0].start:.2f}-{pieces[0].end:.2f}"
    # A short recording is split only when asked.
    short = tmp_path / "two.wav"
    speech.write_wav(short, np.concatenate([tones[0], gap, tones[1]]).astype(np.float32))
    assert main(["transcribe", "--model", str(run), "--beam", "1", str(short)]) == 0
    assert capsys.readouterr().out.strip() == transcriber.transcribe([short], beam=1)[0]
    assert main(["transcribe", "--model", str(run), "--beam", "1", "--segment",
                 str(short)]) == 0
    assert capsys.readouterr().out.strip() == " ".join(t for t in alone[:2] if t)


def test_missing_espeak_exits_2_with_the_install_hint(tmp_path: Path, monkeypatch,
                                                      capsys) -> None:
    monkeypatch.setenv("SEQFORMER_ESPEAK", "/nonexistent/espeak-ng")
    code = main(["train", "whisper-spoken-words", "--out", str(tmp_path / "run"), *TINY])
    assert code == 2
    line = error_line(capsys)
    assert line.startswith("seqformer: error: ") and "apt-get install espeak-ng" in line
    assert "spoken-words" in line


def test_bad_recipe_field_is_a_config_error(tmp_path: Path, capsys) -> None:
    code = main(["train", "whisper-spoken-words", "--out", str(tmp_path / "run"),
                 "--set", "model.d_modle=8"])
    assert code == 2 and "did you mean 'model.d_model'" in error_line(capsys)


def test_bad_target_is_a_one_line_config_error(tmp_path: Path, capsys) -> None:
    code = main(["train", "whisper-spoken-words", "--out", str(tmp_path / "run"),
                 "--set", "data.target=phoneme"])
    line = error_line(capsys)
    assert code == 2 and "data.target='phoneme'; use one of spelling, phonemes" in line
    assert load_recipe("conformer-spoken-phonemes").data.target == "phonemes"
    assert load_recipe("conformer-spoken-words").data.target == "spelling"


@needs_espeak
def test_train_and_evaluate_with_the_phoneme_target(tmp_path: Path, monkeypatch,
                                                    capsys) -> None:
    from seqformer.data.tokenizer import load_tokenizer

    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["train", "whisper-spoken-words", "--out", str(run), *TINY,
                 "--set", "data.target=phonemes",
                 "--set", "model.max_target_positions=24"]) == 0
    out = capsys.readouterr()
    assert "greedy: CER" in out.out and "target: espeak-ng phonemes" in out.err + out.out
    metrics = json.loads((run / "test_metrics.json").read_text())
    assert metrics["greedy"]["n"] > 0
    tokenizer = load_tokenizer(run / "tokenizer")  # trained on phonemes: ' and @ are symbols
    assert tokenizer.unk_id not in tokenizer.encode("h@l'oU")
    assert main(["evaluate", "--model", str(run), "--beam", "1"]) == 0
    assert "recipe's test split" in capsys.readouterr().out


@needs_espeak
def test_your_own_recordings(tmp_path: Path, monkeypatch, capsys) -> None:
    """data.corpus: files: path.wav<TAB>transcript lines; without a valid file the last
    valid_fraction of train validates; the test TSV is scored after training."""
    monkeypatch.setenv("SEQFORMER_CACHE", str(tmp_path / "cache"))
    write_recordings(tmp_path)
    run = tmp_path / "mine"
    assert main(["train", "whisper-spoken-words", "--out", str(run), *TINY,
                 "--set", "data.corpus=files", "--set", f"data.train={tmp_path / 'train.tsv'}",
                 "--set", f"data.test={tmp_path / 'test.tsv'}",
                 "--set", "data.valid_fraction=0.2"]) == 0
    assert "test (3 utterances" in capsys.readouterr().out
    recipe = (run / "recipe.yaml").read_text()
    assert "split:" in recipe
    assert main(["evaluate", "--model", str(run)]) == 0  # the recipe's test TSV again
    assert "(3 utterances" in capsys.readouterr().out
