"""Decoding a CTC head (Graves et al. 2006): greedy and prefix beam search, no language model.

A CTC head emits, per encoder frame, log-probabilities over the vocabulary plus a blank (the
``blank`` argument: 0 for our runs, whose tokenizers' pad id it is; an imported Hugging Face
model's ``pad_token_id``, which the imported tokenizer's pad id carries). A labeling's
probability is the sum over every frame-level path that collapses to it (merge repeats, then
drop blanks).

:func:`ctc_greedy` takes the best path (argmax per frame) and collapses it: cheap, and usually
close, but the best path's labeling need not be the most probable labeling.

:func:`ctc_beam_search` is the prefix beam search of Hannun et al. (2014): it keeps the
``beam`` most probable *labelings* (prefixes), each with two log-probabilities -- of the
paths so far ending in a blank and ending in its last label -- because the next label extends
the prefix after a blank but merges into it straight after the same label. Its scores are sums
over alignments, so with a beam wide enough to hold every prefix it returns the exact most
probable labeling and its log-probability (``-ctc_loss``). To keep a frame at O(beam^2) work
instead of O(beam * vocabulary), a frame proposes as extensions only its ``beam`` most probable
labels (with beam >= vocabulary size nothing is pruned). Ties are broken by the labeling, so the
result is deterministic.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from seqformer.errors import ConfigError, DataError

NEG_INF = float("-inf")


def _check(log_probs: Tensor, lengths: Tensor | None, blank: int) -> Tensor:
    """The valid frame count of every row, after checking shapes and ranges."""
    if log_probs.dim() != 3:
        raise DataError(f"CTC decoding needs (batch, frames, vocab) log-probs, got shape "
                        f"{tuple(log_probs.shape)}")
    batch, frames, vocab = log_probs.shape
    if not 0 <= blank < vocab:
        raise ConfigError(f"blank id {blank} is outside the vocabulary of {vocab}")
    if lengths is None:
        return torch.full((batch,), frames, dtype=torch.long)
    lengths = torch.as_tensor(lengths).cpu()
    if lengths.shape != (batch,) or lengths.dtype.is_floating_point:
        raise DataError(f"CTC lengths must be ({batch},) integers, got {tuple(lengths.shape)} "
                        f"{lengths.dtype}")
    if batch and (int(lengths.min()) < 0 or int(lengths.max()) > frames):
        raise DataError(f"CTC lengths must be in [0, {frames}], got "
                        f"{int(lengths.min())}..{int(lengths.max())}")
    return lengths.long()


def ctc_greedy(log_probs: Tensor, lengths: Tensor | None = None, blank: int = 0
               ) -> list[list[int]]:
    """Best path per row: argmax per frame, repeats merged, blanks dropped, frames at or past
    ``lengths[b]`` ignored."""
    lengths = _check(log_probs, lengths, blank)
    best = log_probs.detach().argmax(dim=-1).cpu()  # (B, T)
    previous = torch.nn.functional.pad(best, (1, 0), value=-1)[:, :-1]
    valid = torch.arange(best.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
    keep = (best != blank) & (best != previous) & valid
    return [row[k].tolist() for row, k in zip(best, keep)]


def ctc_beam_search(log_probs: Tensor, lengths: Tensor | None = None, beam: int = 8,
                    blank: int = 0, nbest: int = 1) -> list[list[tuple[list[int], float]]]:
    """Per row, the ``nbest`` most probable labelings found, best first, each with its
    log-probability summed over the alignments the beam kept. Rows are decoded independently;
    a row with no valid frames gives the empty labeling with log-probability 0."""
    if beam < 1:
        raise ConfigError(f"beam must be >= 1, got {beam}")
    if not 1 <= nbest <= beam:
        raise ConfigError(f"nbest must be in [1, beam={beam}], got {nbest}")
    lengths = _check(log_probs, lengths, blank)
    scores = log_probs.detach().to(device="cpu", dtype=torch.float64)
    return [_prefix_search(scores[b, : int(lengths[b])], beam, blank, nbest)
            for b in range(scores.shape[0])]


def _logaddexp(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    high, low = (a, b) if a > b else (b, a)
    return high + math.log1p(math.exp(low - high))


def _prefix_search(frames: Tensor, beam: int, blank: int, nbest: int
                   ) -> list[tuple[list[int], float]]:
    """Prefix beam search over one utterance's (T, V) float64 log-probs."""
    width = min(beam, frames.shape[1])
    candidates = frames.topk(width, dim=1).indices.tolist() if frames.shape[0] else []
    rows = frames.tolist()
    # prefix -> (log P(paths ending in blank), log P(paths ending in the prefix's last label))
    beams: dict[tuple[int, ...], tuple[float, float]] = {(): (0.0, NEG_INF)}
    for lp, labels in zip(rows, candidates):
        labels = [c for c in labels if c != blank]
        nxt: dict[tuple[int, ...], list[float]] = {}

        def add(prefix: tuple[int, ...], slot: int, value: float,
                nxt: dict[tuple[int, ...], list[float]] = nxt) -> None:
            entry = nxt.setdefault(prefix, [NEG_INF, NEG_INF])
            entry[slot] = _logaddexp(entry[slot], value)

        for prefix, (p_blank, p_label) in beams.items():
            total = _logaddexp(p_blank, p_label)
            add(prefix, 0, total + lp[blank])  # a blank keeps the prefix
            last = prefix[-1] if prefix else None
            if last is not None:  # the last label again, no blank between: merged
                add(prefix, 1, p_label + lp[last])
            for c in labels:
                # After the same label, only paths through a blank make it a new label.
                add(prefix + (c,), 1, (p_blank if c == last else total) + lp[c])
        ranked = sorted(nxt.items(), key=lambda kv: (-_logaddexp(*kv[1]), kv[0]))
        beams = {prefix: (pb, pl) for prefix, (pb, pl) in ranked[:beam]}
    final = sorted(((list(p), _logaddexp(pb, pl)) for p, (pb, pl) in beams.items()),
                   key=lambda item: (-item[1], item[0]))
    return final[:nbest]
