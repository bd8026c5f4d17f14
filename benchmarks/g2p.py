"""G2P benchmark: train a CMUdict recipe, report PER/WER on the test split, time and hardware.

    python benchmarks/g2p.py                                   # g2p-cmudict-full, auto device
    python benchmarks/g2p.py --recipe g2p-cmudict-quick --set train.max_minutes=30
    python benchmarks/g2p.py --ensemble runs/a runs/b     # no training: score an ensemble
    python benchmarks/g2p.py --seeds 1,2,3,4 --set data.stress=false   # 4 runs side by side
                                                                       # on one GPU, ensembled

Prints one JSON line (also written to --json) to be copied into benchmarks/RESULTS.md.
Literature: Transformer G2P WER 22.1% / PER 5.2% on CMUdict (Yolchuyeva et al., 2019),
Sequitur about 24-25% WER; their splits differ from ours (ours: by a hash of the word).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
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
    parser.add_argument("--seeds", default=None, metavar="S1,S2,...",
                        help="train one run per seed at once (a process each, sharing the "
                             "device: on an H100 four did not slow each other), score each, "
                             "then their ensemble; runs go to OUT/seedS")
    args = parser.parse_args()
    if args.seeds:
        side_by_side(args)
        return

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
    test_scores(transducer, test, args.beams, result)
    emit(result, args.json)


def test_scores(transducer: Transducer, test: list, beams: str, result: dict) -> None:
    """WER / PER and decoding seconds on ``test`` at each beam size, into ``result``."""
    for beam in (int(b) for b in beams.split(",")):
        t0 = time.time()
        metrics, _ = transducer.evaluate(test, beam=beam, alpha=0.0)
        result["test_words"] = int(metrics["n"])
        result["test"][f"beam{beam}"] = {"wer": round(metrics["wer"], 2),
                                         "per": round(metrics["per"], 2),
                                         "decode_s": round(time.time() - t0, 1)}


def side_by_side(args: argparse.Namespace) -> None:
    """Train the recipe once per seed concurrently, then score the ensemble of all of them.

    Why processes and not one bigger model: a small model's step is bounded by the host, so
    one GPU has room for several runs at once, and averaging their distributions gains more
    than the extra steps of one run would (RESULTS.md, session 10).
    """
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    sets = [a for kv in args.set for a in ("--set", kv)]
    procs = []
    for seed in seeds:
        run = out / f"seed{seed}"
        cmd = [sys.executable, __file__, "--recipe", args.recipe, *sets, "--set",
               f"train.seed={seed}", "--out", str(run), "--json", f"{run}.json",
               "--beams", args.beams]
        with open(f"{run}.log", "w") as log:  # the child keeps its own handle
            procs.append((seed, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                                 env=env)))
    failed = [seed for seed, proc in procs if proc.wait() != 0]
    if failed:
        raise SystemExit(f"seed(s) {failed} failed; see {out}/seed<N>.log")
    singles = [json.loads((out / f"seed{seed}.json").read_text()) for seed in seeds]
    runs = [str(out / f"seed{seed}") for seed in seeds]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    recipe = load_recipe(str(Path(runs[0]) / "recipe.yaml"))
    result = {"recipe": args.recipe, "overrides": args.set, "seeds": seeds,
              "hardware": hardware(), "torch": torch.__version__,
              "train_minutes": max(r["train_minutes"] for r in singles),
              "singles": {str(seed): r["test"] for seed, r in zip(seeds, singles)},
              "test_words": None, "test": {}}
    transducer = Transducer.load_ensemble(runs, device)
    test_scores(transducer, load_splits(recipe)[0]["test"], args.beams, result)
    emit(result, args.json)


if __name__ == "__main__":
    main()
