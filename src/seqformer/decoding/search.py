"""Batched greedy and beam search over any model with ``start`` / ``step`` / ``state.select``.

The contract (see docs/architecture.md): ``model.start(src) -> state`` runs the encoder once;
``model.step(tokens, state) -> (log_probs, state)`` advances every hypothesis by one token using
the cache inside ``state``; ``state.select(indices)`` keeps, drops or duplicates hypotheses
(an optional ``state.select_beams(indices)`` does the same for indices that stay inside each
sentence's group of beams, so it may skip copying what the beams of a sentence share).
Nothing here knows whether the model is a Transformer, an RNN or anything later.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from seqformer.decoding.processors import Processor, apply_processors


@dataclass
class Hypothesis:
    tokens: list[int]  # output ids, without bos and eos
    # The model's true sum of token log-probs, eos included when the hypothesis finished,
    # whatever the processors did to the ranking scores.
    log_prob: float
    # What beams are ranked by: the sum of *processed* token scores / length_penalty(len).
    # Equal to log_prob / length_penalty(len) unless a rescaling processor (repetition
    # penalty) is used; masking processors never change a chosen token's score.
    score: float
    finished: bool = True


def length_penalty(length: int, alpha: float, kind: str = "gnmt") -> float:
    """Divisor of a hypothesis' log-prob; ``length`` counts output tokens including eos.

    ``gnmt``: ((5 + length) / 6) ** alpha (Wu et al., 2016); ``plain``: length ** alpha.
    alpha = 0 ranks by raw log-prob, which favours short outputs.
    """
    if alpha == 0.0:
        return 1.0
    if kind == "gnmt":
        return ((5.0 + length) / 6.0) ** alpha
    if kind == "plain":
        return float(length) ** alpha
    raise ValueError(f"unknown length penalty {kind!r}; use 'gnmt' or 'plain'")


def default_max_length(src: Tensor, model_max: int, a: float = 2.0, b: int = 10) -> int:
    """Outputs may be up to ``a * longest source + b`` tokens, within what the model can embed."""
    src_len = int(src.ne(0).sum(1).max()) if src.numel() else 0
    return max(1, min(model_max - 1, int(a * src_len) + b))


def start(model, src: Tensor, max_length: int | None):
    """``model.start(src)``; a model with fixed-size caches (``sized_start``, see
    decoding/static.py) is also told how long the outputs may grow."""
    if getattr(model, "sized_start", False):
        return model.start(src, max_length)
    return model.start(src)


def restrict(log_probs: Tensor, model, last: bool) -> Tensor:
    """Never emit padding or bos; at the last allowed step only eos may follow.

    Masking (not renormalising) keeps every chosen token's score its true log-prob.
    """
    if last:
        forced = torch.full_like(log_probs, float("-inf"))
        forced[:, model.eos_id] = log_probs[:, model.eos_id]
        return forced
    log_probs = log_probs.clone()
    # GPT-2 uses one id for pad, bos and eos: never ban the end of the output.
    banned = sorted({model.pad_id, model.bos_id} - {model.eos_id})
    log_probs[:, banned] = float("-inf")
    return log_probs


def process_step(log_probs: Tensor, model, history: Tensor, t: int, max_length: int,
                 processors: Sequence[Processor]) -> Tensor:
    """``restrict``, then the processors, except at the last step: there only eos may follow
    and ``max_length`` wins over every processor (a minimum length or prefix that does not fit
    is cut short rather than leaving a hypothesis unfinished)."""
    last = t == max_length - 1
    log_probs = restrict(log_probs, model, last)
    if last:
        return log_probs
    return apply_processors(log_probs, history, t, processors, model.eos_id)


@torch.inference_mode()
def greedy_search(model, src: Tensor, max_length: int | None = None,
                  processors: Sequence[Processor] = ()) -> list[Hypothesis]:
    """Pick the best-scoring token at every step, for the whole batch at once.

    ``max_length`` bounds the output including eos, so every hypothesis finishes.
    ``processors`` (see :mod:`seqformer.decoding.processors`) reshape each step's scores;
    ``log_prob`` stays the model's true log-prob of the chosen tokens, ``score`` is the sum of
    processed scores.
    """
    max_length = max_length or default_max_length(src, model.config.max_len)
    batch = src.shape[0]
    state = start(model, src, max_length)
    tokens = torch.full((batch,), model.bos_id, dtype=torch.long, device=src.device)
    out = torch.zeros(batch, max_length, dtype=torch.long, device=src.device)
    log_prob = torch.zeros(batch, device=src.device)
    score = torch.zeros(batch, device=src.device)
    done = torch.zeros(batch, dtype=torch.bool, device=src.device)
    lengths = torch.full((batch,), max_length, dtype=torch.long, device=src.device)
    for t in range(max_length):
        log_probs, state = model.step(tokens, state)
        scores = process_step(log_probs, model, out[:, :t], t, max_length, processors)
        best, tokens = scores.max(dim=-1)
        true_lp = log_probs.gather(1, tokens.unsqueeze(1)).squeeze(1)
        score += torch.where(done, torch.zeros_like(best), best)
        log_prob += torch.where(done, torch.zeros_like(true_lp), true_lp)
        out[:, t] = tokens
        newly = tokens.eq(model.eos_id) & ~done
        lengths = torch.where(newly, t, lengths)  # a masked assignment would wait for the GPU
        done |= newly
        if bool(done.all()):  # the one wait per step: stop as soon as every sentence ended
            break
    result = []
    for i in range(batch):
        n = int(lengths[i])
        result.append(Hypothesis(out[i, :n].tolist(), float(log_prob[i]), float(score[i]),
                                 finished=bool(done[i])))
    return result


@torch.inference_mode()
def beam_search(
    model,
    src: Tensor,
    beam: int = 5,
    max_length: int | None = None,
    alpha: float = 0.0,
    penalty: str = "gnmt",
    nbest: int = 1,
    early_stopping: bool = False,
    processors: Sequence[Processor] = (),
) -> list[list[Hypothesis]]:
    """Keep the ``beam`` best prefixes per sentence; return the ``nbest`` best finished ones.

    Finished hypotheses are ranked by ``score = log_prob / length_penalty(length, alpha)``,
    ``length`` counting eos, with ``penalty`` choosing the formula:

    - ``gnmt`` (default, Wu et al., 2016): ``((5 + length) / 6) ** alpha``;
    - ``plain``: ``length ** alpha``.

    ``alpha = 0`` ranks by raw log-prob (favours short outputs); larger alpha favours longer.

    ``processors`` (see :mod:`seqformer.decoding.processors`) run after ``restrict`` on every
    hypothesis with its own history, reordered with the beams. Beams are ranked by the
    processed scores; ``Hypothesis.log_prob`` stays the model's true log-prob of the chosen
    tokens (the two differ only with a rescaling processor such as the repetition penalty).

    Canonical stopping (default): a sentence is done when it has ``beam`` finished hypotheses
    and no live prefix can still beat the worst of them. Log-probs only fall as tokens are
    added, so a live prefix's best reachable score is its log-prob over the largest length
    penalty it could still get (or over its current one when alpha = 0). Processed scores only
    fall too (masking keeps a score, the repetition penalty keeps it <= 0). With
    ``early_stopping`` it stops as soon as ``beam`` hypotheses have finished (faster, fairseq's
    default).
    """
    if beam < 1 or nbest < 1 or nbest > beam:
        raise ValueError(f"need 1 <= nbest ({nbest}) <= beam ({beam})")
    max_length = max_length or default_max_length(src, model.config.max_len)
    batch, device = src.shape[0], src.device
    state = start(model, src, max_length)
    state = state.select(torch.arange(batch, device=device).repeat_interleave(beam))
    tokens = torch.full((batch * beam,), model.bos_id, dtype=torch.long, device=device)
    # Only the first copy of each sentence is live at step 0, or the beam would fill with twins.
    scores = torch.full((batch, beam), float("-inf"), device=device)
    scores[:, 0] = 0.0
    true_lps = torch.zeros(batch, beam, device=device)  # the model's log-probs, unprocessed
    history = torch.zeros(batch, beam, 0, dtype=torch.long, device=device)
    # The `beam` best finished hypotheses of each sentence, best first, kept on the device so
    # that a step never waits for it: more can never matter (nbest <= beam, and stopping looks
    # at the beam-th best). Unused slots score -inf.
    fin_score = torch.full((batch, beam), float("-inf"), device=device)
    fin_lp = torch.zeros(batch, beam, device=device)
    fin_len = torch.zeros(batch, beam, dtype=torch.long, device=device)
    fin_tokens = torch.zeros(batch, beam, max_length, dtype=torch.long, device=device)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    offsets = (torch.arange(batch, device=device) * beam).unsqueeze(1)
    neg_inf = torch.tensor(float("-inf"), device=device)

    for t in range(max_length):
        raw, state = model.step(tokens, state)
        log_probs = process_step(raw, model, history.view(batch * beam, t), t, max_length,
                                 processors)
        vocab = log_probs.shape[-1]
        cand = (scores.unsqueeze(-1) + log_probs.view(batch, beam, vocab)).view(batch, -1)
        top_scores, top_ids = cand.topk(2 * beam, dim=1)  # (batch, 2*beam), sorted
        top_beam, top_tok = top_ids // vocab, top_ids % vocab
        top_true = true_lps.gather(1, top_beam) + raw.view(batch, -1).gather(1, top_ids)
        is_eos = top_tok.eq(model.eos_id) & torch.isfinite(top_scores)

        # Finished hypotheses: eos among the top `beam` candidates (fairseq/HF rule). Every
        # hypothesis ending now has t tokens + eos, so one length penalty serves them all.
        # Merged after the ones already kept, with a stable sort: ties keep finishing order.
        ending = is_eos[:, :beam] & ~done.unsqueeze(1)
        ended = torch.where(ending, top_scores[:, :beam], neg_inf)
        ended = ended / length_penalty(t + 1, alpha, penalty)
        merged = torch.cat([fin_score, ended], dim=1)
        fin_score, order = torch.sort(merged, dim=1, descending=True, stable=True)
        fin_score, order = fin_score[:, :beam], order[:, :beam]
        fin_lp = torch.cat([fin_lp, top_true[:, :beam]], dim=1).gather(1, order)
        fin_len = torch.cat([fin_len, torch.full_like(fin_len, t)], dim=1).gather(1, order)
        prefix = history.gather(1, top_beam[:, :beam, None].expand(-1, -1, t))
        new_tokens = torch.cat([fin_tokens[:, :, :t], prefix], dim=1)
        fin_tokens[:, :, :t] = new_tokens.gather(1, order[:, :, None].expand(-1, -1, t))

        # Next live beams: the best `beam` candidates that are not eos.
        live = ~is_eos & torch.isfinite(top_scores)
        rank = torch.cumsum(live.long(), dim=1) - 1
        keep = live & rank.lt(beam)
        # Order kept candidates first (stable) so the first `beam` columns are the new beams.
        kept = torch.sort((~keep).long(), dim=1, stable=True).indices[:, :beam]
        new_scores = torch.where(keep.gather(1, kept), top_scores.gather(1, kept), neg_inf)
        src_beam = top_beam.gather(1, kept)
        new_tok = top_tok.gather(1, kept)
        new_true = top_true.gather(1, kept)

        # Canonical stopping, for every sentence at once: with `beam` finished, done when no
        # live prefix can still beat the worst of them (log-probs only fall as tokens are
        # added, so a prefix's best reachable score is its log-prob over the largest length
        # penalty it could still get, or its current one when alpha = 0); with fewer, done
        # when nothing is left alive.
        best_live = new_scores[:, 0]
        full = torch.isfinite(fin_score[:, -1])
        if early_stopping:
            stop = full
        else:
            bound_len = max_length if alpha > 0 else t + 1
            reachable = best_live / length_penalty(bound_len, alpha, penalty)
            stop = torch.where(full, best_live.eq(float("-inf")) | (reachable <= fin_score[:, -1]),
                               ~torch.isfinite(best_live))
        done |= stop
        if bool(done.all()):  # the one wait per step: stop as soon as every sentence ended
            break
        # Finished sentences keep decoding garbage in their slots; mask them out of ranking.
        scores = torch.where(done.unsqueeze(1), neg_inf, new_scores)
        true_lps = new_true
        flat = (offsets + src_beam).view(-1)
        # Indices stay within each sentence's beams: a state may skip copying what its beams
        # share (the encoder side); one without ``select_beams`` copies everything.
        state = getattr(state, "select_beams", state.select)(flat)
        history = torch.cat([history.view(batch * beam, -1).index_select(0, flat)
                             .view(batch, beam, -1), new_tok.unsqueeze(-1)], dim=2)
        tokens = new_tok.view(-1)

    # One copy to the host at the end.
    scores_h, lps_h, lens_h = fin_score.tolist(), fin_lp.tolist(), fin_len.tolist()
    tokens_h = fin_tokens.tolist()
    results = []
    for row in range(batch):
        hyps = [Hypothesis(tokens_h[row][k][: lens_h[row][k]], lps_h[row][k], scores_h[row][k])
                for k in range(nbest) if math.isfinite(scores_h[row][k])]
        if not hyps:  # nothing reached eos (cannot happen: the last step forces eos)
            hyps = [Hypothesis([], float("-inf"), float("-inf"), finished=False)]
        results.append(hyps)
    return results
