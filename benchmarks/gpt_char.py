"""GPT benchmark: train a language-model recipe for a fixed budget, report held-out loss.

    python benchmarks/gpt_char.py --set train.max_minutes=30          # gpt-kjv-char, auto device
    python benchmarks/gpt_char.py --recipe gpt-bible-bpe --set train.max_minutes=10

Scores the *whole* validation tail (the recipe's last 5% of the text; training-time validation
may score only ``data.valid_chars`` of it) and prints one JSON line (also written to --json)
for benchmarks/RESULTS.md: nats per token (= per character for a char model), bits per
character, perplexity, steps, tokens/s and the hardware. Reference point from the issue:
nanoGPT's baby GPT (6 layers, 6 heads, 384 dims, context 256) reaches about 1.47 validation
loss on tiny Shakespeare in a few minutes on one A100 (a different text, so a rough guide).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from common import emit, hardware

from seqformer.recipe import LMRecipe, load_recipe
from seqformer.tasks.lm import LanguageModel, load_texts, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="gpt-kjv-char")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", default="runs/bench-gpt-char")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    recipe = load_recipe(args.recipe, args.set)
    if not isinstance(recipe, LMRecipe):
        sys.exit(f"{args.recipe}: not a language-model recipe (task: lm)")
    start = time.time()
    summary = train(recipe, args.out)
    train_minutes = (time.time() - start) / 60
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = LanguageModel.load(args.out, device)
    _, valid_text, _ = load_texts(recipe)
    t0 = time.time()
    m = model.perplexity(valid_text, "validation tail")
    generator = torch.Generator(device=model.device).manual_seed(1)
    result = {"recipe": args.recipe, "overrides": args.set, "hardware": hardware(),
              "torch": torch.__version__, "steps": summary.get("step"),
              "stop": summary.get("stop_reason"), "train_minutes": round(train_minutes, 2),
              "tokens_per_s": round(summary.get("tokens_per_s") or 0.0),
              "params_m": round(model.model.num_parameters() / 1e6, 2),
              "valid_chars": int(m["chars"]), "valid_nll": round(m["nll"], 4),
              "valid_bpc": round(m["bpc"], 4), "valid_ppl": round(m["ppl"], 3),
              "eval_s": round(time.time() - t0, 1),
              "sample": recipe.generate.prompt + model.complete(recipe.generate.prompt,
                                                                generator=generator)}
    emit(result, args.json)


if __name__ == "__main__":
    main()
