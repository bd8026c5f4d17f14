"""An imported Hugging Face Whisper transcribes as ``generate()`` does: features padded to the
30 s window (here 1 s: a tiny model) exactly like ``WhisperFeatureExtractor``, the prompt
<|startoftranscript|> <|lang|> <|task|> <|notimestamps|> forced (the language given, or
detected per utterance), ``suppress_tokens`` / ``begin_suppress_tokens`` applied, special ids
stripped from the text. Our trained runs keep their unpadded, prompt-free behaviour
(``tests/models/test_whisper.py``, ``tests/cli/test_speech_cli.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seqformer.data.logmel import LogMel
from seqformer.errors import ConfigError
from seqformer.interop.hf import import_hf
from seqformer.interop.hf_whisper import WhisperPrompt
from seqformer.tasks.speech import Transcriber

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

# Text ids 0-49 (single letters and pairs), then Whisper's specials in its order.
EOT, SOT, EN, FR, DE, TRANSLATE, TRANSCRIBE, PREV, NO_TS = 50, 51, 52, 53, 54, 55, 56, 57, 58
TIMESTAMPS = list(range(59, 70))
MELS, POSITIONS, MAX_TARGET = 16, 50, 40  # 100 frames = the extractor's chunk_length 1 s
EOS_GAIN = 7.0  # <|endoftext|> along the final LayerNorm's bias: some outputs stop early
SUPPRESS = [3, 7, SOT, PREV, TRANSLATE, TRANSCRIBE, *TIMESTAMPS]
BEGIN_SUPPRESS = [0, EOT]


def vocabulary() -> list[str]:
    letters = [chr(ord("a") + i) for i in range(26)]
    text = letters + [a + b for a, b in zip(letters, letters[1:])][:24]
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|fr|>", "<|de|>",
                "<|translate|>", "<|transcribe|>", "<|startofprev|>", "<|notimestamps|>"]
    return text + specials + [f"<|{0.02 * i:.2f}|>" for i in range(len(TIMESTAMPS))]


def write_tokenizer(directory: Path) -> None:
    """A word-level tokenizer over :func:`vocabulary` with every special marked special, so
    ``decode(skip_special_tokens=True)`` is the reference for our stripped text."""
    vocab = {token: i for i, token in enumerate(vocabulary())}
    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<|endoftext|>"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    hf.add_special_tokens([t for t, i in vocab.items() if i >= EOT])
    hf.save(str(directory / "tokenizer.json"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A random multilingual Whisper saved with ``save_pretrained``: init_std 0.5 and shifted
    vectors so outputs vary, <|endoftext|>'s embedding made likely enough that some
    transcripts stop on their own after a few tokens and others run to the length limit, a
    generation config of the real checkpoints' shape."""
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    config = transformers.WhisperConfig(
        vocab_size=len(vocabulary()), num_mel_bins=MELS, d_model=32, encoder_layers=2,
        decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=POSITIONS,
        max_target_positions=MAX_TARGET, pad_token_id=EOT, bos_token_id=EOT, eos_token_id=EOT,
        decoder_start_token_id=SOT, dropout=0.0, attention_dropout=0.0,
        activation_dropout=0.0, init_std=0.5)
    model = transformers.WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(torch.randn_like(p) * 0.1)
        decoder = model.model.decoder
        decoder.embed_tokens.weight[EOT] = EOS_GAIN * decoder.layer_norm.bias
    model.generation_config = transformers.GenerationConfig(
        decoder_start_token_id=SOT, eos_token_id=EOT, pad_token_id=EOT, bos_token_id=EOT,
        max_length=MAX_TARGET, is_multilingual=True,
        lang_to_id={"<|en|>": EN, "<|fr|>": FR, "<|de|>": DE},
        task_to_id={"translate": TRANSLATE, "transcribe": TRANSCRIBE},
        no_timestamps_token_id=NO_TS, forced_decoder_ids=[[1, None], [2, TRANSCRIBE]],
        suppress_tokens=SUPPRESS, begin_suppress_tokens=BEGIN_SUPPRESS)
    out = tmp_path_factory.mktemp("hf") / "whisper"
    model.save_pretrained(out)
    transformers.WhisperFeatureExtractor(feature_size=MELS, sampling_rate=16000, hop_length=160,
                                         chunk_length=1, n_fft=400).save_pretrained(out)
    write_tokenizer(out)
    return out


@pytest.fixture(scope="module")
def imported(checkpoint: Path) -> Path:
    out = checkpoint.parent / "ours"
    assert import_hf(checkpoint, out) == "whisper"
    return out


def waves() -> list[np.ndarray]:
    """Noisy chirps of 0.25-0.8 s: all shorter than the window, so padding matters."""
    rng = np.random.RandomState(0)
    out = []
    for i, n in enumerate([4000, 7000, 9500, 12800, 5200, 11000]):
        t = np.arange(n) / 16000
        out.append((0.4 * np.sin(2 * np.pi * (150 + 170 * i) * t * (1 + 3 * t))
                    + 0.05 * rng.randn(n)).astype(np.float32))
    return out


def generated(checkpoint: Path, **kwargs) -> list[list[int]]:
    """HF's ids after the prompt, up to (not including) <|endoftext|>. HF stops at its
    max_length without an eos where our search forces one, so it gets one token less."""
    model = transformers.WhisperForConditionalGeneration.from_pretrained(checkpoint).eval()
    extractor = transformers.WhisperFeatureExtractor.from_pretrained(checkpoint)
    features = extractor(waves(), sampling_rate=16000, return_tensors="pt").input_features
    out = model.generate(input_features=features, max_new_tokens=MAX_TARGET - 5, **kwargs)
    rows = []
    for row in out.tolist():
        rows.append(row[: row.index(EOT)] if EOT in row else row)
    return rows


def test_padded_features_equal_the_feature_extractor(checkpoint: Path, imported: Path,
                                                     one_thread) -> None:
    features = json.loads((imported / "config.json").read_text())["features"]
    assert features["pad_to_frames"] == 2 * POSITIONS
    mel = LogMel.from_dict(features)
    extractor = transformers.WhisperFeatureExtractor.from_pretrained(checkpoint)
    theirs = extractor(waves(), sampling_rate=16000, return_tensors="pt").input_features
    ours = torch.stack([mel(w) for w in waves()])
    assert ours.shape == theirs.shape == (6, MELS, 2 * POSITIONS)
    assert float((ours - theirs).abs().max()) <= 1e-5
    # Not what zero-padding the features would give: the window's last speech frames and the
    # silence differ, so the padding really is of the waveform.
    unpadded = LogMel(n_mels=MELS)(waves()[0])
    assert float((ours[0, :, : unpadded.shape[1]] - unpadded).abs().max()) > 1e-3
    assert float(ours[0, :, -1].abs().max()) > 0.0
    assert "pad_to_frames" not in LogMel(n_mels=MELS).to_dict()  # trained runs: unchanged


@pytest.mark.parametrize("language", ["fr", None])
def test_greedy_ids_equal_generate(checkpoint: Path, imported: Path, language: str | None,
                                   one_thread) -> None:
    """language="fr": the prompt is SOT fr transcribe notimestamps; None: HF detects the
    language per utterance (the checkpoint's forced_decoder_ids leave it open), so do we."""
    kwargs = {"language": language, "task": "transcribe"} if language else {}
    expected = generated(checkpoint, **kwargs)
    transcriber = Transcriber.load(imported)
    got = transcriber._ids(transcriber._features(waves()), beam=1, alpha=0.0, max_length=None,
                           language=language)
    got = [row[: row.index(EOT)] if EOT in row else row for row in got]
    assert got == expected
    # Non-trivial: the outputs differ, some stop on their own, none starts with a banned id.
    assert len({tuple(r) for r in got}) == len(got)
    assert any(len(r) < MAX_TARGET - 5 for r in got) and min(len(r) for r in got) >= 2
    assert not {r[0] for r in got} & set(BEGIN_SUPPRESS)
    assert not {i for r in got for i in r} & set(SUPPRESS)
    if language is None:  # detection chose another language than fr for some utterance
        assert got != transcriber._ids(transcriber._features(waves()), beam=1, alpha=0.0,
                                       max_length=None, language="fr")


def test_text_is_generate_decoded_without_special_tokens(checkpoint: Path, imported: Path,
                                                         one_thread) -> None:
    tokenizer = tokenizers.Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    expected = [tokenizer.decode(row, skip_special_tokens=True).strip()
                for row in generated(checkpoint, language="fr", task="transcribe")]
    texts = Transcriber.load(imported, language="fr").transcribe(waves())
    assert texts == expected
    assert all(text and "<|" not in text for text in texts)


def test_beam_search_keeps_a_prompt_per_utterance(imported: Path, one_thread) -> None:
    """Beam rows are sentence-major, so each utterance's beams are forced to its own prompt;
    beam 1 through beam search is greedy; a wider beam obeys the suppression too."""
    from seqformer.decoding.processors import ForcedPrefixes
    from seqformer.decoding.search import beam_search, greedy_search

    transcriber = Transcriber.load(imported)
    feats = transcriber._features(waves()[:3])
    features = torch.stack(feats)
    model = transcriber.model
    prompts = [[EN, TRANSCRIBE, NO_TS], [DE, TRANSLATE, NO_TS], [FR, TRANSCRIBE, NO_TS]]
    beams = beam_search(model, features, beam=3, max_length=12,
                        processors=[ForcedPrefixes(prompts, 3)])
    assert [b[0].tokens[:3] for b in beams] == prompts
    one = beam_search(model, features, beam=1, max_length=12,
                      processors=[ForcedPrefixes(prompts, 1)])
    greedy = greedy_search(model, features, max_length=12,
                           processors=[ForcedPrefixes(prompts, 1)])
    assert [b[0].tokens for b in one] == [h.tokens for h in greedy]

    wide = transcriber._ids(feats, beam=3, alpha=0.0, max_length=None, language="de")
    assert len(wide) == 3 and all(row and row[0] not in BEGIN_SUPPRESS for row in wide)
    assert not {i for r in wide for i in r} & set(SUPPRESS)
    assert wide == transcriber._ids(feats, beam=3, alpha=0.0, max_length=None, language="de")


def test_prompt_rules_and_errors(imported: Path) -> None:
    data = json.loads((imported / "config.json").read_text())["generation"]
    prompt = WhisperPrompt(data)
    assert prompt.template() == [SOT, None, TRANSCRIBE, NO_TS]  # forced ids: detect language
    assert prompt.template("en") == [SOT, EN, TRANSCRIBE, NO_TS]  # task defaults to transcribe
    assert prompt.template("<|de|>", "translate") == [SOT, DE, TRANSLATE, NO_TS]
    assert prompt.template(task="translate") == [SOT, None, TRANSLATE, NO_TS]
    assert prompt.text_below == EOT
    assert prompt.text_ids([5, EN, 6, TIMESTAMPS[2], EOT]) == [5, 6]
    with pytest.raises(ConfigError, match="give one of its codes: de, en, fr"):
        Transcriber.load(imported, language="xx")
    with pytest.raises(ConfigError, match="task 'summarise'"):
        Transcriber.load(imported).transcribe(waves()[:1], task="summarise")
    english_only = WhisperPrompt({"decoder_start_token_id": SOT, "eos_token_id": EOT,
                                  "is_multilingual": False, "no_timestamps_token_id": NO_TS,
                                  "forced_decoder_ids": [[1, NO_TS]]})
    assert english_only.template() == [SOT, NO_TS]
    with pytest.raises(ConfigError, match="English-only"):
        english_only.template("en")


def test_export_of_an_imported_whisper_keeps_its_window_and_prompt(
        checkpoint: Path, imported: Path, tmp_path: Path, one_thread) -> None:
    from seqformer.interop.hf import export_hf

    export_hf(imported, tmp_path / "hf")
    gen = json.loads((tmp_path / "hf" / "generation_config.json").read_text())
    assert gen["lang_to_id"]["<|fr|>"] == FR and gen["suppress_tokens"] == SUPPRESS
    assert generated(tmp_path / "hf", language="fr", task="transcribe") == generated(
        checkpoint, language="fr", task="transcribe")
    import_hf(tmp_path / "hf", tmp_path / "back")
    before = json.loads((imported / "config.json").read_text())
    after = json.loads((tmp_path / "back" / "config.json").read_text())
    assert after["features"] == before["features"]
    assert after["generation"]["lang_to_id"] == before["generation"]["lang_to_id"]


def test_trained_runs_take_no_language_and_long_audio_is_refused(imported: Path,
                                                                 tmp_path: Path) -> None:
    from seqformer.data.tokenizer import train_tokenizer
    from seqformer.errors import DataError
    from seqformer.models.whisper import Whisper, WhisperConfig

    tokenizer = train_tokenizer("char", ["abc"])
    model = Whisper(WhisperConfig(vocab_size=tokenizer.vocab_size, num_mel_bins=MELS,
                                  d_model=16, heads=2, ffn_dim=32))
    model.save(tmp_path / "run", LogMel(n_mels=MELS).to_dict())
    tokenizer.save(tmp_path / "run" / "tokenizer")
    assert "pad_to_frames" not in json.loads((tmp_path / "run" / "config.json").read_text()
                                             )["features"]
    with pytest.raises(ConfigError, match="imported multilingual Whisper"):
        Transcriber.load(tmp_path / "run", language="en")
    trained = Transcriber.load(tmp_path / "run")
    assert trained.prompt is None and trained.features.pad_to_frames == 0
    with pytest.raises(DataError, match="at most 100 frames"):
        Transcriber.load(imported).transcribe([np.zeros(17000, dtype=np.float32)])
    # Long-form: split at the pause into pieces that fit the imported model's 1 s window.
    from seqformer.tasks.long_form import transcribe_segments

    whisper = Transcriber.load(imported)
    burst = 0.3 * np.sin(np.arange(8000) * 0.2).astype(np.float32)
    long = np.concatenate([burst, np.zeros(8000, np.float32), burst]).astype(np.float32)
    pieces = transcribe_segments(whisper, [long])[0]
    assert len(pieces) == 2 and all(p.end - p.start <= 1.0 for p in pieces)
    assert pieces[0].end <= pieces[1].start


def test_transcribe_command_takes_language_and_task(checkpoint: Path, imported: Path,
                                                   tmp_path: Path, capsys, one_thread) -> None:
    """`seqformer transcribe --language fr` prints generate()'s text for WAV files; the flags
    are refused for a model that has no prompt (exit 2, one line)."""
    from seqformer.cli import main
    from seqformer.data.speech import read_wav, write_wav

    tokenizer = tokenizers.Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    paths = []
    for i, wave in enumerate(waves()[:3]):
        write_wav(tmp_path / f"{i}.wav", wave)
        paths.append(str(tmp_path / f"{i}.wav"))
    read_back = [read_wav(p) for p in paths]  # the WAV's 16-bit rounding, on both sides
    model = transformers.WhisperForConditionalGeneration.from_pretrained(checkpoint).eval()
    extractor = transformers.WhisperFeatureExtractor.from_pretrained(checkpoint)
    features = extractor(read_back, sampling_rate=16000, return_tensors="pt").input_features
    out = model.generate(input_features=features, max_new_tokens=MAX_TARGET - 5,
                         language="fr", task="transcribe")
    expected = [tokenizer.decode(row, skip_special_tokens=True).strip() for row in out.tolist()]
    assert main(["transcribe", "--model", str(imported), "--language", "fr", "--task",
                 "transcribe", *paths]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t", 1)[1] for line in lines] == expected

    # evaluate --data hears the clips raw too (no trimming or levelling, as generate() does):
    # references equal to generate()'s transcripts score CER 0.
    tsv = tmp_path / "clips.tsv"
    tsv.write_text("".join(f"{p}\t{t}\n" for p, t in zip(paths, expected)), encoding="utf-8")
    assert main(["evaluate", "--model", str(imported), "--data", str(tsv), "--beam", "1"]) == 0
    assert "CER 0.00" in capsys.readouterr().out
