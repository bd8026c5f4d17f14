"""G2P benchmark: train a CMUdict recipe, report PER/WER on the test split, time and hardware.

    python benchmarks/g2p.py                                   # g2p-cmudict-full, auto device
    python benchmarks/g2p.py --recipe g2p-cmudict-quick --set train.max_minutes=30
    python benchmarks/g2p.py --ensemble runs/a runs/b     # no training: score an ensemble

Prints one JSON line (also written to --json) to be copied into benchmarks/RESULTS.md.
Literature: Transformer G2P WER 22.1% / PER 5.2% on CMUdict (Yolchuyeva et al., 2019),
Sequitur about 24-25% WER; their splits differ from ours (ours: by a hash of the word).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import emit, hardware

from seqformer.recipe import load_recipe
from seqformer.tasks.transduction import Transducer, load_splits, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="g2p-cmudict-full")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", default="runs/bench-g2p")
    parser.add_argument("--json", default=None)
    parser.add_argument("--beams", default="1,5", help="beam sizes to evaluate the test split with")
    parser.add_argument("--ensemble", nargs="+", default=None, metavar="RUN",
                        help="train nothing: score these runs' ensemble (mean log-probs) on the "
                             "test split of the first run's recipe")
    args = parser.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.ensemble:
        recipe = load_recipe(str(Path(args.ensemble[0]) / "recipe.yaml"))
        transducer = Transducer.load_ensemble(args.ensemble, device)
        result = {"ensemble": args.ensemble, "hardware": hardware(), "torch": torch.__version__,
                  "test_words": None, "test": {}}
        test = load_splits(recipe)[0]["test"]
    else:
        recipe = load_recipe(args.recipe, args.set)
        start = time.time()
        splits = load_splits(recipe)
        summary = train(recipe, args.out, splits=splits)
        train_minutes = (time.time() - start) / 60
        transducer = Transducer.load(args.out, device)
        test = splits[0]["test"]
        result = {"recipe": args.recipe, "overrides": args.set, "hardware": hardware(),
                  "torch": torch.__version__, "steps": summary.get("step"),
                  "stop": summary.get("stop_reason"), "train_minutes": round(train_minutes, 2),
                  "params_m": round(transducer.model.num_parameters() / 1e6, 2),
                  "best_valid": summary.get("best"), "test_words": None, "test": {}}
    for beam in (int(b) for b in args.beams.split(",")):
        t0 = time.time()
        metrics, _ = transducer.evaluate(test, beam=beam, alpha=0.0)
        result["test_words"] = int(metrics["n"])
        result["test"][f"beam{beam}"] = {"wer": round(metrics["wer"], 2),
                                         "per": round(metrics["per"], 2),
                                         "decode_s": round(time.time() - t0, 1)}
    emit(result, args.json)


if __name__ == "__main__":
    main()
