"""SpeechT5 text-to-speech against Hugging Face's ``SpeechT5ForTextToSpeech``: a tiny random
model (every weight and BatchNorm statistic perturbed, so no zero init hides a mapping bug) in
eval mode gives the same spectrograms, stop logits and loss (guided attention included) on a
padded batch, with and without speakers; ``generate`` equals ``generate_speech`` item by item
(HF's batched limits use the padded length); the prenet dropout at SpeechT5's p = 0.5 draws the
same masks from the same seed; export -> ``from_pretrained`` and ``save_pretrained`` -> import
keep the outputs; the sentencepiece tokenizer comes along."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seqformer.errors import CheckpointError
from seqformer.interop.hf_speecht5 import (
    config_from_hf,
    export_speecht5,
    import_speecht5,
    state_from_hf,
    state_to_hf,
)
from seqformer.models.speecht5 import SpeechT5TTS, TTSBatch

transformers = pytest.importorskip("transformers")
_ = transformers.SpeechT5ForTextToSpeech  # the lazy import at collection, not in a test

PAD = 1  # SpeechT5's own ids: bos 0, pad 1, eos 2
MELS, SPEAKER = 8, 6
TOL = 1e-5


def hf_model(speaker_dim: int = SPEAKER, prenet_dropout: float = 0.0, seed: int = 0):
    """A tiny random ``SpeechT5ForTextToSpeech``; with ``prenet_dropout`` 0 its prenet dropout
    is replaced by the identity (HF's draws keep a fraction p of the units, so at p = 0 it
    would zero them: see ``consistent_dropout``)."""
    torch.manual_seed(seed)
    config = transformers.SpeechT5Config(
        vocab_size=20, hidden_size=16, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, num_mel_bins=MELS, speech_decoder_prenet_units=12,
        speech_decoder_postnet_units=12, speech_decoder_postnet_layers=3,
        speaker_embedding_dim=speaker_dim, speech_decoder_prenet_dropout=prenet_dropout,
        encoder_max_relative_position=4, max_text_positions=30, max_speech_positions=64,
        guided_attention_loss_num_heads=1)
    model = transformers.SpeechT5ForTextToSpeech(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.add_(torch.randn_like(b) * 0.2)
            elif name.endswith("running_var"):
                b.mul_(1 + torch.rand_like(b))
        # Stop probabilities around 0.4-0.7, so that a threshold of 0.43 stops the test batch
        # at different steps, none at the first.
        model.speech_decoder_postnet.prob_out.bias.sub_(4.0)
    if prenet_dropout == 0.0:
        model.speecht5.decoder.prenet._consistent_dropout = lambda x, p: x
    return model


def ours_from(hf) -> SpeechT5TTS:
    model = SpeechT5TTS(config_from_hf(hf.config))
    model.load_state_dict(state_from_hf(hf.state_dict()), strict=True)
    return model.eval()


def batch(speaker: bool = True, lengths: tuple[int, ...] = (10, 10, 10)) -> TTSBatch:
    """Three utterances of 9, 6 and 4 tokens; ``lengths`` frames (HF's batched forward is
    exactly ours when they are equal; (10, 7, 4) has a reduction group half real)."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 20, (3, 9), generator=g)
    ids[1, 6:] = PAD
    ids[2, 4:] = PAD
    mel = torch.randn(3, 10, MELS, generator=g)
    spk = torch.randn(3, SPEAKER, generator=g) if speaker else None
    return TTSBatch(ids, mel, torch.tensor(lengths), spk)


def hf_forward(hf, b: TTSBatch):
    labels = b.mel.clone()
    for i, n in enumerate(b.mel_lengths.tolist()):
        labels[i, n:] = -100.0
    return hf(input_ids=b.input_ids, attention_mask=b.input_ids.ne(PAD).long(), labels=labels,
              speaker_embeddings=b.speaker)


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape
    return float((a - b).abs().max())


def hf_pieces(hf, b: TTSBatch, inputs: torch.Tensor):
    """HF's spectrogram before the postnet and its stop logits (its forward returns only the
    post-net spectrogram), from HF's own modules."""
    dec = hf.speecht5(input_values=b.input_ids, attention_mask=b.input_ids.ne(PAD).long(),
                      decoder_input_values=inputs, speaker_embeddings=b.speaker)
    before, _, stop = hf.speech_decoder_postnet(dec.last_hidden_state)
    return before, stop


def item(b: TTSBatch, i: int) -> TTSBatch:
    """Utterance ``i`` alone: its tokens, its frames rounded up to whole decoder steps (HF's
    loss needs that; the extra frame is past mel_lengths, so ignored)."""
    k = int(b.input_ids[i].ne(PAD).sum())
    n = int(b.mel_lengths[i])
    frames = -(-n // 2) * 2
    return TTSBatch(b.input_ids[i: i + 1, :k], b.mel[i: i + 1, :frames], b.mel_lengths[i: i + 1],
                    None if b.speaker is None else b.speaker[i: i + 1])


@pytest.mark.parametrize("speaker", [True, False])
def test_forward_matches_hf_on_padded_text(speaker: bool, one_thread) -> None:
    """Text of three lengths, spectrograms of one: HF's batched forward is ours exactly."""
    hf = hf_model()
    ours = ours_from(hf)
    b = batch(speaker)
    with torch.no_grad():
        theirs = hf_forward(hf, b)
        out = ours(b)
        before, stop = hf_pieces(hf, b, ours.decoder_inputs(b.mel, b.mel_lengths)[0])
    assert max_diff(out.mel_after, theirs.spectrogram) <= TOL
    assert max_diff(out.mel_before, before) <= TOL
    assert max_diff(out.stop_logits, stop) <= TOL
    assert out.attention is not None and float(out.attention) > 0
    assert abs(float(out.loss) - float(theirs.loss)) <= TOL
    assert out.n_frames == 30


@pytest.mark.parametrize("speaker", [True, False])
def test_forward_on_padded_spectrograms_matches_hf_per_utterance(speaker: bool,
                                                                 one_thread) -> None:
    """Spectrograms of 10, 7 and 4 frames: each utterance of our padded batch equals HF's
    forward on it alone (outputs, and the loss of it alone)."""
    hf = hf_model()
    ours = ours_from(hf)
    b = batch(speaker, lengths=(10, 7, 4))
    with torch.no_grad():
        out = ours(b)
        for i, n in enumerate(b.mel_lengths.tolist()):
            one = item(b, i)
            theirs = hf_forward(hf, one)
            before, stop = hf_pieces(hf, one, ours.decoder_inputs(one.mel, one.mel_lengths)[0])
            frames = before.shape[1]
            assert max_diff(out.mel_after[i, :frames], theirs.spectrogram[0]) <= TOL
            assert max_diff(out.mel_before[i, :frames], before[0]) <= TOL
            assert max_diff(out.stop_logits[i, :n], stop[0, :n]) <= TOL
            assert abs(float(ours(one).loss) - float(theirs.loss)) <= TOL
    assert out.n_frames == 21


def test_loss_without_guided_attention_matches_hf(one_thread) -> None:
    hf = hf_model()
    hf.config.use_guided_attention_loss = False
    ours = SpeechT5TTS(config_from_hf(hf.config))
    ours.load_state_dict(state_from_hf(hf.state_dict()))
    ours.eval()
    with torch.no_grad():
        out = ours(batch())
        theirs = hf_forward(hf, batch())
    assert out.attention is None
    assert abs(float(out.loss) - float(theirs.loss)) <= TOL
    assert abs(float(out.loss) - float(out.l1 + out.bce)) <= 1e-6


def test_prenet_dropout_at_speecht5s_half_draws_hfs_masks(one_thread) -> None:
    """At p = 0.5 our keep-mask and HF's are the same draws from the same global seed."""
    hf = hf_model(prenet_dropout=0.5)
    ours = ours_from(hf)
    b = batch()
    with torch.no_grad():
        torch.manual_seed(11)
        theirs = hf_forward(hf, b).spectrogram
        torch.manual_seed(11)
        got = ours(b).mel_after
        torch.manual_seed(12)
        other = ours(b).mel_after
    assert max_diff(got, theirs) <= TOL
    assert max_diff(got, other) > 1e-3  # the dropout is on in eval mode


def test_generate_matches_generate_speech_per_item(one_thread) -> None:
    hf = hf_model()
    ours = ours_from(hf)
    b = batch()
    limits = dict(threshold=0.43, minlenratio=1.0, maxlenratio=2.5)
    got = ours.generate(b.input_ids, b.speaker, threshold=0.43, min_len_ratio=1.0,
                        max_len_ratio=2.5)
    lengths = []
    for i in range(3):
        row = b.input_ids[i: i + 1, : int(b.input_ids[i].ne(PAD).sum())]
        with torch.no_grad():
            theirs = hf.generate_speech(row, speaker_embeddings=b.speaker[i: i + 1], **limits)
        assert max_diff(got[i], theirs) <= TOL
        lengths.append(got[i].shape[0])
    assert len(set(lengths)) == 3 and min(lengths) > 2  # stops that differ, not at step one


def test_generate_without_speakers_matches_a_greedy_loop_of_hf_forward(one_thread) -> None:
    """HF's generate_speech refuses to run without speaker embeddings; its forward does not,
    so the reference re-runs HF's forward on the growing prefix and stops by the same rule."""
    hf = hf_model(speaker_dim=0)
    ours = ours_from(hf)
    b = batch(speaker=False)
    got = ours.generate(b.input_ids, max_len_ratio=4.0)
    for i in range(3):
        n = int(b.input_ids[i].ne(PAD).sum())
        row = b.input_ids[i: i + 1, :n]
        frames = torch.zeros(1, 1, MELS)
        max_steps = int(n * 4.0 / 2)
        with torch.no_grad():
            for step in range(1, max_steps + 1):
                out = hf.speecht5(input_values=row, decoder_input_values=frames)
                before, _, stop = hf.speech_decoder_postnet(out.last_hidden_state)
                if torch.sigmoid(stop[0, -2:]).sum() >= 0.5 or step == max_steps:
                    break
                frames = torch.cat([frames, before[:, -1:]], dim=1)
            expected = hf.speech_decoder_postnet.postnet(before)[0]
        assert max_diff(got[i], expected) <= TOL
        assert got[i].shape[0] > 2


def test_export_loads_in_transformers_and_gives_our_outputs(tmp_path: Path, one_thread) -> None:
    from seqformer.data.tts_mel import TTSMel

    ours = ours_from(hf_model())
    features = TTSMel(num_mel_bins=MELS, fmax=7000.0)
    ours.save(tmp_path / "run", features.to_dict())
    assert export_speecht5(tmp_path / "run", tmp_path / "hf") == "speecht5"
    extractor = transformers.SpeechT5FeatureExtractor.from_pretrained(tmp_path / "hf")
    wave = torch.randn(4000, generator=torch.Generator().manual_seed(0)).numpy() * 0.1
    theirs = extractor(audio_target=wave, sampling_rate=16000, return_tensors="pt")
    assert max_diff(theirs["input_values"][0], features(wave)) <= 1e-4
    hf = transformers.SpeechT5ForTextToSpeech.from_pretrained(tmp_path / "hf").eval()
    hf.speecht5.decoder.prenet._consistent_dropout = lambda x, p: x
    assert hf.config.pad_token_id == PAD
    b = batch()
    with torch.no_grad():
        assert max_diff(hf_forward(hf, b).spectrogram, ours(b).mel_after) <= TOL
        theirs = hf.generate_speech(b.input_ids[:1], speaker_embeddings=b.speaker[:1])
    assert max_diff(theirs, ours.generate(b.input_ids[:1], b.speaker[:1])[0]) <= TOL


def test_export_of_seqformer_ids_and_no_speakers(tmp_path: Path, one_thread) -> None:
    """A model trained here (pad 0, bos 1, eos 2, no speakers) exports with those ids and
    every weight, and reimports to the same state."""
    from seqformer.models.speecht5 import SpeechT5TTSConfig

    torch.manual_seed(0)
    model = SpeechT5TTS(SpeechT5TTSConfig(vocab_size=12, d_model=16, heads=2, ffn_dim=32,
                                          encoder_layers=1, decoder_layers=1, num_mel_bins=MELS,
                                          prenet_units=12, postnet_units=12, postnet_layers=3,
                                          max_speech_positions=64)).eval()
    model.save(tmp_path / "run")
    export_speecht5(tmp_path / "run", tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert (config["pad_token_id"], config["bos_token_id"], config["eos_token_id"]) == (0, 1, 2)
    hf = transformers.SpeechT5ForTextToSpeech.from_pretrained(tmp_path / "hf")
    assert set(hf.state_dict()) == set(state_to_hf(model))
    back = SpeechT5TTS(config_from_hf(hf.config))
    back.load_state_dict(state_from_hf(hf.state_dict()), strict=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, back.state_dict()[name]), name


def _spm_char_model(directory: Path) -> None:
    """A tiny character SentencePiece model with SpeechT5's special pieces at 0-3: 19 pieces,
    then <ctc_blank> = 19, the model's vocabulary of 20."""
    sentencepiece = pytest.importorskip("sentencepiece")
    text = directory / "text.txt"
    text.write_text("hello world\nthe cat sat\nspeech synthesis\n" * 20, encoding="utf-8")
    sentencepiece.SentencePieceTrainer.Train(
        input=str(text), model_prefix=str(directory / "spm_char"), model_type="char",
        vocab_size=19, bos_id=0, pad_id=1, eos_id=2, unk_id=3, minloglevel=2)


def test_import_of_a_save_pretrained_directory(tmp_path: Path, one_thread) -> None:
    hf = hf_model()
    hf.save_pretrained(tmp_path / "hf")
    _spm_char_model(tmp_path / "hf")
    preprocessor = {"feature_extractor_type": "SpeechT5FeatureExtractor", "num_mel_bins": MELS,
                    "fmax": 7000, "feature_size": 1}
    (tmp_path / "hf" / "preprocessor_config.json").write_text(json.dumps(preprocessor))
    assert import_speecht5(tmp_path / "hf", tmp_path / "ours") == "speecht5-tts"
    features = SpeechT5TTS.read_config(tmp_path / "ours")["features"]
    assert (features["num_mel_bins"], features["fmax"], features["fmin"]) == (MELS, 7000, 80)
    ours = SpeechT5TTS.load(tmp_path / "ours")
    assert (ours.pad_id, ours.bos_id, ours.eos_id) == (1, 0, 2)
    b = batch()
    with torch.no_grad():
        assert max_diff(ours(b).mel_after, hf_forward(hf, b).spectrogram) <= TOL

    from seqformer.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(tmp_path / "ours" / "tokenizer")
    slow = transformers.SpeechT5Tokenizer(str(tmp_path / "hf" / "spm_char.model"))
    for text in ("hello cat", "the world"):
        assert tokenizer.encode(text) == slow(text).input_ids
        assert tokenizer.encode(text)[-1] == 2


def test_foreign_weights_and_other_heads_are_refused(tmp_path: Path) -> None:
    hf = hf_model()
    state = dict(hf.state_dict())
    state["speecht5.decoder.prenet.extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="extra"):
        state_from_hf(state)
    hf.save_pretrained(tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    config["architectures"] = ["SpeechT5ForSpeechToText"]
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="SpeechT5ForSpeechToText"):
        import_speecht5(tmp_path / "hf", tmp_path / "ours")
    config["architectures"] = ["SpeechT5ForTextToSpeech"]
    for field, value, message in (("decoder_ffn_dim", 64, "decoder_ffn_dim"),
                                  ("hidden_act", "mish", "hidden_act")):
        broken = {**config, field: value}
        (tmp_path / "hf" / "config.json").write_text(json.dumps(broken))
        with pytest.raises(CheckpointError, match=message):
            import_speecht5(tmp_path / "hf", tmp_path / "ours")
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    (tmp_path / "hf" / "preprocessor_config.json").write_text(json.dumps({"num_mel_bins": 80}))
    with pytest.raises(CheckpointError, match="num_mel_bins=80"):
        import_speecht5(tmp_path / "hf", tmp_path / "ours")
    (tmp_path / "hf" / "preprocessor_config.json").unlink()
    # A pickled checkpoint can run code when loaded: refused unless trusted.
    torch.save(hf.state_dict(), tmp_path / "hf" / "pytorch_model.bin")
    (tmp_path / "hf" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="pickle"):
        import_speecht5(tmp_path / "hf", tmp_path / "ours")
    assert import_speecht5(tmp_path / "hf", tmp_path / "ours", trust_pickle=True)


def test_activation_names_map_both_ways() -> None:
    hf = hf_model()
    hf.config.hidden_act = "gelu_new"
    ours = SpeechT5TTS(config_from_hf(hf.config))
    assert ours.config.activation == "gelu_tanh"
    from seqformer.interop.hf_speecht5 import config_to_hf

    assert config_to_hf(ours)["hidden_act"] == "gelu_pytorch_tanh"


def test_an_imported_speecht5_speaks_through_the_cli(tmp_path: Path, one_thread, capsys) -> None:
    """`seqformer import` of a SpeechT5 with its tokenizer, then `seqformer speak` with a
    speaker embedding file gives HF's spectrogram, vocoded (the vocoder itself is tested in
    tests/decoding/test_vocoder.py); without the embedding: one line and exit 2."""
    import numpy as np

    from seqformer.cli import main
    from seqformer.data.speech import read_wav
    from seqformer.tasks.tts import Synthesizer

    hf = hf_model(prenet_dropout=0.0)
    hf.save_pretrained(tmp_path / "hf")
    _spm_char_model(tmp_path / "hf")
    assert main(["import", str(tmp_path / "hf"), "--out", str(tmp_path / "ours")]) == 0
    xvector = np.random.default_rng(0).standard_normal(SPEAKER).astype(np.float32)
    np.save(tmp_path / "x.npy", xvector)
    wav = tmp_path / "hello.wav"
    capsys.readouterr()
    assert main(["speak", "--model", str(tmp_path / "ours"), "--speaker",
                 str(tmp_path / "x.npy"), "--out", str(wav), "hello world"]) == 0
    synthesizer = Synthesizer.load(tmp_path / "ours")
    mel = synthesizer.spectrograms(["hello world"], speaker_embedding=xvector)[0]
    slow = transformers.SpeechT5Tokenizer(str(tmp_path / "hf" / "spm_char.model"))
    ids = slow("hello world", return_tensors="pt").input_ids
    with torch.no_grad():
        reference = hf.generate_speech(ids, torch.from_numpy(xvector)[None], threshold=0.5)
    assert mel.shape == reference.shape and max_diff(mel, reference) <= 1e-4
    assert len(read_wav(wav)) > 0
    assert main(["speak", "--model", str(tmp_path / "ours"), "hello"]) == 2
    assert "--speaker FILE.npy" in capsys.readouterr().err
