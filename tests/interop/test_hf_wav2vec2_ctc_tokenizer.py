"""CTC vocabularies across the Hugging Face boundary: a ``Wav2Vec2ForCTC`` saved with its
``Wav2Vec2CTCTokenizer`` and feature extractor, imported by ``seqformer import``, transcribes
WAVs through ``seqformer transcribe`` / ``evaluate`` exactly as ``processor.batch_decode`` of
HF's greedy logits does (blank at 0 and elsewhere, ``do_normalize`` on and off, upper- and
lower-casing vocabularies); our CTC runs export a processor that gives HF our transcripts; the
tokenizer encodes and decodes as HF's does; bad vocabularies are one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from seqformer.cli import main
from seqformer.config import to_dict
from seqformer.data import speech
from seqformer.data.spoken_words import prepare
from seqformer.data.tokenizer import load_tokenizer, train_tokenizer
from seqformer.decoding.ctc import ctc_greedy
from seqformer.errors import CheckpointError, ConfigError
from seqformer.interop.hf import export_hf, import_hf
from seqformer.interop.hf_tokenizers import CTCVocabTokenizer, ctc_tokenizer
from seqformer.models.wav2vec2 import Wav2Vec2Config, Wav2Vec2ForCTC
from seqformer.recipe import load_recipe
from seqformer.tasks.speech_ctc import CTCTranscriber

transformers = pytest.importorskip("transformers")

HF_SMALL = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                conv_dim=(8, 8, 8), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2),
                num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, hidden_dropout=0.0,
                attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                final_dropout=0.0, layerdrop=0.0)
OURS_SMALL = dict(conv_dim=(8, 8, 8), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2), d_model=16,
                  heads=2, layers=2, ffn_dim=32, pos_conv_kernel=8, pos_conv_groups=2,
                  dropout=0.0, attention_dropout=0.0)
# wav2vec2-base-960h's layout (specials first, "|" next, upper-case letters) ...
VOCAB_PAD0 = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, "E": 5, "T": 6, "A": 7,
              "O": 8, "N": 9, "'": 10}
# ... and one with the pad (the blank) last and the specials scattered.
VOCAB_PAD_LAST = {"|": 0, "E": 1, "<unk>": 2, "T": 3, "A": 4, "<s>": 5, "O": 6, "N": 7,
                  "</s>": 8, "'": 9, "<pad>": 10}


def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every weight off its init, so a mapping mistake shows."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def bias_head(head: torch.nn.Linear, pad: int, never: list[int]) -> None:
    """Letters at spread biases, the blank a little ahead (so blanks split repeats), and the
    specials other than the pad out of reach: HF's default ``batch_decode`` writes a predicted
    ``<s>`` / ``<unk>`` literally, ours drops it (see ``CTCVocabTokenizer``)."""
    with torch.no_grad():
        head.weight.mul_(20.0)  # the frame decides the letter, not the bias alone
        head.bias.copy_(torch.linspace(-0.5, 0.5, head.bias.numel()))
        head.bias[pad] = 1.0
        head.bias[never] = -1e4


def write_wavs(directory: Path, n: int = 4) -> list[Path]:
    """16 kHz int16 clips of different lengths with a DC offset, so normalising matters; no
    quiet ends, so a trained run's trim would keep them whole."""
    rng = np.random.default_rng(7)
    paths = []
    for i in range(n):
        samples = 1200 + 400 * i
        t = np.arange(samples) / 16000
        wave = 0.2 + 0.3 * np.sin(2 * np.pi * (150 + 90 * i) * t) + 0.1 * rng.standard_normal(
            samples)
        path = directory / f"clip{i}.wav"
        speech.write_wav(path, np.clip(wave, -0.95, 0.95))
        paths.append(path)
    return paths


def hf_transcripts(model, processor, wavs: list[Path]) -> list[str]:
    """``processor.batch_decode`` of HF's greedy logits, one unpadded clip at a time, the WAV
    read as seqformer reads it (int16 / 32768)."""
    out = []
    with torch.no_grad():
        for path in wavs:
            inputs = processor(speech.read_wav(path), sampling_rate=16000, return_tensors="pt")
            ids = model(inputs.input_values).logits.argmax(-1)
            out.append(processor.batch_decode(ids)[0])
    return out


def saved_hf_ctc(directory: Path, vocab: dict[str, int], lower: bool, normalize: bool,
                 as_processor: bool):
    """A tiny random HF Wav2Vec2ForCTC with its tokenizer and feature extractor, saved as
    ``save_pretrained`` writes them (one processor, or the three parts one by one). Without
    ``normalize`` the model is the LayerNorm kind (``do_stable_layer_norm``, an attention
    mask, as HF's large checkpoints): the group-norm encoder's first GroupNorm undoes a
    per-utterance normalisation by itself, so only this kind shows whether it was done."""
    directory.mkdir(parents=True)
    (directory / "vocab_src.json").write_text(json.dumps(vocab))
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(directory / "vocab_src.json"),
                                                  do_lower_case=lower)
    extractor = transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=normalize,
        return_attention_mask=not normalize)
    pad = vocab["<pad>"]
    layer = {} if normalize else {"feat_extract_norm": "layer", "do_stable_layer_norm": True,
                                  "conv_bias": True}
    config = transformers.Wav2Vec2Config(**HF_SMALL, **layer, vocab_size=len(vocab),
                                         pad_token_id=pad)
    torch.manual_seed(0)
    model = perturb(transformers.Wav2Vec2ForCTC(config))
    bias_head(model.lm_head, pad, [vocab[t] for t in ("<s>", "</s>", "<unk>")])
    model.save_pretrained(directory)
    processor = transformers.Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer)
    if as_processor:
        processor.save_pretrained(directory)
    else:
        tokenizer.save_pretrained(directory)
        extractor.save_pretrained(directory)
    (directory / "vocab_src.json").unlink()
    return model, transformers.Wav2Vec2Processor.from_pretrained(directory)


def transcribe_cli(model_dir: Path, wavs: list[Path], capsys, *extra: str) -> list[str]:
    assert main(["transcribe", "--model", str(model_dir), *extra, *map(str, wavs)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(w) for w in wavs]
    return [line.split("\t", 1)[1] for line in lines]


@pytest.mark.parametrize("vocab, lower, normalize, as_processor", [
    (VOCAB_PAD0, False, True, False),  # wav2vec2-base-960h's settings, files one by one
    (VOCAB_PAD_LAST, True, False, True),  # the blank at 10, do_lower_case, no normalising
])
def test_imported_ctc_model_transcribes_as_hugging_faces_processor(
        tmp_path: Path, one_thread, capsys, vocab, lower, normalize, as_processor) -> None:
    theirs, processor = saved_hf_ctc(tmp_path / "hf", vocab, lower, normalize, as_processor)
    assert processor.tokenizer.pad_token_id == vocab["<pad>"]
    assert processor.feature_extractor.do_normalize is normalize
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    assert f"try: seqformer transcribe --model {tmp_path / 'run'} CLIP.wav" in \
        capsys.readouterr().out
    run = json.loads((tmp_path / "run" / "config.json").read_text())
    assert run["family"] == "wav2vec2-ctc" and run["features"]["normalize"] is normalize
    tokenizer = load_tokenizer(tmp_path / "run" / "tokenizer")
    assert tokenizer.kind == "hf-ctc" and tokenizer.pad_id == vocab["<pad>"]

    wavs = write_wavs(tmp_path)
    expected = hf_transcripts(theirs, processor, wavs)
    # Not a trivial agreement: text with words, different for different clips.
    assert all(expected) and len(set(expected)) == len(expected)
    assert any(" " in text for text in expected)
    assert all(text == (text.lower() if lower else text.upper()) for text in expected)
    assert transcribe_cli(tmp_path / "run", wavs, capsys) == expected

    # evaluate --data: references in the other case still score 0 (compared in the case the
    # vocabulary transcribes in); a wrong reference does not.
    other = [t.upper() if lower else t.lower() for t in expected]
    tsv = tmp_path / "clips.tsv"
    tsv.write_text("".join(f"{w}\t{t}\n" for w, t in zip(wavs, other)))
    transcriber = CTCTranscriber.load(tmp_path / "run")
    data = transcriber.read_transcripts(tsv)
    assert transcriber.evaluate(data) == {"cer": 0.0, "wer": 0.0, "n": float(len(wavs))}
    assert main(["evaluate", "--model", str(tmp_path / "run"), "--data", str(tsv)]) == 0
    assert "CER 0.00  WER 0.00" in capsys.readouterr().out
    hyp = (tmp_path / "run" / "eval.hyp.tsv").read_text().splitlines()[1:]
    assert [line.split("\t")[1] for line in hyp] == expected
    data.texts[0] = "X" + data.texts[0]
    assert transcriber.evaluate(data)["cer"] > 0


def test_the_blank_is_the_pad_id_not_zero(tmp_path: Path, one_thread) -> None:
    """With the pad last, id 0 is the word delimiter: decoding with blank 0 would drop the
    spaces and keep the pads; the imported transcriber reads the blank from the tokenizer."""
    theirs, processor = saved_hf_ctc(tmp_path / "hf", VOCAB_PAD_LAST, False, True, False)
    import_hf(tmp_path / "hf", tmp_path / "run")
    transcriber = CTCTranscriber.load(tmp_path / "run")
    wavs = write_wavs(tmp_path)
    expected = hf_transcripts(theirs, processor, wavs)
    assert any(" " in text for text in expected)
    assert transcriber.transcribe(wavs) == expected
    # The beam search takes the blank too: a wide beam finds a labeling at least as probable.
    assert all(transcriber.transcribe(wavs, beam=4))
    with_zero = []
    for path in wavs:
        wave = torch.as_tensor(speech.read_wav(path))
        wave = (wave - wave.mean()) / torch.sqrt(wave.var(unbiased=False) + 1e-7)
        with torch.no_grad():
            log_probs = transcriber.model.logits(wave[None])[0].log_softmax(-1)
        with_zero.append(transcriber.tokenizer.decode(ctc_greedy(log_probs, blank=0)[0]))
    assert with_zero != expected and not any(" " in text for text in with_zero)


def test_weights_only_blank_elsewhere_and_bad_vocabularies_are_refused(tmp_path: Path,
                                                                      one_thread) -> None:
    config = transformers.Wav2Vec2Config(**HF_SMALL, vocab_size=6, pad_token_id=5)
    perturb(transformers.Wav2Vec2ForCTC(config)).save_pretrained(tmp_path / "hf")
    with pytest.raises(CheckpointError, match="pad_token_id=5 .* no vocab.json") as err:
        import_hf(tmp_path / "hf", tmp_path / "out1")
    assert "\n" not in str(err.value) and not (tmp_path / "out1").exists()
    # A vocabulary larger than the head.
    (tmp_path / "hf" / "vocab.json").write_text(json.dumps(
        {"<pad>": 5, "<unk>": 1, "|": 0, "A": 2, "B": 3, "C": 4, "D": 6}))
    with pytest.raises(CheckpointError, match="ids up to 6 but the model has 6 outputs"):
        import_hf(tmp_path / "hf", tmp_path / "out2")
    assert not (tmp_path / "out2").exists()
    # The pad token is not the model's blank.
    (tmp_path / "hf" / "vocab.json").write_text(json.dumps(
        {"<pad>": 0, "<unk>": 1, "|": 5, "A": 2, "B": 3, "C": 4}))
    with pytest.raises(CheckpointError, match="pad token '<pad>' has id 0 but the model's "
                                              "pad_token_id"):
        import_hf(tmp_path / "hf", tmp_path / "out3")
    # A vocabulary smaller than the head is fine: the ids beyond it decode to nothing.
    (tmp_path / "hf" / "vocab.json").write_text(json.dumps({"A": 0, "<unk>": 1, "<pad>": 5}))
    import_hf(tmp_path / "hf", tmp_path / "out4")
    tokenizer = load_tokenizer(tmp_path / "out4" / "tokenizer")
    assert tokenizer.vocab_size == 6 and tokenizer.decode([0, 2, 0, 1, 5]) == "AA"
    export_hf(tmp_path / "out4", tmp_path / "hf4")  # HF's names of the specials come back
    written = json.loads((tmp_path / "hf4" / "tokenizer_config.json").read_text())
    assert (written["pad_token"], written["bos_token"], written["unk_token"]) == \
        ("<pad>", "<s>", "<unk>")
    assert json.loads((tmp_path / "hf4" / "config.json").read_text())["pad_token_id"] == 5
    (tmp_path / "out4" / "tokenizer" / "vocab.json").unlink()
    with pytest.raises(CheckpointError, match="tokenizer file not found"):
        CTCTranscriber.load(tmp_path / "out4")


@pytest.mark.parametrize("lower", [False, True])
def test_tokenizer_encodes_and_decodes_as_wav2vec2_ctc_tokenizer(tmp_path: Path,
                                                                 lower: bool) -> None:
    (tmp_path / "vocab.json").write_text(json.dumps(VOCAB_PAD_LAST))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "Wav2Vec2CTCTokenizer", "do_lower_case": lower,
         "word_delimiter_token": "|", "pad_token": "<pad>", "unk_token": "<unk>"}))
    theirs = transformers.Wav2Vec2CTCTokenizer.from_pretrained(tmp_path)
    ours = ctc_tokenizer(tmp_path, 11, blank=10)
    assert isinstance(ours, CTCVocabTokenizer) and ours.unk_id == 2 and ours.pad_id == 10
    for text in ("eat a toe", "NO TEA", "ten o'one", "tax", "a  b"):
        assert ours.encode(text) == theirs(text).input_ids, text
    rng = np.random.default_rng(0)
    letters = [i for t, i in VOCAB_PAD_LAST.items() if t not in ("<s>", "</s>", "<unk>")]
    for _ in range(300):  # raw frame ids, as argmax gives them: HF groups, we collapse
        frames = rng.choice(letters, size=int(rng.integers(0, 14))).tolist()
        one_hot = torch.nn.functional.one_hot(torch.tensor([frames], dtype=torch.long), 11)
        collapsed = ctc_greedy(one_hot.float(), blank=10)[0]
        assert ours.decode(collapsed) == theirs.batch_decode([frames])[0], frames
    # Specials other than the pad: HF's default decode spells them out; ours drops them.
    assert theirs.decode([1, 5, 3]) == ("e<s>t" if lower else "E<s>T")
    assert ours.decode([1, 5, 3]) == ("et" if lower else "ET")
    ours.save(tmp_path / "saved")
    again = load_tokenizer(tmp_path / "saved")
    assert isinstance(again, CTCVocabTokenizer) and again.fingerprint == ours.fingerprint
    assert again.decode([1, 0, 3]) == ours.decode([1, 0, 3])


def our_ctc_run(directory: Path, texts: list[str], recipe: bool = False) -> None:
    """A model directory like a CTC run's (weights, features, character tokenizer, with
    ``recipe`` the bundled CTC recipe's recipe.yaml), built directly: random weights, the head
    biased as above."""
    tokenizer = train_tokenizer("char", texts)
    torch.manual_seed(0)
    model = Wav2Vec2ForCTC(Wav2Vec2Config(**OURS_SMALL, vocab_size=tokenizer.vocab_size))
    perturb(model, 1)
    bias_head(model.lm_head, 0, [1, 2, 3])
    model.save(directory, {"sample_rate": 16000, "normalize": True})
    tokenizer.save(directory / "tokenizer")
    if recipe:
        (directory / "recipe.yaml").write_text(yaml.safe_dump(to_dict(load_recipe(
            "ctc-spoken-words"))))


@pytest.mark.parametrize("recipe", [False, True])
def test_exported_ctc_run_transcribes_the_same_in_transformers(tmp_path: Path, one_thread,
                                                               capsys, recipe: bool) -> None:
    """With a recipe (a trained run) the input is trimmed and peak-levelled first, as in
    training; these clips have no quiet ends, so that leaves them whole, and the level is
    normalised away: HF's processor on the samples as read gives the same greedy text."""
    our_ctc_run(tmp_path / "run", ["the cat", "a dog's tale", "no"], recipe)
    wavs = write_wavs(tmp_path)
    assert all(len(prepare(speech.read_wav(w))) == len(speech.read_wav(w)) for w in wavs)
    greedy = ["--beam", "1"] if recipe else []  # the bundled recipe decodes with beam 8
    ours = transcribe_cli(tmp_path / "run", wavs, capsys, *greedy)
    assert all(ours) and len(set(ours)) == len(ours) and any(" " in t for t in ours)

    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "hf")]) == 0
    for name in ("vocab.json", "tokenizer_config.json", "special_tokens_map.json",
                 "preprocessor_config.json"):
        assert (tmp_path / "hf" / name).is_file(), name
    processor = transformers.Wav2Vec2Processor.from_pretrained(tmp_path / "hf")
    theirs = transformers.Wav2Vec2ForCTC.from_pretrained(tmp_path / "hf").eval()
    assert processor.tokenizer.pad_token_id == theirs.config.pad_token_id == 0
    assert processor.tokenizer.convert_ids_to_tokens(
        load_tokenizer(tmp_path / "run" / "tokenizer").encode(" ")) == ["|"]
    assert hf_transcripts(theirs, processor, wavs) == ours

    # And back: the exported directory imports with its vocabulary and says the same.
    capsys.readouterr()
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "back")]) == 0
    capsys.readouterr()
    assert load_tokenizer(tmp_path / "back" / "tokenizer").kind == "hf-ctc"
    assert transcribe_cli(tmp_path / "back", wavs, capsys) == ours
    export_hf(tmp_path / "back", tmp_path / "hf2")  # an imported vocabulary exports as it came
    assert json.loads((tmp_path / "hf2" / "vocab.json").read_text()) == json.loads(
        (tmp_path / "hf" / "vocab.json").read_text())


def test_a_pipe_character_is_refused_on_export(tmp_path: Path, one_thread) -> None:
    our_ctc_run(tmp_path / "run", ["a|b", "c d"])
    with pytest.raises(ConfigError, match="include '|'") as err:
        export_hf(tmp_path / "run", tmp_path / "hf")
    assert "\n" not in str(err.value) and not (tmp_path / "hf").exists()


def test_weights_only_ctc_import_says_there_is_no_text(tmp_path: Path, one_thread,
                                                       capsys) -> None:
    config = transformers.Wav2Vec2Config(**HF_SMALL, vocab_size=6)
    perturb(transformers.Wav2Vec2ForCTC(config)).save_pretrained(tmp_path / "hf")
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "load_wav2vec2" in out and "transcribe" not in out
    wav = write_wavs(tmp_path, 1)[0]
    assert main(["transcribe", "--model", str(tmp_path / "run"), str(wav)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "no tokenizer/, so its CTC outputs have no text" in err[-1]
