"""Decoding memory against beam x length: the KV cache must make it grow linearly.

    python benchmarks/decode_memory.py --device cuda          # Marian shape, CUDA peak memory
    python benchmarks/decode_memory.py --small                # CPU smoke run (no memory figure)

A randomly initialised Marian-shaped model (d512, 6+6 layers, vocab 8000) decodes a batch of
32 twenty-token sources with greedy search and beam 5, forced to exactly L output tokens
(eos is banned until L, then L is the maximum). For each (beam, L) it records the peak memory
allocated during decoding above what the weights and the batch already held. If decoding
re-ran the decoder over the prefix, or kept per-step attention over all earlier steps, the
extra memory would grow like L squared; with the cache it grows like beam x L: the JSON gives
``extra / (beam x L)`` per setting, which must stay flat, and the ratio of the extra at 2L to L.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import emit, hardware

from seqformer.decoding.processors import MinLength
from seqformer.decoding.search import beam_search, greedy_search
from seqformer.models.seq2seq import Seq2Seq, Seq2SeqConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="tiny shapes (a CPU smoke run)")
    parser.add_argument("--lengths", default="64,128,256,512")
    parser.add_argument("--beams", default="1,5")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    lengths = [int(n) for n in args.lengths.split(",")]
    d, layers, heads, ffn = (64, 2, 4, 128) if args.small else (512, 6, 8, 2048)
    torch.manual_seed(0)
    config = Seq2SeqConfig(src_vocab_size=8000, tgt_vocab_size=8000, d_model=d, heads=heads,
                           layers=layers, ffn_dim=ffn, dropout=0.0, max_len=max(lengths) + 8)
    model = Seq2Seq(config).to(device).eval()
    src = torch.randint(4, 8000, (args.batch, 20), generator=torch.Generator().manual_seed(1))
    src = src.to(device)
    result = {"benchmark": "decode_memory", "hardware": hardware(), "torch": torch.__version__,
              "device": str(device), "shape": f"d{d}, {layers}+{layers} layers, vocab 8000",
              "batch": args.batch, "source_len": 20, "settings": []}
    for beam in (int(b) for b in args.beams.split(",")):
        for length in lengths:
            forced = [MinLength(length, model.eos_id)]
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
            t0 = time.perf_counter()
            with torch.inference_mode():
                if beam == 1:
                    out = greedy_search(model, src, max_length=length, processors=forced)
                    made = [len(h.tokens) for h in out]
                else:
                    out = beam_search(model, src, beam=beam, max_length=length,
                                      processors=forced)
                    made = [len(hyps[0].tokens) for hyps in out]
            if cuda:
                torch.cuda.synchronize()
            row = {"beam": beam, "length": length, "seconds": round(time.perf_counter() - t0, 3),
                   "tokens_made": max(made)}
            if cuda:
                extra = torch.cuda.max_memory_allocated() - base
                row["extra_mib"] = round(extra / 2**20, 1)
                row["kib_per_beam_position"] = round(extra / 2**10 / (beam * length), 2)
            result["settings"].append(row)
            print(row, flush=True)
    if cuda:
        by = {(r["beam"], r["length"]): r["extra_mib"] for r in result["settings"]}
        result["doubling_ratio"] = {
            f"beam{b} {n}->{2 * n}": round(by[(b, 2 * n)] / by[(b, n)], 2)
            for (b, n) in by if (b, 2 * n) in by}
    emit(result, args.json)


if __name__ == "__main__":
    main()
