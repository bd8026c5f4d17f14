"""``make bench``: the speed benchmarks side by side with their peers, appended to RESULTS.md.

    python benchmarks/bench.py                 # what this machine has: CPU, or CUDA if present
    python benchmarks/bench.py --no-append     # print the section, leave RESULTS.md alone

Runs ``decode_speed.py`` with every tool in its own process (``--isolate``: CTranslate2's
OpenMP runtime next to torch's slows torch down, so a shared process misreports whichever
loses) -- ours fp32, transformers, ours int8 on CPU, and CTranslate2 float32/int8 when the
``ctranslate2`` package is installed -- and ``train_speed.py`` (real shapes, bf16, peak memory
on CUDA). The section it appends names the date, hardware, commands and every figure.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from decode_speed import setting_name

HERE = Path(__file__).resolve().parent


def run(script: str, *args: str) -> dict:
    """Run one benchmark script and return the JSON it writes."""
    out = Path(tempfile.mkdtemp(prefix="bench-")) / "result.json"
    command = [sys.executable, str(HERE / script), *args, f"--json={out}"]
    print("running:", " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)
    return json.loads(out.read_text())


def decode_table(result: dict) -> list[str]:
    """Markdown rows, with the fp32 ceiling: the measured matmul peak over the matmul work
    of one sentence (no fp32 tool can decode faster; int8 changes the arithmetic)."""
    tools = result["tools"]
    lines = ["| setting | " + " | ".join(f"{t} sent/s (x hf)" for t in tools)
             + " | GFLOP/sent | fp32 ceiling sent/s |", "|---|" + "---|" * (len(tools) + 2)]
    for row in result["settings"]:
        name = setting_name(row["beam"], row["batch"])
        cells = [f"{row[f'{t}_sent_s']} ({row[f'{t}_vs_hf']}x)" for t in tools]
        ceiling = round(result["peak_gflop_s"] / row["gflop_per_sentence"], 1)
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {row['gflop_per_sentence']} | {ceiling} |")
    return lines


def train_table(result: dict) -> list[str]:
    """Markdown rows; MFU is against the matmul peak measured in the same run."""
    cuda = result["device"].startswith("cuda")
    lines = ["| model | params | tokens/step | ours tok/s | transformers tok/s | ours / HF "
             "| GFLOP/step | MFU ours / HF |" + (" peak GiB (ours / HF) |" if cuda else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if cuda else "")]
    for kind, row in result["models"].items():
        peak = row.get("peak_gib")
        lines.append(f"| {kind} | {row['params_m']}M | {row['tokens_per_step']:,} | "
                     f"{row['ours_tok_s']:,} | {row['hf_tok_s']:,} | {row['ratio']}x | "
                     f"{row['gflop_per_step']} | {row['ours_mfu']:.0%} / {row['hf_mfu']:.0%} |"
                     + (f" {peak['ours']} / {peak['theirs']} |" if peak else ""))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-append", action="store_true", help="only print the section")
    parser.add_argument("--results", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()

    cuda = torch.cuda.is_available()
    decode_args = ["--isolate"]
    tools = ["ours", "hf"]
    if cuda:
        decode_args += ["--device=cuda", "--batch=1,32,128", "--sentences=256"]
    else:
        tools.append("ours_int8")
    if importlib.util.find_spec("ctranslate2") is not None and not cuda:
        tools += ["ct2_float32", "ct2_int8"]
    decode_args.append("--tools=" + ",".join(tools))
    train_args = ["--device=cuda", "--full"] if cuda else []
    decode = run("decode_speed.py", *decode_args)
    train = run("train_speed.py", *train_args)

    today = datetime.date.today().isoformat()
    section = [
        "", f"## `make bench` ({today}, {decode['hardware']}, torch {decode['torch']})", "",
        f"Seq2seq decoding, Marian shape (d512, 6+6 layers, vocab 8000), 20 source ids, 32 new "
        f"tokens each; every tool in its own process, medians of 3; measured fp32 matmul "
        f"peak {decode['peak_gflop_s']} GFLOP/s "
        f"(`python benchmarks/decode_speed.py {' '.join(decode_args)}`):", "",
        *decode_table(decode), "",
        f"Training step throughput, same weights and batch, AdamW, plain cross-entropy; MFU "
        f"against the measured matmul peak, {train['measured_peak_tflops']} TFLOP/s "
        f"(`python benchmarks/train_speed.py {' '.join(train_args)}`):", "",
        *train_table(train), "",
    ]
    text = "\n".join(section)
    print(text)
    if not args.no_append:
        with open(args.results, "a", encoding="utf-8") as f:
            f.write(text)
        print(f"appended to {args.results}")


if __name__ == "__main__":
    main()
