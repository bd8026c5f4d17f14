"""Bodies of the encoder (BERT) commands; ``cli.py`` only registers them.

``train`` with ``task: mlm | classify | tag | qa``, ``fill-mask``, ``embed``, and ``evaluate``
of a ``family: bert`` run. Errors a user can cause are :class:`~seqformer.errors.UserError`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from seqformer.errors import DataError, UserError


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def is_encoder_recipe(recipe: Any) -> bool:
    from seqformer.recipe_encoder import DistilRecipe, FinetuneRecipe, MLMRecipe

    return isinstance(recipe, MLMRecipe | FinetuneRecipe | DistilRecipe)


def train_encoder(args: argparse.Namespace, recipe: Any, out: Path) -> int:
    """Pretrain (mlm), distil or fine-tune; print a fill-mask sample or the test metrics."""
    from seqformer.recipe_encoder import DistilRecipe, MLMRecipe
    from seqformer.tasks import encoder

    masked_lm = isinstance(recipe, MLMRecipe | DistilRecipe)
    if isinstance(recipe, MLMRecipe):
        summary = encoder.train_mlm(recipe, out, resume=args.resume)
    elif isinstance(recipe, DistilRecipe):
        summary = encoder.train_distil(recipe, out, resume=args.resume)
    else:
        summary, test = encoder.train_finetune(recipe, out, resume=args.resume)
        if test:
            print("test: " + "  ".join(f"{k[5:]} {v:.4f}" for k, v in test.items()))
    if summary.get("interrupted"):
        print(f"interrupted at step {summary.get('step')}; resume with: seqformer train "
              f"{args.recipe} --out {out} --resume", file=sys.stderr)
        return 130
    if masked_lm:
        run = encoder.EncoderRun.load(out, _device(recipe.train.device))
        prompt = "The [MASK] is chasing the mouse."
        guesses = run.fill_mask(prompt, 5)[0]
        print(f"{prompt} -> " + ", ".join(f"{t} {p:.2f}" for t, p in guesses))
    print(f"model saved in {out}")
    return 0


def cmd_fill_mask(args: argparse.Namespace) -> int:
    from seqformer.tasks.encoder import EncoderRun

    if args.top_k < 1:
        raise UserError(f"--top-k must be >= 1, got {args.top_k}")
    run = EncoderRun.load(args.model, _device(args.device))
    for text in args.text:
        for i, guesses in enumerate(run.fill_mask(text, args.top_k)):
            label = f"{text}" if i == 0 else f"  [MASK] #{i + 1}"
            print(label)
            for token, prob in guesses:
                print(f"  {token}\t{prob:.4f}")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    from seqformer.data.corpus import read_lines_numbered
    from seqformer.tasks.encoder import EncoderRun

    if args.input:
        texts = [t for _, t in read_lines_numbered(args.input) if t.strip()]
        if not texts:
            raise DataError(f"{args.input}: empty input; give at least one non-empty line")
    elif args.text:
        texts = list(args.text)
    else:
        raise UserError("embed: give TEXT arguments or --input FILE (one text per line)")
    layers = parse_layers(args.layers)
    run = EncoderRun.load(args.model, _device(args.device))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    which = f"layers {args.layers} ({args.combine})" if layers else "the last layer"
    if args.tokens:
        rows = run.token_vectors(texts, layers, args.combine)
        vectors = np.concatenate([v for _, v in rows])
        offsets = np.cumsum([0] + [len(p) for p, _ in rows])
        pieces = np.array([piece for p, _ in rows for piece in p])
        with out.open("wb") as f:  # np.savez would append .npz to a name without it
            np.savez(f, vectors=vectors, offsets=offsets, pieces=pieces)
        print(f"{len(pieces)} token vectors of dimension {vectors.shape[1]} from {len(rows)} "
              f"texts ({which}) written to {out}: arrays vectors, pieces, offsets "
              "(text i is rows offsets[i]:offsets[i+1])")
        return 0
    vectors = run.embed(texts, args.pooling, layers=layers, combine=args.combine)
    np.save(out, vectors)
    print(f"{vectors.shape[0]} embeddings of dimension {vectors.shape[1]} "
          f"({args.pooling or 'recipe'} pooling of {which}) written to {out}")
    return 0


def parse_layers(spec: str | None) -> list[int] | None:
    """``--layers``: comma-separated layer numbers (0 = embeddings, -1 = the top), or
    ``last4`` for BERT's best feature set (the last four layers)."""
    if not spec:
        return None
    if spec == "last4":
        return [-4, -3, -2, -1]
    try:
        return [int(x) for x in spec.split(",")]
    except ValueError:
        raise UserError(f"--layers {spec!r}: give layer numbers like -4,-3,-2,-1 or 0,6,12 "
                        "(0 = embeddings, negative from the top), or last4") from None


def evaluate_encoder(args: argparse.Namespace) -> int:
    """Score a fine-tuned run on a labelled file of its task (or its recipe's test split)."""
    from seqformer.data.finetune import read_classification_tsv, read_conll, read_qa_jsonl
    from seqformer.tasks.encoder import EncoderRun, load_items

    run = EncoderRun.load(args.model[0], _device(args.device))
    task = run.model.head_kind
    if args.data:
        if len(args.data) != 1:
            raise UserError("evaluate: give one --data file for an encoder model")
        reader = {"classify": read_classification_tsv, "tag": read_conll,
                  "qa": read_qa_jsonl}.get(task)
        if reader is None:
            raise UserError(f"evaluate: {args.model[0]} is a pretrained (mlm) encoder with no "
                            "task head; evaluate a fine-tuned run")
        items, where = reader(args.data[0]), args.data[0]
    else:
        if run.recipe is None or not hasattr(run.recipe, "init_from"):
            raise UserError(f"evaluate: {args.model[0]} is a BERT encoder; give --data FILE "
                            "of its task")
        items, where = load_items(run.recipe)["test"], "the recipe's test split"
        if not items:
            raise UserError(f"evaluate: {args.model[0]}'s recipe has no test split; give "
                            "--data FILE")
    metrics = run.evaluate(items)
    print(f"{where} ({len(items)} examples): "
          + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``fill-mask`` and ``embed``."""
    p = sub.add_parser("fill-mask", help="top-k words for each [MASK] (a task: mlm run)")
    p.add_argument("text", nargs="+", help="text with one or more [MASK]")
    p.add_argument("--model", required=True, help="run directory of a 'task: mlm' recipe")
    p.add_argument("--top-k", type=int, default=5, help="predictions per mask (default 5)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.set_defaults(func=cmd_fill_mask)

    p = sub.add_parser("embed", help="sentence (or --tokens: word-piece) features of a BERT "
                       "run, written as .npy (.npz)")
    p.add_argument("text", nargs="*", help="texts (default: lines of --input)")
    p.add_argument("--input", help="file with one text per line")
    p.add_argument("--model", required=True, help="run directory of an encoder run")
    p.add_argument("--out", required=True, help="output .npy file, (texts, d_model) float32")
    p.add_argument("--pooling", choices=["mean", "cls"], default=None,
                   help="mean of the token states or the [CLS] state (default: the recipe's "
                   "pooling, mean)")
    p.add_argument("--layers", default=None, metavar="L1,L2,...|last4",
                   help="features from these hidden states instead of the last layer: 0 = "
                   "embeddings, 1..L the layers, negative from the top (write "
                   "--layers=-2,-1); last4 = the last four, BERT's best frozen features for NER")
    p.add_argument("--combine", choices=["concat", "sum", "mean"], default="concat",
                   help="how several --layers are joined (concat: dimension n x d_model)")
    p.add_argument("--tokens", action="store_true",
                   help="one vector per word piece instead of per text: --out is an .npz of "
                   "vectors, pieces and offsets")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.set_defaults(func=cmd_embed)
