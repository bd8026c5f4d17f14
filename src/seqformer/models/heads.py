"""Objectives on top of a bidirectional encoder: masked LM, sequence and token classification,
extractive span QA.

Each head maps the encoder's final hidden states (batch, time, d_model) to logits. They are
kept apart from :class:`~seqformer.models.bert.BERT` so one pretrained encoder can be fine-tuned
with any of them, and their layouts follow Google's BERT so Hugging Face checkpoints map one to
one (see :mod:`seqformer.interop.hf_bert`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqformer.nn.feedforward import ACTIVATIONS

HEAD_KINDS = ("mlm", "classify", "tag", "qa", "none")  # none: the encoder alone (embeddings)


class MLMHead(nn.Module):
    """Dense -> activation -> LayerNorm -> decoder tied to the word embeddings + own bias.

    The extra transform (BERT's ``cls.predictions.transform``) gives the prediction its own
    non-linear projection, so the last encoder layer need not live in embedding space.
    """

    def __init__(self, d_model: int, vocab_size: int, word_embeddings: nn.Embedding,
                 activation: str = "gelu", eps: float = 1e-12) -> None:
        super().__init__()
        self.transform = nn.Linear(d_model, d_model)
        self.activation = ACTIVATIONS[activation]
        self.norm = nn.LayerNorm(d_model, eps=eps)
        self.decoder = nn.Linear(d_model, vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, hidden: Tensor) -> Tensor:
        return self.decoder(self.norm(self.activation(self.transform(hidden)))) + self.bias


class SequenceClassificationHead(nn.Module):
    """BERT's pooler (dense + tanh on the [CLS] state) -> dropout -> linear classifier.

    The pooler is trained by BERT's next-sentence objective; without it (our pretraining has no
    NSP) it starts from random weights and is learned during fine-tuning, as in RoBERTa.
    """

    def __init__(self, d_model: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.pooler = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, num_labels)

    def pooled(self, hidden: Tensor) -> Tensor:
        return torch.tanh(self.pooler(hidden[:, 0]))

    def forward(self, hidden: Tensor) -> Tensor:
        return self.classifier(self.dropout(self.pooled(hidden)))


class TokenClassificationHead(nn.Module):
    """One label per token (BIO tags): dropout -> linear on every hidden state."""

    def __init__(self, d_model: int, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(d_model, num_labels)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.classifier(self.dropout(hidden))


class SpanHead(nn.Module):
    """Start and end logits for every token (extractive QA): one linear layer with 2 outputs."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.qa = nn.Linear(d_model, 2)

    def forward(self, hidden: Tensor) -> Tensor:
        """(batch, time, 2): [..., 0] start logits, [..., 1] end logits."""
        return self.qa(hidden)


def decode_spans(start_logits: Tensor, end_logits: Tensor, allowed: Tensor,
                 max_answer_len: int = 30) -> list[tuple[int, int]]:
    """Best (start, end) per row with start <= end < start + max_answer_len, both inside
    ``allowed`` (batch, time) -- the passage tokens, so an answer never includes the question,
    a special token or padding. Scores are start + end logits, as in BERT's SQuAD code.

    A row with no allowed token gives (-1, -1).
    """
    batch, time = start_logits.shape
    neg = torch.finfo(start_logits.dtype).min / 4
    start = start_logits.masked_fill(~allowed, neg)
    end = end_logits.masked_fill(~allowed, neg)
    scores = start.unsqueeze(2) + end.unsqueeze(1)  # (batch, start, end)
    i = torch.arange(time, device=start_logits.device)
    valid = (i.view(1, -1) >= i.view(-1, 1)) & (i.view(1, -1) < i.view(-1, 1) + max_answer_len)
    pair_ok = valid.unsqueeze(0) & allowed.unsqueeze(2) & allowed.unsqueeze(1)
    scores = scores.masked_fill(~pair_ok, float("-inf"))
    flat = scores.view(batch, -1).argmax(dim=1)
    spans = []
    for row in range(batch):
        if not bool(allowed[row].any()):
            spans.append((-1, -1))
            continue
        s, e = divmod(int(flat[row]), time)
        spans.append((s, e))
    return spans
