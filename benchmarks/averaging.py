"""What checkpoint averaging and the EMA of the weights gain, from one training run.

    python benchmarks/averaging.py --recipe g2p-cmudict-quick --set train.max_minutes=0
    python benchmarks/averaging.py --recipe bible-en-es --set train.max_steps=3000

One run with ``train.keep_checkpoints`` and ``train.ema`` set yields all three models without
training twice: the raw final weights (``seqformer average --last 1``), the average of the last
K saved checkpoints (``--last K``) and the EMA weights (the run's ``model.safetensors``, taken
at its best evaluation). Each is scored on the test split with the same decoding.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import emit, hardware

from seqformer.recipe import load_recipe
from seqformer.tasks.transduction import Transducer, load_splits, train
from seqformer.training.averaging import average_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="g2p-cmudict-quick")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", default="runs/bench-averaging")
    parser.add_argument("--last", type=int, default=5, help="checkpoints to average")
    parser.add_argument("--ema", type=float, default=0.999)
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    overrides = [f"train.keep_checkpoints={args.last}", f"train.ema={args.ema}", *args.set]
    recipe = load_recipe(args.recipe, overrides)
    start = time.time()
    splits = load_splits(recipe)
    summary = train(recipe, args.out, splits=splits)
    minutes = (time.time() - start) / 60
    device = "cuda" if torch.cuda.is_available() else "cpu"
    test = splits[0]["test"]
    models = {"ema": args.out}
    for k in (1, args.last):
        out = f"{args.out}-last{k}"
        average_run(args.out, k, out)
        models["final" if k == 1 else f"average_last{k}"] = out
    result = {"recipe": args.recipe, "overrides": overrides, "hardware": hardware(),
              "torch": torch.__version__, "steps": summary.get("step"),
              "train_minutes": round(minutes, 2), "beam": args.beam, "test": {}}
    for name, path in models.items():
        metrics, _ = Transducer.load(path, device).evaluate(test, beam=args.beam, alpha=0.0)
        result["test_items"] = int(metrics["n"])
        result["test"][name] = {k: round(v, 2) for k, v in metrics.items() if k != "n"}
    emit(result, args.json)


if __name__ == "__main__":
    main()
