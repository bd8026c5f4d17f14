"""Seq2seq decoding speed: ours vs transformers ``generate()`` (and CTranslate2 if installed),
same Marian-shaped weights, same inputs, same work, in one process run.

    python benchmarks/decode_speed.py                      # CPU, the PERF_ANCHORS setting
    python benchmarks/decode_speed.py --device cuda --batch 32,128
    python benchmarks/decode_speed.py --small              # a tiny model, to check the script

The model is a random-weight MarianMTModel (vocab 8000, d512, 6+6 layers, 8 heads, ffn 2048)
saved with ``save_pretrained`` and imported with ``Seq2Seq.from_hf``. Every source has 20 ids
and every tool must produce exactly 32 new tokens (eos suppressed until then), so all do the
same arithmetic. Settings run interleaved (ours, theirs, ours, ...) and report medians, so
machine noise hits both sides alike; the ratio is the figure to quote.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import emit, hardware

from seqformer.decoding.processors import MinLength
from seqformer.decoding.quantize import quantize_int8
from seqformer.decoding.search import beam_search, greedy_search
from seqformer.models.seq2seq import Seq2Seq

NEW_TOKENS = 32
SOURCE_LEN = 20


def build_marian(directory: Path, small: bool) -> None:
    from transformers import MarianConfig, MarianMTModel

    vocab = 1000 if small else 8000
    d, layers, heads, ffn = (64, 2, 4, 128) if small else (512, 6, 8, 2048)
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
    parser.add_argument("--int8", action="store_true",
                        help="also time our model with int8 Linear layers (CPU)")
    parser.add_argument("--ct2", action="store_true",
                        help="also time CTranslate2 float32 and int8 (pip install ctranslate2)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    from transformers import MarianMTModel

    device = torch.device(args.device)
    torch.set_grad_enabled(False)
    work = Path(tempfile.mkdtemp(prefix="decode-speed-"))
    build_marian(work, args.small)
    theirs = MarianMTModel.from_pretrained(work).eval().to(device)
    ours = Seq2Seq.from_hf(work).eval().to(device)
    ours_int8 = quantize_int8(copy.deepcopy(ours)) if args.int8 else None
    ct2, ct2_tokens = ct2_translators(work, theirs.config.vocab_size) if args.ct2 else ({}, [])
    vocab, pad, eos = theirs.config.vocab_size, theirs.config.pad_token_id, 0
    gen = torch.Generator().manual_seed(1)
    sources = torch.randint(1, vocab - 1, (args.sentences, SOURCE_LEN), generator=gen)
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

    result = {"benchmark": "decode_speed", "hardware": hardware(), "torch": torch.__version__,
              "device": str(device), "small": args.small, "settings": []}
    print(f"{'setting':<22} {'ours sent/s':>12} {'HF sent/s':>10} {'ratio':>7} {'same ids':>9}")
    for beam in (int(b) for b in args.beams.split(",")):
        for batch in (int(b) for b in args.batch.split(",")):
            n = args.one_at_a_time if batch == 1 else args.sentences
            chunks = [sources[i:i + batch] for i in range(0, n, batch)]
            run_ours(chunks[0], beam)  # warm-up (allocations, oneDNN kernels)
            run_theirs(chunks[0], beam)
            t_ours, ids_ours = timed(
                lambda cs=chunks, b=beam: [x for c in cs for x in run_ours(c, b)], args.repeats)
            t_theirs, ids_theirs = timed(
                lambda cs=chunks, b=beam: [x for c in cs for x in run_theirs(c, b)],
                args.repeats)
            same = sum(a == b for a, b in zip(ids_ours, ids_theirs)) / len(ids_ours)
            row = {"beam": beam, "batch": batch, "sentences": n,
                   "ours_sent_s": round(n / t_ours, 2), "hf_sent_s": round(n / t_theirs, 2),
                   "ratio": round(t_theirs / t_ours, 2), "identical_outputs": same}
            for kind, translator in ct2.items():
                def run_ct2(cs=chunks, b=beam, t=translator, size=batch) -> list[list[int]]:
                    batch_tokens = [[ct2_tokens[i] for i in row.tolist()] for c in cs for row in c]
                    res = t.translate_batch(batch_tokens, beam_size=b, max_batch_size=size,
                                            max_decoding_length=NEW_TOKENS,
                                            min_decoding_length=NEW_TOKENS)
                    return [[int(x[1:]) for x in r.hypotheses[0]] for r in res]
                run_ct2()
                t_ct2, ids_ct2 = timed(run_ct2, args.repeats)
                row[f"ct2_{kind}_sent_s"] = round(n / t_ct2, 2)
                row[f"ct2_{kind}_ratio"] = round(t_theirs / t_ct2, 2)
                if kind == "float32":
                    row["ct2_identical_outputs"] = sum(
                        a == b for a, b in zip(ids_ct2, ids_theirs)) / len(ids_ct2)
            if ours_int8 is not None:
                run_ours(chunks[0], beam, ours_int8)
                t_int8, _ = timed(lambda cs=chunks, b=beam: [
                    x for c in cs for x in run_ours(c, b, ours_int8)], args.repeats)
                row["ours_int8_sent_s"] = round(n / t_int8, 2)
                row["int8_ratio"] = round(t_theirs / t_int8, 2)
            result["settings"].append(row)
            name = f"{'greedy' if beam == 1 else f'beam {beam}'}, batch {batch}"
            print(f"{name:<22} {row['ours_sent_s']:>12} {row['hf_sent_s']:>10} "
                  f"{row['ratio']:>6}x {same:>8.0%}"
                  + (f"  int8 {row['ours_int8_sent_s']} ({row['int8_ratio']}x)"
                     if ours_int8 is not None else "")
                  + "".join(f"  ct2-{k} {row[f'ct2_{k}_sent_s']}" for k in ct2), flush=True)
    emit(result, args.json)


if __name__ == "__main__":
    main()
