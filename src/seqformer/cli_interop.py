"""``seqformer import`` and ``seqformer export``: Hugging Face directories in and out.

Kept apart from ``cli.py`` so the main CLI stays a list of commands; the work is done by
:mod:`seqformer.interop.hf`, which a Python user can call directly.
"""

from __future__ import annotations

import argparse

from seqformer.errors import ConfigError


def cmd_import(args: argparse.Namespace) -> int:
    from seqformer.interop.hf import import_hf

    family = import_hf(args.path, args.out, trust_pickle=args.trust_pickle)
    if family == "decision":  # no command takes it: evaluate rolls out a run's gridworld
        print(f"imported {args.path} -> {args.out} ({family}); use it from Python: "
              f"DecisionTransformer.load({str(args.out)!r}).predict(...)")
        return 0
    if family.startswith("wav2vec2"):  # no command takes them yet: the Python API does
        print(f"imported {args.path} -> {args.out} ({family}); use it from Python: "
              f"seqformer.models.wav2vec2.load_wav2vec2({str(args.out)!r})")
        return 0
    use = ("transduce --model" if family == "seq2seq" else
           "evaluate --data IMAGES.npz --model" if family == "vit" else
           "evaluate --data CLIPS.tsv --model" if family == "ast" else "generate --model")
    print(f"imported {args.path} -> {args.out} ({family}); try: seqformer {use} {args.out}")
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
