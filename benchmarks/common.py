"""Helpers the benchmark scripts share (run them as ``python benchmarks/NAME.py``)."""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch


def hardware() -> str:
    """What the figures were measured on, for RESULTS.md."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def emit(result: dict, json_path: str | None) -> None:
    """Print the result as one JSON line (for RESULTS.md) and optionally write it to a file."""
    line = json.dumps(result)
    print(line)
    if json_path:
        Path(json_path).write_text(line + "\n")
    sys.stdout.flush()


def measured_peak(device: torch.device, dtype: torch.dtype | None = None,
                  repeats: int = 10) -> float:
    """FLOP/s of a large square matmul on ``device`` -- the denominator of a model FLOPs
    utilisation that says what *this* machine can do (a data-sheet peak is never reached).
    Default dtype: bf16 on CUDA (training runs under bf16 autocast), fp32 on CPU; 8192^2 on
    CUDA, 2048^2 on CPU (larger sizes measure the same there). Median of ``repeats``."""
    cuda = device.type == "cuda"
    dtype = dtype or (torch.bfloat16 if cuda else torch.float32)
    n = 8192 if cuda else 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = []
    for i in range(repeats + 2):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        if i >= 2:  # the first two warm up the kernels
            times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times)
