"""Moving batches to the training device without stalling the host.

A plain ``tensor.to("cuda")`` from ordinary (pageable) host memory synchronises the stream:
the host waits until the GPU has finished everything queued before it, every step, for every
tensor of the batch -- and a small model on a GPU is bound by exactly how far ahead the host
can queue. Copying from pinned memory with ``non_blocking=True`` lets the copy queue behind the
running step instead (PyTorch's caching host allocator keeps the pinned block alive until the
copy has run, so the temporary is safe to drop).
"""

from __future__ import annotations

from typing import overload

import torch
from torch import Tensor


@overload
def to_device(tensor: Tensor, device: torch.device | str) -> Tensor: ...
@overload
def to_device(tensor: None, device: torch.device | str) -> None: ...
def to_device(tensor: Tensor | None, device: torch.device | str) -> Tensor | None:
    """``tensor.to(device)`` that keeps None and does not wait for a GPU it copies to."""
    if tensor is None:
        return None
    target = torch.device(device)
    if target.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(target, non_blocking=True)
    return tensor.to(target)
