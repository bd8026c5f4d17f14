"""Token-level cross-entropy with label smoothing, as used by every model in seqformer.

Vaswani et al. (2017) train with label smoothing eps=0.1: it hurts perplexity but improves BLEU,
so we report both numbers -- the smoothed loss that is optimised and the plain NLL that is
comparable across runs with different smoothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def label_smoothed_cross_entropy(
    logits: Tensor, target: Tensor, smoothing: float = 0.0, ignore_index: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``(loss, nll, n_tokens)`` averaged over the target tokens that are not padding.

    ``logits`` is ``(..., V)`` and ``target`` the matching ``(...)``. The values equal
    ``F.cross_entropy(..., label_smoothing=smoothing, ignore_index=ignore_index)`` -- we call it
    rather than reimplementing it, so the fused kernel and its numerics are PyTorch's.

    We sum and divide by the token count ourselves instead of using ``reduction="mean"`` for one
    reason: a batch whose targets are all padding would give 0/0 = NaN, and a single NaN
    gradient destroys the AdamW state for the rest of the run. Here it gives a loss of 0 with a
    zero gradient. Dividing by a clamped tensor (not a Python ``if``) avoids a GPU sync.
    """
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    vocab = logits.size(-1)
    flat_logits = logits.reshape(-1, vocab)
    flat_target = target.reshape(-1)
    n_tokens = (flat_target != ignore_index).sum()
    denominator = n_tokens.clamp(min=1).to(torch.float32)

    loss_sum = F.cross_entropy(
        flat_logits,
        flat_target,
        ignore_index=ignore_index,
        label_smoothing=smoothing,
        reduction="sum",
    )
    if smoothing == 0.0:
        nll_sum = loss_sum
    else:
        # The NLL is a diagnostic; keeping it out of the graph saves memory on big vocabularies.
        with torch.no_grad():
            nll_sum = F.cross_entropy(
                flat_logits, flat_target, ignore_index=ignore_index, reduction="sum"
            )
    return loss_sum / denominator, nll_sum.detach() / denominator, n_tokens
