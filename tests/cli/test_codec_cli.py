"""task: codec and task: codec-tts end to end through the CLI: a tiny EnCodec, then a tiny
VALL-E on its codes; evaluate both, speak with the run's own prompt and with a prompt WAV;
user errors (missing codec run, a codec run of the wrong family, empty text, an unreadable
prompt, --prompt without --prompt-text) as exit 2 with one line."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import error_line

from seqformer.cli import main
from seqformer.data import speech
from seqformer.recipe import load_recipe

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed")

CODEC = ["--set", "data.max_words=80", "--set", "data.accents=[en-us]",
         "--set", "data.voices_per_word=1", "--set", "data.valid_utterances=2",
         "--set", "data.batch_size=2", "--set", "model.num_filters=4",
         "--set", "model.hidden_size=16", "--set", "model.codebook_size=32",
         "--set", "model.target_bandwidths=[0.5,1.0]", "--set", "bandwidth=1.0",
         "--set", "model.kmeans_iters=2", "--set", "train.max_steps=2",
         "--set", "train.eval_every=2", "--set", "train.warmup_steps=1",
         "--set", "train.progress=false"]


def valle_args(codec: Path) -> list[str]:
    return ["--set", f"codec.from_run={codec}", "--set", "codec.bandwidth=1.0",
            "--set", "data.max_words=80", "--set", "data.voices=[en-us+m3]",
            "--set", "data.test_utterances=2", "--set", "data.batch_size=8",
            "--set", "model.d_model=16", "--set", "model.heads=2", "--set", "model.ar_layers=1",
            "--set", "model.nar_layers=1", "--set", "model.ffn_dim=32",
            "--set", "train.max_steps=3", "--set", "train.eval_every=3",
            "--set", "train.warmup_steps=1", "--set", "train.progress=false",
            "--set", "generate.max_frames=6"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny codec run and a tiny VALL-E run on it, with a private audio cache."""
    root = tmp_path_factory.mktemp("codec")
    old = os.environ.get("SEQFORMER_CACHE")
    os.environ["SEQFORMER_CACHE"] = str(root / "cache")
    try:
        codec, valle = root / "codec", root / "valle"
        assert main(["train", "encodec-spoken-words", "--out", str(codec), *CODEC]) == 0
        assert main(["train", "valle-spoken-words", "--out", str(valle),
                     *valle_args(codec)]) == 0
        yield root, codec, valle
    finally:
        if old is None:
            os.environ.pop("SEQFORMER_CACHE", None)
        else:
            os.environ["SEQFORMER_CACHE"] = old


def test_bundled_recipes_parse() -> None:
    codec = load_recipe("encodec-spoken-words")
    config = codec.model_config()
    assert config.sampling_rate == 16000 and 50 <= config.frame_rate <= 75
    assert 4 <= config.codebooks_for(codec.score_bandwidth) <= 8
    valle = load_recipe("valle-spoken-words")
    assert valle.task == "codec-tts" and valle.codec.from_run == "runs/encodec-spoken-words"
    assert len(valle.data.voices) == 4 and valle.data.input == "phonemes"


@needs_espeak
def test_train_and_evaluate(runs, capsys) -> None:
    _, codec, valle = runs
    assert json.loads((codec / "config.json").read_text())["family"] == "encodec"
    metrics = json.loads((codec / "test_metrics.json").read_text())
    assert metrics["n"] > 0 and metrics["mcd"] > 0
    assert main(["evaluate", "--model", str(codec)]) == 0
    out = capsys.readouterr().out
    assert "recipe's test split" in out and "MCD" in out and "1.0 kbps" in out

    config = json.loads((valle / "config.json").read_text())
    assert config["family"] == "valle" and config["n_q"] == 4
    assert (valle / "codes.pt").is_file() and (valle / "codec" / "config.json").is_file()
    test = json.loads((valle / "test_metrics.json").read_text())
    assert test["n"] == 2 and test["mcd"] > 0 and test["codec_mcd"] > 0
    assert len(list((valle / "samples").glob("*.wav"))) == 2
    assert main(["evaluate", "--model", str(valle)]) == 0
    out = capsys.readouterr().out
    assert "recipe's test split (2 utterances)" in out
    # the test scores of train and evaluate agree: same prompts, same seeded sampling
    assert f"MCD {test['mcd']:.2f} dB" in out


@needs_espeak
def test_speak(runs, capsys) -> None:
    root, codec, valle = runs
    out = root / "said"
    assert main(["speak", "--model", str(valle), "--out", str(out), "hello", "world"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and len(list(out.glob("*.wav"))) == 2
    t = np.arange(8000) / 16000
    wav = root / "prompt.wav"
    speech.write_wav(wav, 0.3 * np.sin(2 * np.pi * 220 * t))
    one = root / "one.wav"
    assert main(["speak", "--model", str(valle), "--prompt", str(wav), "--prompt-text", "hum",
                 "--out", str(one), "again"]) == 0
    assert one.is_file() and speech.read_wav(one).size > 0


@needs_espeak
def test_user_errors(runs, capsys, tmp_path) -> None:
    root, codec, valle = runs
    missing = valle_args(tmp_path / "nowhere")
    assert main(["train", "valle-spoken-words", "--out", str(tmp_path / "r"), *missing]) == 2
    assert "train the codec first" in error_line(capsys)
    wrong = valle_args(valle)  # a VALL-E run is not a codec
    assert main(["train", "valle-spoken-words", "--out", str(tmp_path / "r2"), *wrong]) == 2
    line = error_line(capsys)
    assert "not an EnCodec" in line or "encodec" in line.lower()
    assert main(["speak", "--model", str(valle), "--out", str(tmp_path / "x"), "  "]) == 2
    assert "empty" in error_line(capsys)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav")
    assert main(["speak", "--model", str(valle), "--prompt", str(bad), "--prompt-text", "hi",
                 "--out", str(tmp_path / "y"), "hello"]) == 2
    assert "not a readable WAV" in error_line(capsys)
    assert main(["speak", "--model", str(valle), "--prompt", str(bad), "--out",
                 str(tmp_path / "z"), "hello"]) == 2
    assert "--prompt-text" in error_line(capsys)
    long = tmp_path / "long.wav"
    t = np.arange(16000 * 3) / 16000
    speech.write_wav(long, 0.3 * np.sin(2 * np.pi * 200 * t))
    assert main(["speak", "--model", str(valle), "--prompt", str(long), "--prompt-text", "hi",
                 "--out", str(tmp_path / "w"), "hello"]) == 2
    assert "shorter one" in error_line(capsys)
    assert main(["speak", "--model", str(valle), "--voice", "en-us+m3", "hello"]) == 2
    assert "--prompt" in error_line(capsys)


@needs_espeak
def test_round_trip_scores_generations_not_recordings(runs) -> None:
    from seqformer.tasks.valle import CodecSpeaker

    _, _, valle = runs
    speaker = CodecSpeaker.load(valle)
    test = speaker.test_split()
    words = [s.split("/")[1] for s in test.sources]

    class Oracle:
        """Knows the recordings (by identity); hears nothing in anything else."""

        def transcribe(self, waves: list) -> list[str]:
            known = {id(w): word for w, word in zip(test.waveforms, words)}
            return [known.get(id(w), "") for w in waves]

    trip = speaker.round_trip(test, Oracle())
    assert trip["asr_cer_recorded"] == 0.0 and trip["asr_cer_generated"] == 100.0
    assert len(speaker.last_generated) == len(test)


@needs_espeak
def test_resume_is_exact(runs, tmp_path, monkeypatch) -> None:
    """Crops, prompts and NAR stages are functions of (seed, batch position), the bandwidth
    draw and dropout come from the restored RNG: 2 steps + --resume to 4 ends with the weights
    of one run straight to 4, for the codec and for VALL-E."""
    import torch
    from safetensors.torch import load_file

    root, codec, _ = runs
    monkeypatch.setenv("SEQFORMER_CACHE", str(root / "cache"))
    common = ["--set", "train.schedule=constant", "--set", "train.save_every=2",
              "--set", "train.eval_every=4"]
    for recipe, args in (("encodec-spoken-words", CODEC), ("valle-spoken-words",
                                                           valle_args(codec))):
        straight, split = tmp_path / f"{recipe}-straight", tmp_path / f"{recipe}-split"
        base = ["train", recipe, *args, *common]
        assert main([*base, "--out", str(straight), "--set", "train.max_steps=4"]) == 0
        assert main([*base, "--out", str(split), "--set", "train.max_steps=2"]) == 0
        assert main([*base, "--out", str(split), "--set", "train.max_steps=4", "--resume"]) == 0
        a, b = (load_file(d / "last" / "model.safetensors") for d in (straight, split))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), recipe
