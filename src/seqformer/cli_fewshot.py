"""``seqformer fewshot --model RUN --data task.tsv --shots 0,1,2,4,8``: a GPT's accuracy
against the number of demonstrations in its prompt (:mod:`seqformer.tasks.fewshot`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from seqformer.errors import ConfigError, UserError


def _shots(text: str) -> list[int]:
    try:
        return sorted({int(s) for s in text.split(",")})
    except ValueError:
        raise UserError(f"--shots {text!r}: give numbers of demonstrations like 0,1,4,8") from None


def cmd_fewshot(args: argparse.Namespace) -> int:
    from seqformer.cli import _device
    from seqformer.data.corpus import read_tsv
    from seqformer.tasks.fewshot import evaluate_fewshot
    from seqformer.tasks.lm import LanguageModel

    shots = _shots(args.shots)
    pairs, name = read_tsv(args.data), args.data
    if not pairs:
        raise ConfigError(f"{name}: no pairs; give input<TAB>output lines")
    lm = LanguageModel.load(args.model, _device(args.device))
    results = evaluate_fewshot(lm, pairs, shots, args.n, args.seed, args.sep, progress=True)
    print(f"{name}: exact-match accuracy of the greedy answer, {results[0].n} queries")
    for r in results:
        print(f"  {r.shots:>3} shot{'s' if r.shots != 1 else ' '}  {r.accuracy:6.2f}%")
    prompt, got, target = results[-1].example
    print(f"example ({results[-1].shots} shots):\n{prompt} [{got}]  (target: {target})")
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"task": name, "results": [{"shots": r.shots, "accuracy": r.accuracy, "n": r.n}
                                       for r in results]}, indent=1) + "\n", encoding="utf-8")
        print(f"results written to {args.out}")
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``fewshot``."""
    p = sub.add_parser("fewshot", help="a GPT's accuracy with k task demonstrations in the "
                       "prompt (GPT-3's few-shot evaluation)")
    p.add_argument("--model", required=True, help="a language-model run (task: lm)")
    p.add_argument("--data", required=True, help="the task: a TSV of input<TAB>output lines "
                   "(demonstrations are drawn from the other lines)")
    p.add_argument("--shots", default="0,1,2,4,8", help="numbers of demonstrations (default "
                   "0,1,2,4,8)")
    p.add_argument("--n", type=int, default=100, help="queries scored per setting (default 100)")
    p.add_argument("--sep", default=" -> ", help="between an input and its output in the "
                   "prompt (default ' -> '); examples are one per line")
    p.add_argument("--seed", type=int, default=0, help="which queries and demonstrations")
    p.add_argument("--out", help="also write the accuracies as JSON")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    p.set_defaults(func=cmd_fewshot)
