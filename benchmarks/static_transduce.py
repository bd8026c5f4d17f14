"""Time `seqformer transduce --static` against the default path on one trained run.

    python benchmarks/static_transduce.py --model runs/g2p --device cuda --beams 1,5

The words are the run's own test split (or --data TSV). Both paths decode the same list in the
same process: a warm-up pass first (for --static it compiles and captures one CUDA graph per
batch shape), then the median of --repeats timed passes. Also checks that the two paths give the
same outputs (with an explicit --max-length; see Transducer's ``static``).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import emit, hardware

from seqformer.data.corpus import read_tsv
from seqformer.tasks.transduction import Transducer, group_references, recipe_test_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="run directory from 'seqformer train'")
    parser.add_argument("--data", default=None, help="TSV of source<TAB>target (default: the "
                        "run's test split)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--beams", default="1,5")
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--limit", type=int, default=0, help="decode only the first N sources")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    pairs = read_tsv(args.data) if args.data else recipe_test_split(args.model)[0]
    sources = group_references(pairs)[0]
    if args.limit:
        sources = sources[:args.limit]
    paths = {"default": Transducer.load(args.model, args.device),
             "static": Transducer.load(args.model, args.device, static=True)}
    result = {"benchmark": "static_transduce", "hardware": hardware(),
              "torch": torch.__version__, "device": args.device, "sources": len(sources),
              "settings": []}
    for beam in (int(b) for b in args.beams.split(",")):
        row: dict = {"beam": beam}
        outputs = {}
        for name, transducer in paths.items():
            def run(t: Transducer = transducer, beam: int = beam) -> list:
                out = t.transduce(sources, beam=beam, max_length=args.max_length)
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                return out

            t0 = time.perf_counter()
            outputs[name] = [o.texts[0] for o in run()]
            row[f"{name}_first_s"] = round(time.perf_counter() - t0, 2)
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                run()
                times.append(time.perf_counter() - t0)
            row[f"{name}_sent_s"] = round(len(sources) / statistics.median(times), 1)
        row["static_vs_default"] = round(row["static_sent_s"] / row["default_sent_s"], 2)
        row["same_outputs"] = sum(a == b for a, b in zip(outputs["default"], outputs["static"]))
        result["settings"].append(row)
        print(f"beam {beam}: default {row['default_sent_s']} sent/s, static "
              f"{row['static_sent_s']} ({row['static_vs_default']}x; first pass "
              f"{row['static_first_s']} s), same outputs {row['same_outputs']}/{len(sources)}")
    emit(result, args.json)


if __name__ == "__main__":
    main()
