"""Import a Hugging Face model directory as a seqformer model directory, and export back.

An imported directory has the layout of a trained run (``config.json`` with ``family``,
``model.safetensors``, ``tokenizer/``), so every command that takes ``--model`` takes it:
``transduce``/``evaluate`` for Marian (``tokenizer/source`` and ``tokenizer/target``),
``generate``/``evaluate`` for GPT-2 (``tokenizer/``), ``embed``/``fill-mask``/``evaluate`` for
BERT (``tokenizer/``), ``evaluate --data FILE.npz`` for ViT (no tokenizer; the pixel
preprocessing goes into ``config.json``), ``evaluate --data FILE.tsv`` for AST (the filterbank
settings go into ``config.json``), ``transcribe``/``evaluate`` for Whisper (its tokenizer and
log-mel settings come along), the Python API for the Decision Transformer. Adding an
architecture whose interop module has ``import_dir`` / ``export_dir`` is one entry in
``IMPORTERS`` and, to write it back, one in ``EXPORT_MODULES`` / ``EXPORT_NAMES`` (GPT-2 and
Marian keep their own functions: their tokenizers travel through the model classes).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path

from seqformer.errors import CheckpointError, ConfigError
from seqformer.interop.hf_io import model_type, read_hf_config


def _import_gpt2(src: Path, out: Path, trust_pickle: bool) -> str:
    from seqformer.interop import hf_gpt2

    model = hf_gpt2.load(src, trust_pickle)
    tokenizer = hf_gpt2.load_tokenizer(src, model.config)
    model.save(out)
    if tokenizer is not None:
        tokenizer.save(out / "tokenizer")
    return "gpt"


def _import_marian(src: Path, out: Path, trust_pickle: bool) -> str:
    from seqformer.interop import hf_marian

    model = hf_marian.load(src, trust_pickle)
    tokenizers = hf_marian.load_tokenizers(src, model.config)
    model.save(out)
    if tokenizers is not None:
        tokenizers[0].save(out / "tokenizer" / "source")
        tokenizers[1].save(out / "tokenizer" / "target")
    return "seq2seq"


def _module_importer(module: str) -> Callable[[Path, Path, bool], str]:
    """The importer of an interop module with ``import_dir(src, out, trust_pickle)``, imported
    only when used (each pulls in its model code)."""

    def run(src: Path, out: Path, trust_pickle: bool) -> str:
        return importlib.import_module(f"seqformer.interop.{module}").import_dir(
            src, out, trust_pickle)

    return run


# model_type in config.json -> (description, importer)
IMPORTERS: dict[str, tuple[str, Callable[[Path, Path, bool], str]]] = {
    "bert": ("BERT (BertModel, BertForMaskedLM/SequenceClassification/TokenClassification/"
             "QuestionAnswering)", _module_importer("hf_bert_io")),
    "gpt2": ("GPT-2 (GPT2LMHeadModel)", _import_gpt2),
    "marian": ("Marian / opus-mt (MarianMTModel)", _import_marian),
    "vit": ("Vision Transformer (ViTForImageClassification)", _module_importer("hf_vit")),
    "audio-spectrogram-transformer": ("Audio Spectrogram Transformer "
                                      "(ASTForAudioClassification)", _module_importer("hf_audio")),
    "whisper": ("Whisper speech-to-text (WhisperForConditionalGeneration)",
                _module_importer("hf_whisper")),
    "decision_transformer": ("Decision Transformer (DecisionTransformerModel)",
                             _module_importer("hf_decision")),
    "wav2vec2": ("wav2vec 2.0 (Wav2Vec2Model, Wav2Vec2ForPreTraining/CTC/"
                 "SequenceClassification)", _module_importer("hf_wav2vec2")),
    "hubert": ("HuBERT (HubertModel, HubertForCTC/SequenceClassification)",
               _module_importer("hf_wav2vec2")),
    "wav2vec2-conformer": ("W2v-Conformer, relative positions (Wav2Vec2ConformerModel, "
                           "ForPreTraining/CTC/SequenceClassification)",
                           _module_importer("hf_wav2vec2")),
    "vision-encoder-decoder": ("image captioning, ViT encoder + GPT-2 decoder "
                               "(VisionEncoderDecoderModel)", _module_importer("hf_caption")),
    "speecht5": ("SpeechT5 text to speech (SpeechT5ForTextToSpeech)",
                 _module_importer("hf_speecht5")),
    "speecht5_hifigan": ("HiFi-GAN vocoder (SpeechT5HifiGan)", _module_importer("hf_hifigan")),
    "encodec": ("EnCodec neural audio codec (EncodecModel; 24 kHz, and chunked 48 kHz)",
                _module_importer("hf_encodec")),
}
# seqformer family -> the interop module whose export_dir writes it, and the HF type written
EXPORT_MODULES = {"bert": "hf_bert_io", "vit": "hf_vit", "decision": "hf_decision",
                  "ast": "hf_audio", "whisper": "hf_whisper", "wav2vec2": "hf_wav2vec2",
                  "wav2vec2-pretrain": "hf_wav2vec2", "wav2vec2-ctc": "hf_wav2vec2",
                  "wav2vec2-classify": "hf_wav2vec2", "captioner": "hf_caption",
                  "speecht5-tts": "hf_speecht5", "hifigan": "hf_hifigan", "encodec": "hf_encodec"}
EXPORT_NAMES = {"bert": "bert", "vit": "vit", "decision": "decision_transformer",
                "ast": "audio-spectrogram-transformer",
                "whisper": "whisper, transformer encoder only",
                "wav2vec2 families": "wav2vec2, hubert or wav2vec2-conformer",
                "captioner": "vision-encoder-decoder", "speecht5-tts": "speecht5",
                "hifigan": "speecht5_hifigan", "encodec": "encodec"}


def supported() -> str:
    return ", ".join(f"{k} = {desc}" for k, (desc, _) in IMPORTERS.items())


def import_hf(src: str | Path, out: str | Path, trust_pickle: bool = False) -> str:
    """Convert the local Hugging Face directory ``src`` into the seqformer model directory
    ``out``; returns the model family ("gpt" or "seq2seq")."""
    src, out = Path(src), Path(out)
    kind = model_type(read_hf_config(src), src)
    if kind not in IMPORTERS:
        raise CheckpointError(f"{src / 'config.json'}: model_type {kind!r} cannot be imported; "
                              f"supported: {supported()}")
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out}: exists and is not empty; choose a new --out directory")
    return IMPORTERS[kind][1](src, out, trust_pickle)


def export_hf(model_dir: str | Path, out: str | Path) -> str:
    """Write the seqformer model directory ``model_dir`` (imported or trained) as a Hugging
    Face directory ``out``, with the tokenizer files when they came from Hugging Face;
    returns the HF model_type written."""
    from seqformer.data.tokenizer import load_tokenizer
    from seqformer.interop.hf_tokenizers import HFFileTokenizer, SentencePieceTokenizer
    from seqformer.models.seq2seq import read_model_config

    model_dir, out = Path(model_dir), Path(out)
    family = read_model_config(model_dir).get("family", "seq2seq")
    if family == "gpt":
        from seqformer.models.gpt import GPT

        model = GPT.load(model_dir)
        tok_dir = model_dir / "tokenizer"
        tokenizer = load_tokenizer(tok_dir) if (tok_dir / "tokenizer.json").is_file() else None
        model.to_hf(out, tokenizer if isinstance(tokenizer, HFFileTokenizer) else None)
        return "gpt2"
    if family == "seq2seq":
        from seqformer.models.seq2seq import Seq2Seq

        model = Seq2Seq.load(model_dir)
        tokenizers = None
        if (model_dir / "tokenizer" / "source" / "tokenizer.json").is_file():
            pair = (load_tokenizer(model_dir / "tokenizer" / "source"),
                    load_tokenizer(model_dir / "tokenizer" / "target"))
            if all(isinstance(t, SentencePieceTokenizer) for t in pair):
                tokenizers = pair
        model.to_hf(out, tokenizers)
        return "marian"
    if family in EXPORT_MODULES:
        return importlib.import_module(f"seqformer.interop.{EXPORT_MODULES[family]}"
                                       ).export_dir(model_dir, out)
    raise ConfigError(f"{model_dir}: a {family!r} model cannot be exported to Hugging Face "
                      "format yet; supported: gpt (as gpt2), seq2seq (as marian), "
                      f"{', '.join(f'{k} (as {v})' for k, v in EXPORT_NAMES.items())}")
