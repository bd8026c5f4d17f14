"""Baselines side by side: ``seqformer compare`` with a budget, as one JSON line for RESULTS.md.

    python benchmarks/compare.py --recipe compare-g2p --set train.max_minutes=1.5
    python benchmarks/compare.py --recipe compare-reverse --set train.max_minutes=1 \\
        --set 'synthetic.lengths=[10,25,50,100]'

Writes the runs, ``compare.md``, ``compare.json`` and ``compare.png`` under ``--out``. Small
recurrent steps are latency-bound: on a shared CPU a second intra-op thread slows them down
(see RESULTS.md), so ``--threads`` defaults to 1 for every model alike.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import torch
from common import emit, hardware

from seqformer.tasks.compare import load_compare, run_compare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="compare-reverse")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", default=None, help="default runs/bench-<recipe name>")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (CPU)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    compare = load_compare(args.recipe, args.set)
    out = args.out or f"runs/bench-{compare.name}"
    start = time.time()
    rows = run_compare(compare, out)
    keep = ("task", "label", "kind", "params", "steps", "train_minutes", "epoch_s",
            "train_tok_s", "decode_sent_s", "decode_tok_s", "per", "wer")
    emit({"recipe": args.recipe, "overrides": args.set, "hardware": hardware(),
          "torch": torch.__version__, "minutes": round((time.time() - start) / 60, 1),
          "rows": [{k: (round(v, 2) if isinstance(v, float) else v)
                    for k, v in asdict(r).items() if k in keep} for r in rows]}, args.json)


if __name__ == "__main__":
    main()
