"""Time masks and contrastive distractors for wav2vec 2.0 / HuBERT pretraining.

:func:`span_mask` picks which encoder frames the model must reconstruct: spans of
``mask_length`` frames whose starts are drawn uniformly, as wav2vec 2.0 (Baevski et al. 2020)
and Hugging Face's ``_compute_mask_indices`` do. Per utterance of ``n`` valid frames it draws
``int(mask_prob * n / mask_length + u)`` spans, ``u ~ U[0, 1)`` (probabilistic rounding, so the
expected count is exactly ``mask_prob * n / mask_length``), at least ``min_masks``, and at most
``n // mask_length`` so the spans could fit side by side. Starts are drawn without replacement
from ``[0, n - mask_length]``, so a span never reaches padding, but spans may overlap: the
masked share is therefore below ``mask_prob`` (about 49% for 0.65 and 10 frames). An utterance
shorter than ``mask_length`` has no room for a span and gets no mask at all. Two departures
from HF, neither changing the distribution of a full-length row: ``u`` is drawn per utterance
(fairseq does so when lengths differ; HF shares one draw across the batch), and the cap is
``n // mask_length`` for padded rows too (HF caps those at ``n - mask_length + 1``).

:func:`sample_negatives` draws the distractors of the contrastive loss: for each allowed
(masked) frame, ``K`` other allowed frames of the same utterance, uniformly with replacement,
returned as indices into the flattened ``(B * T)`` frames like HF's ``sampled_negative_indices``.

Both take a ``torch.Generator`` and nothing else random, so a seed fixes the result on CPU.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqformer.errors import ConfigError, DataError


def span_mask(frames: Tensor, total: int, mask_prob: float, mask_length: int,
              generator: torch.Generator, min_masks: int = 2) -> Tensor:
    """(B, total) bool mask of spans over the first ``frames[b]`` frames of each row; padding
    (frames ``>= frames[b]``) is never masked. See the module docstring for the counts."""
    if not 0.0 <= mask_prob <= 1.0:
        raise ConfigError(f"mask_prob must be in [0, 1], got {mask_prob}")
    if mask_length < 1:
        raise ConfigError(f"mask_length must be >= 1, got {mask_length}")
    if min_masks < 0:
        raise ConfigError(f"min_masks must be >= 0, got {min_masks}")
    if frames.dim() != 1 or frames.dtype.is_floating_point or frames.dtype == torch.bool:
        raise DataError(f"span_mask: frames must be a (batch,) integer tensor, got "
                        f"{tuple(frames.shape)} {frames.dtype}")
    frames = frames.to(torch.long).cpu()
    if frames.numel() and (int(frames.min()) < 0 or int(frames.max()) > total):
        raise DataError(f"span_mask: frame counts must be in [0, total={total}], got "
                        f"{int(frames.min())}..{int(frames.max())}")
    batch = frames.numel()
    # How many spans: probabilistic rounding, the floor, then the cap that keeps them fitting.
    rounding = torch.rand(batch, generator=generator, dtype=torch.float64)
    spans = (mask_prob * frames.double() / mask_length + rounding).floor().long()
    spans = torch.minimum(spans.clamp(min=min_masks), frames // mask_length)
    # Starts without replacement: rank the admissible starts by a random key, keep the first
    # ``spans[b]`` of each row. Inadmissible positions get key 2 (> every U[0, 1) key).
    keys = torch.rand(batch, total, generator=generator, dtype=torch.float64)
    positions = torch.arange(total)
    admissible = positions.unsqueeze(0) <= (frames - mask_length).unsqueeze(1)
    keys = keys.masked_fill(~admissible, 2.0)
    rank = keys.argsort(dim=1).argsort(dim=1)
    starts = (rank < spans.unsqueeze(1)) & admissible
    # Frame t is masked when a span starts in (t - mask_length, t]: a running count of starts.
    count = starts.long().cumsum(dim=1)
    before = torch.nn.functional.pad(count, (mask_length, 0))[:, :total]
    return (count - before) > 0


def sample_negatives(allowed: Tensor, num_negatives: int, generator: torch.Generator) -> Tensor:
    """(B, T, K) long distractor indices into the flattened ``B * T`` frames (row ``b`` offset
    by ``b * T``, HF's ``sampled_negative_indices`` convention).

    For every allowed frame ``t`` of an utterance with at least two allowed frames: ``K`` of
    its *other* allowed frames, uniform with replacement (a draw over ``n - 1`` ranks, shifted
    past ``t``'s own rank, as fairseq and HF do, keeps it uniform). Every other row -- a frame
    not allowed, or any frame of an utterance with fewer than two allowed frames, which has no
    distractor to offer -- points ``K`` times at the frame itself: a valid index of the same
    utterance, and one a model that masks negatives equal to the positive (HF's
    ``neg_is_pos``) drops from the loss.
    """
    if num_negatives < 1:
        raise ConfigError(f"num_negatives must be >= 1, got {num_negatives}")
    if allowed.dim() != 2 or allowed.dtype != torch.bool:
        raise DataError(f"sample_negatives: allowed must be a (batch, frames) bool tensor, got "
                        f"{tuple(allowed.shape)} {allowed.dtype}")
    allowed = allowed.cpu()
    batch, total = allowed.shape
    if batch * total == 0:
        return torch.zeros(batch, total, num_negatives, dtype=torch.long)
    count = allowed.sum(dim=1)  # (B,) allowed frames per utterance
    rank = allowed.long().cumsum(dim=1) - 1  # rank of each allowed frame among its row's
    # Allowed frames of each row first, in time order: rank r of row b is frame order[b, r].
    order = (~allowed).to(torch.uint8).argsort(dim=1, stable=True)
    draws = torch.rand(batch, total, num_negatives, generator=generator, dtype=torch.float64)
    others = (count - 1).clamp(min=1).view(batch, 1, 1)
    sampled = (draws * others).floor().long().clamp(max=others - 1)
    sampled = sampled + (sampled >= rank.unsqueeze(2)).long()
    picked = order.gather(1, sampled.clamp(max=total - 1).view(batch, -1)).view(sampled.shape)
    own = torch.arange(total).view(1, total, 1).expand_as(picked)
    real = (allowed & (count >= 2).unsqueeze(1)).unsqueeze(2)
    frames = torch.where(real, picked, own)
    return frames + (torch.arange(batch) * total).view(batch, 1, 1)
