"""Training-step throughput: ours vs transformers on the same model, batch and optimizer.

    python benchmarks/train_speed.py                        # CPU, small shapes
    python benchmarks/train_speed.py --device cuda --full   # real shapes, bf16 autocast

Two models, each built once in transformers from a random config, saved, and imported into
seqformer with ``from_hf`` so both sides hold identical weights:

- seq2seq: Marian shape (CPU: d256, 3+3 layers; ``--full``: d512, 6+6, vocab 8000),
  batch of 32 x (20 source, 32 target) tokens on CPU, 128 sentences on CUDA;
- GPT-2: CPU d256, 4 layers, context 128; ``--full``: GPT-2 small (d768, 12 layers, context
  1024), batch 8 x 1024 on CUDA.

A step is forward + backward + AdamW update (fused on CUDA), plain cross-entropy on both sides
(our label smoothing is switched off). Steps run interleaved (ours, theirs, ...) after warm-up;
the median step time gives target tokens/s and the ratio. On CUDA the peak memory of each
side's step is recorded too.

Model FLOPs utilisation: the matrix-multiply FLOPs of one forward + backward are counted
exactly with ``torch.utils.flop_counter`` (the same count on both sides: same shapes), divided
by the median step time, and set against the device's *measured* peak (a large square matmul,
bf16 on CUDA, fp32 on CPU; nanoGPT sets the estimate against the data-sheet peak instead, which
:func:`seqformer.training.trainer.peak_flops` keeps for the training log). The measured peak
says how much room the matrix products leave: a ratio to transformers above
``peak / their achieved FLOP/s`` is out of reach for any implementation of the same model.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import emit, hardware, measured_peak
from torch.utils.flop_counter import FlopCounterMode

from seqformer.data.batching import Seq2SeqBatch
from seqformer.data.lm import LMBatch
from seqformer.models.gpt import GPT
from seqformer.models.seq2seq import Seq2Seq


def build(kind: str, directory: Path, full: bool):
    from transformers import GPT2Config, GPT2LMHeadModel, MarianConfig, MarianMTModel

    torch.manual_seed(0)
    if kind == "seq2seq":
        d, layers, heads, ffn, vocab = (512, 6, 8, 2048, 8000) if full else (256, 3, 4, 1024, 8000)
        config = MarianConfig(vocab_size=vocab, decoder_vocab_size=vocab, d_model=d,
                              encoder_layers=layers, decoder_layers=layers,
                              encoder_attention_heads=heads, decoder_attention_heads=heads,
                              encoder_ffn_dim=ffn, decoder_ffn_dim=ffn,
                              max_position_embeddings=512, activation_function="swish",
                              scale_embedding=True, dropout=0.0, pad_token_id=vocab - 1,
                              decoder_start_token_id=vocab - 1, eos_token_id=0)
        MarianMTModel(config).save_pretrained(directory)
        return MarianMTModel.from_pretrained(directory), Seq2Seq.from_hf(directory)
    d, layers, heads, ctx = (768, 12, 12, 1024) if full else (256, 4, 4, 128)
    vocab = 50257 if full else 8000
    config = GPT2Config(vocab_size=vocab, bos_token_id=vocab - 1, eos_token_id=vocab - 1,
                        n_positions=ctx, n_embd=d,
                        n_layer=layers, n_head=heads, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    return GPT2LMHeadModel.from_pretrained(directory), GPT.from_hf(directory)


def batches(kind: str, ours, full: bool, device: torch.device, gen: torch.Generator,
            gpt_batch: int | None = None):
    """The same batch in both layouts: (our batch, transformers keyword arguments)."""
    if kind == "seq2seq":
        n = 128 if full and device.type == "cuda" else 32
        vocab = ours.config.tgt_vocab_size
        src = torch.randint(1, vocab - 1, (n, 20), generator=gen)
        tgt = torch.randint(1, vocab - 1, (n, 33), generator=gen)
        tgt[:, 0] = ours.bos_id
        tgt_in, tgt_out = tgt[:, :-1].contiguous(), tgt[:, 1:].contiguous()
        ours_batch = Seq2SeqBatch(src, tgt_in, tgt_out, torch.arange(n))
        theirs = {"input_ids": src, "attention_mask": torch.ones_like(src),
                  "decoder_input_ids": tgt_in, "labels": tgt_out}
        return ours_batch.to(device), {k: v.to(device) for k, v in theirs.items()}, n * 32
    n, ctx = (8, 1024) if full else (16, 128)
    n = gpt_batch or n
    tokens = torch.randint(0, ours.config.vocab_size, (n, ctx + 1), generator=gen)
    ours_batch = LMBatch(tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous())
    # transformers shifts labels itself: give it the inputs as labels.
    theirs = {"input_ids": ours_batch.inputs, "labels": ours_batch.inputs}
    return ours_batch.to(device), {k: v.to(device) for k, v in theirs.items()}, n * ctx


def timed_step(model, opt, loss_of, cuda: bool) -> float:
    """Seconds for one forward + backward + optimizer step (bf16 autocast on CUDA)."""
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.autocast("cuda", torch.bfloat16) if cuda else contextlib.nullcontext():
        loss = loss_of(model)
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def step_flops(model, loss_of) -> int:
    """Matrix-multiply FLOPs of one forward + backward (the optimizer update is not counted,
    as in every MFU estimate); gradients are cleared afterwards. torch's counter knows the CUDA
    attention kernels but not the CPU flash kernel, so on CPU the attention-score products
    (about 5% of the GPT step here) are left out: the CPU MFU is a slight underestimate."""
    with FlopCounterMode(display=False) as counter:
        loss_of(model).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="seq2seq,gpt")
    parser.add_argument("--full", action="store_true", help="real shapes (for a GPU)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per side")
    parser.add_argument("--gpt-batch", type=int, default=None,
                        help="sequences per GPT step (default 8 with --full, else 16)")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile both sides (the same compiler, same settings)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    result = {"benchmark": "train_speed", "hardware": hardware(), "torch": torch.__version__,
              "device": str(device), "full": args.full, "compile": args.compile, "models": {}}
    peak_flops = measured_peak(device)
    result["measured_peak_tflops"] = round(peak_flops / 1e12, 3)
    print(f"measured matmul peak: {peak_flops / 1e12:.3f} TFLOP/s", flush=True)
    for kind in args.models.split(","):
        theirs, ours = build(kind, Path(tempfile.mkdtemp(prefix=f"train-{kind}-")), args.full)
        if kind == "seq2seq":
            ours.config = dataclasses.replace(ours.config, label_smoothing=0.0)
        theirs, ours = theirs.to(device).train(), ours.to(device).train()
        gen = torch.Generator().manual_seed(0)
        ours_batch, theirs_batch, tokens = batches(kind, ours, args.full, device, gen,
                                                   args.gpt_batch)
        opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4, fused=cuda)
                for name, m in (("ours", ours), ("theirs", theirs))}
        # Compiled modules share their parameters with the eager ones, which the optimizer
        # and the FLOP count (eager: the counter does not see inside compiled graphs) use.
        run = {"ours": torch.compile(ours) if args.compile else ours,
               "theirs": torch.compile(theirs) if args.compile else theirs}
        sides = {"ours": (run["ours"], opts["ours"], lambda m, b=ours_batch: m(b).loss),
                 "theirs": (run["theirs"], opts["theirs"], lambda m, b=theirs_batch: m(**b).loss)}

        def step(name: str, sides=sides) -> float:
            return timed_step(*sides[name], cuda)

        with torch.autocast("cuda", torch.bfloat16) if cuda else contextlib.nullcontext():
            flops = step_flops(ours, sides["ours"][2])

        for name in ("ours", "theirs") * (3 if args.compile else 1):
            step(name)  # warm-up: allocator and kernel caches (and the compiler's graphs)
        times: dict[str, list[float]] = {"ours": [], "theirs": []}
        peak = {}
        for name in ("ours", "theirs") * args.steps:
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            times[name].append(step(name))
            if cuda:
                peak[name] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"tokens_per_step": tokens, "params_m": round(sum(
            p.numel() for p in ours.parameters()) / 1e6, 1),
            "ours_tok_s": round(tokens / med["ours"]), "hf_tok_s": round(tokens / med["theirs"]),
            "ratio": round(med["theirs"] / med["ours"], 2), "gflop_per_step": round(flops / 1e9, 2)}
        for name, key in (("ours", "ours_mfu"), ("theirs", "hf_mfu")):
            row[key] = round(flops / med[name] / peak_flops, 3)
        if peak:
            row["peak_gib"] = peak
        if args.gpt_batch and kind == "gpt":
            row["batch"] = args.gpt_batch
        result["models"][kind] = row
        print(f"{kind}: ours {row['ours_tok_s']:,} tok/s, transformers {row['hf_tok_s']:,} "
              f"tok/s, ratio {row['ratio']}x; of the measured peak: ours {row['ours_mfu']:.0%}, "
              f"transformers {row['hf_mfu']:.0%}", flush=True)
        del theirs, ours, opts, run, sides
    emit(result, args.json)


if __name__ == "__main__":
    main()
