"""Seq2seq decoding speed: ours vs transformers ``generate()`` (and CTranslate2 if installed),
same Marian-shaped weights, same inputs, same work, in one process run.

    python benchmarks/decode_speed.py                      # CPU, the PERF_ANCHORS setting
    python benchmarks/decode_speed.py --device cuda --batch 32,128
    python benchmarks/decode_speed.py --small              # a tiny model, to check the script
    python benchmarks/decode_speed.py --overhead --batch 32  # the Marian layout at d_model 64:
        # the arithmetic vanishes, what is left is each tool's host time per step -- on a
        # CPU, a stand-in for the launch-bound GPU regime of issue #8's batch-32 target
    python benchmarks/decode_speed.py --tools hf,ours_int8,ct2_int8 --isolate   # own processes

The model is a random-weight MarianMTModel (vocab 8000, d512, 6+6 layers, 8 heads, ffn 2048)
saved with ``save_pretrained`` and imported with ``Seq2Seq.from_hf``. Every source has 20 ids
and every tool must produce exactly 32 new tokens (eos suppressed until then), so all do the
same arithmetic. Settings run interleaved (ours, theirs, ours, ...) and report medians, so
machine noise hits both sides alike; the ratio is the figure to quote. On CUDA each torch
tool's peak allocated memory is recorded too.

Each setting also records the matrix-multiply GFLOP of the work (counted once on our fp32
search with ``torch.utils.flop_counter``; every tool does the same products) and the
device's measured fp32 matmul peak, so a speed reads as a share of what the hardware can do:
a tool cannot beat ``peak / GFLOP per sentence`` sentences per second.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import emit, hardware, measured_peak
from torch.utils.flop_counter import FlopCounterMode

from seqformer.decoding.processors import MinLength
from seqformer.decoding.quantize import quantize_int8
from seqformer.decoding.search import beam_search, greedy_search
from seqformer.decoding.static import StaticDecoding
from seqformer.models.seq2seq import Seq2Seq

NEW_TOKENS = 32
SOURCE_LEN = 20


def build_marian(directory: Path, small: bool, overhead: bool = False) -> None:
    from transformers import MarianConfig, MarianMTModel

    vocab = 1000 if small or overhead else 8000
    d, layers, heads, ffn = ((64, 2, 4, 128) if small else (64, 6, 8, 128) if overhead
                             else (512, 6, 8, 2048))
    config = MarianConfig(vocab_size=vocab, decoder_vocab_size=vocab, d_model=d,
                          encoder_layers=layers, decoder_layers=layers,
                          encoder_attention_heads=heads, decoder_attention_heads=heads,
                          encoder_ffn_dim=ffn, decoder_ffn_dim=ffn, max_position_embeddings=512,
                          activation_function="swish", scale_embedding=True, dropout=0.0,
                          pad_token_id=vocab - 1, decoder_start_token_id=vocab - 1,
                          eos_token_id=0, forced_eos_token_id=None)
    torch.manual_seed(0)
    MarianMTModel(config).eval().save_pretrained(directory)


def ct2_translators(directory: Path, vocab_size: int) -> tuple[dict, list[str]]:
    """CTranslate2 float32 and int8 translators of the Marian in ``directory``, and the token
    string of every id (CTranslate2 reads tokens, not ids). The converter needs a tokenizer: a
    ``vocab.json`` naming every id plus a tiny SentencePiece model (never used to cut text)."""
    import json

    import ctranslate2
    import sentencepiece as spm
    from transformers import MarianTokenizer

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["a b c d e f g"] * 50), model_prefix=str(directory / "spm"),
        vocab_size=10, model_type="unigram", hard_vocab_limit=False, bos_id=-1, eos_id=-1,
        unk_id=0, minloglevel=2)
    tokens = ["</s>", "<unk>"] + [f"t{i}" for i in range(2, vocab_size - 1)] + ["<pad>"]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    model = str(directory / "spm.model")
    MarianTokenizer(model, model, str(directory / "vocab.json")).save_pretrained(directory)
    translators = {}
    for kind in ("float32", "int8"):
        out = directory / f"ct2-{kind}"
        ctranslate2.converters.TransformersConverter(str(directory)).convert(
            str(out), quantization=kind)
        translators[kind] = ctranslate2.Translator(str(out), device="cpu", compute_type=kind,
                                                   intra_threads=torch.get_num_threads())
    return translators, tokens


def timed(fn, repeats: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def setting_name(beam: int, batch: int) -> str:
    return f"{'greedy' if beam == 1 else f'beam {beam}'}, batch {batch}"


TOOLS = ("ours", "hf", "ours_int8", "ours_static", "ct2_float32", "ct2_int8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", default="1,32", help="batch sizes; 1 = one at a time")
    parser.add_argument("--beams", default="1,5")
    parser.add_argument("--sentences", type=int, default=32, help="sentences per measurement")
    parser.add_argument("--one-at-a-time", type=int, default=8,
                        help="sentences timed for batch 1 (slow; sent/s is what counts)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--overhead", action="store_true",
                        help="6+6 layers, 8 heads, d_model 64: host time per step, not arithmetic")
    parser.add_argument("--int8", action="store_true",
                        help="also time our model with int8 Linear layers (CPU)")
    parser.add_argument("--ct2", action="store_true",
                        help="also time CTranslate2 float32 and int8 (pip install ctranslate2)")
    parser.add_argument("--tools", default=None,
                        help=f"comma list of what to time, from {', '.join(TOOLS)} "
                             "(overrides --int8/--ct2)")
    parser.add_argument("--isolate", action="store_true",
                        help="time each tool in its own process: CTranslate2's OpenMP runtime "
                             "loaded next to torch's slows torch down, so a shared process is "
                             "unfair to whichever loses the threads")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    tools = (args.tools.split(",") if args.tools else
             ["ours", "hf"] + ["ours_int8"] * args.int8 + ["ct2_float32", "ct2_int8"] * args.ct2)
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown:
        parser.error(f"unknown tool(s) {', '.join(unknown)}; choose from {', '.join(TOOLS)}")
    if args.isolate:
        emit(isolated(args, tools), args.json)
        return
    emit(measure(args, tools), args.json)


def isolated(args: argparse.Namespace, tools: list[str]) -> dict:
    """Run this script once per tool and merge the speeds; ratios are against transformers."""
    import json
    import subprocess
    import sys

    passed = [f"--device={args.device}", f"--batch={args.batch}", f"--beams={args.beams}",
              f"--sentences={args.sentences}", f"--one-at-a-time={args.one_at_a_time}",
              f"--repeats={args.repeats}", *(["--small"] if args.small else []),
              *(["--overhead"] if args.overhead else [])]
    merged: dict = {}
    for tool in (["hf"] + [t for t in tools if t != "hf"]):
        out = Path(tempfile.mkdtemp(prefix="decode-speed-")) / "result.json"
        subprocess.run([sys.executable, __file__, *passed, f"--tools={tool}", f"--json={out}"],
                       check=True, stdout=subprocess.DEVNULL)
        result = json.loads(out.read_text())
        if not merged:
            merged = {**result, "isolated": True, "tools": []}
        merged["tools"].append(tool)
        for row, new in zip(merged["settings"], result["settings"]):
            row[f"{tool}_sent_s"] = new[f"{tool}_sent_s"]
            row[f"{tool}_vs_hf"] = round(new[f"{tool}_sent_s"] / row["hf_sent_s"], 2)
    print(f"{'setting':<22}" + "".join(f"{t:>14}" for t in merged["tools"]) + "   (sent/s; x hf)")
    for row in merged["settings"]:
        name = setting_name(row["beam"], row["batch"])
        print(f"{name:<22}" + "".join(
            f"{row[f'{t}_sent_s']:>8} {row[f'{t}_vs_hf']:>4}x" for t in merged["tools"]))
    return merged


def measure(args: argparse.Namespace, tools: list[str]) -> dict:
    """Time ``tools`` interleaved in this process, setting by setting."""
    from transformers import MarianMTModel

    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    work = Path(tempfile.mkdtemp(prefix="decode-speed-"))
    build_marian(work, args.small, args.overhead)
    theirs = MarianMTModel.from_pretrained(work).eval().to(device)
    ours = Seq2Seq.from_hf(work).eval().to(device)
    ours_int8 = quantize_int8(copy.deepcopy(ours)) if "ours_int8" in tools else None
    # Fixed-shape caches with the step compiled (CUDA graphs on a GPU); the warm-up call of
    # each setting pays the compilation.
    ours_static = StaticDecoding(ours, compile=True) if "ours_static" in tools else None
    wants_ct2 = any(t.startswith("ct2") for t in tools)
    ct2, ct2_tokens = ct2_translators(work, theirs.config.vocab_size) if wants_ct2 else ({}, [])
    vocab, pad, eos = theirs.config.vocab_size, theirs.config.pad_token_id, 0
    gen = torch.Generator().manual_seed(1)
    # At least one whole batch of the largest size: fewer sentences than the batch would time
    # a smaller batch under the larger one's name (session 7's "batch 128" rows did).
    batches = [int(b) for b in args.batch.split(",")]
    n_sources = max(args.sentences, *batches)
    sources = torch.randint(1, vocab - 1, (n_sources, SOURCE_LEN), generator=gen)
    sources = sources.to(device)
    force = [MinLength(NEW_TOKENS, ours.eos_id)]

    def run_ours(src: torch.Tensor, beam: int, model=ours) -> list[list[int]]:
        if beam == 1:
            return [h.tokens for h in greedy_search(model, src, NEW_TOKENS + 1, force)]
        return [n[0].tokens for n in beam_search(model, src, beam, NEW_TOKENS + 1,
                                                 processors=force)]

    def run_theirs(src: torch.Tensor, beam: int) -> list[list[int]]:
        out = theirs.generate(src, attention_mask=src.ne(pad), num_beams=beam,
                              do_sample=False, min_new_tokens=NEW_TOKENS,
                              max_new_tokens=NEW_TOKENS, length_penalty=1.0,
                              bad_words_ids=[[pad]], early_stopping=True)
        return [[t for t in row[1:].tolist() if t not in (pad, eos)] for row in out]

    def ct2_runner(kind: str):
        def run(src: torch.Tensor, beam: int) -> list[list[int]]:
            batch_tokens = [[ct2_tokens[i] for i in row.tolist()] for row in src]
            res = ct2[kind].translate_batch(batch_tokens, beam_size=beam,
                                            max_batch_size=len(batch_tokens),
                                            max_decoding_length=NEW_TOKENS,
                                            min_decoding_length=NEW_TOKENS)
            return [[int(x[1:]) for x in r.hypotheses[0]] for r in res]
        return run

    runners = {"ours": run_ours, "hf": run_theirs,
               "ours_int8": lambda src, beam: run_ours(src, beam, ours_int8),
               "ours_static": lambda src, beam: run_ours(src, beam, ours_static),
               **{f"ct2_{kind}": ct2_runner(kind) for kind in ct2}}
    result = {"benchmark": "decode_speed", "hardware": hardware(), "torch": torch.__version__,
              "device": str(device), "small": args.small, "overhead": args.overhead,
              "tools": tools, "settings": [],
              "peak_gflop_s": round(measured_peak(device, torch.float32) / 1e9, 1)}
    print(f"{'setting':<22}" + "".join(f"{t:>14}" for t in tools) + "  (sent/s)")
    for beam in (int(b) for b in args.beams.split(",")):
        for batch in batches:
            n = args.one_at_a_time if batch == 1 else max(args.sentences, batch)
            chunks = [sources[i:i + batch] for i in range(0, n, batch)]
            row: dict = {"beam": beam, "batch": batch, "sentences": n}
            with FlopCounterMode(display=False) as counter:
                run_ours(chunks[0], beam)
            row["gflop_per_sentence"] = round(counter.get_total_flops() / len(chunks[0]) / 1e9, 3)
            outputs = {}
            for tool in tools:  # interleaved: machine noise hits every tool alike
                runners[tool](chunks[0], beam)  # warm-up (allocations, oneDNN kernels)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                seconds, outputs[tool] = timed(
                    lambda cs=chunks, b=beam, r=runners[tool]: [x for c in cs for x in r(c, b)],
                    args.repeats)
                row[f"{tool}_sent_s"] = round(n / seconds, 2)
                if device.type == "cuda" and not tool.startswith("ct2"):
                    # Weights included; the search's own share grows with batch x beam x length.
                    row[f"{tool}_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
            if "hf" in tools:
                for tool in tools:
                    row[f"{tool}_vs_hf"] = round(row[f"{tool}_sent_s"] / row["hf_sent_s"], 2)
                    if tool in ("ours", "ct2_float32"):  # fp32: should be the same search
                        row[f"{tool}_same_ids_as_hf"] = sum(
                            a == b for a, b in zip(outputs[tool], outputs["hf"])) / n
            result["settings"].append(row)
            name = setting_name(beam, batch)
            print(f"{name:<22}" + "".join(f"{row[f'{t}_sent_s']:>14}" for t in tools), flush=True)
    return result


if __name__ == "__main__":
    main()
