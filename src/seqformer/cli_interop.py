"""``seqformer import`` and ``seqformer export``: Hugging Face directories in and out.

Kept apart from ``cli.py`` so the main CLI stays a list of commands; the work is done by
:mod:`seqformer.interop.hf`, which a Python user can call directly.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from seqformer.errors import ConfigError

# What to try with an imported model, by its seqformer family ({out} = the new directory).
NEXT_STEP = {
    "seq2seq": "seqformer transduce --model {out} TEXT",
    "gpt": "seqformer generate --model {out}",
    "vit": "seqformer evaluate --data IMAGES.npz --model {out}",
    "ast": "seqformer evaluate --data CLIPS.tsv --model {out}",
    "whisper": "seqformer transcribe --model {out} CLIP.wav",
    "wav2vec2-ctc": "seqformer transcribe --model {out} CLIP.wav",
    "captioner": "seqformer caption --model {out} IMAGE.png",
    "speecht5-tts": "seqformer speak --model {out} --speaker XVECTOR.npy 'hello'",
    "hifigan": "seqformer speak --model TTS_RUN --vocoder {out} 'hello'",
    "decision": "from Python: DecisionTransformer.load({out!r}).predict(...)",
    "encodec": "from Python: seqformer.models.encodec.load_encodec({out!r}).encode(wave)",
}


def cmd_import(args: argparse.Namespace) -> int:
    from seqformer.interop.hf import import_hf
    from seqformer.models.seq2seq import read_model_config

    import_hf(args.path, args.out, trust_pickle=args.trust_pickle)
    family = str(read_model_config(args.out).get("family", "seq2seq"))
    hint = NEXT_STEP.get(family)
    if family == "wav2vec2-ctc" and not (Path(args.out) / "tokenizer").is_dir():
        hint = None  # weights only (no vocab.json): no text to transcribe into
    if hint is None and family.startswith("wav2vec2"):
        hint = "from Python: seqformer.models.wav2vec2.load_wav2vec2({out!r})"
    hint = (hint or "seqformer evaluate --model {out}").format(out=str(args.out))
    print(f"imported {args.path} -> {args.out} ({family}); try: {hint}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from seqformer.interop.hf import export_hf

    if args.format != "hf":
        raise ConfigError(f"--format {args.format!r} is not supported; use --format hf")
    kind = export_hf(args.model, args.out)
    print(f"exported {args.model} -> {args.out} (transformers model_type {kind})")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from seqformer.interop.hf import supported

    p = sub.add_parser("import", help="convert a local Hugging Face model directory",
                       description="Convert a local Hugging Face model directory (written by "
                       f"save_pretrained) into a seqformer model directory. Supported: "
                       f"{supported()}. Nothing is downloaded.")
    p.add_argument("path", help="the Hugging Face directory (config.json + weights)")
    p.add_argument("--out", required=True, help="seqformer model directory to write")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow pytorch_model.bin (pickle can run code; safetensors is the "
                   "default)")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("export", help="write a seqformer model as a Hugging Face directory")
    p.add_argument("model", help="seqformer model directory (imported or trained)")
    p.add_argument("--format", default="hf", help="output format (only 'hf')")
    p.add_argument("--out", required=True, help="directory to write")
    p.set_defaults(func=cmd_export)
