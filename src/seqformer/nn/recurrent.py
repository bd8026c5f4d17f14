"""Attention for recurrent encoder-decoders: additive (Bahdanau) and multiplicative (Luong).

Both split scoring into ``prepare(memory)``, run once per source, and ``forward(query, ...)``,
run once per decoder step: the key projection does not depend on the step, so decoding caches
it in the state instead of recomputing ``batch x src x dim`` work every token. Both return the
context *and* the weights, since alignment charts are the point of attention RNNs. Weights are
``(batch, queries, src)`` with exact zeros at source padding and rows that sum to 1.
"""

from __future__ import annotations

from torch import Tensor, nn

from seqformer.errors import ConfigError

SCORES = ("general", "dot")


def attend(scores: Tensor, values: Tensor, key_padding_mask: Tensor | None
           ) -> tuple[Tensor, Tensor]:
    """Softmax ``scores`` (batch, queries, src) over unmasked keys -> (context, weights).

    Padding is filled with -inf before the softmax (not zeroed after), so the remaining weights
    are renormalised over the real tokens exactly as if the padding were not there.
    """
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask.unsqueeze(1), float("-inf"))
    weights = scores.softmax(dim=-1)
    return weights @ values, weights


class AdditiveAttention(nn.Module):
    """Bahdanau et al. (2015): ``score(q, k) = v . tanh(W_q q + W_k k)``, a one-layer MLP.

    It can compare queries and keys of different sizes and learns a non-linear match, at the
    price of a (batch, queries, src, attn_dim) intermediate.
    """

    def __init__(self, query_dim: int, key_dim: int, attn_dim: int) -> None:
        super().__init__()
        self.query = nn.Linear(query_dim, attn_dim, bias=False)
        self.key = nn.Linear(key_dim, attn_dim)
        self.v = nn.Linear(attn_dim, 1, bias=False)

    def prepare(self, memory: Tensor) -> Tensor:
        """(batch, src, key_dim) -> projected keys (batch, src, attn_dim), once per source."""
        return self.key(memory)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor,
                key_padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``query`` (batch, q, query_dim) or (batch, query_dim); ``keys`` from :meth:`prepare`.

        Returns context (batch, [q,] value_dim) and weights (batch, [q,] src).
        """
        single = query.dim() == 2
        q = self.query(query.unsqueeze(1) if single else query)  # (batch, q, attn)
        scores = self.v((q.unsqueeze(2) + keys.unsqueeze(1)).tanh()).squeeze(-1)
        context, weights = attend(scores, values, key_padding_mask)
        return (context.squeeze(1), weights.squeeze(1)) if single else (context, weights)


class MultiplicativeAttention(nn.Module):
    """Luong et al. (2015): ``dot`` scores ``q . k``; ``general`` scores ``q . W k``.

    A batched matrix product instead of an MLP: cheaper than additive attention, but ``dot``
    needs queries and keys of one size and has no parameters to learn the match with.
    """

    def __init__(self, query_dim: int, key_dim: int, score: str = "general") -> None:
        super().__init__()
        if score not in SCORES:
            raise ConfigError(f"model.score={score!r}; use one of {', '.join(SCORES)}")
        if score == "dot" and query_dim != key_dim:
            raise ConfigError(f"model.score: dot needs equal query and key sizes, got "
                              f"{query_dim} and {key_dim}; use score: general")
        self.score = score
        self.weight = nn.Linear(key_dim, query_dim, bias=False) if score == "general" else None

    def prepare(self, memory: Tensor) -> Tensor:
        """``W k`` for every source position (``k`` itself for ``dot``), once per source."""
        return memory if self.weight is None else self.weight(memory)

    def forward(self, query: Tensor, keys: Tensor, values: Tensor,
                key_padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Same shapes as :meth:`AdditiveAttention.forward`."""
        single = query.dim() == 2
        q = query.unsqueeze(1) if single else query
        scores = q @ keys.transpose(1, 2)  # (batch, q, src)
        context, weights = attend(scores, values, key_padding_mask)
        return (context.squeeze(1), weights.squeeze(1)) if single else (context, weights)


def make_attention(kind: str, query_dim: int, key_dim: int, score: str = "general"
                   ) -> AdditiveAttention | MultiplicativeAttention:
    """``bahdanau`` or ``luong`` (with ``score``), sized so every dimension is ``query_dim``."""
    if kind == "bahdanau":
        return AdditiveAttention(query_dim, key_dim, query_dim)
    if kind == "luong":
        return MultiplicativeAttention(query_dim, key_dim, score)
    raise ConfigError(f"model.attention={kind!r}; use none, bahdanau or luong")
